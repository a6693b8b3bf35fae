//! The writing end of the prediction log: one thread that collects what was queued every few
//! milliseconds (no wake-up per record), redacts each record by its model's rules, and writes
//! the batch as one piece (a sealed segment when a data key is set) in a large sequential
//! write. Inference never waits for the disk: a record is dropped and counted when the queue
//! holds [`LogBounds::max_queued_bytes`] already or the log is over its
//! [`LogBounds::bytes_per_second`] budget. The same thread removes files past the size and
//! age bounds and carries out erasures between batches.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::erase::{Erasure, ErasureReport, erase};
use super::files::{self, EXTENSION, PLAIN_MAGIC, SEALED_MAGIC, log_files};
use super::{LogBounds, PredictionRecord};
use crate::keys::KeySource;
use crate::redaction::{HashKey, Redaction};
use crate::{Error, Result};
use edgeinfer_runtime::clock::now_ms;

/// Records waiting for the writer beyond this are dropped (whatever their size).
const QUEUE: usize = 16_384;
/// A batch of records is written (sealed) once it reaches this size, else every
/// [`WRITE_EVERY`].
const WRITE_BUFFER: usize = 1 << 20;
/// At most one warning about dropped records per this interval.
const WARN_EVERY_MS: u64 = 10_000;
/// How often the writer collects the queue (and writes).
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// How often files past the age bound are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// How a log protects what it writes.
#[derive(Default)]
pub struct LogProtection {
    /// Seal files with these data keys (none: plain files).
    pub keys: Option<KeySource>,
    /// The redaction key for `hash` rules (created on first use).
    pub hash_key: Option<PathBuf>,
}

