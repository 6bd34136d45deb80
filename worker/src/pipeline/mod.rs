//! `xcam-worker run`: consume the batch pipeline's jobs from Redis and record results in
//! Postgres.
//!
//! Delivery is at least once (apalis-redis): every write is idempotent (results are upserted
//! by item, an item that already has its outcome is skipped), so a job delivered twice still
//! leaves one result. A worker killed mid-job has its jobs re-queued by its peers once it has
//! missed its heartbeats for `--orphan-after`.

mod cpu;
mod group;
mod handler;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use apalis::prelude::*;
use xcam_shared::{
    blob::{BlobError, BlobStore},
    bundle::{self, remote},
    db::{self, items::ClaimRequest, outcome::Outcome, workers::ClockSkew},
    jobs::{self, QueueTuning},
    patience::{outage_in, through_outages},
};

use crate::{
    config::RunArgs,
    engine::{Engine, EngineOptions},
    health::Health,
};

use group::Grouped;
pub use handler::JobContext;

/// Batches' worth of jobs a worker holds beyond those its replicas are running.
const STAGED_BATCHES: usize = 6;

/// Runs until SIGINT/SIGTERM: in-flight jobs finish, nothing new is taken.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let health = Arc::new(Health::default());
    let stopping = tokio_util::sync::CancellationToken::new();
    let endpoint = match args.health_bind {
        Some(addr) => Some(crate::health::serve(addr, health.clone(), stopping.clone()).await?),
        None => None,
    };
    // A worker started during an outage (or restarted by one) waits for its services.
    let db = through_outages("Postgres", outage_in, || db::connect(&args.db)).await?;
    let redis = through_outages("Redis", outage_in, || jobs::connect(&args.redis)).await?;
    let blobs = BlobStore::from_args(&args.blob)?;
    let options = EngineOptions {
        max_batch: args.max_batch.max(1),
        max_wait: Duration::from_millis(args.max_wait_ms),
        replicas: args.model_args.replicas(),
        precision: args.model_args.precision,
    };
    let mut engines = BTreeMap::new();
    for spec in &args.models {
        let bundle = locate(spec, &args).await?;
        let name = bundle.name().to_owned();
        // Model loading and warm-up are CPU work: keep them off the executor.
        let devices = args.model_args.device.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::start(bundle, &devices, options))
            .await?
            .with_context(|| format!("loading model {spec}"))?;
        crate::gpu_memory::watch(engine.devices());
        engines.insert(name, engine);
    }
    let device = engines
        .values()
        .next()
        .map(|e| e.device().to_owned())
        .unwrap_or_default();
    let host = xcam_shared::hostname();
    let worker_id = args
        .worker_name
        .clone()
        .unwrap_or_else(xcam_shared::instance_name);
    let model_names: Vec<String> = engines.keys().cloned().collect();
    through_outages("Postgres", db::is_outage, || {
        let pid = std::process::id() as i32;
        db::workers::register(&db, &worker_id, &host, pid, &device, &model_names)
    })
    .await?;
    tracing::info!(worker = %worker_id, %device, models = ?model_names, max_batch = options.max_batch, max_wait_ms = args.max_wait_ms, "worker ready");

    let heartbeat = tokio::spawn(heartbeat(
        db.clone(),
        worker_id.clone(),
        args.redis.orphan_after / 3,
    ));
    let tuning = QueueTuning {
        orphan_after: args.redis.orphan_after,
        fetch_batch: options.max_batch,
    };
    // One writer of claims and one of outcomes for the whole process: a group may span models.
    let claims = Grouped::spawn({
        let (db, worker) = (db.clone(), worker_id.clone());
        move |requests: Arc<[ClaimRequest]>| {
            let (db, worker) = (db.clone(), worker.clone());
            async move { db::items::claim_all(&db, &requests, &worker).await }
        }
    });
    let outcomes = Grouped::spawn({
        let db = db.clone();
        move |outcomes: Arc<[Outcome]>| {
            let db = db.clone();
            async move { db::outcome::record_all(&db, &outcomes).await }
        }
    });
    let cpu = Arc::new(cpu::CpuPool::new()?);
    let mut monitor = Monitor::new().shutdown_timeout(Duration::from_secs(120));
    for (model, engine) in engines {
        // Every replica's batch in flight, and more being claimed, fetched, finished and
        // committed meanwhile. A job holds its slot from its claim to its outcome's commit, and
        // both wait on the batch's row (each commit's flush included), so outside the engine a
        // job spends about three times its batch's run (demo bundle, 2 cores: 110 ms a job, 28
        // ms a batch). With two batches more than the replicas, they waited for work: quick
        // 8 000-image runs gave 0.52–0.59 of the engine with two, 0.58–0.61 with six.
        let concurrency = options.max_batch * (engine.parallelism().replicas + STAGED_BATCHES);
        let ctx = Arc::new(JobContext {
            db: db.clone(),
            claims: claims.clone(),
            outcomes: outcomes.clone(),
            blobs: blobs.clone(),
            engine,
            cpu: cpu.clone(),
            worker_id: worker_id.clone(),
            retry_budget: args.retry_budget,
            crash_claims: args.crash_claims,
            job_timeout: args.job_timeout,
            stopping: stopping.clone(),
            health: health.clone(),
        });
        let queue = jobs::queue_name(&args.redis.queue_prefix, &model);
        let (conn, poll) = (redis.clone(), args.poll_interval);
        let name = format!("{worker_id}-{model}");
        monitor = monitor.register(move |restarts| {
            // A fresh apalis name per restart: re-registering a name seen moments ago is refused.
            WorkerBuilder::new(format!("{name}-{restarts}"))
                .backend(
                    jobs::storage(conn.clone(), &queue, tuning)
                        .poll_with_strategy(jobs::EveryInterval::new(poll)),
                )
                .concurrency(concurrency)
                .parallelize(tokio::spawn)
                .catch_panic()
                .data(ctx.clone())
                .build(handler::handle)
        });
    }
    let monitor = monitor.should_restart(|w, e| {
        tracing::error!(worker = w.name(), error = %e, "queue consumer died; restarting it");
        true
    });

    health.set_ready(true);
    let signalled = Arc::new(AtomicBool::new(false));
    let flag = signalled.clone();
    let result = monitor
        .run_with_signal(async move {
            xcam_shared::shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight jobs");
            flag.store(true, Ordering::SeqCst);
            health.set_ready(false);
            stopping.cancel();
            Ok(())
        })
        .await;
    heartbeat.abort();
    if let Some(endpoint) = endpoint {
        endpoint.await.ok();
    }
    db::workers::stopped(&db, &worker_id).await.ok();
    result.context("the worker's job monitor failed")?;
    anyhow::ensure!(
        signalled.load(Ordering::SeqCst),
        "every queue consumer stopped without a shutdown signal"
    );
    tracing::info!(worker = %worker_id, "stopped");
    Ok(())
}

