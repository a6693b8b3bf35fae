//! The model repository on disk: `<root>/<model>/<version>/{model.wasm, manifest.toml}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::LoadedModel;
use crate::runtime::Runtime;
use crate::{Error, Result};

/// One version directory found in the repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionRef {
    /// Model name (the directory name).
    pub model: String,
    /// Version number (the directory name).
    pub version: u64,
    /// The version directory.
    pub dir: PathBuf,
}

/// A model repository rooted at a directory.
#[derive(Debug, Clone)]
pub struct ModelRepository {
    root: PathBuf,
}

impl ModelRepository {
    /// A repository at `root`, which must be a directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::NotFound(format!("model repository {} is not a directory", root.display())));
        }
        Ok(ModelRepository { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every `<model>/<version>` directory, sorted; hidden and non-numeric entries are skipped.
    pub fn versions(&self) -> Result<Vec<VersionRef>> {
        let mut found = Vec::new();
        for model in read_dirs(&self.root)? {
            let Some(name) = visible_name(&model) else {
                continue;
            };
            for version_dir in read_dirs(&model)? {
                let Some(version) = visible_name(&version_dir).and_then(|v| v.parse::<u64>().ok()) else {
                    continue;
                };
                found.push(VersionRef { model: name.clone(), version, dir: version_dir });
            }
        }
        found.sort();
        Ok(found)
    }

    /// The versions of one model, sorted ascending.
    pub fn model_versions(&self, model: &str) -> Result<Vec<VersionRef>> {
        Ok(self.versions()?.into_iter().filter(|v| v.model == model).collect())
    }

    /// Loads one version, or the model's highest version when `version` is `None`.
    pub fn load(&self, runtime: &Arc<Runtime>, model: &str, version: Option<u64>) -> Result<LoadedModel> {
        LoadedModel::load(runtime, &self.find(model, version)?.dir)
    }

    /// One version, or the model's highest version when `version` is `None`; `NotFound`
    /// names the model (and version) otherwise.
    pub fn find(&self, model: &str, version: Option<u64>) -> Result<VersionRef> {
        let mut versions = self.model_versions(model)?;
        let chosen = match version {
            Some(v) => versions.iter().position(|r| r.version == v),
            None => versions.len().checked_sub(1),
        };
        chosen.map(|index| versions.swap_remove(index)).ok_or_else(|| match version {
            Some(v) => Error::NotFound(format!("model '{model}' has no version {v}")),
            None => Error::NotFound(edgeinfer_oip::unknown_model_message(model)),
        })
    }

    /// Loads every version once, reporting each one's outcome.
    pub fn verify_all(
        &self,
        runtime: &Arc<Runtime>,
        signatures: &crate::signature::SignaturePolicy,
    ) -> Result<Vec<(VersionRef, Result<()>)>> {
        Ok(self
            .versions()?
            .into_iter()
            .map(|version| {
                let outcome =
                    signatures.check(&version.dir).and_then(|_| LoadedModel::load(runtime, &version.dir).map(|_| ()));
                (version, outcome)
            })
            .collect())
    }
}

/// The directory, inside a repository, where the server keeps its own state (history,
/// tokens, audit log); it is never a model.
pub const STATE_DIR: &str = ".edgeinfer";

/// `<repo>/.edgeinfer`.
pub fn state_dir(repo: &Path) -> PathBuf {
    repo.join(STATE_DIR)
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    Ok(entries.filter_map(|entry| entry.ok()).map(|entry| entry.path()).filter(|path| path.is_dir()).collect())
}

fn visible_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (!name.starts_with('.')).then(|| name.to_string())
}
