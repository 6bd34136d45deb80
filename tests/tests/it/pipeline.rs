//! The batch pipeline end to end: HTTP upload → Redis (apalis) → `xcam-worker run` processes
//! → Postgres, against real services. Polls with deadlines; never sleeps a fixed time.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;
use xcam_shared::{bundle::Bundle, heatmap, imaging};
use xcam_tests::{
    Producer, Stack, Store, demo_bundle, demo_samples_zip, eventually, parse_csv, zip_of,
};
use xcam_worker::{
    device::DeviceSpec,
    engine::{Engine, EngineOptions, LabelSelection, Method, Target},
};

const BATCH_DEADLINE: Duration = Duration::from_secs(240);

/// `n` small distinct grayscale PNGs named by `name(i)`.
fn png_entries(n: usize, name: impl Fn(usize) -> String) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (name(i), xcam_tests::png(48, 48, i as u32)))
        .collect()
}

fn zip_owned(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let borrowed: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    zip_of(&borrowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_samples_go_through_the_pipeline_and_match_the_explain_command() {
    demo_samples_through_the_pipeline(Store::Dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_samples_go_through_the_pipeline_with_blobs_on_s3() {
    demo_samples_through_the_pipeline(Store::S3).await;
}

async fn demo_samples_through_the_pipeline(store: Store) {
    let stack = Stack::storing_in(store).await;
    let api = stack.producer(&[]).await;
    let mut worker = stack.worker("a", &[]);

    let (status, created) = api.upload(demo_samples_zip(), &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["images"], 36);
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, BATCH_DEADLINE).await;
    assert_eq!(batch["status"], "succeeded", "{batch}");
    assert_eq!(batch["counts"]["succeeded"], 36);
    assert_eq!(batch["progress"], 1.0);

    let (status, csv_text) = api.get_text(&format!("/v1/batches/{id}/results.csv")).await;
    assert_eq!(status, 200);
    let (header, rows) = parse_csv(&csv_text);
    assert!(header.contains(&"p_nodule".to_owned()) && header.contains(&"p_opacity".to_owned()));
    assert_eq!(rows.len(), 36, "one row per entry");

    // The same images through the engine directly, as `xcam-worker explain` runs them.
    let engine = Engine::start(
        Bundle::load(&demo_bundle()).unwrap(),
        &DeviceSpec::Cpu,
        EngineOptions::default(),
    )
    .unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(demo_samples_zip())).unwrap();
    let mut first = None;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["status"], "succeeded");
        assert_eq!(row["entry_index"], i.to_string(), "rows are in entry order");
        let mut entry = archive.by_index(i).unwrap();
        assert_eq!(row["entry_name"], entry.name().unwrap());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        drop(entry);
        let image = imaging::decode(&bytes).unwrap();
        let target = Target {
            method: Method::GradCam,
            labels: LabelSelection::Top1,
            ..Target::default()
        };
        let (e, _) =
            tokio::task::block_in_place(|| engine.explain_blocking(&image, target)).unwrap();
        for (label, p) in &e.predictions {
            let got: f32 = row[&format!("p_{label}")].parse().unwrap();
            assert!(
                (got - p).abs() < 1e-4,
                "{}: p_{label} {got} vs explain {p}",
                row["entry_name"]
            );
        }
        let cam = &e.cams[0];
        assert_eq!(row["explained_label"], cam.label);
        let bbox = cam.bbox.unwrap();
        let got: Vec<u32> = ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]
            .iter()
            .map(|k| row[*k].parse().unwrap())
            .collect();
        assert_eq!(got, bbox, "{}", row["entry_name"]);
        assert_eq!(row["device"], "cpu");
        if i == 0 {
            first = Some((image, e.map(0)));
        }
    }

    // Artefacts, drawn by the API from the stored grid: the same pixels and map as explain's.
    let item = rows[0]["item_id"].clone();
    let (image, map) = first.unwrap();
    let artefact = |name: &'static str| {
        let url = api.url(&format!("/v1/batches/{id}/items/{item}/{name}"));
        let client = api.client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{name}");
            let mime = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (mime, response.bytes().await.unwrap())
        }
    };
    let (mime, png) = artefact("overlay.png").await;
    assert_eq!(mime, "image/png");
    let drawn = image::load_from_memory(&png).unwrap().to_rgb8();
    let expected = image::load_from_memory(&heatmap::overlay_png(&image, &map).unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(drawn.dimensions(), (image.width, image.height));
    let off = drawn
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .filter(|(a, b)| a.abs_diff(**b) > 1)
        .count();
    // The worker ran the image in a dynamic batch, explain alone: float sums in another order
    // may move a pixel on a colour boundary by one more level.
    assert!(
        off <= drawn.as_raw().len() / 10_000,
        "the overlay is explain's, to one level of rounding: {off} values differ by more"
    );
    assert_eq!(
        artefact("overlay.png").await.1,
        png,
        "a drawn overlay is kept"
    );
    let (_, npy) = artefact("cam.npy").await;
    assert!(npy.starts_with(b"\x93NUMPY"));
    let header = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let values: Vec<f32> = npy[10 + header..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), map.len());
    let worst = values
        .iter()
        .zip(&map)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "the map is explain's: off by {worst}");
    let (_, page) = api
        .get_json(&format!("/v1/batches/{id}/results?limit=10"))
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let (_, page2) = api
        .get_json(&format!(
            "/v1/batches/{id}/results?limit=30&after={}",
            page["next_after"]
        ))
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 26);
    stored_grids_read_back_in_either_layout(&stack, &api, &id, &page).await;
    let (_, workers) = api.get_json("/v1/workers").await;
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    assert_eq!(workers[0]["device"], "cpu");
    let (status, _) = api.get_json("/readyz").await;
    assert_eq!(status, 200);

    // SIGTERM: the worker finishes what it holds, says so in Postgres and exits cleanly.
    let exit = tokio::task::block_in_place(|| worker.terminate()).expect("the worker was running");
    assert!(exit.success(), "{exit:?}\n{}", worker.log_text());
    assert!(
        worker.log_text().contains("stopped"),
        "{}",
        worker.log_text()
    );
    let (_, workers) = api.get_json("/v1/workers").await;
    assert_eq!(
        workers.as_array().unwrap().len(),
        0,
        "a stopped worker leaves the live list: {workers}"
    );
    stack.finish().await;
}

