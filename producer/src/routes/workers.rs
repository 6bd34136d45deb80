//! The live fleet, from the workers' heartbeats.

use std::time::Duration;

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ApiResult, state::AppState};
use xcam_shared::db::workers::{self, WorkerRecord};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_workers))
}

/// Workers that heartbeated within three orphan windows.
#[utoipa::path(get, path = "/v1/workers", tag = "fleet", responses((status = 200, body = Vec<serde_json::Value>, description = "live workers: id, host, pid, device, models, started_at, last_seen, jobs_done, jobs_failed")))]
async fn list_workers(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkerRecord>>> {
    let window = (state.settings.queue_tuning.orphan_after * 3).max(Duration::from_secs(30));
    Ok(Json(workers::live(&state.db, window).await?))
}
