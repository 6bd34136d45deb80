//! What every handler shares.

use std::{collections::BTreeMap, sync::Arc};

use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use xcam_shared::{blob::BlobStore, bundle::Bundle, imaging::ImageLimits};

use crate::{
    erase::Eraser,
    error::ApiError,
    ingest::{ArchiveLimits, Ingestor, PseudonymKey, spool::Spool},
    queue::Queue,
};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: Queue,
    pub blobs: BlobStore,
    pub models: Arc<BTreeMap<String, Bundle>>,
    pub settings: Arc<Settings>,
    /// Background work started by requests (ingestions): drained on shutdown, never detached.
    pub tasks: TaskTracker,
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
}

impl AppState {
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

    /// What a delete needs.
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
            db: self.db.clone(),
            blobs: self.blobs.clone(),
            queue: self.queue.clone(),
            limits: self.settings.limits,
            image_limits: self.settings.image_limits,
        }
    }
}
