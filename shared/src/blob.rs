//! The blob store: validated pixel planes and drawn overlays. Postgres holds keys, never bytes.
//!
//! Built on `object_store`, so a local directory (`file:///…`, the default) and S3
//! (`s3://BUCKET/PREFIX`, configured by the standard `AWS_*` variables) differ only in the URL.
//! Every producer and worker of a deployment must name the same store.

use std::{
    path::{Path as FsPath, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
    aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut},
    local::LocalFileSystem,
    path::Path,
    prefix::PrefixStore,
};
use sha2::{Digest, Sha256};

/// Objects larger than this are uploaded in parts of [`PART_BYTES`].
const MULTIPART_ABOVE: usize = 16 << 20;
const PART_BYTES: usize = 8 << 20;

/// What can go wrong with the blob store. Every variant is transient from a job's point of view
/// except `NotFound`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("XCAM_BLOB_URL {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("blob {key} does not exist")]
    NotFound { key: String },
    /// Names the store (its URL, which holds no credentials) and the key; `object_store`'s
    /// message says what the server answered.
    #[error("blob store {store}, key {key}: {source}")]
    Store {
        store: String,
        key: String,
        #[source]
        source: object_store::Error,
    },
}

/// Puts a writer keeps in flight on S3, where each is a round trip: a producer storing one
/// plane at a time waits out every round trip in turn.
const REMOTE_PUTS_IN_FLIGHT: usize = 16;

/// A cheap-to-clone handle on the store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    url: String,
    puts_in_flight: usize,
    /// A local store: deletes there also remove what killed puts left behind.
    local: Option<Local>,
}

impl BlobStore {
    /// Opens the store a URL names: `file:///DIR` (created if missing) or `s3://BUCKET/PREFIX`.
    pub fn open(url: &str) -> Result<Self, BlobError> {
        Self::open_with(url, &[])
    }

