//! The API's contract: every request and response body as a named type.
//!
//! The server builds these (never a database row, never a `json!` value), the `xcam` client
//! commands and the tests read them back with the same types, and `/openapi.json` is generated
//! from them, so renaming a field is a compile error on both sides and a visible change in the
//! document, not a silent blank in the CLI. Query parameters are here too, with the bounds the
//! document states and [`Bounded::check`] enforces.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use xcam_shared::{
    access::{Action, Outcome, Role},
    db::{self, results::StoredCam, skipped::SkipReason},
    imaging::Warning,
    status::{BatchStatus, ItemStatus, LogStatus},
    targets::{Faithfulness, Method},
};

pub use crate::error::ErrorBody;

/// Where a batch's resources are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub results: String,
    pub csv: String,
    pub cancel: String,
    pub report: String,
}

impl BatchLinks {
    pub fn of(id: Uuid) -> Self {
        let base = format!("/v1/batches/{id}");
        Self {
            results: format!("{base}/results"),
            csv: format!("{base}/results.csv"),
            cancel: format!("{base}/cancel"),
            report: format!("{base}/report"),
            self_: base,
        }
    }
}

/// `202` to an upload: the archive is stored and checked; its images are being ingested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreated {
    pub id: Uuid,
    /// Always `ingesting`.
    pub status: BatchStatus,
    /// Entries that will become items.
    pub images: u64,
    /// Entries that are not images (or are system clutter) and were skipped.
    pub skipped: u64,
    /// Entries refused for what they are (symlinks, nested archives, …).
    pub refused: u64,
    pub links: BatchLinks,
}

/// Items of a batch by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemCounts {
    pub total: i64,
    pub rejected: i64,
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl ItemCounts {
    /// Items that reached an outcome.
    pub fn done(&self) -> i64 {
        self.succeeded + self.failed + self.rejected + self.cancelled
    }

    /// Items still waiting for or held by a worker.
    pub fn open(&self) -> i64 {
        self.queued + self.running
    }
}

impl From<&db::batches::ItemCounts> for ItemCounts {
    fn from(c: &db::batches::ItemCounts) -> Self {
        Self {
            total: c.total.into(),
            rejected: c.rejected.into(),
            queued: c.queued.into(),
            running: c.running.into(),
            succeeded: c.succeeded.into(),
            failed: c.failed.into(),
            cancelled: c.cancelled.into(),
        }
    }
}

/// A batch: what was asked, where it is, and how fast it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub id: Uuid,
    /// The project the batch belongs to.
    pub project: String,
    pub model_name: String,
    pub model_version: String,
    pub method: Method,
    /// The label selection, as given (`top1`, `positive`, `all` or names).
    pub labels: String,
    /// The faithfulness measures each map gets.
    pub faithfulness: Faithfulness,
    pub status: BatchStatus,
    pub archive_bytes: i64,
    /// Entries in the archive (known once ingested).
    pub total_entries: i32,
    pub skipped_entries: i32,
    /// Why the batch failed as a whole, when it did.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub pseudonymize_names: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ingested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: ItemCounts,
    /// Share of items that reached an outcome, in [0, 1].
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub progress: f64,
    /// Items finished per second since the first one started.
    pub throughput_per_s: Option<f64>,
    /// Seconds until the open items are done, at that rate.
    pub eta_seconds: Option<f64>,
    pub links: BatchLinks,
}

/// The figures a batch view derives from its counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub progress: f64,
    pub throughput_per_s: Option<f64>,
    pub eta_seconds: Option<f64>,
}

impl Pace {
    /// Progress, throughput and ETA at `now`: the rate runs from the first start to the last
    /// finish once nothing is open, and to `now` while something is.
    pub fn at(
        counts: &ItemCounts,
        first_started: Option<DateTime<Utc>>,
        last_finished: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let progress = if counts.total > 0 {
            counts.done() as f64 / counts.total as f64
        } else {
            0.0
        };
        let processed = (counts.succeeded + counts.failed) as f64;
        let open = counts.open() as f64;
        let throughput = first_started.map(|start| {
            let end = if open > 0.0 {
                now
            } else {
                last_finished.unwrap_or(now)
            };
            processed / ((end - start).num_milliseconds().max(1) as f64 / 1e3)
        });
        Self {
            progress,
            throughput_per_s: throughput,
            eta_seconds: throughput.filter(|t| *t > 0.0).map(|t| open / t),
        }
    }
}

