//! What every handler shares.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use apalis_redis::ConnectionManager;
use sqlx::PgPool;
use xcam_shared::{blob::BlobStore, bundle::Bundle, jobs::QueueTuning};

use crate::{error::ApiError, ingest::ArchiveLimits};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub blobs: BlobStore,
    pub models: Arc<BTreeMap<String, Bundle>>,
    pub settings: Arc<Settings>,
}

/// The parts of the configuration handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub queue_prefix: String,
    pub queue_tuning: QueueTuning,
    pub upload_dir: PathBuf,
    pub max_upload_bytes: u64,
    pub limits: ArchiveLimits,
    pub image_limits: xcam_shared::imaging::ImageLimits,
}

impl AppState {
    pub fn model(&self, name: &str) -> Result<&Bundle, ApiError> {
        self.models.get(name).ok_or_else(|| ApiError::UnknownModel {
            name: name.to_owned(),
            available: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}
