//! Where a test stack keeps its blobs: a private directory, or a private prefix of the bucket on
//! the S3 server `scripts/services.sh` runs (SeaweedFS). Tests that must hold on both run once
//! on each.

use std::path::Path;

use bytes::Bytes;
use xcam_shared::blob::BlobStore;

/// The bucket `scripts/services.sh` creates.
const BUCKET: &str = "xcam";

/// Which kind of blob store a stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Dir,
    S3,
}

/// The S3 server's address and credentials, as `scripts/services.sh env` exports them.
#[derive(Debug, Clone)]
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Server {
    /// The shared server of `scripts/services.sh`.
    pub fn shared() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests through `make test` (scripts/services.sh starts S3)")
            })
        };
        Self {
            endpoint: var("XCAM_S3_ENDPOINT"),
            access_key: var("XCAM_S3_ACCESS_KEY_ID"),
            secret_key: var("XCAM_S3_SECRET_ACCESS_KEY"),
        }
    }

    /// The standard variables a producer or worker process reads.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The same settings as `--blob-option`s, for producers run in the test's own process
    /// (whose environment the tests must not change).
    pub fn options(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    }
}

/// One stack's blobs.
pub enum Blobs {
    Dir(tempfile::TempDir),
    S3 { server: S3Server, prefix: String },
}

impl Blobs {
    pub fn new(store: Store, prefix: &str) -> Self {
        match store {
            Store::Dir => Self::Dir(tempfile::tempdir().expect("tempdir")),
            Store::S3 => Self::on_s3(S3Server::shared(), prefix),
        }
    }

    pub fn on_s3(server: S3Server, prefix: &str) -> Self {
        Self::S3 {
            server,
            prefix: prefix.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Dir(dir) => url::Url::from_directory_path(dir.path())
                .expect("absolute")
                .to_string(),
            Self::S3 { prefix, .. } => format!("s3://{BUCKET}/{prefix}"),
        }
    }

    /// The directory, for the tests that look at files themselves.
    pub fn path(&self) -> &Path {
        match self {
            Self::Dir(dir) => dir.path(),
            Self::S3 { .. } => panic!("this test reads a blob directory, and its blobs are on S3"),
        }
    }

    /// Environment for a producer or worker process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("XCAM_BLOB_URL", self.url())];
        if let Self::S3 { server, .. } = self {
            env.extend(server.env());
        }
        env
    }

    /// `xcam serve` flags for a producer in the test's process.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec![format!("--blob-url={}", self.url())];
        if let Self::S3 { server, .. } = self {
            flags.extend(
                server
                    .options()
                    .into_iter()
                    .map(|(k, v)| format!("--blob-option={k}={v}")),
            );
        }
        flags
    }

    pub fn store(&self) -> BlobStore {
        let options = match self {
            Self::Dir(_) => Vec::new(),
            Self::S3 { server, .. } => server.options(),
        };
        BlobStore::open_with(&self.url(), &options).expect("the test's blob store")
    }

    /// Every blob: its key and bytes.
    pub async fn all(&self) -> Vec<(String, Bytes)> {
        let store = self.store();
        let mut blobs = Vec::new();
        for key in store.list("").await.expect("list blobs") {
            let bytes = store.get(&key).await.expect("read a blob");
            blobs.push((key, bytes));
        }
        blobs
    }

    /// Every blob's key.
    pub async fn keys(&self) -> Vec<String> {
        self.store().list("").await.expect("list blobs")
    }

    /// Removes what the stack left on S3 (a directory goes with its `TempDir`).
    pub async fn remove(&self) {
        if let Self::S3 { .. } = self {
            self.store()
                .delete_prefix("")
                .await
                .expect("empty the test's prefix");
        }
    }
}
