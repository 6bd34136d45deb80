//! The test harness: real Postgres, Redis and libtorch, each test isolated.
//!
//! - [`TestDb`]: a fresh database per test (created from `DATABASE_URL`'s server, migrated,
//!   dropped at the end).
//! - A unique Redis queue prefix per test, so tests run in parallel on one Redis.
//! - [`Producer`]: `xcam serve`'s app in-process on 127.0.0.1:0; [`WorkerProcess`]: a real
//!   `xcam-worker run` child process (so it can be SIGKILLed).
//! - [`eventually`]: poll with a deadline; tests never sleep for a fixed time.
//!
//! Run through `make test`, which starts the services and exports their URLs.

pub use blobs::{Blobs, Store};
use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub mod blobs;
pub mod netns;
pub mod scale;
pub mod servers;

use clap::Parser;
use sqlx::{Connection, PgPool};
use uuid::Uuid;
use xcam_shared::access::Role;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_owned()
}

/// The committed demo bundle.
pub fn demo_bundle() -> PathBuf {
    repo_root().join("models/demo")
}

/// A binary of the workspace, built by `cargo test --workspace` next to the test executables
/// (`target/<profile>/deps/..`), or beside this one when it is a binary itself (a benchmark).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("target/<profile>");
    let dir = if here.ends_with("deps") {
        here.parent().expect("target/<profile>")
    } else {
        here
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `make test`, which builds the binaries first",
        path.display()
    );
    path
}

fn env_url(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts Redis and Postgres")
    })
}

pub fn redis_url() -> String {
    env_url("REDIS_URL")
}

/// A database of its own for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    /// An admin token of the project `test`, the only one: what the harness's clients send.
    pub admin_token: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_on(env_url("DATABASE_URL")).await
    }

    /// A fresh database on the server `admin_url` points at.
    pub async fn create_on(admin_url: String) -> Self {
        // Every test starts here; its HTTP clients use rustls with the API's provider.
        xcam_shared::install_crypto_provider();
        let name = format!("xcam_test_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to DATABASE_URL");
        // The name is generated here, never user input; identifiers cannot be bound.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        let url = url.to_string();
        let pool = PgPool::connect(&url)
            .await
            .expect("connect to the test database");
        xcam_shared::db::migrate(&pool)
            .await
            .expect("migrations apply");
        xcam_shared::db::access::create_project(&pool, TEST_PROJECT, false)
            .await
            .expect("create the test project");
        let admin_token = make_token(&pool, "test-admin", Role::Admin, &[TEST_PROJECT], None).await;
        Self {
            pool,
            url,
            admin_token,
            name,
            admin_url,
        }
    }

    /// Drops the database. Tests call it at the end; a failed test leaves its database for a post-mortem.
    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

/// The pseudonym key of the harness's producers.
pub const PSEUDONYM_KEY: &str = "test-pseudonym-key-of-32-bytes-or-more";

/// The project every harness upload goes to.
pub const TEST_PROJECT: &str = "test";

/// Makes a token as `xcam token create` does; returns its secret.
pub async fn make_token(
    pool: &PgPool,
    name: &str,
    role: Role,
    projects: &[&str],
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let secret = xcam_shared::access::new_secret(xcam_shared::access::TOKEN_PREFIX);
    let projects: Vec<String> = projects.iter().map(|p| (*p).to_owned()).collect();
    xcam_shared::db::access::create_token(
        pool,
        &xcam_shared::db::access::NewToken {
            name,
            role,
            projects: &projects,
            expires_at,
            secret: &secret,
        },
    )
    .await
    .expect("create a token");
    secret
}

/// An HTTP client that sends `token` as its bearer on every request.
pub fn client_with(token: &str) -> reqwest::Client {
    xcam_shared::install_crypto_provider();
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
    value.set_sensitive(true);
    reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            value,
        )]))
        .build()
        .expect("client")
}

/// A unique queue prefix (no `:` in it, see `jobs::queue_name`).
pub fn queue_prefix() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Deletes every Redis key of a test's prefix.
pub async fn clean_redis(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}.*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// Polls `check` until it yields `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything one pipeline test shares.
pub struct Stack {
    pub db: TestDb,
    pub redis_url: String,
    pub prefix: String,
    pub blobs: Blobs,
    pub models_dir: PathBuf,
}

