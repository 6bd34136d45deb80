//! `xcam submit | status | export | logs | stats | workers | cancel | retry | delete | audit`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use xcam_shared::{
    access::{Action, Outcome},
    status::{BatchStatus, LogStatus},
    targets::{Faithfulness, LabelSelection, Method},
};

use super::{Api, ClientError, exit, progress::Progress};
use crate::api::{
    AuditPage, Batch, BatchCancelled, BatchCreated, BatchPage, BatchRetried, LogPage, RetryRequest,
    Stats, StatsBucket, When, Worker,
};

/// Where the API is, and who is asking.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Base URL of the xcam API (`https://…` when it terminates TLS).
    #[arg(
        long,
        env = "XCAM_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The API token (from `xcam token create`); sent as `Authorization: Bearer`.
    #[arg(long, env = "XCAM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust besides the system's (a private CA or a self-signed
    /// server certificate).
    #[arg(long = "ca-cert", env = "XCAM_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Upload a ZIP of radiographs as a batch; with --wait, follow it to the end.
    Submit(SubmitArgs),
    /// A batch's status, or the recent batches.
    Status { batch: Option<String> },
    /// Save a batch's CSV report.
    Export {
        batch: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Query the inference log.
    Logs(LogsArgs),
    /// Inference counts, latency and errors per hour or day.
    Stats {
        /// RFC 3339, or a duration back from now (`24h`, `7d`).
        #[arg(long, default_value = "7d")]
        since: When,
        #[arg(long, default_value = "day", value_parser = parse_bucket)]
        bucket: StatsBucket,
    },
    /// The live workers.
    Workers,
    /// Cancel a batch's queued items.
    Cancel { batch: String },
    /// Queue a batch's failed items again (all of them, or those failed with a code).
    Retry {
        batch: String,
        /// Only items that failed with this code; repeat for several.
        #[arg(long = "code")]
        codes: Vec<String>,
        /// Say what would be retried; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a batch and everything xcam holds of it: items, results, overlays, images, the
    /// entry names in the inference log. Cannot be undone.
    Delete { batch: String },
    /// Query the audit trail (admin tokens only).
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// RFC 3339, or a duration back from now (`24h`, `7d`).
    #[arg(long)]
    pub since: Option<When>,
    #[arg(long)]
    pub until: Option<When>,
    /// A token's name.
    #[arg(long)]
    pub token_name: Option<String>,
    /// upload, cancel, read_csv, sign_in, …
    #[arg(long)]
    pub action: Option<Action>,
    #[arg(long)]
    pub project: Option<String>,
    /// ok, denied, not_found, refused or failed.
    #[arg(long)]
    pub outcome: Option<Outcome>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after the last entry of a previous page (its `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The ZIP archive.
    pub file: PathBuf,
    /// Model bundle name (may be left out when the server has one).
    #[arg(long)]
    pub model: Option<String>,
    /// The project (may be left out when the token covers one).
    #[arg(long)]
    pub project: Option<String>,
    /// gradcam, gradcam++, hirescam, xgradcam, layercam or eigencam.
    #[arg(long)]
    pub method: Option<Method>,
    /// top1, positive, all, or label names separated by commas.
    #[arg(long)]
    pub labels: Option<LabelSelection>,
    /// off, drop or full (default: the project's setting). `drop` costs one more forward per
    /// map, `full` 43.
    #[arg(long)]
    pub faithfulness: Option<Faithfulness>,
    /// Replace entry names with salted hashes everywhere.
    #[arg(long)]
    pub pseudonymize_names: bool,
    /// Follow the batch until it ends.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: save the CSV report here at the end.
    #[arg(long, requires = "wait")]
    pub csv: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// RFC 3339, or a duration back from now (`24h`, `7d`).
    #[arg(long)]
    pub since: Option<When>,
    #[arg(long)]
    pub until: Option<When>,
    #[arg(long)]
    pub model: Option<String>,
    /// succeeded, failed or retrying.
    #[arg(long)]
    pub status: Option<LogStatus>,
    #[arg(long)]
    pub batch: Option<String>,
    #[arg(long)]
    pub worker: Option<String>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long = "min-ms")]
    pub min_ms: Option<f32>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after the last entry of a previous page (its `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
    pub format: String,
}

/// Runs a client command; returns the process's exit status.
pub async fn run(target: &Target, command: ClientCommand) -> u8 {
    let api = match Api::new(
        &target.url,
        target.token.as_deref(),
        target.ca_cert.as_deref(),
    ) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let result = match command {
        ClientCommand::Submit(args) => submit(&api, args).await,
        ClientCommand::Status { batch: Some(id) } => api
            .get::<Batch>(&format!("/v1/batches/{}", encode(&id)))
            .await
            .map(|b| {
                print_batch(&b);
                exit::OK
            }),
        ClientCommand::Status { batch: None } => list_batches(&api).await,
        ClientCommand::Export { batch, output } => export(&api, &batch, &output).await.map(|n| {
            println!("wrote {n} bytes to {}", output.display());
            exit::OK
        }),
        ClientCommand::Logs(args) => logs(&api, &args).await,
        ClientCommand::Stats { since, bucket } => stats(&api, since, bucket).await,
        ClientCommand::Workers => workers(&api).await,
        ClientCommand::Audit(args) => audit(&api, &args).await,
        ClientCommand::Cancel { batch } => api
            .post::<BatchCancelled>(&format!("/v1/batches/{}/cancel", encode(&batch)))
            .await
            .map(|c| {
                println!(
                    "batch {} cancelled: {} queued items will not run",
                    c.id, c.cancelled_items
                );
                exit::OK
            }),
        ClientCommand::Retry {
            batch,
            codes,
            dry_run,
        } => {
            let request = RetryRequest {
                codes: (!codes.is_empty()).then_some(codes),
                items: None,
                dry_run,
            };
            api.post_json::<BatchRetried>(
                &format!("/v1/batches/{}/retry", encode(&batch)),
                &request,
            )
            .await
            .map(|r| {
                let verb = if r.dry_run { "would retry" } else { "retrying" };
                println!("batch {}: {verb} {} failed items", r.id, r.retried);
                for item in &r.items {
                    println!(
                        "  {}  {}  {}",
                        item.id,
                        item.error_code.as_deref().unwrap_or("-"),
                        item.entry_name
                    );
                }
                exit::OK
            })
        }
        ClientCommand::Delete { batch } => api
            .delete(&format!("/v1/batches/{}", encode(&batch)))
            .await
            .map(|()| {
                println!("batch {batch} deleted");
                exit::OK
            }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        exit::ERROR
    })
}

fn parse_bucket(s: &str) -> Result<StatsBucket, String> {
    match s {
        "hour" => Ok(StatsBucket::Hour),
        "day" => Ok(StatsBucket::Day),
        other => Err(format!("{other:?}: use hour or day")),
    }
}

fn encode(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

async fn submit(api: &Api, args: SubmitArgs) -> Result<u8, ClientError> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| ClientError::Local(format!("{}: {e}", args.file.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| ClientError::Local(e.to_string()))?
        .len();
    let bar = std::sync::Arc::new(std::sync::Mutex::new(Progress::bytes(size)));
    let counter = bar.clone();
    // The archive is streamed from disk, never read into memory, with the bar fed as it goes.
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file, crate::FILE_IO).inspect(move |chunk| {
            if let (Ok(bytes), Ok(bar)) = (chunk, counter.lock()) {
                bar.inc(bytes.len() as u64);
            }
        });
    let name = args
        .file
        .file_name()
        .map_or_else(|| "upload.zip".into(), |n| n.to_string_lossy().into_owned());
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
            .file_name(name)
            .mime_str("application/zip")
            .expect("a valid MIME type");
    let mut form = reqwest::multipart::Form::new();
    if let Some(model) = &args.model {
        form = form.text("model", model.clone());
    }
    if let Some(project) = &args.project {
        form = form.text("project", project.clone());
    }
    if let Some(method) = args.method {
        form = form.text("method", method.to_string());
    }
    if let Some(labels) = &args.labels {
        form = form.text("labels", labels.to_string());
    }
    if let Some(faithfulness) = args.faithfulness {
        form = form.text("faithfulness", faithfulness.to_string());
    }
    if args.pseudonymize_names {
        form = form.text("pseudonymize_names", "true");
    }
    let created: BatchCreated = api
        .post_multipart("/v1/batches", form.part("file", part))
        .await?;
    if let Ok(bar) = bar.lock() {
        bar.finish();
    }
    let id = created.id.to_string();
    println!(
        "batch {id}: {} images, {} entries skipped, {} refused",
        created.images, created.skipped, created.refused
    );
    if !args.wait {
        println!("follow it with: xcam status {id}");
        return Ok(exit::OK);
    }
    let view = follow(api, &id).await?;
    print_batch(&view);
    if let Some(path) = &args.csv {
        let n = export(api, &id, path).await?;
        println!("wrote the CSV report ({n} bytes) to {}", path.display());
    }
    Ok(match view.status {
        BatchStatus::Succeeded => exit::OK,
        BatchStatus::CompletedWithErrors => exit::SOME_FAILED,
        _ => exit::BATCH_FAILED,
    })
}

/// Polls a batch until it ends, with a bar (or plain lines without a terminal).
async fn follow(api: &Api, id: &str) -> Result<Batch, ClientError> {
    let mut bar = Progress::items(1);
    loop {
        let view: Batch = api.get(&format!("/v1/batches/{}", encode(id))).await?;
        let c = &view.counts;
        let mut note = Vec::new();
        if c.failed + c.rejected > 0 {
            note.push(format!("{} failed, {} rejected", c.failed, c.rejected));
        }
        if let Some(rate) = view.throughput_per_s {
            note.push(format!("{rate:.1}/s"));
        }
        if let Some(eta) = view.eta_seconds.filter(|e| *e > 0.0) {
            note.push(format!("eta {eta:.0}s"));
        }
        let (done, total) = (c.done().max(0) as u64, c.total.max(1) as u64);
        bar.update(done, total, view.status.as_str(), &note.join(", "));
        if view.status.is_terminal() {
            bar.finish();
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn export(api: &Api, id: &str, path: &std::path::Path) -> Result<u64, ClientError> {
    let response = api
        .get_raw(&format!("/v1/batches/{}/results.csv", encode(id)))
        .await?;
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))?;
    let mut out = tokio::io::BufWriter::with_capacity(crate::FILE_IO, file);
    let mut stream = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ClientError::Local(format!("the download broke off: {e}")))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| ClientError::Local(e.to_string()))?;
        written += chunk.len() as u64;
    }
    out.flush()
        .await
        .map_err(|e| ClientError::Local(e.to_string()))?;
    Ok(written)
}

