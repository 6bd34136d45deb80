//! `make bench-scale`: the control plane at fleet scale, from one run, every figure beside its
//! target. It loads a database of its own (10 million log rows and 1 million items over 90 days,
//! `xcam_tests::scale`), starts a release `xcam serve` on it, and measures from the client:
//!
//! 1. each `/v1/logs` query form, `/v1/stats`, `/metrics`, the batch list and a batch's status
//!    at 100 and at 100 000 items (median of 15 after 3 warm-ups), and the plan of each log form;
//! 2. a 100 000-entry ZIP of small images ingested (entries/s, the producer's peak memory against
//!    a 100-entry one), and Postgres and Redis server time per item for both;
//! 3. that batch's CSV report streamed (rows/s, peak memory).
//!
//! Sizes: BENCH_LOG_ROWS, BENCH_ITEMS, BENCH_BIG (entries of the big ZIP).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use xcam_shared::db::logs::{self, LogFilter};
use xcam_tests::{
    Producer, Stack, TestDb, png, redis_url, repo_root,
    scale::{self, Size},
    zip_of,
};

const RUNS: usize = 15;
const WARM_UP: usize = 3;

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One printed line: what, the figure, its target and whether it is met.
struct Row {
    what: String,
    figure: f64,
    unit: &'static str,
    target: Target,
}

#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
    None,
}

impl Row {
    fn print(&self) {
        let (target, met) = match self.target {
            Target::AtMost(t) => (
                format!("≤ {t}"),
                if self.figure <= t { "yes" } else { "NO" },
            ),
            Target::AtLeast(t) => (
                format!("≥ {t}"),
                if self.figure >= t { "yes" } else { "NO" },
            ),
            Target::None => (String::new(), ""),
        };
        println!(
            "| {} | {:.1} {} | {} | {} |",
            self.what, self.figure, self.unit, target, met
        );
    }
}

