//! Where an inference runs: short ones on the connection's own thread, the rest on a
//! blocking thread.
//!
//! Handing a 50 µs inference to tokio's blocking pool costs a futex wake and two context
//! switches, about as much as the inference. So a version whose recent inferences average
//! under `inline_inference_us` runs on the async worker that read the request, as long as
//! fewer than `limit` inferences are running that way: at least one worker thread always
//! stays free for I/O (health checks, metrics, other connections), whatever the models do.
//! A version that slows down (bigger inputs, a hostile request running to its deadline)
//! raises its average and goes back to the blocking pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Decides whether an inference may run inline, and counts those that do.
#[derive(Debug)]
pub struct InlineGate {
    max: Duration,
    limit: usize,
    running: AtomicUsize,
}

/// An inline run in progress; gives its place back on drop.
#[derive(Debug)]
pub struct InlinePass<'a>(&'a AtomicUsize);

impl Drop for InlinePass<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InlineGate {
    /// Inline runs for versions averaging under `max`, at most `limit` at once (0: never).
    pub fn new(max: Duration, limit: usize) -> Self {
        InlineGate { max, limit, running: AtomicUsize::new(0) }
    }

    /// A gate sized for the current tokio runtime: one worker is always left for I/O.
    pub fn for_current_runtime(max: Duration, slots: usize) -> Self {
        let workers = tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers());
        InlineGate::new(max, slots.min(workers.saturating_sub(1)))
    }

    /// A pass when a version whose recent inferences average `recent` may run inline now.
    pub fn try_enter(&self, recent: Option<Duration>) -> Option<InlinePass<'_>> {
        if recent.is_none_or(|recent| recent >= self.max) {
            return None;
        }
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| InlinePass(&self.running))
    }
}

/// An exponentially weighted mean of a version's inference times (weight 1/8 per sample).
#[derive(Debug, Default)]
pub struct RecentMean {
    nanos: AtomicU64,
}

impl RecentMean {
    /// Adds one inference time.
    pub fn record(&self, elapsed: Duration) {
        let sample = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self.nanos.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            Some(if old == 0 { sample } else { old - old / 8 + sample / 8 })
        });
    }

    /// The mean, once there is a sample.
    pub fn get(&self) -> Option<Duration> {
        match self.nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fast_versions_run_inline_and_never_more_than_the_limit() {
        let gate = InlineGate::new(Duration::from_micros(300), 1);
        assert!(gate.try_enter(None).is_none(), "no history: blocking pool");
        assert!(gate.try_enter(Some(Duration::from_millis(2))).is_none(), "slow: blocking pool");
        let pass = gate.try_enter(Some(Duration::from_micros(50))).expect("fast and a place free");
        assert!(gate.try_enter(Some(Duration::from_micros(50))).is_none(), "limit reached");
        drop(pass);
        assert!(gate.try_enter(Some(Duration::from_micros(50))).is_some(), "place given back");
        assert!(InlineGate::new(Duration::from_micros(300), 0).try_enter(Some(Duration::ZERO)).is_none());
    }

    #[test]
    fn the_mean_follows_a_slowdown() {
        let mean = RecentMean::default();
        assert_eq!(mean.get(), None);
        mean.record(Duration::from_micros(50));
        assert_eq!(mean.get(), Some(Duration::from_micros(50)));
        for _ in 0..40 {
            mean.record(Duration::from_millis(5));
        }
        assert!(mean.get().unwrap() > Duration::from_millis(4), "{:?}", mean.get());
    }
}
