//! Watches the model repository: a version directory that appears (complete) is loaded, one
//! whose files change after a refusal is retried, one that disappears is unloaded. A
//! repository directory removed and recreated is watched again once it is back.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::time::Duration;

use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};

use super::registry::ModelRegistry;
use crate::{Error, Result};

/// Events closer together than this are handled as one change.
const SETTLE: Duration = Duration::from_millis(200);
/// A full rescan also runs this often, for file systems that miss events.
const RESCAN: Duration = Duration::from_secs(30);
/// While the repository directory is missing, it is looked for this often.
const MISSING_POLL: Duration = Duration::from_millis(500);

/// What the watch thread hears.
enum Signal {
    Changed,
    Stop,
}

/// A running watcher; dropping it stops watching.
pub struct RepositoryWatcher {
    signals: Sender<Signal>,
}

impl Drop for RepositoryWatcher {
    fn drop(&mut self) {
        let _ = self.signals.send(Signal::Stop);
    }
}

/// Starts watching `registry`'s repository.
pub fn watch(registry: Arc<ModelRegistry>) -> Result<RepositoryWatcher> {
    let root = registry.repository().root().to_path_buf();
    let (signals, received) = channel::<Signal>();
    let changed = signals.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        Ok(event) if event.paths.iter().all(|p| is_bookkeeping(p)) => {}
        // A rescan reads the repository: its own reads must not schedule the next rescan
        // (measured: ~5 rescans a second on an idle server, counted by `repository_rescans`).
        Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
        Ok(_) => {
            let _ = changed.send(Signal::Changed);
        }
        Err(error) => tracing::warn!(%error, "repository watch error"),
    })
    .map_err(|e| Error::Runtime(format!("cannot watch {}: {e}", root.display())))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| Error::Runtime(format!("cannot watch {}: {e}", root.display())))?;
    tracing::info!(repo = %root.display(), "watching the model repository");
    std::thread::Builder::new()
        .name("edgeinfer-watch".into())
        .spawn(move || {
            let mut watching = true;
            loop {
                let wait = if watching { RESCAN } else { MISSING_POLL };
                match received.recv_timeout(wait) {
                    Ok(Signal::Changed) | Err(RecvTimeoutError::Timeout) => {}
                    Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                }
                // Let a burst of events (a copy in progress) settle before looking.
                loop {
                    match received.recv_timeout(SETTLE) {
                        Ok(Signal::Changed) => {}
                        Ok(Signal::Stop) => return,
                        Err(_) => break,
                    }
                }
                watching = rewatch(&mut watcher, &root, watching);
                if let Err(error) = registry.sync_with_disk() {
                    tracing::warn!(%error, "repository rescan failed");
                }
            }
        })
        .map_err(|e| Error::io("starting the repository watcher", e))?;
    Ok(RepositoryWatcher { signals })
}

/// Keeps the watch on `root` across its removal and recreation; returns whether it is
/// watched now.
fn rewatch(watcher: &mut RecommendedWatcher, root: &Path, watching: bool) -> bool {
    match (watching, root.is_dir()) {
        (true, true) => true,
        (true, false) => {
            tracing::warn!(repo = %root.display(), "the repository directory is gone; serving what is loaded");
            let _ = watcher.unwatch(root);
            false
        }
        (false, false) => false,
        (false, true) => match watcher.watch(root, RecursiveMode::Recursive) {
            Ok(()) => {
                tracing::info!(repo = %root.display(), "the repository directory is back; watching it again");
                true
            }
            Err(error) => {
                tracing::warn!(repo = %root.display(), %error, "cannot watch the recreated repository yet");
                false
            }
        },
    }
}

/// Files the server itself writes (the history log) are not repository changes.
fn is_bookkeeping(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == edgeinfer_runtime::repository::STATE_DIR)
}
