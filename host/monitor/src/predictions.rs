//! The prediction log: every logged prediction (request id, time, model, version, component
//! sha256, inputs and outputs) appended to rotating binary files under
//! `<repo>/.edgeinfer/predictions/`, bounded in total size (oldest files removed).
//!
//! File format: the magic line `EIPL1\n`, then records, each `u32 LE` payload length, then
//! the payload: `u32 LE` header length, the JSON header ([`RecordHeader`]), and the raw tensor
//! data of the inputs then the outputs, in header order. A torn last record (crash mid-write)
//! is skipped by readers.
//!
//! Writing happens on one thread that collects what was queued every few milliseconds (no
//! wake-up per record) and writes each record's tensors straight from the request's own
//! buffers (moved into the record, never copied on the request path) in large sequential
//! writes. Inference never waits for the disk: a record is dropped and counted when the
//! queue holds [`LogBounds::max_queued_bytes`] already or the log is over its
//! [`LogBounds::bytes_per_second`] budget. Tensors over [`LogBounds::max_full_tensor_bytes`]
//! are logged as shape + sha256 only; such a record says so ([`PredictionRecord::digests`]).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgeinfer_oip::{Datatype, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use edgeinfer_runtime::clock::now_ms;

const MAGIC: &[u8] = b"EIPL1\n";
const EXTENSION: &str = "eipl";
/// Records waiting for the writer beyond this are dropped (whatever their size).
const QUEUE: usize = 16_384;
/// What a record's header and framing take besides its tensors, for the byte accounting.
const RECORD_OVERHEAD: u64 = 512;
/// The writer's buffer: small records are gathered into writes of this size.
const WRITE_BUFFER: usize = 1 << 20;
/// At most one warning about dropped records per this interval.
const WARN_EVERY_MS: u64 = 10_000;
/// How often the writer collects the queue (and flushes).
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// Which version produced a logged prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The version that answered the client.
    Live,
    /// A shadow version that received a copy.
    Shadow,
}

/// One logged prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRecord {
    /// The request id (the client's, or one the server generated and returned).
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: u64,
    /// SHA-256 of the component that computed the outputs.
    pub sha256: String,
    /// Live or shadow.
    pub role: Role,
    /// The outputs the request asked for (empty: all).
    pub requested: Vec<String>,
    /// The request's inputs.
    pub inputs: Vec<Tensor>,
    /// The outputs computed.
    pub outputs: Vec<Tensor>,
    /// Tensors logged as a digest only (over [`LogBounds::max_full_tensor_bytes`]): name ->
    /// lowercase hex sha256 of their data. Their `data` reads back empty; replay cannot
    /// re-run a record with a digested input, and compares digested outputs by digest.
    pub digests: std::collections::BTreeMap<String, String>,
}

