//! edgeinfer-batch: batch (offline) scoring of a file on every core, resumable after a crash, every row
//! exactly once and in input order.
//!
//! A reader thread streams rows (CSV, NDJSON or Parquet) into chunks of `batch_size`; worker
//! threads score chunks, each call in a fresh sandbox under the model's limits scaled by its
//! rows (a chunk that fails is retried row by row, so one poisonous row fails alone); the
//! calling thread puts results back in input order, appends them to the staged output and
//! errors files, and checkpoints ([`journal`]) about once a second. Memory is bounded by the
//! chunks in flight, whatever the file size. The output appears under its final name only
//! when complete (Parquet is written from the staged NDJSON at the end).

#![deny(missing_docs)]

pub mod input;
pub mod journal;
pub mod output;
mod parquet;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use edgeinfer_oip::Tensor;
use serde::Serialize;

use edgeinfer_runtime::limits::LimitOverrides;
use edgeinfer_runtime::model::LoadedModel;
use input::{InputRow, RowSchema};
use journal::Checkpoint;
use output::Layout;

/// How often progress is made durable.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Rows per call when the model's batch dimension is dynamic and none is given.
pub const DEFAULT_BATCH_SIZE: usize = 256;

/// Why a batch job stopped.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The input cannot be read, or does not fit the model.
    #[error("input: {0}")]
    Input(String),
    /// The output cannot be written.
    #[error("output: {0}")]
    Output(String),
    /// The checkpoint is unreadable or belongs to another job.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// More rows failed than `--max-errors` allows.
    #[error("aborted: {0}")]
    Aborted(String),
    /// The job was cancelled; its checkpoint is kept.
    #[error("cancelled after {0} rows; run it again to resume")]
    Cancelled(u64),
}

/// A file format, from its extension or named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet.
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "csv" => Ok(Format::Csv),
            "ndjson" => Ok(Format::Ndjson),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!("unknown format '{other}' (expected csv, ndjson or parquet)")),
        }
    }
}

impl Format {
    /// The names a format is given by (`--input-format`, the jobs API).
    pub const NAMES: [&str; 3] = ["csv", "ndjson", "parquet"];

    /// The format of `path` by its extension.
    pub fn of(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("ndjson" | "jsonl") => Ok(Format::Ndjson),
            Some("parquet" | "pq") => Ok(Format::Parquet),
            _ => Err(format!("{}: unknown format (use .csv, .ndjson or .parquet, or name it)", path.display())),
        }
    }
}

/// When to give up on a job whose rows keep failing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub enum MaxErrors {
    /// More than this many failed rows.
    Count(u64),
    /// More than this share (percent) of the rows so far, once 100 rows are in.
    Percent(f64),
}

impl std::str::FromStr for MaxErrors {
    type Err = String;
    fn from_str(text: &str) -> Result<MaxErrors, String> {
        let wrong = || format!("'{text}' is not a count (1000) or a share (2.5%)");
        match text.strip_suffix('%') {
            Some(percent) => percent.trim().parse().map(MaxErrors::Percent).map_err(|_| wrong()),
            None => text.trim().parse().map(MaxErrors::Count).map_err(|_| wrong()),
        }
    }
}

/// One batch job.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BatchOptions {
    /// The input file.
    pub input: PathBuf,
    /// Its format (default: by extension).
    pub input_format: Option<Format>,
    /// The output file (format by extension).
    pub output: PathBuf,
    /// Where failed rows go (default `<output>.errors.csv`; `.ndjson` for NDJSON).
    pub errors: Option<PathBuf>,
    /// Rows per call (default 256 when the batch dimension is dynamic, else 1).
    pub batch_size: Option<usize>,
    /// Scoring threads (default: the number of cores).
    pub workers: Option<usize>,
    /// The column holding row ids (default: the row number).
    pub id_column: Option<String>,
    /// Feature columns in input order (default: every column but the id).
    pub columns: Option<Vec<String>>,
    /// Give up beyond this many failed rows.
    pub max_errors: Option<MaxErrors>,
    /// Discard the checkpoint and start over.
    pub restart: bool,
}

