//! Liveness and readiness.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::{error::ApiError, state::AppState};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Redis and Postgres both answer.
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