impl Batch {
    pub fn new(b: db::batches::BatchRecord) -> Self {
        let api_counts = ItemCounts::from(&b.counts);
        let pace = Pace::at(
            &api_counts,
            b.counts.first_started,
            b.counts.last_finished,
            Utc::now(),
        );
        Self {
            id: b.id,
            project: b.project,
            // A stored method that no longer parses is shown as the default rather than
            // failing the whole listing; the column is only ever written from a parsed value.
            method: b.method.parse().unwrap_or_default(),
            model_name: b.model_name,
            model_version: b.model_version,
            labels: b.labels,
            faithfulness: b.faithfulness.parse().unwrap_or_default(),
            status: b.status,
            archive_bytes: b.archive_bytes,
            total_entries: b.total_entries,
            skipped_entries: b.skipped_entries,
            error_code: b.error_code,
            error_message: b.error_message,
            pseudonymize_names: b.pseudonymize_names,
            created_at: b.created_at,
            updated_at: b.updated_at,
            ingested_at: b.ingested_at,
            started_at: b.started_at,
            finished_at: b.finished_at,
            counts: api_counts,
            progress: pace.progress,
            throughput_per_s: pace.throughput_per_s,
            eta_seconds: pace.eta_seconds,
            links: BatchLinks::of(b.id),
        }
    }
}

/// A page of recent batches, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchPage {
    pub batches: Vec<Batch>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<DateTime<Utc>>,
}

/// `GET /v1/batches` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchListQuery {
    /// Batches per page (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `created_at` of the last batch of the previous page.
    pub before: Option<DateTime<Utc>>,
}

/// The answer to a cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCancelled {
    pub id: Uuid,
    /// Always `cancelled`.
    pub status: BatchStatus,
    /// Queued items that will now not run.
    pub cancelled_items: u64,
}

/// Which failed items to retry. Every field is optional: `{}` retries every failed item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Only items that failed with one of these codes (at most 32; the request body is at
    /// most 2 MiB in all).
    #[serde(default)]
    #[schema(max_items = 32, example = json!(["inference_timeout"]))]
    pub codes: Option<Vec<String>>,
    /// Only these items (at most 10 000).
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub items: Option<Vec<Uuid>>,
    /// Say what would be retried; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl RetryRequest {
    pub const MAX_CODES: usize = 32;
    pub const MAX_ITEMS: usize = 10_000;

    /// The filters' bounds.
    pub fn check(&self) -> Result<(), String> {
        if self
            .codes
            .as_ref()
            .is_some_and(|c| c.len() > Self::MAX_CODES)
        {
            return Err(format!("codes: at most {}", Self::MAX_CODES));
        }
        if self
            .items
            .as_ref()
            .is_some_and(|i| i.len() > Self::MAX_ITEMS)
        {
            return Err(format!("items: at most {}", Self::MAX_ITEMS));
        }
        Ok(())
    }
}

/// What a retry queued again (or, in a dry run, would).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRetried {
    pub id: Uuid,
    pub dry_run: bool,
    /// How many items.
    pub retried: u64,
    /// The first 1 000 of them, in entry order.
    pub items: Vec<RetriedItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetriedItem {
    pub id: Uuid,
    pub entry_name: String,
    /// Why it had failed.
    pub error_code: Option<String>,
}

/// An entry refused at ingestion or failed by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportError {
    pub item_id: Uuid,
    pub entry_index: i32,
    pub entry_name: String,
    pub status: ItemStatus,
    pub code: String,
    pub message: Option<String>,
}

/// An entry that ran but was flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportWarning {
    pub item_id: Uuid,
    pub entry_index: i32,
    pub entry_name: String,
    pub warnings: Vec<Warning>,
}

/// An entry that is no image and was passed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSkipped {
    pub entry_index: i32,
    pub entry_name: String,
    pub reason: SkipReason,
}

