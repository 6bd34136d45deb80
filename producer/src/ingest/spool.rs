//! Where uploads wait while they are checked and ingested: a directory of this process's own
//! under `XCAM_UPLOAD_DIR`, holding an exclusive lock on its `.lock` file while the process
//! lives. A spool file goes when its ingestion ends, whatever the outcome; a producer that was
//! killed leaves its directory behind unlocked, and the next producer to start on the host
//! removes it. Producers sharing the directory never touch each other's live spools: a spool
//! appears under its name already locked.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

const PREFIX: &str = "xcam-spool-";
const LOCK: &str = ".lock";
/// A spool being made; it holds no upload yet.
const MAKING: &str = ".xcam-spool-making-";

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Held, never read: the lock lives as long as this handle.
    _lock: File,
}

impl Spool {
    /// Removes the spools of dead producers under `parent`, then makes this process's own.
    pub fn open(parent: &Path) -> io::Result<Self> {
        fs::create_dir_all(parent)?;
        let removed = remove_abandoned(parent)?;
        if removed > 0 {
            tracing::warn!(spools = removed, dir = %parent.display(), "removed uploads left by producers that stopped mid-ingestion");
        }
        // The spool is made and locked under a name no producer sweeps, then renamed into place:
        // another producer starting at the same moment must never see it unlocked.
        let id = uuid::Uuid::now_v7();
        let making = parent.join(format!("{MAKING}{id}"));
        fs::create_dir(&making)?;
        let lock = File::create(making.join(LOCK))?;
        lock.try_lock().map_err(io::Error::other)?;
        let dir = parent.join(format!("{PREFIX}{id}"));
        fs::rename(&making, &dir)?;
        Ok(Self { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the upload spool");
        }
    }
}

/// Removes every spool under `parent` whose lock nobody holds; returns how many.
fn remove_abandoned(parent: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(parent)? {
        let entry = entry?;
        let is_spool =
            entry.file_name().to_string_lossy().starts_with(PREFIX) && entry.file_type()?.is_dir();
        if !is_spool {
            continue;
        }
        let dir = entry.path();
        let abandoned = match File::open(dir.join(LOCK)) {
            // Locking it means its producer is gone; the lock is dropped with the file.
            Ok(lock) => lock.try_lock().is_ok(),
            // A spool is renamed into place already locked, so a missing lock means it is
            // being removed, by its producer or by another one starting now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if abandoned {
            match fs::remove_dir_all(&dir) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_producers_spool_goes_and_a_live_one_stays() {
        let parent = tempfile::tempdir().unwrap();
        let live = Spool::open(parent.path()).unwrap();
        fs::write(live.dir().join("upload.zip"), b"live").unwrap();
        let dead = parent.path().join(format!("{PREFIX}dead"));
        fs::create_dir(&dead).unwrap();
        File::create(dead.join(LOCK)).unwrap();
        fs::write(dead.join("upload.zip"), b"PATIENT^NAME").unwrap();
        let unrelated = parent.path().join("someone-elses-file");
        fs::write(&unrelated, b"keep").unwrap();

        let second = Spool::open(parent.path()).unwrap();
        assert!(!dead.exists(), "the abandoned spool is removed");
        assert!(
            live.dir().join("upload.zip").exists(),
            "a live spool is kept"
        );
        assert!(unrelated.exists(), "only spools are touched");

        let (live_dir, second_dir) = (live.dir().to_owned(), second.dir().to_owned());
        drop(live);
        drop(second);
        assert!(
            !live_dir.exists() && !second_dir.exists(),
            "a spool goes with its producer"
        );
    }

    #[test]
    fn producers_starting_together_never_remove_each_others_spools() {
        let parent = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let spools: Vec<Spool> = std::thread::scope(|s| {
                let starts: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| Spool::open(parent.path())))
                    .collect();
                starts
                    .into_iter()
                    .map(|t| t.join().unwrap().expect("every producer gets its spool"))
                    .collect()
            });
            for spool in &spools {
                assert!(spool.dir().join(LOCK).exists(), "no live spool was removed");
            }
        }
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
