//! The ground everything stands on: the schema, libtorch's autograd, configuration errors, and
//! compose.yaml staying in step with the binaries.

use std::process::Command;

use xcam_tests::{TestDb, bin, repo_root};

#[tokio::test]
async fn migrations_apply_on_a_fresh_database_and_again_as_a_no_op() {
    let db = TestDb::create().await;
    let tables: Vec<(String,)> = sqlx::query_as(
        // Tables, not the inference log's day partitions.
        r#"SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND c.relname <> '_sqlx_migrations' ORDER BY 1"#,
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "audit_log",
            "batches",
            "deleted_batches",
            "inference_log",
            "items",
            "log_prediction_rollups",
            "log_rollups",
            "pending_erasures",
            "plane_claims",
            "producers",
            "projects",
            "results",
            "sessions",
            "skipped_entries",
            "token_projects",
            "tokens",
            "workers"
        ]
    );
    // The original tool's log columns are all there.
    let columns: Vec<(String,)> = sqlx::query_as("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'inference_log'").fetch_all(&db.pool).await.unwrap();
    for c in [
        "ts",
        "model_name",
        "prediction",
        "probability",
        "filename",
        "processing_time_ms",
        "batch_id",
        "item_id",
        "attempt",
        "status",
        "error_code",
        "error_message",
        "worker_id",
        "device",
    ] {
        assert!(columns.iter().any(|x| x.0 == c), "inference_log lacks {c}");
    }
    xcam_shared::db::migrate(&db.pool)
        .await
        .expect("re-applying is a no-op");
    db.drop_db().await;
}

#[tokio::test]
async fn xcam_migrate_applies_the_schema_from_the_command_line() {
    let db = TestDb::create().await;
    let out = Command::new(bin("xcam"))
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.drop_db().await;
}

#[test]
fn libtorch_autograd_gives_the_gradient_of_a_sum_of_squares() {
    let x = tch::Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
    let y = (&x * &x).sum(tch::Kind::Float);
    let g = tch::Tensor::run_backward(&[y], &[&x], false, false);
    assert_eq!(Vec::<f32>::try_from(&g[0]).unwrap(), vec![2.0, -4.0, 6.0]);
}

fn stderr_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn configuration_errors_name_the_variable_and_never_panic() {
    let missing = stderr_of(
        Command::new(bin("xcam"))
            .arg("migrate")
            .env_remove("DATABASE_URL"),
    );
    assert!(
        missing.contains("DATABASE_URL is not set") && missing.contains("make services"),
        "{missing}"
    );
    let unreachable = stderr_of(
        Command::new(bin("xcam"))
            .arg("migrate")
            .env("DATABASE_URL", "postgres://xcam:secret@127.0.0.1:1/xcam")
            .env("XCAM_DB_ACQUIRE_TIMEOUT", "1s"),
    );
    assert!(
        unreachable.contains("cannot reach Postgres at DATABASE_URL"),
        "{unreachable}"
    );
    assert!(
        !unreachable.contains("secret"),
        "the password leaked: {unreachable}"
    );
    let no_redis = stderr_of(
        Command::new(bin("xcam-worker"))
            .args(["run", "--model", "demo"])
            .env("DATABASE_URL", std::env::var("DATABASE_URL").unwrap())
            .env_remove("REDIS_URL"),
    );
    assert!(no_redis.contains("REDIS_URL is not set"), "{no_redis}");
    let device = stderr_of(
        Command::new(bin("xcam-worker"))
            .args(["bench", "--model", "demo"])
            .env("XCAM_DEVICE", "gpu"),
    );
    assert!(
        device.contains("unknown device \"gpu\"") && device.contains("XCAM_DEVICE"),
        "{device}"
    );
    let cuda = stderr_of(
        Command::new(bin("xcam-worker"))
            .args(["bench", "--model", "demo", "--device", "cuda:7"])
            .current_dir(repo_root()),
    );
    assert!(
        cuda.contains("cuda:7 was requested but libtorch sees"),
        "{cuda}"
    );
    for text in [&missing, &unreachable, &no_redis, &device, &cuda] {
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "{text}"
        );
    }
}

/// Every `XCAM_*`, `DATABASE_URL` and `REDIS_URL` a deployment file sets is one the binaries
/// read (a renamed setting would otherwise be ignored without a word); returns how many it set.
fn assert_known_settings(name: &str, text: &str) -> usize {
    let help = |args: &[&str]| {
        String::from_utf8(
            Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let (xcam, worker) = (bin("xcam"), bin("xcam-worker"));
    let known = [
        help(&[xcam.to_str().unwrap(), "--help"]),
        help(&[xcam.to_str().unwrap(), "serve", "--help"]),
        help(&[worker.to_str().unwrap(), "run", "--help"]),
    ]
    .concat();
    let mut checked = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        // XCAM_S3_SECRET is compose's own variable, not the binaries'.
        let ours = word.starts_with("XCAM_") && word != "XCAM_S3_SECRET";
        if ours || word == "DATABASE_URL" || word == "REDIS_URL" {
            assert!(
                known.contains(&format!("env: {word}="))
                    || known.contains(&format!("[env: {word}")),
                "{name} sets {word}, which neither binary reads"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn compose_file_uses_only_settings_the_binaries_know() {
    let compose = std::fs::read_to_string(repo_root().join("compose.yaml")).unwrap();
    let checked = assert_known_settings("compose.yaml", &compose);
    assert!(
        checked >= 6,
        "compose.yaml configures the services through their env variables"
    );
    for service in [
        "redis:",
        "postgres:",
        "producer:",
        "worker:",
        "healthcheck:",
        "driver: nvidia",
        "s3:",
        "XCAM_BLOB_URL: s3://",
    ] {
        assert!(compose.contains(service), "compose.yaml lacks {service}");
    }
}

/// The Kubernetes manifests (schema-checked by `make manifests`) set only settings the binaries
/// read, and KEDA watches the Redis list apalis really keeps the model's waiting jobs in.
#[test]
fn kubernetes_manifests_match_the_binaries_and_the_queue() {
    let dir = repo_root().join("deploy/kubernetes");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            checked += assert_known_settings(&path.display().to_string(), &text);
        }
    }
    assert!(
        checked >= 10,
        "the manifests configure xcam through its variables"
    );
    let config = xcam_shared::jobs::queue_config(
        &xcam_shared::jobs::queue_name("xcam", "demo"),
        xcam_shared::jobs::QueueTuning::default(),
    );
    let keda = std::fs::read_to_string(dir.join("keda-demo.yaml")).unwrap();
    assert!(
        keda.contains(&format!("listName: {}\n", config.active_jobs_list())),
        "keda-demo.yaml must watch {}",
        config.active_jobs_list()
    );
    let worker = std::fs::read_to_string(dir.join("worker-demo.yaml")).unwrap();
    assert!(worker.contains("nvidia.com/gpu") && worker.contains("/readyz"));
}