impl Stack {
    pub async fn new() -> Self {
        Self::with_models(repo_root().join("models")).await
    }

    pub async fn with_models(models_dir: PathBuf) -> Self {
        Self::on(TestDb::create().await, redis_url(), models_dir)
    }

    /// A stack on given servers (the outage tests bring their own).
    pub fn on(db: TestDb, redis_url: String, models_dir: PathBuf) -> Self {
        Self {
            db,
            redis_url,
            prefix: queue_prefix(),
            blobs: Blobs::Dir(tempfile::tempdir().expect("tempdir")),
            models_dir,
        }
    }

    /// A stack on the shared servers with its blobs in the given kind of store.
    pub async fn storing_in(store: Store) -> Self {
        let mut stack = Self::new().await;
        stack.blobs = Blobs::new(store, &stack.prefix);
        stack
    }

    pub fn blob_url(&self) -> String {
        self.blobs.url()
    }

    /// The router `xcam serve` serves, built on this stack's services but not bound to a port:
    /// for `tower::ServiceExt::oneshot` tests of API behaviour that needs no worker. Requests
    /// that carry no `Authorization` get the stack's admin token, as the harness's clients do.
    pub async fn router(&self) -> axum::Router {
        let bearer: axum::http::HeaderValue = format!("Bearer {}", self.db.admin_token)
            .parse()
            .expect("header");
        self.bare_router()
            .await
            .layer(axum::middleware::map_request(
                move |mut request: axum::extract::Request| {
                    let bearer = bearer.clone();
                    async move {
                        request
                            .headers_mut()
                            .entry(axum::http::header::AUTHORIZATION)
                            .or_insert(bearer);
                        request
                    }
                },
            ))
    }

    /// [`Stack::router`] without the token: requests carry what the test gives them.
    pub async fn bare_router(&self) -> axum::Router {
        let state = xcam_producer::build_state(&self.serve_args(&[]))
            .await
            .expect("producer state");
        xcam_producer::app(state)
    }

    /// `xcam serve`'s arguments for this stack, with extra flags.
    pub fn serve_args(&self, extra: &[&str]) -> xcam_producer::config::ServeArgs {
        // A test's flags override the harness's defaults.
        #[derive(Parser)]
        #[command(args_override_self = true)]
        struct Serve {
            #[command(flatten)]
            args: xcam_producer::config::ServeArgs,
        }
        let mut argv = vec![
            "serve".to_owned(),
            "--bind=127.0.0.1:0".into(),
            format!("--models-dir={}", self.models_dir.display()),
            format!("--database-url={}", self.db.url),
            format!("--redis-url={}", self.redis_url),
            format!("--queue-prefix={}", self.prefix),
            "--reconcile-every=2s".into(),
            "--sweep-every=1s".into(),
            "--orphan-after=6s".into(),
            format!("--pseudonym-key={PSEUDONYM_KEY}"),
        ];
        argv.extend(self.blobs.flags());
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        Serve::try_parse_from(argv).expect("serve args").args
    }

    /// Starts the API in-process, with extra `xcam serve` flags.
    pub async fn producer(&self, extra: &[&str]) -> Producer {
        let args = self.serve_args(extra);
        // The same builder `xcam serve` uses; dropping the Producer stops it.
        let app = xcam_producer::Application::build(&args)
            .await
            .expect("the API builds");
        let addr = app.local_addr();
        let server = tokio::spawn(async move {
            app.run_until_stopped(std::future::pending())
                .await
                .expect("serve");
        });
        Producer {
            base: format!("http://{addr}"),
            token: self.db.admin_token.clone(),
            client: client_with(&self.db.admin_token),
            server: Some(server),
            process: None,
            log: None,
        }
    }

