//! `xcam serve`'s typed configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use xcam_shared::config::{BlobArgs, DatabaseArgs, RedisArgs};

use crate::ingest::ArchiveLimits;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "XCAM_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Directory holding model bundles (each a subdirectory with model.toml).
    #[arg(long = "models-dir", env = "XCAM_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Where uploads are spooled while they are checked (default: the system temp dir).
    #[arg(long = "upload-dir", env = "XCAM_UPLOAD_DIR")]
    pub upload_dir: Option<PathBuf>,
    /// Largest accepted upload, in bytes.
    #[arg(long = "max-upload-bytes", env = "XCAM_MAX_UPLOAD_BYTES", default_value_t = 4 << 30)]
    pub max_upload_bytes: u64,
    /// Most entries an archive may hold.
    #[arg(
        long = "max-entries",
        env = "XCAM_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub max_entries: usize,
    /// Most bytes all entries of an archive may inflate to.
    #[arg(long = "max-total-uncompressed", env = "XCAM_MAX_TOTAL_UNCOMPRESSED", default_value_t = 16 << 30)]
    pub max_total_uncompressed: u64,
    /// Most bytes one entry may inflate to.
    #[arg(long = "max-entry-bytes", env = "XCAM_MAX_ENTRY_BYTES", default_value_t = 256 << 20)]
    pub max_entry_bytes: u64,
    /// Highest compression ratio an entry may have (zip bombs reach thousands).
    #[arg(
        long = "max-compression-ratio",
        env = "XCAM_MAX_COMPRESSION_RATIO",
        default_value_t = 200
    )]
    pub max_compression_ratio: u64,
    /// Smallest accepted image side, in pixels.
    #[arg(
        long = "min-image-side",
        env = "XCAM_MIN_IMAGE_SIDE",
        default_value_t = 32
    )]
    pub min_image_side: u32,
    /// Largest accepted image side, in pixels.
    #[arg(
        long = "max-image-side",
        env = "XCAM_MAX_IMAGE_SIDE",
        default_value_t = 16_384
    )]
    pub max_image_side: u32,
    /// Largest accepted image file, in bytes.
    #[arg(long = "max-image-bytes", env = "XCAM_MAX_IMAGE_BYTES", default_value_t = 256 << 20)]
    pub max_image_bytes: u64,
    /// How often the reconciler looks for queued items whose job is missing from Redis.
    #[arg(long = "reconcile-every", env = "XCAM_RECONCILE_EVERY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reconcile_every: Duration,
    /// How long finished batches are kept before they are deleted (`30d`); a project's own
    /// period (`xcam project retention`) wins. Unset: until someone deletes them.
    #[arg(long, env = "XCAM_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// How long inference-log rows are kept (`400d`). Unset: for ever.
    #[arg(long = "log-retention", env = "XCAM_LOG_RETENTION", value_parser = humantime::parse_duration)]
    pub log_retention: Option<Duration>,
    /// How often the sweeper forgets finished jobs in Redis, applies retention and finishes
    /// deletes an outage interrupted.
    #[arg(long = "sweep-every", env = "XCAM_SWEEP_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub sweep_every: Duration,
    /// Host names (or addresses) the API answers to, comma-separated; a request whose Host is
    /// another is refused, so a rebinding DNS name cannot reach it
    /// [default: the bind address, localhost, 127.0.0.1, ::1].
    #[arg(
        long = "allowed-hosts",
        env = "XCAM_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Uploads this server ingests at once; beyond them uploads are answered 503 `busy` with
    /// `Retry-After`.
    #[arg(long = "max-ingestions", env = "XCAM_MAX_INGESTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_ingestions: u32,
    /// Archive entries decoded at once across every ingestion: each holds its image's pixels
    /// while it is checked and re-encoded (about 1.3 GiB for a 16 384² image, the largest
    /// accepted), so this bounds the memory decoding takes [default: one per core, up to 4].
    #[arg(long, env = "XCAM_DECODERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub decoders: Option<u16>,
    /// How long a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long = "header-timeout", env = "XCAM_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Longest pause while a request body arrives (408 `body_timeout` after it): an upload
    /// may take hours, but never stall for longer than this.
    #[arg(long = "body-idle-timeout", env = "XCAM_BODY_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Duration,
    /// How long shutdown waits for running ingestions before it gives up on them.
    #[arg(long = "shutdown-grace", env = "XCAM_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Secret that entry-name pseudonyms are keyed with (at least 32 bytes); without it, uploads
    /// that ask for pseudonyms are refused.
    #[arg(
        long = "pseudonym-key",
        env = "XCAM_PSEUDONYM_KEY",
        hide_env_values = true
    )]
    pub pseudonym_key: Option<String>,
    /// PEM certificate chain: with `--tls-key`, the API speaks HTTPS itself.
    #[arg(long = "tls-cert", env = "XCAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long = "tls-key", env = "XCAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub blob: BlobArgs,
}

impl ServeArgs {
    /// The hosts the API answers to: the configured list, or the bind address and loopback.
    pub fn allowed_hosts(&self) -> Vec<String> {
        if self.allowed_hosts.iter().any(|h| !h.trim().is_empty()) {
            return self
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
        }
        let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        let bound = self.bind.ip();
        if !bound.is_unspecified() {
            hosts.push(bound.to_string());
        }
        hosts
    }

    pub fn pseudonym_key(&self) -> anyhow::Result<Option<crate::ingest::PseudonymKey>> {
        self.pseudonym_key
            .as_deref()
            .map(crate::ingest::PseudonymKey::new)
            .transpose()
            .map_err(anyhow::Error::msg)
    }

    /// The certificate and key, when the API terminates TLS itself.
    pub fn tls(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        self.tls_cert.as_deref().zip(self.tls_key.as_deref())
    }

    /// Entries decoded at once: as configured, else one per core, up to 4 (with the default 4
    /// ingestions, no more than one each would decode on their own).
    pub fn decoders(&self) -> usize {
        self.decoders.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            usize::from,
        )
    }

    pub fn image_limits(&self) -> xcam_shared::imaging::ImageLimits {
        xcam_shared::imaging::ImageLimits {
            min_side: self.min_image_side,
            max_side: self.max_image_side,
            max_bytes: self.max_image_bytes,
        }
    }

    pub fn limits(&self) -> ArchiveLimits {
        ArchiveLimits {
            max_entries: self.max_entries,
            max_total_uncompressed: self.max_total_uncompressed,
            max_entry_bytes: self.max_entry_bytes,
            max_compression_ratio: self.max_compression_ratio,
        }
    }
}
