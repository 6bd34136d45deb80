//! Liveness and readiness.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::{ErrorBody, Health, Ready},
    error::ApiError,
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Redis and Postgres both answer.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz", responses((status = 200, body = Ready), (status = 503, body = ErrorBody, description = "`unavailable`")))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.db)
        .await
        .map_err(|e| ApiError::Unavailable(anyhow::Error::from(e).context("Postgres")))?;
    redis::cmd("PING")
        .query_async::<String>(&mut state.queue.redis.clone())
        .await
        .map_err(|e| ApiError::Unavailable(anyhow::Error::from(e).context("Redis")))?;
    Ok(Json(Ready {
        status: "ready".into(),
        postgres: "ok".into(),
        redis: "ok".into(),
        models: state.models.keys().cloned().collect(),
    }))
}