/// The writing end of a prediction log; dropping it flushes what was queued and ends the
/// writer thread.
pub struct PredictionLog {
    queue: Arc<Queue>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    dir: PathBuf,
    bounds: LogBounds,
    budget: Mutex<TokenBucket>,
    last_warned_ms: AtomicU64,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl PredictionLog {
    /// Opens (creating) `dir` and starts the writer thread.
    pub fn open(dir: &Path, bounds: LogBounds, protection: LogProtection) -> Result<PredictionLog> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let queue = Arc::new(Queue::default());
        let written = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            bounds,
            protection,
            hash_key: None,
            tag: fastrand::u32(..),
            files: 0,
            file: None,
            pending: Vec::new(),
            written: written.clone(),
            expired: Instant::now(),
        };
        let shared = queue.clone();
        let handle = std::thread::Builder::new()
            .name("edgeinfer-predictions".into())
            .spawn(move || {
                yield_to_requests();
                writer.run(&shared)
            })
            .map_err(|e| Error::io("starting the prediction log writer", e))?;
        Ok(PredictionLog {
            queue,
            dropped: AtomicU64::new(0),
            written,
            dir: dir.to_path_buf(),
            bounds,
            budget: Mutex::new(TokenBucket::new(bounds.bytes_per_second)),
            last_warned_ms: AtomicU64::new(0),
            writer: Some(handle),
        })
    }

    /// Queues a record (its tensors are moved, not copied) to be written after `redaction`;
    /// drops and counts it when the writer is behind or the log is over its byte budget.
    /// Never blocks on the disk.
    pub fn append(&self, record: PredictionRecord, redaction: Option<Arc<Redaction>>) {
        let held = record.held_bytes();
        let logged = record.logged_bytes(self.bounds.max_full_tensor_bytes);
        let mut records = self.queue.records.lock().unwrap_or_else(|p| p.into_inner());
        let queued = self.queue.queued_bytes.load(Ordering::Relaxed);
        let has_room = records.len() < QUEUE && queued + held <= self.bounds.max_queued_bytes.max(held);
        // The budget is spent only by records that are queued (and so written).
        if has_room && self.budget.lock().unwrap_or_else(|p| p.into_inner()).take(logged) {
            self.queue.queued_bytes.fetch_add(held, Ordering::Relaxed);
            records.push((record, redaction));
            return;
        }
        drop(records);
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self.last_warned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let why = if has_room { "over its bytes-per-second budget" } else { "the writer is behind" };
            tracing::warn!(dropped, queued_bytes = queued, "prediction log dropping records: {why}");
        }
    }

    /// Erases the records `which` selects from every file, the one being written included
    /// (the writer writes what was queued before, closes its file and rewrites the files
    /// holding such records); blocks until done.
    pub fn erase(&self, which: Erasure) -> Result<ErasureReport> {
        let (reply, answer) = mpsc::channel();
        self.queue.erasures.lock().unwrap_or_else(|p| p.into_inner()).push((which, reply));
        answer.recv().map_err(|_| Error::Runtime("the prediction log writer has stopped".into()))?
    }

    /// Records dropped because the writer was behind, the budget spent (or the writer failed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written to disk.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Tensor bytes waiting for the writer now.
    pub fn queued_bytes(&self) -> u64 {
        self.queue.queued_bytes.load(Ordering::Relaxed)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PredictionLog {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// A bytes-per-second budget holding at most one second's worth.
struct TokenBucket {
    rate: u64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: u64) -> TokenBucket {
        TokenBucket { rate, tokens: rate as f64, refilled: Instant::now() }
    }

    /// Takes `bytes` if the budget has them (always, without a budget).
    fn take(&mut self, bytes: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * self.rate as f64;
        self.tokens = (self.tokens + refill).min(self.rate as f64);
        self.refilled = now;
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

type Queued = (PredictionRecord, Option<Arc<Redaction>>);
type ErasureRequest = (Erasure, mpsc::Sender<Result<ErasureReport>>);

/// Records waiting for the writer, erasures asked for, and whether the log was closed.
#[derive(Default)]
struct Queue {
    records: Mutex<Vec<Queued>>,
    /// Tensor bytes of the queued records ([`PredictionRecord::held_bytes`]).
    queued_bytes: AtomicU64,
    erasures: Mutex<Vec<ErasureRequest>>,
    closed: AtomicBool,
}

/// The file being appended to.
struct OpenFile {
    file: File,
    path: PathBuf,
    bytes: u64,
    sealed: bool,
    opened: Instant,
}

impl OpenFile {
    /// Whether the next write goes to a new file: this one is full, or (with an age bound)
    /// older than half of it, so no record outlives the bound by more than half.
    fn is_done(&self, bounds: &LogBounds) -> bool {
        self.bytes >= bounds.max_file_bytes
            || (bounds.max_age_ms > 0 && self.opened.elapsed() >= Duration::from_millis(bounds.max_age_ms / 2))
    }
}

struct Writer {
    dir: PathBuf,
    bounds: LogBounds,
    protection: LogProtection,
    hash_key: Option<HashKey>,
    tag: u32,
    files: u64,
    file: Option<OpenFile>,
    /// Records encoded since the last write.
    pending: Vec<u8>,
    written: Arc<AtomicU64>,
    expired: Instant,
}

impl Writer {
    fn run(&mut self, queue: &Queue) {
        loop {
            let closed = queue.closed.load(Ordering::Relaxed);
            // Erasures first: every record queued before an erasure was asked for is then
            // among the records taken next, written before the erasure runs.
            let erasures = std::mem::take(&mut *queue.erasures.lock().unwrap_or_else(|p| p.into_inner()));
            let records = std::mem::take(&mut *queue.records.lock().unwrap_or_else(|p| p.into_inner()));
            for (record, redaction) in records {
                let held = record.held_bytes();
                if let Err(error) = self.encode(record, redaction.as_deref()) {
                    tracing::error!(%error, "prediction log write failed; record lost");
                }
                queue.queued_bytes.fetch_sub(held, Ordering::Relaxed);
            }
            self.write_pending();
            if !erasures.is_empty() {
                self.file = None; // closed (and unlocked) so its records can be erased too
                for (which, reply) in erasures {
                    let keys = self.protection.keys.as_mut().map(|keys| keys.keyring());
                    let _ = reply.send(erase(&self.dir, keys.as_deref(), &which));
                }
            }
            if self.expired.elapsed() >= EXPIRE_EVERY {
                self.remove_expired();
            }
            if closed {
                return;
            }
            std::thread::sleep(WRITE_EVERY);
        }
    }

    /// Redacts and encodes a record into the pending batch, writing the batch when full.
    fn encode(&mut self, mut record: PredictionRecord, redaction: Option<&Redaction>) -> Result<()> {
        if let Some(rules) = redaction.filter(|r| !r.keeps_all()) {
            let key = match &self.hash_key {
                Some(key) => key,
                None => {
                    let path = self.protection.hash_key.clone().unwrap_or_else(|| self.dir.join("redaction.key"));
                    let key = HashKey::load_or_create(&path).map_err(|e| Error::Config(e.to_string()))?;
                    self.hash_key.insert(key)
                }
            };
            record.redacted = rules.apply(key, &mut record.inputs, &mut record.outputs);
        }
        record.write_to(&mut self.pending, self.bounds.max_full_tensor_bytes)?;
        self.written.fetch_add(1, Ordering::Relaxed);
        if self.pending.len() as u64 >= (WRITE_BUFFER as u64).min(self.bounds.max_file_bytes) {
            self.write_pending();
        }
        Ok(())
    }

    /// Writes the pending batch (sealed when keys are set) to the current file; the batch's
    /// buffer is kept for the next one (no allocation per batch).
    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(error) = self.write_batch() {
            tracing::error!(%error, "prediction log write failed; records lost");
            self.file = None;
        }
        self.pending.clear();
        if self.pending.capacity() > 4 * WRITE_BUFFER {
            self.pending.shrink_to(WRITE_BUFFER); // after an unusually large record
        }
    }

    fn write_batch(&mut self) -> Result<()> {
        if self.file.as_ref().is_none_or(|f| f.is_done(&self.bounds)) {
            self.rotate()?;
        }
        let Writer { file, protection, pending, .. } = self;
        let Some(open) = file else { return Ok(()) };
        let header = match (&mut protection.keys, open.sealed) {
            (Some(keys), true) => files::seal_in_place(&keys.keyring(), pending)?,
            _ => Vec::new(),
        };
        let io = |e| Error::io(format!("writing {}", open.path.display()), e);
        open.file.write_all(&header).map_err(io)?;
        open.file.write_all(pending).map_err(io)?;
        open.bytes += (header.len() + pending.len()) as u64;
        Ok(())
    }

    /// Closes the current file, starts the next and removes the oldest beyond the bounds.
    fn rotate(&mut self) -> Result<()> {
        self.file = None;
        // Named by creation time, with a random tag: servers sharing a repository never
        // write into each other's files.
        self.files += 1;
        let name = format!("predictions-{:013}-{:06}-{:08x}.{EXTENSION}", now_ms(), self.files % 1_000_000, self.tag);
        let path = self.dir.join(name);
        // Created under a name no reader or eraser lists, locked, then named: an eraser never
        // sees the file before the writer holds its lock.
        let partial = path.with_extension("partial");
        let io = |e| Error::io(format!("creating {}", path.display()), e);
        let mut file = File::create(&partial).map_err(io)?;
        if !files::try_lock(&file) {
            return Err(Error::Runtime(format!("cannot lock {}", partial.display())));
        }
        std::fs::rename(&partial, &path).map_err(io)?;
        let sealed = self.protection.keys.is_some();
        let magic = if sealed { SEALED_MAGIC } else { PLAIN_MAGIC };
        file.write_all(magic).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.file =
            Some(OpenFile { file, path: path.clone(), bytes: magic.len() as u64, sealed, opened: Instant::now() });
        let files = log_files(&self.dir)?;
        let sizes: Vec<u64> = files.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).collect();
        let mut total: u64 = sizes.iter().sum();
        for ((_, old), size) in files.iter().zip(&sizes) {
            if total <= self.bounds.max_total_bytes || *old == path {
                break;
            }
            remove(old);
            total -= size;
        }
        self.remove_expired();
        Ok(())
    }

    /// Removes the files last written longer ago than the age bound.
    fn remove_expired(&mut self) {
        self.expired = Instant::now();
        if self.bounds.max_age_ms == 0 {
            return;
        }
        let Some(oldest) = SystemTime::now().checked_sub(Duration::from_millis(self.bounds.max_age_ms)) else { return };
        let current = self.file.as_ref().map(|f| f.path.clone());
        for (_, path) in log_files(&self.dir).unwrap_or_default() {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified());
            if Some(&path) != current.as_ref() && modified.is_ok_and(|m| m < oldest) {
                remove(&path);
            }
        }
    }
}

fn remove(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(%error, file = %path.display(), "cannot remove an old prediction log file");
    }
}

/// Puts the calling thread (the writer) at the lowest scheduling priority (Linux's
/// `SCHED_IDLE`): digesting and writing run on CPU time requests leave unused and never take a
/// core from them. A machine kept busy by requests fills the queue, and records are dropped and
/// counted instead of slowing requests. Elsewhere the writer keeps the default priority.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE.
        let status = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if status != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "prediction log writer keeps its priority");
        }
    }
}
