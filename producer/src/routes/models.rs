//! The model bundles this API accepts.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{api::Model, state::AppState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_models))
}

/// The model bundles this API accepts, with their labels.
#[utoipa::path(get, path = "/v1/models", tag = "models", operation_id = "list_models", responses((status = 200, body = Vec<Model>)))]
async fn list_models(State(state): State<AppState>) -> Json<Vec<Model>> {
    Json(
        state
            .models
            .values()
            .map(|b| {
                let m = &b.manifest.model;
                Model {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    labels: m.labels.clone(),
                    description: m.description.clone(),
                }
            })
            .collect(),
    )
}
