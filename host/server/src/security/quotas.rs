//! Per-caller limits: a token-bucket request rate and a fuel quota per minute (per token, or
//! per client address when authentication is off), and the lockout of an address after
//! repeated authentication failures. State is bounded: idle callers are forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::tokens::TokenLimits;

/// The fuel quota's window.
const FUEL_WINDOW: Duration = Duration::from_secs(60);
/// Callers (or addresses) tracked before idle ones are dropped.
const MAX_TRACKED: usize = 10_000;

/// Why a caller was throttled (HTTP 429).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Throttle {
    /// Over the request rate.
    #[error("rate limit: more than {rate_per_s} requests/s (burst {burst}) for {caller}")]
    Rate {
        /// Who.
        caller: String,
        /// The rate.
        rate_per_s: String,
        /// The burst.
        burst: u32,
        /// Seconds until a request is allowed again.
        retry_after: u64,
    },
    /// Over the fuel quota.
    #[error("fuel quota: {caller} used {used} of its {quota} fuel this minute")]
    Fuel {
        /// Who.
        caller: String,
        /// Fuel used in the window.
        used: u64,
        /// The quota.
        quota: u64,
        /// Seconds until the window ends.
        retry_after: u64,
    },
}

impl Throttle {
    /// Seconds for `Retry-After`.
    pub fn retry_after(&self) -> u64 {
        match self {
            Throttle::Rate { retry_after, .. } | Throttle::Fuel { retry_after, .. } => *retry_after,
        }
    }
}

/// One caller's use in the current fuel window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallerUsage {
    /// Requests admitted since the caller was first seen.
    pub requests: u64,
    /// Requests throttled since then.
    pub rejected: u64,
    /// Fuel used in the current minute.
    pub fuel_used: u64,
}

struct CallerState {
    bucket: f64,
    refilled: Instant,
    window_started: Instant,
    usage: CallerUsage,
}

/// Rate and fuel quotas of every caller.
pub struct Quotas {
    defaults: TokenLimits,
    callers: Mutex<HashMap<String, CallerState>>,
}

impl Quotas {
    /// Quotas with `defaults` for callers whose token sets none.
    pub fn new(defaults: TokenLimits) -> Quotas {
        Quotas { defaults, callers: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `caller`'s bucket, unless it is over its rate or its fuel.
    pub fn admit(&self, caller: &str, own: TokenLimits) -> Result<(), Throttle> {
        let rate = own.rate_per_s.or(self.defaults.rate_per_s);
        let burst = own.burst.or(self.defaults.burst);
        let fuel_quota = own.fuel_per_minute.or(self.defaults.fuel_per_minute);
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if callers.len() >= MAX_TRACKED && !callers.contains_key(caller) {
            callers.retain(|_, s| now.duration_since(s.window_started) < FUEL_WINDOW);
        }
        let capacity = f64::from(burst.unwrap_or(0).max(1));
        let state = callers.entry(caller.to_string()).or_insert_with(|| CallerState {
            bucket: capacity,
            refilled: now,
            window_started: now,
            usage: CallerUsage::default(),
        });
        if now.duration_since(state.window_started) >= FUEL_WINDOW {
            state.window_started = now;
            state.usage.fuel_used = 0;
        }
        if let Some(quota) = fuel_quota
            && state.usage.fuel_used >= quota
        {
            state.usage.rejected += 1;
            let left = FUEL_WINDOW.saturating_sub(now.duration_since(state.window_started));
            return Err(Throttle::Fuel {
                caller: caller.to_string(),
                used: state.usage.fuel_used,
                quota,
                retry_after: left.as_secs().max(1),
            });
        }
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            let elapsed = now.duration_since(state.refilled).as_secs_f64();
            state.bucket = (state.bucket + elapsed * rate).min(capacity);
            state.refilled = now;
            if state.bucket < 1.0 {
                state.usage.rejected += 1;
                let wait = ((1.0 - state.bucket) / rate).ceil().max(1.0) as u64;
                return Err(Throttle::Rate {
                    caller: caller.to_string(),
                    rate_per_s: rate.to_string(),
                    burst: capacity as u32,
                    retry_after: wait,
                });
            }
            state.bucket -= 1.0;
        }
        state.usage.requests += 1;
        Ok(())
    }

    /// Charges fuel a request of `caller` consumed.
    pub fn charge(&self, caller: &str, fuel: u64) {
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = callers.get_mut(caller) {
            state.usage.fuel_used = state.usage.fuel_used.saturating_add(fuel);
        }
    }

    /// Every caller's use.
    pub fn usage(&self) -> BTreeMap<String, CallerUsage> {
        let callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        callers.iter().map(|(k, s)| (k.clone(), s.usage)).collect()
    }
}

/// Locks an address out after `max_failures` authentication failures within `window`.
pub struct Lockout {
    max_failures: usize,
    window: Duration,
    cooldown: Duration,
    state: Mutex<LockoutState>,
}

#[derive(Default)]
struct LockoutState {
    failures: HashMap<IpAddr, VecDeque<Instant>>,
    locked: HashMap<IpAddr, Instant>,
}

impl Lockout {
    /// A lockout after `max_failures` in `window`, for `cooldown`.
    pub fn new(max_failures: usize, window: Duration, cooldown: Duration) -> Lockout {
        Lockout { max_failures, window, cooldown, state: Mutex::new(LockoutState::default()) }
    }