/// A batch's validation report: every entry that was refused, failed, flagged or skipped, in
/// archive order, a page at a time; the tallies by code and reason cover the whole batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchReport {
    pub batch_id: Uuid,
    pub status: BatchStatus,
    pub entries: i32,
    pub skipped_entries: i32,
    pub counts: ItemCounts,
    pub errors_by_code: BTreeMap<String, i64>,
    pub warnings_by_code: BTreeMap<String, i64>,
    pub skipped_by_reason: BTreeMap<String, i64>,
    /// This page's refused and failed entries.
    pub errors: Vec<ReportError>,
    /// This page's flagged entries.
    pub warnings: Vec<ReportWarning>,
    /// This page's skipped entries.
    pub skipped: Vec<ReportSkipped>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<i32>,
}

/// The whole batch's tallies, for every page of its report.
#[derive(Debug, Clone, Default)]
pub struct ReportTallies {
    pub errors_by_code: BTreeMap<String, i64>,
    pub warnings_by_code: BTreeMap<String, i64>,
    pub skipped_by_reason: BTreeMap<String, i64>,
}

impl BatchReport {
    /// One page: the entries of `problems` and `skipped` (each fetched `limit + 1` past the
    /// previous page, in entry order) up to `limit` entries in all.
    pub fn build(
        batch: &db::batches::BatchRecord,
        tallies: ReportTallies,
        problems: Vec<db::items::Problem>,
        skipped: Vec<db::skipped::SkippedRecord>,
        limit: usize,
    ) -> Self {
        let mut indices: Vec<i32> = problems
            .iter()
            .map(|p| p.entry_index)
            .chain(skipped.iter().map(|s| s.entry_index))
            .collect();
        indices.sort_unstable();
        let next_after = (indices.len() > limit).then(|| indices[limit - 1]);
        let last = next_after.unwrap_or(i32::MAX);
        let mut report = Self {
            batch_id: batch.id,
            status: batch.status,
            entries: batch.total_entries,
            skipped_entries: batch.skipped_entries,
            counts: ItemCounts::from(&batch.counts),
            errors_by_code: tallies.errors_by_code,
            warnings_by_code: tallies.warnings_by_code,
            skipped_by_reason: tallies.skipped_by_reason,
            errors: Vec::new(),
            warnings: Vec::new(),
            skipped: skipped
                .into_iter()
                .filter(|s| s.entry_index <= last)
                .map(|s| ReportSkipped {
                    entry_index: s.entry_index,
                    entry_name: s.entry_name,
                    reason: s.reason,
                })
                .collect(),
            next_after,
        };
        for p in problems.into_iter().filter(|p| p.entry_index <= last) {
            if let Some(code) = &p.error_code {
                report.errors.push(ReportError {
                    item_id: p.id,
                    entry_index: p.entry_index,
                    entry_name: p.entry_name.clone(),
                    status: p.status,
                    code: code.clone(),
                    message: p.error_message.clone(),
                });
            }
            let warnings: Vec<Warning> = serde_json::from_value(p.warnings).unwrap_or_default();
            if !warnings.is_empty() {
                report.warnings.push(ReportWarning {
                    item_id: p.id,
                    entry_index: p.entry_index,
                    entry_name: p.entry_name,
                    warnings,
                });
            }
        }
        report
    }
}

/// One entry of a batch with its outcome and, once it succeeded, its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemResult {
    pub item_id: Uuid,
    pub entry_index: i32,
    pub entry_name: String,
    pub sha256: Option<String>,
    pub status: ItemStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub warnings: Vec<Warning>,
    pub attempts: i32,
    pub finished_at: Option<DateTime<Utc>>,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    /// Probability of every label.
    pub predictions: Option<BTreeMap<String, f32>>,
    /// The most probable label: the finding only if it is among `positive_labels`.
    pub top_label: Option<String>,
    pub top_probability: Option<f32>,
    /// The labels at or above their thresholds, most probable first. Empty: no finding.
    /// `null` for results stored before xcam said so.
    pub positive_labels: Option<Vec<String>>,
    /// How far the image's features lie from the model's training images (Mahalanobis
    /// distance); `null` when the model has no reference, so the score is unavailable.
    pub ood_score: Option<f32>,
    /// The score above which an image is out of distribution (calibrated on held-out
    /// in-distribution images).
    pub ood_threshold: Option<f32>,
    /// `ood_score > ood_threshold`: the prediction and map may not hold. `null`: unavailable.
    pub out_of_distribution: Option<bool>,
    pub method: Option<Method>,
    /// The explained labels, in the order they were asked for.
    pub cams: Option<Vec<StoredCam>>,
    pub image_width: Option<i32>,
    pub image_height: Option<i32>,
    pub device: Option<String>,
    pub worker_id: Option<String>,
    pub processing_ms: Option<f32>,
    pub queue_wait_ms: Option<f32>,
    /// The overlay of the first explained label, once there is one.
    pub overlay_url: Option<String>,
}

