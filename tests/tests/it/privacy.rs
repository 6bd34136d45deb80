//! The data's life: a deleted batch leaves nothing but its audit rows (also when workers were
//! still running it), retention deletes what is past its period and nothing else, and Redis
//! forgets finished jobs. The search for patient identifiers is in `validation`.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;
use xcam_shared::{
    access::{Action, Outcome, Role},
    db::{
        audit::{self, AuditFilter},
        erasure,
        logs::NewLogEntry,
        outcome,
    },
    status::LogStatus,
};
use xcam_tests::{
    Producer, Stack, Store, TestDb, client_with, contains, eventually, failed_attempt_log,
    files_under, make_token, pg_dump, png, png_zip, redis_contents,
    scale::{self, Size},
    zip_of,
};

/// What xcam held of a batch before it was deleted: the strings that must not outlive it.
struct Traces {
    items: Vec<Uuid>,
    names: Vec<String>,
    hashes: BTreeSet<String>,
}

async fn traces(stack: &Stack, batch: &str) -> Traces {
    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, entry_name, sha256 FROM items WHERE batch_id = $1::uuid")
            .bind(batch)
            .fetch_all(&stack.db.pool)
            .await
            .unwrap();
    Traces {
        items: rows.iter().map(|r| r.0).collect(),
        names: rows.iter().map(|r| r.1.clone()).collect(),
        hashes: rows.iter().filter_map(|r| r.2.clone()).collect(),
    }
}

