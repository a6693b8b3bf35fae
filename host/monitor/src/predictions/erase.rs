//! Erasure: removing one request's or one caller's records from the log, rewriting each file
//! that holds any atomically (a temporary file in the same directory, fsync'd, renamed over
//! the old one, its modification time kept so retention is unchanged). A file a writer is
//! appending to (another server's) is left alone and named in the report; a file holding
//! records the keys cannot open is not rewritten (that would lose them) and named too.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::PredictionRecord;
use super::files::{self, LogRead, PLAIN_MAGIC, SEALED_MAGIC, log_files};
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

/// Erases the records `which` selects from the log in `dir`; `keys` opens and re-seals sealed
/// files (with the current key).
pub fn erase(dir: &Path, keys: Option<&Keyring>, which: &Erasure) -> Result<ErasureReport> {
    let mut report = ErasureReport::default();
    for (_, path) in log_files(dir)? {
        let Ok(file) = File::open(&path) else { continue }; // removed meanwhile
        if !files::try_lock(&file) {
            report.files_being_written.push(path);
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let Some(sealed) = files::is_sealed(&path, &bytes)? else { continue };
        let mut read = LogRead::default();
        files::read_file(&path, keys, &mut |record| read.records.push(record), &mut read.problems)?;
        let (erased, kept): (Vec<_>, Vec<_>) = read.records.into_iter().partition(|r| which.selects(r));
        if let Some(problem) = read.problems.first() {
            report.files_unreadable.push(format!("{problem} (and {} more)", read.problems.len() - 1));
            continue;
        }
        if erased.is_empty() {
            continue;
        }
        rewrite(&path, &kept, sealed.then_some(keys).flatten())?;
        report.erased += erased.len();
        report.files_rewritten += 1;
        for record in erased {
            if !report.request_ids.contains(&record.id) {
                report.request_ids.push(record.id);
            }
        }
        drop(file); // the lock, held until the file was replaced
    }
    Ok(report)
}

/// Replaces the file at `path` with `records`, sealed with `keys`' current key when given.
fn rewrite(path: &Path, records: &[PredictionRecord], keys: Option<&Keyring>) -> Result<()> {
    let mut plain = Vec::new();
    for record in records {
        record.write_to(&mut plain, 0)?;
    }
    let bytes = match keys {
        Some(keys) => {
            let segment = files::seal_segment(keys, plain).map_err(|e| Error::Config(e.to_string()))?;
            [SEALED_MAGIC, &segment].concat()
        }
        None => [PLAIN_MAGIC, &plain].concat(),
    };
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let temporary = path.with_extension("erasing");
    let io = |e| Error::io(format!("rewriting {}", path.display()), e);
    let mut file = File::create(&temporary).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    if let Some(modified) = modified {
        file.set_modified(modified).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}
