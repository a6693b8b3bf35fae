//! Automated rollouts: a candidate version earns its traffic step by step (shadow, canary
//! shares, full), each step gated by checks of the candidate against the stable version over
//! the step's window; a failing check rolls back at once, a passing step moves on.
//!
//! Jobs: `policy` what the operator writes, `checks` the step window and its checks, this
//! file the rollout record the registry keeps (and logs) and the controller that evaluates
//! running rollouts on a timer. The registry applies every transition under the model's
//! lock, logged to the fsync'd history first, so a restarted server resumes the step.

pub mod checks;
pub mod policy;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::deployment::Deployment;
use crate::observer::Observer;
use crate::registry::ModelRegistry;
use checks::{Check, Counts, StepWindow};
pub use policy::{RolloutPolicy, Step};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Steps are being evaluated.
    Running,
    /// Held at its step by an operator; traffic stays as it is.
    Paused,
    /// The candidate took all traffic and is the stable version now.
    Promoted,
    /// The stable version took all traffic back.
    RolledBack,
}

/// What moved a rollout: the controller's decisions and the operator's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A rollout began at its first step.
    Start,
    /// A step's checks passed: on to the next step.
    Advance,
    /// The candidate took all traffic (its last step reached, or by an operator).
    Promote,
    /// A check failed: all traffic back on the stable version.
    Rollback,
    /// An operator held the rollout at its step.
    Pause,
    /// An operator let it go on; the step's window starts again.
    Resume,
    /// An operator stopped it: all traffic back on the stable version.
    Abort,
}

/// A model's rollout, as the registry keeps it and the history logs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Where it is.
    pub state: RolloutState,
    /// The version earning traffic.
    pub candidate: u64,
    /// The version it is compared with and falls back to.
    pub stable: u64,
    /// Index of the current step in `policy.steps`.
    pub step: usize,
    /// The steps and thresholds.
    pub policy: RolloutPolicy,
    /// What last moved it.
    pub action: Action,
    /// Why: the failing checks of a rollback, the operator's reason...
    pub reason: String,
    /// When the rollout began (RFC 3339).
    pub started_at: String,
    /// When the current step (or its resumed window) began (RFC 3339).
    pub step_started_at: String,
}

impl Rollout {
    /// Whether the controller still has work to do (or an operator may resume it).
    pub fn is_active(&self) -> bool {
        matches!(self.state, RolloutState::Running | RolloutState::Paused)
    }

    /// The current step.
    pub fn current_step(&self) -> Step {
        self.policy.steps.get(self.step).copied().unwrap_or(Step::Full)
    }

    /// The deployment of the current step.
    pub fn deployment(&self) -> Deployment {
        step_deployment(self.current_step(), self.stable, self.candidate)
    }
}

/// The traffic of `step`: shadow copies, a canary share, or all on the candidate.
pub fn step_deployment(step: Step, stable: u64, candidate: u64) -> Deployment {
    match step {
        Step::Shadow { .. } => Deployment { shadow: Some(candidate), ..Deployment::single(stable) },
        Step::Canary { percent, .. } => Deployment {
            split: BTreeMap::from([(stable, 100 - percent), (candidate, percent)]),
            shadow: None,
            shadow_percent: 100,
        },
        Step::Full => Deployment::single(candidate),
    }
}

/// A transition asked of the registry, with what the history records about it.
#[derive(Debug, Clone)]
pub struct Transition {
    /// What moves.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Every check's value and threshold when the controller decided (empty for operators).
    pub checks: Vec<Check>,
    /// For the controller's decisions: the step (candidate, index, start) it evaluated; the
    /// transition is refused if the rollout moved meanwhile.
    pub expected: Option<(u64, usize, String)>,
}

/// Evaluates running rollouts; keeps each one's step window and latest checks in memory
/// (a restart begins a fresh window for the step the history says it is at).
#[derive(Default)]
pub struct Controller {
    windows: Mutex<BTreeMap<String, StepWindow>>,
    latest: Mutex<BTreeMap<String, Vec<Check>>>,
}