/// Workers store each result's grid values as one `real[]` beside CAMs that keep only their
/// shape (`0013_grids_as_floats.sql`); a result stored before, its values in the CAMs' JSON,
/// reads back the same.
async fn stored_grids_read_back_in_either_layout(
    stack: &Stack,
    api: &Producer,
    batch: &str,
    page: &Value,
) {
    let pool = &stack.db.pool;
    let batch_id: Uuid = batch.parse().unwrap();
    let (split, cams): (i64, i64) = sqlx::query_as(
        r#"SELECT count(*) FILTER (WHERE cardinality(grids) > 0
                                     AND NOT jsonb_path_exists(cams, '$[*].grid.values[0]')),
                  count(*)
           FROM results WHERE batch_id = $1"#,
    )
    .bind(batch_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (split, cams),
        (36, 36),
        "every result keeps its values in grids"
    );

    let first = &page["items"][0];
    let item: Uuid = first["item_id"].as_str().unwrap().parse().unwrap();
    let (stored, _) = xcam_shared::db::results::cams(pool, item)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.iter().all(|c| c.grid.is_consistent()));
    sqlx::query("UPDATE results SET cams = $1, grids = NULL WHERE item_id = $2")
        .bind(sqlx::types::Json(&stored))
        .bind(item)
        .execute(pool)
        .await
        .unwrap();
    let (_, again) = api
        .get_json(&format!("/v1/batches/{batch}/results?limit=10"))
        .await;
    assert_eq!(
        &again["items"][0], first,
        "a result stored before reads the same"
    );
    let (older, _) = xcam_shared::db::results::cams(pool, item)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(older, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_a_queue_and_each_item_gets_one_result() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let (a, b) = (
        stack.worker("a", &["--max-batch=4"]),
        stack.worker("b", &["--max-batch=4"]),
    );
    // Both consuming the queue before the batch, or the first could finish it alone.
    let consumers = xcam_shared::jobs::queue_config(
        &xcam_shared::jobs::queue_name(&stack.prefix, "demo"),
        Default::default(),
    )
    .workers_set();
    let redis = redis::Client::open(stack.redis_url.as_str()).unwrap();
    eventually(BATCH_DEADLINE, "both workers to consume the queue", || {
        let (redis, consumers) = (redis.clone(), consumers.clone());
        async move {
            let mut conn = redis.get_multiplexed_async_connection().await.ok()?;
            let n: usize = redis::AsyncCommands::zcard(&mut conn, consumers)
                .await
                .ok()?;
            (n == 2).then_some(())
        }
    })
    .await;
    let entries = png_entries(160, |i| format!("img_{i:04}.png"));
    let (status, created) = api.upload(zip_owned(&entries), &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, BATCH_DEADLINE).await;
    assert_eq!(batch["status"], "succeeded", "{batch}");
    let batch_id: Uuid = id.parse().unwrap();
    let (results, items): (i64, i64) = sqlx::query_as("SELECT (SELECT count(*) FROM results WHERE batch_id = $1), (SELECT count(*) FROM items WHERE batch_id = $1)")
        .bind(batch_id)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!((results, items), (160, 160));
    let per_worker: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker_id, count(*) FROM results WHERE batch_id = $1 GROUP BY 1")
            .bind(batch_id)
            .fetch_all(&stack.db.pool)
            .await
            .unwrap();
    assert_eq!(per_worker.len(), 2, "both workers did work: {per_worker:?}");
    let successes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inference_log WHERE batch_id = $1 AND status = 'succeeded'",
    )
    .bind(batch_id)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(successes, 160, "each item was processed to success once");

    // Jobs ran concurrently in both workers, yet every line a job logged names that job's
    // item and no other (a span entered across an await would stack unrelated items).
    let ids: std::collections::BTreeSet<String> =
        sqlx::query_scalar("SELECT id::text FROM items WHERE batch_id = $1")
            .bind(batch_id)
            .fetch_all(&stack.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut explained = std::collections::BTreeSet::new();
    for line in a.log_text().lines().chain(b.log_text().lines()) {
        let items = line.matches("item=").count();
        assert!(items <= 1, "a log line names {items} items: {line}");
        if line.contains("explained") {
            let item = line
                .split("item=")
                .nth(1)
                .and_then(|rest| rest.get(..36))
                .unwrap_or_default();
            assert!(
                ids.contains(item),
                "a job line names an item of no job: {line}"
            );
            assert!(line.contains(&format!("batch={id}")), "{line}");
            explained.insert(item.to_owned());
        }
    }
    assert_eq!(
        explained, ids,
        "each job logged its outcome under its own item"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_no_job() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let mut victim = stack.worker("victim", &["--max-batch=8"]);
    let entries = png_entries(200, |i| format!("img_{i:04}.png"));
    let (status, created) = api.upload(zip_owned(&entries), &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch_id: Uuid = id.parse().unwrap();
    // Kill it while it holds claimed work.
    let pool = stack.db.pool.clone();
    let name = victim.name.clone();
    eventually(Duration::from_secs(120), "the victim to be mid-job", || {
        let (pool, name) = (pool.clone(), name.clone());
        async move {
            let running: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE batch_id = $1 AND worker_id = $2 AND status = 'running'")
                .bind(batch_id)
                .bind(&name)
                .fetch_one(&pool)
                .await
                .ok()?;
            (running > 0).then_some(())
        }
    })
    .await;
    victim.kill();
    let _survivor = stack.worker("survivor", &[]);
    let batch = api.wait_for_batch(&id, BATCH_DEADLINE).await;
    assert_eq!(batch["status"], "succeeded", "{batch}");
    let duplicates: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT item_id FROM results WHERE batch_id = $1 GROUP BY 1 HAVING count(*) > 1) d").bind(batch_id).fetch_one(&stack.db.pool).await.unwrap();
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM results WHERE batch_id = $1")
        .bind(batch_id)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!((results, duplicates), (200, 0));
    let retried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inference_log WHERE batch_id = $1 AND attempt >= 2",
    )
    .bind(batch_id)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert!(
        retried >= 1,
        "the log shows the retried attempts of the killed worker's jobs"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_stable_codes_and_leave_nothing_behind() {
    let stack = Stack::new().await;
    let api = stack.producer(&["--max-upload-bytes=200000"]).await;
    let one_png = png_entries(1, |_| "a.png".into());

    let (status, body) = api
        .upload(b"this is not a zip".to_vec(), &[("model", "demo")])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_zip")),
        "{body}"
    );
    let (status, body) = api
        .upload(
            zip_of(&[
                ("notes.txt", b"hello".to_vec()),
                ("__MACOSX/._a.png", b"x".to_vec()),
            ]),
            &[("model", "demo")],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("no_images")),
        "{body}"
    );
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    let big = zip_of(&[("noise.png", noise)]);
    let (status, body) = api.upload(big, &[("model", "demo")]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("upload_too_large")),
        "{body}"
    );
    let (status, body) = api
        .upload(zip_owned(&one_png), &[("model", "no-such-model")])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("unknown_model")),
        "{body}"
    );
    let (status, body) = api
        .upload(
            zip_owned(&one_png),
            &[("model", "demo"), ("method", "magic")],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_method")),
        "{body}"
    );
    let (status, body) = api
        .upload(
            zip_owned(&one_png),
            &[("model", "demo"), ("labels", "fracture")],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("unknown_label")),
        "{body}"
    );
    let (status, body) = api.get_json("/v1/batches/not-a-batch").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("batch_not_found")),
        "{body}"
    );
    let (status, body) = api
        .get_json(&format!("/v1/batches/{}", Uuid::now_v7()))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("batch_not_found")),
        "{body}"
    );

    let (batches, items): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM items)")
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    assert_eq!((batches, items), (0, 0), "a refused upload writes nothing");
    assert_eq!(
        stack.blobs.keys().await,
        Vec::<String>::new(),
        "a refused upload stores nothing"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_of_a_1000_image_batch_has_every_row_and_no_live_formulas() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &["--max-batch=16"]);
    let hostile = ["=HYPERLINK(\"x\")", "+1+1", "-2-2", "@SUM(A1)"];
    let mut entries = png_entries(1000, |i| format!("img_{i:04}.png"));
    for (i, h) in hostile.iter().enumerate() {
        entries[i].0 = format!("{h}.png");
    }
    entries.push(("readme.txt".into(), b"not an image".to_vec()));
    let (status, created) = api.upload(zip_owned(&entries), &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(
        (created["images"].as_u64(), created["skipped"].as_u64()),
        (Some(1000), Some(1))
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = api.wait_for_batch(&id, Duration::from_secs(600)).await;
    assert_eq!(batch["status"], "succeeded", "{batch}");
    assert_eq!(batch["skipped_entries"], 1);
    let (_, text) = api.get_text(&format!("/v1/batches/{id}/results.csv")).await;
    let (_, rows) = parse_csv(&text);
    assert_eq!(rows.len(), 1000);
    for (row, h) in rows.iter().zip(hostile) {
        assert_eq!(
            row["entry_name"],
            format!("'{h}.png"),
            "formula neutralised"
        );
    }
    for row in &rows {
        for (column, cell) in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{column} = {cell:?} would run as a formula"
            );
        }
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_query_the_inference_log_with_filters_and_paging() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let worker = stack.worker("a", &[]);
    let (_, created) = api.upload(demo_samples_zip(), &[("model", "demo")]).await;
    let id = created["id"].as_str().unwrap().to_owned();
    api.wait_for_batch(&id, BATCH_DEADLINE).await;

    let count = |v: &Value| v["entries"].as_array().map_or(0, Vec::len);
    let (status, all) = api.get_json("/v1/logs?limit=1000").await;
    assert_eq!((status, count(&all)), (200, 36), "{all}");
    for (query, expected) in [
        (format!("batch={id}"), 36),
        ("model=demo".into(), 36),
        ("status=succeeded".into(), 36),
        ("status=failed".into(), 0),
        (format!("worker={}", worker.name), 36),
        ("since=1h".into(), 36),
        ("until=1h".into(), 0),
        ("min_ms=0".into(), 36),
        ("min_ms=1000000".into(), 0),
    ] {
        let (status, v) = api.get_json(&format!("/v1/logs?limit=1000&{query}")).await;
        assert_eq!((status, count(&v)), (200, expected), "{query}: {v}");
    }
    let nodules = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["prediction"] == "nodule")
        .count();
    let (_, v) = api.get_json("/v1/logs?limit=1000&label=nodule").await;
    assert_eq!(count(&v), nodules);
    // Injection attempts are only data.
    for evil in [
        "%27%20OR%201%3D1%20--",
        "demo%27%3B%20DROP%20TABLE%20inference_log%3B%20--",
    ] {
        let (status, v) = api.get_json(&format!("/v1/logs?model={evil}")).await;
        assert_eq!((status, count(&v)), (200, 0), "{v}");
    }
    let (status, v) = api.get_json("/v1/logs?since=yesterday-ish").await;
    assert_eq!((status, v["code"].as_str()), (422, Some("invalid_filter")));
    // Paging: 36 rows in pages of 10, no row twice.
    let (mut seen, mut cursor) = (std::collections::BTreeSet::new(), String::new());
    loop {
        let (_, page) = api.get_json(&format!("/v1/logs?limit=10{cursor}")).await;
        for e in page["entries"].as_array().unwrap() {
            assert!(
                seen.insert(e["id"].as_i64().unwrap()),
                "row {} twice",
                e["id"]
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 36);
    let (status, csv_text) = api.get_text("/v1/logs?format=csv&limit=1000").await;
    assert_eq!(status, 200);
    assert_eq!(parse_csv(&csv_text).1.len(), 36);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_is_skipped_by_workers() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let (_, created) = api
        .upload(
            zip_owned(&png_entries(20, |i| format!("{i}.png"))),
            &[("model", "demo")],
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "ingestion", || async {
        let (_, v) = api.get_json(&format!("/v1/batches/{id}")).await;
        (v["status"] == "queued").then_some(())
    })
    .await;
    let response = api
        .client
        .post(api.url(&format!("/v1/batches/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let worker = stack.worker("a", &[]);
    let pool = stack.db.pool.clone();
    // The worker drains the queue (its log shows the skips) without running anything.
    eventually(
        Duration::from_secs(60),
        "the worker to skip every job",
        || {
            let log = worker.log_text();
            async move { (log.matches("worker ready").count() == 1).then_some(()) }
        },
    )
    .await;
    let batch = api.wait_for_batch(&id, BATCH_DEADLINE).await;
    assert_eq!(batch["status"], "cancelled");
    assert_eq!(batch["counts"]["cancelled"], 20);
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM results")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(results, 0);
    let (status, body) = api
        .client
        .post(api.url(&format!("/v1/batches/{id}/cancel")))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 409, "{:?}", body.text().await);
    stack.finish().await;
}
