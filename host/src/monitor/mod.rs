//! Monitoring data that outlives a request: the prediction log and its replay, input
//! samples, and reference distributions for drift. The server's live views (quality,
//! drift windows, alerts) build on these.

pub mod drift;
pub mod predictions;
pub mod replay;
pub mod samples;
