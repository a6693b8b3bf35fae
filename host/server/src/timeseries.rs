//! Per-model request time series, one bucket per second for the last hour: requests,
//! errors (4xx and 5xx), server errors (5xx) and a latency histogram. Alert rules read
//! windows of it; the status page charts it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Seconds kept.
const KEEP_S: u64 = 3600;
/// Latency buckets: two per octave from 50 µs (bucket `i` holds up to 50 µs * 2^(i/2)).
const LATENCY_BUCKETS: usize = 44;

#[derive(Debug, Clone)]
struct Second {
    at: u64,
    requests: u64,
    errors: u64,
    server_errors: u64,
    latency: [u32; LATENCY_BUCKETS],
}

impl Second {
    fn new(at: u64) -> Second {
        Second { at, requests: 0, errors: 0, server_errors: 0, latency: [0; LATENCY_BUCKETS] }
    }
}

fn bucket(latency: Duration) -> usize {
    let ratio = latency.as_secs_f64() / 50e-6;
    if ratio <= 1.0 { 0 } else { ((ratio.log2() * 2.0).ceil() as usize).min(LATENCY_BUCKETS - 1) }
}

fn bucket_upper_ms(index: usize) -> f64 {
    0.05 * 2f64.powf(index as f64 / 2.0)
}

/// Figures over a span of seconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct WindowFigures {
    /// Start of the span (Unix seconds).
    pub t: u64,
    /// Requests seen.
    pub requests: u64,
    /// Requests per second over the span.
    pub rate: f64,
    /// Share of requests not answered successfully (4xx and 5xx); None without requests.
    pub error_rate: Option<f64>,
    /// Share answered with a 5xx.
    pub server_error_rate: Option<f64>,
    /// Median latency in ms (a bucket's upper bound, about ±19%).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in ms.
    pub p99_ms: Option<f64>,
}

/// The time series of every model.
#[derive(Default)]
pub struct Series {
    models: Mutex<BTreeMap<String, VecDeque<Second>>>,
}

/// How a request ended, for the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Answered (2xx).
    Answered,
    /// Refused as the client's fault or its quota (4xx).
    ClientError,
    /// Failed on the server's side (5xx).
    ServerError,
}

impl Ending {
    /// The ending of an HTTP status.
    pub fn of_status(status: u16) -> Ending {
        match status {
            500.. => Ending::ServerError,
            400.. => Ending::ClientError,
            _ => Ending::Answered,
        }
    }
}

fn now_s() -> u64 {
    edgeinfer_runtime::clock::now_ms() / 1000
}

impl Series {
    /// Records one request of `model` that ended so, after `latency` (None: not run).
    pub fn record(&self, model: &str, ending: Ending, latency: Option<Duration>) {
        self.record_at(now_s(), model, ending, latency);
    }

    fn record_at(&self, now: u64, model: &str, ending: Ending, latency: Option<Duration>) {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if !models.contains_key(model) {
            models.insert(model.to_string(), VecDeque::new());
        }
        let Some(seconds) = models.get_mut(model) else { return };
        if seconds.back().is_none_or(|s| s.at < now) {
            seconds.push_back(Second::new(now));
            while seconds.front().is_some_and(|s| s.at + KEEP_S <= now) {
                seconds.pop_front();
            }
        }
        let second = seconds.iter_mut().rev().find(|s| s.at <= now).filter(|s| s.at == now);
        let Some(second) = second else { return };
        second.requests += 1;
        if ending != Ending::Answered {
            second.errors += 1;
        }
        if ending == Ending::ServerError {
            second.server_errors += 1;
        }
        if let Some(latency) = latency {
            second.latency[bucket(latency)] += 1;
        }
    }

    /// The models seen.
    pub fn models(&self) -> Vec<String> {
        self.models.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Figures of `model` over the last `span` (whole seconds, the current one included).
    pub fn window(&self, model: &str, span: Duration) -> WindowFigures {
        let now = now_s();
        let span_s = span.as_secs().max(1);
        self.figures(model, now + 1 - span_s, now + 1)
    }

    /// The last `points` spans of `step` of `model`, oldest first.
    pub fn chart(&self, model: &str, step: Duration, points: usize) -> Vec<WindowFigures> {
        let step = step.as_secs().max(1);
        let end = (now_s() / step + 1) * step;
        (0..points as u64).rev().map(|k| self.figures(model, end - (k + 1) * step, end - k * step)).collect()
    }

    /// Figures over `[from, to)` (Unix seconds).
    fn figures(&self, model: &str, from: u64, to: u64) -> WindowFigures {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let mut figures = WindowFigures { t: from, ..WindowFigures::default() };
        let Some(seconds) = models.get(model) else { return figures };
        let (mut errors, mut server_errors) = (0, 0);
        let mut latency = [0u64; LATENCY_BUCKETS];
        for second in seconds.iter().filter(|s| s.at >= from && s.at < to) {
            figures.requests += second.requests;
            errors += second.errors;
            server_errors += second.server_errors;
            for (sum, count) in latency.iter_mut().zip(&second.latency) {
                *sum += u64::from(*count);
            }
        }
        figures.rate = figures.requests as f64 / (to - from).max(1) as f64;
        if figures.requests > 0 {
            figures.error_rate = Some(errors as f64 / figures.requests as f64);
            figures.server_error_rate = Some(server_errors as f64 / figures.requests as f64);
        }
        figures.p50_ms = percentile(&latency, 0.50);
        figures.p99_ms = percentile(&latency, 0.99);
        figures
    }
}

fn percentile(counts: &[u64], quantile: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = ((quantile * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    counts
        .iter()
        .position(|c| {
            seen += c;
            seen >= wanted
        })
        .map(|i| (bucket_upper_ms(i) * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_requests_errors_and_latency() {
        let series = Series::default();
        let now = now_s();
        series.record_at(now - 120, "m", Ending::ServerError, None);
        for i in 0..100u64 {
            let ending = if i < 10 {
                Ending::ServerError
            } else if i < 30 {
                Ending::ClientError
            } else {
                Ending::Answered
            };
            series.record_at(now, "m", ending, Some(Duration::from_millis(if i == 99 { 400 } else { 2 })));
        }
        let figures = series.window("m", Duration::from_secs(60));
        assert_eq!(figures.requests, 100);
        assert_eq!(figures.error_rate, Some(0.3));
        assert_eq!(figures.server_error_rate, Some(0.1));
        let p50 = figures.p50_ms.expect("p50");
        assert!((2.0..2.9).contains(&p50), "{p50}");
        assert!(figures.p99_ms.expect("p99") < 3.0);
        let wide = series.window("m", Duration::from_secs(600));
        assert_eq!(wide.requests, 101);
        let chart = series.chart("m", Duration::from_secs(60), 5);
        assert_eq!(chart.len(), 5);
        assert_eq!(chart.iter().map(|p| p.requests).sum::<u64>(), 101);
        assert_eq!(series.window("other", Duration::from_secs(60)).error_rate, None);
    }
}