impl ItemResult {
    pub fn new(batch: Uuid, r: db::results::ReportRow) -> Self {
        let cams = r.cams.map(|c| c.0);
        Self {
            overlay_url: cams.as_ref().map(|_| overlay_url(batch, r.item_id)),
            item_id: r.item_id,
            entry_index: r.entry_index,
            entry_name: r.entry_name,
            sha256: r.sha256,
            status: r.status,
            error_code: r.error_code,
            error_message: r.error_message,
            warnings: serde_json::from_value(r.warnings).unwrap_or_default(),
            attempts: r.attempts,
            finished_at: r.finished_at,
            model_name: r.model_name,
            model_version: r.model_version,
            predictions: r.predictions.and_then(|p| serde_json::from_value(p).ok()),
            top_label: r.top_label,
            top_probability: r.top_probability,
            positive_labels: r.positive_labels.map(|p| p.0),
            ood_score: r.ood_score,
            ood_threshold: r.ood_threshold,
            out_of_distribution: r.ood_score.zip(r.ood_threshold).map(|(s, t)| s > t),
            method: r.method.and_then(|m| m.parse().ok()),
            cams,
            image_width: r.image_width,
            image_height: r.image_height,
            device: r.device,
            worker_id: r.worker_id,
            processing_ms: r.processing_ms,
            queue_wait_ms: r.queue_wait_ms,
        }
    }
}

/// The overlay route of an item.
pub fn overlay_url(batch: Uuid, item: Uuid) -> String {
    format!("/v1/batches/{batch}/items/{item}/overlay.png")
}

/// A page of a batch's results, in entry order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultPage {
    pub batch_id: Uuid,
    pub items: Vec<ItemResult>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<i32>,
}

/// `GET /v1/batches/{id}/results` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultPageQuery {
    /// Items per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Entry index of the last item of the previous page.
    #[param(minimum = 0)]
    pub after: Option<i32>,
}

/// `GET /v1/batches/{id}/report` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Entries per page (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
    /// Entry index of the last entry of the previous page.
    #[param(minimum = 0)]
    pub after: Option<i32>,
}

/// Which explained label an artefact route draws.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArtefactQuery {
    /// An explained label (default: the first).
    #[param(max_length = 200)]
    pub label: Option<String>,
}

/// One attempt in the inference log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    pub id: i64,
    pub ts: DateTime<Utc>,
    pub model_name: String,
    pub model_version: Option<String>,
    pub prediction: Option<String>,
    pub probability: Option<f32>,
    pub filename: String,
    pub processing_time_ms: f32,
    pub queue_wait_ms: Option<f32>,
    pub batch_id: Option<Uuid>,
    pub item_id: Option<Uuid>,
    pub attempt: i32,
    pub status: LogStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub worker_id: String,
    pub device: String,
    pub dynamic_batch_size: Option<i32>,
}

impl From<db::logs::LogRecord> for LogEntry {
    fn from(r: db::logs::LogRecord) -> Self {
        Self {
            id: r.id,
            ts: r.ts,
            model_name: r.model_name,
            model_version: r.model_version,
            prediction: r.prediction,
            probability: r.probability,
            filename: r.filename,
            processing_time_ms: r.processing_time_ms,
            queue_wait_ms: r.queue_wait_ms,
            batch_id: r.batch_id,
            item_id: r.item_id,
            attempt: r.attempt,
            status: r.status,
            error_code: r.error_code,
            error_message: r.error_message,
            worker_id: r.worker_id,
            device: r.device,
            dynamic_batch_size: r.dynamic_batch_size,
        }
    }
}

