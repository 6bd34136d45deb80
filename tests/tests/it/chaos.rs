//! `make chaos`: a 1 000-image batch run by two workers through every fault at once and one
//! after another — workers SIGKILLed at random throughout, Postgres down for 6 minutes, then
//! read-only for 6 (as a primary is during a failover), Redis restarted with its data and then
//! without it, the blob store failing every read for a minute, and a producer killed while it
//! ingests a second batch. Then it checks that nothing was lost or done twice, and prints how
//! long recovery took after the last fault.
//!
//! Not part of `make test` (it takes about 20 minutes). `XCAM_CHAOS_OUTAGE` (default `6m`) and
//! `XCAM_CHAOS_BLOB_OUTAGE` (default `1m`) shorten it for a quick look.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Mutex;
use uuid::Uuid;
use xcam_tests::{
    Stack, TestDb, WorkerProcess, eventually, png_zip, repo_root,
    servers::{PrivatePostgres, PrivateRedis},
};

const IMAGES: usize = 1000;
/// Items that must succeed between two faults, so that each fault meets a batch in flight.
const BETWEEN_FAULTS: i64 = 100;
const DEADLINE: Duration = Duration::from_secs(1800);

fn duration_from_env(name: &str, default: &str) -> Duration {
    humantime::parse_duration(&std::env::var(name).unwrap_or_else(|_| default.to_owned()))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What happened when, for the summary.
struct Timeline {
    start: Instant,
    lines: Vec<String>,
}

impl Timeline {
    fn note(&mut self, done: i64, what: impl Into<String>) {
        let line = format!(
            "{:>7.1} s  {done:>4}/{IMAGES} done  {}",
            self.start.elapsed().as_secs_f64(),
            what.into()
        );
        println!("chaos: {line}");
        self.lines.push(line);
    }
}

/// The two workers, one of which a killer SIGKILLs at random and replaces at once.
struct Fleet {
    stack: Arc<Stack>,
    workers: Mutex<Vec<WorkerProcess>>,
    started: AtomicUsize,
    kills: AtomicUsize,
}

impl Fleet {
    fn start(stack: Arc<Stack>) -> Arc<Self> {
        Arc::new(Self {
            stack,
            workers: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            kills: AtomicUsize::new(0),
        })
    }

    fn spawn(&self) -> WorkerProcess {
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        self.stack.worker(&format!("w{n}"), &["--max-batch=8"])
    }

    async fn fill(&self) {
        let mut workers = self.workers.lock().await;
        while workers.len() < 2 {
            workers.push(self.spawn());
        }
    }

    /// SIGKILLs a worker chosen by `pick` and starts another in its place.
    async fn kill_one(&self, pick: usize) {
        let mut workers = self.workers.lock().await;
        let i = pick % workers.len();
        workers[i].kill();
        workers[i] = self.spawn();
        self.kills.fetch_add(1, Ordering::SeqCst);
    }
}

/// A small deterministic generator, so a run can be repeated from its printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Waits until `more` items beyond `from` have succeeded; returns the new count.
async fn progress(stack: &Stack, batch: Uuid, from: i64, more: i64) -> i64 {
    let target = (from + more).min(IMAGES as i64);
    eventually(DEADLINE, "the batch to make progress", || async {
        let done = stack.succeeded(batch).await?;
        (done >= target).then_some(done)
    })
    .await
}

/// How long after a fault ends the batch makes progress again.
async fn resumed(stack: &Stack, batch: Uuid) -> Duration {
    let since = Instant::now();
    let from = eventually(DEADLINE, "Postgres to answer", || stack.succeeded(batch)).await;
    eventually(DEADLINE, "the batch to resume", || async {
        (stack.succeeded(batch).await? > from).then_some(())
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the chaos campaign takes about 20 minutes: run it with `make chaos`"]
async fn chaos_campaign_loses_nothing() {
    let pg_outage = duration_from_env("XCAM_CHAOS_OUTAGE", "6m");
    let blob_outage = duration_from_env("XCAM_CHAOS_BLOB_OUTAGE", "1m");
    let mut seed: u64 = std::env::var("XCAM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!(
        "chaos: seed {seed} (XCAM_CHAOS_SEED), Postgres outages {pg_outage:?}, blob outage {blob_outage:?}"
    );
    let pg = PrivatePostgres::start();
    let mut redis = PrivateRedis::start();
    let stack = Arc::new(Stack::on(
        TestDb::create_on(pg.url()).await,
        redis.url(),
        repo_root().join("models"),
    ));
    let api = stack.producer(&[]).await;
    let fleet = Fleet::start(stack.clone());
    fleet.fill().await;

    let mut timeline = Timeline {
        start: Instant::now(),
        lines: Vec::new(),
    };
    let (status, created) = api
        .upload(
            png_zip(IMAGES, |i| format!("chaos_{i:04}.png")),
            &[("model", "demo")],
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let batch: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    timeline.note(0, format!("batch {batch} of {IMAGES} images uploaded"));

    // SIGKILLs at random, every 20 to 60 s, for as long as the faults go on.
    let faulting = Arc::new(AtomicBool::new(true));
    let killer = {
        let (fleet, faulting) = (fleet.clone(), faulting.clone());
        let mut seed = next(&mut seed);
        tokio::spawn(async move {
            while faulting.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(20 + next(&mut seed) % 41)).await;
                if faulting.load(Ordering::SeqCst) {
                    fleet.kill_one(next(&mut seed) as usize).await;
                    println!("chaos: a worker SIGKILLed and replaced");
                }
            }
        })
    };

    let mut done = progress(&stack, batch, 0, BETWEEN_FAULTS / 2).await;
    timeline.note(done, format!("Postgres stopped for {pg_outage:?}"));
    pg.down();
    tokio::time::sleep(pg_outage).await;
    pg.up();
    let after = resumed(&stack, batch).await;
    timeline.note(
        done,
        format!(
            "Postgres back; work resumed {:.1} s later",
            after.as_secs_f64()
        ),
    );

    done = progress(&stack, batch, done, BETWEEN_FAULTS).await;
    timeline.note(done, format!("Postgres read-only for {pg_outage:?}"));
    pg.read_only(true).await;
    tokio::time::sleep(pg_outage).await;
    pg.read_only(false).await;
    let after = resumed(&stack, batch).await;
    timeline.note(
        done,
        format!(
            "Postgres writable again; work resumed {:.1} s later",
            after.as_secs_f64()
        ),
    );

    done = progress(&stack, batch, done, BETWEEN_FAULTS).await;
    redis.restart();
    let after = resumed(&stack, batch).await;
    timeline.note(
        done,
        format!(
            "Redis restarted with its data; work resumed {:.1} s later",
            after.as_secs_f64()
        ),
    );

    done = progress(&stack, batch, done, BETWEEN_FAULTS).await;
    redis.restart_empty();
    let after = resumed(&stack, batch).await;
    timeline.note(
        done,
        format!(
            "Redis restarted without its data; work resumed {:.1} s later",
            after.as_secs_f64()
        ),
    );

    done = progress(&stack, batch, done, BETWEEN_FAULTS).await;
    let planes = stack.blobs.path().join("planes");
    let away = planes.with_extension("away");
    std::fs::rename(&planes, &away).unwrap();
    std::fs::write(&planes, b"unavailable").unwrap();
    timeline.note(
        done,
        format!("blob store failing every read for {blob_outage:?}"),
    );
    tokio::time::sleep(blob_outage).await;
    std::fs::remove_file(&planes).unwrap();
    std::fs::rename(&away, &planes).unwrap();
    let after = resumed(&stack, batch).await;
    timeline.note(
        stack.succeeded(batch).await.unwrap_or(-1),
        format!(
            "blob store back; work resumed {:.1} s later",
            after.as_secs_f64()
        ),
    );

    done = progress(&stack, batch, done, BETWEEN_FAULTS).await;
    let uploads = tempfile::tempdir().unwrap();
    let upload_dir = format!("--upload-dir={}", uploads.path().display());
    let doomed = stack.producer_process(&[&upload_dir]).await;
    let (status, created) = doomed
        .upload(
            png_zip(3000, |i| format!("second_{i:05}.png")),
            &[("model", "demo")],
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let second: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    eventually(
        DEADLINE,
        "the second batch's ingestion to be under way",
        || async {
            let claims: i64 =
                sqlx::query_scalar("SELECT count(*) FROM plane_claims WHERE batch_id = $1")
                    .bind(second)
                    .fetch_one(&stack.db.pool)
                    .await
                    .unwrap_or(0);
            (claims > 20).then_some(())
        },
    )
    .await;
    drop(doomed);
    let last_fault = Instant::now();
    timeline.note(
        done,
        format!("producer SIGKILLed while ingesting batch {second}"),
    );
    faulting.store(false, Ordering::SeqCst);
    killer.abort();
    fleet.fill().await;

    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    let first_recovered = last_fault.elapsed();
    timeline.note(
        IMAGES as i64,
        format!("batch {batch} ended {}", view["status"]),
    );
    let second_view = api.wait_for_batch(&second.to_string(), DEADLINE).await;
    let recovered = last_fault.elapsed();
    timeline.note(
        IMAGES as i64,
        format!(
            "batch {second} ended {} ({})",
            second_view["status"], second_view["error_code"]
        ),
    );

    // The checks.
    let (terminal, open): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed', 'rejected', 'cancelled')),
                count(*) FILTER (WHERE status IN ('queued', 'running'))
         FROM items WHERE batch_id = $1",
    )
    .bind(batch)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    let unfinished: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM batches
         WHERE status NOT IN ('succeeded', 'completed_with_errors', 'failed', 'cancelled')",
    )
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    let most_attempts: i32 =
        sqlx::query_scalar("SELECT max(attempts) FROM items WHERE batch_id = $1")
            .bind(batch)
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    println!("\nchaos: what happened");
    for line in &timeline.lines {
        println!("  {line}");
    }
    println!(
        "\nchaos: results\n  \
         items terminal            {terminal}/{IMAGES} (open: {open})\n  \
         batch {batch}  {}\n  \
         second batch              {} ({})\n  \
         batches not ended         {}\n  \
         worker SIGKILLs           {}\n  \
         most attempts of an item  {most_attempts}\n  \
         recovery after last fault {:.1} s (first batch), {:.1} s (second)\n  \
         campaign                  {:.1} min",
        view["status"],
        second_view["status"],
        second_view["error_code"],
        unfinished.len(),
        fleet.kills.load(Ordering::SeqCst),
        first_recovered.as_secs_f64(),
        recovered.as_secs_f64(),
        timeline.start.elapsed().as_secs_f64() / 60.0,
    );
    assert_eq!((terminal, open), (IMAGES as i64, 0), "every item terminal");
    assert_eq!(
        view["status"], "succeeded",
        "every valid image succeeded: {view}"
    );
    stack.assert_each_item_done_once(batch, IMAGES as i64).await;
    assert_eq!(
        (
            second_view["status"].as_str(),
            second_view["error_code"].as_str()
        ),
        (Some("failed"), Some("ingestion_interrupted"))
    );
    assert!(
        unfinished.is_empty(),
        "no batch left unended: {unfinished:?}"
    );
    drop(api);
    fleet.workers.lock().await.clear();
}
