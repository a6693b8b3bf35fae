//! Dynamic batching, the server side: a per-version queue of decoded requests.
//!
//! Every batched request enqueues itself, then competes for an inference slot as any
//! request does. Whichever request gets a slot first becomes its call's leader: it waits up
//! to `max_queue_delay_us` for company (0: not at all), takes its own entry and the queued
//! entries that batch with it (same [`BatchKey`], up to `max_batch_size` rows, oldest
//! first), runs them as one call and finishes every member. A member taken by another
//! leader gets its answer without ever running itself. Under load the slots are busy, so
//! requests pile up and calls grow on their own; at low load every request is its own call.
//! A request whose client goes away while its entry still waits is withdrawn.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::Result;
use edgeinfer_runtime::coalesce::{BatchKey, Member};
use edgeinfer_runtime::model::InferOutcome;
use serde::Deserialize;

/// `[batching]` in a model's `config.toml`: concurrent requests for the same version with
/// compatible inputs run as one call (see [`edgeinfer_runtime::coalesce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most rows in one call, e.g. `32`; a request with more runs alone.
    pub max_batch_size: u64,
    /// How long a request may wait for others to join its call, in µs; 0 takes what is
    /// already queued, e.g. `500`.
    #[serde(default)]
    pub max_queue_delay_us: u64,
}

