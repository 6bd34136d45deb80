//! The live fleet, from the workers' heartbeats.

use std::time::Duration;

use axum::{Json, Router, extract::State, routing::get};

use crate::{error::ApiResult, state::AppState};
use xcam_shared::db::workers::{self, WorkerRecord};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/workers", get(list_workers))
}

/// Workers that heartbeated within three orphan windows.
async fn list_workers(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkerRecord>>> {
    let window = (state.settings.queue_tuning.orphan_after * 3).max(Duration::from_secs(30));
    Ok(Json(workers::live(&state.db, window).await?))
}
