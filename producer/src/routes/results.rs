//! A batch's results: JSON pages, the CSV report (streamed), and each item's map artefacts.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{StreamExt, stream};
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::{
    blob,
    db::{self, results::Cams},
};

use super::{
    extract::{ApiQuery, BatchPath, ItemPath},
    find_batch, find_item,
};
use crate::{
    api::{ArtefactQuery, ErrorBody, ItemResult, ResultPage, ResultPageQuery},
    artefacts::{self, ArtefactError},
    auth::Caller,
    csv_export,
    error::{ApiError, ApiResult},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_results))
        .routes(routes!(export_results_csv))
        .routes(routes!(get_overlay))
        .routes(routes!(get_cam))
}

/// A page of a batch's results, in entry order.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/results",
    tag = "results",
    operation_id = "list_results",
    params(("id" = Uuid, Path, description = "batch id"), ResultPageQuery),
    responses(
        (status = 200, body = ResultPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a parameter out of its bounds"),
        (status = 404, body = ErrorBody, description = "`batch_not_found`"),
    )
)]
async fn list_results(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
    ApiQuery(q): ApiQuery<ResultPageQuery>,
) -> ApiResult<Json<ResultPage>> {
    find_batch(&state, &caller, id).await?;
    let limit = q.limit.unwrap_or(100);
    let after = q.after.map_or(-1, |a| a);
    let rows = db::results::report_page(&state.db, id, after, limit, Cams::All).await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.entry_index))
        .flatten();
    Ok(Json(ResultPage {
        batch_id: id,
        items: rows.into_iter().map(|r| ItemResult::new(id, r)).collect(),
        next_after,
    }))
}

/// Rows per database page while streaming the CSV.
const CSV_PAGE: i64 = 2_000;

/// The batch's CSV report: one row per entry in archive order, streamed page by page.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/results.csv",
    tag = "results",
    operation_id = "export_results_csv",
    params(("id" = Uuid, Path, description = "batch id")),
    responses(
        (status = 200, content_type = "text/csv", body = String),
        (status = 404, body = ErrorBody, description = "`batch_not_found`"),
    )
)]
async fn export_results_csv(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> ApiResult<Response> {
    let batch = find_batch(&state, &caller, id).await?;
    let labels: Vec<String> = state
        .models
        .get(&batch.model_name)
        .map(|b| b.labels().to_vec())
        .unwrap_or_default();
    let header = csv_export::line(&csv_export::report_header(&labels));
    // The next page is read while this one is written out: Postgres and the formatting overlap.
    let (pages, mut next_page) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut after = -1;
        loop {
            let page =
                db::results::report_page(&state.db, id, after, CSV_PAGE, Cams::FirstWithoutGrid)
                    .await;
            let last = match &page {
                Ok(rows) => rows
                    .last()
                    .map(|r| r.entry_index)
                    .filter(|_| rows.len() as i64 == CSV_PAGE),
                Err(_) => None,
            };
            // The client went away when nobody receives.
            if pages.send(page).await.is_err() {
                return;
            }
            match last {
                Some(last) => after = last,
                None => return,
            }
        }
    });
    let rows = stream::poll_fn(move |cx| next_page.poll_recv(cx)).map(move |page| match page {
        Ok(rows) => {
            Ok(csv_export::lines(rows.into_iter().map(|r| {
                csv_export::report_row(id, &ItemResult::new(id, r), &labels)
            })))
        }
        // The response has started: the only honest signal left is to break the stream.
        Err(e) => {
            tracing::error!(batch = %id, error = %e, "CSV export failed mid-stream");
            Err(std::io::Error::other("database error"))
        }
    });
    let body = stream::once(async move { Ok::<Bytes, std::io::Error>(header) }).chain(rows);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"xcam-{id}.csv\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Draws one of an item's artefacts: its overlay (PNG) or its map (`.npy`).
async fn artefact(
    state: &AppState,
    caller: &Caller,
    ItemPath(batch, item): ItemPath,
    label: Option<&str>,
    png: bool,
) -> ApiResult<Response> {
    let record = find_item(state, caller, batch, item).await?;
    let (cams, geometry) = db::results::cams(&state.db, item)
        .await?
        .ok_or_else(|| ArtefactError::Missing(format!("item {item} has no result yet")))?;
    let cam = match label {
        Some(l) => cams.iter().find(|c| c.label == l),
        None => cams.first(),
    }
    .ok_or_else(|| ArtefactError::Missing(format!("item {item} has no map for that label")))?;
    artefacts::check(cam, &geometry)?;
    let (content_type, bytes) = if png {
        let image_key = record.blob_key.as_deref().ok_or_else(|| {
            ArtefactError::Corrupt(format!("item {item} has a result but no image"))
        })?;
        let overlay =
            artefacts::overlay(&state.blobs, (batch, item), image_key, cam, geometry).await?;
        // A batch deleted while this overlay was drawn must not keep the one it stored.
        if overlay.drawn && db::items::get(&state.db, batch, item).await?.is_none() {
            state
                .blobs
                .delete_prefix(&blob::derived_item_prefix(batch, item))
                .await?;
            return Err(ApiError::BatchNotFound(batch.to_string()));
        }
        ("image/png", overlay.png)
    } else {
        let npy = artefacts::map_npy(cam, geometry).await?;
        ("application/octet-stream", npy)
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// The colour overlay of an item's map over its image.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/items/{item}/overlay.png",
    tag = "results",
    operation_id = "get_overlay",
    params(("id" = Uuid, Path, description = "batch id"), ("item" = Uuid, Path, description = "item id"), ArtefactQuery),
    responses(
        (status = 200, content_type = "image/png", body = Vec<u8>),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a parameter out of its bounds"),
        (status = 404, body = ErrorBody, description = "`batch_not_found`, `not_found`: no such item, no result yet, or no map for that label"),
    )
)]
async fn get_overlay(
    State(state): State<AppState>,
    caller: Caller,
    path: ItemPath,
    ApiQuery(q): ApiQuery<ArtefactQuery>,
) -> ApiResult<Response> {
    artefact(&state, &caller, path, q.label.as_deref(), true).await
}

/// The normalised map over the original image: float32 `.npy`, H×W.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/items/{item}/cam.npy",
    tag = "results",
    operation_id = "get_cam",
    params(("id" = Uuid, Path, description = "batch id"), ("item" = Uuid, Path, description = "item id"), ArtefactQuery),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a parameter out of its bounds"),
        (status = 404, body = ErrorBody, description = "`batch_not_found`, `not_found`: no such item, no result yet, or no map for that label"),
    )
)]
async fn get_cam(
    State(state): State<AppState>,
    caller: Caller,
    path: ItemPath,
    ApiQuery(q): ApiQuery<ArtefactQuery>,
) -> ApiResult<Response> {
    artefact(&state, &caller, path, q.label.as_deref(), false).await
}