fn print_batch(b: &Batch) {
    let c = &b.counts;
    println!(
        "batch {}  {}  project {}  model {} {}  {}",
        b.id, b.status, b.project, b.model_name, b.model_version, b.method
    );
    println!(
        "  items {}: {} succeeded, {} failed, {} rejected, {} cancelled, {} queued, {} running; {} entries skipped",
        c.total,
        c.succeeded,
        c.failed,
        c.rejected,
        c.cancelled,
        c.queued,
        c.running,
        b.skipped_entries
    );
    if let Some(rate) = b.throughput_per_s {
        println!("  {rate:.1} images/s; progress {:.0}%", b.progress * 100.0);
    }
    if let Some(code) = &b.error_code {
        println!(
            "  error {code}: {}",
            b.error_message.as_deref().unwrap_or_default()
        );
    }
}

async fn list_batches(api: &Api) -> Result<u8, ClientError> {
    let page: BatchPage = api.get("/v1/batches?limit=20").await?;
    println!(
        "{:<36}  {:<16} {:<22} {:<10} {:>7} {:>9} {:>7}  created",
        "batch", "project", "status", "model", "items", "succeeded", "failed"
    );
    for b in &page.batches {
        let c = &b.counts;
        println!(
            "{:<36}  {:<16} {:<22} {:<10} {:>7} {:>9} {:>7}  {}",
            b.id.to_string(),
            b.project,
            b.status.as_str(),
            b.model_name,
            c.total,
            c.succeeded,
            c.failed + c.rejected,
            b.created_at.to_rfc3339()
        );
    }
    Ok(exit::OK)
}

