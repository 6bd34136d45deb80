//! The web dashboard, served by the binary itself: nothing is fetched from the internet, at
//! build time (Chart.js comes from npm through the committed lock file) or at run time.

use axum::{
    http::header,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

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
