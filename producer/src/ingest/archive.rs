//! Reading uploaded ZIP archives safely: caps checked against the central directory before any
//! inflation, actual sizes enforced again while inflating (declared sizes can lie), images found
//! by their bytes, never by their names. Entries are never written to disk under their names.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    num::NonZero,
    os::unix::fs::FileExt,
    path::Path,
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use tokio::sync::mpsc;
use xcam_shared::imaging::{
    self,
    fitted::{self, Fit},
};
use zip::ZipArchive;

/// Why a whole archive is refused. Each variant has a stable code; the HTTP layer decides the
/// status (`From<ArchiveError> for ApiError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// `invalid_zip`: not a readable ZIP archive.
    #[error("the upload is not a readable ZIP archive: {0}")]
    InvalidZip(String),
    /// A cap: `too_many_entries`, `archive_too_large`, `entry_too_large` or `zip_bomb`.
    #[error("{message}")]
    Limit { code: &'static str, message: String },
    /// `duplicate_names`: two entries share a name.
    #[error("the archive lists {extra} entries under names another entry already uses")]
    DuplicateNames { extra: usize },
    /// `no_images`: nothing in the archive is an image xcam reads.
    #[error(
        "the archive holds no images (PNG, JPEG, TIFF or DICOM): {skipped} other entries were skipped and {rejected} refused"
    )]
    NoImages { skipped: usize, rejected: usize },
    /// The spooled upload could not be read back: the server's fault, not the archive's.
    #[error("reading the spooled upload: {0}")]
    Io(#[from] std::io::Error),
}

impl ArchiveError {
    pub fn code(&self) -> &'static str {
        match self {
            ArchiveError::InvalidZip(_) => "invalid_zip",
            ArchiveError::Limit { code, .. } => code,
            ArchiveError::DuplicateNames { .. } => "duplicate_names",
            ArchiveError::NoImages { .. } => "no_images",
            ArchiveError::Io(_) => "internal",
        }
    }
}

/// Caps on what an archive may hold.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    pub max_entries: usize,
    pub max_total_uncompressed: u64,
    pub max_entry_bytes: u64,
    pub max_compression_ratio: u64,
}

/// An archive entry that will become an item: an image candidate, or an entry refused for
/// what it is (a symlink, a nested archive, …), which is kept so the report can say why.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the archive's directory: items keep the archive's order.
    pub index: usize,
    pub name: String,
    pub size: u64,
    pub rejection: Option<Rejection>,
}

/// What the pre-flight scan found.
#[derive(Debug, Clone)]
pub struct ScanResult {
    pub entries: Vec<Entry>,
    /// Entries that are not images, or are system clutter (`__MACOSX/`, dot-files).
    pub skipped: Vec<Skipped>,
    pub total_entries: usize,
}

/// An entry passed over, by position and name, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub index: usize,
    pub name: String,
    pub reason: SkipReason,
}

pub use xcam_shared::db::skipped::SkipReason;

impl ScanResult {
    pub fn images(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.rejection.is_none())
            .count()
    }
}

/// Why one entry was rejected.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What reading one entry produced.
pub type EntryRead = Result<Planes, Rejection>;

/// An entry's pixels as xcam keeps them, and its warnings.
pub struct Planes {
    /// The full-resolution plane (see [`imaging::plane`]), for overlays.
    pub full: bytes::Bytes,
    /// The plane fitted to the batch's model (see [`imaging::fitted`]), for workers.
    pub fitted: bytes::Bytes,
    pub warnings: Vec<imaging::Warning>,
}

impl Planes {
    /// Bytes both planes take.
    pub fn bytes(&self) -> usize {
        self.full.len() + self.fitted.len()
    }
}

/// Ratios are only judged above this size: tiny files compress absurdly well legitimately.
const RATIO_FLOOR_BYTES: u64 = 1 << 20;

