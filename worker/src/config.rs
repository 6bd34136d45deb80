//! `xcam-worker`'s typed configuration: parsed once by [`crate::cli`], passed down as data.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use xcam_shared::config::{BlobArgs, DatabaseArgs, RedisArgs};

use crate::device::{DeviceSpec, Precision};

/// Which model and where it runs.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Directory holding model bundles (each a subdirectory with model.toml).
    #[arg(long = "models-dir", env = "XCAM_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Devices: auto (every GPU libtorch sees, else the CPU), cpu, cuda:N, cuda:all, or a list
    /// such as cuda:0,cuda:2; each GPU gets its own replicas and dynamic batcher.
    #[arg(long, env = "XCAM_DEVICE", default_value = "auto")]
    pub device: DeviceSpec,
    /// Copies of the model run side by side on each device, each with an even share of the
    /// cores [default: one per core, up to 4, on the CPU; one per GPU].
    #[arg(long, env = "XCAM_REPLICAS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub replicas: Option<u16>,
    /// What the backbone and head compute in: fp32, fp16 or bf16 [default: fp32 on the CPU,
    /// bf16 on a GPU]. Maps, probabilities and summaries are fp32 whatever it is.
    #[arg(long, env = "XCAM_PRECISION", value_enum)]
    pub precision: Option<Precision>,
}

impl ModelArgs {
    pub fn replicas(&self) -> Option<usize> {
        self.replicas.map(usize::from)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Model bundle to serve: a name under --models-dir, a directory, or a blob-store URL
    /// (s3://BUCKET/models/demo, read with the blob store's settings); repeat for several.
    /// --models-dir may be a blob-store URL too (s3://BUCKET/models).
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// Address of the worker's health and metrics endpoint (/healthz, /readyz, /metrics),
    /// e.g. 0.0.0.0:9100 in a cluster [default: none].
    #[arg(
        long = "health-bind",
        visible_alias = "metrics-bind",
        env = "XCAM_HEALTH_BIND"
    )]
    pub health_bind: Option<std::net::SocketAddr>,
    /// Where bundles fetched from a blob store are kept, each checked against its manifest's
    /// checksums [default: xcam-models under the temporary directory].
    #[arg(long = "model-cache", env = "XCAM_MODEL_CACHE")]
    pub model_cache: Option<PathBuf>,
    /// Most images run through the model together.
    #[arg(long = "max-batch", env = "XCAM_MAX_BATCH", default_value_t = 8)]
    pub max_batch: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    #[arg(long = "max-wait-ms", env = "XCAM_MAX_WAIT_MS", default_value_t = 20)]
    pub max_wait_ms: u64,
    /// How often an idle worker looks for new jobs.
    #[arg(long = "poll-interval", env = "XCAM_POLL_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Attempts an item gets when the engine fails on it for a reason that may pass (outages
    /// of Postgres or the blob store never count).
    #[arg(long = "retry-budget", env = "XCAM_RETRY_BUDGET", default_value_t = 5)]
    pub retry_budget: u32,
    /// Claims of one item that may end with no outcome (its worker died processing it) before
    /// the item fails with `worker_crashed`.
    #[arg(long = "crash-claims", env = "XCAM_CRASH_CLAIMS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub crash_claims: u32,
    /// Longest an inference may take before the item fails with `inference_timeout`.
    #[arg(long = "job-timeout", env = "XCAM_JOB_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub job_timeout: Duration,
    /// This worker's name (default: host-pid-random); unique per process start.
    #[arg(long = "worker-name", env = "XCAM_WORKER_NAME")]
    pub worker_name: Option<String>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub blob: BlobArgs,
}
