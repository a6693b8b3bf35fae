//! Automated rollouts, what they are: a candidate version earns its traffic step by step
//! (shadow, canary shares, full), each step gated by checks of the candidate against the
//! stable version; a failing check rolls back at once, a passing step moves on.
//!
//! Jobs: `policy` what the operator writes, `check` one recorded check, this file the rollout
//! record the registry keeps (and logs) and the transitions asked of it. The registry applies
//! every transition under the model's lock, logged to the fsync'd history first, so a
//! restarted server resumes the step; `rollout_control` evaluates running rollouts.

mod check;
pub mod policy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::deployment::Deployment;
pub use check::Check;
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