    /// How long `peer` stays locked out, if it is.
    pub fn locked(&self, peer: IpAddr) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = *state.locked.get(&peer)?;
        let now = Instant::now();
        if now >= until {
            state.locked.remove(&peer);
            return None;
        }
        Some(until - now)
    }

    /// Records a failure of `peer`; true when this one locks it out.
    pub fn failed(&self, peer: IpAddr) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state.failures.len() >= MAX_TRACKED && !state.failures.contains_key(&peer) {
            let window = self.window;
            state.failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let times = state.failures.entry(peer).or_default();
        times.push_back(now);
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.max_failures {
            times.clear();
            state.locked.insert(peer, now + self.cooldown);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_the_burst_then_throttles() {
        let quotas = Quotas::new(TokenLimits { rate_per_s: Some(1.0), burst: Some(3), fuel_per_minute: None });
        for _ in 0..3 {
            quotas.admit("a", TokenLimits::default()).expect("within the burst");
        }
        let throttled = quotas.admit("a", TokenLimits::default()).expect_err("over");
        assert!(matches!(throttled, Throttle::Rate { .. }) && throttled.retry_after() >= 1, "{throttled}");
        quotas.admit("b", TokenLimits::default()).expect("another caller is unaffected");
        assert_eq!(quotas.usage()["a"], CallerUsage { requests: 3, rejected: 1, fuel_used: 0 });
    }

    #[test]
    fn fuel_is_charged_to_its_caller() {
        let quotas = Quotas::new(TokenLimits::default());
        let own = TokenLimits { fuel_per_minute: Some(100), ..Default::default() };
        quotas.admit("greedy", own).expect("first");
        quotas.charge("greedy", 150);
        let error = quotas.admit("greedy", own).expect_err("over its fuel");
        assert!(error.to_string().contains("used 150 of its 100 fuel"), "{error}");
        quotas.admit("other", own).expect("the other caller still runs");
    }

    #[test]
    fn repeated_failures_lock_an_address_out() {
        let lockout = Lockout::new(3, Duration::from_secs(60), Duration::from_secs(30));
        let (bad, good) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(!lockout.failed(bad) && !lockout.failed(bad));
        assert!(lockout.failed(bad));
        assert!(lockout.locked(bad).is_some_and(|d| d > Duration::from_secs(25)));
        assert!(lockout.locked(good).is_none());
    }
}
