//! Batch jobs over HTTP: `POST /v2/batch/jobs` queues a file-to-file job inside `batch_dir`,
//! one runner thread works through the queue with `batch_workers` scoring threads (leaving
//! the rest of the machine to real-time traffic), `GET` shows progress, `DELETE` cancels.
//! Jobs are kept as JSON files in the repository's state directory; a job interrupted by a
//! shutdown or crash is queued again at start-up and resumes from its checkpoint.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::job_error::JobError;
use super::registry::ModelRegistry;
use edgeinfer_batch::{BatchError, BatchOptions, MaxErrors, Status};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the runner.
    Queued,
    /// Being scored.
    Running,
    /// Complete; the output is in place.
    Done,
    /// Stopped by an error (see `error`).
    Failed,
    /// Cancelled by `DELETE`.
    Cancelled,
}

/// A job as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The job id.
    pub id: String,
    /// Model name.
    pub model: String,
    /// Model version (None: the highest loaded when it starts).
    pub version: Option<u64>,
    /// The job's files and options (paths resolved inside `batch_dir`).
    pub options: BatchOptions,
    /// Where it is.
    pub state: JobState,
    /// Rows scored or failed so far.
    pub rows_done: u64,
    /// Of those, failed.
    pub rows_failed: u64,
    /// Rows per second of the current run.
    pub rows_per_second: f64,
    /// Seconds left, estimated from the input read so far.
    pub eta_seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was submitted (RFC 3339).
    pub created: String,
}

/// What a client submits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    model: String,
    version: Option<u64>,
    input: String,
    output: String,
    errors: Option<String>,
    input_format: Option<edgeinfer_batch::Format>,
    batch_size: Option<usize>,
    id_column: Option<String>,
    columns: Option<Vec<String>>,
    max_errors: Option<String>,
    restart: Option<bool>,
}

struct Entry {
    job: Job,
    cancel: Arc<AtomicBool>,
}

/// The jobs of a server and the thread that runs them.
pub struct BatchJobs {
    dir: Option<PathBuf>,
    store: PathBuf,
    workers: usize,
    jobs: Mutex<BTreeMap<String, Entry>>,
    wake: Condvar,
    stopping: AtomicBool,
}

impl BatchJobs {
    /// The jobs under `state_dir/batch`, with files confined to `dir` (None: jobs off);
    /// unfinished ones are queued again.
    pub fn open(dir: Option<&Path>, state_dir: &Path, workers: usize) -> crate::Result<Arc<BatchJobs>> {
        let dir = dir
            .map(|d| {
                std::fs::canonicalize(d).map_err(|e| crate::Error::Config(format!("batch_dir {}: {e}", d.display())))
            })
            .transpose()?;
        let store = state_dir.join("batch");
        let mut jobs = BTreeMap::new();
        if dir.is_some() {
            std::fs::create_dir_all(&store)
                .map_err(|e| crate::Error::io(format!("creating {}", store.display()), e))?;
            for entry in std::fs::read_dir(&store).map_err(|e| crate::Error::io("reading batch jobs", e))?.flatten() {
                let Ok(bytes) = std::fs::read(entry.path()) else { continue };
                let Ok(mut job) = serde_json::from_slice::<Job>(&bytes) else { continue };
                if job.state == JobState::Running {
                    job.state = JobState::Queued;
                }
                jobs.insert(job.id.clone(), Entry { job, cancel: Arc::new(AtomicBool::new(false)) });
            }
        }
        Ok(Arc::new(BatchJobs {
            dir,
            store,
            workers: workers.max(1),
            jobs: Mutex::new(jobs),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
        }))
    }