/// How far a job is.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Status {
    /// Input rows scored or failed so far (resumed runs included).
    pub rows_done: u64,
    /// Of those, failed.
    pub rows_failed: u64,
    /// Bytes of input read.
    pub bytes_read: u64,
    /// Size of the input file.
    pub bytes_total: u64,
    /// Rows per second in this run.
    pub rows_per_second: f64,
}

/// Told of progress every few hundred milliseconds.
pub trait Progress: Sync {
    /// The job's status now.
    fn update(&self, status: &Status);
}

impl<F: Fn(&Status) + Sync> Progress for F {
    fn update(&self, status: &Status) {
        self(status)
    }
}

/// How a job ended.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The model and version.
    pub model: String,
    /// The version scored with.
    pub version: u64,
    /// Rows written to the output.
    pub rows_ok: u64,
    /// Rows written to the errors file.
    pub rows_failed: u64,
    /// Seconds of scoring over every run of the job.
    pub seconds: f64,
    /// Rows per second over those seconds.
    pub rows_per_second: f64,
    /// Rows already done when this run started (a resumed job).
    pub resumed_from_row: u64,
    /// The job had completed before; nothing was done.
    pub already_complete: bool,
    /// The output file.
    pub output: PathBuf,
    /// The errors file.
    pub errors: PathBuf,
}

/// The files of a job.
struct Paths {
    output: PathBuf,
    staged: PathBuf,
    errors: PathBuf,
    staged_errors: PathBuf,
    journal: PathBuf,
    summary: PathBuf,
}

impl Paths {
    fn of(options: &BatchOptions, errors_format: Format) -> Paths {
        let with = |path: &Path, suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let default_errors =
            with(&options.output, if errors_format == Format::Ndjson { ".errors.ndjson" } else { ".errors.csv" });
        let errors = options.errors.clone().unwrap_or(default_errors);
        Paths {
            staged: with(&options.output, ".partial"),
            staged_errors: with(&errors, ".partial"),
            journal: with(&options.output, ".journal"),
            summary: with(&options.output, ".summary.json"),
            output: options.output.clone(),
            errors,
        }
    }
}

/// A chunk of consecutive input rows.
struct Chunk {
    seq: u64,
    rows: Vec<InputRow>,
    /// Input bytes read up to the chunk's end.
    position: u64,
}

/// A scored chunk: its output and errors lines.
struct Scored {
    seq: u64,
    rows: u64,
    ok: u64,
    failed: u64,
    output: Vec<u8>,
    errors: Vec<u8>,
    bytes_read: u64,
}

/// Checks that `options` can run on `model` (formats, columns, id column) without scoring.
pub fn check(model: &LoadedModel, options: &BatchOptions) -> Result<(), BatchError> {
    Format::of(&options.output).map_err(BatchError::Output)?;
    open_input(model, options).map(drop)
}

/// The job's input as rows for `model`: its format, feature and id columns checked.
fn open_input(model: &LoadedModel, options: &BatchOptions) -> Result<Box<dyn input::RowSource>, BatchError> {
    let format = options.input_format.map_or_else(|| Format::of(&options.input), Ok).map_err(BatchError::Input)?;
    let schema = RowSchema {
        inputs: model.manifest().inputs.clone(),
        id_column: options.id_column.clone(),
        columns: options.columns.clone(),
    };
    let path = &options.input;
    let file =
        std::fs::File::open(path).map_err(|e| BatchError::Input(format!("cannot open {}: {e}", path.display())))?;
    match format {
        Format::Parquet => parquet::open(file, &schema),
        text => input::open_text(file, text, &schema),
    }
}

