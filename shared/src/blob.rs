//! The blob store: validated pixel planes and drawn overlays. Postgres holds keys, never bytes.
//!
//! Built on `object_store`, so a local directory (`file:///…`, the default) and S3-compatible
//! storage differ only in the URL.

use std::{path::Path as FsPath, sync::Arc};

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, local::LocalFileSystem, path::Path};
use sha2::{Digest, Sha256};

/// What can go wrong with the blob store. Every variant is transient from a job's point of view
/// except `NotFound`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("XCAM_BLOB_URL {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("blob {key} does not exist")]
    NotFound { key: String },
    #[error("blob store: {0}")]
    Store(#[source] object_store::Error),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => BlobError::NotFound { key: path },
            other => BlobError::Store(other),
        }
    }
}

/// A cheap-to-clone handle on the store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl BlobStore {
    /// Opens the store a URL names. `file://` directories are created if missing.
    pub fn open(url: &str) -> Result<Self, BlobError> {
        let bad = |reason: String| BlobError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("a file:// URL must hold an absolute path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
                // Deleting the last file of a directory removes the directory too: its name is
                // a batch or item id, which must not outlive the batch.
                Arc::new(
                    LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| bad(e.to_string()))?
                        .with_automatic_cleanup(true),
                )
            }
            other => {
                let (store, prefix) =
                    object_store::parse_url(&parsed).map_err(|e| bad(e.to_string()))?;
                if !prefix.as_ref().is_empty() {
                    return Err(bad(format!("{other}: a path prefix is not supported yet")));
                }
                Arc::from(store)
            }
        };
        Ok(Self {
            store,
            url: url.to_owned(),
        })
    }

    /// The store for a local directory.
    pub fn local(dir: &FsPath) -> Result<Self, BlobError> {
        let dir = std::path::absolute(dir).map_err(|e| BlobError::BadUrl {
            url: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let url = url::Url::from_directory_path(&dir).map_err(|()| BlobError::BadUrl {
            url: dir.display().to_string(),
            reason: "not an absolute directory".into(),
        })?;
        Self::open(url.as_str())
    }

    /// The store the configuration names: `XCAM_BLOB_URL`, or `.xcam/blobs` under the working
    /// directory.
    pub fn from_args(args: &crate::config::BlobArgs) -> Result<Self, BlobError> {
        match &args.blob_url {
            Some(url) => Self::open(url),
            None => Self::local(FsPath::new(".xcam/blobs")),
        }
    }

    /// The URL the store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes `bytes` under `key` (atomically: readers see all of it or nothing).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// Reads the whole blob.
    pub async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        Ok(self.store.get(&Path::from(key)).await?.bytes().await?)
    }

    /// Removes a blob; one that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes every blob under a prefix (a "directory"); returns how many were removed.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        use futures::TryStreamExt;
        let keys: Vec<Path> = self
            .store
            .list(Some(&Path::from(prefix)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for key in &keys {
            self.delete(key.as_ref()).await?;
        }
        Ok(keys.len())
    }

    /// Whether a blob exists.
    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Content-addressed key of a pixel plane: identical images share one blob.
pub fn plane_key(sha256: &str) -> String {
    format!(
        "planes/{}/{sha256}.{}",
        &sha256[..2],
        crate::imaging::plane::EXTENSION
    )
}

/// Where a batch's derived artefacts live, so deleting the batch is one prefix.
pub fn derived_prefix(batch: uuid::Uuid) -> String {
    format!("derived/{batch}")
}

/// Where one item's derived artefacts live.
pub fn derived_item_prefix(batch: uuid::Uuid, item: uuid::Uuid) -> String {
    format!("{}/{item}", derived_prefix(batch))
}

/// Key of a derived artefact (a drawn overlay) of one item and label.
pub fn derived_key(batch: uuid::Uuid, item: uuid::Uuid, label: &str, ext: &str) -> String {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}/{label}.{ext}", derived_item_prefix(batch, item))
}