async fn delete(api: &Producer, batch: &str) -> u16 {
    api.client
        .delete(api.url(&format!("/v1/batches/{batch}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn count(stack: &Stack, sql: &'static str, batch: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(batch)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap()
}

/// Waits until Redis holds nothing of these items: not queued, not held by a worker, not
/// finished (the sweep forgets finished jobs every second in the tests).
async fn until_redis_forgets(stack: &Stack, items: &[Uuid]) {
    eventually(
        Duration::from_secs(60),
        "Redis to forget the batch",
        || async {
            let held = redis_contents(&stack.redis_url, &stack.prefix).await;
            (!items.iter().any(|i| held.contains(&i.to_string()))).then_some(())
        },
    )
    .await;
}

/// Asserts that nothing of `t` is left: not in the database but for the audit log, not in a
/// blob's name or bytes, not in Redis.
async fn assert_nothing_left(stack: &Stack, batch: &str, t: &Traces, shared: &BTreeSet<String>) {
    let dump = pg_dump(&stack.db.url, &["audit_log"]);
    let blobs = stack.blobs.all().await;
    let redis = redis_contents(&stack.redis_url, &stack.prefix).await;
    let needles = t
        .items
        .iter()
        .map(Uuid::to_string)
        .chain(t.names.iter().cloned())
        .chain(t.hashes.difference(shared).cloned());
    for needle in needles {
        assert!(!contains(&dump, &needle), "{needle} is still in Postgres");
        assert!(!redis.contains(&needle), "{needle} is still in Redis");
        for (name, _) in &blobs {
            assert!(!name.contains(&needle), "{needle} names the blob {name}");
        }
    }
    for (name, bytes) in &blobs {
        assert!(!name.contains(batch), "{name} is the deleted batch's");
        for item in &t.items {
            assert!(!contains(bytes, &item.to_string()), "{name} holds {item}");
        }
    }
    // The inference log keeps the attempts, without names or item ids.
    assert_eq!(
        count(
            stack,
            "SELECT count(*) FROM inference_log WHERE batch_id = $1::uuid AND (filename <> '' OR item_id IS NOT NULL)",
            batch
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_batch_leaves_nothing_but_its_audit_rows_and_shared_images_stay() {
    a_deleted_batch_leaves_nothing(Store::Dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_batch_leaves_nothing_on_s3_either() {
    a_deleted_batch_leaves_nothing(Store::S3).await;
}

async fn a_deleted_batch_leaves_nothing(store: Store) {
    let stack = Stack::storing_in(store).await;
    let spool = tempfile::tempdir().unwrap();
    let api = stack
        .producer(&[&format!("--upload-dir={}", spool.path().display())])
        .await;
    let _worker = stack.worker("a", &[]);
    // `doomed` and `kept` share one image: its plane must outlive `doomed`.
    let doomed_zip = zip_of(&[
        ("patient-doe-1.png", png(64, 64, 1)),
        ("patient-doe-2.png", png(64, 64, 2)),
        ("patient-doe-3.png", png(64, 64, 3)),
    ]);
    let kept_zip = zip_of(&[("kept-1.png", png(64, 64, 1))]);
    let mut ids = Vec::new();
    for zip in [doomed_zip, kept_zip] {
        let (status, created) = api.upload(zip, &[]).await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        api.wait_for_batch(&id, Duration::from_secs(120)).await;
        ids.push(id);
    }
    let (doomed, kept) = (&ids[0], &ids[1]);
    // A refused upload leaves no spool file either.
    let (status, body) = api.upload(b"PK not really a zip".to_vec(), &[]).await;
    assert!((400..500).contains(&status), "{status} {body}");
    let spooled: Vec<_> = files_under(spool.path())
        .into_iter()
        .filter(|f| !f.ends_with(".lock"))
        .collect();
    assert!(
        spooled.is_empty(),
        "uploads are removed once ingested: {spooled:?}"
    );
    // Draw and keep its overlays, so there is something derived to remove.
    let (_, page) = api.get_json(&format!("/v1/batches/{doomed}/results")).await;
    for item in page["items"].as_array().unwrap() {
        let url = item["overlay_url"].as_str().unwrap();
        let response = api.client.get(api.url(url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let t = traces(&stack, doomed).await;
    let shared = traces(&stack, kept).await.hashes;
    assert_eq!(t.hashes.intersection(&shared).count(), 1);
    assert!(
        stack
            .blobs
            .keys()
            .await
            .iter()
            .any(|b| b.contains(doomed.as_str())),
        "overlays were kept under the batch"
    );

    assert_eq!(delete(&api, doomed).await, 204);
    assert_eq!(
        delete(&api, doomed).await,
        204,
        "a second delete answers the same"
    );
    for path in ["", "/results", "/report", "/results.csv"] {
        let (status, body) = api.get_text(&format!("/v1/batches/{doomed}{path}")).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let viewer_elsewhere = {
        xcam_shared::db::access::create_project(&stack.db.pool, "elsewhere", false)
            .await
            .unwrap();
        make_token(
            &stack.db.pool,
            "sub-else",
            Role::Submitter,
            &["elsewhere"],
            None,
        )
        .await
    };
    let status = client_with(&viewer_elsewhere)
        .delete(api.url(&format!("/v1/batches/{doomed}")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "another project's token learns nothing of it");

    until_redis_forgets(&stack, &t.items).await;
    assert_nothing_left(&stack, doomed, &t, &shared).await;
    let (status, body) = api.get_text(&format!("/v1/batches/{kept}/results")).await;
    assert_eq!(status, 200, "{body}");
    let plane = (stack.blobs.keys().await.into_iter())
        .find(|b| b.contains(shared.first().unwrap().as_str()));
    assert!(plane.is_some(), "the shared plane stays");
    let item = &api.get_json(&format!("/v1/batches/{kept}/results")).await.1["items"][0];
    let response = api
        .client
        .get(api.url(item["overlay_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the other batch still draws");

    let rows = audit::query(&stack.db.pool, &AuditFilter::default(), 1000)
        .await
        .unwrap();
    let deletes: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.action == Action::Delete && r.batch_id.map(|b| b.to_string()) == Some(doomed.clone())
        })
        .collect();
    assert_eq!(deletes.len(), 3, "one row per delete request: {deletes:#?}");
    assert_eq!(
        deletes.iter().filter(|r| r.outcome == Outcome::Ok).count(),
        2
    );
    stack.finish().await;
}

/// A worker logs an attempt that will be retried (and settles its claim) only while its item
/// exists: one whose batch was deleted meanwhile leaves no log row, so no entry name of the
/// batch outlives it.
#[tokio::test]
async fn a_retry_logged_after_its_batch_was_deleted_writes_nothing() {
    let db = TestDb::create().await;
    // The smallest load with a log old enough for `scale::load`'s own look-ups.
    let size = Size {
        log_rows: 500,
        items: 10,
        items_per_batch: 5,
        big_batch: 1,
        small_batch: 1,
        days: 90,
    };
    let loaded = scale::load(&db.pool, size).await;
    let (live, doomed) = (loaded.big_batch, loaded.small_batch);
    sqlx::query(
        "UPDATE items SET status = 'running', open_claims = 1, finished_at = NULL WHERE batch_id = ANY($1)",
    )
    .bind([live, doomed])
    .execute(&db.pool)
    .await
    .unwrap();
    let item_of = |batch: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM items WHERE batch_id = $1")
                .bind(batch)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let attempt = |batch_id: Uuid, item_id: Uuid, filename: &str| NewLogEntry {
        filename: filename.into(),
        status: LogStatus::Retrying,
        error_code: Some("inference_failed"),
        error_message: Some("a test attempt".into()),
        ..failed_attempt_log(batch_id, item_id, "privacy-worker")
    };
    let logged = |item: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<Uuid>)>(
                "SELECT filename, item_id FROM inference_log WHERE worker_id = 'privacy-worker' AND item_id = $1",
            )
            .bind(item)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };

    // An item still there: its attempt is logged and its claim settled.
    let kept = item_of(live).await;
    outcome::retrying(&db.pool, &attempt(live, kept, "kept.png"))
        .await
        .unwrap();
    assert_eq!(
        logged(kept).await,
        vec![("kept.png".to_owned(), Some(kept))]
    );
    let open_claims: i32 = sqlx::query_scalar("SELECT open_claims FROM items WHERE id = $1")
        .bind(kept)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(open_claims, 0, "the retried attempt is settled");

    // An item whose batch was deleted while its attempt ran: nothing is written.
    let gone = item_of(doomed).await;
    assert!(matches!(
        erasure::delete_batch(&db.pool, doomed).await.unwrap(),
        erasure::Deletion::Deleted(_)
    ));
    outcome::retrying(&db.pool, &attempt(doomed, gone, "gone.png"))
        .await
        .unwrap();
    assert!(logged(gone).await.is_empty());
    let names: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inference_log WHERE filename = 'gone.png'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(names, 0, "the deleted batch's entry name is not in the log");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_deleted_mid_run_leaves_nothing_once_its_worker_finishes() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &[]);
    let (status, created) = api
        .upload(png_zip(240, |i| format!("scan-{i}.png")), &[])
        .await;
    assert_eq!(status, 202, "{created}");
    let batch = created["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(120),
        "a few items to finish",
        || async {
            let (_, b) = api.get_json(&format!("/v1/batches/{batch}")).await;
            (b["counts"]["succeeded"].as_i64().unwrap_or(0) >= 5).then_some(())
        },
    )
    .await;
    let t = traces(&stack, &batch).await;
    let running = count(
        &stack,
        "SELECT count(*) FROM items WHERE batch_id = $1::uuid AND status IN ('queued', 'running')",
        &batch,
    )
    .await;
    assert!(running > 0, "the batch is still running when it is deleted");

    assert_eq!(delete(&api, &batch).await, 204);
    // The worker finishes what it held; nothing it writes after the delete may stay.
    until_redis_forgets(&stack, &t.items).await;
    assert_nothing_left(&stack, &batch, &t, &BTreeSet::new()).await;
    assert!(
        count(
            &stack,
            "SELECT count(*) FROM inference_log WHERE batch_id = $1::uuid",
            &batch
        )
        .await
            > 0,
        "the attempts made before the delete stay in the log"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_finished_batches_keeps_running_ones_and_bounds_the_log() {
    let stack = Stack::new().await;
    let pool = &stack.db.pool;
    xcam_shared::db::access::create_project(pool, "longer", false)
        .await
        .unwrap();
    assert!(
        xcam_shared::db::access::set_retention(pool, "longer", Some(86_400))
            .await
            .unwrap()
    );
    // The sweeper is driven by hand here, so what it keeps is shown, not waited for.
    let flags = ["--retention=2s", "--log-retention=2s", "--sweep-every=1h"];
    let api = stack.producer(&flags).await;
    let root = make_token(pool, "root", Role::Admin, &[], None).await;
    let root_api = api.as_token(&root);
    let mut worker = stack.worker("a", &[]);
    let mut finished = Vec::new();
    for project in ["test", "longer"] {
        let (status, created) = root_api
            .upload(
                png_zip(2, |i| format!("{project}-{i}.png")),
                &[("project", project)],
            )
            .await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let batch = root_api.wait_for_batch(&id, Duration::from_secs(120)).await;
        let at: DateTime<Utc> = batch["finished_at"].as_str().unwrap().parse().unwrap();
        finished.push((id, at));
    }
    worker.terminate();
    let (status, created) = root_api
        .upload(
            png_zip(2, |i| format!("open-{i}.png")),
            &[("project", "test")],
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let open = created["id"].as_str().unwrap().to_owned();
    let last = finished.iter().map(|f| f.1).max().unwrap();
    eventually(
        Duration::from_secs(30),
        "the retention period to pass",
        || async { (Utc::now() > last + chrono::Duration::milliseconds(2500)).then_some(()) },
    )
    .await;

    let state = xcam_producer::build_state(&stack.serve_args(&flags))
        .await
        .unwrap();
    let sweeper = xcam_producer::sweeper::Sweeper {
        eraser: state.eraser(),
        models: state.models.keys().cloned().collect(),
        retention: xcam_producer::sweeper::Retention {
            batches: Some(Duration::from_secs(2)),
            log: Some(Duration::from_secs(2)),
        },
        producers_silent_after: Duration::from_secs(60),
    };
    let swept = sweeper.pass().await;
    assert_eq!(swept.expired_batches, 1, "{swept:?}");
    assert_eq!(
        swept.log_rows, 4,
        "both finished batches' attempts: {swept:?}"
    );
    let status_of = |id: String| {
        let api = &root_api;
        async move { api.get_json(&format!("/v1/batches/{id}")).await.0 }
    };
    assert_eq!(
        status_of(finished[0].0.clone()).await,
        404,
        "past its period"
    );
    assert_eq!(
        status_of(finished[1].0.clone()).await,
        200,
        "its project keeps it a day"
    );
    assert_eq!(status_of(open.clone()).await, 200, "not finished");
    assert_eq!(
        sweeper.pass().await.expired_batches,
        0,
        "nothing more to do"
    );

    let rows = audit::query(pool, &AuditFilter::default(), 1000)
        .await
        .unwrap();
    assert!(rows.iter().any(|r| r.action == Action::Delete
        && r.token_name.as_deref() == Some("retention")
        && r.batch_id.map(|b| b.to_string()) == Some(finished[0].0.clone())));
    let (_, metrics) = root_api.get_text("/metrics").await;
    assert!(
        metrics.contains("xcam_retention_batches_deleted_total")
            && metrics.contains("xcam_retention_log_rows_deleted_total"),
        "{metrics}"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_finished_jobs_after_a_large_batch() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let _workers = [stack.worker("a", &[]), stack.worker("b", &[])];
    let (status, created) = api.upload(png_zip(400, |i| format!("{i}.png")), &[]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, Duration::from_secs(300)).await;
    assert_eq!(batch["counts"]["succeeded"], 400, "{batch}");
    let held = eventually(
        Duration::from_secs(30),
        "the sweep to forget the jobs",
        || async {
            let held = redis_contents(&stack.redis_url, &stack.prefix).await;
            (!held.contains(":meta:") && !held.contains(":data ")).then_some(held)
        },
    )
    .await;
    println!("Redis after the batch:\n{held}");
    for line in held.lines() {
        let key = line.split(' ').next().unwrap();
        assert!(
            key.contains(":workers") || key.contains(":signal") || key.ends_with(":inflight"),
            "only worker registrations remain, not {line}"
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_still_being_ingested_is_not_deleted_half_way() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let id = xcam_tests::empty_batch(&stack.db.pool).await;
    let response = api
        .client
        .delete(api.url(&format!("/v1/batches/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "conflict", "{body}");
    let (status, _) = api.get_json(&format!("/v1/batches/{id}")).await;
    assert_eq!(status, 200, "still there");
    stack.finish().await;
}
