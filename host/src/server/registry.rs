//! What the server serves: per model, its loaded versions, the ones refused and why, and its
//! deployment (traffic split and shadow).
//!
//! The serving table is immutable and swapped atomically ([`ArcSwap`]): a request takes a
//! snapshot, picks a version and holds it (an `Arc`) until it is answered, so a version
//! replaced or unloaded meanwhile is dropped only once its in-flight requests have drained.
//! Changes are serialized, written to the history log first, then published.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde_json::{Value, json};

use super::config::{ModelConfig, NewVersionPolicy};
use super::deployment::{Deployment, TrafficChange};
use super::history::{Change, ChangeKind, DeploymentTrail, HistoryEvent, HistoryLog};
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

impl ServedVersion {
    /// The version number.
    pub fn version(&self) -> u64 {
        self.model.manifest().version
    }
}

impl Drop for ServedVersion {
    fn drop(&mut self) {
        let manifest = self.model.manifest();
        tracing::info!(model = %manifest.name, version = manifest.version, "version released: no request holds it any more");
    }
}

/// Where one request goes: the version that answers and, maybe, a shadow that gets a copy.
pub struct Route {
    /// The version that answers.
    pub live: Arc<ServedVersion>,
    /// The version that receives a copy and never answers.
    pub shadow: Option<Arc<ServedVersion>>,
}

/// Why a change to a model's versions or traffic was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The request itself is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with the current state, e.g. unloading a live version (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// Loading, logging or lookup failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

/// A refused version and the files it was refused for; it is retried when they change.
#[derive(Clone)]
struct Refusal {
    reason: String,
    fingerprint: Fingerprint,
}

/// Names, sizes and modification times of a version directory's files.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// One model's state in a serving table.
#[derive(Clone, Default)]
struct ModelState {
    versions: BTreeMap<u64, Arc<ServedVersion>>,
    refused: BTreeMap<u64, Refusal>,
    deployment: Option<Deployment>,
    previous: Vec<Deployment>,
    config: ModelConfig,
}

impl ModelState {
    fn loaded(&self) -> BTreeSet<u64> {
        self.versions.keys().copied().collect()
    }

    /// The deployment when none is set: the configured default version, else the highest.
    fn default_deployment(&self) -> Option<Deployment> {
        let version = self.config.default_version.filter(|v| self.versions.contains_key(v));
        version.or_else(|| self.versions.keys().next_back().copied()).map(Deployment::single)
    }
}

type Table = BTreeMap<String, Arc<ModelState>>;

/// Shadow agreement between a live and a shadow version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Agreement {
    /// Requests answered by both.
    pub compared: u64,
    /// Of those, the ones whose outputs agreed.
    pub agreed: u64,
    /// Requests the live version answered and the shadow failed.
    pub shadow_failed: u64,
}

/// The models being served, loaded from one repository.
pub struct ModelRegistry {
    runtime: Arc<Runtime>,
    repo: ModelRepository,
    table: ArcSwap<Table>,
    changes: Mutex<()>,
    history: Option<HistoryLog>,
    agreement: Mutex<BTreeMap<(String, u64, u64), Agreement>>,
}

impl ModelRegistry {
    /// A registry over `repo` without a history log; nothing is loaded yet.
    pub fn new(runtime: Arc<Runtime>, repo: ModelRepository) -> Self {
        ModelRegistry {
            runtime,
            repo,
            table: ArcSwap::from_pointee(Table::new()),
            changes: Mutex::new(()),
            history: None,
            agreement: Mutex::new(BTreeMap::new()),
        }
    }

    /// A registry that records every change in `history` and restores deployments from it.
    pub fn with_history(runtime: Arc<Runtime>, repo: ModelRepository, history: &Path) -> Result<Self> {
        let log = HistoryLog::open(history)?;
        Ok(ModelRegistry { history: Some(log), ..Self::new(runtime, repo) })
    }

    /// The default history log of a repository: `<repo>/.edgeinfer/history.jsonl`.
    pub fn default_history_path(repo: &Path) -> PathBuf {
        repo.join(".edgeinfer").join("history.jsonl")
    }

    /// The repository served.
    pub fn repository(&self) -> &ModelRepository {
        &self.repo
    }

