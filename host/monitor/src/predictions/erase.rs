//! Erasure: removing one request's or one caller's records from the log, rewriting each file
//! that holds any atomically (a temporary file in the same directory, fsync'd, renamed over
//! the old one, its modification time kept so retention is unchanged; sealed with the current
//! data key when keys are given). A file a writer is
//! appending to (another server's) is left alone and named in the report; a file holding
//! records the keys cannot open is not rewritten (that would lose them) and named too.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::PredictionRecord;
use super::files::{self, LogRead, MAX_SEGMENT, PLAIN_MAGIC, SEALED_MAGIC, log_files};
use crate::keys::Keyring;
use crate::{Error, Result};

/// Whose records to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    /// The records of one request id (live and shadow).
    RequestId(String),
    /// Every record of one caller (a token name).
    Caller(String),
}

impl Erasure {
    fn selects(&self, record: &PredictionRecord) -> bool {
        match self {
            Erasure::RequestId(id) => record.id == *id,
            Erasure::Caller(caller) => record.caller.as_deref() == Some(caller),
        }
    }
}

impl std::fmt::Display for Erasure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Erasure::RequestId(id) => write!(f, "request id '{id}'"),
            Erasure::Caller(caller) => write!(f, "caller '{caller}'"),
        }
    }
}

/// What an erasure did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErasureReport {
    /// Records removed.
    pub erased: usize,
    /// Their request ids, each once.
    pub request_ids: Vec<String>,
    /// Files rewritten.
    pub files_rewritten: usize,
    /// Files a writer is appending to, not looked at (erase through that server).
    pub files_being_written: Vec<PathBuf>,
    /// Files not rewritten because part of them could not be read, with why.
    pub files_unreadable: Vec<String>,
}

impl ErasureReport {
    /// Whether every file was searched (and so every selected record erased).
    pub fn complete(&self) -> bool {
        self.files_being_written.is_empty() && self.files_unreadable.is_empty()
    }
}

/// Erases the records `which` selects from the log in `dir`; `keys` opens sealed files, and
/// every file rewritten is sealed with their current key when given (plain ones too).
pub fn erase(dir: &Path, keys: Option<&Keyring>, which: &Erasure) -> Result<ErasureReport> {
    let mut report = ErasureReport::default();
    let mut seen = HashSet::new();
    for (_, path) in log_files(dir)? {
        let Ok(mut file) = File::open(&path) else { continue }; // removed meanwhile
        if !files::try_lock(&file) || !same_file(&file, &path) {
            report.files_being_written.push(path);
            continue;
        }
        let temporary = path.with_extension("erasing");
        let _ = std::fs::remove_file(&temporary); // left by an erasure that stopped midway
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if files::is_sealed(&path, &bytes)?.is_none() {
            continue; // just created, empty
        }
        let mut read = LogRead::default();
        files::read_contents(&path, &bytes, keys, false, &mut |record| read.records.push(record), &mut read.problems)?;
        if let Some(problem) = read.problems.first() {
            let more = read.problems.len() - 1;
            report
                .files_unreadable
                .push(format!("{problem}{}", if more > 0 { format!(" (and {more} more)") } else { String::new() }));
            continue;
        }
        let (erased, kept): (Vec<_>, Vec<_>) = read.records.into_iter().partition(|r| which.selects(r));
        if erased.is_empty() {
            continue;
        }
        rewrite(&path, &temporary, &kept, keys)?;
        report.erased += erased.len();
        report.files_rewritten += 1;
        for record in erased {
            if seen.insert(record.id.clone()) {
                report.request_ids.push(record.id);
            }
        }
        drop(file); // the lock, held until the file was replaced
    }
    Ok(report)
}

/// Whether the open `file` is still the file at `path` (not replaced by another erasure).
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (Ok(open), Ok(named)) = (file.metadata(), std::fs::metadata(path)) else { return false };
        open.ino() == named.ino() && open.dev() == named.dev()
    }
    #[cfg(not(unix))]
    true
}

/// Segments of a rewritten file hold about this much.
const REWRITE_SEGMENT: usize = 1 << 20;

/// Replaces the file at `path` with `records` (through `temporary`), sealed with `keys`'
/// current key when given, in segments of about 1 MiB.
fn rewrite(path: &Path, temporary: &Path, records: &[PredictionRecord], keys: Option<&Keyring>) -> Result<()> {
    let mut bytes = if keys.is_some() { SEALED_MAGIC.to_vec() } else { PLAIN_MAGIC.to_vec() };
    let mut plain = Vec::new();
    for (index, record) in records.iter().enumerate() {
        record.write_to(&mut plain, 0)?;
        let last = index + 1 == records.len();
        if let Some(keys) = keys
            && (plain.len() >= REWRITE_SEGMENT.min(MAX_SEGMENT) || last)
        {
            bytes.extend(files::seal_segment(keys, std::mem::take(&mut plain))?);
        }
    }
    bytes.extend(plain); // plain records (nothing left when sealed)
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let io = |e| Error::io(format!("rewriting {}", path.display()), e);
    let mut file = File::create(temporary).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    if let Some(modified) = modified {
        file.set_modified(modified).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(temporary, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}