/// Checks the archive against the caps, refuses hostile entries and sniffs every other one.
/// Blocking: call from a blocking thread.
pub fn scan(path: &Path, limits: ArchiveLimits) -> Result<ScanResult, ArchiveError> {
    let file = File::open(path)?;
    let mut zip = ZipArchive::new(file).map_err(|e| ArchiveError::InvalidZip(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(ArchiveError::Limit {
            code: "too_many_entries",
            message: format!(
                "the archive has {} entries; at most {} are accepted",
                zip.len(),
                limits.max_entries
            ),
        });
    }
    // The zip crate indexes entries by name, so a second entry of the same name is invisible
    // through it; the central directory's own count tells that it is there.
    let listed = central_directory_count(path)?;
    if let Some(extra) = listed
        .and_then(|n| n.checked_sub(zip.len()))
        .filter(|&e| e > 0)
    {
        return Err(ArchiveError::DuplicateNames { extra });
    }
    let mut entries = Vec::new();
    let (mut skipped, mut total, mut declared) = (Vec::new(), 0usize, 0u64);
    for index in 0..zip.len() {
        let raw = zip
            .by_index_raw(index)
            .map_err(|e| ArchiveError::InvalidZip(e.to_string()))?;
        if raw.is_dir() {
            continue;
        }
        total += 1;
        // Names in any encoding: the zip crate decodes UTF-8 and CP437; anything else is kept lossily.
        let name = raw
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(raw.name_raw()).into_owned())
            // Postgres text cannot hold a NUL.
            .replace('\0', "\u{FFFD}");
        let (size, compressed) = (raw.size(), raw.compressed_size());
        declared = declared.saturating_add(size);
        if size > limits.max_entry_bytes {
            return Err(ArchiveError::Limit {
                code: "entry_too_large",
                message: format!(
                    "an entry inflates to {size} bytes; at most {} are accepted per entry",
                    limits.max_entry_bytes
                ),
            });
        }
        if declared > limits.max_total_uncompressed {
            return Err(ArchiveError::Limit {
                code: "archive_too_large",
                message: format!(
                    "the archive inflates to more than {} bytes",
                    limits.max_total_uncompressed
                ),
            });
        }
        if size > RATIO_FLOOR_BYTES && size / compressed.max(1) > limits.max_compression_ratio {
            return Err(ArchiveError::Limit {
                code: "zip_bomb",
                message: format!(
                    "an entry's compression ratio exceeds {}:1",
                    limits.max_compression_ratio
                ),
            });
        }
        let unsafe_path = raw.enclosed_name().is_none()
            || name.starts_with(['/', '\\'])
            || name.get(1..2) == Some(":");
        if !unsafe_path && is_clutter(&name) {
            skipped.push(Skipped {
                index,
                name,
                reason: SkipReason::SystemFile,
            });
            continue;
        }
        let rejection = if unsafe_path {
            Some(Rejection::new(
                "unsafe_path",
                "the entry's path is absolute or climbs out of the archive",
            ))
        } else if raw.is_symlink() {
            Some(Rejection::new(
                "symlink_entry",
                "the entry is a symbolic link",
            ))
        } else if raw.encrypted() {
            Some(Rejection::new("encrypted_entry", "the entry is encrypted"))
        } else {
            None
        };
        drop(raw);
        if let Some(rejection) = rejection {
            entries.push(Entry {
                index,
                name,
                size,
                rejection: Some(rejection),
            });
            continue;
        }
        let mut head = [0u8; imaging::SNIFF_BYTES];
        let read = zip
            .by_index(index)
            .map_err(|e| e.to_string())
            .and_then(|mut entry| read_up_to(&mut entry, &mut head).map_err(|e| e.to_string()));
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                entries.push(Entry {
                    index,
                    name,
                    size,
                    rejection: Some(Rejection::new(
                        "corrupt_entry",
                        format!("the entry cannot be read: {e}"),
                    )),
                });
                continue;
            }
        };
        let head = &head[..n];
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            entries.push(Entry {
                index,
                name,
                size,
                rejection: Some(Rejection::new(
                    "nested_archive",
                    "archives inside the archive are not opened",
                )),
            });
        } else if imaging::sniff_format(head).is_some() {
            entries.push(Entry {
                index,
                name,
                size,
                rejection: None,
            });
        } else if imaging::dicom::is_headless_dicom(&name, head) {
            entries.push(Entry {
                index,
                name,
                size,
                rejection: Some(Rejection::new(
                    "dicom_no_meta",
                    "a DICOM data set without its part-10 header (preamble, DICM, file meta); export it as a DICOM file",
                )),
            });
        } else {
            skipped.push(Skipped {
                index,
                name,
                reason: SkipReason::NotAnImage,
            });
        }
    }
    let candidates = entries.iter().filter(|e| e.rejection.is_none()).count();
    if candidates == 0 {
        return Err(ArchiveError::NoImages {
            skipped: skipped.len(),
            rejected: entries.len(),
        });
    }
    Ok(ScanResult {
        entries,
        skipped,
        total_entries: total,
    })
}

