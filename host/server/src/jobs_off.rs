//! Batch jobs in a build without the `batch` feature (no Arrow or Parquet): the same API,
//! answering that jobs are left out (HTTP 501); a `batch_dir` setting is refused at start
//! (`crate::check_build`).

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

pub use super::job_error::JobError;
use super::registry::ModelRegistry;

/// A job; none can exist in this build.
#[derive(Debug, Clone)]
pub enum Job {}

/// The jobs API of a build without batch jobs.
pub struct BatchJobs;

impl BatchJobs {
    /// Jobs are off (`crate::check_build` refuses a `batch_dir` in this build).
    pub fn open(_dir: Option<&Path>, _state_dir: &Path, _workers: usize) -> crate::Result<Arc<BatchJobs>> {
        Ok(Arc::new(BatchJobs))
    }

    /// Nothing to run.
    pub fn start(self: &Arc<Self>, _registry: Arc<ModelRegistry>) {}

    /// Nothing to stop.
    pub fn stop(&self) {}

    /// Refused: no batch jobs in this build.
    pub fn submit(&self, _registry: &ModelRegistry, _body: &[u8]) -> Result<Job, JobError> {
        Err(JobError::NotBuilt)
    }

    /// Refused: no batch jobs in this build.
    pub fn list(&self) -> Result<Vec<Job>, JobError> {
        Err(JobError::NotBuilt)
    }

    /// Refused: no batch jobs in this build.
    pub fn get(&self, _id: &str) -> Result<Job, JobError> {
        Err(JobError::NotBuilt)
    }

    /// Refused: no batch jobs in this build.
    pub fn cancel(&self, _id: &str) -> Result<Job, JobError> {
        Err(JobError::NotBuilt)
    }
}

/// A job as JSON (never called: no job exists).
pub fn to_json(job: &Job) -> Value {
    match *job {}
}
