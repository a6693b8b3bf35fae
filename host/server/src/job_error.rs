//! Why a request about batch jobs was refused (shared by the jobs API and its stand-in in
//! builds without the `batch` feature).

/// Why a request about jobs was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Bad request (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// No such job (HTTP 404).
    #[error("no batch job '{0}'")]
    NotFound(String),
    /// Batch jobs are off (HTTP 404).
    #[error("batch jobs are off: set `batch_dir` in the server config")]
    Off,
    /// This build has no batch jobs (HTTP 501).
    #[error("this build of edgeinfer leaves out batch jobs (cargo feature `batch`)")]
    NotBuilt,
}
