//! The control plane at fleet scale, for correctness (the timings are `make bench-scale`'s):
//! the log's day partitions and what retention drops, the rollups stats read and how close
//! their percentiles come to the exact ones, per model, and an index for every query form.

use std::borrow::Cow;

use chrono::{Duration, Utc};
use sqlx::{Connection, PgPool, migrate::Migrator};
use uuid::Uuid;
use xcam_producer::api::{Stats, StatsBucket};
use xcam_shared::{db::logs, status::LogStatus};
use xcam_tests::{
    Stack, TestDb,
    scale::{self, Size},
};

/// Log rows of one model at `ts`, `n` of them with latencies spread evenly from `lo` to `hi` ms
/// (geometrically), the given status and prediction.
async fn log_rows(
    db: &PgPool,
    model: &str,
    ts: chrono::DateTime<Utc>,
    n: i32,
    (lo, hi): (f64, f64),
    status: &str,
    project: Option<Uuid>,
) {
    sqlx::query(
        r#"INSERT INTO inference_log (ts, model_name, prediction, probability, filename, processing_time_ms,
                                      attempt, status, worker_id, device, project_id)
           SELECT $1, $2, CASE WHEN $6 = 'succeeded' THEN 'opacity' END, 0.9, 'x.png',
                  $4 * power($5 / $4, (g + 0.5) / $3), 1, $6, 'w', 'cpu', $7
           FROM generate_series(0, $3 - 1) g"#,
    )
    .bind(ts)
    .bind(model)
    .bind(n)
    .bind(lo)
    .bind(hi)
    .bind(status)
    .bind(project)
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_log_moves_into_day_partitions_with_rollups_and_retention_drops_whole_days() {
    // A database at the schema before partitioning, with a log in it.
    let db = TestDb::create().await;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let name = format!("xcam_test_{}", Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_path(&name);
    let old = PgPool::connect(url.as_str()).await.unwrap();
    let before_partitions = Migrator {
        migrations: Cow::Owned(xcam_shared::db::MIGRATOR.migrations[..7].to_vec()),
        ..Migrator::DEFAULT
    };
    before_partitions.run(&old).await.unwrap();
    let now = Utc::now();
    log_rows(
        &old,
        "demo",
        now - Duration::days(2),
        100,
        (40.0, 90.0),
        "succeeded",
        None,
    )
    .await;
    log_rows(
        &old,
        "dense",
        now - Duration::days(1),
        50,
        (900.0, 1800.0),
        "succeeded",
        None,
    )
    .await;
    log_rows(
        &old,
        "dense",
        now - Duration::days(1),
        5,
        (10.0, 20.0),
        "failed",
        None,
    )
    .await;
    log_rows(&old, "demo", now, 30, (40.0, 90.0), "retrying", None).await;
    log_rows(
        &old,
        "demo",
        now - Duration::days(40),
        10,
        (40.0, 90.0),
        "succeeded",
        None,
    )
    .await;

    xcam_shared::db::migrate(&old)
        .await
        .expect("0008 applies over a log");
    let count = |sql: &'static str| {
        let old = old.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&old)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM inference_log").await, 195);
    assert_eq!(
        count("SELECT count(*) FROM inference_log_default").await,
        0,
        "every old row has its day's partition"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'inference_log'::regclass AND inhrelid::regclass::text LIKE 'inference_log_p%'"
        )
        .await,
        41 + 7,
        "a partition a day from the oldest row to a week ahead"
    );
    // The rollups hold every row, at both grains.
    for grain in ["hour", "day"] {
        let (rows, failed): (i64, i64) = sqlx::query_as(
            "SELECT sum(n)::int8, (sum(n) FILTER (WHERE status = 'failed'))::int8 FROM log_rollups WHERE grain = $1",
        )
        .bind(grain)
        .fetch_one(&old)
        .await
        .unwrap();
        assert_eq!((rows, failed), (195, 5), "{grain}");
    }
    let rollups = logs::rollups(&old, None, now - Duration::days(3), true)
        .await
        .unwrap();
    let mut dense = xcam_shared::latency::Histogram::default();
    for r in rollups
        .iter()
        .filter(|r| r.model_name == "dense" && r.status == LogStatus::Succeeded)
    {
        dense.add(r.latency_bucket, r.n);
    }
    let p50 = dense.quantile(0.5).unwrap();
    let exact = (900.0f64 * 1800.0).sqrt();
    assert!((p50 / exact - 1.0).abs() < 0.045, "p50 {p50} vs {exact}");

    // Retention: whole days go with their partitions.
    let dropped = logs::drop_partitions_before(&old, std::time::Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(dropped, 10);
    assert_eq!(count("SELECT count(*) FROM inference_log").await, 185);

    // A row no partition holds yet waits in the default one, and moves when its day comes.
    let far = now + Duration::days(30);
    log_rows(&old, "demo", far, 3, (40.0, 50.0), "succeeded", None).await;
    assert_eq!(count("SELECT count(*) FROM inference_log_default").await, 3);
    sqlx::query("SELECT xcam_log_partition(($1 AT TIME ZONE 'UTC')::date)")
        .bind(far)
        .execute(&old)
        .await
        .unwrap();
    assert_eq!(count("SELECT count(*) FROM inference_log_default").await, 0);
    assert_eq!(count("SELECT count(*) FROM inference_log").await, 188);
    old.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn stats_give_each_model_its_own_latency_and_match_the_log() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let project: Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE name = 'test'")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    let db = &stack.db.pool;
    let an_hour_ago = Utc::now() - Duration::hours(1);
    // A fast model and a slow one, and rows of another project a scoped caller must not see.
    log_rows(
        db,
        "fast",
        an_hour_ago,
        400,
        (40.0, 90.0),
        "succeeded",
        Some(project),
    )
    .await;
    log_rows(
        db,
        "slow",
        an_hour_ago,
        200,
        (900.0, 1800.0),
        "succeeded",
        Some(project),
    )
    .await;
    log_rows(
        db,
        "slow",
        Utc::now(),
        10,
        (5.0, 10.0),
        "failed",
        Some(project),
    )
    .await;
    log_rows(
        db,
        "slow",
        Utc::now(),
        7,
        (5.0, 10.0),
        "retrying",
        Some(project),
    )
    .await;
    log_rows(
        db,
        "fast",
        Utc::now(),
        50,
        (40.0, 90.0),
        "succeeded",
        Some(Uuid::nil()),
    )
    .await;

    for bucket in [StatsBucket::Hour, StatsBucket::Day] {
        let name = serde_json::to_value(bucket).unwrap();
        let stats: Stats = api
            .get(&format!(
                "/v1/stats?since=1d&bucket={}",
                name.as_str().unwrap()
            ))
            .await;
        assert_eq!((stats.inferences, stats.failures), (610, 10), "{bucket:?}");
        let by_name = |m: &str| stats.models.iter().find(|s| s.model == m).unwrap();
        let (fast, slow) = (by_name("fast"), by_name("slow"));
        assert_eq!((fast.inferences, fast.failures), (400, 0));
        assert_eq!((slow.inferences, slow.failures), (210, 10));
        for (model, p50, p95) in [
            (
                fast,
                (40.0f64 * 90.0).sqrt(),
                40.0 * (90.0f64 / 40.0).powf(0.95),
            ),
            (slow, (900.0f64 * 1800.0).sqrt(), 900.0 * 2.0f64.powf(0.95)),
        ] {
            let (got50, got95) = (model.p50_ms.unwrap(), model.p95_ms.unwrap());
            assert!(
                (got50 / p50 - 1.0).abs() < 0.05,
                "{}: p50 {got50} vs {p50}",
                model.model
            );
            assert!(
                (got95 / p95 - 1.0).abs() < 0.05,
                "{}: p95 {got95} vs {p95}",
                model.model
            );
            assert_eq!(
                model.buckets.iter().map(|b| b.inferences).sum::<i64>(),
                model.inferences
            );
        }
        assert_eq!(stats.predictions["fast"]["opacity"], 400);
        assert_eq!(stats.predictions["slow"]["opacity"], 200);
    }
    // An admin of all projects sees the other project's rows too.
    let everyone =
        xcam_tests::make_token(db, "root", xcam_shared::access::Role::Admin, &[], None).await;
    let stats: Stats = api.as_token(&everyone).get("/v1/stats?since=1d").await;
    assert_eq!(stats.inferences, 660);
    stack.finish().await;
}