/// How entries are read: the caps they must meet, the fit of their copy for the workers, and
/// the decoding slots they share with every other ingestion.
#[derive(Clone, Copy)]
pub struct Reading<'a> {
    pub limits: ArchiveLimits,
    pub image_limits: imaging::ImageLimits,
    pub fit: Fit,
    pub decoders: &'a Decoders,
}

/// Inflates the candidate entries, decodes and validates each, and sends its pixel planes, full
/// and fitted to `fit` (never the entry's own bytes), over `tx`. A corrupt, oversized or invalid
/// entry is a rejection of that entry, not a failure of the archive.
///
/// Decoding and encoding planes is most of an ingestion's work, so one reader per core takes
/// the entries in turn, each through its own handle on the archive; entries therefore arrive
/// out of archive order (each carries its index). A reader decodes only in one of the
/// process's [`Decoders`] slots, so memory holds at most that many decoded images, whatever the
/// number of uploads or cores, plus the encoded planes `tx` buffers.
pub fn read_entries(
    path: &Path,
    entries: &[Entry],
    reading: Reading<'_>,
    tx: &mpsc::Sender<(Entry, EntryRead)>,
) -> anyhow::Result<()> {
    let candidates: Vec<&Entry> = entries.iter().filter(|e| e.rejection.is_none()).collect();
    let next = AtomicUsize::new(0);
    let readers = thread::available_parallelism()
        .map_or(1, NonZero::get)
        .min(reading.decoders.slots)
        .min(candidates.len())
        .max(1);
    // The directory is parsed once; each reader reads through a clone at its own position.
    let archive = ZipArchive::new(PositionedFile::open(path)?)?;
    let read_some = || -> anyhow::Result<()> {
        let mut zip = archive.clone();
        while let Some(&entry) = candidates.get(next.fetch_add(1, Ordering::Relaxed)) {
            let read = {
                let _slot = reading.decoders.enter();
                read_entry(&mut zip, entry, reading)
            };
            if tx.blocking_send((entry.clone(), read)).is_err() {
                anyhow::bail!("ingestion stopped");
            }
        }
        Ok(())
    };
    thread::scope(|scope| {
        let readers: Vec<_> = (0..readers).map(|_| scope.spawn(read_some)).collect();
        readers.into_iter().try_for_each(|r| {
            r.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}

/// A file read at a position of its own: clones share the file, not a cursor, so readers of
/// one archive each seek on their own while sharing its parsed directory.
#[derive(Clone)]
struct PositionedFile {
    file: Arc<File>,
    len: u64,
    at: u64,
}

impl PositionedFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            len,
            at: 0,
        })
    }
}

impl Read for PositionedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for PositionedFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(by) => self.len.checked_add_signed(by),
            SeekFrom::Current(by) => self.at.checked_add_signed(by),
        };
        self.at = at.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.at)
    }
}

/// Slots for decoding archive entries, shared by every ingestion of a process: a blocking
/// thread takes one for as long as it holds an entry's decoded pixels.
#[derive(Debug)]
pub struct Decoders {
    slots: usize,
    free: Mutex<usize>,
    freed: Condvar,
}

impl Decoders {
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slots,
            free: Mutex::new(slots),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot; it is given back when the guard is dropped.
    fn enter(&self) -> DecoderSlot<'_> {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let mut free = self
            .freed
            .wait_while(free, |free| *free == 0)
            .unwrap_or_else(PoisonError::into_inner);
        *free -= 1;
        DecoderSlot(self)
    }
}

struct DecoderSlot<'a>(&'a Decoders);

impl Drop for DecoderSlot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

/// One entry's planes, or why it is refused.
fn read_entry(
    zip: &mut ZipArchive<PositionedFile>,
    entry: &Entry,
    reading: Reading<'_>,
) -> EntryRead {
    let Reading {
        limits,
        image_limits,
        fit,
        ..
    } = reading;
    let file = zip
        .by_index(entry.index)
        .map_err(|e| Rejection::new("corrupt_entry", e.to_string()))?;
    let mut bytes = Vec::with_capacity(entry.size.min(limits.max_entry_bytes) as usize);
    file.take(limits.max_entry_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Rejection::new("corrupt_entry", e.to_string()))?;
    if bytes.len() as u64 > limits.max_entry_bytes {
        return Err(Rejection::new(
            "entry_too_large",
            format!("inflates to more than {} bytes", limits.max_entry_bytes),
        ));
    }
    // Validate now, so a bad image is reported at upload, not discovered by a worker.
    let decoded = imaging::decode_with(&bytes, &image_limits)
        .map_err(|e| Rejection::new(e.code(), e.to_string()))?;
    drop(bytes);
    let full = imaging::plane::encode(&decoded.image).map_err(|e| {
        Rejection::new("corrupt_image", format!("the pixels cannot be stored: {e}"))
    })?;
    let fitted = fitted::encode(&fitted::fit(&decoded.image, fit));
    Ok(Planes {
        full: full.into(),
        fitted: fitted.into(),
        warnings: decoded.warnings,
    })
}

