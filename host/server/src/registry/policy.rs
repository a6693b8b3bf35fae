//! Deployment policy: traffic splits, rollback, and the deployment a model settles on after
//! a (re)load. Every change is written to the history before it is published.

use super::views::TrafficView;
use super::{ChangeError, ModelRegistry, ModelState};
use crate::Result;
use crate::deployment::{Deployment, TrafficChange};
use crate::history::{Change, ChangeKind, DeploymentTrail};

impl ModelRegistry {
    /// Sets a model's traffic split and shadow.
    pub fn set_traffic(&self, name: &str, change: TrafficChange) -> Result<TrafficView, ChangeError> {
        self.exclusive(name, || {
            let mut state = (*self.state(name)?).clone();
            refuse_during_rollout(name, &state)?;
            change.deployment.validate(&state.loaded()).map_err(ChangeError::Invalid)?;
            let reason = if change.reason.is_empty() { "traffic changed".to_string() } else { change.reason };
            self.switch(name, &mut state, ChangeKind::Split, change.deployment, &reason)?;
            let view = self.traffic_view(name, &state);
            self.publish(name, Some(state));
            Ok(view)
        })
    }

    /// Goes back to the split before the current one.
    pub fn rollback(&self, name: &str, reason: &str) -> Result<TrafficView, ChangeError> {
        self.exclusive(name, || {
            let mut state = (*self.state(name)?).clone();
            refuse_during_rollout(name, &state)?;
            let previous =
                state.previous.last().cloned().ok_or_else(|| {
                    ChangeError::Conflict(format!("model '{name}' has no earlier split to roll back to"))
                })?;
            previous.validate(&state.loaded()).map_err(|e| ChangeError::Conflict(format!("cannot roll back: {e}")))?;
            let reason = if reason.is_empty() { "rollback" } else { reason };
            self.switch(name, &mut state, ChangeKind::Rollback, previous, reason)?;
            let view = self.traffic_view(name, &state);
            self.publish(name, Some(state));
            Ok(view)
        })
    }

    /// Picks a deployment after a (re)load: the current one if it still fits, else the last
    /// recorded one if it fits, else the default.
    pub(super) fn settle_deployment(&self, name: &str, state: &mut ModelState) -> Result<()> {
        let loaded = state.loaded();
        let serving = self.state(name).ok();
        let current = serving.as_ref().and_then(|s| s.deployment.clone().map(|d| (d, s.previous.clone())));
        let kept_rollout = serving.and_then(|s| s.rollout.clone());
        let trail = match (&current, &self.history) {
            (Some((deployment, previous)), _) => {
                DeploymentTrail { current: Some(deployment.clone()), previous: previous.clone(), rollout: None }
            }
            (None, Some(log)) => DeploymentTrail::replay(&log.events()?, name),
            (None, None) => DeploymentTrail::default(),
        };
        state.previous = trail.previous;
        state.rollout = match kept_rollout {
            Some(rollout) => Some(rollout),
            None => trail.rollout.and_then(|record| restore_rollout(name, record, &loaded)),
        };
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
    pub(super) fn switch(
        &self,
        name: &str,
        state: &mut ModelState,
        kind: ChangeKind,
        new: Deployment,
        reason: &str,
    ) -> Result<()> {
        self.switch_recorded(name, state, kind, new, reason, None)
    }

    /// [`Self::switch`], with what a rollout change records beside the deployment; a
    /// rollout change is logged even when the deployment stays (pause, resume).
    pub(super) fn switch_recorded(
        &self,
        name: &str,
        state: &mut ModelState,
        kind: ChangeKind,
        new: Deployment,
        reason: &str,
        rollout: Option<serde_json::Value>,
    ) -> Result<()> {
        let old = state.deployment.clone();
        let unchanged = old.as_ref() == Some(&new);
        if unchanged && rollout.is_none() {
            return Ok(());
        }
        self.append(Change {
            model: name.into(),
            kind,
            version: None,
            old: if unchanged { None } else { old.clone() },
            new: (!unchanged).then(|| new.clone()),
            reason: reason.into(),
            rollout,
        })?;
        if unchanged {
            return Ok(());
        }
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
}

/// Manual splits and rollbacks would fight a rollout that moves traffic on its own.
fn refuse_during_rollout(name: &str, state: &ModelState) -> Result<(), ChangeError> {
    match &state.rollout {
        Some(rollout) if rollout.is_active() => Err(ChangeError::Conflict(format!(
            "a rollout of version {} of '{name}' is {}; `edgeinfer rollout abort` (or promote) it first",
            rollout.candidate,
            if rollout.state == crate::rollout::RolloutState::Paused { "paused" } else { "running" }
        ))),
        _ => Ok(()),
    }
}

/// The rollout the history left, if its versions are still loaded (else it cannot go on).
fn restore_rollout(
    name: &str,
    record: serde_json::Value,
    loaded: &std::collections::BTreeSet<u64>,
) -> Option<crate::rollout::Rollout> {
    let rollout: crate::rollout::Rollout = match serde_json::from_value(record) {
        Ok(rollout) => rollout,
        Err(error) => {
            tracing::warn!(model = name, %error, "the history's last rollout record is unreadable; ignored");
            return None;
        }
    };
    if rollout.is_active() && !(loaded.contains(&rollout.candidate) && loaded.contains(&rollout.stable)) {
        tracing::warn!(
            model = name,
            candidate = rollout.candidate,
            "rollout versions no longer loaded; rollout dropped"
        );
        return None;
    }
    if rollout.is_active() {
        tracing::info!(model = name, candidate = rollout.candidate, step = rollout.step, "resuming the rollout's step");
    }
    Some(rollout)
}
