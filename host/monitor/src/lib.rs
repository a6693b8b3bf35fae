//! edgeinfer-monitor: monitoring data that outlives a request: the prediction log (sealed with
//! data keys, redacted, erasable) and its bit-exact replay, sample files of typical inputs (the drift reference's source), and
//! drift windows (PSI against a version's reference). The server's live views (quality,
//! drift, alerts) build on these.

#![deny(missing_docs)]

pub mod drift;
pub mod keys;
pub mod predictions;
pub mod redaction;
pub mod replay;
pub mod samples;

/// The runtime's error type, shared by every edgeinfer crate.
pub use edgeinfer_runtime::{Error, Result};