async fn logs(api: &Api, a: &LogsArgs) -> Result<u8, ClientError> {
    let query = [
        ("limit", Some(a.limit.to_string())),
        ("since", a.since.map(|w| w.to_string())),
        ("until", a.until.map(|w| w.to_string())),
        ("model", a.model.clone()),
        ("status", a.status.map(|s| s.to_string())),
        ("batch", a.batch.clone()),
        ("worker", a.worker.clone()),
        ("label", a.label.clone()),
        ("cursor", a.cursor.clone()),
        ("min_ms", a.min_ms.map(|ms| ms.to_string())),
    ];
    let Some(page) = page::<LogPage>(api, "/v1/logs", &query, &a.format).await? else {
        return Ok(exit::OK);
    };
    println!(
        "{:<25} {:<8} {:<10} {:<12} {:>6} {:>8} {:>3}  {:<28} file",
        "time", "model", "status", "prediction", "p", "ms", "try", "worker"
    );
    for e in &page.entries {
        println!(
            "{:<25} {:<8} {:<10} {:<12} {:>6} {:>8.1} {:>3}  {:<28} {}{}",
            e.ts.to_rfc3339().get(..25).unwrap_or_default(),
            e.model_name,
            e.status.as_str(),
            e.prediction.as_deref().unwrap_or("-"),
            e.probability.map_or("-".into(), |p| format!("{p:.3}")),
            e.processing_time_ms,
            e.attempt,
            e.worker_id,
            e.filename,
            e.error_code
                .as_deref()
                .map(|c| format!("  [{c}]"))
                .unwrap_or_default(),
        );
    }
    if let Some(next) = &page.next_cursor {
        println!("(more: repeat with --cursor {next})");
    }
    Ok(exit::OK)
}

