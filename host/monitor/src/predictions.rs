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
//! wake-up per record): inference never waits for the disk; when the queue is full, the
//! record is dropped and counted.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgeinfer_oip::{Datatype, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use edgeinfer_runtime::clock::now_ms;

const MAGIC: &[u8] = b"EIPL1\n";
const EXTENSION: &str = "eipl";
/// Records waiting for the writer beyond this are dropped.
const QUEUE: usize = 16_384;
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
    bytes: u64,
}

impl TensorHeader {
    fn of(tensor: &Tensor) -> TensorHeader {
        TensorHeader {
            name: tensor.name.clone(),
            datatype: tensor.datatype,
            shape: tensor.shape.clone(),
            bytes: tensor.data.len() as u64,
        }
    }
}

impl PredictionRecord {
    /// The record's bytes: payload length, header length, header, data.
    fn encode(&self) -> Result<Vec<u8>> {
        let header = RecordHeader {
            id: self.id.clone(),
            time_ms: self.time_ms,
            model: self.model.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            role: self.role,
            requested: self.requested.clone(),
            inputs: self.inputs.iter().map(TensorHeader::of).collect(),
            outputs: self.outputs.iter().map(TensorHeader::of).collect(),
        };
        let header = serde_json::to_vec(&header).map_err(Error::runtime)?;
        let data: usize = self.inputs.iter().chain(&self.outputs).map(|t| t.data.len()).sum();
        let payload = 4 + header.len() + data;
        let length = u32::try_from(payload).map_err(|_| Error::Runtime("prediction record over 4 GiB".into()))?;
        let mut bytes = Vec::with_capacity(4 + payload);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        for tensor in self.inputs.iter().chain(&self.outputs) {
            bytes.extend_from_slice(&tensor.data);
        }
        Ok(bytes)
    }

    /// A record from its payload.
    fn decode(payload: &[u8]) -> std::result::Result<PredictionRecord, String> {
        let header_length = payload.get(..4).ok_or("record shorter than its header length")?;
        let header_length = u32::from_le_bytes(header_length.try_into().map_err(|_| "bad length")?) as usize;
        let header = payload.get(4..4 + header_length).ok_or("record shorter than its header")?;
        let header: RecordHeader = serde_json::from_slice(header).map_err(|e| format!("bad record header: {e}"))?;
        let mut data = &payload[4 + header_length..];
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
                data: bytes.to_vec(),
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
        })
    }
}

/// Size bounds of a prediction log.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    /// A file is closed and a new one started once it reaches this size.
    pub max_file_bytes: u64,
    /// Oldest files are removed while all files together exceed this.
    pub max_total_bytes: u64,
}

/// The writing end of a prediction log; the writer thread ends (after flushing) when this
/// is dropped.
pub struct PredictionLog {
    queue: Arc<Queue>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    dir: PathBuf,
}

impl PredictionLog {
    /// Opens (creating) `dir` and starts the writer thread.
    pub fn open(dir: &Path, bounds: LogBounds) -> Result<PredictionLog> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let queue = Arc::new(Queue::default());
        let dropped = Arc::new(AtomicU64::new(0));
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
        std::thread::Builder::new()
            .name("edgeinfer-predictions".into())
            .spawn(move || writer.run(&shared))
            .map_err(|e| Error::io("starting the prediction log writer", e))?;
        Ok(PredictionLog { queue, dropped, written, dir: dir.to_path_buf() })
    }

    /// Queues a record; counted as dropped when the writer is behind.
    pub fn append(&self, record: PredictionRecord) {
        let mut records = self.queue.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() < QUEUE {
            records.push(record);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the writer was behind (or had failed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written to disk.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PredictionLog {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Relaxed);
    }
}

/// Records waiting for the writer, and whether the log was closed.
#[derive(Default)]
struct Queue {
    records: Mutex<Vec<PredictionRecord>>,
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
            for record in &records {
                if let Err(error) = self.write(record) {
                    tracing::error!(%error, "prediction log write failed; record lost");
                    self.file = None;
                }
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
        let bytes = record.encode()?;
        if self.file.is_none() || self.file_bytes >= self.bounds.max_file_bytes {
            self.rotate()?;
        }
        let Some(file) = &mut self.file else { return Ok(()) };
        file.write_all(&bytes).map_err(|e| Error::io("writing the prediction log", e))?;
        self.file_bytes += bytes.len() as u64;
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
            1 << 16,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, size: usize) -> PredictionRecord {
        let tensor = |name: &str, fill: u8| Tensor {
            name: name.into(),
            datatype: Datatype::Uint8,
            shape: vec![size as u64],
            data: vec![fill; size],
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
        }
    }

    #[test]
    fn records_round_trip_rotate_and_stay_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bounds = LogBounds { max_file_bytes: 4_000, max_total_bytes: 20_000 };
        let log = PredictionLog::open(dir.path(), bounds).expect("open");
        for i in 0..100 {
            log.append(record(&i.to_string(), 300));
        }
        drop(log);
        std::thread::sleep(Duration::from_millis(300));
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
        bytes.extend(record("a", 10).encode().expect("encode"));
        let second = record("b", 10).encode().expect("encode");
        bytes.extend(&second[..second.len() - 3]);
        std::fs::write(&path, bytes).expect("write");
        let records = read_log(dir.path()).expect("read");
        assert_eq!(records, vec![record("a", 10)]);
    }
}