impl Controller {
    /// Looks at every running rollout once: rolls back on a failing check, moves on when
    /// the step is done and its checks pass.
    pub fn tick(&self, registry: &ModelRegistry, observer: &Observer) {
        for (model, rollout) in registry.rollouts() {
            if rollout.state != RolloutState::Running {
                self.windows.lock().unwrap_or_else(|p| p.into_inner()).remove(&model);
                continue;
            }
            if let Err(error) = self.evaluate(registry, observer, &model, &rollout) {
                tracing::warn!(model, %error, "rollout not evaluated");
            }
        }
    }

    fn evaluate(
        &self,
        registry: &ModelRegistry,
        observer: &Observer,
        model: &str,
        rollout: &Rollout,
    ) -> crate::Result<()> {
        let (Some(candidate), Some(stable)) =
            (registry.loaded_version(model, rollout.candidate), registry.loaded_version(model, rollout.stable))
        else {
            return Ok(());
        };
        let key = (rollout.candidate, rollout.step, rollout.step_started_at.clone());
        let now = || (Counts::of(&candidate.stats), Counts::of(&stable.stats));
        let agreement = || registry.agreement(model, rollout.stable, rollout.candidate);
        let window = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let window =
                windows.entry(model.to_string()).or_insert_with(|| StepWindow::open(key.clone(), now(), agreement()));
            if window.key != key {
                *window = StepWindow::open(key.clone(), now(), agreement());
            }
            window.clone()
        };
        let (candidate_now, stable_now) = now();
        let figures = window.figures(candidate_now, stable_now, agreement(), Instant::now());
        let quality = observer.quality(registry, model);
        let drift = observer.drift(registry, model);
        let evaluation = checks::evaluate(rollout, &figures, &quality, &drift);
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).insert(model.to_string(), evaluation.checks.clone());
        let Some(action) = evaluation.decision else { return Ok(()) };
        let reason = match action {
            Action::Rollback => evaluation.failed_summary(),
            _ => format!("step \"{}\" passed: {}", rollout.current_step(), evaluation.passed_summary()),
        };
        let transition = Transition { action, reason, checks: evaluation.checks, expected: Some(key) };
        match registry.move_rollout(model, transition) {
            Ok(_) => Ok(()),
            // Moved meanwhile (an operator, a new candidate): the next tick sees the new state.
            Err(crate::registry::ChangeError::Conflict(_)) => Ok(()),
            Err(crate::registry::ChangeError::Failed(error)) => Err(error),
            Err(crate::registry::ChangeError::Invalid(message)) => Err(crate::Error::Runtime(message)),
        }
    }

    /// `GET /v2/admin/models/{m}/rollout`: the rollout (`state` `none` without one), the
    /// current step, each check's latest value against its threshold, and the decisions.
    pub fn status(&self, registry: &ModelRegistry, model: &str) -> crate::Result<Value> {
        let Some(rollout) = registry.rollout(model)? else {
            return Ok(json!({"model": model, "state": "none", "decisions": []}));
        };
        let checks = if rollout.state == RolloutState::Running {
            self.latest.lock().unwrap_or_else(|p| p.into_inner()).get(model).cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        let decisions: Vec<Value> = registry
            .history(model)?
            .into_iter()
            .filter_map(|event| {
                let record = event.rollout?;
                Some(json!({
                    "time": event.time,
                    "action": record["action"],
                    "candidate": record["candidate"].to_string(),
                    "step": record["step"],
                    "state": record["state"],
                    "reason": event.reason,
                    "checks": record.get("checks").cloned().unwrap_or(Value::Array(Vec::new())),
                }))
            })
            .collect();
        let window_s = self
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .filter(|w| w.key.0 == rollout.candidate && w.key.1 == rollout.step)
            .map(|w| w.started.elapsed().as_secs_f64());
        Ok(json!({
            "model": model,
            "state": rollout.state,
            "candidate": rollout.candidate.to_string(),
            "stable": rollout.stable.to_string(),
            "step": rollout.step,
            "step_name": rollout.current_step().to_string(),
            "steps": rollout.policy.steps,
            "step_started_at": rollout.step_started_at,
            "step_window_s": window_s,
            "started_at": rollout.started_at,
            "reason": rollout.reason,
            "policy": rollout.policy,
            "checks": checks,
            "decisions": decisions,
        }))
    }
}