/// A page of the inference log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Who is calling: the token behind a bearer header or a dashboard session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// The token's name.
    pub name: String,
    pub role: Role,
    /// The projects it covers; empty for all.
    pub projects: Vec<String>,
    /// When the session (or, for a bearer token, the token) stops working; `null` for never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// `POST /v1/session`: sign in to the dashboard with a token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// A token from `xcam token create`.
    #[schema(min_length = 1, max_length = 200)]
    pub token: String,
}

impl SignIn {
    /// The longest token sign-in reads, in bytes (tokens are 69).
    pub const MAX_TOKEN: usize = 200;
}

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The token's name; `null` when no known token was presented.
    pub token_name: Option<String>,
    pub role: Option<Role>,
    pub action: Action,
    pub project: Option<String>,
    pub batch_id: Option<Uuid>,
    pub item_id: Option<Uuid>,
    /// The client's address, as the server saw it.
    pub client: Option<String>,
    pub outcome: Outcome,
    /// The HTTP status answered.
    pub status: Option<i16>,
    /// The error code, when refused.
    pub detail: Option<String>,
}

impl From<db::audit::AuditRecord> for AuditEntry {
    fn from(r: db::audit::AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at,
            token_name: r.token_name,
            role: r.role,
            action: r.action,
            project: r.project,
            batch_id: r.batch_id,
            item_id: r.item_id,
            client: r.client,
            outcome: r.outcome,
            status: r.status,
            detail: r.detail,
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `GET /v1/audit` parameters; the filters combine with AND.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// From this time: RFC 3339, or a duration back from now (`24h`, `7d`).
    pub since: Option<When>,
    /// Before this time, in the same forms as `since`.
    pub until: Option<When>,
    /// A token's name.
    #[param(max_length = 200)]
    pub token: Option<String>,
    pub action: Option<Action>,
    /// A project's name.
    #[param(max_length = 200)]
    pub project: Option<String>,
    pub outcome: Option<Outcome>,
    /// Entries per page (default 100).
    #[param(minimum = 1, maximum = 10_000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,16}\.[0-9]{1,18}$")]
    pub cursor: Option<String>,
    pub format: Option<LogFormat>,
}

impl Bounded for AuditQuery {
    const FILTER: bool = true;

    fn check(&self) -> Result<(), (&'static str, String)> {
        within("limit", self.limit, 1, 10_000)?;
        short("token", &self.token)?;
        short("project", &self.project)
    }
}

/// A point in time as a filter takes it: RFC 3339, or how long ago as a whole number and a
/// unit (`90s`, `15m`, `24h`, `7d`, `4w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    At(DateTime<Utc>),
    Ago(chrono::Duration),
}

impl When {
    /// How long ago: `1` to `9999` of s, m, h, d or w.
    pub const AGO_PATTERN: &str = r"^[1-9][0-9]{0,3}[smhdw]$";

    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::At(t) => t,
            When::Ago(d) => now - d,
        }
    }
}

impl std::str::FromStr for When {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
            return Ok(When::At(t.with_timezone(&Utc)));
        }
        let fail = || format!("{raw:?} is neither an RFC 3339 time nor a duration like 24h or 7d");
        // The unit is the last character, which may be any character a client sends.
        let (digits, unit) = raw.split_at(raw.char_indices().last().map_or(0, |(i, _)| i));
        let n: i64 = match digits.parse() {
            Ok(n) if (1..=9999).contains(&n) && !digits.starts_with(['0', '+']) => n,
            _ => return Err(fail()),
        };
        Ok(When::Ago(match unit {
            "s" => chrono::Duration::seconds(n),
            "m" => chrono::Duration::minutes(n),
            "h" => chrono::Duration::hours(n),
            "d" => chrono::Duration::days(n),
            "w" => chrono::Duration::weeks(n),
            _ => return Err(fail()),
        }))
    }
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            When::At(t) => f.write_str(&t.to_rfc3339()),
            When::Ago(d) => {
                // The largest unit that divides it, so what parsed prints back within the
                // pattern's four digits.
                let secs = d.num_seconds();
                let (n, unit) = [(604_800, "w"), (86_400, "d"), (3_600, "h"), (60, "m")]
                    .into_iter()
                    .find(|(size, _)| secs % size == 0)
                    .map_or((secs, "s"), |(size, unit)| (secs / size, unit));
                write!(f, "{n}{unit}")
            }
        }
    }
}

