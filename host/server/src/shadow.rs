//! Shadow traffic: a copy of a live request runs on the shadow version on its own worker
//! thread after the client has its answer; the outputs are compared and the agreement is
//! recorded per (live, shadow) version pair. A full queue drops copies, never live requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use edgeinfer_oip::Tensor;

use super::observer::{Observed, Observer};
use super::quality::{LabelValue, PredictionSpec};
use super::registry::{ModelRegistry, ServedVersion, ShadowOutcome};
use edgeinfer_monitor::predictions::Role;
use edgeinfer_runtime::compare::outputs_agree;
use edgeinfer_runtime::limits::LimitOverrides;
use edgeinfer_runtime::pipeline::KeptTensors;

/// Copies waiting beyond this are dropped.
const QUEUE: usize = 64;

/// One request copied to a shadow version.
pub struct ShadowJob {
    /// The version that answered.
    pub live_version: u64,
    /// What it answered.
    pub live_outputs: Vec<Tensor>,
    /// The shadow version.
    pub shadow: Arc<ServedVersion>,
    /// The request's inputs.
    pub inputs: Vec<Tensor>,
    /// The outputs the request asked for.
    pub requested: Vec<String>,
    /// The limits the live request ran under.
    pub limits: LimitOverrides,
    /// The caller's token name.
    pub caller: Option<String>,
    /// The request id, and whether the live prediction was logged (the shadow's is too).
    pub id: Option<String>,
    /// Whether the live prediction was logged.
    pub sampled: bool,
}

/// Hands copies to the shadow worker thread; the thread ends when this is dropped.
pub struct ShadowRunner {
    jobs: SyncSender<ShadowJob>,
}

impl ShadowRunner {
    /// Starts the worker thread.
    pub fn start(registry: Arc<ModelRegistry>, observer: Arc<Observer>) -> ShadowRunner {
        let (jobs, queue) = sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("edgeinfer-shadow".into())
            .spawn(move || work(&registry, &observer, queue));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the shadow worker; shadow copies will be dropped");
        }
        ShadowRunner { jobs }
    }

    /// Queues a copy; returns false when it was dropped (queue full).
    pub fn submit(&self, job: ShadowJob) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job)) => {
                tracing::debug!(version = job.shadow.version(), "shadow queue full; copy dropped");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn work(registry: &ModelRegistry, observer: &Observer, queue: Receiver<ShadowJob>) {
    for job in queue {
        let shadow = &job.shadow;
        let name = shadow.model.manifest().name.clone();
        let started = Instant::now();
        // A shadow's prediction is only logged when the live one was: copy its inputs then.
        let logged_inputs = job.sampled.then(|| job.inputs.clone());
        let rows = edgeinfer_runtime::pipeline::rows_of(&job.inputs);
        let outcome = shadow.model.infer(job.inputs, &job.requested, job.limits);
        shadow.stats.touch();
        shadow.stats.record_executions(1);
        let agreed = match outcome {
            Ok(outcome) => {
                shadow.stats.record_success(started.elapsed());
                shadow.stats.record_rows(rows);
                shadow.stats.fuel.fetch_add(outcome.fuel_used, Ordering::Relaxed);
                let outputs_agree = outputs_agree(&outcome.outputs, &job.live_outputs).is_ok();
                let tolerance = registry.agreement_tolerance(&name);
                let (rows, rows_agreed) =
                    predictions_agreeing(&shadow.monitor.spec, &outcome.outputs, &job.live_outputs, tolerance)
                        .unwrap_or((1, u64::from(outputs_agree)));
                if let Some(inputs) = logged_inputs {
                    let kept = KeptTensors { inputs, requested: job.requested, outputs: outcome.outputs };
                    let request = Observed { id: job.id.as_deref(), caller: job.caller.as_deref(), sampled: true };
                    observer.observe(shadow, Role::Shadow, request, kept);
                }
                ShadowOutcome::Compared { outputs_agree, rows, rows_agreed }
            }
            Err(error) => {
                shadow.stats.fail.record(started.elapsed());
                shadow.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(model = %name, version = shadow.version(), %error, "shadow copy failed");
                ShadowOutcome::Failed
            }
        };
        registry.record_agreement(&name, job.live_version, shadow.version(), agreed);
    }
}

/// Rows of the prediction output (see [`PredictionSpec`]) on which `shadow` and `live` agree:
/// equal classes, numbers within `tolerance * max(1, |live|)`; `None` when the outputs hold
/// no prediction to compare.
fn predictions_agreeing(
    spec: &PredictionSpec,
    shadow: &[Tensor],
    live: &[Tensor],
    tolerance: f64,
) -> Option<(u64, u64)> {
    let (_, shadow) = spec.extract(shadow)?;
    let (_, live) = spec.extract(live)?;
    if shadow.len() != live.len() {
        return Some((live.len().max(1) as u64, 0));
    }
    let agreed = shadow
        .iter()
        .zip(&live)
        .filter(|(s, l)| match (s, l) {
            (LabelValue::Class(s), LabelValue::Class(l)) => s == l,
            (LabelValue::Number(s), LabelValue::Number(l)) => (s - l).abs() <= tolerance * l.abs().max(1.0),
            _ => false,
        })
        .count();
    Some((live.len() as u64, agreed as u64))
}
