//! The HTTP API, one module per resource.

mod batches;
mod health;
mod logs;
pub(crate) mod results;
mod workers;

use axum::Router;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(batches::router(state.settings.max_upload_bytes))
        .merge(results::router())
        .merge(logs::router())
        .merge(workers::router())
        .with_state(state)
}

/// Parses a path id, answering 404 with the resource's own code for anything that is not a UUID.
fn parse_batch_id(raw: &str) -> Result<uuid::Uuid, crate::error::ApiError> {
    raw.parse()
        .map_err(|_| crate::error::ApiError::BatchNotFound(raw.to_owned()))
}
