//! Rollout transitions: starting a rollout, and moving it (the controller's decisions, the
//! operator's commands). Each one is checked against the model's current state under its
//! lock, logged with the rollout record and the deployment it sets, then published.

use edgeinfer_runtime::clock::now_rfc3339;

use super::{ChangeError, ModelRegistry, ModelState};
use crate::Error;
use crate::history::ChangeKind;
use crate::rollout::{Action, Rollout, RolloutPolicy, RolloutState, Transition};

impl ModelRegistry {
    /// The model's rollout (the last one, whatever its state), if it ever had one.
    pub fn rollout(&self, name: &str) -> crate::Result<Option<Rollout>> {
        Ok(self.state(name)?.rollout.clone())
    }

    /// Every model's current rollout.
    pub fn rollouts(&self) -> Vec<(String, Rollout)> {
        let table = self.table.load();
        table.iter().filter_map(|(name, state)| state.rollout.clone().map(|r| (name.clone(), r))).collect()
    }

    /// The tolerance within which shadow predictions of numbers agree: the rollout's, else
    /// the model's `[rollout]`, else the default.
    pub fn agreement_tolerance(&self, name: &str) -> f64 {
        let table = self.table.load();
        let state = table.get(name);
        let policy =
            state.and_then(|s| s.rollout.as_ref().map(|r| &r.policy)).or(state.and_then(|s| s.config.rollout.as_ref()));
        policy.map_or(RolloutPolicy::default().agreement_tolerance, |p| p.agreement_tolerance)
    }

    /// Starts a rollout of the loaded version `candidate` against the version serving most
    /// traffic now, under `policy` (else the model's `[rollout]`, else the default policy).
    pub fn start_rollout(
        &self,
        name: &str,
        candidate: u64,
        policy: Option<RolloutPolicy>,
        reason: &str,
    ) -> Result<Rollout, ChangeError> {
        self.exclusive(name, || {
            let mut state = (*self.state(name)?).clone();
            if !state.versions.contains_key(&candidate) {
                return Err(Error::NotFound(edgeinfer_oip::unknown_version_message(name, candidate)).into());
            }
            let policy = policy.or_else(|| state.config.rollout.clone()).unwrap_or_default();
            let reason = if reason.is_empty() { "admin: rollout started" } else { reason };
            self.begin_rollout(name, &mut state, candidate, policy, reason)?;
            let rollout = state.rollout.clone();
            self.publish(name, Some(state));
            rollout.ok_or_else(|| ChangeError::Conflict("the rollout did not start".into()))
        })
    }

    /// Puts `state` at the first step of a rollout of `candidate` (a running one is replaced:
    /// its candidate loses its traffic).
    pub(super) fn begin_rollout(
        &self,
        name: &str,
        state: &mut ModelState,
        candidate: u64,
        policy: RolloutPolicy,
        reason: &str,
    ) -> Result<(), ChangeError> {
        policy.validate().map_err(ChangeError::Invalid)?;
        let running = state.rollout.as_ref().filter(|r| r.is_active());
        let stable = match running {
            Some(rollout) => rollout.stable,
            None => {
                let deployment = state.deployment.as_ref();
                let heaviest = deployment.and_then(|d| d.split.iter().max_by_key(|(v, w)| (**w, **v)).map(|(v, _)| *v));
                heaviest.ok_or_else(|| {
                    ChangeError::Conflict(format!("model '{name}' serves no version to compare a candidate with"))
                })?
            }
        };
        if stable == candidate {
            return Err(ChangeError::Conflict(format!(
                "version {candidate} of '{name}' already takes the traffic; a rollout needs another version"
            )));
        }
        let reason = match running {
            Some(old) => format!("{reason} (replaces the rollout of version {})", old.candidate),
            None => reason.to_string(),
        };
        let now = now_rfc3339();
        let rollout = Rollout {
            state: RolloutState::Running,
            candidate,
            stable,
            step: 0,
            policy,
            action: Action::Start,
            reason: reason.clone(),
            started_at: now.clone(),
            step_started_at: now,
        };
        self.apply_rollout(name, state, rollout, Vec::new(), &reason)
    }