    /// Starts the runner thread (when jobs are on).
    pub fn start(self: &Arc<Self>, registry: Arc<ModelRegistry>) {
        if self.dir.is_none() {
            return;
        }
        let jobs = self.clone();
        let spawned = std::thread::Builder::new().name("edgeinfer-batch".into()).spawn(move || jobs.run(&registry));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the batch job runner");
        }
    }

    /// Stops the runner; a running job keeps its checkpoint and is queued again.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for entry in self.lock().values() {
            entry.cancel.store(true, Ordering::Relaxed);
        }
        self.wake.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job from a request body.
    pub fn submit(&self, registry: &ModelRegistry, body: &[u8]) -> Result<Job, JobError> {
        let dir = self.dir.as_ref().ok_or(JobError::Off)?;
        let submission: Submission =
            serde_json::from_slice(body).map_err(|e| JobError::Invalid(format!("malformed batch job JSON: {e}")))?;
        let served =
            registry.resolve(&submission.model, submission.version).map_err(|e| JobError::Invalid(e.to_string()))?;
        let input = confined(dir, &submission.input, true)?;
        let output = confined(dir, &submission.output, false)?;
        let errors = submission.errors.as_deref().map(|e| confined(dir, e, false)).transpose()?;
        let max_errors =
            submission.max_errors.as_deref().map(str::parse::<MaxErrors>).transpose().map_err(JobError::Invalid)?;
        let options = BatchOptions {
            input,
            input_format: submission.input_format,
            output,
            errors,
            batch_size: submission.batch_size,
            workers: Some(self.workers),
            id_column: submission.id_column,
            columns: submission.columns,
            max_errors,
            restart: submission.restart.unwrap_or(false),
        };
        edgeinfer_batch::check(&served.model, &options).map_err(|e| JobError::Invalid(e.to_string()))?;
        let job = Job {
            id: edgeinfer_runtime::pipeline::new_request_id(),
            model: submission.model,
            version: submission.version,
            options,
            state: JobState::Queued,
            rows_done: 0,
            rows_failed: 0,
            rows_per_second: 0.0,
            eta_seconds: None,
            error: None,
            created: edgeinfer_runtime::clock::now_rfc3339(),
        };
        self.save(&job);
        self.lock().insert(job.id.clone(), Entry { job: job.clone(), cancel: Arc::new(AtomicBool::new(false)) });
        self.wake.notify_all();
        Ok(job)
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Result<Vec<Job>, JobError> {
        self.dir.as_ref().ok_or(JobError::Off)?;
        let mut jobs: Vec<Job> = self.lock().values().map(|e| e.job.clone()).collect();
        jobs.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(jobs)
    }

    /// One job.
    pub fn get(&self, id: &str) -> Result<Job, JobError> {
        self.dir.as_ref().ok_or(JobError::Off)?;
        self.lock().get(id).map(|e| e.job.clone()).ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    /// Cancels a queued or running job (its checkpoint is kept; resubmitting resumes it).
    pub fn cancel(&self, id: &str) -> Result<Job, JobError> {
        self.dir.as_ref().ok_or(JobError::Off)?;
        let mut jobs = self.lock();
        let entry = jobs.get_mut(id).ok_or_else(|| JobError::NotFound(id.to_string()))?;
        entry.cancel.store(true, Ordering::Relaxed);
        if entry.job.state == JobState::Queued {
            entry.job.state = JobState::Cancelled;
            self.save(&entry.job);
        }
        Ok(entry.job.clone())
    }

    fn save(&self, job: &Job) {
        let path = self.store.join(format!("{}.json", job.id));
        let temporary = path.with_extension("json.tmp");
        let written = std::fs::write(&temporary, serde_json::to_vec_pretty(job).unwrap_or_default())
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(error) = written {
            tracing::error!(%error, job = %job.id, "cannot save the batch job");
        }
    }

    /// Runs queued jobs one at a time until stopped.
    fn run(&self, registry: &ModelRegistry) {
        loop {
            let next = {
                let mut jobs = self.lock();
                loop {
                    if self.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    let queued = jobs
                        .values_mut()
                        .filter(|e| e.job.state == JobState::Queued)
                        .min_by(|a, b| a.job.created.cmp(&b.job.created));
                    if let Some(entry) = queued {
                        entry.job.state = JobState::Running;
                        self.save(&entry.job);
                        break (entry.job.clone(), entry.cancel.clone());
                    }
                    jobs = self.wake.wait(jobs).unwrap_or_else(|p| p.into_inner());
                }
            };
            let (job, cancel) = next;
            tracing::info!(job = %job.id, model = %job.model, input = %job.options.input.display(), "batch job started");
            let outcome = match registry.resolve(&job.model, job.version) {
                Ok(served) => {
                    let progress = |status: &Status| self.progress(&job.id, status);
                    edgeinfer_batch::run(&served.model, &job.options, &progress, &cancel)
                }
                Err(error) => Err(BatchError::Input(error.to_string())),
            };
            let mut jobs = self.lock();
            let Some(entry) = jobs.get_mut(&job.id) else { continue };
            match outcome {
                Ok(summary) => {
                    entry.job.state = JobState::Done;
                    entry.job.rows_done = summary.rows_ok + summary.rows_failed;
                    entry.job.rows_failed = summary.rows_failed;
                    entry.job.eta_seconds = Some(0.0);
                }
                Err(BatchError::Cancelled(_)) if self.stopping.load(Ordering::Relaxed) => {
                    entry.job.state = JobState::Queued; // resumes after the restart
                }
                Err(BatchError::Cancelled(_)) => entry.job.state = JobState::Cancelled,
                Err(error) => {
                    entry.job.state = JobState::Failed;
                    entry.job.error = Some(error.to_string());
                }
            }
            tracing::info!(job = %job.id, state = ?entry.job.state, "batch job ended");
            self.save(&entry.job);
        }
    }

    fn progress(&self, id: &str, status: &Status) {
        let mut jobs = self.lock();
        if let Some(entry) = jobs.get_mut(id) {
            let job = &mut entry.job;
            job.rows_done = status.rows_done;
            job.rows_failed = status.rows_failed;
            job.rows_per_second = status.rows_per_second;
            job.eta_seconds = (status.bytes_read > 0 && status.rows_per_second > 0.0).then(|| {
                let total = status.rows_done as f64 * status.bytes_total as f64 / status.bytes_read as f64;
                ((total - status.rows_done as f64) / status.rows_per_second).max(0.0)
            });
        }
    }
}

/// `relative` inside `dir`: no absolute paths, no `..`, no symlink leading out. Inputs must
/// exist; outputs must sit in an existing directory inside `dir` and not be symlinks.
fn confined(dir: &Path, relative: &str, must_exist: bool) -> Result<PathBuf, JobError> {
    let refuse = |why: &str| JobError::Invalid(format!("path {relative:?} {why}; paths are relative to batch_dir"));
    let path = Path::new(relative);
    if relative.is_empty() || path.is_absolute() {
        return Err(refuse("is absolute or empty"));
    }
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(refuse("leaves batch_dir (`..` or a root)"));
    }
    let joined = dir.join(path);
    let resolved = if must_exist {
        std::fs::canonicalize(&joined).map_err(|_| refuse("does not exist"))?
    } else {
        if joined.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(refuse("is a symlink"));
        }
        let parent = joined.parent().ok_or_else(|| refuse("has no directory"))?;
        let parent = std::fs::canonicalize(parent).map_err(|_| refuse("is in a directory that does not exist"))?;
        parent.join(joined.file_name().ok_or_else(|| refuse("names no file"))?)
    };
    if !resolved.starts_with(dir) {
        return Err(refuse("leads outside batch_dir through a symlink"));
    }
    Ok(resolved)
}

/// A job as JSON.
pub fn to_json(job: &Job) -> Value {
    serde_json::to_value(job).unwrap_or_default()
}