/// Runs (or resumes) the job described by `options` on `model`.
pub fn run(
    model: &LoadedModel,
    options: &BatchOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, BatchError> {
    let manifest = model.manifest();
    let mut source = open_input(model, options)?;
    let output_format = Format::of(&options.output).map_err(BatchError::Output)?;
    let errors_format = match &options.errors {
        Some(path) => Format::of(path).map_err(BatchError::Output)?,
        None if output_format == Format::Csv => Format::Csv,
        None => Format::Ndjson,
    };
    if errors_format == Format::Parquet {
        return Err(BatchError::Output("the errors file is CSV or NDJSON".into()));
    }
    let paths = Paths::of(options, errors_format);
    let dynamic_batch = manifest.inputs.iter().all(|i| i.shape.first().is_some_and(|&d| d < 0));
    let batch_size = options.batch_size.unwrap_or(if dynamic_batch { DEFAULT_BATCH_SIZE } else { 1 }).max(1);
    let batch_size = if dynamic_batch { batch_size } else { 1 };
    let workers = options.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let fingerprint = fingerprint(options, manifest.component.sha256.as_str(), batch_size, output_format)?;
    let summary = |checkpoint: &Checkpoint, resumed_from_row: u64, already_complete: bool| Summary {
        model: manifest.name.clone(),
        version: manifest.version,
        rows_ok: checkpoint.rows_ok,
        rows_failed: checkpoint.rows_failed,
        seconds: checkpoint.seconds,
        rows_per_second: checkpoint.rows_read as f64 / checkpoint.seconds.max(1e-9),
        resumed_from_row,
        already_complete,
        output: paths.output.clone(),
        errors: paths.errors.clone(),
    };

    if options.restart {
        for path in [&paths.journal, &paths.staged, &paths.staged_errors] {
            let _ = std::fs::remove_file(path);
        }
    }
    let layout = Layout::new(&manifest.outputs, output_format);
    let mut checkpoint = match Checkpoint::load(&paths.journal)? {
        Some(found) if found.fingerprint != fingerprint => {
            return Err(BatchError::Checkpoint(format!(
                "{} belongs to a different job (input, model or options changed); rerun with --restart to \
                 discard it",
                paths.journal.display()
            )));
        }
        Some(mut found) => {
            if !found.done && !paths.staged.exists() && paths.output.exists() {
                found.done = true; // crashed between the final rename and the checkpoint
                found.save(&paths.journal)?;
            }
            if found.done {
                return Ok(summary(&found, found.rows_read, true));
            }
            found
        }
        None => {
            let checkpoint = Checkpoint {
                fingerprint,
                rows_read: 0,
                rows_ok: 0,
                rows_failed: 0,
                output_bytes: layout.header().len() as u64,
                errors_bytes: output::error_header(errors_format).len() as u64,
                seconds: 0.0,
                done: false,
            };
            write_new(&paths.staged, &layout.header())?;
            write_new(&paths.staged_errors, &output::error_header(errors_format))?;
            checkpoint.save(&paths.journal)?;
            checkpoint
        }
    };
    let resumed_from_row = checkpoint.rows_read;
    let mut staged = reopen(&paths.staged, checkpoint.output_bytes)?;
    let mut staged_errors = reopen(&paths.staged_errors, checkpoint.errors_bytes)?;

    let bytes_total = std::fs::metadata(&options.input).map_or(0, |m| m.len());
    for _ in 0..checkpoint.rows_read {
        match source.next() {
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error),
            None => {
                return Err(BatchError::Checkpoint(format!(
                    "the checkpoint is at row {}, past the end of the input; rerun with --restart",
                    checkpoint.rows_read
                )));
            }
        }
    }

    let started = Instant::now();
    let seconds_before = checkpoint.seconds;
    let limits = model.manifest().limits;
    let scorer = Scorer { model, layout: &layout, errors_format, limits };
    let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(workers * 2);
    let chunk_rx = std::sync::Mutex::new(chunk_rx);
    let outcome = std::thread::scope(|scope| -> Result<(), BatchError> {
        let (scored_tx, scored_rx) = sync_channel::<Result<Scored, BatchError>>(workers * 2);
        let reader_tx = scored_tx.clone();
        scope.spawn(move || read_chunks(source, batch_size, chunk_tx, reader_tx, cancel));
        for _ in 0..workers {
            let (chunk_rx, scored_tx, scorer) = (&chunk_rx, scored_tx.clone(), &scorer);
            scope.spawn(move || {
                loop {
                    let next = chunk_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(chunk) = next else { return };
                    if scored_tx.send(Ok(scorer.score(chunk))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(scored_tx);
        let result = collect(
            scored_rx,
            &mut Collector {
                checkpoint: &mut checkpoint,
                staged: &mut staged,
                staged_errors: &mut staged_errors,
                journal: &paths.journal,
                options,
                progress,
                started,
                seconds_before,
                resumed_from_row,
                bytes_total,
                cancel,
            },
        );
        if result.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        result
    });
    outcome?;
    if cancel.load(Ordering::Relaxed) {
        return Err(BatchError::Cancelled(checkpoint.rows_read));
    }

    // Complete: make the staged files final, then record that.
    finish(&paths, output_format, &layout)?;
    checkpoint.done = true;
    checkpoint.save(&paths.journal)?;
    let summary = summary(&checkpoint, resumed_from_row, false);
    let text = serde_json::to_vec_pretty(&summary).unwrap_or_default();
    std::fs::write(&paths.summary, text)
        .map_err(|e| BatchError::Output(format!("writing {}: {e}", paths.summary.display())))?;
    Ok(summary)
}

/// What identifies a job: the input file, the component, and the options that shape the
/// output.
fn fingerprint(
    options: &BatchOptions,
    component: &str,
    batch_size: usize,
    format: Format,
) -> Result<String, BatchError> {
    let metadata = std::fs::metadata(&options.input)
        .map_err(|e| BatchError::Input(format!("cannot read {}: {e}", options.input.display())))?;
    let modified = metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let identity = serde_json::json!({
        "input": std::fs::canonicalize(&options.input).unwrap_or_else(|_| options.input.clone()),
        "size": metadata.len(),
        "modified_ns": modified.map(|d| d.as_nanos().to_string()),
        "component": component,
        "batch_size": batch_size,
        "format": format,
        "input_format": options.input_format,
        "id_column": options.id_column,
        "columns": options.columns,
        "errors": options.errors,
    });
    Ok(edgeinfer_runtime::sha256_hex(identity.to_string().as_bytes()))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), BatchError> {
    let fail = |e: std::io::Error| BatchError::Output(format!("writing {}: {e}", path.display()));
    let mut file = File::create(path).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Opens a staged file for appending, cut back to the checkpoint's length.
fn reopen(path: &Path, length: u64) -> Result<File, BatchError> {
    let fail = |e: std::io::Error| BatchError::Output(format!("reopening {}: {e}", path.display()));
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(fail)?;
    let actual = file.metadata().map_err(fail)?.len();
    if actual < length {
        return Err(BatchError::Checkpoint(format!(
            "{} is shorter ({actual} bytes) than its checkpoint ({length}); rerun with --restart",
            path.display()
        )));
    }
    file.set_len(length).map_err(fail)?;
    file.seek(SeekFrom::End(0)).map_err(fail)?;
    Ok(file)
}

/// Streams rows into chunks until the input ends or the job is cancelled.
fn read_chunks(
    mut source: Box<dyn input::RowSource>,
    batch_size: usize,
    chunks: SyncSender<Chunk>,
    failures: SyncSender<Result<Scored, BatchError>>,
    cancel: &AtomicBool,
) {
    let mut seq = 0;
    let mut rows = Vec::with_capacity(batch_size);
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        match source.next() {
            Some(Ok(row)) => {
                rows.push(row);
                if rows.len() < batch_size {
                    continue;
                }
            }
            Some(Err(error)) => {
                let _ = failures.send(Err(error));
                return;
            }
            None if rows.is_empty() => return,
            None => {}
        }
        let position = input::RowSource::position(&*source);
        let chunk = Chunk { seq, rows: std::mem::replace(&mut rows, Vec::with_capacity(batch_size)), position };
        seq += 1;
        // Never block for good: the collector may have stopped (abort, cancel).
        let mut pending = chunk;
        loop {
            match chunks.try_send(pending) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(chunk)) if !cancel.load(Ordering::Relaxed) => {
                    pending = chunk;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    }
}

/// Scores chunks.
struct Scorer<'a> {
    model: &'a LoadedModel,
    layout: &'a Layout,
    errors_format: Format,
    limits: edgeinfer_runtime::limits::Limits,
}

impl Scorer<'_> {
    fn score(&self, chunk: Chunk) -> Scored {
        let mut scored = Scored {
            seq: chunk.seq,
            rows: chunk.rows.len() as u64,
            ok: 0,
            failed: 0,
            output: Vec::new(),
            errors: Vec::new(),
            bytes_read: chunk.position,
        };
        // Consecutive valid rows are scored together; invalid ones are reported in place.
        let mut valid: Vec<(&str, &[Tensor], u64)> = Vec::new();
        let mut failures: Vec<(u64, &str, String)> = Vec::new();
        for row in &chunk.rows {
            match &row.inputs {
                Ok(inputs) => valid.push((&row.id, inputs, row.row)),
                Err(message) => failures.push((row.row, &row.id, message.clone())),
            }
        }
        if !valid.is_empty() {
            let together = self.infer(&valid);
            match together.and_then(|outputs| {
                let ids: Vec<&str> = valid.iter().map(|(id, _, _)| *id).collect();
                let mut lines = Vec::new();
                self.layout.rows(&ids, &outputs, &mut lines).map(|()| lines)
            }) {
                Ok(lines) => {
                    scored.output = lines;
                    scored.ok = valid.len() as u64;
                }
                Err(_) if valid.len() > 1 => {
                    for single in &valid {
                        let alone = std::slice::from_ref(single);
                        let lines = self.infer(alone).and_then(|outputs| {
                            let mut lines = Vec::new();
                            self.layout.rows(&[single.0], &outputs, &mut lines).map(|()| lines)
                        });
                        match lines {
                            Ok(lines) => {
                                scored.output.extend(lines);
                                scored.ok += 1;
                            }
                            Err(message) => failures.push((single.2, single.0, message)),
                        }
                    }
                }
                Err(message) => failures.push((valid[0].2, valid[0].0, message)),
            }
        }
        failures.sort_by_key(|(row, _, _)| *row);
        for (row, id, message) in failures {
            scored.failed += 1;
            scored.errors.extend(output::error_line(self.errors_format, row, id, &message));
        }
        scored
    }

    /// Runs rows together: their inputs joined along the batch dimension, the limits scaled
    /// by the row count.
    fn infer(&self, rows: &[(&str, &[Tensor], u64)]) -> Result<Vec<Tensor>, String> {
        let mut joined: Vec<Tensor> = rows[0].1.to_vec();
        let mut data: Vec<Vec<u8>> = joined.iter().map(|t| t.data.to_vec()).collect();
        for (_, inputs, _) in &rows[1..] {
            for ((into, into_data), tensor) in joined.iter_mut().zip(&mut data).zip(inputs.iter()) {
                if into.name != tensor.name || into.datatype != tensor.datatype || into.shape[1..] != tensor.shape[1..]
                {
                    return Err(format!("input '{}' differs in shape or type between rows", tensor.name));
                }
                into_data.extend_from_slice(&tensor.data);
                into.shape[0] += tensor.shape[0];
            }
        }
        for (tensor, data) in joined.iter_mut().zip(data) {
            tensor.data = data.into();
        }
        let n = rows.len() as u64;
        let overrides = LimitOverrides {
            fuel: Some(self.limits.fuel.saturating_mul(n)),
            timeout_ms: Some(self.limits.timeout_ms.saturating_mul(n)),
            memory_mb: None,
        };
        self.model.infer(joined, &[], overrides).map(|outcome| outcome.outputs).map_err(|e| e.to_string())
    }
}

/// The in-order writer's state.
struct Collector<'a> {
    checkpoint: &'a mut Checkpoint,
    staged: &'a mut File,
    staged_errors: &'a mut File,
    journal: &'a Path,
    options: &'a BatchOptions,
    progress: &'a dyn Progress,
    started: Instant,
    seconds_before: f64,
    resumed_from_row: u64,
    bytes_total: u64,
    cancel: &'a AtomicBool,
}

impl Collector<'_> {
    fn append(&mut self, scored: Scored) -> Result<(), BatchError> {
        let fail = |e: std::io::Error| BatchError::Output(format!("writing the staged output: {e}"));
        self.staged.write_all(&scored.output).map_err(fail)?;
        self.staged_errors.write_all(&scored.errors).map_err(fail)?;
        let c = &mut *self.checkpoint;
        c.rows_read += scored.rows;
        c.rows_ok += scored.ok;
        c.rows_failed += scored.failed;
        c.output_bytes += scored.output.len() as u64;
        c.errors_bytes += scored.errors.len() as u64;
        let (failed, read) = (c.rows_failed, c.rows_read);
        let over = match self.options.max_errors {
            Some(MaxErrors::Count(limit)) => failed > limit,
            Some(MaxErrors::Percent(share)) => read >= 100 && failed as f64 * 100.0 > share * read as f64,
            None => false,
        };
        if over {
            self.commit()?;
            return Err(BatchError::Aborted(format!(
                "{failed} of {read} rows failed, over --max-errors; the failures are in the errors file"
            )));
        }
        Ok(())
    }

    /// Makes the staged files and the checkpoint durable.
    fn commit(&mut self) -> Result<(), BatchError> {
        let fail = |e: std::io::Error| BatchError::Output(format!("syncing the staged output: {e}"));
        self.staged.sync_data().map_err(fail)?;
        self.staged_errors.sync_data().map_err(fail)?;
        self.checkpoint.seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
        self.checkpoint.save(self.journal)
    }

    fn status(&self, bytes_read: u64) -> Status {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        Status {
            rows_done: self.checkpoint.rows_read,
            rows_failed: self.checkpoint.rows_failed,
            bytes_read,
            bytes_total: self.bytes_total,
            rows_per_second: (self.checkpoint.rows_read - self.resumed_from_row) as f64 / elapsed,
        }
    }
}

/// Writes scored chunks in input order, checkpointing about once a second.
fn collect(results: Receiver<Result<Scored, BatchError>>, state: &mut Collector<'_>) -> Result<(), BatchError> {
    let mut waiting: BTreeMap<u64, Scored> = BTreeMap::new();
    let mut next = 0;
    let mut last_commit = Instant::now();
    let mut last_progress = Instant::now();
    let mut bytes_read = 0;
    for result in results {
        let scored = result?;
        waiting.insert(scored.seq, scored);
        while let Some(scored) = waiting.remove(&next) {
            bytes_read = bytes_read.max(scored.bytes_read);
            state.append(scored)?;
            next += 1;
        }
        if last_commit.elapsed() >= CHECKPOINT_EVERY {
            state.commit()?;
            last_commit = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_millis(200) {
            state.progress.update(&state.status(bytes_read));
            last_progress = Instant::now();
        }
        if state.cancel.load(Ordering::Relaxed) {
            break;
        }
    }
    state.commit()?;
    state.progress.update(&state.status(state.bytes_total));
    Ok(())
}

/// Moves the complete staged files to their final names (Parquet written from the staged
/// NDJSON).
fn finish(paths: &Paths, format: Format, layout: &Layout) -> Result<(), BatchError> {
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .map_err(|e| BatchError::Output(format!("renaming {} to {}: {e}", from.display(), to.display())))
    };
    rename(&paths.staged_errors, &paths.errors)?;
    if format == Format::Parquet {
        let temporary = paths.output.with_extension("parquet.tmp");
        parquet::write_from_ndjson(&paths.staged, &temporary, layout)?;
        rename(&temporary, &paths.output)?;
        journal::sync_dir(&paths.output)?;
        std::fs::remove_file(&paths.staged)
            .map_err(|e| BatchError::Output(format!("removing the staged output: {e}")))?;
    } else {
        rename(&paths.staged, &paths.output)?;
        journal::sync_dir(&paths.output)?;
    }
    Ok(())
}