    /// Loads every model of the repository and restores each one's last recorded deployment;
    /// returns the refused versions with their reasons.
    pub fn load_all(&self) -> Result<Vec<(String, u64, String)>> {
        let mut names: Vec<String> = self.repo.versions()?.into_iter().map(|v| v.model).collect();
        names.dedup();
        let mut refused = Vec::new();
        for name in names {
            match self.load_model(&name) {
                Ok(reasons) | Err(ChangeError::Failed(Error::Refused { reasons, .. })) => {
                    refused.extend(reasons.into_iter().map(|(v, why)| (name.clone(), v, why)));
                }
                Err(error) => tracing::warn!(model = %name, %error, "model not loaded"),
            }
        }
        Ok(refused)
    }

    /// (Re)loads every version of `name` from the repository; the old versions keep serving
    /// until the new set is swapped in. The deployment is kept if it still fits, else the
    /// last one recorded in the history, else all traffic on the default version.
    /// Returns the refused versions; fails when none could be loaded.
    pub fn load_model(&self, name: &str) -> Result<Vec<(u64, String)>, ChangeError> {
        let _guard = self.lock();
        let versions = self.repo.model_versions(name)?;
        if versions.is_empty() {
            return Err(Error::NotFound(format!("model '{name}' is not in the repository")).into());
        }
        let mut state = ModelState::default();
        let config = ModelConfig::load(&self.repo.root().join(name));
        let config = match config {
            Ok(config) => config,
            Err(error) => {
                for version in &versions {
                    self.refuse(&mut state, name, version.version, &version.dir, error.to_string())?;
                }
                self.publish(name, Some(state));
                return Err(error.into());
            }
        };
        state.config = config;
        for version in versions {
            match self.load_version_dir(name, version.version, &version.dir, &state.config) {
                Ok(served) => {
                    self.record(name, ChangeKind::Load, version.version, "loaded from the repository")?;
                    state.versions.insert(version.version, served);
                }
                Err(error) => self.refuse(&mut state, name, version.version, &version.dir, error.to_string())?,
            }
        }
        let refused: Vec<(u64, String)> = state.refused.iter().map(|(v, r)| (*v, r.reason.clone())).collect();
        if state.versions.is_empty() {
            self.publish(name, Some(state));
            return Err(Error::Refused { model: name.to_string(), reasons: refused }.into());
        }
        self.settle_deployment(name, &mut state)?;
        self.publish(name, Some(state));
        Ok(refused)
    }

    /// Stops serving `name`; in-flight requests finish on the versions they hold.
    pub fn unload_model(&self, name: &str) -> Result<(), ChangeError> {
        let _guard = self.lock();
        let state = self.state(name)?;
        self.append(Change {
            model: name.into(),
            kind: ChangeKind::Unload,
            version: None,
            old: state.deployment.clone(),
            new: None,
            reason: "model unloaded".into(),
        })?;
        self.publish(name, None);
        Ok(())
    }

