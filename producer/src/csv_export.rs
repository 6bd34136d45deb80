//! Every CSV xcam writes: the batch report, the inference log and the audit trail. Cells come from the same
//! API types the JSON routes return, so the two cannot disagree; every cell is neutralised
//! against spreadsheet formula injection (entry names and messages come from users' archives).

use std::borrow::Cow;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use bytes::Bytes;

use crate::api::{AuditEntry, ItemResult, LogEntry};

/// Cells a spreadsheet would run as a formula get a leading apostrophe (OWASP's advice).
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// CSV records through one writer, every cell neutralised.
pub fn lines<R: AsRef<[String]>>(records: impl IntoIterator<Item = R>) -> Bytes {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    for record in records {
        for cell in record.as_ref() {
            let _ = w.write_field(neutralise(cell).as_bytes());
        }
        let _ = w.write_record(None::<&[u8]>);
    }
    Bytes::from(w.into_inner().unwrap_or_default())
}

/// One CSV record, every cell neutralised.
pub fn line(cells: &[String]) -> Bytes {
    lines([cells])
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn num(v: Option<f32>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// The report's header: fixed columns, one probability column per label, then the first
/// explained label's map summary and the timings.
pub fn report_header(labels: &[String]) -> Vec<String> {
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
        "positive_labels",
        "ood_score",
        "ood_threshold",
        "out_of_distribution",
    ]
    .map(str::to_owned)
    .to_vec();
    h.extend(labels.iter().map(|l| format!("p_{l}")));
    h.extend(
        [
            "explained_label",
            "explained_positive",
            "method",
            "peak_x",
            "peak_y",
            "bbox_x0",
            "bbox_y0",
            "bbox_x1",
            "bbox_y1",
            "raw_max",
            "confidence_drop",
            "confidence_increase",
            "deletion_auc",
            "insertion_auc",
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

/// One report row, in `report_header`'s order.
pub fn report_row(batch: uuid::Uuid, r: &ItemResult, labels: &[String]) -> Vec<String> {
    let cam = r.cams.as_ref().and_then(|c| c.first());
    let mut cells = vec![
        batch.to_string(),
        r.item_id.to_string(),
        r.entry_index.to_string(),
        r.entry_name.clone(),
        opt(r.sha256.as_ref()),
        r.status.to_string(),
        opt(r.error_code.as_ref()),
        opt(r.error_message.as_ref()),
        if r.warnings.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&r.warnings).unwrap_or_default()
        },
        opt(r.model_name.as_ref()),
        opt(r.model_version.as_ref()),
        opt(r.top_label.as_ref()),
        num(r.top_probability),
        // `|`-separated; empty on a result is "no finding".
        opt(r.positive_labels.as_ref().map(|p| p.join("|"))),
        num(r.ood_score),
        num(r.ood_threshold),
        opt(r.out_of_distribution),
    ];
    for l in labels {
        cells.push(num(r.predictions.as_ref().and_then(|p| p.get(l)).copied()));
    }
    let peak = cam.and_then(|c| c.peak);
    let faithfulness = cam.and_then(|c| c.faithfulness);
    let bbox = cam.and_then(|c| c.bbox);
    cells.extend([
        opt(cam.map(|c| &c.label)),
        opt(cam.and_then(|c| c.positive)),
        opt(r.method),
        opt(peak.map(|p| p[0])),
        opt(peak.map(|p| p[1])),
        opt(bbox.map(|b| b[0])),
        opt(bbox.map(|b| b[1])),
        opt(bbox.map(|b| b[2])),
        opt(bbox.map(|b| b[3])),
        num(cam.map(|c| c.raw_max)),
        num(faithfulness.map(|f| f.confidence_drop)),
        opt(faithfulness.map(|f| f.confidence_increase)),
        num(faithfulness.and_then(|f| f.deletion_auc)),
        num(faithfulness.and_then(|f| f.insertion_auc)),
        opt(r.overlay_url.as_ref()),
        num(r.processing_ms),
        num(r.queue_wait_ms),
        r.attempts.to_string(),
        opt(r.worker_id.as_ref()),
        opt(r.device.as_ref()),
        opt(r.finished_at.map(|t| t.to_rfc3339())),
    ]);
    cells
}

/// The log's columns: the original tool's six first, then xcam's.
pub const LOG_COLUMNS: [&str; 18] = [
    "id",
    "timestamp",
    "model_name",
    "model_version",
    "prediction",
    "probability",
    "filename",
    "processing_time_ms",
    "queue_wait_ms",
    "batch_id",
    "item_id",
    "attempt",
    "status",
    "error_code",
    "error_message",
    "worker_id",
    "device",
    "dynamic_batch_size",
];

/// One log row, in `LOG_COLUMNS`' order.
pub fn log_row(r: &LogEntry) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.ts.to_rfc3339(),
        r.model_name.clone(),
        opt(r.model_version.as_ref()),
        opt(r.prediction.as_ref()),
        opt(r.probability),
        r.filename.clone(),
        r.processing_time_ms.to_string(),
        opt(r.queue_wait_ms),
        opt(r.batch_id),
        opt(r.item_id),
        r.attempt.to_string(),
        r.status.to_string(),
        opt(r.error_code.as_ref()),
        opt(r.error_message.as_ref()),
        r.worker_id.clone(),
        r.device.clone(),
        opt(r.dynamic_batch_size),
    ]
}