/// What the JSON header of a record holds.
#[derive(Debug, Serialize, Deserialize)]
struct RecordHeader {
    id: String,
    time_ms: u64,
    model: String,
    version: u64,
    sha256: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    requested: Vec<String>,
    inputs: Vec<TensorHeader>,
    outputs: Vec<TensorHeader>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TensorHeader {
    name: String,
    datatype: Datatype,
    shape: Vec<u64>,
    /// Bytes of data that follow in the record (0 for a digest-only tensor).
    bytes: u64,
    /// Set for a tensor logged as its digest only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

impl TensorHeader {
    /// The header of `tensor`, logged in full unless it is over `max_full` bytes (0: no limit).
    fn of(tensor: &Tensor, max_full: u64) -> TensorHeader {
        let full = logged_in_full(tensor, max_full);
        TensorHeader {
            name: tensor.name.clone(),
            datatype: tensor.datatype,
            shape: tensor.shape.clone(),
            bytes: if full { tensor.data.len() as u64 } else { 0 },
            sha256: (!full).then(|| edgeinfer_runtime::digest::sha256_hex(&tensor.data)),
        }
    }
}

/// Whether `tensor` is logged with its data (else as its digest).
fn logged_in_full(tensor: &Tensor, max_full: u64) -> bool {
    max_full == 0 || tensor.data.len() as u64 <= max_full
}

impl PredictionRecord {
    /// Writes the record (payload length, header length, header, data) to `out`, tensors
    /// over `max_full` bytes as digests; returns the bytes written.
    fn write_to(&self, out: &mut impl Write, max_full: u64) -> Result<u64> {
        let header = RecordHeader {
            id: self.id.clone(),
            time_ms: self.time_ms,
            model: self.model.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            role: self.role,
            requested: self.requested.clone(),
            inputs: self.inputs.iter().map(|t| TensorHeader::of(t, max_full)).collect(),
            outputs: self.outputs.iter().map(|t| TensorHeader::of(t, max_full)).collect(),
        };
        let header = serde_json::to_vec(&header).map_err(Error::runtime)?;
        let full: Vec<&Tensor> =
            self.inputs.iter().chain(&self.outputs).filter(|t| logged_in_full(t, max_full)).collect();
        let data: usize = full.iter().map(|t| t.data.len()).sum();
        let payload = 4 + header.len() + data;
        let length = u32::try_from(payload).map_err(|_| Error::Runtime("prediction record over 4 GiB".into()))?;
        let io = |e| Error::io("writing the prediction log", e);
        out.write_all(&length.to_le_bytes()).map_err(io)?;
        out.write_all(&(header.len() as u32).to_le_bytes()).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        for tensor in full {
            out.write_all(&tensor.data).map_err(io)?;
        }
        Ok(4 + payload as u64)
    }

    /// The bytes this record takes in the log (digested tensors count nothing).
    fn logged_bytes(&self, max_full: u64) -> u64 {
        let data: u64 = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .filter(|t| logged_in_full(t, max_full))
            .map(|t| t.data.len() as u64)
            .sum();
        data + RECORD_OVERHEAD
    }

    /// The bytes of tensor data this record holds in memory while queued.
    fn held_bytes(&self) -> u64 {
        self.inputs.iter().chain(&self.outputs).map(|t| t.data.len() as u64).sum::<u64>() + RECORD_OVERHEAD
    }

    /// A record from its payload.
    fn decode(payload: &[u8]) -> std::result::Result<PredictionRecord, String> {
        let header_length = payload.get(..4).ok_or("record shorter than its header length")?;
        let header_length = u32::from_le_bytes(header_length.try_into().map_err(|_| "bad length")?) as usize;
        let header = payload.get(4..4 + header_length).ok_or("record shorter than its header")?;
        let header: RecordHeader = serde_json::from_slice(header).map_err(|e| format!("bad record header: {e}"))?;
        let mut data = &payload[4 + header_length..];
        let digests = header
            .inputs
            .iter()
            .chain(&header.outputs)
            .filter_map(|t| Some((t.name.clone(), t.sha256.clone()?)))
            .collect();
        let mut take = |meta: &TensorHeader| -> std::result::Result<Tensor, String> {
            let length = usize::try_from(meta.bytes).map_err(|_| "tensor too large")?;
            if data.len() < length {
                return Err(format!("record shorter than tensor '{}'", meta.name));
            }
            let (bytes, rest) = data.split_at(length);
            data = rest;
            Ok(Tensor {
                name: meta.name.clone(),
                datatype: meta.datatype,
                shape: meta.shape.clone(),
                data: edgeinfer_oip::Bytes::copy_from_slice(bytes),
            })
        };
        let inputs = header.inputs.iter().map(&mut take).collect::<std::result::Result<Vec<_>, _>>()?;
        let outputs = header.outputs.iter().map(&mut take).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(PredictionRecord {
            id: header.id,
            time_ms: header.time_ms,
            model: header.model,
            version: header.version,
            sha256: header.sha256,
            role: header.role,
            requested: header.requested,
            inputs,
            outputs,
            digests,
        })
    }
}

/// Size and rate bounds of a prediction log.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    /// A file is closed and a new one started once it reaches this size.
    pub max_file_bytes: u64,
    /// Oldest files are removed while all files together exceed this.
    pub max_total_bytes: u64,
    /// Tensor bytes that may wait for the writer; a record beyond is dropped and counted.
    pub max_queued_bytes: u64,
    /// Tensors over this many bytes are logged as shape + sha256 only (0: all in full).
    pub max_full_tensor_bytes: u64,
    /// Bytes per second the log may write (0: no budget); records beyond are dropped and
    /// counted, so a slow or small disk never slows requests.
    pub bytes_per_second: u64,
}

impl Default for LogBounds {
    fn default() -> Self {
        LogBounds {
            max_file_bytes: 64 << 20,
            max_total_bytes: 1 << 30,
            max_queued_bytes: 64 << 20,
            max_full_tensor_bytes: 1 << 20,
            bytes_per_second: 0,
        }
    }
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
    pub fn open(dir: &Path, bounds: LogBounds) -> Result<PredictionLog> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let queue = Arc::new(Queue::default());
        let written = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            bounds,
            tag: fastrand::u32(..),
            files: 0,
            file: None,
            file_bytes: 0,
            written: written.clone(),
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