impl Serialize for When {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for When {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{
            KnownFormat, ObjectBuilder, SchemaFormat, Type, schema::AnyOfBuilder,
        };
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(When::AGO_PATTERN)),
            )
            .description(Some("RFC 3339, or a duration back from now (`24h`, `7d`)"))
            .into()
    }
}

impl ToSchema for When {}

/// How a log query answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Csv,
}

/// `GET /v1/logs` parameters. Every filter is optional and they combine with AND.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// From this time: RFC 3339, or a duration back from now (`24h`, `7d`).
    pub since: Option<When>,
    /// Before this time, in the same forms as `since`.
    pub until: Option<When>,
    #[param(max_length = 200)]
    pub model: Option<String>,
    pub status: Option<LogStatus>,
    pub batch: Option<Uuid>,
    #[param(max_length = 200)]
    pub worker: Option<String>,
    /// The top prediction.
    #[param(max_length = 200)]
    pub label: Option<String>,
    /// Slowest first: only attempts that took at least this long.
    #[param(minimum = 0, maximum = 86_400_000)]
    pub min_ms: Option<f32>,
    /// Entries per page (default 100).
    #[param(minimum = 1, maximum = 10_000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,16}\.[0-9]{1,18}$")]
    pub cursor: Option<String>,
    pub format: Option<LogFormat>,
}

/// The width of a stats bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatsBucket {
    Hour,
    #[default]
    Day,
}

/// `GET /v1/stats` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// From this time (default `7d`), as for `/v1/logs`; at most 31 days back with `hour`
    /// buckets and 366 with `day` buckets (an earlier time is taken as that far back, and the
    /// answer's `since` says so).
    pub since: Option<When>,
    pub bucket: Option<StatsBucket>,
}

/// One time bucket of the inference log (whole hours or UTC days; latency percentiles of the
/// successful attempts, within ±4.5 %).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsRow {
    pub bucket: DateTime<Utc>,
    pub inferences: i64,
    pub failures: i64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// One model's share of the stats: its own latency, never mixed with another model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelStats {
    pub model: String,
    pub inferences: i64,
    pub failures: i64,
    /// Over the whole range, from the per-bucket latency histograms (within ±4.5 %).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub buckets: Vec<StatsRow>,
}

/// Inferences, failures and latency per bucket; top predictions per model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub since: DateTime<Utc>,
    pub bucket: StatsBucket,
    pub inferences: i64,
    pub failures: i64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub error_rate: f64,
    /// All models together (their latency percentiles mix models: see `models`).
    pub buckets: Vec<StatsRow>,
    /// Each model on its own, by name.
    pub models: Vec<ModelStats>,
    /// Model → label → how often it was the top prediction.
    pub predictions: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A live worker, from its heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    pub id: String,
    pub host: String,
    pub pid: i32,
    /// The device it runs models on (`cpu`, `cuda:0`).
    pub device: String,
    pub models: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub jobs_done: i64,
    pub jobs_failed: i64,
    /// Its clock minus Postgres's at its last heartbeat, in milliseconds. Past a third of
    /// `XCAM_ORPHAN_AFTER` the queue may take its jobs for orphans; the worker logs an error.
    pub clock_skew_ms: Option<f64>,
}

impl From<db::workers::WorkerRecord> for Worker {
    fn from(w: db::workers::WorkerRecord) -> Self {
        Self {
            id: w.id,
            host: w.host,
            pid: w.pid,
            device: w.device,
            models: w.models,
            started_at: w.started_at,
            last_seen: w.last_seen,
            stopped_at: w.stopped_at,
            jobs_done: w.jobs_done,
            jobs_failed: w.jobs_failed,
            clock_skew_ms: w.clock_skew_ms,
        }
    }
}

/// A model bundle the API accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
    pub description: String,
}

/// `/healthz`: the process is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `/readyz`: Redis and Postgres answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// Always `ready` (a service that does not answer makes this a 503).
    pub status: String,
    pub postgres: String,
    pub redis: String,
    pub models: Vec<String>,
}

/// Parameters whose bounds the document states and the server enforces, in one place.
pub trait Bounded {
    /// Whether these parameters are filters of the log (refused as `invalid_filter`, 422)
    /// rather than paging (refused as `invalid_request`, 400).
    const FILTER: bool = false;