#[tokio::test]
async fn every_log_and_stats_query_form_reads_an_index() {
    let db = TestDb::create().await;
    let size = Size {
        log_rows: 60_000,
        items: 2_000,
        items_per_batch: 100,
        big_batch: 1_000,
        small_batch: 10,
        days: 90,
    };
    let loaded = scale::load(&db.pool, size).await;
    let forms = scale::log_forms(&loaded, Utc::now());
    // With sequential scans priced out, a plan still holding one has no index to use.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (form, filter, limit) in &forms {
        let plan = logs::explain(&mut *conn, filter, *limit).await.unwrap();
        assert_no_seq_scan(form, &plan);
    }
    for (sql, what) in [
        (logs::ROLLUPS, "rollups"),
        (logs::PREDICTION_COUNTS, "predictions"),
    ] {
        for (grain, since) in [("hour", Duration::days(7)), ("day", Duration::days(90))] {
            for projects in [None, Some(loaded.projects.clone())] {
                let plan: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                        .bind(grain)
                        .bind(Utc::now() - since)
                        .bind(projects.clone())
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                assert_no_seq_scan(&format!("{what} by {grain}"), &plan);
            }
        }
    }
    drop(conn);
    db.drop_db().await;
}

fn assert_no_seq_scan(form: &str, plan: &[String]) {
    assert!(
        !plan.iter().any(|l| l.contains("Seq Scan")),
        "{form}: a sequential scan\n{}",
        plan.join("\n")
    );
}