    /// Starts the API as a real `xcam serve` process, its log captured to a file.
    pub async fn producer_process(&self, extra: &[&str]) -> Producer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::env::temp_dir().join(format!("xcam-test-{}-api.log", self.prefix));
        let child = Command::new(bin("xcam"))
            .arg("serve")
            .arg(format!("--bind=127.0.0.1:{port}"))
            .arg(format!("--models-dir={}", self.models_dir.display()))
            .arg("--reconcile-every=2s")
            .arg("--sweep-every=1s")
            .arg(format!("--pseudonym-key={PSEUDONYM_KEY}"))
            .args(extra)
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", &self.redis_url)
            .env("XCAM_QUEUE_PREFIX", &self.prefix)
            .envs(self.blobs.env())
            .env("RUST_LOG", "debug,h2=info,hyper=info,reqwest=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("api log"))
            .spawn()
            .expect("spawn xcam serve");
        let producer = Producer {
            base: format!("http://127.0.0.1:{port}"),
            token: self.db.admin_token.clone(),
            client: client_with(&self.db.admin_token),
            server: None,
            process: Some(child),
            log: Some(log),
        };
        eventually(Duration::from_secs(30), "xcam serve to answer", || async {
            producer
                .client
                .get(producer.url("/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
        producer
    }

    /// Starts a real `xcam-worker run` process for the demo model.
    pub fn worker(&self, name: &str, extra: &[&str]) -> WorkerProcess {
        self.worker_with_env(name, extra, &[])
    }

    /// [`Stack::worker`] with more environment variables.
    pub fn worker_with_env(
        &self,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let log = std::env::temp_dir().join(format!("xcam-test-{}-{name}.log", self.prefix));
        let file = std::fs::File::create(&log).expect("worker log file");
        // The demo bundle from the repository, unless the test names another.
        let model = (!extra.iter().any(|a| a.starts_with("--model="))).then_some("--model=demo");
        let child = Command::new(bin("xcam-worker"))
            .arg("run")
            .args(model)
            .arg(format!("--models-dir={}", self.models_dir.display()))
            .arg("--device=cpu")
            .arg(format!("--worker-name={}-{name}", self.prefix))
            .arg("--orphan-after=6s")
            .args(extra)
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", &self.redis_url)
            .env("XCAM_QUEUE_PREFIX", &self.prefix)
            .envs(self.blobs.env())
            .env("RUST_LOG", "info,xcam_worker=debug")
            .env("XCAM_LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn xcam-worker");
        WorkerProcess {
            child: Some(child),
            log,
            name: format!("{}-{name}", self.prefix),
        }
    }

    /// How many of the batch's items have succeeded; `None` while Postgres does not answer
    /// (the outage tests stop it).
    pub async fn succeeded(&self, batch: Uuid) -> Option<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM items WHERE batch_id = $1 AND status = 'succeeded'",
        )
        .bind(batch)
        .fetch_one(&self.db.pool)
        .await
        .ok()
    }

    /// Every one of the batch's `n` items succeeded, with exactly one result and one succeeded
    /// log row each.
    pub async fn assert_each_item_done_once(&self, batch: Uuid, n: i64) {
        let counts: (i64, i64, i64, i64) = sqlx::query_as(
            r#"SELECT (SELECT count(*) FROM items WHERE batch_id = $1 AND status = 'succeeded'),
                      (SELECT count(*) FROM results WHERE batch_id = $1),
                      (SELECT count(DISTINCT item_id) FROM results WHERE batch_id = $1),
                      (SELECT count(*) FROM inference_log WHERE batch_id = $1 AND status = 'succeeded')"#,
        )
        .bind(batch)
        .fetch_one(&self.db.pool)
        .await
        .expect("counting a batch's outcomes");
        assert_eq!(
            counts,
            (n, n, n, n),
            "succeeded items, results, items with a result, succeeded log rows"
        );
        self.assert_counts_kept(batch).await;
    }

    /// The counts a batch row keeps (`0007_counts_and_skips.sql`) are its items' real counts.
    pub async fn assert_counts_kept(&self, batch: Uuid) {
        let (kept, real): (String, String) = sqlx::query_as(
            r#"SELECT format('%s %s %s %s %s %s %s', items_total, items_rejected, items_queued,
                             items_running, items_succeeded, items_failed, items_cancelled),
                      (SELECT format('%s %s %s %s %s %s %s', count(*),
                              count(*) FILTER (WHERE status = 'rejected'),
                              count(*) FILTER (WHERE status = 'queued'),
                              count(*) FILTER (WHERE status = 'running'),
                              count(*) FILTER (WHERE status = 'succeeded'),
                              count(*) FILTER (WHERE status = 'failed'),
                              count(*) FILTER (WHERE status = 'cancelled'))
                       FROM items WHERE batch_id = $1)
               FROM batches WHERE id = $1"#,
        )
        .bind(batch)
        .fetch_one(&self.db.pool)
        .await
        .expect("reading a batch's counts");
        assert_eq!(
            kept, real,
            "the batch's kept counts (total rejected queued running succeeded failed cancelled) against its items'"
        );
    }

    pub async fn finish(self) {
        clean_redis(&self.redis_url, &self.prefix).await;
        self.blobs.remove().await;
        self.db.drop_db().await;
    }
}

pub struct Producer {
    pub base: String,
    /// The admin token of the project `test` its client sends.
    pub token: String,
    /// A client that sends that token.
    pub client: reqwest::Client,
    server: Option<tokio::task::JoinHandle<()>>,
    process: Option<Child>,
    log: Option<PathBuf>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.server.iter().for_each(tokio::task::JoinHandle::abort);
        if let Some(mut c) = self.process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Producer {
    /// A client of a producer this harness did not start (another host's).
    pub fn remote(base: String, token: &str) -> Producer {
        Producer {
            base,
            token: token.to_owned(),
            client: client_with(token),
            server: None,
            process: None,
            log: None,
        }
    }

    /// The same API called with another token (the server stays this producer's).
    pub fn as_token(&self, token: &str) -> Producer {
        Producer {
            base: self.base.clone(),
            token: token.to_owned(),
            client: client_with(token),
            server: None,
            process: None,
            log: None,
        }
    }

    /// A process-backed producer's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        let pid = self.process.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// What a process-backed producer wrote to its log.
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v1/batches` with a ZIP and form fields; returns (status, JSON body).
    pub async fn upload(&self, zip: Vec<u8>, fields: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(zip).file_name("upload.zip"),
        );
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        let response = self
            .client
            .post(self.url("/v1/batches"))
            .multipart(form)
            .send()
            .await
            .expect("upload");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET` a 200 answer as its API type; anything else fails the test.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "GET {path}");
        let bytes = response.bytes().await.expect("body");
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "GET {path}: not the documented shape ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// Polls the batch until it has ended; returns its last view (checked against the API's
    /// `Batch` type on every poll).
    pub async fn wait_for_batch(&self, id: &str, timeout: Duration) -> serde_json::Value {
        eventually(timeout, &format!("batch {id} to end"), || async {
            let (_, v) = self.get_json(&format!("/v1/batches/{id}")).await;
            let batch: xcam_producer::api::Batch = serde_json::from_value(v.clone()).ok()?;
            batch.status.is_terminal().then_some(v)
        })
        .await
    }
}

pub struct WorkerProcess {
    child: Option<Child>,
    pub log: PathBuf,
    pub name: String,
}

impl WorkerProcess {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A ZIP of `(name, bytes)` entries (deflated).
pub fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            zip.start_file(*name, options).expect("zip entry");
            std::io::Write::write_all(&mut zip, bytes).expect("zip write");
        }
        zip.finish().expect("zip finish");
    }
    out.into_inner()
}

