//! What the server serves: per model, its loaded versions, the ones refused and why, and its
//! deployment (traffic split and shadow).
//!
//! The serving table is immutable and swapped atomically ([`ArcSwap`]): a request takes a
//! snapshot, picks a version and holds it (an `Arc`) until it is answered, so a version
//! replaced or unloaded meanwhile is dropped only once its in-flight requests have drained.
//! Changes to one model are serialized (a lock per model), written to the history log
//! first, then published.
//!
//! Jobs: `mod.rs` the serving table and request routing, `lifecycle` loading and unloading
//! versions, `policy` deployments and rollback, `rollout` automated rollouts' transitions, `sync` the repository on disk, `views` what
//! clients read.

mod lifecycle;
mod model_config;
mod policy;
mod rollout;
mod sync;
mod views;

pub use super::deployment::DeploymentView;
pub use model_config::{ModelConfig, NewVersionPolicy};
pub use views::{AgreementView, IndexEntry, RefusedView, TrafficView};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::deployment::Deployment;
use super::history::{Change, HistoryLog};
use super::statistics::VersionStats;
use crate::{Error, Result};
use edgeinfer_runtime::LimitOverrides;
use edgeinfer_runtime::model::LoadedModel;
use edgeinfer_runtime::repository::ModelRepository;
use edgeinfer_runtime::runtime::Runtime;

/// A version the server can run, with its statistics.
pub struct ServedVersion {
    /// The loaded model.
    pub model: LoadedModel,
    /// Its counters.
    pub stats: VersionStats,
    /// The model's limits from its `config.toml`.
    pub limits: LimitOverrides,
    /// Quality and drift windows, prediction sampling.
    pub monitor: crate::version_monitor::VersionMonitor,
    /// The dynamic batch queue, when the model's `config.toml` has `[batching]`.
    pub batching: Option<super::coalescer::BatchQueue>,
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

/// One model's state in a serving table.
#[derive(Clone, Default)]
struct ModelState {
    versions: BTreeMap<u64, Arc<ServedVersion>>,
    refused: BTreeMap<u64, sync::RefusedVersion>,
    deployment: Option<Deployment>,
    previous: Vec<Deployment>,
    config: ModelConfig,
    rollout: Option<crate::rollout::Rollout>,
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
    /// Rows whose predictions were compared (the prediction output; see
    /// [`crate::quality::PredictionSpec`]).
    pub rows: u64,
    /// Of those, the rows whose predictions agreed: equal classes, numbers within the
    /// tolerance.
    pub rows_agreed: u64,
}

/// How one shadow copy compared with the live answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOutcome {
    /// The shadow failed.
    Failed,
    /// Both answered.
    Compared {
        /// Whether every output agreed.
        outputs_agree: bool,
        /// Rows whose predictions were compared.
        rows: u64,
        /// Rows whose predictions agreed.
        rows_agreed: u64,
    },
}

/// The models being served, loaded from one repository.
pub struct ModelRegistry {
    runtime: Arc<Runtime>,
    repo: ModelRepository,
    table: ArcSwap<Table>,
    locks: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    history: Option<HistoryLog>,
    agreement: Mutex<BTreeMap<(String, u64, u64), Agreement>>,
    change_observer: std::sync::OnceLock<ChangeObserver>,
    signatures: ArcSwap<edgeinfer_runtime::signature::SignaturePolicy>,
    rescans: [std::sync::atomic::AtomicU64; 2],
}

/// Rescans of the repository since start ([`ModelRegistry::sync_with_disk`]): what
/// `GET /v2/admin/server` reports as `repository_rescans`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RescanCounts {
    /// Rescans that looked at the repository.
    pub completed: u64,
    /// Rescans that could not (the directory gone, unreadable).
    pub failed: u64,
}

/// Told of every change once it is logged (loads, refusals, splits, rollbacks, unloads): the
/// audit log and the metrics listen here, and never call back into the registry.
pub type ChangeObserver = Box<dyn Fn(&Change) + Send + Sync>;

impl ModelRegistry {
    /// A registry over `repo` without a history log; nothing is loaded yet.
    pub fn new(runtime: Arc<Runtime>, repo: ModelRepository) -> Self {
        ModelRegistry {
            runtime,
            repo,
            table: ArcSwap::from_pointee(Table::new()),
            locks: Mutex::new(BTreeMap::new()),
            history: None,
            agreement: Mutex::new(BTreeMap::new()),
            change_observer: std::sync::OnceLock::new(),
            signatures: ArcSwap::from_pointee(edgeinfer_runtime::signature::SignaturePolicy::default()),
            rescans: Default::default(),
        }
    }

    /// A registry that records every change in `history` and restores deployments from it.
    pub fn with_history(runtime: Arc<Runtime>, repo: ModelRepository, history: &Path) -> Result<Self> {
        let log = HistoryLog::open(history)?;
        Ok(ModelRegistry { history: Some(log), ..Self::new(runtime, repo) })
    }

    /// The default history log of a repository: `<repo>/.edgeinfer/history.jsonl`.
    pub fn default_history_path(repo: &Path) -> PathBuf {
        edgeinfer_runtime::repository::state_dir(repo).join("history.jsonl")
    }

