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
    pub(super) fn switch(
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
}
