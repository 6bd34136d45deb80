//! Bundles kept in a blob store (`s3://BUCKET/models/demo`), so that a GPU node needs no copy of
//! the repository: the manifest is read first, then each file it lists is downloaded into a
//! local cache and checked against its SHA-256 before the bundle is loaded (and checked again,
//! as every bundle is, by [`Bundle::load`]). A cached file whose checksum still matches is not
//! downloaded again.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{Bundle, BundleError, MANIFEST_FILE, Manifest};
use crate::blob::{BlobError, BlobStore, sha256_hex};

/// Why a bundle could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("model bundle {url}: {source}")]
    Blob {
        url: String,
        #[source]
        source: BlobError,
    },
    #[error("model bundle {url}: model.toml is invalid: {reason}")]
    Manifest { url: String, reason: String },
    #[error("model bundle {url}: {file} has sha256 {actual}, but model.toml says {expected}")]
    Checksum {
        url: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("model bundle {url}: cannot write the cache {dir}: {source}")]
    Cache {
        url: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Whether a model spec or models directory names a blob store rather than a local path.
pub fn is_url(spec: &str) -> bool {
    spec.starts_with("s3://") || spec.starts_with("file://")
}

/// Downloads (or finds in `cache_root`) the bundle at `url`, verified, and loads it.
pub async fn fetch(
    url: &str,
    options: &[(String, String)],
    cache_root: &Path,
) -> Result<Bundle, FetchError> {
    let url = url.trim_end_matches('/');
    let blob = |source| FetchError::Blob {
        url: url.to_owned(),
        source,
    };
    let store = BlobStore::open_with(url, options).map_err(blob)?;
    let text = store.get(MANIFEST_FILE).await.map_err(blob)?;
    let manifest: Manifest = std::str::from_utf8(&text)
        .map_err(|e| e.to_string())
        .and_then(|t| toml::from_str(t).map_err(|e| e.to_string()))
        .and_then(|m: Manifest| m.validate().map(|()| m))
        .map_err(|reason| FetchError::Manifest {
            url: url.to_owned(),
            reason,
        })?;
    // One cache directory per URL; its name is a hash, so no URL can point it elsewhere.
    let dir = cache_root.join(&sha256_hex(url.as_bytes())[..16]);
    let cache = |source| FetchError::Cache {
        url: url.to_owned(),
        dir: dir.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(cache)?;
    for (file, expected) in &manifest.files {
        if file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(FetchError::Manifest {
                url: url.to_owned(),
                reason: format!("{file:?} is not a plain file name"),
            });
        }
        let local = dir.join(file);
        let cached = fs::read(&local).is_ok_and(|b| sha256_hex(&b).eq_ignore_ascii_case(expected));
        if cached {
            continue;
        }
        let bytes = store.get(file).await.map_err(blob)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(FetchError::Checksum {
                url: url.to_owned(),
                file: file.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        write_atomically(&local, &bytes).map_err(cache)?;
    }
    write_atomically(&dir.join(MANIFEST_FILE), &text).map_err(cache)?;
    tracing::info!(%url, cache = %dir.display(), "model bundle fetched from the blob store");
    Ok(Bundle::load(&dir)?)
}

/// Another worker sharing the cache sees the whole file or none of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    fs::write(&partial, bytes)?;
    fs::rename(&partial, path)
}
