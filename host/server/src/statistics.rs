//! Per-version inference statistics in Triton's `inference_stats` shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// A count and the total time it took.
#[derive(Debug, Default)]
pub struct Counter {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Counter {
    /// Records one event of `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Events recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn to_json(&self) -> Value {
        json!({"count": self.count.load(Ordering::Relaxed), "ns": self.ns.load(Ordering::Relaxed)})
    }
}

/// Latencies in buckets four per octave (about ±10%), from 1 µs to over a minute, so
/// percentiles can be read without keeping every sample.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

const BUCKETS: usize = 4 * 27;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, elapsed: Duration) {
        let micros = elapsed.as_secs_f64() * 1e6;
        let index = if micros <= 1.0 { 0 } else { (micros.log2() * 4.0).ceil() as usize };
        self.buckets[index.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The latency under which `percent` of the recorded ones fall (a bucket's upper bound),
    /// in microseconds; `None` before any was recorded.
    pub fn percentile_us(&self, percent: f64) -> Option<f64> {
        percentile_us(&self.counts(), percent)
    }

    /// The count of each bucket now (windows subtract two of these).
    pub fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

/// The latency under which `percent` of a histogram's `counts` fall (a bucket's upper
/// bound), in microseconds; `None` when the counts are all zero.
pub fn percentile_us(counts: &[u64], percent: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = ((percent / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= wanted {
            return Some((2f64.powf(index as f64 / 4.0) * 10.0).round() / 10.0);
        }
    }
    None
}

/// The statistics of one model version.
#[derive(Debug, Default)]
pub struct VersionStats {
    /// Requests that succeeded.
    pub success: Counter,
    /// Requests that failed.
    pub fail: Counter,
    /// Time spent waiting for an inference slot.
    pub queue: Counter,
    /// Decoding the request.
    pub compute_input: Counter,
    /// Instantiating and running the model.
    pub compute_infer: Counter,
    /// Encoding the response.
    pub compute_output: Counter,
    /// Failures that are the version's fault: 5xx answers (traps, limit hits, model errors)
    /// and every failed shadow copy; what a rollout's error rate counts.
    pub errors: AtomicU64,
    /// Fuel consumed by successful requests.
    pub fuel: AtomicU64,
    /// Latency of successful requests, from decoding to encoding (queueing excluded).
    pub latency: LatencyHistogram,
    /// Rows inferred by successful requests (Triton's inference count).
    pub inferences: AtomicU64,
    /// Model calls (Triton's execution count): one per request, or per dynamic batch.
    pub executions: AtomicU64,
    /// Recent mean of instantiate + run, which decides whether requests run inline.
    pub recent_infer: crate::inline::RecentMean,
    last_inference_ms: AtomicU64,
}

impl VersionStats {
    /// Records a successful request that took `elapsed` (count, total time and histogram).
    pub fn record_success(&self, elapsed: Duration) {
        self.success.record(elapsed);
        self.latency.record(elapsed);
    }

    /// Records one request that went through the pipeline, whatever its outcome.
    pub fn record_request(
        &self,
        queue: Duration,
        result: &Result<edgeinfer_runtime::pipeline::Answer, edgeinfer_runtime::pipeline::Failure>,
    ) {
        self.touch();
        self.queue.record(queue);
        let times = match result {
            Ok(answer) => answer.times,
            Err(failure) => failure.times,
        };
        self.compute_input.record(times.decode);
        self.compute_infer.record(times.infer);
        self.recent_infer.record(times.infer);
        self.compute_output.record(times.encode);
        let elapsed = times.total();
        match result {
            Ok(answer) => {
                self.fuel.fetch_add(answer.fuel_used, Ordering::Relaxed);
                self.record_rows(answer.rows);
                self.record_success(elapsed);
            }
            Err(_) => self.fail.record(elapsed),
        }
    }

    /// Counts rows inferred by an answered request.
    pub fn record_rows(&self, rows: u64) {
        self.inferences.fetch_add(rows, Ordering::Relaxed);
    }

    /// Counts model calls.
    pub fn record_executions(&self, executions: u64) {
        self.executions.fetch_add(executions, Ordering::Relaxed);
    }

    /// Marks an inference as just finished.
    pub fn touch(&self) {
        self.last_inference_ms.store(edgeinfer_runtime::clock::now_ms(), Ordering::Relaxed);
    }

    /// Triton's `model_stats` entry for this version.
    pub fn to_json(&self, name: &str, version: u64) -> Value {
        json!({
            "name": name,
            "version": version.to_string(),
            "last_inference": self.last_inference_ms.load(Ordering::Relaxed),
            "inference_count": self.inferences.load(Ordering::Relaxed),
            "execution_count": self.executions.load(Ordering::Relaxed),
            "fuel_used": self.fuel.load(Ordering::Relaxed),
            "latency_us": {
                "p50": self.latency.percentile_us(50.0),
                "p90": self.latency.percentile_us(90.0),
                "p99": self.latency.percentile_us(99.0),
            },
            "inference_stats": {
                "success": self.success.to_json(),
                "fail": self.fail.to_json(),
                "queue": self.queue.to_json(),
                "compute_input": self.compute_input.to_json(),
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": self.compute_output.to_json(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_fall_in_the_right_bucket() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.percentile_us(50.0), None);
        for _ in 0..90 {
            histogram.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            histogram.record(Duration::from_millis(10));
        }
        let p50 = histogram.percentile_us(50.0).unwrap();
        let p99 = histogram.percentile_us(99.0).unwrap();
        assert!((100.0..=120.0).contains(&p50), "{p50}");
        assert!((10_000.0..=12_000.0).contains(&p99), "{p99}");
    }
}