    /// [`BlobStore::open`], with S3 settings (object_store's key names) that override the
    /// `AWS_*` variables.
    pub fn open_with(url: &str, options: &[(String, String)]) -> Result<Self, BlobError> {
        let bad = |reason: String| BlobError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials belong in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL"
                    .into(),
            ));
        }
        let mut puts_in_flight = REMOTE_PUTS_IN_FLIGHT;
        let mut local = None;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("a file:// URL must hold an absolute path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
                // A local put writes a staging file and renames it: a writer killed half way
                // leaves its staging files behind, one per put in flight.
                puts_in_flight = 1;
                // Deleting the last file of a directory removes the directory too: its name is
                // a batch or item id, which must not outlive the batch.
                let store = Arc::new(
                    LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| bad(e.to_string()))?
                        .with_automatic_cleanup(true),
                );
                // The store maps keys under the canonical directory.
                let root = std::fs::canonicalize(&dir).map_err(|e| bad(e.to_string()))?;
                local = Some(Local {
                    store: store.clone(),
                    root,
                });
                store
            }
            "s3" => s3(&parsed, options).map_err(bad)?,
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other}: use file:///DIR or s3://BUCKET/PREFIX"
                )));
            }
        };
        Ok(Self {
            store,
            url: url.to_owned(),
            puts_in_flight,
            local,
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
            Some(url) => Self::open_with(url, &args.blob_options),
            None => Self::local(FsPath::new(".xcam/blobs")),
        }
    }

    /// The URL the store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many puts a writer of many blobs should keep in flight: one on a local directory,
    /// several on S3.
    pub fn puts_in_flight(&self) -> usize {
        self.puts_in_flight
    }

    fn failed(&self, key: &str, e: object_store::Error) -> BlobError {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound {
                key: key.to_owned(),
            },
            source => BlobError::Store {
                store: self.url.clone(),
                key: key.to_owned(),
                source,
            },
        }
    }

    /// Writes `bytes` under `key`, replacing what was there (atomically: readers see all of it
    /// or nothing).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        if bytes.len() > MULTIPART_ABOVE {
            return self.put_in_parts(key, bytes).await;
        }
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map_err(|e| self.failed(key, e))?;
        Ok(())
    }

    /// Writes `bytes` under `key` unless a blob is already there (content-addressed keys: the
    /// same key is the same bytes). Returns whether it wrote. Producers storing the same image
    /// at once write it once, and never replace a blob a reader is reading.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool, BlobError> {
        if bytes.len() > MULTIPART_ABOVE {
            // S3 has no conditional multipart upload in object_store: a second writer of the
            // same content-addressed key writes the same bytes.
            if self.exists(key).await? {
                return Ok(false);
            }
            return self.put_in_parts(key, bytes).await.map(|()| true);
        }
        let create = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&Path::from(key), PutPayload::from(bytes), create)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            // Some S3 servers answer a conditional put of an existing key 412.
            Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.failed(key, e)),
        }
    }

    async fn put_in_parts(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let upload = self
            .store
            .put_multipart(&Path::from(key))
            .await
            .map_err(|e| self.failed(key, e))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        parts.put(bytes);
        parts.finish().await.map_err(|e| self.failed(key, e))?;
        Ok(())
    }

    /// Reads the whole blob.
    pub async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        let read = async { self.store.get(&Path::from(key)).await?.bytes().await };
        read.await.map_err(|e| self.failed(key, e))
    }

    /// Removes a blob; one that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.delete_object(key).await?;
        self.remove_staged(key, Staged::Of).await
    }

    /// [`BlobStore::delete`] without the staging files.
    async fn delete_object(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(key, e)),
        }
    }

    /// On a local store, removes the staging files that puts killed half way left for `key`
    /// ([`Staged::Of`]) or anywhere under it ([`Staged::Under`]), and the directories that
    /// leaves empty. A staging file is `{path}#{n}`; the store's listings skip it, so nothing
    /// else would ever remove it, and it holds a plane's pixels.
    async fn remove_staged(&self, key: &str, which: Staged) -> Result<(), BlobError> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        let root = local.root.clone();
        let path = match key {
            "" => root.clone(),
            key => local
                .store
                .path_to_filesystem(&Path::from(key))
                .map_err(|e| self.failed(key, e))?,
        };
        let removed = tokio::task::spawn_blocking(move || {
            let dir = match which {
                Staged::Of => {
                    remove_staging_files_of(&path)?;
                    path.parent().map(FsPath::to_path_buf)
                }
                Staged::Under => {
                    remove_staging_files_under(&path)?;
                    Some(path)
                }
            };
            if let Some(dir) = dir {
                prune_empty_dirs(&root, &dir);
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        removed.map_err(|source| BlobError::Store {
            store: self.url.clone(),
            key: key.to_owned(),
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(source),
            },
        })
    }

    /// Every key under a prefix (a "directory"), or under the whole store for `""`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
        self.store
            .list(prefix.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| self.failed(prefix.as_ref().map_or("", |p| p.as_ref()), e))
    }

    /// Removes every blob under a prefix (a "directory"); returns how many were removed.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let keys = self.list(prefix).await?;
        for key in &keys {
            self.delete_object(key).await?;
        }
        // One walk of the prefix finds every key's staging files; no probe per key.
        self.remove_staged(prefix, Staged::Under).await?;
        Ok(keys.len())
    }

    /// Whether a blob exists.
    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed(key, e)),
        }
    }
}

/// A local directory's store, and that directory as the store resolved it.
#[derive(Debug, Clone)]
struct Local {
    store: Arc<LocalFileSystem>,
    root: PathBuf,
}

/// Which staging files [`BlobStore::remove_staged`] removes.
#[derive(Debug, Clone, Copy)]
enum Staged {
    /// Those of one key.
    Of,
    /// Every one under a prefix.
    Under,
}

/// Staging names a put takes are the first free of `#1`, `#2`, …: a kill leaves them from `#1`
/// up, with a gap only where a put of the same key at the same time finished. So they are
/// probed in turn, past this many misses, rather than found by reading a directory that may
/// hold thousands of planes.
const STAGING_PROBES: u32 = 4;

/// Removes the staging files a local put of `path` left.
fn remove_staging_files_of(path: &FsPath) -> std::io::Result<()> {
    let (mut n, mut misses) = (1, 0);
    while misses < STAGING_PROBES {
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!("#{n}"));
        match std::fs::remove_file(&staged) {
            Ok(()) => misses = 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => misses += 1,
            Err(e) => return Err(e),
        }
        n += 1;
    }
    Ok(())
}