/// Median wall time of GET `path` in ms, and the bytes of the last answer.
async fn median_ms(api: &Producer, path: &str) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(RUNS);
    for run in 0..WARM_UP + RUNS {
        let started = Instant::now();
        let response = api.client.get(api.url(path)).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {body:?}");
        if run >= WARM_UP {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The query string `/v1/logs` takes for a filter (its projects come from the caller's token).
fn log_query(f: &LogFilter, limit: i64) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("limit", &limit.to_string());
    if let Some(v) = f.since {
        q.append_pair("since", &v.to_rfc3339());
    }
    if let Some(v) = f.until {
        q.append_pair("until", &v.to_rfc3339());
    }
    if let Some(v) = &f.model {
        q.append_pair("model", v);
    }
    if let Some(v) = f.status {
        q.append_pair("status", v.as_str());
    }
    if let Some(v) = f.batch {
        q.append_pair("batch", &v.to_string());
    }
    if let Some(v) = &f.worker {
        q.append_pair("worker", v);
    }
    if let Some(v) = &f.label {
        q.append_pair("label", v);
    }
    if let Some(v) = f.min_ms {
        q.append_pair("min_ms", &v.to_string());
    }
    if let Some((ts, id)) = f.before {
        q.append_pair("cursor", &xcam_producer::api::cursor_of(ts, id));
    }
    if limit > 1000 {
        q.append_pair("format", "csv");
    }
    q.finish()
}

/// Server time so far: Postgres' time executing statements in this database (ms), and Redis'
/// time executing commands (µs, all commands).
async fn server_time(db: &sqlx::PgPool, redis: &str) -> anyhow::Result<(f64, f64)> {
    // A backend reports its statistics when it goes idle, or up to 10 s later when it reported
    // within the last second: wait that long so each window holds only its own work.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let pg: f64 = sqlx::query_scalar(
        "SELECT active_time FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await?;
    let mut conn = redis::Client::open(redis)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let redis_us: f64 = info
        .lines()
        .filter_map(|l| {
            l.split_once("usec=")?
                .1
                .split(',')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum();
    Ok((pg, redis_us))
}

/// Uploads `n` small images, waits for the ingestion; returns (batch, seconds, entries/s).
async fn ingest(api: &Producer, n: usize) -> anyhow::Result<(String, f64)> {
    let zip = tokio::task::spawn_blocking(move || {
        let images: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| (format!("img_{i:06}.png"), png(64, 64, i as u32)))
            .collect();
        let entries: Vec<(&str, Vec<u8>)> = images
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect();
        zip_of(&entries)
    })
    .await?;
    let started = Instant::now();
    let (status, created) = api.upload(zip, &[("model", "demo")]).await;
    anyhow::ensure!(status == 202, "upload: {status} {created}");
    let id = created["id"].as_str().context("batch id")?.to_owned();
    loop {
        let (_, view) = api.get_json(&format!("/v1/batches/{id}")).await;
        if view["status"] != "ingesting" {
            anyhow::ensure!(view["counts"]["queued"] == n, "ingestion of {n}: {view}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((id, started.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let size = Size {
        log_rows: env_or("BENCH_LOG_ROWS", 10_000_000),
        items: env_or("BENCH_ITEMS", 1_000_000),
        items_per_batch: 100,
        big_batch: 100_000,
        small_batch: 100,
        days: 90,
    };
    let big = env_or("BENCH_BIG", 100_000) as usize;
    println!(
        "==> loading {} log rows and {} items over {} days",
        size.log_rows, size.items, size.days
    );
    let db = TestDb::create().await;
    let loaded = scale::load(&db.pool, size).await;
    println!("    loaded in {:.0} s", loaded.took.as_secs_f64());
    let pool = db.pool.clone();
    let stack = Stack::on(db, redis_url(), repo_root().join("models"));
    let api = stack.producer_process(&[]).await;
    // Unscoped forms are asked as an operator sees the fleet: every project.
    let fleet = xcam_tests::make_token(
        &pool,
        "fleet-operator",
        xcam_shared::access::Role::Operator,
        &[],
        None,
    )
    .await;
    let fleet = api.as_token(&fleet);
    let mut rows = Vec::new();

    println!("==> query forms ({RUNS} runs each, median; plans from EXPLAIN)");
    let mut plans = Vec::new();
    for (form, filter, limit) in scale::log_forms(&loaded, Utc::now()) {
        // A project-scoped form is asked by a caller who sees only those projects.
        let caller = match &filter.projects {
            Some(ids) => {
                let names: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM projects WHERE id = ANY($1)")
                        .bind(ids)
                        .fetch_all(&pool)
                        .await?;
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let token = xcam_tests::make_token(
                    &pool,
                    &format!("viewer-{}", names.join("-")),
                    xcam_shared::access::Role::Viewer,
                    &names,
                    None,
                )
                .await;
                api.as_token(&token)
            }
            None => api.as_token(&fleet.token),
        };
        let ms = median_ms(&caller, &format!("/v1/logs?{}", log_query(&filter, limit))).await?;
        rows.push(Row {
            what: format!("`/v1/logs` {form}"),
            figure: ms,
            unit: "ms",
            target: Target::AtMost(100.0),
        });
        let plan = logs::explain(&pool, &filter, limit).await?;
        let seq = plan.iter().any(|l| l.contains("Seq Scan"));
        plans.push((form, seq));
    }
    for (what, path) in [
        (
            "`/v1/stats` per hour, 7 days",
            "/v1/stats?bucket=hour&since=7d",
        ),
        (
            "`/v1/stats` per day, 90 days",
            "/v1/stats?bucket=day&since=90d",
        ),
    ] {
        let ms = median_ms(&fleet, path).await?;
        rows.push(Row {
            what: what.into(),
            figure: ms,
            unit: "ms",
            target: Target::AtMost(100.0),
        });
    }
    for (what, path) in [
        ("`/metrics`".to_owned(), "/metrics".to_owned()),
        (
            "`/v1/batches` (first page)".to_owned(),
            "/v1/batches".to_owned(),
        ),
        (
            format!("`/v1/batches/{{id}}`, {} items", size.small_batch),
            format!("/v1/batches/{}", loaded.small_batch),
        ),
        (
            format!("`/v1/batches/{{id}}`, {} items", size.big_batch),
            format!("/v1/batches/{}", loaded.big_batch),
        ),
    ] {
        let ms = median_ms(&fleet, &path).await?;
        rows.push(Row {
            what,
            figure: ms,
            unit: "ms",
            target: Target::AtMost(50.0),
        });
    }

    println!("==> ingesting 100 and then {big} small images");
    let before_small = server_time(&pool, &stack.redis_url).await?;
    let (_, _) = ingest(&api, 100).await?;
    let after_small = server_time(&pool, &stack.redis_url).await?;
    let peak_small = api.peak_memory().unwrap_or_default();
    let (batch, seconds) = ingest(&api, big).await?;
    let after_big = server_time(&pool, &stack.redis_url).await?;
    let peak_big = api.peak_memory().unwrap_or_default();
    rows.push(Row {
        what: format!("ingest of a {big}-entry ZIP"),
        figure: big as f64 / seconds,
        unit: "entries/s",
        target: Target::AtLeast(2000.0),
    });
    let per_item = |a: (f64, f64), b: (f64, f64), n: f64| ((b.0 - a.0) * 1e3 / n, (b.1 - a.1) / n);
    let (pg_small, redis_small) = per_item(before_small, after_small, 100.0);
    let (pg_big, redis_big) = per_item(after_small, after_big, big as f64);
    for (what, figure) in [
        (
            "Postgres time per item, 100-entry batch".to_owned(),
            pg_small,
        ),
        (format!("Postgres time per item, {big}-entry batch"), pg_big),
        (
            "Redis time per item, 100-entry batch".to_owned(),
            redis_small,
        ),
        (format!("Redis time per item, {big}-entry batch"), redis_big),
    ] {
        rows.push(Row {
            what,
            figure,
            unit: "µs",
            target: Target::None,
        });
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    rows.push(Row {
        what: "producer peak memory after the 100-entry ingest".into(),
        figure: mib(peak_small),
        unit: "MiB",
        target: Target::None,
    });
    rows.push(Row {
        what: format!("producer peak memory after the {big}-entry ingest"),
        figure: mib(peak_big),
        unit: "MiB",
        target: Target::None,
    });

    println!("==> the {big}-entry batch's CSV report");
    // Every item gets a copy of a result as a worker writes it (predictions and 16×16 maps of
    // two labels, their values in `grids`), so each CSV row is as wide as a real one.
    let grids: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin().abs()).collect();
    let cam = |label: &str| {
        serde_json::json!({"label": label, "method": "gradcam", "peak": [21, 30],
            "bbox": [8, 12, 36, 44], "raw_max": 1.7, "grid": {"h": 16, "w": 16, "values": []}})
    };
    sqlx::query(
        r#"WITH done AS (UPDATE items SET status = 'succeeded', finished_at = now()
                         WHERE batch_id = $1::uuid RETURNING id)
           INSERT INTO results (item_id, batch_id, model_name, model_version, predictions, top_label,
                                top_probability, method, cams, grids, image_width, image_height,
                                device, worker_id, attempt, processing_ms, queue_wait_ms)
           SELECT id, $1::uuid, 'demo', '1', '{"opacity": 0.91, "nodule": 0.12}', 'opacity', 0.91,
                  'gradcam', $2, $3, 64, 64, 'cpu', 'worker-0', 1, 61.5, 1200
           FROM done"#,
    )
    .bind(&batch)
    .bind(serde_json::json!([cam("opacity"), cam("nodule")]))
    .bind(&grids)
    .execute(&pool)
    .await?;
    println!("    streaming it");
    let started = Instant::now();
    let response = api
        .client
        .get(api.url(&format!("/v1/batches/{batch}/results.csv")))
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "CSV: {}", response.status());
    let mut lines = 0usize;
    let mut stream = response.bytes_stream();
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        lines += chunk?.iter().filter(|&&b| b == b'\n').count();
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(lines == big + 1, "the CSV has {lines} lines");
    rows.push(Row {
        what: format!("CSV report of the {big}-entry batch"),
        figure: big as f64 / seconds,
        unit: "rows/s",
        target: Target::AtLeast(50_000.0),
    });
    rows.push(Row {
        what: "producer peak memory after the CSV".into(),
        figure: mib(api.peak_memory().unwrap_or_default()),
        unit: "MiB",
        target: Target::None,
    });
    // Leave no queued jobs behind in the shared Redis.
    api.client
        .delete(api.url(&format!("/v1/batches/{batch}")))
        .send()
        .await?;

    println!(
        "\n`make bench-scale` — {} log rows, {} items, {} days; {}",
        size.log_rows,
        size.items,
        size.days,
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("\n| | figure | target | met |\n|---|---|---|---|");
    rows.iter().for_each(Row::print);
    let seq: Vec<&str> = plans.iter().filter(|p| p.1).map(|p| p.0).collect();
    println!(
        "\nlog query plans: {} forms, {}",
        plans.len(),
        if seq.is_empty() {
            "none scans a table sequentially".to_owned()
        } else {
            format!("SEQUENTIAL SCANS in: {}", seq.join(", "))
        }
    );
    stack.finish().await;
    Ok(())
}
