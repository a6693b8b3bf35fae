//! Noticing that files changed (modification time and size), looked at no more often than a
//! given interval: how the tokens file and the TLS certificates are reloaded without a
//! restart or a watcher thread.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Modification time and size of a file, if it exists.
type Stamp = Option<(SystemTime, u64)>;

/// A set of files and what they looked like last time.
pub struct FileStamps {
    paths: Vec<PathBuf>,
    every: Duration,
    seen: Mutex<(Instant, Vec<Stamp>)>,
    applied: AtomicU64,
    refused: AtomicU64,
}

/// How often changed files were taken in, or refused (and the last good ones kept), since
/// start: what `GET /v2/admin/server` reports under `reloads`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadCounts {
    /// Changes taken in.
    pub applied: u64,
    /// Changes that did not load.
    pub refused: u64,
}

impl FileStamps {
    /// Follows `paths`, looking at most once per `every`.
    pub fn new(paths: Vec<PathBuf>, every: Duration) -> FileStamps {
        let stamps = stamps(&paths);
        let seen = Mutex::new((Instant::now(), stamps));
        FileStamps { paths, every, seen, applied: AtomicU64::new(0), refused: AtomicU64::new(0) }
    }

    /// True once after any of the files changed (appeared, vanished, rewritten).
    pub fn changed(&self) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0.elapsed() < self.every {
            return false;
        }
        seen.0 = Instant::now();
        let now = stamps(&self.paths);
        if now == seen.1 {
            return false;
        }
        seen.1 = now;
        true
    }

    /// Counts how a change [`FileStamps::changed`] reported was handled.
    pub fn record(&self, applied: bool) {
        let counter = if applied { &self.applied } else { &self.refused };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The changes taken in and refused so far.
    pub fn counts(&self) -> ReloadCounts {
        ReloadCounts { applied: self.applied.load(Ordering::Relaxed), refused: self.refused.load(Ordering::Relaxed) }
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths.iter().map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}