    /// Queues a record (its tensors are moved, not copied); drops and counts it when the
    /// writer is behind or the log is over its byte budget. Never blocks on the disk.
    pub fn append(&self, record: PredictionRecord) {
        let held = record.held_bytes();
        let logged = record.logged_bytes(self.bounds.max_full_tensor_bytes);
        let mut records = self.queue.records.lock().unwrap_or_else(|p| p.into_inner());
        let queued = self.queue.queued_bytes.load(Ordering::Relaxed);
        let has_room = records.len() < QUEUE && queued + held <= self.bounds.max_queued_bytes.max(held);
        // The budget is spent only by records that are queued (and so written).
        if has_room && self.budget.lock().unwrap_or_else(|p| p.into_inner()).take(logged) {
            self.queue.queued_bytes.fetch_add(held, Ordering::Relaxed);
            records.push(record);
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

/// Records waiting for the writer, and whether the log was closed.
#[derive(Default)]
struct Queue {
    records: Mutex<Vec<PredictionRecord>>,
    /// Tensor bytes of the queued records ([`PredictionRecord::held_bytes`]).
    queued_bytes: AtomicU64,
    closed: AtomicBool,
}

struct Writer {
    dir: PathBuf,
    bounds: LogBounds,
    tag: u32,
    files: u64,
    file: Option<BufWriter<File>>,
    file_bytes: u64,
    written: Arc<AtomicU64>,
}

impl Writer {
    fn run(&mut self, queue: &Queue) {
        loop {
            let closed = queue.closed.load(Ordering::Relaxed);
            let records = std::mem::take(&mut *queue.records.lock().unwrap_or_else(|p| p.into_inner()));
            for record in records {
                if let Err(error) = self.write(&record) {
                    tracing::error!(%error, "prediction log write failed; record lost");
                    self.file = None;
                }
                queue.queued_bytes.fetch_sub(record.held_bytes(), Ordering::Relaxed);
            }
            self.flush();
            if closed {
                return;
            }
            std::thread::sleep(WRITE_EVERY);
        }
    }

    fn flush(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(error) = file.flush()
        {
            tracing::error!(%error, "prediction log flush failed");
            self.file = None;
        }
    }

    fn write(&mut self, record: &PredictionRecord) -> Result<()> {
        if self.file.is_none() || self.file_bytes >= self.bounds.max_file_bytes {
            self.rotate()?;
        }
        let Some(file) = &mut self.file else { return Ok(()) };
        self.file_bytes += record.write_to(file, self.bounds.max_full_tensor_bytes)?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the current file, starts the next and removes the oldest beyond the bound.
    fn rotate(&mut self) -> Result<()> {
        self.flush();
        // Named by creation time, with a random tag: servers sharing a repository never
        // write into each other's files.
        self.files += 1;
        let name = format!("predictions-{:013}-{:06}-{:08x}.{EXTENSION}", now_ms(), self.files % 1_000_000, self.tag);
        let path = self.dir.join(name);
        let mut file = BufWriter::with_capacity(
            WRITE_BUFFER,
            File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?,
        );
        file.write_all(MAGIC).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.file = Some(file);
        self.file_bytes = MAGIC.len() as u64;
        let files = log_files(&self.dir)?;
        let sizes: Vec<u64> = files.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).collect();
        let mut total: u64 = sizes.iter().sum();
        for ((_, old), size) in files.iter().zip(&sizes) {
            if total <= self.bounds.max_total_bytes || *old == path {
                break;
            }
            if let Err(error) = std::fs::remove_file(old) {
                tracing::warn!(%error, file = %old.display(), "cannot remove an old prediction log file");
            }
            total -= size;
        }
        Ok(())
    }
}

/// The log files of `dir` with their creation times (ms) and sequence numbers, oldest first.
fn log_files(dir: &Path) -> Result<Vec<((u64, u64), PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let mut files: Vec<((u64, u64), PathBuf)> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let stem = name.strip_prefix("predictions-")?.strip_suffix(&format!(".{EXTENSION}"))?;
            let mut parts = stem.split('-');
            let created = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            Some(((created, seq), path))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Every record under `dir`, oldest first; a file that is not a prediction log is an error,
/// a torn last record is skipped.
pub fn read_log(dir: &Path) -> Result<Vec<PredictionRecord>> {
    let mut records = Vec::new();
    for_each_record(dir, &mut |record| records.push(record))?;
    Ok(records)
}

/// Calls `each` for every record under `dir`, oldest first, one file in memory at a time.
pub fn for_each_record(dir: &Path, each: &mut dyn FnMut(PredictionRecord)) -> Result<()> {
    for (_, path) in log_files(dir)? {
        read_file(&path, each)?;
    }
    Ok(())
}

/// Calls `each` for every complete record of one file.
fn read_file(path: &Path, each: &mut dyn FnMut(PredictionRecord)) -> Result<()> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if bytes.is_empty() {
        return Ok(()); // just created, nothing flushed yet
    }
    let bad = |message: String| Error::Config(format!("{}: {message}", path.display()));
    let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("not an edgeinfer prediction log".into()))?;
    while rest.len() >= 4 {
        let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(payload) = rest.get(4..4 + length) else {
            tracing::warn!(file = %path.display(), "torn last record skipped");
            break;
        };
        each(PredictionRecord::decode(payload).map_err(bad)?);
        rest = &rest[4 + length..];
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, size: usize) -> PredictionRecord {
        let tensor = |name: &str, fill: u8| Tensor {
            name: name.into(),
            datatype: Datatype::Uint8,
            shape: vec![size as u64],
            data: vec![fill; size].into(),
        };
        PredictionRecord {
            id: id.into(),
            time_ms: 1,
            model: "m".into(),
            version: 2,
            sha256: "ab".repeat(32),
            role: Role::Live,
            requested: vec![],
            inputs: vec![tensor("x", 1)],
            outputs: vec![tensor("y", 2), tensor("z", 3)],
            digests: Default::default(),
        }
    }

    fn encode(record: &PredictionRecord) -> Vec<u8> {
        let mut bytes = Vec::new();
        record.write_to(&mut bytes, 0).expect("encode");
        bytes
    }

    fn bounds(max_file_bytes: u64, max_total_bytes: u64) -> LogBounds {
        LogBounds { max_file_bytes, max_total_bytes, max_full_tensor_bytes: 0, ..LogBounds::default() }
    }

    #[test]
    fn records_round_trip_rotate_and_stay_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PredictionLog::open(dir.path(), bounds(4_000, 20_000)).expect("open");
        for i in 0..100 {
            log.append(record(&i.to_string(), 300));
        }
        drop(log); // flushes and joins the writer
        let files = log_files(dir.path()).expect("files");
        let total: u64 = files.iter().map(|(_, p)| std::fs::metadata(p).expect("meta").len()).sum();
        assert!(files.len() > 2, "rotated into {} files", files.len());
        assert!(total <= 20_000 + 4_000 + 1_000, "total {total}: the bound, the open file and one record");
        let records = read_log(dir.path()).expect("read");
        assert!(!records.is_empty() && records.len() < 100, "oldest removed: {}", records.len());
        assert_eq!(records.last(), Some(&record("99", 300)));
        let ids: Vec<u64> = records.iter().map(|r| r.id.parse().expect("id")).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "contiguous newest records: {ids:?}");
    }

