//! A batch's results: JSON pages, the CSV report (streamed), and each item's artefacts.

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use xcam_shared::db::{self, results::ReportRow};

use super::{find_item, parse_batch_id};
use crate::{
    artefacts,
    csv_safe::neutralise,
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct PageQuery {
    limit: Option<i64>,
    /// Entry index of the last row of the previous page.
    after: Option<i32>,
}

/// A page of a batch's results, in entry order.
#[utoipa::path(get, path = "/v1/batches/{id}/results", tag = "results", params(("id" = String, Path, description = "batch id"), PageQuery), responses((status = 200, body = serde_json::Value), (status = 404, body = crate::error::ErrorBody)))]
async fn list_results(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let id = parse_batch_id(&id)?;
    db::batches::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::BatchNotFound(id.to_string()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = db::results::report_page(&state.db, id, q.after.unwrap_or(-1), limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.entry_index))
        .flatten();
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["overlay_url"] = json!(r.cams.as_ref().map(|_| overlay_url(id, r.item_id)));
            v
        })
        .collect();
    Ok(Json(
        json!({ "batch_id": id, "items": items, "next_after": next }),
    ))
}

fn overlay_url(batch: Uuid, item: Uuid) -> String {
    format!("/v1/batches/{batch}/items/{item}/overlay.png")
}

/// Rows per database page while streaming the CSV.
const CSV_PAGE: i64 = 500;

/// `GET /v1/batches/{id}/results.csv`: one row per item in entry order, streamed page by page.
#[utoipa::path(get, path = "/v1/batches/{id}/results.csv", tag = "results", params(("id" = String, Path, description = "batch id")), responses((status = 200, content_type = "text/csv", body = String), (status = 404, body = crate::error::ErrorBody)))]
async fn export_results_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_batch_id(&id)?;
    let batch = db::batches::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::BatchNotFound(id.to_string()))?;
    let labels: Vec<String> = match state.models.get(&batch.model_name) {
        Some(b) => b.labels().to_vec(),
        None => Vec::new(),
    };
    let header = csv_line(&header_row(&labels));
    let body = stream::once(async move { Ok::<Bytes, std::io::Error>(header) })
        .chain_pages(state, id, labels);
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

trait ChainPages {
    fn chain_pages(
        self,
        state: AppState,
        batch: Uuid,
        labels: Vec<String>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send;
}

impl<S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send> ChainPages for S {
    fn chain_pages(
        self,
        state: AppState,
        batch: Uuid,
        labels: Vec<String>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        use futures::StreamExt;
        let pages = stream::unfold(Some(-1), move |after| {
            let (state, labels) = (state.clone(), labels.clone());
            async move {
                let after = after?;
                match db::results::report_page(&state.db, batch, after, CSV_PAGE).await {
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = (rows.len() as i64 == CSV_PAGE)
                            .then(|| rows.last().map(|r| r.entry_index))
                            .flatten();
                        let mut out = Vec::new();
                        for r in &rows {
                            out.extend_from_slice(&csv_line(&row_cells(batch, r, &labels)));
                        }
                        Some((Ok(Bytes::from(out)), next))
                    }
                    // The response has started: the only honest signal left is to break the stream.
                    Err(e) => {
                        tracing::error!(%batch, error = %e, "CSV export failed mid-stream");
                        Some((Err(std::io::Error::other("database error")), None))
                    }
                }
            }
        });
        self.chain(pages)
    }
}

fn header_row(labels: &[String]) -> Vec<String> {
    let mut h: Vec<String> = [
        "batch_id",
        "item_id",
        "entry_index",
        "entry_name",
        "sha256",
        "status",
        "error_code",
        "error_message",
        "warnings",
        "model_name",
        "model_version",
        "top_label",
        "top_probability",
    ]
    .map(str::to_owned)
    .to_vec();
    h.extend(labels.iter().map(|l| format!("p_{l}")));
    h.extend(
        [
            "explained_label",
            "method",
            "peak_x",
            "peak_y",
            "bbox_x0",
            "bbox_y0",
            "bbox_x1",
            "bbox_y1",
            "raw_max",
            "overlay_url",
            "processing_ms",
            "queue_wait_ms",
            "attempts",
            "worker",
            "device",
            "finished_at",
        ]
        .map(str::to_owned),
    );
    h
}