    /// Loads one version (verify, compile, warm, smoke test) beside the serving ones. With the
    /// model's `on_new_version = "switch"` policy a version newer than every live one then
    /// takes all traffic (blue/green); with `"wait"` it takes none until the split says so.
    pub fn load_version(&self, name: &str, version: u64, reason: &str) -> Result<(), ChangeError> {
        let _guard = self.lock();
        let mut state = (*self.state(name)?).clone();
        let dir = crate::compile::version_dir(self.repo.root(), name, version);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("model '{name}' has no version {version} in the repository")).into());
        }
        self.load_into(name, version, &dir, &mut state, reason)?;
        self.publish(name, Some(state));
        Ok(())
    }

    /// Stops serving one version. A version that takes live or shadow traffic is refused:
    /// move its traffic first.
    pub fn unload_version(&self, name: &str, version: u64, reason: &str) -> Result<(), ChangeError> {
        let _guard = self.lock();
        let mut state = (*self.state(name)?).clone();
        if !state.versions.contains_key(&version) {
            return Err(Error::NotFound(edgeinfer_oip::unknown_version_message(name, version)).into());
        }
        if state.deployment.as_ref().is_some_and(|d| d.uses(version)) {
            return Err(ChangeError::Conflict(format!(
                "version {version} of '{name}' takes traffic; change the split before unloading it"
            )));
        }
        self.record(name, ChangeKind::Unload, version, reason)?;
        state.versions.remove(&version);
        state.previous.retain(|d| !d.split.contains_key(&version));
        self.publish(name, Some(state));
        Ok(())
    }

    /// Sets a model's traffic split and shadow.
    pub fn set_traffic(&self, name: &str, change: TrafficChange) -> Result<Value, ChangeError> {
        let _guard = self.lock();
        let mut state = (*self.state(name)?).clone();
        change.deployment.validate(&state.loaded()).map_err(ChangeError::Invalid)?;
        let reason = if change.reason.is_empty() { "traffic changed".to_string() } else { change.reason };
        self.switch(name, &mut state, ChangeKind::Split, change.deployment, &reason)?;
        self.publish(name, Some(state.clone()));
        Ok(self.traffic_json(name, &state))
    }

    /// Goes back to the split before the current one.
    pub fn rollback(&self, name: &str, reason: &str) -> Result<Value, ChangeError> {
        let _guard = self.lock();
        let mut state = (*self.state(name)?).clone();
        let previous = state
            .previous
            .last()
            .cloned()
            .ok_or_else(|| ChangeError::Conflict(format!("model '{name}' has no earlier split to roll back to")))?;
        previous.validate(&state.loaded()).map_err(|e| ChangeError::Conflict(format!("cannot roll back: {e}")))?;
        let reason = if reason.is_empty() { "rollback" } else { reason };
        self.switch(name, &mut state, ChangeKind::Rollback, previous, reason)?;
        self.publish(name, Some(state.clone()));
        Ok(self.traffic_json(name, &state))
    }

    /// The model's deployment, loaded versions and shadow agreement.
    pub fn traffic(&self, name: &str) -> Result<Value> {
        let state = self.state(name)?;
        Ok(self.traffic_json(name, &state))
    }

    /// The model's change history, oldest first (empty without a history log).
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEvent>> {
        self.state(name)?;
        let events = match &self.history {
            Some(log) => log.events()?,
            None => Vec::new(),
        };
        Ok(events.into_iter().filter(|e| e.model == name).collect())
    }

    /// Brings the serving table in line with the repository on disk: loads versions that
    /// appeared (complete: manifest and component present), retries refused versions whose
    /// files changed, loads new models, and unloads versions whose directory is gone (unless
    /// they take traffic). Called by the repository watcher.
    pub fn sync_with_disk(&self) -> Result<()> {
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

    /// The version a request for `name` (and optionally `version`) runs on: the named version,
    /// or one drawn from the split; plus the shadow copy's target, sampled by its percentage.
    pub fn route(&self, name: &str, version: Option<u64>) -> Result<Route> {
        let table = self.table.load();
        let state = table.get(name).ok_or_else(|| Error::NotFound(edgeinfer_oip::unknown_model_message(name)))?;
        if let Some(v) = version {
            let live = state.versions.get(&v).cloned();
            let live = live.ok_or_else(|| Error::NotFound(edgeinfer_oip::unknown_version_message(name, v)))?;
            return Ok(Route { live, shadow: None });
        }
        let deployment = state
            .deployment
            .as_ref()
            .ok_or_else(|| Error::NotFound(format!("model '{name}' has no version loaded")))?;
        let chosen = deployment.pick(fastrand::u32(0..100)).and_then(|v| state.versions.get(&v)).cloned();
        let live = chosen.ok_or_else(|| Error::NotFound(format!("model '{name}' has no version loaded")))?;
        let sampled = deployment.shadow_percent >= 100 || fastrand::u32(0..100) < deployment.shadow_percent;
        let shadow = deployment.shadow.filter(|_| sampled).and_then(|v| state.versions.get(&v)).cloned();
        Ok(Route { live, shadow })
    }

    /// The version a request for `name` (and optionally `version`) runs on.
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedVersion>> {
        self.route(name, version).map(|route| route.live)
    }

    /// Records one shadow comparison.
    pub fn record_agreement(&self, name: &str, live: u64, shadow: u64, outcome: Option<bool>) {
        let mut book = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        let entry = book.entry((name.to_string(), live, shadow)).or_default();
        match outcome {
            Some(agreed) => {
                entry.compared += 1;
                entry.agreed += u64::from(agreed);
            }
            None => entry.shadow_failed += 1,
        }
    }

    /// The loaded versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.table.load().get(name).map(|s| s.versions.keys().copied().collect()).unwrap_or_default()
    }

    /// Every loaded version as `(model, version, served)`.
    pub fn all_loaded(&self) -> Vec<(String, u64, Arc<ServedVersion>)> {
        self.table
            .load()
            .iter()
            .flat_map(|(name, state)| state.versions.iter().map(move |(v, s)| (name.clone(), *v, s.clone())))
            .collect()
    }

    /// The repository index: every version on disk with its state and, if refused, why.
    pub fn index(&self, ready_only: bool) -> Result<Value> {
        let table = self.table.load();
        let mut rows = Vec::new();
        for version in self.repo.versions()? {
            let state = table.get(&version.model);
            let loaded = state.is_some_and(|s| s.versions.contains_key(&version.version));
            let reason = state.and_then(|s| s.refused.get(&version.version)).map(|r| r.reason.clone());
            if ready_only && !loaded {
                continue;
            }
            let ready = if loaded { "READY" } else { "UNAVAILABLE" };
            let mut row = json!({"name": version.model, "version": version.version.to_string(), "state": ready});
            let reason = reason.or_else(|| (!loaded).then(|| "not loaded".to_string()));
            if let Some(reason) = reason {
                row["reason"] = Value::from(reason);
            }
            rows.push(row);
        }
        Ok(Value::Array(rows))
    }

    // ---- internals -------------------------------------------------------------------

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self, name: &str) -> Result<Arc<ModelState>> {
        self.table.load().get(name).cloned().ok_or_else(|| Error::NotFound(edgeinfer_oip::unknown_model_message(name)))
    }

    /// Publishes a model's new state (or removes it) in a new table.
    fn publish(&self, name: &str, state: Option<ModelState>) {
        let mut table = (**self.table.load()).clone();
        match state {
            Some(state) => table.insert(name.to_string(), Arc::new(state)),
            None => table.remove(name),
        };
        self.table.store(Arc::new(table));
    }

    fn load_version_dir(
        &self,
        name: &str,
        version: u64,
        dir: &Path,
        config: &ModelConfig,
    ) -> Result<Arc<ServedVersion>> {
        let model = LoadedModel::load(&self.runtime, dir)?;
        let manifest = model.manifest();
        if manifest.name != name || manifest.version != version {
            return Err(Error::Manifest {
                path: dir.join("manifest.toml"),
                message: format!(
                    "manifest says {} version {}, but it sits in {name}/{version}",
                    manifest.name, manifest.version
                ),
            });
        }
        Ok(Arc::new(ServedVersion { model, stats: VersionStats::default(), limits: config.limits }))
    }

    /// Loads a version into `state`, or records why not; applies the new-version policy.
    fn load_into(&self, name: &str, version: u64, dir: &Path, state: &mut ModelState, reason: &str) -> Result<()> {
        match self.load_version_dir(name, version, dir, &state.config) {
            Ok(served) => {
                self.record(name, ChangeKind::Load, version, reason)?;
                state.refused.remove(&version);
                state.versions.insert(version, served);
                let newest_live = state.deployment.as_ref().and_then(|d| d.live_versions().last().copied());
                let switch = state.config.on_new_version == NewVersionPolicy::Switch
                    && newest_live.is_none_or(|live| version > live);
                if switch {
                    let why = format!("blue/green: version {version} loaded, policy switches all traffic to it");
                    self.switch(name, state, ChangeKind::Split, Deployment::single(version), &why)?;
                } else if state.deployment.is_none() {
                    self.settle_deployment(name, state)?;
                }
                Ok(())
            }
            Err(error) => {
                let reasons = vec![(version, error.to_string())];
                self.refuse(state, name, version, dir, error.to_string())?;
                self.publish(name, Some(state.clone()));
                Err(Error::Refused { model: name.to_string(), reasons })
            }
        }
    }

    /// Picks a deployment after a (re)load: the current one if it still fits, else the last
    /// recorded one if it fits, else the default.
    fn settle_deployment(&self, name: &str, state: &mut ModelState) -> Result<()> {
        let loaded = state.loaded();
        let current = self.state(name).ok().and_then(|s| s.deployment.clone().map(|d| (d, s.previous.clone())));
        let trail = match (&current, &self.history) {
            (Some((deployment, previous)), _) => {
                DeploymentTrail { current: Some(deployment.clone()), previous: previous.clone() }
            }
            (None, Some(log)) => DeploymentTrail::replay(&log.events()?, name),
            (None, None) => DeploymentTrail::default(),
        };
        state.previous = trail.previous;
        match trail.current.filter(|d| d.validate(&loaded).is_ok()) {
            Some(deployment) => state.deployment = Some(deployment),
            None => {
                let Some(default) = state.default_deployment() else { return Ok(()) };
                let reason = "default: all traffic on the default version";
                self.switch(name, state, ChangeKind::Split, default, reason)?;
            }
        }
        Ok(())
    }

    /// Logs and applies a deployment change to `state` (the caller publishes it).
    fn switch(
        &self,
        name: &str,
        state: &mut ModelState,
        kind: ChangeKind,
        new: Deployment,
        reason: &str,
    ) -> Result<()> {
        let old = state.deployment.clone();
        if old.as_ref() == Some(&new) {
            return Ok(());
        }
        self.append(Change {
            model: name.into(),
            kind,
            version: None,
            old: old.clone(),
            new: Some(new.clone()),
            reason: reason.into(),
        })?;
        tracing::info!(model = name, ?kind, split = %new.to_json(), reason, "deployment changed");
        match (kind, old) {
            (ChangeKind::Rollback, _) => {
                state.previous.pop();
            }
            (_, Some(old)) => state.previous.push(old),
            (_, None) => {}
        }
        state.deployment = Some(new);
        Ok(())
    }

    fn refuse(&self, state: &mut ModelState, name: &str, version: u64, dir: &Path, reason: String) -> Result<()> {
        tracing::warn!(model = name, version, %reason, "version refused");
        self.record(name, ChangeKind::Refused, version, &reason)?;
        state.refused.insert(version, Refusal { reason, fingerprint: fingerprint(dir) });
        Ok(())
    }

    /// Logs a change of versions (the deployment is untouched).
    fn record(&self, name: &str, kind: ChangeKind, version: u64, reason: &str) -> Result<()> {
        self.append(Change {
            model: name.into(),
            kind,
            version: Some(version),
            old: None,
            new: None,
            reason: reason.into(),
        })
    }

    fn append(&self, change: Change) -> Result<()> {
        if let Some(log) = &self.history {
            log.append(change)?;
        }
        Ok(())
    }

    fn traffic_json(&self, name: &str, state: &ModelState) -> Value {
        let book = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        let agreement: Vec<Value> = book
            .iter()
            .filter(|((model, _, _), _)| model == name)
            .map(|((_, live, shadow), a)| {
                json!({
                    "live": live.to_string(),
                    "shadow": shadow.to_string(),
                    "compared": a.compared,
                    "agreed": a.agreed,
                    "shadow_failed": a.shadow_failed,
                    "agreement_rate": if a.compared == 0 { Value::Null } else { Value::from(a.agreed as f64 / a.compared as f64) },
                })
            })
            .collect();
        let mut value =
            state.deployment.as_ref().map_or_else(|| json!({"split": {}, "shadow": null}), Deployment::to_json);
        value["model"] = Value::from(name);
        value["loaded"] = state.versions.keys().map(u64::to_string).collect::<Vec<_>>().into();
        value["refused"] = state
            .refused
            .iter()
            .map(|(v, r)| json!({"version": v.to_string(), "reason": r.reason}))
            .collect::<Vec<_>>()
            .into();
        value["rollback_to"] = state.previous.last().map_or(Value::Null, Deployment::to_json);
        value["agreement"] = Value::Array(agreement);
        value
    }
}

/// A version directory is complete once its manifest and the component it names are there.
fn looks_complete(dir: &Path) -> bool {
    let manifest = dir.join("manifest.toml");
    match crate::manifest::Manifest::load(&manifest) {
        Ok(m) => dir.join(&m.component.file).is_file(),
        Err(_) => manifest.is_file(),
    }
}

fn fingerprint(dir: &Path) -> Fingerprint {
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
