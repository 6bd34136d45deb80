//! xcam's producer: the HTTP API (`xcam serve`) that takes ZIP uploads, stores their images and
//! enqueues one Grad-CAM job per image, and serves statuses, reports and logs from Postgres.
//!
//! - [`routes`]: the API, one module per resource; [`error`]: its one error type.
//! - [`ingest`]: upload spooling, archive checks, ingestion and job pushes.
//! - [`reconciler`]: re-pushes jobs that Redis lost.
//! - [`artefacts`]: overlays and maps, drawn from a result's grids when first asked for.
//! - [`cli`]: the `xcam` command line.

pub mod artefacts;
pub mod cli;
pub mod client;
pub mod config;
mod csv_safe;
pub mod error;
pub mod ingest;
pub mod reconciler;
pub mod routes;
pub mod state;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use xcam_shared::{blob::BlobStore, bundle, db, jobs};

use crate::{
    config::ServeArgs,
    state::{AppState, Settings},
};

/// Connects to everything, applies migrations, loads the model catalogue.
pub async fn build_state(args: &ServeArgs) -> anyhow::Result<AppState> {
    let db = db::connect(&args.db).await?;
    db::migrate(&db).await?;
    let redis = jobs::connect(&args.redis).await?;
    let blobs = BlobStore::from_args(&args.blob)?;
    let models = bundle::discover(&args.models_dir)
        .with_context(|| format!("XCAM_MODELS_DIR={}", args.models_dir.display()))?;
    if models.is_empty() {
        anyhow::bail!(
            "XCAM_MODELS_DIR={} holds no model bundle (a directory with model.toml)",
            args.models_dir.display()
        );
    }
    let upload_dir = args.upload_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&upload_dir)
        .with_context(|| format!("XCAM_UPLOAD_DIR={}", upload_dir.display()))?;
    let settings = Settings {
        queue_prefix: args.redis.queue_prefix.clone(),
        queue_tuning: jobs::QueueTuning {
            orphan_after: args.redis.orphan_after,
            ..Default::default()
        },
        upload_dir,
        max_upload_bytes: args.max_upload_bytes,
        limits: args.limits(),
        image_limits: args.image_limits(),
    };
    Ok(AppState {
        db,
        redis,
        blobs,
        models: Arc::new(models),
        settings: Arc::new(settings),
    })
}

pub fn app(state: AppState) -> axum::Router {
    routes::router(state).layer(TraceLayer::new_for_http())
}

/// Serves until SIGINT/SIGTERM, with the reconciler alongside.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let state = build_state(&args).await?;
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on XCAM_BIND={}", args.bind))?;
    let reconciler = tokio::spawn(reconciler::run(state.clone(), args.reconcile_every));
    tracing::info!(addr = %listener.local_addr()?, models = ?state.models.keys().collect::<Vec<_>>(), blobs = state.blobs.url(), "xcam serving");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(xcam_shared::shutdown_signal())
        .await?;
    reconciler.abort();
    Ok(())
}