/// A small grayscale PNG whose pattern depends on `seed` (so each is a distinct image).
pub fn png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(width, height, |x, y| {
        image::Luma([((x * 5 + y * 3 + seed * 7) % 256) as u8])
    });
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("PNG encodes");
    bytes
}

/// A ZIP of `n` distinct 48×48 PNGs named by `name(i)`.
pub fn png_zip(n: usize, name: impl Fn(usize) -> String) -> Vec<u8> {
    let entries: Vec<(String, Vec<u8>)> =
        (0..n).map(|i| (name(i), png(48, 48, i as u32))).collect();
    let borrowed: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    zip_of(&borrowed)
}

/// The demo sample archive's bytes.
pub fn demo_samples_zip() -> Vec<u8> {
    std::fs::read(repo_root().join("models/demo/samples/samples.zip"))
        .expect("models/demo/samples/samples.zip")
}

/// Draws `count` synthetic radiographs (mixed sizes and formats) and their `findings.csv`
/// into `dir` with synth.py.
pub fn synthetic_set(dir: &Path, seed: u64, count: usize) {
    let out = python(&[
        "models/tools/synth.py",
        "--out",
        dir.to_str().expect("a UTF-8 path"),
        "--seed",
        &seed.to_string(),
        "--count",
        &count.to_string(),
    ]);
    assert!(
        out.status.success(),
        "synth.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the torch venv's Python (first on PATH under `make test`).
pub fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("python3 runs")
}

/// Everything a database holds, as `pg_dump` writes it; the rows of `skip_rows_of` are left
/// out (their definitions stay).
pub fn pg_dump(url: &str, skip_rows_of: &[&str]) -> Vec<u8> {
    let mut command = Command::new("pg_dump");
    command.arg("--no-owner").arg(format!("--dbname={url}"));
    for table in skip_rows_of {
        command.arg(format!("--exclude-table-data={table}"));
    }
    let out = command.output().expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every key of a test's prefix with everything in it, one line per key: what Redis holds of
/// the test, in a form a search can read.
pub async fn redis_contents(url: &str, prefix: &str) -> String {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}.*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    keys.sort();
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let command = match kind.as_str() {
            "hash" => redis::cmd("HGETALL").arg(&key).clone(),
            "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
            _ => redis::cmd("GET").arg(&key).clone(),
        };
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                command
                    .query_async::<Vec<u8>>(&mut conn)
                    .await
                    .unwrap_or_default(),
            ],
            _ => command.query_async(&mut conn).await.unwrap_or_default(),
        };
        let values: Vec<String> = values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        out.push_str(&format!("{key} ({kind}): {}\n", values.join(" | ")));
    }
    out
}