/// Statements that name an open status, run while the statistics still say a fresh batch's
/// items are not there (as they do until autovacuum analyses): each must probe a key, not scan
/// every open item, through the reconciler's partial index or the batch's own.
#[tokio::test]
async fn statements_on_a_fresh_batch_probe_keys_not_every_open_item() {
    let db = TestDb::create().await;
    let size = Size {
        log_rows: 2_000,
        items: 3_000,
        items_per_batch: 100,
        big_batch: 10,
        small_batch: 10,
        days: 90,
    };
    let loaded = scale::load(&db.pool, size).await;
    sqlx::query("ANALYZE items")
        .execute(&db.pool)
        .await
        .unwrap();
    let fresh = loaded.small_batch;
    sqlx::query(
        r#"INSERT INTO items (id, batch_id, entry_index, entry_name, sha256, blob_key, status)
           SELECT gen_random_uuid(), $1, 1000 + g, format('img_%s.png', g), md5(g::text),
                  format('planes/%s.png', md5(g::text)), 'queued'
           FROM generate_series(0, 19999) g"#,
    )
    .bind(fresh)
    .execute(&db.pool)
    .await
    .unwrap();
    let some: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM items WHERE batch_id = $1 AND entry_index >= 1000 LIMIT 32",
    )
    .bind(fresh)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let forms = [
        (
            "a retried attempt",
            "UPDATE items SET open_claims = 0 WHERE id = ($1::uuid[])[1] AND batch_id = $2 AND status = 'running'",
        ),
        (
            "a push page",
            "SELECT entry_index, id, blob_key FROM items
             WHERE batch_id = $2 AND entry_index > cardinality($1::uuid[]) AND status = 'queued'
               AND blob_key IS NOT NULL ORDER BY entry_index LIMIT 1000",
        ),
        (
            "a cancel",
            "UPDATE items SET status = 'cancelled' WHERE batch_id = $2 AND status = 'queued' AND id <> ALL($1)",
        ),
    ];
    for (what, sql) in forms {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
            .bind(&some)
            .bind(fresh)
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert!(
            !plan.iter().any(|l| l.contains("items_open_idx")),
            "{what}: scans every open item\n{}",
            plan.join("\n")
        );
    }
    groups_read_their_own_items(&db.pool, fresh, &some).await;
    a_group_is_read_once_not_once_per_item(&db.pool, fresh).await;
    // The reconciler still walks open items in queue order through the index.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let open =
        xcam_shared::db::items::open_before(&mut *conn, std::time::Duration::ZERO, None, 100)
            .await
            .unwrap();
    assert_eq!(open.len(), 100);
    drop(conn);
    db.drop_db().await;
}

