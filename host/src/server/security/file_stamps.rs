//! Noticing that files changed (modification time and size), looked at no more often than a
//! given interval: how the tokens file and the TLS certificates are reloaded without a
//! restart or a watcher thread.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Modification time and size of a file, if it exists.
type Stamp = Option<(SystemTime, u64)>;

/// A set of files and what they looked like last time.
pub struct FileStamps {
    paths: Vec<PathBuf>,
    every: Duration,
    seen: Mutex<(Instant, Vec<Stamp>)>,
}

impl FileStamps {
    /// Follows `paths`, looking at most once per `every`.
    pub fn new(paths: Vec<PathBuf>, every: Duration) -> FileStamps {
        let stamps = stamps(&paths);
        FileStamps { paths, every, seen: Mutex::new((Instant::now(), stamps)) }
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
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths.iter().map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}
