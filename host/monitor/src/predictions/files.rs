//! The log's files on disk: naming, the plain and sealed formats, reading them back with a
//! report of what could not be read, and the lock a writer holds on the file it appends to.
//!
//! A sealed file is the magic line `EIPL2\n`, then segments:
//! `EISG` | `u32 LE` length of the rest | `u8` key id length | key id | 12-byte nonce |
//! AES-256-GCM ciphertext of records (the plain format's, concatenated) with its 16-byte tag.
//! The key id and the format's name are authenticated with it. A segment that fails to open
//! is reported and skipped; after bytes that are not a segment, reading resumes at the next
//! `EISG` mark.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::PredictionRecord;
use crate::keys::{KeyError, Keyring, NONCE_BYTES, TAG_BYTES, no_keyring};
use crate::{Error, Result};

/// The first line of a plain log file.
pub(super) const PLAIN_MAGIC: &[u8] = b"EIPL1\n";
/// The first line of a sealed log file.
pub(super) const SEALED_MAGIC: &[u8] = b"EIPL2\n";
const MARK: &[u8] = b"EISG";
const AAD_PREFIX: &[u8] = b"edgeinfer prediction log segment\0";
pub(super) const EXTENSION: &str = "eipl";

/// Why part of the log could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Sealed with a key the keyring does not hold (or no keyring was given).
    UnknownKey,
    /// Failed authentication: altered on disk.
    Tampered,
    /// Cut short: the file ends inside a segment or record.
    Truncated,
    /// Bytes that are not a segment.
    Garbled,
    /// A record that does not decode.
    BadRecord,
}

/// A part of the log that could not be read; everything else was.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadProblem {
    /// The file.
    pub file: PathBuf,
    /// Byte offset of the segment or record in the file.
    pub offset: u64,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for ReadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}: {}", self.file.display(), self.offset, self.message)
    }
}

/// Everything read from a log directory.
#[derive(Debug, Default)]
pub struct LogRead {
    /// Records, oldest first.
    pub records: Vec<PredictionRecord>,
    /// What could not be read.
    pub problems: Vec<ReadProblem>,
}

/// Every record under `dir`, oldest first, with what could not be read; `keys` opens sealed
/// files.
pub fn read_log(dir: &Path, keys: Option<&Keyring>) -> Result<LogRead> {
    let mut records = Vec::new();
    let problems = for_each_record(dir, keys, &mut |record| records.push(record))?;
    Ok(LogRead { records, problems })
}

/// Calls `each` for every record under `dir`, oldest first, one file in memory at a time;
/// returns what could not be read. A file that is not a prediction log is an error.
pub fn for_each_record(
    dir: &Path,
    keys: Option<&Keyring>,
    each: &mut dyn FnMut(PredictionRecord),
) -> Result<Vec<ReadProblem>> {
    let mut problems = Vec::new();
    for (_, path) in log_files(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        // A writer appending to a file right now may have written part of its last piece.
        let appending = is_locked(&path);
        read_contents(&path, &bytes, keys, appending, each, &mut problems)?;
    }
    Ok(problems)
}