fn row_cells(batch: Uuid, r: &ReportRow, labels: &[String]) -> Vec<String> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let num = |v: Option<f32>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let cam = r.cams.as_ref().and_then(|c| c.0.first());
    let mut cells = vec![
        batch.to_string(),
        r.item_id.to_string(),
        r.entry_index.to_string(),
        r.entry_name.clone(),
        opt(r.sha256.clone()),
        r.status.clone(),
        opt(r.error_code.clone()),
        opt(r.error_message.clone()),
        match &r.warnings {
            Value::Array(a) if a.is_empty() => String::new(),
            w => w.to_string(),
        },
        opt(r.model_name.clone()),
        opt(r.model_version.clone()),
        opt(r.top_label.clone()),
        num(r.top_probability),
    ];
    for l in labels {
        cells.push(num(r
            .predictions
            .as_ref()
            .and_then(|p| p.get(l))
            .and_then(Value::as_f64)
            .map(|v| v as f32)));
    }
    let peak = cam.and_then(|c| c.peak);
    let bbox = cam.and_then(|c| c.bbox);
    let coord = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_default();
    cells.extend([
        opt(cam.map(|c| c.label.clone())),
        opt(r.method.clone()),
        coord(peak.map(|p| p[0])),
        coord(peak.map(|p| p[1])),
        coord(bbox.map(|b| b[0])),
        coord(bbox.map(|b| b[1])),
        coord(bbox.map(|b| b[2])),
        coord(bbox.map(|b| b[3])),
        num(cam.map(|c| c.raw_max)),
        if cam.is_some() {
            overlay_url(batch, r.item_id)
        } else {
            String::new()
        },
        num(r.processing_ms),
        num(r.queue_wait_ms),
        r.attempts.to_string(),
        opt(r.worker_id.clone()),
        opt(r.device.clone()),
        r.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
    ]);
    cells
}

/// One CSV record, every cell neutralised against spreadsheet formula injection.
pub(crate) fn csv_line(cells: &[String]) -> Bytes {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let _ = w.write_record(cells.iter().map(|c| neutralise(c).into_owned()));
    Bytes::from(w.into_inner().unwrap_or_default())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ArtefactQuery {
    /// Which explained label (default: the first).
    label: Option<String>,
}

async fn artefact(
    state: &AppState,
    id: &str,
    item: &str,
    label: Option<&str>,
    png: bool,
) -> ApiResult<Response> {
    let record = find_item(state, id, item).await?;
    let item = record.id;
    let (cams, geometry) = db::results::cams(&state.db, item)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("item {item} has no result yet")))?;
    let cam = match label {
        Some(l) => cams.iter().find(|c| c.label == l),
        None => cams.first(),
    }
    .ok_or_else(|| ApiError::NotFound(format!("item {item} has no map for that label")))?;
    artefacts::check(cam, &geometry)?;
    if png {
        let image_key = record.blob_key.as_deref().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("item {item} has a result but no image"))
        })?;
        let bytes = artefacts::overlay(state, item, image_key, cam, geometry).await?;
        Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())
    } else {
        let bytes = artefacts::map_npy(cam, geometry).await?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
    }
}

/// The colour overlay of an item's map.
#[utoipa::path(get, path = "/v1/batches/{id}/items/{item}/overlay.png", tag = "results", params(("id" = String, Path, description = "batch id"), ("item" = String, Path, description = "item id"), ArtefactQuery), responses((status = 200, content_type = "image/png", body = Vec<u8>), (status = 404, body = crate::error::ErrorBody)))]
async fn get_overlay(
    State(state): State<AppState>,
    Path((id, item)): Path<(String, String)>,
    Query(q): Query<ArtefactQuery>,
) -> ApiResult<Response> {
    artefact(&state, &id, &item, q.label.as_deref(), true).await
}

/// The raw normalised map (float32 .npy, H×W of the original).
#[utoipa::path(get, path = "/v1/batches/{id}/items/{item}/cam.npy", tag = "results", params(("id" = String, Path, description = "batch id"), ("item" = String, Path, description = "item id"), ArtefactQuery), responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = crate::error::ErrorBody)))]
async fn get_cam(
    State(state): State<AppState>,
    Path((id, item)): Path<(String, String)>,
    Query(q): Query<ArtefactQuery>,
) -> ApiResult<Response> {
    artefact(&state, &id, &item, q.label.as_deref(), false).await
}