/// Whether a file name is a local put's staging file: `{name}#{digits}` (object_store's
/// `LocalFileSystem`, which writes a `#` of a key as `%23`).
fn is_staging_file(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes every staging file in `dir` and the directories below it, and the directories that
/// leaves empty. A directory that does not exist holds none.
fn remove_staging_files_under(dir: &FsPath) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_staging_files_under(&entry.path())?;
            prune_empty_dirs(dir, &entry.path());
        } else if is_staging_file(&entry.file_name().to_string_lossy()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Removes `dir` and its parents up to (not including) `root` while they are empty, as the
/// store does when it deletes a directory's last blob: a directory's name may be a batch's id.
fn prune_empty_dirs(root: &FsPath, dir: &FsPath) {
    let mut dir = Some(dir);
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        if std::fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}

/// An S3 bucket (and optional prefix) as `object_store` builds it from the standard `AWS_*`
/// variables: endpoint, region, credentials, `AWS_ALLOW_HTTP`, path or virtual-hosted style.
fn s3(url: &url::Url, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, String> {
    crate::install_crypto_provider();
    let mut builder = AmazonS3Builder::from_env();
    for (key, value) in options {
        let key: AmazonS3ConfigKey = key.to_ascii_lowercase().parse().map_err(|_| {
            format!("{key:?} is not an S3 setting (see object_store's AmazonS3ConfigKey)")
        })?;
        builder = builder.with_config(key, value);
    }
    let bucket = url.host_str().unwrap_or_default();
    let store = builder
        .with_bucket_name(bucket)
        // A request is retried with backoff for up to 30 s; past that the caller decides (a
        // worker waits out the outage without holding it against the image).
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 6,
            retry_timeout: Duration::from_secs(30),
        })
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .build()
        .map_err(|e| e.to_string())?;
    let prefix = url.path().trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A local directory takes one put at a time (each leaves a staging file while it runs);
    /// S3 takes several, each a round trip.
    #[test]
    fn puts_in_flight_follow_the_store() {
        let dir = std::env::temp_dir().join(format!("xcam-blob-test-{}", std::process::id()));
        assert_eq!(BlobStore::local(&dir).unwrap().puts_in_flight(), 1);
        std::fs::remove_dir(&dir).unwrap();
        let options = [
            ("aws_endpoint".to_owned(), "http://127.0.0.1:9".to_owned()),
            ("aws_region".to_owned(), "us-east-1".to_owned()),
        ];
        let s3 = BlobStore::open_with("s3://bucket/prefix", &options).unwrap();
        assert_eq!(s3.puts_in_flight(), REMOTE_PUTS_IN_FLIGHT);
    }

    /// What a producer killed during a put leaves behind (`{key}#{n}`: object_store's staging
    /// file, which listings skip) goes when its key, or a prefix above it, is deleted; a blob
    /// whose key holds a `#` stays.
    #[tokio::test]
    async fn deletes_remove_what_killed_puts_left_behind() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::local(root.path()).unwrap();
        let planes = root.path().join("planes/ab");
        std::fs::create_dir_all(&planes).unwrap();
        // Two puts killed half way, beside a third of the same key that finished (`#1`, renamed).
        std::fs::write(planes.join("abc.plane#2"), b"half a plane").unwrap();
        std::fs::write(planes.join("abc.plane#3"), b"half a plane").unwrap();
        store
            .put("planes/ab/abd.plane", Bytes::from_static(b"kept"))
            .await
            .unwrap();
        store
            .put("planes/ab/abc.plane#v2", Bytes::from_static(b"kept"))
            .await
            .unwrap();

        store.delete("planes/ab/abc.plane").await.unwrap();
        let mut left: Vec<_> = std::fs::read_dir(&planes)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        // (The store writes a key's `#` as `%23`: on disk only staging files hold one.)
        assert_eq!(left, ["abc.plane%23v2", "abd.plane"]);

        // A killed put of a fitted copy: the directory holds only its staging file.
        let fitted = root.path().join("planes/ab/abd.plane.fitted");
        std::fs::create_dir_all(&fitted).unwrap();
        std::fs::write(fitted.join("224.fit#1"), b"half a copy").unwrap();
        assert_eq!(
            store
                .delete_prefix("planes/ab/abd.plane.fitted")
                .await
                .unwrap(),
            0
        );
        assert!(!fitted.exists());
        store.delete("planes/ab/abd.plane").await.unwrap();
        store.delete("planes/ab/abc.plane#v2").await.unwrap();
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "no empty directory stays"
        );
        // Deleting what is not there, staging files included, is not an error.
        store.delete("planes/zz/none.plane").await.unwrap();
        store.delete_prefix("derived/none").await.unwrap();
        std::fs::create_dir_all(root.path().join("derived/b/i")).unwrap();
        std::fs::write(root.path().join("derived/b/i/x.png#1"), b"half").unwrap();
        assert_eq!(store.delete_prefix("").await.unwrap(), 0, "the whole store");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn staging_files_are_told_from_blobs() {
        assert!(is_staging_file("a.plane#1"));
        assert!(is_staging_file("a.plane#12"));
        assert!(!is_staging_file("a.plane#"));
        assert!(!is_staging_file("a.plane#v2"));
        assert!(!is_staging_file("a.plane"));
    }
}
