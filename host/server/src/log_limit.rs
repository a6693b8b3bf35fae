//! Rate-limited logging of request errors, so a flood of bad requests cannot flood the log:
//! at most N lines per second, then one line saying how many were suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A per-second budget of log lines.
pub struct LogLimiter {
    per_second: u32,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `per_second` lines each second (0: none).
    pub fn per_second(per_second: u32) -> Self {
        LogLimiter { per_second, window: Mutex::new(Window { started: Instant::now(), logged: 0, suppressed: 0 }) }
    }

    /// Logs a failed request unless this second's budget is spent.
    pub fn request_failed(&self, status: u16, path: &str, message: &str) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if window.started.elapsed() >= Duration::from_secs(1) {
            if window.suppressed > 0 {
                tracing::warn!(suppressed = window.suppressed, "request errors not logged in the last second");
            }
            *window = Window { started: Instant::now(), logged: 0, suppressed: 0 };
        }
        if window.logged >= self.per_second {
            window.suppressed += 1;
            return;
        }
        window.logged += 1;
        drop(window);
        tracing::warn!(status, path, error = message, "request failed");
    }

    /// Lines suppressed in the current window.
    #[cfg(test)]
    fn suppressed(&self) -> u64 {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_budget_are_suppressed() {
        let limiter = LogLimiter::per_second(3);
        for _ in 0..10 {
            limiter.request_failed(400, "/v2/models/x/infer", "bad");
        }
        assert_eq!(limiter.suppressed(), 7);
    }
}
