//! `/openapi.json` and the `/docs` page (Swagger UI from npm, embedded: nothing is fetched from
//! the internet at build or run time).

use std::sync::Arc;

use axum::{
    Json, Router,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};
use utoipa::OpenApi;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    // Types only query parameters name: utoipa does not collect them from `IntoParams`.
    components(schemas(crate::api::When, crate::api::LogFormat, crate::api::StatsBucket)),
    info(title = "xcam", description = "Batch Grad-CAM for chest X-ray classifiers: upload ZIPs of radiographs, follow batches, export reports, query the inference log."),
    tags(
        (name = "batches", description = "Upload archives and follow their batches"),
        (name = "results", description = "Reports, overlays and maps"),
        (name = "logs", description = "The inference log and its statistics"),
        (name = "fleet", description = "Workers and metrics"),
        (name = "models", description = "Model bundles"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub(super) struct ApiDoc;

const SWAGGER_JS: &str =
    include_str!("../../dashboard/node_modules/swagger-ui-dist/swagger-ui-bundle.js");
const SWAGGER_CSS: &str =
    include_str!("../../dashboard/node_modules/swagger-ui-dist/swagger-ui.css");
const DOCS_HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xcam API</title>
<link rel="stylesheet" href="/assets/swagger-ui.css"></head>
<body><div id="docs"></div><script src="/assets/swagger-ui-bundle.js"></script>
<script src="/assets/docs.js"></script></body></html>"##;
/// Starts Swagger UI; a file of its own, since no inline script runs under the API's CSP.
const DOCS_JS: &str =
    r##"window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#docs" });"##;

pub(super) fn router(document: Arc<serde_json::Value>) -> Router<AppState> {
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
        .route("/docs", get(|| async { Html(DOCS_HTML) }))
        .route(
            "/assets/docs.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    DOCS_JS,
                )
                    .into_response()
            }),
        )
        .route(
            "/assets/swagger-ui-bundle.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SWAGGER_JS,
                )
                    .into_response()
            }),
        )
        .route(
            "/assets/swagger-ui.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    SWAGGER_CSS,
                )
                    .into_response()
            }),
        )
}
