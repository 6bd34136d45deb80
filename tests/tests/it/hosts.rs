//! Many hosts sharing only Postgres, Redis and S3: workers that load their model from the blob
//! store, and producers that reconcile and sweep side by side.

use std::{process::Command, time::Duration};

use xcam_tests::{Stack, Store, bin, eventually, png_zip, repo_root};

const DEADLINE: Duration = Duration::from_secs(240);

/// Copies the demo bundle's files under `prefix` of the stack's blob store, the last one
/// replaced by `tamper` when given.
async fn publish_demo(stack: &Stack, prefix: &str, tamper: Option<&[u8]>) {
    let store = stack.blobs.store();
    let files = ["model.toml", "features.pt", "head.pt"];
    for (i, file) in files.iter().enumerate() {
        let mut bytes = std::fs::read(repo_root().join("models/demo").join(file)).unwrap();
        if let Some(other) = tamper.filter(|_| i == files.len() - 1) {
            bytes = other.to_vec();
        }
        store
            .put(&format!("{prefix}/{file}"), bytes.into())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_loads_its_bundle_from_s3_checked_against_its_checksums() {
    let stack = Stack::storing_in(Store::S3).await;
    publish_demo(&stack, "models/demo", None).await;
    publish_demo(
        &stack,
        "models/tampered",
        Some(b"not the head the manifest names"),
    )
    .await;
    let cache = tempfile::tempdir().unwrap();
    let cache_flag = format!("--model-cache={}", cache.path().display());
    // The bundle named by its URL (the models directory is not read).
    let model = format!("--model={}/models/demo", stack.blob_url());
    let api = stack.producer(&[]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let health = format!("--health-bind=127.0.0.1:{port}");
    let worker = stack.worker("remote", &[&model, &cache_flag, &health]);
    let probe = |path: &'static str| async move {
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    };
    eventually(DEADLINE, "the worker to be ready", || async {
        (probe("/readyz").await? == (200, "ready\n".to_owned())).then_some(())
    })
    .await;
    assert_eq!(probe("/healthz").await, Some((200, "ok\n".to_owned())));
    let (status, created) = api.upload(png_zip(12, |i| format!("{i}.png")), &[]).await;
    assert_eq!(status, 202, "{created}");
    let view = api
        .wait_for_batch(created["id"].as_str().unwrap(), DEADLINE)
        .await;
    assert_eq!(view["status"], "succeeded", "{view}\n{}", worker.log_text());
    assert!(
        worker
            .log_text()
            .contains("model bundle fetched from the blob store")
    );
    let (_, metrics) = probe("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"xcam_worker_images_total{model="demo",outcome="succeeded"} 12"#),
        "{metrics}"
    );
    let cached: Vec<_> = xcam_tests::files_under(cache.path());
    assert_eq!(
        cached.len(),
        3,
        "the bundle's three files are cached: {cached:?}"
    );

    // A bundle whose file does not match its manifest is refused, and the worker says why.
    let mut tampered = Command::new(bin("xcam-worker"));
    tampered
        .args(["run", "--device=cpu"])
        .arg(format!("--model={}/models/tampered", stack.blob_url()))
        .arg(&cache_flag)
        .env("DATABASE_URL", &stack.db.url)
        .env("REDIS_URL", &stack.redis_url)
        .env("XCAM_QUEUE_PREFIX", &stack.prefix)
        .envs(stack.blobs.env());
    let out = tampered.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("models/tampered") && stderr.contains("head.pt has sha256"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stack.finish().await;
}

/// Producers run side by side: each one's reconciler and sweeper take their turn (an advisory
/// lock per task), and a batch uploaded through one is seen, exported and drawn through the
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_side_by_side_share_one_batch() {
    let stack = Stack::storing_in(Store::S3).await;
    let (one, two) = (stack.producer(&[]).await, stack.producer(&[]).await);
    let _worker = stack.worker("a", &[]);
    let (status, created) = one.upload(png_zip(20, |i| format!("{i}.png")), &[]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let view = two.wait_for_batch(id, DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let (status, csv) = two.get_text(&format!("/v1/batches/{id}/results.csv")).await;
    assert_eq!((status, csv.lines().count()), (200, 21), "{csv}");
    let (_, page) = two.get_json(&format!("/v1/batches/{id}/results")).await;
    for item in page["items"].as_array().unwrap() {
        let url = item["overlay_url"].as_str().unwrap();
        let response = two.client.get(two.url(url)).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "an overlay drawn by the other producer"
        );
    }
    eventually(DEADLINE, "both producers' sweepers to have run", || async {
        let (_, metrics) = two.get_text("/metrics").await;
        metrics
            .contains("xcam_background_passes_total")
            .then_some(())
    })
    .await;
    stack.finish().await;
}
