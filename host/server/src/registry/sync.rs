//! Repository sync: bring the serving table in line with the version directories on disk
//! (the watcher calls this), remembering refused versions until their files change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{ChangeError, ModelRegistry};
use crate::{Error, Result};

/// A refused version and the files it was refused for; it is retried when they change.
#[derive(Clone)]
pub(super) struct RefusedVersion {
    pub(super) reason: String,
    pub(super) fingerprint: Fingerprint,
}

/// Names, sizes and modification times of a version directory's files.
pub(super) type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl ModelRegistry {
    /// Brings the serving table in line with the repository on disk: loads versions that
    /// appeared (complete: manifest and component present), retries refused versions whose
    /// files changed, loads new models, and unloads versions whose directory is gone (unless
    /// they take traffic). Called by the repository watcher. A repository directory that is
    /// missing (removed, not yet recreated) changes nothing.
    pub fn sync_with_disk(&self) -> Result<()> {
        let result = self.rescan();
        self.rescans[usize::from(result.is_err())].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// The rescans done so far.
    pub fn rescans(&self) -> super::RescanCounts {
        let [completed, failed] = &self.rescans;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        super::RescanCounts { completed: load(completed), failed: load(failed) }
    }

    fn rescan(&self) -> Result<()> {
        if !self.repo.root().is_dir() {
            return Err(Error::NotFound(format!(
                "the repository {} is gone; serving what is loaded until it comes back",
                self.repo.root().display()
            )));
        }
        let on_disk = self.repo.versions()?;
        let table = self.table.load_full();
        let mut new_models = BTreeSet::new();
        for version in &on_disk {
            let Some(state) = table.get(&version.model) else {
                new_models.insert(version.model.clone());
                continue;
            };
            if state.versions.contains_key(&version.version) || !looks_complete(&version.dir) {
                continue;
            }
            let refused_same =
                state.refused.get(&version.version).is_some_and(|r| r.fingerprint == fingerprint(&version.dir));
            if refused_same {
                continue;
            }
            match self.load_version(&version.model, version.version, "appeared in the watched repository") {
                Ok(()) | Err(ChangeError::Failed(Error::Refused { .. })) => {}
                Err(error) => tracing::warn!(model = %version.model, version = version.version, %error, "not loaded"),
            }
        }
        for name in new_models {
            let complete = on_disk.iter().any(|v| v.model == name && looks_complete(&v.dir));
            if complete && let Err(error) = self.load_model(&name) {
                tracing::warn!(model = %name, %error, "new model not loaded");
            }
        }
        for (name, state) in table.iter() {
            for version in state.versions.keys() {
                if on_disk.iter().any(|v| &v.model == name && v.version == *version) {
                    continue;
                }
                match self.unload_version(name, *version, "its directory left the watched repository") {
                    Ok(()) => {}
                    Err(error) => tracing::warn!(model = %name, version, %error, "directory removed but kept serving"),
                }
            }
        }
        Ok(())
    }
}

/// A version directory is complete once its manifest and the component it names are there.
fn looks_complete(dir: &Path) -> bool {
    let manifest = dir.join("manifest.toml");
    match edgeinfer_runtime::manifest::Manifest::load(&manifest) {
        Ok(m) => dir.join(&m.component.file).is_file(),
        Err(_) => manifest.is_file(),
    }
}

/// The current fingerprint of a version directory.
pub(super) fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files: Fingerprint = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((entry.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}
