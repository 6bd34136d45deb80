//! The live fleet, from the workers' heartbeats.

use std::time::Duration;

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::db::workers;

use crate::{api::Worker, error::ApiResult, state::AppState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_workers))
}

/// Workers that heartbeated within three orphan windows (at least 30 s).
#[utoipa::path(get, path = "/v1/workers", tag = "fleet", operation_id = "list_workers", responses((status = 200, body = Vec<Worker>)))]
async fn list_workers(State(state): State<AppState>) -> ApiResult<Json<Vec<Worker>>> {
    let window = (state.queue.tuning.orphan_after * 3).max(Duration::from_secs(30));
    let live = workers::live(&state.db, window).await?;
    Ok(Json(live.into_iter().map(Worker::from).collect()))
}
