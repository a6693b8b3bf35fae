//! Per-request resource limits: fuel, wall-clock deadline and memory.

use serde::{Deserialize, Serialize};

/// The budget one request runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wasm fuel (about one unit per instruction), e.g. `5000000000`.
    pub fuel: u64,
    /// Wall-clock deadline in milliseconds, e.g. `5000`.
    pub timeout_ms: u64,
    /// Linear memory cap in MiB, e.g. `512`.
    pub memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { fuel: 5_000_000_000, timeout_ms: 5_000, memory_mb: 512 }
    }
}

/// Limits given on a command line or in a request; each set field replaces the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Replaces [`Limits::fuel`].
    pub fuel: Option<u64>,
    /// Replaces [`Limits::timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// Replaces [`Limits::memory_mb`].
    pub memory_mb: Option<u64>,
}

impl Limits {
    /// These limits with `overrides` applied.
    pub fn with(self, overrides: LimitOverrides) -> Limits {
        Limits {
            fuel: overrides.fuel.unwrap_or(self.fuel),
            timeout_ms: overrides.timeout_ms.unwrap_or(self.timeout_ms),
            memory_mb: overrides.memory_mb.unwrap_or(self.memory_mb),
        }
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }
}

impl LimitOverrides {
    /// These overrides, falling back to `under` for each unset field (the server-wide
    /// overrides of `edgeinfer.toml` win over a model's `config.toml`).
    pub fn over(self, under: LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            fuel: self.fuel.or(under.fuel),
            timeout_ms: self.timeout_ms.or(under.timeout_ms),
            memory_mb: self.memory_mb.or(under.memory_mb),
        }
    }
}
