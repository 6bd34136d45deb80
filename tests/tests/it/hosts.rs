//! Many hosts sharing only Postgres, Redis and S3: workers that load their model from the blob
//! store, producers that reconcile and sweep side by side, and separate hosts (network
//! namespaces) of which one is cut off mid-batch.

use std::{process::Command, time::Duration};

use xcam_tests::{
    Blobs, Producer, Stack, Store, TestDb, bin, eventually,
    netns::Network,
    png_zip, repo_root,
    servers::{Place, PrivatePostgres, PrivateRedis, PrivateS3},
};

const DEADLINE: Duration = Duration::from_secs(240);

/// Copies the demo bundle's files under `prefix` of the stack's blob store, the last one
/// replaced by `tamper` when given.
async fn publish_demo(stack: &Stack, prefix: &str, tamper: Option<&[u8]>) {
    let store = stack.blobs.store();
    let files = ["model.toml", "features.pt", "reference.npz", "head.pt"];
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
    for line in [
        r#"xcam_worker_images_total{model="demo",outcome="succeeded"} 12"#,
        r#"xcam_worker_processing_seconds_count{model="demo"} 12"#,
        r#"xcam_worker_queue_wait_seconds_count{model="demo"} 12"#,
        r#"xcam_worker_dynamic_batch_size_count{model="demo"} 12"#,
        r#"xcam_worker_dynamic_batch_size_bucket{model="demo",le="64"} 12"#,
    ] {
        assert!(
            metrics.contains(line),
            "the worker's /metrics lacks {line}:\n{metrics}"
        );
    }
    // Its memory, read at the scrape: a model is loaded, so well above a few MiB, and what its
    // heaps hold is part of what is resident.
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the worker's /metrics:\n{metrics}"))
    };
    let resident = gauge("xcam_worker_resident_memory_bytes");
    assert!(resident > 16e6, "{resident}");
    let in_use = gauge("xcam_worker_heap_in_use_bytes");
    assert!(in_use > 1e6 && in_use < resident, "{in_use} of {resident}");
    gauge("xcam_worker_heap_free_bytes");
    let cached: Vec<_> = xcam_tests::files_under(cache.path());
    assert_eq!(
        cached.len(),
        4,
        "the bundle's four files are cached: {cached:?}"
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

/// A process on one of the network's hosts, killed when dropped; its log is in its home.
struct OnHost {
    child: std::process::Child,
    home: tempfile::TempDir,
}

impl OnHost {
    /// Starts `program` on `place` in a private working and temporary directory, reaching
    /// Postgres, Redis and S3 only by the service host's address.
    fn start(stack: &Stack, place: &Place, program: &str, args: &[String]) -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("tmp")).unwrap();
        let log = std::fs::File::create(home.path().join("log")).unwrap();
        let child = place
            .command(bin(program))
            .args(args)
            .current_dir(home.path())
            .env("TMPDIR", home.path().join("tmp"))
            .env("DATABASE_URL", &stack.db.url)
            .env("REDIS_URL", &stack.redis_url)
            .env("XCAM_QUEUE_PREFIX", &stack.prefix)
            .envs(stack.blobs.env())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, home }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OnHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Host 0 runs Redis, Postgres and S3; hosts 1 and 2 a producer each; hosts 3 and 4 a worker
