//! A year-of-a-busy-fleet database, made in SQL with `generate_series`: batches over `days` days
//! across four projects and two models, their items, and the inference log, in time order as a
//! fleet writes it. Shared by the index test (small) and `make bench-scale` (10 million rows).

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;
use xcam_shared::db::logs::LogFilter;

/// How much to load.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub log_rows: i64,
    /// Items in batches of `items_per_batch`, beside one batch of `big_batch` items and one of
    /// `small_batch`.
    pub items: i64,
    pub items_per_batch: i64,
    pub big_batch: i64,
    pub small_batch: i64,
    pub days: i64,
}

/// What was loaded, for the queries that read it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub projects: Vec<Uuid>,
    pub big_batch: Uuid,
    pub small_batch: Uuid,
    /// A batch of 45 days ago with log rows.
    pub log_batch: Uuid,
    /// The position of the newest row 60 days ago: a deep page's cursor.
    pub deep_cursor: (chrono::DateTime<Utc>, i64),
    pub took: Duration,
}

/// Labels the log's predictions are drawn from, the first most often.
pub const LABELS: [&str; 6] = [
    "no_finding",
    "opacity",
    "effusion",
    "cardiomegaly",
    "nodule",
    "pneumothorax",
];
/// Models the log holds: (name, median latency in ms). The two are far apart on purpose: stats
/// must never mix them into one figure.
pub const MODELS: [(&str, f64); 2] = [("demo", 60.0), ("densenet121", 1300.0)];
/// Workers the log names.
pub const WORKERS: i64 = 8;

/// Log rows inserted per statement.
const LOG_CHUNK: i64 = 1_000_000;

pub async fn load(pool: &PgPool, size: Size) -> Loaded {
    let started = Instant::now();
    for name in ["radiology", "research", "emergency"] {
        xcam_shared::db::access::create_project(pool, name, false)
            .await
            .expect("a project");
    }
    let projects: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM projects ORDER BY name")
        .fetch_all(pool)
        .await
        .unwrap();
    let batches = size.items / size.items_per_batch;
    // Batches spread evenly over the period, newest last; each on one project and model.
    sqlx::query(
        r#"INSERT INTO batches (id, project_id, model_name, model_version, method, labels, status,
                                created_at, updated_at, ingested_at, started_at, finished_at)
           SELECT gen_random_uuid(), ($1::uuid[])[1 + g % cardinality($1::uuid[])],
                  CASE WHEN g % 3 = 2 THEN 'densenet121' ELSE 'demo' END, '1', 'gradcam', 'top1',
                  'succeeded', t, t, t, t, t + interval '1 minute'
           FROM generate_series(1, $2::int8) g,
                LATERAL (SELECT now() - make_interval(days => $3::int) * (1 - g::float8 / $2) AS t) ts"#,
    )
    .bind(&projects)
    .bind(batches)
    .bind(size.days as i32)
    .execute(pool)
    .await
    .unwrap();
    // The sized batches belong to the harness's project, so its clients can read them.
    let home: Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
        .bind(crate::TEST_PROJECT)
        .fetch_one(pool)
        .await
        .unwrap();
    let big_batch = sized_batch(pool, home).await;
    let small_batch = sized_batch(pool, home).await;
    // Items: `items_per_batch` to each spread batch, and the two sized ones.
    sqlx::query(
        r#"INSERT INTO items (id, batch_id, entry_index, entry_name, sha256, status, attempts, worker_id,
                              queued_at, started_at, finished_at)
           SELECT gen_random_uuid(), b.id, g, format('img_%s.png', g), md5(b.id::text || g), 'succeeded', 1,
                  'worker-' || g % 8, b.created_at, b.created_at, b.created_at + interval '1 second'
           FROM batches b, generate_series(0, $1::int4 - 1) g
           WHERE b.id NOT IN ($2, $3)"#,
    )
    .bind(size.items_per_batch as i32)
    .bind(big_batch)
    .bind(small_batch)
    .execute(pool)
    .await
    .unwrap();
    for (batch, n) in [(big_batch, size.big_batch), (small_batch, size.small_batch)] {
        sqlx::query(
            r#"INSERT INTO items (id, batch_id, entry_index, entry_name, sha256, status, attempts, worker_id,
                                  started_at, finished_at)
               SELECT gen_random_uuid(), $1, g, format('img_%s.png', g), md5($1::text || g), 'succeeded', 1,
                      'worker-' || g % 8, now(), now()
               FROM generate_series(0, $2::int4 - 1) g"#,
        )
        .bind(batch)
        .bind(n as i32)
        .execute(pool)
        .await
        .unwrap();
    }

    // Day partitions for the whole period, as the sweeper would have made them day by day.
    sqlx::query(
        r#"SELECT xcam_log_partitions(((now() AT TIME ZONE 'UTC') - make_interval(days => $1::int))::date,
                                      (now() AT TIME ZONE 'UTC')::date)"#,
    )
    .bind(size.days as i32)
    .execute(pool)
    .await
    .unwrap();

    // The log, oldest first, a statement per million rows. Latency is log-normal around each
    // model's median; 1 % of attempts fail and 1 % are retried.
    let mut first = 0;
    while first < size.log_rows {
        let last = (first + LOG_CHUNK).min(size.log_rows);
        sqlx::query(
            r#"WITH b AS (SELECT array_agg(id ORDER BY created_at) AS ids,
                                 array_agg(project_id ORDER BY created_at) AS projects,
                                 array_agg(model_name ORDER BY created_at) AS models,
                                 count(*) AS n
                          FROM batches WHERE id NOT IN ($5, $6))
               INSERT INTO inference_log (ts, model_name, prediction, probability, filename, processing_time_ms,
                                          model_version, batch_id, item_id, attempt, status, error_code,
                                          error_message, worker_id, device, queue_wait_ms, dynamic_batch_size,
                                          project_id)
               SELECT now() - make_interval(days => $3::int) * (1 - g::float8 / $4),
                      b.models[k], CASE WHEN s = 'succeeded' THEN ($7::text[])[1 + floor(random() ^ 2 * cardinality($7::text[]))::int] END,
                      CASE WHEN s = 'succeeded' THEN random() END,
                      format('img_%s.png', g), (CASE b.models[k] WHEN 'demo' THEN $8 ELSE $9 END)
                          * exp(0.35 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())),
                      '1', b.ids[k], NULL, CASE WHEN s = 'succeeded' THEN 1 ELSE 2 END, s,
                      CASE WHEN s <> 'succeeded' THEN 'image_unreadable' END,
                      CASE WHEN s <> 'succeeded' THEN 'synthetic failure' END,
                      'worker-' || g % $10, 'cpu', 1000 * random(), 1 + g % 8, b.projects[k]
               FROM b, generate_series($1::int8, $2::int8 - 1) g,
                    LATERAL (SELECT 1 + (g * b.n / $4)::int AS k,
                                    CASE g % 100 WHEN 0 THEN 'failed' WHEN 1 THEN 'retrying' ELSE 'succeeded' END AS s) x"#,
        )
        .bind(first)
        .bind(last)
        .bind(size.days as i32)
        .bind(size.log_rows)
        .bind(big_batch)
        .bind(small_batch)
        .bind(&LABELS[..])
        .bind(MODELS[0].1)
        .bind(MODELS[1].1)
        .bind(WORKERS)
        .execute(pool)
        .await
        .unwrap();
        first = last;
    }
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await.unwrap();
    let log_batch = sqlx::query_scalar(
        "SELECT batch_id FROM inference_log WHERE ts < now() - interval '45 days' ORDER BY ts DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let deep_cursor = sqlx::query_as(
        "SELECT ts, id FROM inference_log WHERE ts < now() - interval '60 days' ORDER BY ts DESC, id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    Loaded {
        deep_cursor,
        projects,
        big_batch,
        small_batch,
        log_batch,
        took: started.elapsed(),
    }
}

