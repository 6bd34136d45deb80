//! Work is never stranded or half done: an outcome is written whole or not at all, jobs apalis
//! gave up on and jobs Redis lost are run again, a blob-store outage fails no image, an item
//! that kills its worker fails alone, and an inference that hangs ends.

use std::time::Duration;

use redis::AsyncCommands;
use uuid::Uuid;
use xcam_shared::jobs;
use xcam_tests::{Blobs, Producer, Stack, eventually, png_zip, servers::PrivateS3};

const DEADLINE: Duration = Duration::from_secs(300);

/// Uploads `n` images and returns once they are ingested (their jobs pushed).
async fn upload(api: &Producer, n: usize) -> Uuid {
    let (status, created) = api
        .upload(
            png_zip(n, |i| format!("img_{i:04}.png")),
            &[("model", "demo")],
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    eventually(DEADLINE, "the batch to be ingested", || async {
        let (_, view) = api.get_json(&format!("/v1/batches/{id}")).await;
        (view["status"] != "ingesting").then_some(())
    })
    .await;
    id.parse().unwrap()
}

async fn redis(stack: &Stack) -> redis::aio::MultiplexedConnection {
    redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn queue(stack: &Stack) -> apalis_redis::Config {
    jobs::queue_config(
        &jobs::queue_name(&stack.prefix, "demo"),
        jobs::QueueTuning::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_written_whole_or_not_at_all() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    // A real fault between the outcome's writes: the first succeeded log row Postgres is asked
    // to insert raises an error, after the result and the item's status were written in the
    // same transaction. (A sequence, because it is not rolled back with the failed insert.)
    sqlx::raw_sql(
        r#"CREATE SEQUENCE log_faults;
           CREATE FUNCTION fail_first_log() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF NEW.status = 'succeeded' AND nextval('log_faults') = 1 THEN
                   RAISE EXCEPTION 'injected fault';
               END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER fail_first_log BEFORE INSERT ON inference_log
               FOR EACH ROW EXECUTE FUNCTION fail_first_log();"#,
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    let _worker = stack.worker("a", &["--max-batch=4"]);
    let batch = upload(&api, 12).await;
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["progress"], 1.0, "{view}");
    stack.assert_each_item_done_once(batch, 12).await;
    let faulted: i64 = sqlx::query_scalar("SELECT nextval('log_faults')")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert!(faulted > 1, "the fault fired");
    // The faulted group was rolled back whole and its outcomes written again: one result and
    // one succeeded log row per item, none left over from the failed try.
    let (results, logged): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM results WHERE batch_id = $1), \
                (SELECT count(*) FROM inference_log WHERE batch_id = $1 AND status = 'succeeded')",
    )
    .bind(batch)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!((results, logged), (12, 12));
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_jobs_wait_in_the_active_list_not_the_scheduled_set() {
    // apalis-redis 1.0 schedules every pushed job and its fetch moves every due one in a single
    // Lua `unpack`, which fails past about 8 000 and kills the fetching worker: a worker started
    // after a big batch was pushed would die at once, and every one after it. The producer moves
    // its pushed jobs to the active list itself, a bounded chunk at a time.
    let stack = Stack::new().await;
    let api = stack.producer(&["--reconcile-every=1h"]).await;
    upload(&api, 30).await;
    let (config, conn) = (queue(&stack), redis(&stack).await);
    eventually(
        DEADLINE,
        "30 jobs in the active list, none scheduled",
        || {
            let (mut conn, config) = (conn.clone(), config.clone());
            async move {
                let scheduled: usize = conn.zcard(config.scheduled_jobs_set()).await.ok()?;
                let active: usize = conn.llen(config.active_jobs_list()).await.ok()?;
                (scheduled == 0 && active == 30).then_some(())
            }
        },
    )
    .await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_apalis_gave_up_on_are_run_again() {
    let stack = Stack::new().await;
    let api = stack
        .producer(&["--sweep-every=1s", "--reconcile-every=2s"])
        .await;
    let batch = upload(&api, 20).await;
    // apalis-redis moves a job to its dead set when an attempt fails and the job has had 25
    // (hard-coded): about five minutes of failures. Age every job of the batch to its 24th
    // attempt, as a long run of failures would have, so that one more real failure ends it.
    let (config, mut conn) = (queue(&stack), redis(&stack).await);
    let (active, scheduled) = (config.active_jobs_list(), config.scheduled_jobs_set());
    let ids: Vec<String> = eventually(DEADLINE, "the jobs to be pushed", || {
        let (mut conn, active, scheduled) = (conn.clone(), active.clone(), scheduled.clone());
        async move {
            let mut ids: Vec<String> = conn.lrange(active, 0, -1).await.ok()?;
            ids.extend(conn.zrange::<_, Vec<String>>(scheduled, 0, -1).await.ok()?);
            (ids.len() == 20).then_some(ids)
        }
    })
    .await;
    for id in &ids {
        let meta = format!("{}:{id}", config.job_meta_hash());
        let _: () = conn.hset(meta, "attempts", 24).await.unwrap();
    }
    // The failure: Postgres refuses every claim with an error that is not an outage, so the
    // worker hands each job back to apalis as failed, until the fault is lifted below.
    sqlx::raw_sql(
        r#"CREATE FUNCTION fail_claims() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               RAISE EXCEPTION 'injected fault';
           END $$;
           CREATE TRIGGER fail_claims BEFORE UPDATE ON items FOR EACH ROW
               WHEN (OLD.status = 'queued' AND NEW.status = 'running')
               EXECUTE FUNCTION fail_claims();"#,
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    let _worker = stack.worker("a", &[]);
    // Every job goes through the dead set: the sweeper takes each out of it, and the
    // reconciler pushes its item again.
    let forgotten = || async {
        let (_, metrics) = api.get_text("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"xcam_redis_jobs_forgotten_total{set="dead"} "#))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    eventually(
        DEADLINE,
        "every job to be taken out of the dead set",
        || async { (forgotten().await? >= 20.0).then_some(()) },
    )
    .await;
    sqlx::raw_sql("DROP TRIGGER fail_claims ON items")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    stack.assert_each_item_done_once(batch, 20).await;
    assert_eq!(forgotten().await, Some(20.0), "each job died once");
    let dead: usize = conn.scard(config.dead_jobs_set()).await.unwrap();
    assert_eq!(dead, 0, "the dead set is emptied");
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_emptied_mid_batch_loses_nothing_and_the_reconciler_covers_every_open_item() {
    let stack = Stack::new().await;
    // This producer's reconciler leaves the hand-driven one below alone.
    let api = stack.producer(&["--reconcile-every=1h"]).await;
    let batch = upload(&api, 250).await;
    let (config, mut conn) = (queue(&stack), redis(&stack).await);
    eventually(DEADLINE, "the jobs to be pushed", || {
        let (mut conn, data) = (conn.clone(), config.job_data_hash());
        async move { (conn.hlen::<_, usize>(data).await.ok()? == 250).then_some(()) }
    })
    .await;
    // Redis loses everything of this queue (a restart without its data, a flush).
    xcam_tests::clean_redis(&stack.redis_url, &stack.prefix).await;
    // A reconciler that looks at 100 items a pass still finds all 250 within three passes.
    let state = xcam_producer::build_state(&stack.serve_args(&[]))
        .await
        .unwrap();
    let reconciler =
        xcam_producer::reconciler::Reconciler::new(state.db.clone(), state.queue, Duration::ZERO)
            .with_page(100);
    let mut pushed = 0;
    for _ in 0..3 {
        pushed += reconciler.pass().await.unwrap();
    }
    let held: usize = conn.hlen(config.job_data_hash()).await.unwrap();
    assert_eq!((pushed, held), (250, 250), "pushed, held by Redis");
    // What a pass reads as open now: every item is finished by the time it is handed back below.
    let read_open = xcam_shared::db::items::open_before(&state.db, Duration::ZERO, None, 1_000)
        .await
        .unwrap();
    assert_eq!(read_open.len(), 250);

    // Mid-batch, with a worker running and a producer reconciling as usual.
    let _reconciling = stack.producer(&[]).await;
    let _worker = stack.worker("a", &["--max-batch=8"]);
    eventually(DEADLINE, "the batch to be under way", || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM items WHERE batch_id = $1 AND status = 'succeeded'",
        )
        .bind(batch)
        .fetch_one(&stack.db.pool)
        .await
        .ok()?;
        (done >= 20).then_some(())
    })
    .await;
    xcam_tests::clean_redis(&stack.redis_url, &stack.prefix).await;
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    stack.assert_each_item_done_once(batch, 250).await;

    // Items read as open that workers finished before Redis was asked (their jobs acknowledged
    // and gone) are not missing jobs: none is pushed again.
    assert_eq!(reconciler.repush_missing(read_open).await.unwrap(), 0);
    stack.finish().await;
}

async fn item_state(stack: &Stack, batch: Uuid) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, open_claims, error_code FROM items WHERE batch_id = $1")
        .bind(batch)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_keeps_killing_its_worker_fails_with_worker_crashed() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let batch = upload(&api, 1).await;
    // Each worker holds the image for 4 s waiting for its batch to fill, and dies in that time
    // as a worker that runs out of memory on it would: with SIGKILL, leaving no outcome.
    let holding = ["--max-batch=8", "--max-wait-ms=4000", "--crash-claims=2"];
    for crash in 1..=2 {
        let mut worker = stack.worker(&format!("crash{crash}"), &holding);
        eventually(DEADLINE, "the worker to claim the item", || async {
            let (status, open, _) = item_state(&stack, batch).await;
            (status == "running" && open == crash).then_some(())
        })
        .await;
        worker.kill();
    }
    let survivor = stack.worker("survivor", &holding);
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "failed", "{view}\n{}", survivor.log_text());
    let (status, _, code) = item_state(&stack, batch).await;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("worker_crashed"))
    );
    let (_, report) = api.get_text(&format!("/v1/batches/{batch}/report")).await;
    assert!(report.contains("worker_crashed"), "{report}");
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_that_hangs_fails_with_inference_timeout_and_the_worker_goes_on() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    // The engine holds a lone image 6 s for its batch to fill: past the job timeout.
    let worker = stack.worker(
        "a",
        &["--max-batch=8", "--max-wait-ms=6000", "--job-timeout=1s"],
    );
    let batch = upload(&api, 1).await;
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "failed", "{view}\n{}", worker.log_text());
    let (_, _, code) = item_state(&stack, batch).await;
    assert_eq!(code.as_deref(), Some("inference_timeout"));
    // The worker is still serving: eight images fill a batch at once.
    let next = upload(&api, 8).await;
    let view = api.wait_for_batch(&next.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}\n{}", worker.log_text());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_store_outage_fails_no_image_and_costs_no_attempt() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let batch = upload(&api, 40).await;
    // The store fails every read (the planes' directory is now a file: "not a directory", as
    // an unreachable store answers errors rather than "no such object") for 15 s, with a worker
    // whose retry budget is a single attempt.
    let root = stack.blobs.path().join("planes");
    let away = root.with_extension("away");
    std::fs::rename(&root, &away).unwrap();
    std::fs::write(&root, b"unavailable").unwrap();
    let worker = stack.worker("a", &["--max-batch=4", "--retry-budget=1"]);
    eventually(DEADLINE, "the worker to meet the outage", || async {
        worker
            .log_text()
            .contains("a dependency is unavailable")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    std::fs::remove_file(&root).unwrap();
    std::fs::rename(&away, &root).unwrap();
    all_done_at_first_attempt(&stack, &api, batch, &worker).await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_fails_no_image_and_costs_no_attempt() {
    let mut s3 = PrivateS3::start();
    let mut stack = Stack::new().await;
    stack.blobs = Blobs::on_s3(s3.server.clone(), &stack.prefix);
    let api = stack.producer(&[]).await;
    let batch = upload(&api, 40).await;
    // The S3 server stops: every request is refused, past object_store's own retries.
    s3.down();
    let worker = stack.worker("a", &["--max-batch=4", "--retry-budget=1"]);
    eventually(DEADLINE, "the worker to meet the outage", || async {
        let log = worker.log_text();
        log.contains("a dependency is unavailable").then_some(())
    })
    .await;
    s3.up();
    all_done_at_first_attempt(&stack, &api, batch, &worker).await;
    let log = worker.log_text();
    assert!(
        log.contains("blob store s3://xcam/") && log.contains("planes/"),
        "errors name the bucket and key: {log}"
    );
    assert!(
        !log.contains(&s3.server.secret_key),
        "the secret stays out of the log"
    );
    stack.finish().await;
}

/// Asserts that the 40 images of a batch that met a blob-store outage all succeeded, each in
/// one attempt: waiting out the outage cost no item anything.
async fn all_done_at_first_attempt(
    stack: &Stack,
    api: &Producer,
    batch: Uuid,
    worker: &xcam_tests::WorkerProcess,
) {
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}\n{}", worker.log_text());
    stack.assert_each_item_done_once(batch, 40).await;
    let most: i32 = sqlx::query_scalar("SELECT max(attempts) FROM items WHERE batch_id = $1")
        .bind(batch)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(most, 1, "waiting out the outage cost no item an attempt");
}

/// Uploads many distinct images, an archive whose ingestion takes a few seconds, and returns
/// as soon as the upload is answered.
async fn upload_slow(api: &Producer) -> Uuid {
    let archive = png_zip(3000, |i| format!("scan_{i:05}.png"));
    let (status, created) = api.upload(archive, &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    created["id"].as_str().unwrap().parse().unwrap()
}

async fn count(stack: &Stack, sql: &'static str, batch: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(batch)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap()
}

fn planes_stored(stack: &Stack) -> usize {
    xcam_tests::files_under(stack.blobs.path()).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_mid_ingestion_leaves_its_batch_failed_and_nothing_behind() {
    let stack = Stack::new().await;
    let uploads = tempfile::tempdir().unwrap();
    let upload_dir = format!("--upload-dir={}", uploads.path().display());
    let doomed = stack.producer_process(&[&upload_dir]).await;
    let batch = upload_slow(&doomed).await;
    // Planes are claimed a chunk at a time and then stored: claims alone can be seen before the
    // first put ends (CI saw it once, on a busy host).
    eventually(DEADLINE, "ingestion to be under way", || async {
        let claims = count(
            &stack,
            "SELECT count(*) FROM plane_claims WHERE batch_id = $1",
            batch,
        )
        .await;
        (claims > 20 && planes_stored(&stack) > 0).then_some(())
    })
    .await;
    drop(doomed); // SIGKILL, mid-ingestion
    assert!(planes_stored(&stack) > 0);
    // A put killed half way leaves the store's staging file, `{key}#1`, which its listings
    // skip. Whether the kill lands in a put is chance: one is laid down, as a kill leaves it.
    let claimed: String = sqlx::query_scalar(
        "SELECT blob_key FROM plane_claims WHERE batch_id = $1 ORDER BY blob_key DESC LIMIT 1",
    )
    .bind(batch)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    let staged = stack.blobs.path().join(format!("{claimed}#1"));
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, b"half a plane").unwrap();

    // Another producer on the host: it removes the dead one's spool as it starts, and its
    // sweeper ends the ingestion once the dead producer has been silent for --orphan-after.
    let live = stack.producer(&[&upload_dir]).await;
    let spools = std::fs::read_dir(uploads.path()).unwrap().count();
    assert_eq!(spools, 1, "only the live producer's own spool is left");
    let view = live.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(
        (view["status"].as_str(), view["error_code"].as_str()),
        (Some("failed"), Some("ingestion_interrupted")),
        "{view}"
    );
    // The sweeper fails the batch first, then releases its claims and removes its planes.
    eventually(
        DEADLINE,
        "the interrupted ingestion's planes and staging files to go",
        || async { (planes_stored(&stack) == 0).then_some(()) },
    )
    .await;
    assert!(!staged.exists());
    for table in [
        "SELECT count(*) FROM plane_claims WHERE batch_id = $1",
        "SELECT count(*) FROM items WHERE batch_id = $1",
    ] {
        assert_eq!(count(&stack, table, batch).await, 0, "{table}");
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_ingestion_bound_are_told_to_come_back_and_a_cancel_stops_ingestion() {
    let stack = Stack::new().await;
    let api = stack.producer(&["--max-ingestions=1"]).await;
    let batch = upload_slow(&api).await;

    let response = api
        .client
        .post(api.url("/v1/batches"))
        .multipart(
            reqwest::multipart::Form::new()
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(png_zip(1, |i| format!("{i}.png")))
                        .file_name("a.zip"),
                )
                .text("model", "demo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "busy", "{body}");

    // A cancel while the archive is still being read stops it: no item is written or run.
    let (code, view) = api.get_json(&format!("/v1/batches/{batch}")).await;
    assert_eq!(
        (code, view["status"].as_str()),
        (200, Some("ingesting")),
        "{view}"
    );
    let cancelled = api
        .client
        .post(api.url(&format!("/v1/batches/{batch}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let _worker = stack.worker("a", &[]);
    eventually(
        DEADLINE,
        "the ingestion to stop and its planes to go",
        || async { (planes_stored(&stack) == 0).then_some(()) },
    )
    .await;
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM items WHERE batch_id = $1",
            batch
        )
        .await,
        0
    );

    stack.assert_counts_kept(batch).await;

    // The slot is free again once the stopped ingestion has cleaned up (it releases its slot
    // after its planes are gone, so a client told `busy` just before comes back, as told).
    let next = eventually(DEADLINE, "the ingestion slot to be free", || async {
        let (status, created) = api
            .upload(
                png_zip(2, |i| format!("img_{i:04}.png")),
                &[("model", "demo")],
            )
            .await;
        (status == 202).then(|| {
            created["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap()
        })
    })
    .await;
    let view = api.wait_for_batch(&next.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    stack.assert_counts_kept(next).await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_items_are_retried_by_hand_as_new_attempts() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let cli = crate::cli::Xcam::of(&api);
    // A worker whose every lone image times out fails the item.
    let mut hasty = stack.worker(
        "hasty",
        &["--max-batch=8", "--max-wait-ms=6000", "--job-timeout=1s"],
    );
    let batch = upload(&api, 1).await;
    let view = api.wait_for_batch(&batch.to_string(), DEADLINE).await;
    assert_eq!(view["status"], "failed", "{view}");
    hasty.kill();

    let id = batch.to_string();
    let (code, out, err) = cli.run(&["retry", &id, "--code", "inference_timeout", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would retry 1 failed items") && out.contains("inference_timeout"),
        "{out}"
    );
    let (code, out, err) = cli.run(&["retry", &id, "--code", "worker_crashed"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retrying 0 failed items"), "{out}");
    let (_, view) = api.get_json(&format!("/v1/batches/{id}")).await;
    assert_eq!(
        view["status"], "failed",
        "a dry run and an empty retry change nothing"
    );

    let response = api
        .client
        .post(api.url(&format!("/v1/batches/{id}/retry")))
        .json(&serde_json::json!({ "codes": ["x"], "bogus": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "unknown fields are refused");
    let response = api
        .client
        .post(api.url(&format!("/v1/batches/{id}/retry")))
        .json(&serde_json::json!({ "codes": ["a\0b"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "a NUL in a code is refused, not a 500"
    );

    let (code, out, err) = cli.run(&["retry", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retrying 1 failed items"), "{out}");
    let (_, view) = api.get_json(&format!("/v1/batches/{id}")).await;
    assert!(
        matches!(view["status"].as_str(), Some("queued" | "running")),
        "{view}"
    );
    let _worker = stack.worker("patient", &[]);
    let view = api.wait_for_batch(&id, DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let attempts: Vec<(i32, String)> = sqlx::query_as(
        "SELECT attempt, status FROM inference_log WHERE batch_id = $1 ORDER BY attempt",
    )
    .bind(batch)
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(
        attempts,
        vec![(1, "failed".to_owned()), (2, "succeeded".to_owned())],
        "each retry is a new attempt in the log"
    );
    stack.assert_counts_kept(batch).await;
    stack.finish().await;
}

/// libfaketime, which `scripts/services.sh` installs from Debian.
fn libfaketime() -> String {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime (scripts/services.sh installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_is_off_says_so_and_the_fleet_view_shows_by_how_much() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let on_time = stack.worker("on-time", &[]);
    // 90 s fast, against the harness's 6 s orphan window (limit: 2 s).
    let fast = stack.worker_with_env(
        "fast",
        &[],
        &[
            ("LD_PRELOAD", &libfaketime()),
            ("FAKETIME", "+90s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let workers = eventually(
        DEADLINE,
        "both workers' clocks in the fleet view",
        || async {
            let (_, workers) = api.get_json("/v1/workers").await;
            let skew = |name: &str| {
                workers
                    .as_array()?
                    .iter()
                    .find(|w| w["id"].as_str() == Some(name))?["clock_skew_ms"]
                    .as_f64()
            };
            Some((skew(&on_time.name)?, skew(&fast.name)?))
        },
    )
    .await;
    let (on_time_ms, fast_ms) = workers;
    assert!(on_time_ms.abs() < 1_000.0, "{on_time_ms}");
    assert!((fast_ms - 90_000.0).abs() < 5_000.0, "{fast_ms}");
    let log = fast.log_text();
    assert!(log.contains("clock is off Postgres's"), "{log}");
    assert!(!on_time.log_text().contains("clock is off"));
    stack.finish().await;
}
