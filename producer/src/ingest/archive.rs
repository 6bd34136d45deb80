//! Reading uploaded ZIP archives safely: caps checked against the central directory before any
//! inflation, actual sizes enforced again while inflating (declared sizes can lie), images found
//! by their bytes, never by their names. Entries are never written to disk under their names.

use std::{fs::File, io::Read, path::Path};

use tokio::sync::mpsc;
use xcam_shared::imaging;
use zip::ZipArchive;

use crate::error::ApiError;

/// Caps on what an archive may hold.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    pub max_entries: usize,
    pub max_total_uncompressed: u64,
    pub max_entry_bytes: u64,
    pub max_compression_ratio: u64,
}

/// An entry that looks like an image.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the archive's directory: items keep the archive's order.
    pub index: usize,
    pub name: String,
    pub size: u64,
}

/// What the pre-flight scan found.
#[derive(Debug, Clone)]
pub struct ScanResult {
    pub images: Vec<Entry>,
    /// Entries that are not images, or are system clutter (`__MACOSX/`, dot-files).
    pub skipped: usize,
    pub total_entries: usize,
}

/// Why one entry was rejected while reading it.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

/// Ratios are only judged above this size: tiny files compress absurdly well legitimately.
const RATIO_FLOOR_BYTES: u64 = 1 << 20;

/// Checks the archive against the caps and sniffs every entry. Blocking: call from a blocking thread.
pub fn scan(path: &Path, limits: ArchiveLimits) -> Result<ScanResult, ApiError> {
    let file = File::open(path).map_err(|e| ApiError::Internal(e.into()))?;
    let mut zip = ZipArchive::new(file).map_err(|e| ApiError::InvalidZip(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(ApiError::ArchiveLimit {
            code: "too_many_entries",
            message: format!(
                "the archive has {} entries; at most {} are accepted",
                zip.len(),
                limits.max_entries
            ),
        });
    }
    let mut images = Vec::new();
    let (mut skipped, mut total, mut declared) = (0usize, 0usize, 0u64);
    for index in 0..zip.len() {
        let raw = zip
            .by_index_raw(index)
            .map_err(|e| ApiError::InvalidZip(e.to_string()))?;
        if raw.is_dir() {
            continue;
        }
        total += 1;
        let name = raw
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(raw.name_raw()).into_owned());
        let (size, compressed) = (raw.size(), raw.compressed_size());
        declared = declared.saturating_add(size);
        if size > limits.max_entry_bytes {
            return Err(ApiError::ArchiveLimit {
                code: "entry_too_large",
                message: format!(
                    "an entry inflates to {size} bytes; at most {} are accepted per entry",
                    limits.max_entry_bytes
                ),
            });
        }
        if declared > limits.max_total_uncompressed {
            return Err(ApiError::ArchiveLimit {
                code: "archive_too_large",
                message: format!(
                    "the archive inflates to more than {} bytes",
                    limits.max_total_uncompressed
                ),
            });
        }
        if size > RATIO_FLOOR_BYTES && size / compressed.max(1) > limits.max_compression_ratio {
            return Err(ApiError::ArchiveLimit {
                code: "zip_bomb",
                message: format!(
                    "an entry's compression ratio exceeds {}:1",
                    limits.max_compression_ratio
                ),
            });
        }
        let encrypted = raw.encrypted();
        drop(raw);
        if is_clutter(&name) || encrypted {
            skipped += 1;
            continue;
        }
        let mut head = [0u8; 32];
        let mut entry = zip
            .by_index(index)
            .map_err(|e| ApiError::InvalidZip(e.to_string()))?;
        let n = read_up_to(&mut entry, &mut head)
            .map_err(|e| ApiError::InvalidZip(format!("entry {index}: {e}")))?;
        if imaging::sniff(&head[..n]).is_some() {
            images.push(Entry { index, name, size });
        } else {
            skipped += 1;
        }
    }
    if images.is_empty() {
        return Err(ApiError::NoImages { skipped });
    }
    Ok(ScanResult {
        images,
        skipped,
        total_entries: total,
    })
}

/// Inflates the listed entries in order and sends each over `tx`. A corrupt or oversized entry
/// is reported as a rejection of that entry, not as a failure of the archive.
pub fn read_entries(
    path: &Path,
    entries: &[Entry],
    limits: ArchiveLimits,
    tx: &mpsc::Sender<(Entry, Result<Vec<u8>, Rejection>)>,
) -> anyhow::Result<()> {
    let mut zip = ZipArchive::new(File::open(path)?)?;
    for entry in entries {
        let read = zip
            .by_index(entry.index)
            .map_err(|e| Rejection {
                code: "corrupt_entry",
                message: e.to_string(),
            })
            .and_then(|file| {
                let mut bytes = Vec::with_capacity(entry.size.min(limits.max_entry_bytes) as usize);
                file.take(limits.max_entry_bytes + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| Rejection {
                        code: "corrupt_entry",
                        message: e.to_string(),
                    })?;
                if bytes.len() as u64 > limits.max_entry_bytes {
                    return Err(Rejection {
                        code: "entry_too_large",
                        message: format!("inflates to more than {} bytes", limits.max_entry_bytes),
                    });
                }
                Ok(bytes)
            });
        if tx.blocking_send((entry.clone(), read)).is_err() {
            anyhow::bail!("ingestion stopped");
        }
    }
    Ok(())
}

/// Finder and OS clutter that is never a radiograph.
fn is_clutter(name: &str) -> bool {
    name.split('/')
        .any(|part| part == "__MACOSX" || part.starts_with('.'))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clutter_is_recognised_anywhere_in_the_path() {
        assert!(is_clutter("__MACOSX/a/._x.png"));
        assert!(is_clutter("scans/.DS_Store"));
        assert!(!is_clutter("scans/patient.png"));
    }
}
