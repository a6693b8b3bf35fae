//! The rollout controller: on a timer, evaluates every running rollout over its step's
//! window (`window`) and asks the registry to move it; answers the rollout status view.

mod window;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

use crate::observer::Observer;
use crate::registry::ModelRegistry;
use crate::rollout::{Action, Check, Rollout, RolloutState, Transition};
use window::{Counts, StepWindow};

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
        let evaluation = window::evaluate(rollout, &figures, &quality, &drift);
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
            .filter(|w| {
                rollout.state == RolloutState::Running && w.key.0 == rollout.candidate && w.key.1 == rollout.step
            })
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
