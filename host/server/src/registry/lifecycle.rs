//! Version lifecycle: load (verify, compile, warm, smoke test), refuse, unload. Each change
//! holds only its own model's lock, so one model's 10-20 s compile never delays another's.

use std::path::Path;
use std::sync::Arc;

use super::model_config::{ModelConfig, NewVersionPolicy};
use super::sync::{RefusedVersion, fingerprint};
use super::{ChangeError, ModelRegistry, ModelState, ServedVersion};
use crate::deployment::Deployment;
use crate::history::{Change, ChangeKind};
use crate::quality::PredictionSpec;
use crate::statistics::VersionStats;
use crate::{Error, Result};
use edgeinfer_runtime::model::LoadedModel;
use edgeinfer_runtime::signature::SignatureStatus;

impl ModelRegistry {
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
        self.exclusive(name, || {
            let versions = self.repo.model_versions(name)?;
            if versions.is_empty() {
                return Err(Error::NotFound(format!("model '{name}' is not in the repository")).into());
            }
            let mut state = ModelState::default();
            let config = match ModelConfig::load(&self.repo.root().join(name)) {
                Ok(config) => config,
                Err(error) => return Err(self.refuse_config(name, error)),
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
        })
    }

    /// A model whose `config.toml` does not parse: a model already serving keeps its last
    /// good state (the error is logged); a new one is refused with the reason.
    fn refuse_config(&self, name: &str, error: Error) -> ChangeError {
        if self.state(name).is_ok() {
            tracing::error!(model = name, %error, "config.toml unreadable; keeping the last good state");
            return ChangeError::Failed(error);
        }
        let mut state = ModelState::default();
        for version in self.repo.model_versions(name).unwrap_or_default() {
            if let Err(log_error) = self.refuse(&mut state, name, version.version, &version.dir, error.to_string()) {
                return log_error.into();
            }
        }
        self.publish(name, Some(state));
        ChangeError::Failed(error)
    }

    /// Stops serving `name`; in-flight requests finish on the versions they hold.
    pub fn unload_model(&self, name: &str) -> Result<(), ChangeError> {
        self.exclusive(name, || {
            let state = self.state(name)?;
            self.append(Change {
                model: name.into(),
                kind: ChangeKind::Unload,
                version: None,
                old: state.deployment.clone(),
                new: None,
                reason: "model unloaded".into(),
                rollout: None,
            })?;
            self.publish(name, None);
            Ok(())
        })
    }

    /// Loads one version (verify, compile, warm, smoke test) beside the serving ones. With the
    /// model's `on_new_version = "switch"` policy a version newer than every live one then
    /// takes all traffic (blue/green); with `"wait"` it takes none until the split says so.
    pub fn load_version(&self, name: &str, version: u64, reason: &str) -> Result<(), ChangeError> {
        self.exclusive(name, || {
            let mut state = (*self.state(name)?).clone();
            let dir = edgeinfer_runtime::compile::version_dir(self.repo.root(), name, version);
            if !dir.is_dir() {
                return Err(
                    Error::NotFound(format!("model '{name}' has no version {version} in the repository")).into()
                );
            }
            // The model's config.toml as it is now: a `[rollout]` added for this version applies.
            match ModelConfig::load(&self.repo.root().join(name)) {
                Ok(config) => state.config = config,
                Err(error) => {
                    let message = error.to_string();
                    self.refuse(&mut state, name, version, &dir, message.clone())?;
                    self.publish(name, Some(state));
                    return Err(Error::Refused { model: name.to_string(), reasons: vec![(version, message)] }.into());
                }
            }
            self.load_into(name, version, &dir, &mut state, reason)?;
            self.publish(name, Some(state));
            Ok(())
        })
    }

    /// Stops serving one version. A version that takes live or shadow traffic is refused:
    /// move its traffic first.
    pub fn unload_version(&self, name: &str, version: u64, reason: &str) -> Result<(), ChangeError> {
        self.exclusive(name, || {
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
        })
    }

    fn load_version_dir(
        &self,
        name: &str,
        version: u64,
        dir: &Path,
        config: &ModelConfig,
    ) -> Result<Arc<ServedVersion>> {
        match self.signatures.load().check(dir)? {
            SignatureStatus::Trusted(key) => tracing::info!(model = name, version, key, "signed by a trusted key"),
            SignatureStatus::Untrusted(key) => {
                tracing::info!(model = name, version, key, "signed, by a key not listed in trusted_keys")
            }
            SignatureStatus::Unsigned => {}
        }
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
        let batching = match config.batching {
            Some(batching) => {
                batching.check(model.manifest()).map_err(Error::Config)?;
                Some(crate::coalescer::BatchQueue::new(batching))
            }
            None => None,
        };
        let manifest = model.manifest();
        let inputs: Vec<&str> = manifest.inputs.iter().map(|t| t.name.as_str()).collect();
        let outputs: Vec<&str> = manifest.outputs.iter().map(|t| t.name.as_str()).collect();
        config.redaction.check(&inputs, &outputs).map_err(Error::Config)?;
        let monitor = crate::version_monitor::VersionMonitor::new(
            config.prediction_sample_rate,
            PredictionSpec { output: config.prediction_output.clone(), task: config.task },
            config.redaction.clone(),
        );
        Ok(Arc::new(ServedVersion { model, stats: VersionStats::default(), limits: config.limits, monitor, batching }))
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
                let rollout = state.config.rollout.clone().filter(|_| switch && newest_live.is_some());
                if let Some(policy) = rollout {
                    let why = format!("version {version} loaded; the model's [rollout] policy starts its first step");
                    match self.begin_rollout(name, state, version, policy, &why) {
                        Ok(()) => {}
                        Err(super::ChangeError::Failed(error)) => return Err(error),
                        Err(error) => tracing::warn!(model = name, version, %error, "rollout not started"),
                    }
                } else if switch {
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

    fn refuse(&self, state: &mut ModelState, name: &str, version: u64, dir: &Path, reason: String) -> Result<()> {
        tracing::warn!(model = name, version, %reason, "version refused");
        self.record(name, ChangeKind::Refused, version, &reason)?;
        state.refused.insert(version, RefusedVersion { reason, fingerprint: fingerprint(dir) });
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
            rollout: None,
        })
    }

    /// Writes a change to the history log (when there is one) before it is applied.
    pub(super) fn append(&self, change: Change) -> Result<()> {
        if let Some(log) = &self.history {
            log.append(change.clone())?;
        }
        if let Some(observer) = self.change_observer.get() {
            observer(&change);
        }
        Ok(())
    }
}