impl BatchingConfig {
    /// Refuses batching for a model whose inputs or outputs have a fixed first dimension, or
    /// a zero batch size; the message names the model and the tensor.
    pub fn check(&self, manifest: &edgeinfer_runtime::manifest::Manifest) -> std::result::Result<(), String> {
        let model = &manifest.name;
        if self.max_batch_size == 0 {
            return Err(format!("model {model}: [batching] max_batch_size must be at least 1"));
        }
        for (kind, tensors) in [("input", &manifest.inputs), ("output", &manifest.outputs)] {
            for tensor in tensors {
                if tensor.shape.first() != Some(&-1) {
                    return Err(format!(
                        "model {model}: [batching] needs a dynamic first (batch) dimension, but {kind} {} has shape {:?}",
                        tensor.name, tensor.shape
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a member's request does with its outcome: encode, record, reply.
pub type Finish = Box<dyn FnOnce(Result<InferOutcome>, &CallReport) + Send>;

/// The call a member was answered by.
#[derive(Debug, Clone, Copy)]
pub struct CallReport {
    /// When the call started (the end of the members' queueing).
    pub started: Instant,
    /// Time of the call, reruns included.
    pub infer_time: Duration,
}

/// A request waiting to be run.
pub struct Queued {
    ticket: u64,
    /// `None`: batches with nothing (e.g. a scalar input).
    key: Option<BatchKey>,
    enqueued: Instant,
    /// The outputs asked for.
    pub requested: Vec<String>,
    /// Its inputs and limits.
    pub member: Member,
    /// What to do with its outcome.
    pub finish: Finish,
}

/// The queue of one model version.
pub struct BatchQueue {
    config: BatchingConfig,
    state: Mutex<State>,
    arrived: Notify,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    waiting: VecDeque<Queued>,
}

impl BatchQueue {
    /// An empty queue.
    pub fn new(config: BatchingConfig) -> Self {
        BatchQueue { config, state: Mutex::new(State::default()), arrived: Notify::new() }
    }

    /// The settings.
    pub fn config(&self) -> BatchingConfig {
        self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a request; its ticket names it from now on.
    pub fn enqueue(&self, key: Option<BatchKey>, requested: Vec<String>, member: Member, finish: Finish) -> u64 {
        let mut state = self.state();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(Queued { ticket, key, enqueued: Instant::now(), requested, member, finish });
        drop(state);
        self.arrived.notify_waiters();
        ticket
    }

    /// Removes a request that is still waiting; `false` when a leader already took it.
    pub fn withdraw(&self, ticket: u64) -> bool {
        let mut state = self.state();
        match state.waiting.iter().position(|q| q.ticket == ticket) {
            Some(at) => {
                state.waiting.remove(at);
                true
            }
            None => false,
        }
    }

    /// Waits, at most until `max_queue_delay_us` after the request arrived, for enough
    /// compatible rows to fill a call; returns at once when the delay is 0.
    pub async fn await_company(&self, ticket: u64) {
        let delay = Duration::from_micros(self.config.max_queue_delay_us);
        if delay.is_zero() {
            return;
        }
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let state = self.state();
                let Some(own) = state.waiting.iter().find(|q| q.ticket == ticket) else { return };
                let Some(key) = &own.key else { return };
                let rows: u64 =
                    state.waiting.iter().filter(|q| q.key.as_ref() == Some(key)).map(|q| q.member.rows).sum();
                let deadline = own.enqueued + delay;
                if rows >= self.config.max_batch_size || Instant::now() >= deadline {
                    return;
                }
                deadline
            };
            tokio::select! {
                _ = precise_sleep_until(deadline) => return,
                _ = &mut notified => {}
            }
        }
    }

    /// Takes the request `ticket` (first) and the waiting requests that batch with it,
    /// oldest first, up to `max_batch_size` rows; `None` when a leader already took it.
    pub fn take(&self, ticket: u64) -> Option<Vec<Queued>> {
        let mut state = self.state();
        let at = state.waiting.iter().position(|q| q.ticket == ticket)?;
        let own = state.waiting.remove(at)?;
        let mut rows = own.member.rows;
        let key = own.key.clone();
        let mut call = vec![own];
        if let Some(key) = key {
            let mut index = 0;
            while index < state.waiting.len() && rows < self.config.max_batch_size {
                let candidate = &state.waiting[index];
                if candidate.key.as_ref() == Some(&key) && rows + candidate.member.rows <= self.config.max_batch_size {
                    rows += candidate.member.rows;
                    call.extend(state.waiting.remove(index));
                } else {
                    index += 1;
                }
            }
        }
        Some(call)
    }
}

/// Sleeps until `deadline` to within tens of µs: tokio's timers tick in whole milliseconds,
/// which would turn a 500 µs batching delay into 1-2 ms, so the sub-millisecond rest is slept
/// by a blocking thread.
async fn precise_sleep_until(deadline: Instant) {
    let coarse = deadline.checked_sub(Duration::from_millis(2));
    if let Some(coarse) = coarse.filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// A request's place in the queue; withdrawn on drop if no leader took it (the client
/// went away before it ran).
pub struct Enrolled<'a> {
    queue: &'a BatchQueue,
    /// The request's ticket.
    pub ticket: u64,
}

impl<'a> Enrolled<'a> {
    /// Watches `ticket` in `queue`.
    pub fn new(queue: &'a BatchQueue, ticket: u64) -> Self {
        Enrolled { queue, ticket }
    }
}

impl Drop for Enrolled<'_> {
    fn drop(&mut self) {
        self.queue.withdraw(self.ticket);
    }
}

/// Runs one call: the model over the members (see [`edgeinfer_runtime::coalesce::run_batch`]), then
/// every member's `finish`. Returns the model calls made.
pub fn run_call(model: &edgeinfer_runtime::LoadedModel, call: Vec<Queued>) -> u64 {
    let started = Instant::now();
    let requested = call.first().map(|q| q.requested.clone()).unwrap_or_default();
    let (members, finishes): (Vec<Member>, Vec<Finish>) = call.into_iter().map(|q| (q.member, q.finish)).unzip();
    let (results, report) = edgeinfer_runtime::coalesce::run_batch(model, members, &requested);
    let call_report = CallReport { started, infer_time: report.infer_time };
    for (finish, result) in finishes.into_iter().zip(results) {
        finish(result, &call_report);
    }
    report.executions
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer_oip::{Datatype, Tensor};

    fn member(rows: u64, width: u64) -> (Option<BatchKey>, Member) {
        let inputs = vec![Tensor {
            name: "X".into(),
            datatype: Datatype::Fp32,
            shape: vec![rows, width],
            data: vec![0; (rows * width * 4) as usize].into(),
        }];
        let key = BatchKey::of(&inputs, &[]).map(|(key, _)| key);
        (key, Member { inputs, rows, limits: Default::default() })
    }

    fn enqueue(queue: &BatchQueue, rows: u64, width: u64) -> u64 {
        let (key, member) = member(rows, width);
        queue.enqueue(key, Vec::new(), member, Box::new(|_, _| {}))
    }

    #[test]
    fn a_leader_takes_its_likes_up_to_the_row_limit_oldest_first() {
        let queue = BatchQueue::new(BatchingConfig { max_batch_size: 4, max_queue_delay_us: 0 });
        let a = enqueue(&queue, 1, 64);
        let other_shape = enqueue(&queue, 1, 63);
        let b = enqueue(&queue, 2, 64);
        let too_big = enqueue(&queue, 2, 64);
        let c = enqueue(&queue, 1, 64);
        let call = queue.take(b).expect("b waits");
        let tickets: Vec<u64> = call.iter().map(|q| q.ticket).collect();
        assert_eq!(tickets, vec![b, a, c], "own first, then the oldest that fit");
        assert!(queue.take(a).is_none(), "a was answered by b's call");
        assert!(!queue.withdraw(c));
        assert!(queue.withdraw(other_shape), "a different shape never joined");
        assert_eq!(queue.take(too_big).map(|call| call.len()), Some(1));
    }

    #[test]
    fn a_dropped_request_leaves_the_queue() {
        let queue = BatchQueue::new(BatchingConfig { max_batch_size: 8, max_queue_delay_us: 0 });
        let ticket = enqueue(&queue, 1, 64);
        drop(Enrolled::new(&queue, ticket));
        assert!(queue.take(ticket).is_none());
    }
}