    /// The signature policy versions are loaded under now.
    pub fn signature_policy(&self) -> Arc<edgeinfer_runtime::signature::SignaturePolicy> {
        self.signatures.load_full()
    }

    /// Sets which signatures versions loaded from now on must carry.
    pub fn set_signature_policy(&self, policy: edgeinfer_runtime::signature::SignaturePolicy) {
        self.signatures.store(Arc::new(policy));
    }

    /// Installs the observer told of every change (once; later calls are ignored).
    pub fn observe_changes(&self, observer: ChangeObserver) {
        let _ = self.change_observer.set(observer);
    }

    /// The repository served.
    pub fn repository(&self) -> &ModelRepository {
        &self.repo
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
        let deployment =
            state.deployment.as_ref().ok_or_else(|| Error::NotFound(edgeinfer_oip::no_version_loaded_message(name)))?;
        let chosen = deployment.pick(fastrand::u32(0..100)).and_then(|v| state.versions.get(&v)).cloned();
        let live = chosen.ok_or_else(|| Error::NotFound(edgeinfer_oip::no_version_loaded_message(name)))?;
        let sampled = deployment.shadow_percent >= 100 || fastrand::u32(0..100) < deployment.shadow_percent;
        let shadow = deployment.shadow.filter(|_| sampled).and_then(|v| state.versions.get(&v)).cloned();
        Ok(Route { live, shadow })
    }

    /// The version a request for `name` (and optionally `version`) runs on.
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedVersion>> {
        self.route(name, version).map(|route| route.live)
    }

    /// The version that describes `name` (metadata, readiness): the named one, else the
    /// default version, deterministically: the split's heaviest version (ties: the highest).
    pub fn describe(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedVersion>> {
        if version.is_some() {
            return self.resolve(name, version);
        }
        let table = self.table.load();
        let state = table.get(name).ok_or_else(|| Error::NotFound(edgeinfer_oip::unknown_model_message(name)))?;
        let no_version = || Error::NotFound(edgeinfer_oip::no_version_loaded_message(name));
        let deployment = state.deployment.as_ref().ok_or_else(no_version)?;
        let default = deployment.split.iter().max_by_key(|(v, w)| (**w, **v)).map(|(v, _)| *v);
        default.and_then(|v| state.versions.get(&v)).cloned().ok_or_else(no_version)
    }

    /// Records one shadow comparison.
    pub fn record_agreement(&self, name: &str, live: u64, shadow: u64, outcome: ShadowOutcome) {
        let mut book = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        let entry = book.entry((name.to_string(), live, shadow)).or_default();
        match outcome {
            ShadowOutcome::Compared { outputs_agree, rows, rows_agreed } => {
                entry.compared += 1;
                entry.agreed += u64::from(outputs_agree);
                entry.rows += rows;
                entry.rows_agreed += rows_agreed;
            }
            ShadowOutcome::Failed => entry.shadow_failed += 1,
        }
    }

    /// The shadow agreement of `shadow` against `live` so far.
    pub fn agreement(&self, name: &str, live: u64, shadow: u64) -> Agreement {
        let book = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        book.get(&(name.to_string(), live, shadow)).copied().unwrap_or_default()
    }

    /// One loaded version of `name`, if loaded.
    pub fn loaded_version(&self, name: &str, version: u64) -> Option<Arc<ServedVersion>> {
        self.table.load().get(name).and_then(|s| s.versions.get(&version).cloned())
    }

    /// The models served, by name.
    pub fn model_names(&self) -> Vec<String> {
        self.table.load().keys().cloned().collect()
    }

    /// The loaded versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.table.load().get(name).map(|s| s.versions.keys().copied().collect()).unwrap_or_default()
    }

    /// The loaded versions of one model, ascending.
    pub fn loaded(&self, name: &str) -> Vec<(u64, Arc<ServedVersion>)> {
        let table = self.table.load();
        table.get(name).map(|s| s.versions.iter().map(|(v, served)| (*v, served.clone())).collect()).unwrap_or_default()
    }

    /// Every loaded version as `(model, version, served)`.
    pub fn all_loaded(&self) -> Vec<(String, u64, Arc<ServedVersion>)> {
        self.table
            .load()
            .iter()
            .flat_map(|(name, state)| state.versions.iter().map(move |(v, s)| (name.clone(), *v, s.clone())))
            .collect()
    }

    // ---- internals -------------------------------------------------------------------

    /// Runs `change` holding `name`'s lock: changes to one model are serialized, changes
    /// to different models (and their compiles) run side by side.
    fn exclusive<T>(&self, name: &str, change: impl FnOnce() -> T) -> T {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(name.to_string()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        change()
    }

    fn state(&self, name: &str) -> Result<Arc<ModelState>> {
        self.table.load().get(name).cloned().ok_or_else(|| Error::NotFound(edgeinfer_oip::unknown_model_message(name)))
    }

    /// Publishes a model's new state (or removes it) in a new table; other models' entries
    /// are taken from the table current at the swap, so concurrent changes are not lost.
    fn publish(&self, name: &str, state: Option<ModelState>) {
        let state = state.map(Arc::new);
        self.table.rcu(|table| {
            let mut table = (**table).clone();
            match &state {
                Some(state) => table.insert(name.to_string(), state.clone()),
                None => table.remove(name),
            };
            table
        });
    }
}