/// each, whose model comes from S3. A batch uploaded through one producer is polled, exported
/// and drawn through the other, and a worker host cut off mid-batch loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sharing_only_the_network_lose_nothing_when_one_is_cut_off() {
    let net = match Network::new(5) {
        Ok(net) => net,
        Err(why) => {
            eprintln!("skipped: network namespaces cannot be made here ({why})");
            return;
        }
    };
    let services = net.place(0);
    let redis = PrivateRedis::start_at(services.clone());
    let pg = PrivatePostgres::start_at(services.clone());
    let s3 = PrivateS3::start_at(services);
    let mut stack = Stack::on(
        TestDb::create_on(pg.url()).await,
        redis.url(),
        repo_root().join("models"),
    );
    stack.blobs = Blobs::on_s3(s3.server.clone(), &stack.prefix);
    publish_demo(&stack, "models/demo", None).await;

    let producers: Vec<OnHost> = [1, 2]
        .into_iter()
        .map(|i| {
            let producer = OnHost::start(
                &stack,
                &net.place(i),
                "xcam",
                &[
                    "serve".into(),
                    format!("--bind={}:8080", net.address(i)),
                    "--reconcile-every=2s".into(),
                    "--sweep-every=1s".into(),
                    "--orphan-after=6s".into(),
                    format!("--pseudonym-key={}", xcam_tests::PSEUDONYM_KEY),
                    "--models-dir=models".into(),
                ],
            );
            // The producer's own copy of the catalogue, in its private directory.
            let models = producer.home.path().join("models/demo");
            std::fs::create_dir_all(&models).unwrap();
            for file in ["model.toml", "features.pt", "head.pt", "reference.npz"] {
                std::fs::copy(
                    repo_root().join("models/demo").join(file),
                    models.join(file),
                )
                .unwrap();
            }
            producer
        })
        .collect();
    let mut workers: Vec<OnHost> = [3, 4]
        .into_iter()
        .map(|i| {
            OnHost::start(
                &stack,
                &net.place(i),
                "xcam-worker",
                &[
                    "run".into(),
                    format!("--model={}/models/demo", stack.blob_url()),
                    "--model-cache=cache".into(),
                    "--device=cpu".into(),
                    format!("--worker-name=host{i}"),
                    "--orphan-after=6s".into(),
                    "--max-batch=4".into(),
                ],
            )
        })
        .collect();
    let token = stack.db.admin_token.clone();
    let apis: Vec<Producer> = [1, 2]
        .into_iter()
        .map(|i| Producer::remote(format!("http://{}:8080", net.address(i)), &token))
        .collect();
    for (api, process) in apis.iter().zip(&producers) {
        eventually(DEADLINE, "a producer to answer", || async {
            let response = api.client.get(api.url("/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        assert!(process.log().contains("xcam serving"));
    }

    let (status, created) = apis[0]
        .upload(png_zip(240, |i| format!("img_{i:04}.png")), &[])
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let batch = id.parse().unwrap();
    eventually(DEADLINE, "both workers to be at work", || async {
        let workers: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT worker_id) FROM results WHERE batch_id = $1")
                .bind(batch)
                .fetch_one(&stack.db.pool)
                .await
                .ok()?;
        (workers == 2 && stack.succeeded(batch).await? >= 40).then_some(())
    })
    .await;
    // Host 3 is cut off: its cable pulled, its worker gone with whatever it held.
    net.cut(3);
    workers[0].kill();

    let view = apis[1].wait_for_batch(&id, DEADLINE).await;
    assert_eq!(view["status"], "succeeded", "{view}\n{}", workers[1].log());
    stack.assert_each_item_done_once(batch, 240).await;
    let (status, csv) = apis[1]
        .get_text(&format!("/v1/batches/{id}/results.csv"))
        .await;
    assert_eq!((status, csv.lines().count()), (200, 241));
    let (_, page) = apis[1]
        .get_json(&format!("/v1/batches/{id}/results?limit=10"))
        .await;
    for item in page["items"].as_array().unwrap() {
        let url = item["overlay_url"].as_str().unwrap();
        let response = apis[1].client.get(apis[1].url(url)).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "an overlay drawn on the second producer"
        );
    }
    for host in producers.iter().chain(&workers) {
        assert!(!host.log().contains("panicked"), "{}", host.log());
    }
    xcam_tests::clean_redis(&stack.redis_url, &stack.prefix).await;
    stack.blobs.remove().await;
}

/// The blob store on S3 as the pipeline uses it: a large object goes up in parts and comes back
/// byte for byte, a conditional create writes once, and listing and prefix deletes see every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_blobs_go_up_in_parts_and_are_created_once() {
    let stack = Stack::storing_in(Store::S3).await;
    let store = stack.blobs.store();
    // 20 MiB of varied bytes: over the 16 MiB threshold, so three 8 MiB parts or fewer.
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    store
        .put("planes/big.bin", big.clone().into())
        .await
        .unwrap();
    assert!(
        store.get("planes/big.bin").await.unwrap() == big,
        "a multipart object round-trips"
    );
    assert!(
        store
            .put_if_absent("planes/a.bin", "first".into())
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_absent("planes/a.bin", "second".into())
            .await
            .unwrap()
    );
    assert_eq!(&store.get("planes/a.bin").await.unwrap()[..], b"first");
    let mut keys = store.list("planes").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["planes/a.bin", "planes/big.bin"]);
    assert_eq!(store.delete_prefix("planes").await.unwrap(), 2);
    assert!(!store.exists("planes/a.bin").await.unwrap());
    stack.finish().await;
}