    /// Moves the model's rollout: a controller decision (refused with a conflict if the
    /// rollout moved since it was evaluated) or an operator's command.
    pub fn move_rollout(&self, name: &str, transition: Transition) -> Result<Rollout, ChangeError> {
        self.exclusive(name, || {
            let mut state = (*self.state(name)?).clone();
            let current =
                state.rollout.clone().ok_or_else(|| ChangeError::Conflict(format!("model '{name}' has no rollout")))?;
            if let Some(expected) = &transition.expected
                && (current.candidate, current.step, &current.step_started_at) != (expected.0, expected.1, &expected.2)
            {
                return Err(ChangeError::Conflict(format!("the rollout of '{name}' moved meanwhile")));
            }
            let next = next_rollout(name, &current, transition.action, &transition.reason)?;
            let reason =
                if transition.reason.is_empty() { default_reason(transition.action) } else { transition.reason };
            self.apply_rollout(name, &mut state, next.clone(), transition.checks, &reason)?;
            self.publish(name, Some(state));
            Ok(next)
        })
    }

    /// Logs `rollout` with its deployment and checks, then applies both to `state`.
    fn apply_rollout(
        &self,
        name: &str,
        state: &mut ModelState,
        rollout: Rollout,
        checks: Vec<crate::rollout::Check>,
        reason: &str,
    ) -> Result<(), ChangeError> {
        let deployment = match rollout.state {
            RolloutState::Running | RolloutState::Paused => rollout.deployment(),
            RolloutState::Promoted => crate::deployment::Deployment::single(rollout.candidate),
            RolloutState::RolledBack => crate::deployment::Deployment::single(rollout.stable),
        };
        deployment.validate(&state.loaded()).map_err(|e| ChangeError::Conflict(format!("rollout of '{name}': {e}")))?;
        let mut record = serde_json::to_value(&rollout).map_err(Error::runtime)?;
        record["checks"] = serde_json::to_value(&checks).map_err(Error::runtime)?;
        tracing::info!(model = name, action = ?rollout.action, step = rollout.step, candidate = rollout.candidate, reason, "rollout");
        self.switch_recorded(name, state, ChangeKind::Rollout, deployment, reason, Some(record))?;
        state.rollout = Some(rollout);
        Ok(())
    }
}

/// The rollout after `action`, or why `action` does not apply now.
fn next_rollout(name: &str, current: &Rollout, action: Action, reason: &str) -> Result<Rollout, ChangeError> {
    let conflict = |what: &str| {
        ChangeError::Conflict(format!(
            "the rollout of version {} of '{name}' is {}; nothing to {what}",
            current.candidate,
            state_name(current.state)
        ))
    };
    let mut next = Rollout { action, reason: reason.to_string(), ..current.clone() };
    let now = now_rfc3339();
    match action {
        Action::Advance if current.state == RolloutState::Running => {
            next.step = (current.step + 1).min(current.policy.steps.len().saturating_sub(1));
            next.step_started_at = now;
        }
        Action::Promote if current.is_active() => {
            next.state = RolloutState::Promoted;
            next.step = current.policy.steps.len().saturating_sub(1);
            next.step_started_at = now;
        }
        Action::Rollback | Action::Abort if current.is_active() => next.state = RolloutState::RolledBack,
        Action::Pause if current.state == RolloutState::Running => next.state = RolloutState::Paused,
        Action::Resume if current.state == RolloutState::Paused => {
            next.state = RolloutState::Running;
            next.step_started_at = now;
        }
        Action::Advance | Action::Rollback => return Err(conflict("decide")),
        Action::Promote => return Err(conflict("promote")),
        Action::Abort => return Err(conflict("abort")),
        Action::Pause => return Err(conflict("pause")),
        Action::Resume => return Err(conflict("resume")),
        Action::Start => return Err(ChangeError::Invalid("a rollout is started with POST .../rollout".into())),
    }
    Ok(next)
}

fn state_name(state: RolloutState) -> &'static str {
    match state {
        RolloutState::Running => "running",
        RolloutState::Paused => "paused",
        RolloutState::Promoted => "promoted",
        RolloutState::RolledBack => "rolled back",
    }
}

fn default_reason(action: Action) -> String {
    match action {
        Action::Pause => "admin: paused",
        Action::Resume => "admin: resumed; the step's window starts again",
        Action::Promote => "admin: promoted",
        Action::Abort => "admin: aborted",
        _ => "rollout moved",
    }
    .into()
}
