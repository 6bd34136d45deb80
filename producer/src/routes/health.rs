//! Liveness and readiness.

use axum::{Json, extract::State};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = serde_json::Value)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Redis and Postgres both answer.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = serde_json::Value), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.db)
        .await
        .map_err(|e| ApiError::Unavailable(anyhow::Error::from(e).context("Postgres")))?;
    let mut redis = state.redis.clone();
    redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .map_err(|e| ApiError::Unavailable(anyhow::Error::from(e).context("Redis")))?;
    Ok(Json(
        json!({"status": "ready", "postgres": "ok", "redis": "ok", "models": state.models.keys().collect::<Vec<_>>()}),
    ))
}