/// The bundle a `--model` names: a blob-store URL, a name under a blob-store models URL, a
/// directory, or a name under `--models-dir`.
async fn locate(spec: &str, args: &RunArgs) -> anyhow::Result<bundle::Bundle> {
    let models_dir = args.model_args.models_dir.to_string_lossy();
    let url = if remote::is_url(spec) {
        spec.to_owned()
    } else if remote::is_url(&models_dir) {
        format!("{}/{spec}", models_dir.trim_end_matches('/'))
    } else {
        return Ok(bundle::resolve(spec, &args.model_args.models_dir)?);
    };
    let cache =
        (args.model_cache.clone()).unwrap_or_else(|| std::env::temp_dir().join("xcam-models"));
    let fetch = || remote::fetch(&url, &args.blob.blob_options, &cache);
    let outage = |e: &remote::FetchError| {
        matches!(
            e,
            remote::FetchError::Blob {
                source: BlobError::Store { .. },
                ..
            }
        )
    };
    // A blob store that cannot be reached now is waited for, like Postgres and Redis.
    Ok(through_outages("the blob store", outage, fetch).await?)
}

/// Keeps the worker's row fresh, and checks its clock against Postgres's each time (the first
/// tick is at once): the queue recovers orphans by comparing heartbeat times across hosts.
async fn heartbeat(db: sqlx::PgPool, worker: String, skew_limit: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let beat = async {
            let skew = ClockSkew::measure(&db).await?;
            if skew.beyond(skew_limit) {
                tracing::error!(
                    skew_ms = skew.millis(),
                    limit_ms = skew_limit.as_millis() as u64,
                    "this host's clock is off Postgres's by more than a third of XCAM_ORPHAN_AFTER: \
                     the queue may take this worker's jobs for orphans (or miss real ones); sync it with NTP"
                );
            }
            db::workers::heartbeat(&db, &worker, skew).await
        };
        if let Err(e) = beat.await {
            tracing::warn!(error = %e, "heartbeat to Postgres failed");
        }
    }
}