/// A worker's claim and outcome statements for `group` (items of `batch`, open, in a batch of
/// 20 000 that the statistics have not seen), run for real: each reads a few tens of index and
/// heap pages per item it writes (about 20). Reaching the items through their open status
/// instead read every open item of the batch (16 865 pages for 32 items).
async fn groups_read_their_own_items(db: &PgPool, batch: Uuid, group: &[Uuid]) {
    use xcam_shared::db::{
        items::{self, ClaimRequest},
        logs::NewLogEntry,
        outcome::{self, Outcome, Recorded},
    };
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(db)
        .await
        .unwrap();
    // Pages each statement touched (pg_stat_statements counts them as the statement ends), by
    // its opening words, in this database.
    let pages = |opening: &'static str| async move {
        let (calls, rows, pages): (i64, i64, i64) = sqlx::query_as(
            r#"SELECT coalesce(sum(calls), 0)::int8, coalesce(sum(rows), 0)::int8,
                      coalesce(sum(shared_blks_hit + shared_blks_read), 0)::int8
               FROM pg_stat_statements
               WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND query LIKE $1 || '%'"#,
        )
        .bind(opening)
        .fetch_one(db)
        .await
        .unwrap();
        (calls, rows, pages)
    };
    // The statements' own openings, as pg_stat_statements keeps their text.
    const CLAIM: &str = items::CLAIM_ITEMS.split_at(27).0;
    const FINISH: &str = outcome::FINISH_ITEMS.split_at(34).0;
    let before = (pages(CLAIM).await, pages(FINISH).await);
    let requests: Vec<ClaimRequest> = group
        .iter()
        .map(|&item_id| ClaimRequest {
            batch_id: batch,
            item_id,
            fresh: true,
        })
        .collect();
    let claims = items::claim_all(db, &requests, "scale-worker")
        .await
        .unwrap();
    assert!(
        claims.iter().all(Option::is_some),
        "every item of the group is claimed"
    );
    let outcomes: Vec<Outcome> = group
        .iter()
        .map(|&item_id| Outcome {
            result: None,
            log: NewLogEntry {
                dynamic_batch_size: Some(group.len() as i32),
                ..xcam_tests::failed_attempt_log(batch, item_id, "scale-worker")
            },
            warnings: Vec::new(),
        })
        .collect();
    let recorded = outcome::record_all(db, &outcomes).await.unwrap();
    assert!(recorded.iter().all(|r| *r == Recorded::Written));
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM items WHERE id = ANY($1) AND status = 'failed'")
            .bind(group)
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(failed, group.len() as i64);
    for (what, (calls0, rows0, pages0), opening) in
        [("claims", before.0, CLAIM), ("outcomes", before.1, FINISH)]
    {
        let (calls, rows, pages) = pages(opening).await;
        let (calls, rows, pages) = (calls - calls0, rows - rows0, pages - pages0);
        assert_eq!(
            (calls, rows),
            (1, group.len() as i64),
            "{what}: one statement for the group"
        );
        // An item's update reads its key's index path and heap page and writes an entry into each
        // of the table's indexes: a few tens of pages. The open items' path read over 20 000.
        assert!(
            pages <= 40 * rows,
            "{what}: {pages} pages for {rows} items: the statement read more than the group's items"
        );
    }
}

/// The claim and outcome statements on 64 open items of `batch` (fresh, the statistics have not
/// seen it), each run and rolled back: the items are reached by key, and the group is read once.
/// Matched on `batch_id = …`, the planner reached them through the batch's `(batch_id, status)`
/// index, every open item of the batch for each of the group (100 ms for the outcome); put after
/// the items in a nested loop, a group written as VALUES was evaluated again for every item (2.2
/// of the 4.1 ms a 62-item group took).
async fn a_group_is_read_once_not_once_per_item(db: &PgPool, batch: Uuid) {
    use xcam_shared::db::{items::CLAIM_ITEMS, outcome::FINISH_ITEMS};
    let group: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM items WHERE batch_id = $1 AND status = 'queued' AND entry_index >= 2000
         ORDER BY entry_index DESC LIMIT 64",
    )
    .bind(batch)
    .fetch_all(db)
    .await
    .unwrap();
    let n = group.len();
    assert_eq!(n, 64);
    let claim = analysed(db, CLAIM_ITEMS, |q| {
        q.bind(&group)
            .bind(vec![batch; n])
            .bind(vec![1; n])
            .bind("scale-worker")
    })
    .await;
    let finish = analysed(db, FINISH_ITEMS, |q| {
        q.bind(&group)
            .bind(vec![batch; n])
            .bind(vec!["succeeded"; n])
            .bind(vec![None::<&str>; n])
            .bind(vec![None::<&str>; n])
            .bind(vec!["scale-worker"; n])
            .bind(vec![sqlx::types::Json(serde_json::json!([])); n])
    })
    .await;
    for (what, plan) in [("a claim", &claim), ("an outcome", &finish)] {
        let shown = plan.join("\n");
        assert!(
            shown.contains(&format!("Update on items (actual rows={n} loops=1)")),
            "{what}: every item of the group is written\n{shown}"
        );
        assert!(
            !shown.contains("items_batch_status_idx") && !shown.contains("items_open_idx"),
            "{what}: the items are reached through their open status (every open item of the \
             batch)\n{shown}"
        );
        // (The batches, a few tens of rows here, may be read whole.)
        assert!(
            !shown.contains("Seq Scan on items"),
            "{what}: every item is read\n{shown}"
        );
    }
    let group_scan = finish
        .iter()
        .find(|l| l.contains("Function Scan"))
        .unwrap_or_else(|| panic!("the group is unnested\n{}", finish.join("\n")));
    assert!(
        group_scan.ends_with("loops=1)"),
        "an outcome: the group is read once per item\n{}",
        finish.join("\n")
    );
}

type PlanQuery<'q> =
    sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>;

/// `sql`'s plan as it ran with the parameters `bind` gives it, in a transaction rolled back.
async fn analysed<'q>(
    db: &PgPool,
    sql: &str,
    bind: impl FnOnce(PlanQuery<'q>) -> PlanQuery<'q>,
) -> Vec<String> {
    let query = bind(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}"
    ))));
    let mut tx = db.begin().await.unwrap();
    let plan = query.fetch_all(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    plan
}
