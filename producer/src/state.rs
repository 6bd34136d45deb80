//! What every handler shares.

use std::{collections::BTreeMap, sync::Arc};

use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use xcam_shared::{access::Action, blob::BlobStore, bundle::Bundle, imaging::ImageLimits};

use crate::{
    erase::Eraser,
    error::ApiError,
    ingest::{ArchiveLimits, Decoders, Ingestor, PseudonymKey, spool::Spool},
    queue::Queue,
};

#[derive(Clone)]
pub struct AppState {
    /// The connections of every route but uploads and `/metrics` (see [`Pools`]).
    pub db: PgPool,
    /// The connections set apart from `db` for other kinds of work.
    pub pools: Pools,
    pub queue: Queue,
    pub blobs: BlobStore,
    pub models: Arc<BTreeMap<String, Bundle>>,
    pub settings: Arc<Settings>,
    /// Background work started by requests (ingestions): drained on shutdown, never detached.
    pub tasks: TaskTracker,
}

/// Postgres connections set apart from the API's (`AppState::db`), so that none can starve
/// the others: a burst of slow operator queries or scrapes leaves uploads and the API their
/// connections, and a flood of requests leaves the reconciler and sweeper theirs. (Workers are
/// processes of their own, each with its own pool.)
#[derive(Clone)]
pub struct Pools {
    /// Uploads and their ingestion.
    pub uploads: PgPool,
    /// Prometheus scrapes of `/metrics`.
    pub metrics: PgPool,
    /// The reconciler, the sweeper and the heartbeat.
    pub background: PgPool,
    /// One connection per background task, holding its lease while a pass runs (see
    /// `db::leases`); outside `XCAM_DB_MAX_CONNECTIONS`.
    pub leases: PgPool,
}

impl Pools {
    /// The background tasks that take a lease: the reconciler and the sweeper.
    pub const LEASED_TASKS: u32 = 2;
}

impl Pools {
    /// Divides `total` connections: an eighth each (at least one) to metrics and background
    /// work, a quarter (at least one) to uploads, the rest (at least one) to the API.
    pub fn sizes(total: u32) -> [u32; 4] {
        let metrics = (total / 8).max(1);
        let background = (total / 8).max(1);
        let uploads = (total / 4).max(1);
        let api = total.saturating_sub(metrics + background + uploads).max(1);
        [api, uploads, metrics, background]
    }
}

/// The parts of the configuration handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where uploads wait while they are checked and ingested.
    pub spool: Arc<Spool>,
    pub max_upload_bytes: u64,
    pub limits: ArchiveLimits,
    pub image_limits: ImageLimits,
    /// Host names the API answers to (lower case, no port).
    pub allowed_hosts: Vec<String>,
    /// The key entry names are pseudonymised with; without one, the server refuses to.
    pub pseudonym_key: Option<PseudonymKey>,
    /// Whether the server speaks TLS itself (session cookies are then `Secure`).
    pub tls: bool,
    /// This process, as `producers` and the batches it ingests name it.
    pub producer_id: String,
    /// One permit per ingestion this server may run at once.
    pub ingestions: Arc<tokio::sync::Semaphore>,
    /// The entries decoded at once, shared by every ingestion.
    pub decoders: Arc<Decoders>,
    /// Longest pause while a request body arrives.
    pub body_idle: std::time::Duration,
}

impl AppState {
    /// The connections a route with this action uses.
    pub fn db_for(&self, action: Action) -> &PgPool {
        match action {
            Action::Upload => &self.pools.uploads,
            Action::ReadMetrics => &self.pools.metrics,
            _ => &self.db,
        }
    }

    pub fn model(&self, name: &str) -> Result<&Bundle, ApiError> {
        self.models.get(name).ok_or_else(|| ApiError::UnknownModel {
            name: name.to_owned(),
            available: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The model an upload that names none gets: the server's only one.
    pub fn sole_model(&self) -> Result<&Bundle, ApiError> {
        match self.models.values().collect::<Vec<_>>().as_slice() {
            [only] => Ok(only),
            _ => Err(ApiError::InvalidRequest(format!(
                "the form has no `model` field; this server has several: {}",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// What a delete needs (a request's; background deletes use the background pool).
    pub fn eraser(&self) -> Eraser {
        Eraser {
            db: self.db.clone(),
            blobs: self.blobs.clone(),
            queue: self.queue.clone(),
        }
    }

    /// What an ingestion needs, and nothing else.
    pub fn ingestor(&self) -> Ingestor {
        Ingestor {
            db: self.pools.uploads.clone(),
            blobs: self.blobs.clone(),
            queue: self.queue.clone(),
            limits: self.settings.limits,
            image_limits: self.settings.image_limits,
            decoders: self.settings.decoders.clone(),
        }
    }
}
