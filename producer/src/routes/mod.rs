//! The HTTP API, one module per resource.

mod batches;
mod dashboard;
mod docs;
mod health;
mod logs;
mod metrics;
pub(crate) mod results;
mod workers;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let (router, api) = api_router(state.settings.max_upload_bytes).split_for_parts();
    let document = std::sync::Arc::new(api);
    router
        .merge(docs::router(document))
        .route_layer(axum::middleware::from_fn(metrics::track_http))
        .with_state(state)
}

/// Every documented route. The OpenAPI document is generated from these same registrations,
/// so it cannot drift from what the server answers.
fn api_router(max_upload: u64) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(health::router())
        .merge(dashboard::router())
        .merge(batches::router(max_upload))
        .merge(results::router())
        .merge(logs::router())
        .merge(workers::router())
        .merge(metrics::router())
}

/// The OpenAPI document, as `/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router(1 << 20).split_for_parts().1
}

/// Parses a path id, answering 404 with the resource's own code for anything that is not a UUID.
fn parse_batch_id(raw: &str) -> Result<uuid::Uuid, crate::error::ApiError> {
    raw.parse()
        .map_err(|_| crate::error::ApiError::BatchNotFound(raw.to_owned()))
}

/// The item a `/v1/batches/{id}/items/{item}/…` path names; 404 unless it is in that batch.
async fn find_item(
    state: &crate::state::AppState,
    batch: &str,
    item: &str,
) -> Result<xcam_shared::db::items::ItemRecord, crate::error::ApiError> {
    use crate::error::ApiError;
    let batch = parse_batch_id(batch)?;
    let item: uuid::Uuid = item
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no item {item}")))?;
    xcam_shared::db::items::get(&state.db, batch, item)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no item {item} in batch {batch}")))
}