/// The audit trail's columns.
pub const AUDIT_COLUMNS: [&str; 12] = [
    "id",
    "at",
    "token_name",
    "role",
    "action",
    "project",
    "batch_id",
    "item_id",
    "client",
    "outcome",
    "status",
    "detail",
];

/// One audit row, in `AUDIT_COLUMNS`' order.
pub fn audit_row(r: &AuditEntry) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.at.to_rfc3339(),
        opt(r.token_name.as_ref()),
        opt(r.role),
        r.action.to_string(),
        opt(r.project.as_ref()),
        opt(r.batch_id),
        opt(r.item_id),
        opt(r.client.as_ref()),
        r.outcome.to_string(),
        opt(r.status),
        opt(r.detail.as_ref()),
    ]
}

/// A whole CSV answer: the header, then the rows.
pub fn table(columns: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Response {
    let header: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    let out = lines(std::iter::once(header).chain(rows));
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starters_are_prefixed_and_the_rest_untouched() {
        for bad in ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(bad), format!("'{bad}"));
        }
        assert_eq!(neutralise("scan_01.png"), "scan_01.png");
        assert_eq!(neutralise(""), "");
    }

    #[test]
    fn a_line_quotes_what_csv_needs_quoted_and_neutralises_every_cell() {
        let cells = [
            "a,b".to_owned(),
            "say \"hi\"".into(),
            "=cmd()".into(),
            String::new(),
        ];
        assert_eq!(&line(&cells)[..], b"\"a,b\",\"say \"\"hi\"\"\",'=cmd(),\n");
    }

    #[test]
    fn the_report_header_and_rows_have_the_same_width() {
        let labels = vec!["nodule".to_owned(), "opacity".into()];
        let item = ItemResult {
            item_id: uuid::Uuid::nil(),
            entry_index: 0,
            entry_name: "a.png".into(),
            sha256: None,
            status: xcam_shared::status::ItemStatus::Queued,
            error_code: None,
            error_message: None,
            warnings: vec![],
            attempts: 0,
            finished_at: None,
            model_name: None,
            model_version: None,
            predictions: None,
            top_label: None,
            top_probability: None,
            positive_labels: None,
            ood_score: None,
            ood_threshold: None,
            out_of_distribution: None,
            method: None,
            cams: None,
            image_width: None,
            image_height: None,
            device: None,
            worker_id: None,
            processing_ms: None,
            queue_wait_ms: None,
            overlay_url: None,
        };
        let header = report_header(&labels);
        assert_eq!(
            header.len(),
            report_row(uuid::Uuid::nil(), &item, &labels).len()
        );
        assert!(header.contains(&"p_opacity".to_owned()));
    }
}