/// The log files of `dir` with their creation times (ms) and sequence numbers, oldest first.
pub(super) fn log_files(dir: &Path) -> Result<Vec<((u64, u64), PathBuf)>> {
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

/// Whether a file's bytes are sealed; `None` for an empty file (just created).
pub(super) fn is_sealed(path: &Path, bytes: &[u8]) -> Result<Option<bool>> {
    if bytes.is_empty() {
        Ok(None)
    } else if bytes.starts_with(SEALED_MAGIC) {
        Ok(Some(true))
    } else if bytes.starts_with(PLAIN_MAGIC) {
        Ok(Some(false))
    } else {
        Err(Error::Config(format!("{}: not an edgeinfer prediction log", path.display())))
    }
}

/// Reads the `bytes` of the file at `path`: `each` gets its records, `problems` what could not
/// be read; a cut-short end is not a problem when a writer is `appending` to the file.
pub(super) fn read_contents(
    path: &Path,
    bytes: &[u8],
    keys: Option<&Keyring>,
    appending: bool,
    each: &mut dyn FnMut(PredictionRecord),
    problems: &mut Vec<ReadProblem>,
) -> Result<()> {
    let mut problem = |offset: usize, kind: ProblemKind, message: String| {
        if kind == ProblemKind::Truncated && appending {
            return;
        }
        problems.push(ReadProblem { file: path.to_path_buf(), offset: offset as u64, kind, message });
    };
    match is_sealed(path, bytes)? {
        None => {}
        Some(false) => {
            let start = PLAIN_MAGIC.len();
            if let Err((offset, kind, message)) = decode_records(&bytes[start..], each) {
                problem(start + offset, kind, message);
            }
        }
        Some(true) => {
            let mut offset = SEALED_MAGIC.len();
            while offset < bytes.len() {
                match frame(&bytes[offset..]) {
                    Frame::Segment { id, nonce, sealed, length } => {
                        let mut data = sealed.to_vec();
                        let opened = match keys {
                            Some(keys) => keys.open(id, nonce, &aad(id), &mut data),
                            None => Err(no_keyring(id)),
                        };
                        match opened {
                            Ok(plain) => {
                                if let Err((_, kind, message)) = decode_records(plain, each) {
                                    problem(offset, kind, format!("segment sealed with key '{id}': {message}"));
                                }
                            }
                            Err(error) => {
                                let kind = match error {
                                    KeyError::Tampered(_) => ProblemKind::Tampered,
                                    _ => ProblemKind::UnknownKey,
                                };
                                problem(offset, kind, format!("segment {error}"));
                            }
                        }
                        offset += length;
                    }
                    Frame::Short => {
                        let message = format!(
                            "segment cut short ({} bytes left in the file): the file was truncated or a write was torn",
                            bytes.len() - offset
                        );
                        problem(offset, ProblemKind::Truncated, message);
                        break;
                    }
                    Frame::Garbled => {
                        let next = find_mark(&bytes[offset + 1..]).map_or(bytes.len(), |at| offset + 1 + at);
                        let message = format!("{} bytes that are not a segment, skipped", next - offset);
                        problem(offset, ProblemKind::Garbled, message);
                        offset = next;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Decodes concatenated records into `each`; on a problem, its offset, kind and message.
fn decode_records(
    mut rest: &[u8],
    each: &mut dyn FnMut(PredictionRecord),
) -> std::result::Result<(), (usize, ProblemKind, String)> {
    let total = rest.len();
    while !rest.is_empty() {
        let offset = total - rest.len();
        let Some(length) = rest.get(..4) else {
            return Err((offset, ProblemKind::Truncated, "record cut short in its length".into()));
        };
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let Some(payload) = rest.get(4..4 + length) else {
            return Err((offset, ProblemKind::Truncated, "record cut short (a torn write or a truncated file)".into()));
        };
        each(PredictionRecord::decode(payload).map_err(|message| (offset, ProblemKind::BadRecord, message))?);
        rest = &rest[4 + length..];
    }
    Ok(())
}

/// What the bytes at a segment's expected start are.
enum Frame<'b> {
    /// A whole segment of `length` bytes.
    Segment { id: &'b str, nonce: [u8; NONCE_BYTES], sealed: &'b [u8], length: usize },
    /// The start of a segment whose end is past the end of the file.
    Short,
    /// Not a segment.
    Garbled,
}

fn frame(bytes: &[u8]) -> Frame<'_> {
    if bytes.len() < MARK.len() + 4 {
        return if MARK.starts_with(&bytes[..bytes.len().min(MARK.len())]) { Frame::Short } else { Frame::Garbled };
    }
    if !bytes.starts_with(MARK) {
        return Frame::Garbled;
    }
    let rest = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let length = MARK.len() + 4 + rest;
    let Some(body) = bytes.get(8..length) else {
        // A length damaged on disk would also run past the end: if a later segment follows,
        // this one is garbled rather than the file's torn tail.
        return if find_mark(&bytes[1..]).is_some() { Frame::Garbled } else { Frame::Short };
    };
    let Some((&id_length, body)) = body.split_first() else { return Frame::Garbled };
    let id_length = id_length as usize;
    if body.len() < id_length + NONCE_BYTES + TAG_BYTES {
        return Frame::Garbled;
    }
    let (id, body) = body.split_at(id_length);
    let (nonce, sealed) = body.split_at(NONCE_BYTES);
    let (Ok(id), Ok(nonce)) = (std::str::from_utf8(id), nonce.try_into()) else { return Frame::Garbled };
    Frame::Segment { id, nonce, sealed, length }
}

fn find_mark(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MARK.len()).position(|w| w == MARK)
}

/// What a segment authenticates besides its ciphertext.
fn aad(id: &str) -> Vec<u8> {
    [AAD_PREFIX, id.as_bytes()].concat()
}

/// The most plaintext one segment holds (its length field is 32 bits).
pub(super) const MAX_SEGMENT: usize = 1 << 30;

/// Seals `plain` (concatenated records, consumed; at most [`MAX_SEGMENT`] bytes) into one
/// segment with the current key.
pub(super) fn seal_segment(keys: &Keyring, mut plain: Vec<u8>) -> Result<Vec<u8>> {
    let mut segment = seal_in_place(keys, &mut plain)?;
    segment.extend_from_slice(&plain);
    Ok(segment)
}

/// Encrypts `data` (concatenated records; at most [`MAX_SEGMENT`] bytes) in place with the
/// current key, tag appended; returns the segment's header, which goes before it.
pub(super) fn seal_in_place(keys: &Keyring, data: &mut Vec<u8>) -> Result<Vec<u8>> {
    if data.len() > MAX_SEGMENT {
        return Err(Error::Runtime(format!("{} bytes of records in one segment (at most {MAX_SEGMENT})", data.len())));
    }
    let aad = aad(keys.current_id());
    let (id, nonce) = keys.seal(&aad, data).map_err(|e| Error::Config(format!("sealing the prediction log: {e}")))?;
    let id_length = u8::try_from(id.len()).map_err(|_| Error::Config(format!("key id '{id}' over 255 bytes")))?;
    let rest = 1 + id.len() + NONCE_BYTES + data.len();
    let mut header = Vec::with_capacity(MARK.len() + 4 + 1 + id.len() + NONCE_BYTES);
    header.extend_from_slice(MARK);
    header.extend_from_slice(&(rest as u32).to_le_bytes());
    header.push(id_length);
    header.extend_from_slice(id.as_bytes());
    header.extend_from_slice(&nonce);
    Ok(header)
}

/// Takes the lock on `file` (released when it is closed) if no writer or eraser holds it;
/// `false` when one does.
pub(super) fn try_lock(file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an open file descriptor we own.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }
    #[cfg(not(unix))]
    true
}

/// Whether a writer is appending to the file at `path` now.
pub(super) fn is_locked(path: &Path) -> bool {
    File::open(path).is_ok_and(|file| !try_lock(&file))
}
