//! What a followed registry repository reports (`follow`), read by the metrics and the alert
//! rules; empty in builds without the `oci` feature.

/// What `follow` reports of one followed repository at scrape time.
#[derive(Debug, Clone)]
pub struct FollowFigures {
    /// `host[:port]/path`.
    pub repository: String,
    /// The model its versions are installed as.
    pub model: String,
    /// Whether the last poll reached the registry.
    pub reachable: bool,
    /// Versions installed, artifacts refused, polls failed.
    pub counts: (u64, u64, u64),
}
