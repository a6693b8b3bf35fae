//! Watches the model repository: a version directory that appears (complete) is loaded, one
//! whose files change after a refusal is retried, one that disappears is unloaded.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};

use super::registry::ModelRegistry;
use crate::{Error, Result};

/// Events closer together than this are handled as one change.
const SETTLE: Duration = Duration::from_millis(200);
/// A full rescan also runs this often, for file systems that miss events.
const RESCAN: Duration = Duration::from_secs(30);

/// A running watcher; dropping it stops watching.
pub struct RepositoryWatcher {
    _watcher: RecommendedWatcher,
}

/// Starts watching `registry`'s repository.
pub fn watch(registry: Arc<ModelRegistry>) -> Result<RepositoryWatcher> {
    let root = registry.repository().root().to_path_buf();
    let (changed, changes) = channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        Ok(event) if event.paths.iter().all(|p| is_bookkeeping(p)) => {}
        Ok(_) => {
            let _ = changed.send(());
        }
        Err(error) => tracing::warn!(%error, "repository watch error"),
    })
    .map_err(|e| Error::Runtime(format!("cannot watch {}: {e}", root.display())))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| Error::Runtime(format!("cannot watch {}: {e}", root.display())))?;
    std::thread::Builder::new()
        .name("edgeinfer-watch".into())
        .spawn(move || {
            loop {
                match changes.recv_timeout(RESCAN) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                // Let a burst of events (a copy in progress) settle before looking.
                while let Ok(()) = changes.recv_timeout(SETTLE) {}
                if let Err(error) = registry.sync_with_disk() {
                    tracing::warn!(%error, "repository rescan failed");
                }
            }
        })
        .map_err(|e| Error::io("starting the repository watcher", e))?;
    tracing::info!(repo = %root.display(), "watching the model repository");
    Ok(RepositoryWatcher { _watcher: watcher })
}

/// Files the server itself writes (the history log) are not repository changes.
fn is_bookkeeping(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == ".edgeinfer")
}
