//! Nothing is lost when Redis restarts or Postgres goes away under running workers. These tests
//! bring their own servers, since the shared ones serve the other tests in parallel.

use std::time::Duration;

use xcam_tests::{
    Stack, TestDb, eventually, png_zip, repo_root,
    servers::{PrivatePostgres, PrivateRedis},
};

/// Uploads 150 images and returns once the batch is under way.
async fn start_batch(stack: &Stack, api: &xcam_tests::Producer) -> uuid::Uuid {
    let (status, created) = api
        .upload(
            png_zip(150, |i| format!("img_{i:04}.png")),
            &[("model", "demo")],
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let batch: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    eventually(
        Duration::from_secs(120),
        "the batch to be under way",
        || async { (stack.succeeded(batch).await >= Some(5)).then_some(()) },
    )
    .await;
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_batch_loses_nothing() {
    let mut redis = PrivateRedis::start();
    let stack = Stack::on(
        TestDb::create().await,
        redis.url(),
        repo_root().join("models"),
    );
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &["--max-batch=4"]);
    let batch = start_batch(&stack, &api).await;
    redis.restart();
    let view = api
        .wait_for_batch(&batch.to_string(), Duration::from_secs(300))
        .await;
    assert_eq!(view["status"], "succeeded", "{view}");
    stack.assert_each_item_done_once(batch, 150).await;
    stack.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_and_a_read_only_spell_cost_no_item_anything() {
    let pg = PrivatePostgres::start();
    let stack = Stack::on(
        TestDb::create_on(pg.url()).await,
        xcam_tests::redis_url(),
        repo_root().join("models"),
    );
    let api = stack.producer(&[]).await;
    let worker = stack.worker("a", &["--max-batch=4"]);
    let batch = start_batch(&stack, &api).await;
    pg.down();
    // The outage itself (not a wait for a condition): long enough for the worker to fail
    // claims and writes, and for the queue to re-schedule those jobs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.up();
    // Then read-only, with errors at once rather than timeouts: 10 s of those.
    pg.read_only(true).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    pg.read_only(false).await;
    let view = api
        .wait_for_batch(&batch.to_string(), Duration::from_secs(300))
        .await;
    assert_eq!(view["status"], "succeeded", "{view}\n{}", worker.log_text());
    stack.assert_each_item_done_once(batch, 150).await;
    let (most, logged): (i32, i64) = sqlx::query_as(
        "SELECT max(attempts), (SELECT count(*) FROM inference_log WHERE batch_id = $1) FROM items WHERE batch_id = $1",
    )
    .bind(batch)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (most, logged),
        (1, 150),
        "no item lost an attempt to the outages"
    );
    let log = worker.log_text();
    assert!(
        log.contains("a dependency is unavailable") && log.contains("read-only transaction"),
        "the worker met both outages: {log}"
    );
    xcam_tests::clean_redis(&stack.redis_url, &stack.prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_during_an_outage_wait_for_it() {
    let pg = PrivatePostgres::start();
    let stack = Stack::on(
        TestDb::create_on(pg.url()).await,
        xcam_tests::redis_url(),
        repo_root().join("models"),
    );
    let waiting = |w: &xcam_tests::WorkerProcess| {
        let log = w.log_text();
        log.contains("Postgres is unavailable; waiting for it")
            .then_some(log)
    };
    // Postgres down: a worker and a producer start, and wait instead of exiting.
    pg.down();
    let mut early = stack.worker("early", &[]);
    let (api, ()) = tokio::join!(stack.producer(&[]), async {
        eventually(Duration::from_secs(60), "the worker to wait", || async {
            waiting(&early)
        })
        .await;
        pg.up();
    });
    // Postgres read-only, as during a failover: a worker cannot register, and waits.
    pg.read_only(true).await;
    let mut late = stack.worker("late", &[]);
    let log = eventually(Duration::from_secs(60), "the worker to wait", || async {
        waiting(&late)
    })
    .await;
    assert!(log.contains("read-only transaction"), "{log}");
    pg.read_only(false).await;

    let (status, created) = api
        .upload(png_zip(30, |i| format!("img_{i:04}.png")), &[])
        .await;
    assert_eq!(status, 202, "{created}");
    let batch = created["id"].as_str().unwrap();
    let view = api.wait_for_batch(batch, Duration::from_secs(300)).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    stack
        .assert_each_item_done_once(batch.parse().unwrap(), 30)
        .await;
    assert!(
        early.is_running() && late.is_running(),
        "both workers run on"
    );
    // The late worker tries again at most 5 s apart (`patience`): a batch of 30 may be done
    // before its next try, so registration is waited for, not assumed.
    eventually(
        Duration::from_secs(30),
        "both workers to register once Postgres lets them",
        || async {
            let registered: i64 =
                sqlx::query_scalar("SELECT count(*) FROM workers WHERE stopped_at IS NULL")
                    .fetch_one(&stack.db.pool)
                    .await
                    .unwrap();
            (registered == 2).then_some(())
        },
    )
    .await;
    xcam_tests::clean_redis(&stack.redis_url, &stack.prefix).await;
}