    /// The first parameter out of its documented bounds, with why.
    fn check(&self) -> Result<(), (&'static str, String)>;
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(
    name: &'static str,
    value: Option<T>,
    min: T,
    max: T,
) -> Result<(), (&'static str, String)> {
    match value {
        Some(v) if !(min..=max).contains(&v) => {
            Err((name, format!("{v} is outside [{min}, {max}]")))
        }
        _ => Ok(()),
    }
}

fn short(name: &'static str, value: &Option<String>) -> Result<(), (&'static str, String)> {
    match value {
        Some(v) if v.chars().count() > 200 => Err((name, "longer than 200 characters".into())),
        _ => Ok(()),
    }
}

impl Bounded for BatchListQuery {
    fn check(&self) -> Result<(), (&'static str, String)> {
        within("limit", self.limit, 1, 200)
    }
}

impl Bounded for ResultPageQuery {
    fn check(&self) -> Result<(), (&'static str, String)> {
        within("limit", self.limit, 1, 1000)?;
        within("after", self.after, 0, i32::MAX)
    }
}

impl Bounded for ReportQuery {
    fn check(&self) -> Result<(), (&'static str, String)> {
        within("limit", self.limit, 1, 10_000)?;
        within("after", self.after, 0, i32::MAX)
    }
}

impl Bounded for ArtefactQuery {
    fn check(&self) -> Result<(), (&'static str, String)> {
        short("label", &self.label)
    }
}

impl Bounded for LogQuery {
    const FILTER: bool = true;

    fn check(&self) -> Result<(), (&'static str, String)> {
        within("limit", self.limit, 1, 10_000)?;
        within("min_ms", self.min_ms, 0.0, 86_400_000.0)?;
        short("model", &self.model)?;
        short("worker", &self.worker)?;
        short("label", &self.label)
    }
}

impl StatsBucket {
    /// How long one bucket is.
    pub fn width(self) -> chrono::Duration {
        match self {
            Self::Hour => chrono::Duration::hours(1),
            Self::Day => chrono::Duration::days(1),
        }
    }

    /// The longest range one answer covers: a bounded number of buckets, however old the log.
    pub fn longest_range(self) -> chrono::Duration {
        match self {
            Self::Hour => chrono::Duration::days(31),
            Self::Day => chrono::Duration::days(366),
        }
    }
}

impl Bounded for StatsQuery {
    const FILTER: bool = true;

    fn check(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

/// A log cursor (`<microseconds>.<id>` of the last row seen, the pattern `LogQuery::cursor`
/// documents): the row strictly older than which the next page starts.
pub fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = raw.split_once('.')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(micros) && all_digits(id) && micros.len() <= 16 && id.len() <= 18) {
        return None;
    }
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// The cursor that continues after this row.
pub fn cursor_of(ts: DateTime<Utc>, id: i64) -> String {
    format!("{}.{}", ts.timestamp_micros(), id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    #[test]
    fn a_period_ending_in_any_character_is_refused_not_a_panic() {
        for raw in ["Í@!", "7é", "é", "", "24h\u{90}"] {
            assert!(raw.parse::<When>().is_err(), "{raw:?}");
        }
        assert!("24h".parse::<When>().is_ok());
    }

    #[test]
    fn when_takes_rfc3339_and_short_durations_only() {
        let when = |s: &str| s.parse::<When>().map(|w| w.resolve(now()));
        assert_eq!(when("24h").unwrap(), now() - chrono::Duration::hours(24));
        assert_eq!(when("7d").unwrap(), now() - chrono::Duration::days(7));
        assert_eq!(
            when("2026-11-01T00:00:00+01:00").unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 31, 23, 0, 0).unwrap()
        );
        for bad in [
            "",
            "h",
            "0d",
            "07d",
            "+7d",
            "24 h",
            "1h30m",
            "10000d",
            "5y",
            "yesterday",
        ] {
            assert!(when(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cursors_round_trip_and_malformed_ones_are_refused() {
        let ts = Utc.timestamp_micros(1_763_900_000_123_456).unwrap();
        assert_eq!(parse_cursor(&cursor_of(ts, 42)), Some((ts, 42)));
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.-1",
            "99999999999999999.1",
            "1.1.1",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pace_rates_from_first_start_to_last_finish_once_done() {
        let start = now() - chrono::Duration::seconds(10);
        let counts = ItemCounts {
            total: 10,
            succeeded: 8,
            failed: 2,
            ..Default::default()
        };
        let done = Pace::at(
            &counts,
            Some(start),
            Some(start + chrono::Duration::seconds(5)),
            now(),
        );
        assert_eq!(done.progress, 1.0);
        assert_eq!(done.throughput_per_s, Some(2.0));
        assert_eq!(done.eta_seconds, Some(0.0));

        let running = ItemCounts {
            total: 10,
            succeeded: 5,
            queued: 5,
            ..Default::default()
        };
        let pace = Pace::at(&running, Some(start), None, now());
        assert_eq!(pace.progress, 0.5);
        assert_eq!(pace.throughput_per_s, Some(0.5));
        assert_eq!(pace.eta_seconds, Some(10.0));
        assert_eq!(
            Pace::at(&ItemCounts::default(), None, None, now()).throughput_per_s,
            None
        );
    }

    #[test]
    fn query_bounds_are_enforced_as_documented() {
        let q = BatchListQuery {
            limit: Some(0),
            before: None,
        };
        assert_eq!(q.check().unwrap_err().0, "limit");
        assert!(
            BatchListQuery {
                limit: Some(200),
                before: None
            }
            .check()
            .is_ok()
        );
        let q = LogQuery {
            min_ms: Some(-1.0),
            ..Default::default()
        };
        assert_eq!(q.check().unwrap_err().0, "min_ms");
        let q = LogQuery {
            model: Some("m".repeat(201)),
            ..Default::default()
        };
        assert_eq!(q.check().unwrap_err().0, "model");
    }

    #[test]
    fn a_report_page_holds_whole_entries_in_archive_order_up_to_its_limit() {
        let batch = db::batches::BatchRecord {
            project_id: Uuid::nil(),
            project: "test".into(),
            id: Uuid::nil(),
            model_name: "demo".into(),
            model_version: "1".into(),
            method: "gradcam".into(),
            labels: "top1".into(),
            faithfulness: "off".into(),
            status: BatchStatus::CompletedWithErrors,
            archive_bytes: 1,
            total_entries: 3,
            skipped_entries: 0,
            error_code: None,
            error_message: None,
            pseudonymize_names: false,
            created_at: now(),
            updated_at: now(),
            ingested_at: None,
            started_at: None,
            finished_at: None,
            counts: Default::default(),
        };
        let problem =
            |i: i32, code: Option<&str>, warnings: serde_json::Value| db::items::Problem {
                id: Uuid::from_u128(i as u128),
                entry_index: i,
                entry_name: format!("e{i}.png"),
                status: if code.is_some() {
                    ItemStatus::Rejected
                } else {
                    ItemStatus::Succeeded
                },
                error_code: code.map(str::to_owned),
                error_message: code.map(|c| format!("because {c}")),
                warnings,
            };
        let skipped = |i: i32| db::skipped::SkippedRecord {
            entry_index: i,
            entry_name: format!("notes{i}.txt"),
            reason: SkipReason::NotAnImage,
        };
        let w = serde_json::json!([{"code": "view_missing", "message": "no view"}]);
        let page = |limit: usize| {
            BatchReport::build(
                &batch,
                ReportTallies::default(),
                vec![
                    problem(0, Some("corrupt_image"), serde_json::json!([])),
                    problem(2, None, w.clone()),
                    problem(4, Some("corrupt_image"), w.clone()),
                ],
                vec![skipped(1), skipped(3)],
                limit,
            )
        };
        let all = page(5);
        assert_eq!(all.next_after, None);
        let errors: Vec<i32> = all.errors.iter().map(|e| e.entry_index).collect();
        assert_eq!(errors, [0, 4]);
        let skips: Vec<i32> = all.skipped.iter().map(|e| e.entry_index).collect();
        assert_eq!(skips, [1, 3]);
        assert_eq!(all.warnings[0].warnings[0].code, "view_missing");
        // Entries 0..=2 on the first page, whatever kind each is; the next starts after 2.
        let first = page(3);
        assert_eq!(first.next_after, Some(2));
        assert_eq!(
            first.errors.len() + first.warnings.len() + first.skipped.len(),
            3
        );
        assert!(first.skipped.iter().all(|s| s.entry_index <= 2));
    }
}