/// Redis's whole dataset as `SAVE` writes it, strings left uncompressed so a search sees them.
pub async fn redis_save(url: &str) -> Vec<u8> {
    let client = redis::Client::open(url).expect("redis url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let config = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await
                .expect("CONFIG GET");
            pair.get(1).cloned().unwrap_or_default()
        }
    };
    let (dir, file, compression) = (
        config("dir").await,
        config("dbfilename").await,
        config("rdbcompression").await,
    );
    let set = |value: String| {
        let mut conn = conn.clone();
        async move {
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("rdbcompression")
                .arg(value)
                .query_async(&mut conn)
                .await
                .expect("CONFIG SET");
        }
    };
    set("no".into()).await;
    let saved: redis::RedisResult<()> = redis::cmd("SAVE").query_async(&mut conn.clone()).await;
    set(compression).await;
    saved.expect("SAVE");
    std::fs::read(Path::new(&dir).join(file)).expect("the RDB file")
}

/// Every file under a directory.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path))
        } else {
            out.push(path)
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A batch of the project `test` with no items, written straight to Postgres and left
/// `ingesting`, as an upload is until its archive is read.
pub async fn empty_batch(pool: &PgPool) -> Uuid {
    let project = xcam_shared::db::access::project_by_name(pool, TEST_PROJECT)
        .await
        .expect("project lookup")
        .expect("the project `test`");
    // Its producer never stops heartbeating, so no sweeper declares the ingestion interrupted.
    sqlx::query("INSERT INTO producers (id, host, last_seen) VALUES ('xcam-tests', 'tests', 'infinity') ON CONFLICT DO NOTHING")
        .execute(pool)
        .await
        .expect("producer insert");
    let id = Uuid::now_v7();
    xcam_shared::db::batches::insert(
        pool,
        &xcam_shared::db::batches::NewBatch {
            id,
            project_id: project.id,
            model_name: "demo",
            model_version: "1",
            method: xcam_shared::targets::Method::GradCam,
            labels: &xcam_shared::targets::LabelSelection::Top1,
            faithfulness: Default::default(),
            archive_bytes: 0,
            pseudonymize_names: false,
            ingested_by: "xcam-tests",
        },
    )
    .await
    .expect("batch insert");
    id
}

/// The log row a worker writes for a failed attempt at `item_id` of `batch_id` (demo model, one
/// try, `img.png`), for tests that write outcomes through the worker's own statements; they set
/// over it what their attempt says.
pub fn failed_attempt_log(
    batch_id: Uuid,
    item_id: Uuid,
    worker_id: &str,
) -> xcam_shared::db::logs::NewLogEntry {
    xcam_shared::db::logs::NewLogEntry {
        model_name: "demo".into(),
        model_version: "1".into(),
        prediction: None,
        probability: None,
        filename: "img.png".into(),
        processing_time_ms: 1.0,
        queue_wait_ms: None,
        batch_id,
        item_id,
        attempt: 1,
        status: xcam_shared::status::LogStatus::Failed,
        error_code: Some("decode_failed"),
        error_message: Some("a test outcome".into()),
        worker_id: worker_id.into(),
        device: "cpu".into(),
        dynamic_batch_size: None,
    }
}

/// A CSV's header and its rows as column → cell.
pub fn parse_csv(text: &str) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect();
    (header, rows)
}
