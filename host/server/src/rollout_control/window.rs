//! A step's window (the candidate's and the stable version's counters since the step began)
//! and the checks held against the policy's thresholds.

use std::time::Instant;

use crate::observer::DriftView;
use crate::quality::QualityView;
use crate::registry::Agreement;
use crate::rollout::{Action, Check, Rollout, Step};
use crate::statistics::{VersionStats, percentile_us};

/// One version's counters at a moment.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    requests: u64,
    errors: u64,
    successes: u64,
    fuel: u64,
    latency: Vec<u64>,
}

impl Counts {
    /// The counters of `stats` now.
    pub fn of(stats: &VersionStats) -> Counts {
        Counts {
            requests: stats.success.count() + stats.fail.count(),
            errors: stats.errors.load(std::sync::atomic::Ordering::Relaxed),
            successes: stats.success.count(),
            fuel: stats.fuel.load(std::sync::atomic::Ordering::Relaxed),
            latency: stats.latency.counts(),
        }
    }

    fn since(&self, start: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(start.requests),
            errors: self.errors.saturating_sub(start.errors),
            successes: self.successes.saturating_sub(start.successes),
            fuel: self.fuel.saturating_sub(start.fuel),
            latency: self.latency.iter().zip(&start.latency).map(|(now, then)| now.saturating_sub(*then)).collect(),
        }
    }

    fn fuel_per_request(&self) -> Option<f64> {
        (self.successes > 0).then(|| self.fuel as f64 / self.successes as f64)
    }
}

/// Where a step's window began.
#[derive(Debug, Clone)]
pub struct StepWindow {
    /// The step it belongs to: (candidate, step index, step start).
    pub key: (u64, usize, String),
    /// When it opened.
    pub started: Instant,
    candidate: Counts,
    stable: Counts,
    agreement: Agreement,
}

/// What happened in a window so far.
#[derive(Debug, Clone)]
pub struct Figures {
    candidate: Counts,
    stable: Counts,
    agreement: Agreement,
    elapsed: std::time::Duration,
}

impl StepWindow {
    /// A window opening now on these counters.
    pub fn open(key: (u64, usize, String), counts: (Counts, Counts), agreement: Agreement) -> StepWindow {
        StepWindow { key, started: Instant::now(), candidate: counts.0, stable: counts.1, agreement }
    }

    /// The window's figures given the counters now.
    pub fn figures(&self, candidate: Counts, stable: Counts, agreement: Agreement, now: Instant) -> Figures {
        Figures {
            candidate: candidate.since(&self.candidate),
            stable: stable.since(&self.stable),
            agreement: Agreement {
                compared: agreement.compared.saturating_sub(self.agreement.compared),
                agreed: agreement.agreed.saturating_sub(self.agreement.agreed),
                shadow_failed: agreement.shadow_failed.saturating_sub(self.agreement.shadow_failed),
                rows: agreement.rows.saturating_sub(self.agreement.rows),
                rows_agreed: agreement.rows_agreed.saturating_sub(self.agreement.rows_agreed),
            },
            elapsed: now.saturating_duration_since(self.started),
        }
    }
}

/// A step's checks and what they decide.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Every check.
    pub checks: Vec<Check>,
    /// Roll back, move on, or (none) keep watching.
    pub decision: Option<Action>,
}

impl Evaluation {
    /// The failing checks in words, for the history and the alert.
    pub fn failed_summary(&self) -> String {
        let failed: Vec<String> = self.checks.iter().filter(|c| c.status == "fail").map(Check::describe).collect();
        format!("failed: {}", failed.join("; "))
    }

    /// The passing checks in words.
    pub fn passed_summary(&self) -> String {
        let passed: Vec<String> = self.checks.iter().filter(|c| c.status == "pass").map(Check::describe).collect();
        if passed.is_empty() { "no check had data".into() } else { passed.join("; ") }
    }
}

/// Holds the step's figures, the candidate's quality and drift against `rollout`'s policy.
pub fn evaluate(
    rollout: &Rollout,
    figures: &Figures,
    quality: &[(u64, QualityView)],
    drift: &[DriftView],
) -> Evaluation {
    let policy = &rollout.policy;
    let (candidate, stable) = (&figures.candidate, &figures.stable);
    let enough = candidate.requests >= policy.min_requests;
    let mut checks = Vec::new();
    let error_rate = (candidate.requests > 0).then(|| candidate.errors as f64 / candidate.requests as f64);
    checks.push(Check::new("error_rate", error_rate, policy.max_error_rate, true, candidate.requests, enough));
    let p99 = |counts: &Counts| percentile_us(&counts.latency, 99.0);
    let p99_ratio = p99(candidate).zip(p99(stable)).map(|(c, s)| c / s);
    let latency_samples = candidate.successes.min(stable.successes);
    let latency_enough = enough && stable.successes >= policy.min_requests;
    checks.push(Check::new("p99_ratio", p99_ratio, policy.max_p99_ratio, true, latency_samples, latency_enough));
    let fuel_ratio =
        candidate.fuel_per_request().zip(stable.fuel_per_request()).filter(|(_, s)| *s > 0.0).map(|(c, s)| c / s);
    checks.push(Check::new("fuel_ratio", fuel_ratio, policy.max_fuel_ratio, true, latency_samples, latency_enough));
    let shadow = matches!(rollout.current_step(), Step::Shadow { .. });
    if shadow && policy.min_agreement > 0.0 {
        let rows = figures.agreement.rows;
        let agreement = (rows > 0).then(|| figures.agreement.rows_agreed as f64 / rows as f64);
        checks.push(Check::new("agreement", agreement, policy.min_agreement, false, rows, enough));
    }
    let accuracy = |version: u64| {
        quality
            .iter()
            .find(|(v, _)| *v == version)
            .and_then(|(_, view)| view.accuracy.map(|a| (a, view.labelled)))
            .filter(|(_, labelled)| *labelled >= policy.min_feedback.max(1))
    };
    if let (Some((c, labelled)), Some((s, _))) = (accuracy(rollout.candidate), accuracy(rollout.stable)) {
        checks.push(Check::new("accuracy_delta", Some(c - s), policy.min_accuracy_delta, false, labelled as u64, true));
    }
    if let Some(view) = drift.iter().find(|d| d.version == rollout.candidate.to_string()) {
        checks.push(Check::new("psi", Some(view.max_psi), policy.max_psi, true, view.rows as u64, true));
    }
    let decision = if checks.iter().any(|c| c.status == "fail") {
        Some(Action::Rollback)
    } else if enough && step_done(rollout.current_step(), figures) {
        Some(if rollout.step + 2 >= rollout.policy.steps.len() { Action::Promote } else { Action::Advance })
    } else {
        None
    };
    Evaluation { checks, decision }
}

/// Whether the step's own requirement is met (copies compared, time spent).
fn step_done(step: Step, figures: &Figures) -> bool {
    match step {
        Step::Shadow { requests } => figures.agreement.compared + figures.agreement.shadow_failed >= requests,
        Step::Canary { duration, .. } => figures.elapsed >= duration,
        Step::Full => true,
    }
}
