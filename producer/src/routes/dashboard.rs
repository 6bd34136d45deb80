//! The web dashboard, served by the binary itself: nothing is fetched from the internet, at
//! build time (Chart.js comes from npm through the committed lock file) or at run time.

use axum::{
    Json,
    extract::{Path, State},
    http::header,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use xcam_shared::imaging;

use super::find_item;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

const INDEX: &str = include_str!("../../dashboard/static/index.html");
const APP_JS: &str = include_str!("../../dashboard/static/app.js");
const APP_CSS: &str = include_str!("../../dashboard/static/app.css");
const CHART_JS: &str = include_str!("../../dashboard/node_modules/chart.js/dist/chart.umd.min.js");

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/assets/chart.umd.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", CHART_JS) }),
        )
        .routes(routes!(list_models))
        .routes(routes!(get_image))
}

fn asset(mime: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The model bundles this API accepts, with their labels.
#[utoipa::path(get, path = "/v1/models", tag = "models", responses((status = 200, body = Vec<serde_json::Value>, description = "name, version, labels, description of each bundle")))]
async fn list_models(State(state): State<AppState>) -> Json<Vec<Value>> {
    Json(
        state
            .models
            .values()
            .map(|b| {
                let m = &b.manifest.model;
                json!({ "name": m.name, "version": m.version, "labels": m.labels, "description": m.description })
            })
            .collect(),
    )
}

/// The original image as an 8-bit PNG (DICOM included), for viewing beside its overlay. Built
/// from pixels only: nothing of the file's metadata is carried over.
#[utoipa::path(get, path = "/v1/batches/{id}/items/{item}/image.png", tag = "results", params(("id" = String, Path, description = "batch id"), ("item" = String, Path, description = "item id")), responses((status = 200, content_type = "image/png", body = Vec<u8>), (status = 404, body = crate::error::ErrorBody)))]
async fn get_image(
    State(state): State<AppState>,
    Path((id, item)): Path<(String, String)>,
) -> ApiResult<Response> {
    let record = find_item(&state, &id, &item).await?;
    let key = record
        .blob_key
        .ok_or_else(|| ApiError::NotFound(format!("item {item} has no stored image")))?;
    let bytes = state.blobs.get(&key).await?;
    let png = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let image = imaging::decode(&bytes)
            .map_err(|e| ApiError::NotFound(format!("the stored image cannot be shown: {e}")))?;
        let gray: Vec<u8> = image
            .pixels
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let buffer = image::GrayImage::from_raw(image.width, image.height, gray)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("pixel count mismatch")))?;
        let mut out = Vec::new();
        buffer
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))??;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}
