//! Per-version inference statistics in Triton's `inference_stats` shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    fn to_json(&self) -> Value {
        json!({"count": self.count.load(Ordering::Relaxed), "ns": self.ns.load(Ordering::Relaxed)})
    }
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
    /// Fuel consumed by successful requests.
    pub fuel: AtomicU64,
    last_inference_ms: AtomicU64,
}

impl VersionStats {
    /// Marks an inference as just finished.
    pub fn touch(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }

    /// Triton's `model_stats` entry for this version.
    pub fn to_json(&self, name: &str, version: u64) -> Value {
        let successes = self.success.count.load(Ordering::Relaxed);
        json!({
            "name": name,
            "version": version.to_string(),
            "last_inference": self.last_inference_ms.load(Ordering::Relaxed),
            "inference_count": successes,
            "execution_count": successes,
            "fuel_used": self.fuel.load(Ordering::Relaxed),
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
