//! Admission control: what a connection or request must hold to be served (a connection
//! place, a share of the body budget, a queue place, an inference slot).
//!
//! Every one of them is a guard whose `Drop` gives the capacity back, because hyper drops a
//! handler's future at any `.await` when its client goes away. The inference slot moves into
//! the blocking work and is released when the inference ends, whatever the client does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Body budget accounting unit: a request body reserves its size in KiB, rounded up.
const KIB: usize = 1024;

/// Why a request or connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every connection place is taken.
    #[error("server busy: too many open connections (limit {0})")]
    Connections(usize),
    /// The bodies being held already use the whole body budget.
    #[error("server busy: request bodies in memory reached the budget of {0} bytes")]
    BodyBudget(usize),
    /// Every queue place is taken.
    #[error("server busy: the inference queue is full")]
    QueueFull,
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
}

/// The sizes admission enforces.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Bytes of request bodies held in memory at once, across connections.
    pub body_budget_bytes: usize,
    /// Requests waiting for an inference slot.
    pub max_queue: usize,
    /// Inferences running at once.
    pub max_concurrent_inferences: usize,
}

/// Current load, read from the counters (for the server status view and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdmissionSnapshot {
    /// Open connections.
    pub connections: usize,
    /// Requests waiting for an inference slot.
    pub queued: usize,
    /// Inferences running.
    pub in_flight: usize,
    /// Bytes of request bodies reserved.
    pub body_bytes_reserved: usize,
    /// Requests refused by admission (503) since start.
    pub rejected: u64,
    /// Requests whose client went away before its answer was sent, since start.
    pub client_disconnected: u64,
}

/// Capacity shared by every connection of one server.
pub struct Admission {
    limits: AdmissionLimits,
    connections: Arc<Semaphore>,
    body_budget: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    rejected: AtomicU64,
    disconnected: AtomicU64,
}

impl Admission {
    /// Capacity for `limits`.
    pub fn new(limits: AdmissionLimits) -> Self {
        let budget_units = limits.body_budget_bytes.div_ceil(KIB).clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            body_budget: Arc::new(Semaphore::new(budget_units)),
            slots: Arc::new(Semaphore::new(limits.max_concurrent_inferences)),
            queued: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            rejected: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
        }
    }

    /// A place for one more connection, or a refusal when all are taken.
    pub fn connection(&self) -> Result<ConnectionPlace, Refusal> {
        self.connections
            .clone()
            .try_acquire_owned()
            .map(ConnectionPlace)
            .map_err(|_| self.refuse(Refusal::Connections(self.limits.max_connections)))
    }

    /// Reserves `bytes` (at least 1 KiB) of the body budget for a body about to be read.
    pub fn reserve_body(&self, bytes: usize) -> Result<BodyReservation, Refusal> {
        let units = bytes.div_ceil(KIB).max(1);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        self.body_budget
            .clone()
            .try_acquire_many_owned(units)
            .map(|permit| BodyReservation { _permit: permit })
            .map_err(|_| self.refuse(Refusal::BodyBudget(self.limits.body_budget_bytes)))
    }

    /// Waits for an inference slot, holding a queue place meanwhile; refuses at once when
    /// the queue is full. Cancellation-safe: dropping the future gives the place back.
    pub async fn inference_slot(&self) -> Result<InferenceSlot, Refusal> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(self.running(permit));
        }
        let place = self.queue_place()?;
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| Refusal::ShuttingDown)?;
        drop(place);
        Ok(self.running(permit))
    }

    /// Counts a request whose client went away before its answer.
    pub fn record_disconnect(&self) {
        self.disconnected.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> AdmissionSnapshot {
        let budget_units = self.limits.body_budget_bytes.div_ceil(KIB).max(1);
        AdmissionSnapshot {
            connections: self.limits.max_connections - self.connections.available_permits(),
            queued: self.queued.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            body_bytes_reserved: budget_units.saturating_sub(self.body_budget.available_permits()) * KIB,
            rejected: self.rejected.load(Ordering::Relaxed),
            client_disconnected: self.disconnected.load(Ordering::Relaxed),
        }
    }

    fn queue_place(&self) -> Result<QueuePlace, Refusal> {
        let max = self.limits.max_queue;
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map(|_| QueuePlace { queued: self.queued.clone() })
            .map_err(|_| self.refuse(Refusal::QueueFull))
    }

    fn running(&self, permit: OwnedSemaphorePermit) -> InferenceSlot {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InferenceSlot { _permit: permit, in_flight: self.in_flight.clone() }
    }

    fn refuse(&self, refusal: Refusal) -> Refusal {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        refusal
    }
}

