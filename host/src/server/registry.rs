//! What the server has loaded: per model, its verified versions, the ones refused and why.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use super::config::ModelConfig;
use super::stats::VersionStats;
use crate::model::LoadedModel;
use crate::repository::ModelRepository;
use crate::runtime::Runtime;
use crate::{Error, LimitOverrides, Result};

/// A version the server can run, with its statistics.
pub struct ServedVersion {
    /// The loaded model.
    pub model: LoadedModel,
    /// Its counters.
    pub stats: VersionStats,
    /// The model's limits from its `config.toml`.
    pub limits: LimitOverrides,
}

/// One model's versions.
#[derive(Default)]
struct ModelEntry {
    loaded: BTreeMap<u64, Arc<ServedVersion>>,
    refused: BTreeMap<u64, String>,
    default_version: Option<u64>,
}

/// The models being served, loaded from one repository.
pub struct ModelRegistry {
    runtime: Arc<Runtime>,
    repo: ModelRepository,
    models: RwLock<BTreeMap<String, ModelEntry>>,
}

impl ModelRegistry {
    /// A registry over `repo`; nothing is loaded yet.
    pub fn new(runtime: Arc<Runtime>, repo: ModelRepository) -> Self {
        ModelRegistry { runtime, repo, models: RwLock::new(BTreeMap::new()) }
    }

    /// Loads every model of the repository; returns the refused versions with their reasons.
    pub fn load_all(&self) -> Result<Vec<(String, u64, String)>> {
        let mut names: Vec<String> = self.repo.versions()?.into_iter().map(|v| v.model).collect();
        names.dedup();
        let mut refused = Vec::new();
        for name in names {
            // A model whose every version is refused is still recorded, with its reasons.
            let _ = self.load_model(&name);
            let models = self.models.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = models.get(&name) {
                refused.extend(entry.refused.iter().map(|(v, why)| (name.clone(), *v, why.clone())));
            }
        }
        Ok(refused)
    }

    /// (Re)loads every version of `name` from the repository; the old versions keep serving
    /// until the new set is swapped in. Fails when no version could be loaded.
    pub fn load_model(&self, name: &str) -> Result<()> {
        let versions = self.repo.model_versions(name)?;
        if versions.is_empty() {
            return Err(Error::NotFound(format!("model '{name}' is not in the repository")));
        }
        let mut entry = ModelEntry::default();
        let config = ModelConfig::load(&self.repo.root().join(name));
        let config = match config {
            Ok(config) => config,
            Err(error) => {
                for version in &versions {
                    entry.refused.insert(version.version, error.to_string());
                }
                self.write().insert(name.to_string(), entry);
                return Err(error);
            }
        };
        entry.default_version = config.default_version;
        for version in versions {
            match LoadedModel::load(&self.runtime, &version.dir) {
                Ok(model) if model.manifest().name == name && model.manifest().version == version.version => {
                    let served = ServedVersion { model, stats: VersionStats::default(), limits: config.limits };
                    entry.loaded.insert(version.version, Arc::new(served));
                }
                Ok(model) => {
                    let why = format!(
                        "manifest says {} version {}, but it sits in {name}/{}",
                        model.manifest().name,
                        model.manifest().version,
                        version.version
                    );
                    tracing::warn!(model = name, version = version.version, reason = %why, "version refused");
                    entry.refused.insert(version.version, why);
                }
                Err(error) => {
                    tracing::warn!(model = name, version = version.version, reason = %error, "version refused");
                    entry.refused.insert(version.version, error.to_string());
                }
            }
        }
        let loaded_any = !entry.loaded.is_empty();
        let reasons: Vec<String> = entry.refused.iter().map(|(v, why)| format!("version {v}: {why}")).collect();
        self.write().insert(name.to_string(), entry);
        if loaded_any {
            Ok(())
        } else {
            Err(Error::Manifest { path: self.repo.root().join(name), message: reasons.join("; ") })
        }
    }

    /// Stops serving `name`; in-flight requests finish on the versions they hold.
    pub fn unload_model(&self, name: &str) -> Result<()> {
        match self.write().remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!("unknown model '{name}'"))),
        }
    }

    /// The version a request for `name` (and optionally `version`) runs on.
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedVersion>> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        let entry = models.get(name).ok_or_else(|| Error::NotFound(format!("unknown model '{name}'")))?;
        let chosen = match version.or(entry.default_version) {
            Some(v) => entry.loaded.get(&v),
            None => entry.loaded.values().next_back(),
        };
        chosen.cloned().ok_or_else(|| match version {
            Some(v) => Error::NotFound(format!("model '{name}' has no version {v} loaded")),
            None => Error::NotFound(format!("model '{name}' has no version loaded")),
        })
    }

    /// The loaded versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models.get(name).map(|e| e.loaded.keys().copied().collect()).unwrap_or_default()
    }

    /// Every loaded version as `(model, version, served)`.
    pub fn all_loaded(&self) -> Vec<(String, u64, Arc<ServedVersion>)> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models
            .iter()
            .flat_map(|(name, entry)| entry.loaded.iter().map(move |(v, s)| (name.clone(), *v, s.clone())))
            .collect()
    }

    /// The repository index: every version on disk with its state and, if refused, why.
    pub fn index(&self, ready_only: bool) -> Result<Value> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        let mut rows = Vec::new();
        for version in self.repo.versions()? {
            let entry = models.get(&version.model);
            let loaded = entry.is_some_and(|e| e.loaded.contains_key(&version.version));
            let reason = entry.and_then(|e| e.refused.get(&version.version)).cloned();
            if ready_only && !loaded {
                continue;
            }
            let state = if loaded { "READY" } else { "UNAVAILABLE" };
            let mut row = json!({"name": version.model, "version": version.version.to_string(), "state": state});
            let reason = reason.or_else(|| (!loaded).then(|| "not loaded".to_string()));
            if let Some(reason) = reason {
                row["reason"] = Value::from(reason);
            }
            rows.push(row);
        }
        Ok(Value::Array(rows))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ModelEntry>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }
}