/// A finished batch of the first project, its items to be added.
async fn sized_batch(pool: &PgPool, project: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        r#"INSERT INTO batches (id, project_id, model_name, model_version, method, labels, status,
                                ingested_at, started_at, finished_at)
           VALUES ($1, $2, 'demo', '1', 'gradcam', 'top1', 'succeeded', now(), now(), now())"#,
    )
    .bind(id)
    .bind(project)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// Every form of `/v1/logs` query the operators' page and CLI make: (name, filter, limit).
pub fn log_forms(
    loaded: &Loaded,
    now: chrono::DateTime<Utc>,
) -> Vec<(&'static str, LogFilter, i64)> {
    let base = LogFilter::default();
    let day_ago = Some(now - chrono::Duration::days(1));
    vec![
        ("recent page", base.clone(), 100),
        (
            "since 24h",
            LogFilter {
                since: day_ago,
                ..base.clone()
            },
            100,
        ),
        (
            "a week, 30 days ago",
            LogFilter {
                since: Some(now - chrono::Duration::days(37)),
                until: Some(now - chrono::Duration::days(30)),
                ..base.clone()
            },
            100,
        ),
        (
            "model",
            LogFilter {
                model: Some("densenet121".into()),
                ..base.clone()
            },
            100,
        ),
        (
            "status failed",
            LogFilter {
                status: Some(xcam_shared::status::LogStatus::Failed),
                ..base.clone()
            },
            100,
        ),
        (
            "batch",
            LogFilter {
                batch: Some(loaded.log_batch),
                ..base.clone()
            },
            100,
        ),
        (
            "worker",
            LogFilter {
                worker: Some("worker-3".into()),
                ..base.clone()
            },
            100,
        ),
        (
            "label",
            LogFilter {
                label: Some("pneumothorax".into()),
                ..base.clone()
            },
            100,
        ),
        (
            "slower than 3 s",
            LogFilter {
                min_ms: Some(3000.0),
                ..base.clone()
            },
            100,
        ),
        (
            "one project",
            LogFilter {
                projects: Some(loaded.projects[..1].to_vec()),
                ..base.clone()
            },
            100,
        ),
        (
            "combined: project, model, failed, 7 days",
            LogFilter {
                projects: Some(loaded.projects[..2].to_vec()),
                model: Some("demo".into()),
                status: Some(xcam_shared::status::LogStatus::Failed),
                since: Some(now - chrono::Duration::days(7)),
                ..base.clone()
            },
            100,
        ),
        (
            "deep cursor (60 days back)",
            LogFilter {
                before: Some(loaded.deep_cursor),
                ..base.clone()
            },
            100,
        ),
        ("CSV of 10 000 rows", base, 10_000),
    ]
}