/// One open connection's place; released when the connection ends.
pub struct ConnectionPlace(#[allow(dead_code)] OwnedSemaphorePermit);

/// A share of the body budget; released when the body is no longer needed.
pub struct BodyReservation {
    _permit: OwnedSemaphorePermit,
}

/// A place in the inference queue; released once a slot is taken or the wait is abandoned.
struct QueuePlace {
    queued: Arc<AtomicUsize>,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to run one inference; moved into the blocking work that runs it.
pub struct InferenceSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for InferenceSlot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Armed when a request starts; counts a client disconnect if dropped before [`Self::done`].
pub struct DisconnectWatch<'a> {
    admission: &'a Admission,
    done: bool,
}

impl<'a> DisconnectWatch<'a> {
    /// Watches one request.
    pub fn new(admission: &'a Admission) -> Self {
        DisconnectWatch { admission, done: false }
    }

    /// The answer is ready to be sent.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for DisconnectWatch<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.admission.record_disconnect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_queue: usize) -> Admission {
        Admission::new(AdmissionLimits {
            max_connections: 2,
            body_budget_bytes: 4 * KIB,
            max_queue,
            max_concurrent_inferences: 1,
        })
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_queue_place_back() {
        let admission = admission(1);
        let running = admission.inference_slot().await.expect("free slot");
        {
            let waiting = admission.inference_slot();
            let mut waiting = std::pin::pin!(waiting);
            let polled = futures_poll_once(waiting.as_mut()).await;
            assert!(polled.is_none(), "must wait for the running one");
            assert_eq!(admission.snapshot().queued, 1);
            assert_eq!(admission.inference_slot().await.err(), Some(Refusal::QueueFull));
        } // the waiting future is dropped here, as hyper does on a disconnect
        assert_eq!(admission.snapshot().queued, 0);
        assert_eq!(admission.snapshot().in_flight, 1);
        drop(running);
        assert_eq!(admission.snapshot().in_flight, 0);
        let again = admission.inference_slot().await.expect("slot free again");
        assert_eq!(admission.snapshot().in_flight, 1);
        drop(again);
        assert_eq!(admission.snapshot().rejected, 1);
    }

    #[test]
    fn budgets_and_connections_come_back_on_drop() {
        let admission = admission(0);
        let body = admission.reserve_body(3 * KIB).expect("fits");
        assert_eq!(admission.reserve_body(2 * KIB).err(), Some(Refusal::BodyBudget(4 * KIB)));
        assert_eq!(admission.snapshot().body_bytes_reserved, 3 * KIB);
        drop(body);
        assert!(admission.reserve_body(4 * KIB).is_ok());
        let places = (admission.connection().expect("1"), admission.connection().expect("2"));
        assert_eq!(admission.connection().err(), Some(Refusal::Connections(2)));
        drop(places);
        assert_eq!(admission.snapshot().connections, 0);
    }

    #[test]
    fn an_unfinished_request_counts_as_disconnected() {
        let admission = admission(0);
        drop(DisconnectWatch::new(&admission));
        DisconnectWatch::new(&admission).done();
        assert_eq!(admission.snapshot().client_disconnected, 1);
    }

    /// Polls a future once; `None` if it is pending.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(value) => Some(value),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
