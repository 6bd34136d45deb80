//! xcam's producer: the HTTP API (`xcam serve`) that takes ZIP uploads, stores their images and
//! enqueues one Grad-CAM job per image, and serves statuses, reports and logs from Postgres.
//!
//! - [`api`]: the API's contract, every body as a named type; [`routes`]: the API, one module
//!   per resource; [`error`]: its one error type; [`startup`]: building and running it.
//! - [`ingest`]: upload spooling, archive checks, ingestion; [`queue`]: job pushes.
//! - [`reconciler`]: re-pushes jobs that Redis lost.
//! - [`artefacts`]: overlays and maps, drawn from a result's grids when first asked for.
//! - [`auth`]: who is calling and whether they may; the audit trail.
//! - [`cli`]: the `xcam` command line, [`admin`] its project and token commands; [`tls`]: HTTPS for the server and the client.

pub mod admin;
pub mod api;
pub mod artefacts;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
mod csv_export;
pub mod erase;
pub mod error;
pub mod ingest;
pub mod periodic;
pub mod queue;
pub mod reconciler;
pub mod routes;
pub mod startup;
pub mod state;
pub mod sweeper;
pub mod tls;

pub use startup::{Application, app, build_state};

/// Bytes a local file is read or written at a time, by the server (upload spools) and the client
/// (archives it sends, reports it saves): every read or write of a tokio file is a hand-off to a
/// blocking thread, so a MiB each rather than a few KiB (or a body's chunk).
pub(crate) const FILE_IO: usize = 1 << 20;

/// Serves until SIGINT/SIGTERM (`xcam serve`).
pub async fn serve(args: config::ServeArgs) -> anyhow::Result<()> {
    Application::build(&args)
        .await?
        .run_until_stopped(xcam_shared::shutdown_signal())
        .await
}