    #[test]
    fn a_torn_last_record_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("predictions-0000000000000-000000-00000000.eipl");
        let mut bytes = MAGIC.to_vec();
        bytes.extend(encode(&record("a", 10)));
        let second = encode(&record("b", 10));
        bytes.extend(&second[..second.len() - 3]);
        std::fs::write(&path, bytes).expect("write");
        let records = read_log(dir.path()).expect("read");
        assert_eq!(records, vec![record("a", 10)]);
    }

    #[test]
    fn tensors_over_the_full_size_are_logged_as_digests_and_say_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bounds = LogBounds { max_full_tensor_bytes: 100, ..LogBounds::default() };
        let log = PredictionLog::open(dir.path(), bounds).expect("open");
        log.append(record("small", 100));
        log.append(record("large", 101));
        drop(log);
        let records = read_log(dir.path()).expect("read");
        assert_eq!(records[0], record("small", 100), "at the limit: in full, bit-exact");
        let large = &records[1];
        let original = record("large", 101);
        assert!(large.inputs.iter().chain(&large.outputs).all(|t| t.data.is_empty()));
        assert_eq!(large.outputs[0].shape, vec![101], "the shape stays");
        for tensor in original.inputs.iter().chain(&original.outputs) {
            assert_eq!(large.digests[&tensor.name], edgeinfer_runtime::digest::sha256_hex(&tensor.data));
        }
    }

    #[test]
    fn over_its_byte_budget_the_log_drops_and_counts_instead_of_queueing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // One second of budget holds two of these records (300 x 3 bytes + overhead each).
        let bounds = LogBounds { bytes_per_second: 3_000, max_full_tensor_bytes: 0, ..LogBounds::default() };
        let log = PredictionLog::open(dir.path(), bounds).expect("open");
        for i in 0..50 {
            log.append(record(&i.to_string(), 300));
        }
        let dropped = log.dropped();
        assert!((45..=48).contains(&dropped), "dropped {dropped} of 50");
        drop(log);
        assert_eq!(read_log(dir.path()).expect("read").len() as u64, 50 - dropped);
    }

    #[test]
    fn queued_bytes_are_bounded_and_return_to_zero_once_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bounds = LogBounds { max_queued_bytes: 10_000, max_full_tensor_bytes: 0, ..LogBounds::default() };
        let log = PredictionLog::open(dir.path(), bounds).expect("open");
        for i in 0..200 {
            log.append(record(&i.to_string(), 1_000));
            assert!(log.queued_bytes() <= 10_000, "queued {}", log.queued_bytes());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.queued_bytes() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5)); // the writer collects every 20 ms
        }
        assert_eq!(log.queued_bytes(), 0);
        assert_eq!(log.written() + log.dropped(), 200);
    }
}