/// Finder and OS clutter that is never a radiograph.
fn is_clutter(name: &str) -> bool {
    name.split('/')
        .any(|part| part == "__MACOSX" || (part.starts_with('.') && part != "." && part != ".."))
}

/// The entry count the archive's end-of-central-directory record states (`None` for ZIP64,
/// where the crate's own count is authoritative).
fn central_directory_count(path: &Path) -> std::io::Result<Option<usize>> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    // The record is 22 bytes plus a comment of at most 65 535.
    let tail_len = len.min(22 + 65_535);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail)?;
    let Some(at) = tail.windows(4).rposition(|w| w == b"PK\x05\x06") else {
        return Ok(None);
    };
    let count = tail
        .get(at + 10..at + 12)
        .map(|b| u16::from_le_bytes([b[0], b[1]]));
    Ok(count.filter(|&n| n != u16::MAX).map(usize::from))
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
        assert!(
            !is_clutter("../../patient.png"),
            "a climbing path is unsafe, not clutter"
        );
    }

    #[test]
    fn decoding_never_holds_more_images_than_the_process_has_slots() {
        let decoders = Decoders::new(3);
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let _slot = decoders.enter();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        thread::sleep(std::time::Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        let most = most.into_inner();
        assert!((1..=3).contains(&most), "{most} decoded at once");
        assert_eq!(
            *decoders.free.lock().unwrap(),
            3,
            "every slot was given back"
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary and mutated archives end in a clear error or a scan, never a panic.
    //! `make test` runs a bounded number of cases; `make fuzz` many more (PROPTEST_CASES).
    use proptest::prelude::*;

    use super::*;

    const LIMITS: ArchiveLimits = ArchiveLimits {
        max_entries: 1000,
        max_total_uncompressed: 64 << 20,
        max_entry_bytes: 16 << 20,
        max_compression_ratio: 200,
    };

    fn sample_zip() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let deflated = zip::write::SimpleFileOptions::default();
        let stored = deflated.compression_method(zip::CompressionMethod::Stored);
        let png = include_bytes!("../../../shared/tests/fixtures/cr_64.png");
        zip.start_file("a.png", deflated).unwrap();
        std::io::Write::write_all(&mut zip, png).unwrap();
        zip.start_file("dir/b.dcm", stored).unwrap();
        std::io::Write::write_all(
            &mut zip,
            include_bytes!("../../../shared/tests/fixtures/cr_64.dcm"),
        )
        .unwrap();
        zip.start_file("notes.txt", deflated).unwrap();
        std::io::Write::write_all(&mut zip, b"hello").unwrap();
        zip.finish().unwrap();
        out.into_inner()
    }

    fn scan_bytes(bytes: &[u8]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        if let Ok(scan) = scan(file.path(), LIMITS) {
            let (tx, mut rx) = mpsc::channel(64);
            let reader = std::thread::spawn({
                let path = file.path().to_owned();
                let entries = scan.entries.clone();
                move || {
                    read_entries(
                        &path,
                        &entries,
                        Reading {
                            limits: LIMITS,
                            image_limits: imaging::ImageLimits::default(),
                            fit: Fit {
                                width: 64,
                                height: 64,
                                resize: xcam_shared::bundle::ResizePolicy::Letterbox,
                            },
                            decoders: &Decoders::new(2),
                        },
                        &tx,
                    )
                }
            });
            while rx.blocking_recv().is_some() {}
            let _ = reader.join().expect("reading entries does not panic");
        }
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mutated_archives_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..24), cut in any::<prop::sample::Index>()) {
            let mut bytes = sample_zip();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let keep = cut.index(bytes.len()).max(bytes.len() * 3 / 4);
            bytes.truncate(keep);
            scan_bytes(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            scan_bytes(&bytes);
        }
    }
}