async fn stats(api: &Api, since: When, bucket: StatsBucket) -> Result<u8, ClientError> {
    let name = match bucket {
        StatsBucket::Hour => "hour",
        StatsBucket::Day => "day",
    };
    let s: Stats = api
        .get(&format!(
            "/v1/stats?since={}&bucket={name}",
            form_encode(&since.to_string())
        ))
        .await?;
    println!(
        "since {}: {} inferences, {} failed ({:.1}% errors)",
        s.since.to_rfc3339(),
        s.inferences,
        s.failures,
        s.error_rate * 100.0
    );
    println!(
        "{:<25} {:>10} {:>8} {:>9} {:>9}",
        name, "inferences", "failed", "p50 ms", "p95 ms"
    );
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    for b in &s.buckets {
        println!(
            "{:<25} {:>10} {:>8} {:>9} {:>9}",
            b.bucket.to_rfc3339().get(..25).unwrap_or_default(),
            b.inferences,
            b.failures,
            ms(b.p50_ms),
            ms(b.p95_ms)
        );
    }
    for m in &s.models {
        println!(
            "model {}: {} inferences, {} failed, p50 {} ms, p95 {} ms",
            m.model,
            m.inferences,
            m.failures,
            ms(m.p50_ms),
            ms(m.p95_ms)
        );
    }
    for (model, labels) in &s.predictions {
        let parts: Vec<String> = labels.iter().map(|(l, n)| format!("{l} {n}")).collect();
        println!("predictions of {model}: {}", parts.join(", "));
    }
    Ok(exit::OK)
}

async fn workers(api: &Api) -> Result<u8, ClientError> {
    let list: Vec<Worker> = api.get("/v1/workers").await?;
    println!(
        "{:<36} {:<8} {:<16} {:>6} {:>6} {:>9}  last seen",
        "worker", "device", "models", "done", "failed", "clock ms"
    );
    for w in &list {
        println!(
            "{:<36} {:<8} {:<16} {:>6} {:>6} {:>9}  {}",
            w.id,
            w.device,
            w.models.join(","),
            w.jobs_done,
            w.jobs_failed,
            w.clock_skew_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:+.0}")),
            w.last_seen.to_rfc3339()
        );
    }
    Ok(exit::OK)
}

async fn audit(api: &Api, a: &AuditArgs) -> Result<u8, ClientError> {
    let query = [
        ("limit", Some(a.limit.to_string())),
        ("since", a.since.map(|w| w.to_string())),
        ("until", a.until.map(|w| w.to_string())),
        ("token", a.token_name.clone()),
        ("action", a.action.map(|v| v.to_string())),
        ("project", a.project.clone()),
        ("outcome", a.outcome.map(|v| v.to_string())),
        ("cursor", a.cursor.clone()),
    ];
    let Some(page) = page::<AuditPage>(api, "/v1/audit", &query, &a.format).await? else {
        return Ok(exit::OK);
    };
    println!(
        "{:<25} {:<20} {:<9} {:<15} {:<9} {:<10} {:<36} client",
        "time", "token", "role", "action", "outcome", "project", "batch"
    );
    for e in &page.entries {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{:<25} {:<20} {:<9} {:<15} {:<9} {:<10} {:<36} {}{}",
            e.at.to_rfc3339().get(..25).unwrap_or_default(),
            dash(e.token_name.clone()),
            dash(e.role.map(|r| r.to_string())),
            e.action.as_str(),
            e.outcome.as_str(),
            dash(e.project.clone()),
            dash(e.batch_id.map(|b| b.to_string())),
            dash(e.client.clone()),
            e.detail
                .as_deref()
                .map(|c| format!("  [{c}]"))
                .unwrap_or_default(),
        );
    }
    if let Some(next) = &page.next_cursor {
        println!("(more: repeat with --cursor {next})");
    }
    Ok(exit::OK)
}

/// Fetches a page of a filtered listing. `csv` and `json` are printed as they come and give
/// `None`; `table` gives the page to print.
async fn page<T: serde::de::DeserializeOwned + serde::Serialize>(
    api: &Api,
    path: &str,
    query: &[(&str, Option<String>)],
    format: &str,
) -> Result<Option<T>, ClientError> {
    let mut qs: Vec<String> = query
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", form_encode(v))))
        .collect();
    if format == "csv" {
        qs.push("format=csv".into());
        let text = api
            .get_raw(&format!("{path}?{}", qs.join("&")))
            .await?
            .text()
            .await
            .map_err(|e| ClientError::Local(e.to_string()))?;
        print!("{text}");
        return Ok(None);
    }
    let page: T = api.get(&format!("{path}?{}", qs.join("&"))).await?;
    if format == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&page).unwrap_or_default()
        );
        return Ok(None);
    }
    Ok(Some(page))
}

/// Percent-encodes a query value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
