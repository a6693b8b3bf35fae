//! The audit log: one JSON object per line, flushed on every write, for what matters after an
//! incident (failed authentication, forbidden and throttled requests, lockouts, admin changes,
//! refused components, guest traps). Rotated by size, keeping a fixed number of old files.
//!
//! Every line is chained to the one before it, so an edit, a removal or a reordering shows.
//! A line is the event's JSON with two fields appended: `"prev"`, the hash of the record before
//! it (64 zeros for the very first), then `"hash"`, the sha256 of the line's bytes up to the
//! `,"hash":"` that precedes it. Rotation carries the chain: the first line of a file links to
//! the last line of the file rotated before it. [`verify`] walks the files oldest first and
//! names the first broken link, or a missing rotated file (rotation removes only the oldest,
//! so the numbers present always run from 1 up). A removed tail cannot be seen from inside the
//! files: only an outside copy of the last hash (a remote log) can tell.
//!
//! Writers in one process or several (the server, CLI commands) take an exclusive lock on
//! `<file>.lock` for each record and re-read the last hash when another writer appended since,
//! so the chain never forks. [`verify`] reads without the lock, so a live server's writers
//! never wait for it; [`AuditLog::open`] reads without it too and, under it, only what was
//! appended meanwhile.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Size at which the audit log is rotated unless `audit_max_bytes` says otherwise (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Rotated audit files kept unless `audit_keep` says otherwise.
pub const DEFAULT_KEEP: usize = 5;

/// The `prev` of the very first record.
const GENESIS: [u8; 32] = [0; 32];
const PREV_FIELD: &[u8] = b",\"prev\":\"";
const HASH_FIELD: &[u8] = b",\"hash\":\"";
/// Longer lines are not audit records (ours are a few hundred bytes); reading stops there.
const MAX_LINE: usize = 1 << 20;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A request without a valid token (401).
    AuthFailed,
    /// A valid token without the scope needed (403).
    Forbidden,
    /// A request over its caller's rate or fuel quota (429).
    Throttled,
    /// An address locked out after repeated authentication failures.
    Lockout,
    /// An admin change (traffic, rollback, load, unload).
    AdminChange,
    /// A model version refused (digest, signature, capability, smoke test).
    VersionRefused,
    /// An inference stopped by its fuel, deadline or memory limit, or a guest trap.
    GuestTrap,
    /// The hash chain was found broken and a new one begun (`serve --accept-broken-audit`);
    /// the reason names the break and where the broken files were moved.
    ChainRestarted,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When (RFC 3339).
    pub time: String,
    /// What.
    pub kind: AuditKind,
    /// The client's address, when a client was involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
    /// The token's name (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The request (`METHOD /path`) or operation.
    pub action: String,
    /// The model concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The version concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The HTTP status or outcome.
    pub outcome: String,
    /// Why.
    pub reason: String,
}

impl AuditEvent {
    /// An event happening now, with no peer, token, model or version yet.
    pub fn new(kind: AuditKind, action: &str, outcome: &str, reason: &str) -> AuditEvent {
        AuditEvent {
            time: edgeinfer_runtime::clock::now_rfc3339(),
            kind,
            peer: None,
            token: None,
            action: action.to_string(),
            model: None,
            version: None,
            outcome: outcome.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// What reading or checking the audit log ran into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The hash chain is broken; appending would hide where.
    #[error("audit log broken at {0}")]
    Broken(ChainBreak),
    /// Reading, writing or locking a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl AuditError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AuditError {
        let context = context.into();
        move |source| AuditError::Io { context, source }
    }
}

/// The first broken link of a chain: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The file.
    pub file: PathBuf,
    /// The line, from 1 (0 for [`ChainProblem::Missing`]: the whole file).
    pub line: usize,
    /// What is wrong.
    pub problem: ChainProblem,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.problem {
            ChainProblem::Missing => write!(f, "{}: {}", self.file.display(), self.problem),
            _ => write!(f, "{}:{}: {}", self.file.display(), self.line, self.problem),
        }
    }
}

/// What is wrong at a [`ChainBreak`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainProblem {
    /// The line's hash does not match its own bytes.
    Edited,
    /// The line's `prev` is not the hash of the line before it.
    Unlinked,
    /// The line is not an audit record (or not a complete one).
    Unparseable(String),
    /// A line without `prev` and `hash` after chained ones.
    Unchained,
    /// A rotated file missing while older ones remain (`audit.jsonl.1` gone, `.2` there):
    /// rotation only ever removes the oldest, so one was deleted.
    Missing,
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::Edited => write!(f, "edited: the record's hash does not match its contents"),
            ChainProblem::Unlinked => write!(
                f,
                "its prev is not the hash of the record before it: a record before it was removed or \
                 rewritten, or the records were reordered"
            ),
            ChainProblem::Unparseable(why) => write!(f, "not an audit record: {why}"),
            ChainProblem::Unchained => {
                write!(
                    f,
                    "a record without prev and hash after chained records (only lines from before chaining may lack them)"
                )
            }
            ChainProblem::Missing => write!(
                f,
                "the file is missing while older rotated files remain: a rotated file was removed \
                 (rotation only removes the oldest)"
            ),
        }
    }
}

/// What the oldest chained record links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainAnchor {
    /// The start of the chain (`prev` all zeros).
    Start,
    /// A record no longer there: the files before it were rotated away.
    RotatedAway([u8; 32]),
}

/// An intact chain: what [`verify`] walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Chained records.
    pub records: usize,
    /// Lines without `prev` and `hash` at the start, written before chaining existed.
    pub legacy: usize,
    /// The files walked, oldest first.
    pub files: Vec<PathBuf>,
    /// What the oldest chained record links to (`None`: no chained record).
    pub anchor: Option<ChainAnchor>,
    /// The hash of the newest record (`None`: no chained record): kept elsewhere, it shows a
    /// removed tail, which the chain alone cannot.
    pub last_hash: Option<[u8; 32]>,
    /// Bytes after the current file's last end of line, left out by [`verify`]: an append in
    /// progress (or a write cut short, which [`AuditLog::open`] refuses).
    pub unfinished: usize,
}

impl ChainReport {
    /// [`ChainReport::last_hash`] in hex, as the log writes it.
    pub fn last_hash_hex(&self) -> Option<String> {
        self.last_hash.map(hex::encode)
    }
}

impl std::fmt::Display for ChainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let (records, files) = (self.records, self.files.len());
        write!(f, "{records} record{} in {files} file{}", plural(records), plural(files))?;
        match self.anchor {
            Some(ChainAnchor::Start) => write!(f, " (oldest anchored at the start of the chain)")?,
            Some(ChainAnchor::RotatedAway(prev)) => {
                write!(f, " (oldest anchored at {}: the records before it were rotated away)", hex::encode(prev))?
            }
            None => {}
        }
        if self.legacy > 0 {
            write!(f, ", after {} unchained line{} from before chaining", self.legacy, plural(self.legacy))?;
        }
        if self.unfinished > 0 {
            let n = self.unfinished;
            write!(
                f,
                "; {n} byte{} after the last end of line left out (an append in progress, or a write cut short)",
                plural(n)
            )?;
        }
        Ok(())
    }
}

/// The broken chain a [`AuditLog::open_or_restart`] set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRestart {
    /// Where the old chain broke.
    pub broken: ChainBreak,
    /// Where its files went (`<name>.broken-<unix ms>`).
    pub moved: Vec<PathBuf>,
}

/// Times [`verify`] reads the files before giving up on a log rotated under it each time.
const READS: usize = 4;

/// Checks the chain of the audit log at `path` and its rotated files (`path.N` ... `path.1`,
/// then `path`), oldest first. A missing log is an intact, empty chain.
///
/// Reads without the writers' lock, so a live server never waits for it: a last line of
/// `path` without end of line is taken for an append in progress and left out
/// ([`ChainReport::unfinished`]); a walk during which a writer rotated the files is done again
/// once the writer is done (the lock taken shared for an instant to wait, never while reading),
/// up to 4 times.
pub fn verify(path: &Path) -> Result<ChainReport, AuditError> {
    let lock = File::open(lock_path(path)).ok();
    // Waits for the writer holding the lock, if any, to be done (without holding it after).
    let wait_for_writers = || {
        if let Some(lock) = &lock
            && lock.lock_shared().is_ok()
        {
            let _ = lock.unlock();
        }
    };
    for _ in 0..READS {
        let numbered = numbered_files(path)?;
        let walked = walk(path, &numbered, Tail::Live);
        // The same rotated files, to their last lines, after the walk: no rotation ran during it
        // (every rotation gives `.1` newer records).
        let mut settled = numbered_files(path)? == numbered;
        if settled && matches!(walked, Err(AuditError::Broken(_))) {
            // Rotation renames one file at a time: a writer caught midway (and paused) leaves a
            // number missing. A break stands when the files are the same once it is done.
            wait_for_writers();
            settled = numbered_files(path)? == numbered;
        }
        if settled {
            return walked.map(|walker| walker.report);
        }
        wait_for_writers();
    }
    Err(AuditError::Io {
        context: format!("reading {}", path.display()),
        source: std::io::Error::other(format!("the files were rotated during each of {READS} reads; try again")),
    })
}

/// An append-only, size-rotated, hash-chained JSON-lines file.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// `<path>.lock`, locked for each record so writers in other processes take turns.
    lock: File,
    chain: Mutex<Chain>,
}

/// Where the chain ends, as this writer last saw it.
struct Chain {
    last: [u8; 32],
    /// The current file when `last` was read or written; another one means another writer.
    seen: Option<FileStamp>,
    /// The line hashed `last`, as written (length without end of line, sha256): the same
    /// stamp may be another file once a rotation removed one (file ids are reused), so the
    /// file must also still end with it (`None`: unknown, read the last hash again).
    line: Option<(u64, [u8; 32])>,
}

impl AuditLog {
    /// `<repo>/.edgeinfer/audit.jsonl`, where the server keeps the audit log unless
    /// `audit_file` says otherwise.
    pub fn default_path(repo: &Path) -> PathBuf {
        edgeinfer_runtime::repository::state_dir(repo).join("audit.jsonl")
    }

    /// The audit log at `path`, rotated past `max_bytes` keeping `keep` older files
    /// (`audit.jsonl.1` the newest), continuing its chain. Refuses a broken chain: appending to
    /// it would hide the break.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(path, max_bytes, keep, false).map(|(log, _)| log)
    }

    /// Like [`AuditLog::open`], but a broken chain is set aside: its files are renamed
    /// `<name>.broken-<unix ms>` (never deleted) and a new chain begins with a
    /// [`AuditKind::ChainRestarted`] record naming the break and where the files went.
    pub fn open_or_restart(
        path: &Path,
        max_bytes: u64,
        keep: usize,
    ) -> Result<(AuditLog, Option<ChainRestart>), AuditError> {
        AuditLog::open_with(path, max_bytes, keep, true)
    }

    fn open_with(
        path: &Path,
        max_bytes: u64,
        keep: usize,
        restart_broken: bool,
    ) -> Result<(AuditLog, Option<ChainRestart>), AuditError> {
        let chain = Mutex::new(Chain { last: GENESIS, seen: None, line: None });
        let log = AuditLog { path: path.to_path_buf(), max_bytes, keep, lock: open_lock(path)?, chain };
        // The long part, reading every file, runs without the lock, so other writers (a live
        // server) go on appending meanwhile.
        let numbered = numbered_files(path)?;
        let early = walk(path, &numbered, Tail::Live).ok();
        // Checked, and restarted, under the lock: no other writer slips a record in between.
        // Only what was appended since the walk above is read here, unless the files were
        // rotated meanwhile or the walk found a break (perhaps a writer's, mid-rotation).
        let restart = {
            let _locked = Unlock::exclusive(&log.lock, path)?;
            let mut chain = log.chain.lock().unwrap_or_else(|p| p.into_inner());
            let checked = match early {
                Some(walker) => walker.finish(path, &numbered),
                None => walk(path, &numbered_files(path)?, Tail::Strict).map(|walker| walker.report),
            };
            match checked {
                Ok(report) => {
                    chain.last = report.last_hash.unwrap_or(GENESIS);
                    chain.seen = FileStamp::of_path(path);
                    None
                }
                Err(AuditError::Broken(broken)) if restart_broken => {
                    let moved = set_aside(path)?;
                    let list: Vec<String> = moved.iter().map(|p| p.display().to_string()).collect();
                    let reason =
                        format!("the chain was broken at {broken}; its files were moved to {}", list.join(", "));
                    let event =
                        AuditEvent::new(AuditKind::ChainRestarted, "serve --accept-broken-audit", "restarted", &reason);
                    log.write(&mut chain, &event)?;
                    Some(ChainRestart { broken, moved })
                }
                Err(error) => return Err(error),
            }
        };
        Ok((log, restart))
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event; a failure is logged, never fails the request being audited.
    pub fn record(&self, event: AuditEvent) {
        if let Err(error) = self.append(&event) {
            tracing::error!(path = %self.path.display(), %error, ?event, "cannot write the audit log");
        }
    }

    /// Appends one event, chained to the last record (whoever wrote it).
    pub fn append(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let _locked = Unlock::exclusive(&self.lock, &self.path)?;
        self.write(&mut chain, event)
    }

    /// Appends under the lock.
    fn write(&self, chain: &mut Chain, event: &AuditEvent) -> Result<(), AuditError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(AuditError::io(format!("creating {}", dir.display())))?;
        }
        let current = std::fs::metadata(&self.path).ok();
        let stamp = current.as_ref().map(FileStamp::of);
        let ours = match (stamp, chain.line) {
            (Some(stamp), Some(line)) if Some(stamp) == chain.seen => ends_with_line(&self.path, stamp.len, Some(line))
                .map_err(AuditError::io(format!("reading {}", self.path.display())))?,
            _ => stamp.is_none() && chain.seen.is_none(),
        };
        if !ours && let Some(last) = last_on_disk(&self.path)? {
            chain.last = last;
        }
        if current.is_some_and(|m| m.len() >= self.max_bytes) {
            self.rotate().map_err(AuditError::io(format!("rotating {}", self.path.display())))?;
        }
        let (line, hash) = chained_line(event, &chain.last).map_err(AuditError::io("encoding an audit record"))?;
        let context = || format!("appending to {}", self.path.display());
        let mut file =
            OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| AuditError::io(context())(e))?;
        file.write_all(&line).and_then(|()| file.flush()).map_err(|e| AuditError::io(context())(e))?;
        chain.last = hash;
        chain.seen = file.metadata().ok().as_ref().map(FileStamp::of);
        let written = &line[..line.len() - 1];
        chain.line = Some((written.len() as u64, Sha256::digest(written).into()));
        Ok(())
    }

    /// `audit.jsonl` -> `.1` -> `.2` ...; the oldest beyond `keep` is removed, and so is any
    /// left beyond it by a larger `keep` before, so the numbered files stay one chain. A gap
    /// (a removed file) moves up with the files, for `verify` to name, until rotated away.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: usize| rotated(&self.path, n);
        // The highest first: no number goes missing below one still there.
        for stale in rotation_numbers(&self.path)?.into_iter().rev().filter(|&n| n >= self.keep.max(1)) {
            std::fs::remove_file(numbered(stale))?;
        }
        for n in (1..self.keep).rev() {
            if numbered(n).exists() {
                std::fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        if self.keep == 0 { std::fs::remove_file(&self.path) } else { std::fs::rename(&self.path, numbered(1)) }
    }
}

/// The line written for `event` after the record hashed `prev`, and its hash.
fn chained_line(event: &AuditEvent, prev: &[u8; 32]) -> std::io::Result<(Vec<u8>, [u8; 32])> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    // The closing brace: `prev` and `hash` go inside the object.
    if line.pop() != Some(b'}') {
        return Err(std::io::Error::other("an audit event is not a JSON object"));
    }
    line.extend_from_slice(PREV_FIELD);
    line.extend_from_slice(hex::encode(prev).as_bytes());
    line.push(b'"');
    let hash: [u8; 32] = Sha256::digest(&line).into();
    line.extend_from_slice(HASH_FIELD);
    line.extend_from_slice(hex::encode(hash).as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// One line, as far as the chain is concerned.
#[derive(Debug, PartialEq, Eq)]
enum Link {
    /// With `prev` and a `hash` matching the line's bytes.
    Chained { prev: [u8; 32], hash: [u8; 32] },
    /// A JSON object without them.
    Unchained,
}

fn parse_line(line: &[u8]) -> Result<Link, ChainProblem> {
    let malformed = |what: &str| ChainProblem::Unparseable(format!("a malformed {what} field"));
    let Some(at) = rfind(line, HASH_FIELD) else {
        return match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) {
            Ok(_) => Ok(Link::Unchained),
            Err(error) if line.is_empty() => Err(ChainProblem::Unparseable(format!("an empty line ({error})"))),
            Err(error) => Err(ChainProblem::Unparseable(format!("not a JSON object ({error})"))),
        };
    };
    let tail = &line[at + HASH_FIELD.len()..];
    let hash = match tail.split_last_chunk::<2>() {
        Some((digits, b"\"}")) => hex32(digits).ok_or_else(|| malformed("hash"))?,
        _ => return Err(malformed("hash")),
    };
    let covered = &line[..at];
    // `{` ... `,"prev":"` 64 hex digits `"`
    let prev_start = covered.len().checked_sub(PREV_FIELD.len() + 65).ok_or_else(|| malformed("prev"))?;
    let prev = match covered[prev_start..].split_at(PREV_FIELD.len()) {
        (PREV_FIELD, [digits @ .., b'"']) if covered.first() == Some(&b'{') => {
            hex32(digits).ok_or_else(|| malformed("prev"))?
        }
        _ => return Err(malformed("prev")),
    };
    if <[u8; 32]>::from(Sha256::digest(covered)) != hash {
        return Err(ChainProblem::Edited);
    }
    Ok(Link::Chained { prev, hash })
}

/// 64 lowercase hex digits (what the writer writes; anything else is an edit).
fn hex32(digits: &[u8]) -> Option<[u8; 32]> {
    if digits.len() != 64 || !digits.iter().all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|window| window == needle)
}

/// How a walk takes a last line without end of line in the current file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// As a record cut short: a break (read under the lock, no append is in progress).
    Strict,
    /// As an append in progress: left out (read without the lock).
    Live,
}

/// A rotated file, `<name>.N`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Numbered {
    /// N, from 1.
    n: usize,
    path: PathBuf,
    /// The sha256 of its last complete line (`None`: none): a rotation gives `.1` a file with
    /// newer records, so another one, where file ids (inode numbers) may be reused.
    last: Option<[u8; 32]>,
}

/// Where a walk left a file: which file, after how many bytes and lines (complete ones), the
/// last of them `last` (its length, without end of line, and sha256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    id: (u64, u64),
    offset: u64,
    lines: usize,
    last: Option<(u64, [u8; 32])>,
}

/// A walk through the chain, oldest record first.
struct Walker {
    report: ChainReport,
    /// Where the walk left the current file (`None`: there was none).
    current: Option<Resume>,
}

/// Walks the files oldest first: the rotated ones in `numbered` (as listed by
/// [`numbered_files`]), then `path`; the first broken link, or missing file, is the error.
fn walk(path: &Path, numbered: &[Numbered], tail: Tail) -> Result<Walker, AuditError> {
    let report = ChainReport { records: 0, legacy: 0, files: Vec::new(), anchor: None, last_hash: None, unfinished: 0 };
    let mut walker = Walker { report, current: None };
    for (i, file) in numbered.iter().enumerate().rev() {
        // Rotated files are complete: their writers were done before they were renamed.
        walker.file(&file.path, Tail::Strict, None)?;
        // The next newer one is N-1 (none after `.1`): anything else is a gap.
        let newer = i.checked_sub(1).map_or(0, |newer| numbered[newer].n);
        if newer + 1 != file.n {
            let missing = rotated(path, file.n - 1);
            return Err(AuditError::Broken(ChainBreak { file: missing, line: 0, problem: ChainProblem::Missing }));
        }
    }
    walker.current = walker.file(path, tail, None)?;
    Ok(walker)
}

impl Walker {
    /// Walks `file`, from its start or from where an earlier walk left it; `None`: no such file.
    fn file(&mut self, file: &Path, tail: Tail, from: Option<Resume>) -> Result<Option<Resume>, AuditError> {
        let context = || format!("reading {}", file.display());
        let mut opened = match File::open(file) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuditError::io(context())(e)),
        };
        let id = opened.metadata().map_err(|e| AuditError::io(context())(e))?;
        let id = FileStamp::of(&id).id;
        let (mut offset, mut number) = from.map_or((0, 0), |from| (from.offset, from.lines));
        let mut last = from.and_then(|from| from.last);
        opened.seek(SeekFrom::Start(offset)).map_err(|e| AuditError::io(context())(e))?;
        let mut reader = BufReader::with_capacity(64 << 10, opened);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| AuditError::io(context())(e))?;
            if read == 0 {
                break;
            }
            let broken =
                |problem| AuditError::Broken(ChainBreak { file: file.to_path_buf(), line: number + 1, problem });
            if line.pop() != Some(b'\n') {
                if read > MAX_LINE {
                    return Err(broken(ChainProblem::Unparseable("longer than 1 MiB".into())));
                }
                // At the end of the file (`take` did not stop it).
                if tail == Tail::Live {
                    self.report.unfinished = read;
                    break;
                }
                return Err(broken(ChainProblem::Unparseable("cut short (no end of line)".into())));
            }
            self.link(&line).map_err(broken)?;
            number += 1;
            offset += read as u64;
            last = Some((line.len() as u64, Sha256::digest(&line).into()));
        }
        if from.is_none() {
            self.report.files.push(file.to_path_buf());
        }
        Ok(Some(Resume { id, offset, lines: number, last }))
    }

    /// Takes one complete line into the chain.
    fn link(&mut self, line: &[u8]) -> Result<(), ChainProblem> {
        let report = &mut self.report;
        match parse_line(line)? {
            Link::Unchained if report.last_hash.is_some() => return Err(ChainProblem::Unchained),
            Link::Unchained => report.legacy += 1,
            Link::Chained { prev, hash } => {
                match report.last_hash {
                    Some(last) if prev != last => return Err(ChainProblem::Unlinked),
                    Some(_) => {}
                    // After lines from before chaining, the chain starts from zeros.
                    None if report.legacy > 0 && prev != GENESIS => return Err(ChainProblem::Unlinked),
                    None if prev == GENESIS => report.anchor = Some(ChainAnchor::Start),
                    None => report.anchor = Some(ChainAnchor::RotatedAway(prev)),
                }
                report.last_hash = Some(hash);
                report.records += 1;
            }
        }
        Ok(())
    }

    /// Ends, under the lock, a walk done without it over the files `numbered` listed: reads
    /// what was appended to the current file since (an unfinished line now a break), or walks
    /// everything again when the files were rotated or replaced meanwhile.
    fn finish(mut self, path: &Path, numbered: &[Numbered]) -> Result<ChainReport, AuditError> {
        let now = FileStamp::of_path(path);
        let listed = numbered_files(path)?;
        let unchanged = listed == numbered
            && match (self.current, now) {
                (Some(walked), Some(now)) => {
                    walked.id == now.id
                        && now.len >= walked.offset
                        && ends_with_line(path, walked.offset, walked.last)
                            .map_err(AuditError::io(format!("reading {}", path.display())))?
                }
                (None, None) => true,
                _ => false,
            };
        if !unchanged {
            return walk(path, &listed, Tail::Strict).map(|walker| walker.report);
        }
        if let Some(walked) = self.current {
            self.report.unfinished = 0;
            self.file(path, Tail::Strict, Some(walked))?;
        }
        Ok(self.report)
    }
}

/// Renames the log's files `<name>.broken-<unix ms>`; returns where they went.
fn set_aside(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mut moved = Vec::new();
    let mut files: Vec<PathBuf> = numbered_files(path)?.into_iter().rev().map(|file| file.path).collect();
    files.extend(path.exists().then(|| path.to_path_buf()));
    for file in files {
        let aside = with_suffix(&file, &format!(".broken-{millis}"));
        let context = format!("moving {} aside to {}", file.display(), aside.display());
        std::fs::rename(&file, &aside).map_err(AuditError::io(context))?;
        moved.push(aside);
    }
    Ok(moved)
}

/// The rotated files of the log at `path` that exist, `<name>.N` for every N from 1, by
/// number, whether or not the numbers follow on.
fn numbered_files(path: &Path) -> Result<Vec<Numbered>, AuditError> {
    let dir = log_dir(path);
    list_numbered(path).map_err(AuditError::io(format!("listing {}", dir.display())))
}

fn list_numbered(path: &Path) -> std::io::Result<Vec<Numbered>> {
    let mut files = Vec::new();
    for n in rotation_numbers(path)? {
        let file = rotated(path, n);
        // Gone since listed (a writer rotating): left out, as a walk would.
        if !file.exists() {
            continue;
        }
        let last = last_line(&file)?.map(|line| Sha256::digest(line).into());
        files.push(Numbered { n, path: file, last });
    }
    Ok(files)
}

/// The N of every `<name>.N` beside the log at `path`, in order.
fn rotation_numbers(path: &Path) -> std::io::Result<Vec<usize>> {
    let Some(name) = path.file_name() else { return Ok(Vec::new()) };
    let entries = match std::fs::read_dir(log_dir(path)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut numbers = Vec::new();
    for entry in entries {
        numbers.extend(rotation_number(name, &entry?.file_name()));
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Whether `file`'s bytes up to `offset` end with the line `last` (length without end of line,
/// sha256) and an end of line; `None`: nothing to check.
fn ends_with_line(file: &Path, offset: u64, last: Option<(u64, [u8; 32])>) -> std::io::Result<bool> {
    let Some((len, digest)) = last else { return Ok(true) };
    let Some(start) = offset.checked_sub(len + 1) else { return Ok(false) };
    let mut opened = File::open(file)?;
    opened.seek(SeekFrom::Start(start))?;
    let mut line = Vec::new();
    opened.take(len + 1).read_to_end(&mut line)?;
    Ok(line.pop() == Some(b'\n') && line.len() as u64 == len && <[u8; 32]>::from(Sha256::digest(&line)) == digest)
}

/// N when `entry` is `<name>.N`, N a positive integer as [`rotated`] writes it.
fn rotation_number(name: &OsStr, entry: &OsStr) -> Option<usize> {
    let digits = entry.as_encoded_bytes().strip_prefix(name.as_encoded_bytes())?.strip_prefix(b".")?;
    if digits.first().is_none_or(|first| !(b'1'..=b'9').contains(first)) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn log_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The hash the next record must link to, from the last line of the current file (or of
/// the newest rotated one when the current is missing or empty); `None` when neither says.
fn last_on_disk(path: &Path) -> Result<Option<[u8; 32]>, AuditError> {
    for file in [path.to_path_buf(), rotated(path, 1)] {
        let Some(line) = last_line(&file).map_err(AuditError::io(format!("reading {}", file.display())))? else {
            continue;
        };
        return Ok(match parse_line(&line) {
            Ok(Link::Chained { hash, .. }) => Some(hash),
            Ok(Link::Unchained) => Some(GENESIS),
            // A broken line: `verify` will name it; chaining on keeps the records after it.
            Err(_) => None,
        });
    }
    Ok(None)
}

/// The last complete line of `file` (`None`: missing, empty or cut short).
fn last_line(file: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut opened = match File::open(file) {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = opened.metadata()?.len();
    let mut window: u64 = 4096;
    loop {
        let start = len.saturating_sub(window);
        opened.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        Read::by_ref(&mut opened).take(len - start).read_to_end(&mut tail)?;
        if tail.pop() != Some(b'\n') {
            return Ok(None);
        }
        match tail.iter().rposition(|&b| b == b'\n') {
            Some(newline) => return Ok(Some(tail.split_off(newline + 1))),
            None if start == 0 => return Ok(Some(tail)),
            None if window > MAX_LINE as u64 => return Ok(None),
            None => window *= 4,
        }
    }
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    with_suffix(path, &format!(".{n}"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

fn open_lock(path: &Path) -> Result<File, AuditError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(AuditError::io(format!("creating {}", dir.display())))?;
    }
    let lock = lock_path(path);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(AuditError::io(format!("opening {}", lock.display())))
}

/// A held file lock, released on drop.
struct Unlock<'a>(&'a File);

impl<'a> Unlock<'a> {
    fn exclusive(lock: &'a File, log: &Path) -> Result<Unlock<'a>, AuditError> {
        lock.lock().map_err(AuditError::io(format!("locking {}", lock_path(log).display())))?;
        Ok(Unlock(lock))
    }
}

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Which file, at which length: a change means another writer appended or rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    id: (u64, u64),
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            (metadata.dev(), metadata.ino())
        };
        #[cfg(not(unix))]
        let id = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), u64::from(d.subsec_nanos())));
        FileStamp { len: metadata.len(), id }
    }

    fn of_path(path: &Path) -> Option<FileStamp> {
        std::fs::metadata(path).ok().as_ref().map(FileStamp::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            time: "2026-11-26T00:00:00Z".into(),
            kind: AuditKind::AuthFailed,
            peer: Some(IpAddr::from([127, 0, 0, 1])),
            token: None,
            action: format!("GET /v2/{n}"),
            model: None,
            version: None,
            outcome: "401".into(),
            reason: "unknown token".into(),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).expect("read").lines().map(str::to_string).collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
    }

    /// A log of `n` records in one file.
    fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP).expect("open");
        for k in 0..n {
            log.record(event(k));
        }
        (temp, path)
    }

    fn broken_at(path: &Path) -> (PathBuf, usize, ChainProblem) {
        match verify(path) {
            Err(AuditError::Broken(ChainBreak { file, line, problem })) => (file, line, problem),
            other => panic!("expected a break, got {other:?}"),
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 300, 2).expect("open");
        for n in 0..20 {
            log.record(event(n));
        }
        assert!(
            path.exists() && temp.path().join("audit.jsonl.1").exists() && temp.path().join("audit.jsonl.2").exists()
        );
        assert!(!temp.path().join("audit.jsonl.3").exists());
        let last: Vec<AuditEvent> =
            lines(&path).iter().map(|l| serde_json::from_str(l).expect("an event, prev and hash aside")).collect();
        assert_eq!(last.last().expect("one").action, "GET /v2/19");
    }

    #[test]
    fn each_line_is_the_event_then_prev_then_its_hash() {
        let (_temp, path) = log_of(2);
        let lines = lines(&path);
        let first = &lines[0];
        let at = first.rfind(",\"hash\":\"").expect("hash");
        assert_eq!(&first[at + 9..], format!("{}\"}}", hex::encode(Sha256::digest(&first.as_bytes()[..at]))));
        assert!(first[..at].ends_with(&format!(",\"prev\":\"{}\"", "0".repeat(64))), "{first}");
        let second_prev = format!(",\"prev\":\"{}\",\"hash\"", &first[at + 9..at + 9 + 64]);
        assert!(lines[1].contains(&second_prev), "{}", lines[1]);
    }

    #[test]
    fn an_intact_chain_verifies_across_rotation() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 10).expect("open");
        for n in 0..20 {
            log.record(event(n));
        }
        let report = verify(&path).expect("intact");
        assert!(report.files.len() >= 4, "{report:?}");
        assert_eq!((report.records, report.legacy, report.anchor), (20, 0, Some(ChainAnchor::Start)));
        assert!(report.to_string().starts_with(&format!("20 records in {} files", report.files.len())), "{report}");

        // With fewer files kept, the oldest left is the anchor, said to be rotated away.
        let log = AuditLog::open(&path, 600, 2).expect("reopen");
        for n in 20..26 {
            log.record(event(n));
        }
        let report = verify(&path).expect("intact");
        assert_eq!(report.files.len(), 3, "files beyond keep are removed: {report:?}");
        assert!(matches!(report.anchor, Some(ChainAnchor::RotatedAway(_))), "{report:?}");
        assert!(report.to_string().contains("rotated away"), "{report}");
        let counted: usize = report.files.iter().map(|f| lines(f).len()).sum();
        assert_eq!(report.records, counted);
    }

    #[test]
    fn an_edited_record_is_named() {
        let (_temp, path) = log_of(8);
        let mut lines = lines(&path);
        lines[3] = lines[3].replace("unknown token", "known token");
        write_lines(&path, &lines);
        assert_eq!(broken_at(&path), (path.clone(), 4, ChainProblem::Edited));
        let message = verify(&path).expect_err("broken").to_string();
        assert!(message.contains("audit.jsonl:4: edited"), "{message}");
    }

    #[test]
    fn a_removed_record_is_named_at_the_one_after_it() {
        let (_temp, path) = log_of(8);
        let mut lines = lines(&path);
        lines.remove(3);
        write_lines(&path, &lines);
        assert_eq!(broken_at(&path), (path.clone(), 4, ChainProblem::Unlinked));
    }

    #[test]
    fn reordered_records_are_named_at_the_first() {
        let (_temp, path) = log_of(8);
        let mut lines = lines(&path);
        lines.swap(3, 4);
        write_lines(&path, &lines);
        assert_eq!(broken_at(&path), (path.clone(), 4, ChainProblem::Unlinked));
    }

    #[test]
    fn a_removed_record_is_named_across_rotation() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 10).expect("open");
        for n in 0..12 {
            log.record(event(n));
        }
        let newest_rotated = temp.path().join("audit.jsonl.1");
        let mut rotated = lines(&newest_rotated);
        rotated.pop();
        write_lines(&newest_rotated, &rotated);
        assert_eq!(broken_at(&path), (path.clone(), 1, ChainProblem::Unlinked));
    }

    #[test]
    fn every_changed_byte_is_found_and_garbage_never_panics() {
        let (_temp, path) = log_of(3);
        let good = std::fs::read(&path).expect("read");
        let mut rng = fastrand::Rng::with_seed(29);
        let last_line = good.len() - good[..good.len() - 1].iter().rposition(|&b| b == b'\n').expect("3 lines") - 1;
        for trial in 0..=300 {
            // The last trial changes the final end of line.
            let at = if trial == 300 { good.len() - 1 } else { rng.usize(..good.len()) };
            let mut bytes = good.clone();
            bytes[at] ^= 1 << rng.u8(..8);
            std::fs::write(&path, &bytes).expect("write");
            if at == good.len() - 1 {
                // The last end of line changed: to `verify`, reading without the lock, the last
                // record may be an append in progress; under the lock it is cut short.
                let report = verify(&path).expect("the records before it");
                assert_eq!((report.records, report.unfinished), (2, last_line), "{report}");
                let refused = AuditLog::open(&path, 1000, 1).err().expect("refused");
                assert!(refused.to_string().contains("audit.jsonl:3: not an audit record: cut short"), "{refused}");
                continue;
            }
            assert!(matches!(verify(&path), Err(AuditError::Broken(_))), "byte {at} changed unnoticed");
        }
        for garbage in [
            b"\xff\xfe\x00garbage\n".to_vec(),
            b"{\"a\":1\n".to_vec(),
            b"{\"a\":1\n{\"b\":2".to_vec(),
            b"\n\n".to_vec(),
            b",\"hash\":\"\"}\n".to_vec(),
            format!("{{,\"prev\":\"{}\",\"hash\":\"{}\"}}\n", "0".repeat(64), "0".repeat(64)).into_bytes(),
            format!(",\"prev\":\"{}\",\"hash\":\"{}\"}}\n", "0".repeat(64), "z".repeat(64)).into_bytes(),
            vec![b'x'; MAX_LINE + 10],
            (0..4000).map(|_| rng.u8(..)).collect(),
        ] {
            std::fs::write(&path, &garbage).expect("write");
            let verified = verify(&path);
            assert!(matches!(verified, Err(AuditError::Broken(_))), "{verified:?}");
            assert!(AuditLog::open(&path, 1000, 1).is_err(), "a broken log is not appended to");
        }
    }

    #[test]
    fn an_unfinished_last_line_is_an_append_in_progress_to_verify_only() {
        let (_temp, path) = log_of(3);
        let last = verify(&path).expect("intact").last_hash.expect("a record");
        let (line, _) = chained_line(&event(3), &last).expect("line");
        let (half, rest) = line.split_at(line.len() / 2);
        OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(half)).expect("append");
        let report = verify(&path).expect("an append in progress");
        assert_eq!((report.records, report.unfinished), (3, half.len()));
        assert!(report.to_string().contains(&format!("; {} bytes after the last end of line left out", half.len())));
        // Under the lock no append is in progress: the line was cut short, and is refused.
        let refused = AuditLog::open(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP).err().expect("refused");
        assert!(refused.to_string().contains("audit.jsonl:4: not an audit record: cut short"), "{refused}");
        // Finished, it counts.
        OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(rest)).expect("append");
        let report = verify(&path).expect("intact");
        assert_eq!((report.records, report.unfinished), (4, 0));
        assert!(!report.to_string().contains("left out"), "{report}");
        // A complete line that is no record is a break, last or not.
        OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(b"garbage\n")).expect("append");
        assert!(matches!(broken_at(&path), (_, 5, ChainProblem::Unparseable(_))));
    }

    #[test]
    fn an_unfinished_line_in_a_rotated_file_is_a_break() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 10).expect("open");
        for n in 0..8 {
            log.record(event(n));
        }
        let newest_rotated = temp.path().join("audit.jsonl.1");
        let mut bytes = std::fs::read(&newest_rotated).expect("read");
        bytes.pop();
        std::fs::write(&newest_rotated, &bytes).expect("write");
        let (file, _, problem) = broken_at(&path);
        assert_eq!((file, problem), (newest_rotated, ChainProblem::Unparseable("cut short (no end of line)".into())));
    }

    #[test]
    fn verify_does_not_wait_for_the_writers_lock() {
        let (_temp, path) = log_of(3);
        let writer = OpenOptions::new().write(true).open(lock_path(&path)).expect("lock file");
        writer.lock().expect("lock");
        let (sender, receiver) = std::sync::mpsc::channel();
        let verified = path.clone();
        std::thread::spawn(move || sender.send(verify(&verified).map(|report| report.records).ok()));
        let records = receiver.recv_timeout(std::time::Duration::from_secs(30)).expect("verify waited for the lock");
        assert_eq!(records, Some(3));
        writer.unlock().expect("unlock");
    }

    #[test]
    fn open_reads_under_the_lock_only_what_was_appended_since() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 10).expect("open");
        for n in 0..5 {
            log.record(event(n));
        }
        // Appended between the walk without the lock and the lock: read from where it stopped.
        let numbered = numbered_files(&path).expect("list");
        let early = walk(&path, &numbered, Tail::Live).expect("intact");
        log.record(event(5));
        let (walked, current) = (early.report.records, early.current.expect("a current file"));
        let report = early.finish(&path, &numbered).expect("intact");
        assert_eq!((walked, report.records), (5, 6));
        assert_eq!(report, verify(&path).expect("intact"));
        assert_eq!(current.id, FileStamp::of_path(&path).expect("current").id, "resumed, not walked again");
        assert!(ends_with_line(&path, current.offset, current.last).expect("read"));

        // Rotated meanwhile: walked again.
        let numbered = numbered_files(&path).expect("list");
        let early = walk(&path, &numbered, Tail::Live).expect("intact");
        for n in 6..12 {
            log.record(event(n));
        }
        assert_ne!(numbered_files(&path).expect("list"), numbered, "rotated");
        let report = early.finish(&path, &numbered).expect("intact");
        assert_eq!((report.records, &report), (12, &verify(&path).expect("intact")));
    }

    #[test]
    fn reading_while_writers_append_and_rotate_finds_no_break() {
        // keep 0: the one file removed and made again; 6: old files removed, their inode
        // numbers reused; 50: rotations renaming many files.
        for keep in [0, 6, 50] {
            let temp = tempfile::tempdir().expect("tempdir");
            let path = temp.path().join("audit.jsonl");
            let writers: Vec<AuditLog> = (0..2).map(|_| AuditLog::open(&path, 1500, keep).expect("open")).collect();
            let done = std::sync::atomic::AtomicBool::new(false);
            let (mut verified, mut opened) = (0, 0);
            std::thread::scope(|scope| {
                for (w, log) in writers.iter().enumerate() {
                    let done = &done;
                    scope.spawn(move || {
                        for n in 0..1000 {
                            log.append(&event(w * 1000 + n)).expect("append");
                        }
                        done.store(true, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match verify(&path) {
                        Ok(_) => verified += 1,
                        // Rotated under every read: no verdict, but no false one.
                        Err(AuditError::Io { source, .. }) if source.to_string().contains("rotated during each") => {}
                        Err(error) => panic!("keep {keep}: verify: {error}"),
                    }
                    let log = AuditLog::open(&path, 1500, keep)
                        .unwrap_or_else(|error| panic!("keep {keep}: open while others write: {error}"));
                    log.append(&event(9999)).expect("append");
                    opened += 1;
                }
            });
            let report = verify(&path).expect("intact");
            assert_eq!(report.unfinished, 0);
            assert!(verified > 0 && opened > 0, "keep {keep}: {verified} {opened}");
        }
    }

    /// A log of 20 records over `audit.jsonl` and `.1` ... `.N`, N at least 4; returns N.
    fn rotated_log() -> (tempfile::TempDir, PathBuf, usize) {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 10).expect("open");
        for n in 0..20 {
            log.record(event(n));
        }
        let oldest = numbered_files(&path).expect("list").len();
        assert!(oldest >= 4 && rotated(&path, oldest).exists(), "{oldest}");
        (temp, path, oldest)
    }

    #[test]
    fn a_removed_rotated_file_is_named() {
        for removed in [1, 2] {
            let (_temp, path, oldest) = rotated_log();
            std::fs::remove_file(rotated(&path, removed)).expect("remove");
            let missing = rotated(&path, removed);
            assert_eq!(broken_at(&path), (missing.clone(), 0, ChainProblem::Missing));
            let message = verify(&path).expect_err("broken").to_string();
            let named = format!("audit log broken at {}: the file is missing", missing.display());
            assert!(message.starts_with(&named) && message.contains("a rotated file was removed"), "{message}");
            assert!(AuditLog::open(&path, 600, 10).is_err(), "a broken log is not appended to");

            // Set aside, every file goes, those before the gap too.
            let (_log, restart) = AuditLog::open_or_restart(&path, 600, 10).expect("restarted");
            let restart = restart.expect("a restart");
            assert_eq!((restart.broken.file, restart.moved.len()), (missing, oldest));
            assert!(numbered_files(&path).expect("list").is_empty());
            assert_eq!(verify(&path).expect("a new chain").records, 1);
        }
    }

    #[test]
    fn a_gap_moves_up_with_rotation_and_stays_named() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 10).expect("open");
        for n in 0..20 {
            log.record(event(n));
        }
        // Removed under a running writer, which rotates on.
        std::fs::remove_file(rotated(&path, 1)).expect("remove");
        for n in 20..26 {
            log.record(event(n));
        }
        let (file, line, problem) = broken_at(&path);
        assert!(file != rotated(&path, 1) && !file.exists(), "{}", file.display());
        assert_eq!((line, problem), (0, ChainProblem::Missing));
    }

    #[test]
    fn the_oldest_rotated_file_removed_is_like_rotation() {
        let (_temp, path, oldest) = rotated_log();
        let before = verify(&path).expect("intact");
        let gone = lines(&rotated(&path, oldest)).len();
        std::fs::remove_file(rotated(&path, oldest)).expect("remove");
        let report = verify(&path).expect("intact");
        assert_eq!((report.records, report.files.len()), (before.records - gone, before.files.len() - 1));
        assert!(matches!(report.anchor, Some(ChainAnchor::RotatedAway(_))), "{report:?}");
        // And the log goes on.
        let log = AuditLog::open(&path, 600, 10).expect("open");
        log.record(event(20));
        assert_eq!(verify(&path).expect("intact").records, report.records + 1);
    }

    #[test]
    fn only_numbered_names_are_rotated_files() {
        let name = OsStr::new("audit.jsonl");
        for (entry, n) in [("audit.jsonl.1", Some(1)), ("audit.jsonl.12", Some(12)), ("audit.jsonl.9", Some(9))] {
            assert_eq!(rotation_number(name, OsStr::new(entry)), n, "{entry}");
        }
        for entry in [
            "audit.jsonl",
            "audit.jsonl.",
            "audit.jsonl.0",
            "audit.jsonl.01",
            "audit.jsonl.lock",
            "audit.jsonl.1.broken-1700000000000",
            "audit.jsonl.broken-1700000000000",
            "audit.jsonl.+1",
            "audit.jsonl.99999999999999999999999",
            "audit.jsonlx.1",
            "xaudit.jsonl.1",
        ] {
            assert_eq!(rotation_number(name, OsStr::new(entry)), None, "{entry}");
        }
    }

    #[test]
    fn lines_from_before_chaining_are_legacy() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let legacy: Vec<String> = (0..3).map(|n| serde_json::to_string(&event(n)).expect("json")).collect();
        write_lines(&path, &legacy);
        let log = AuditLog::open(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP).expect("open");
        log.record(event(3));
        log.record(event(4));
        let report = verify(&path).expect("intact");
        assert_eq!((report.records, report.legacy, report.anchor), (2, 3, Some(ChainAnchor::Start)));
        assert!(report.to_string().contains("after 3 unchained lines from before chaining"), "{report}");

        // An unchained line after the chain began is not legacy.
        let mut all = lines(&path);
        all.push(legacy[0].clone());
        write_lines(&path, &all);
        assert_eq!(broken_at(&path), (path.clone(), 6, ChainProblem::Unchained));
        // Nor may the first chained record after legacy lines link to a removed one.
        let mut all = lines(&path);
        all.truncate(5);
        all.remove(3);
        write_lines(&path, &all);
        assert_eq!(broken_at(&path), (path.clone(), 4, ChainProblem::Unlinked));
    }

    #[test]
    fn reopening_continues_the_chain() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        for round in 0..3 {
            let log = AuditLog::open(&path, 700, 5).expect("open");
            for n in 0..4 {
                log.record(event(round * 4 + n));
            }
        }
        assert_eq!(verify(&path).expect("intact").records, 12);
        // The current file gone (rotated, not yet written): the newest rotated one carries on.
        std::fs::remove_file(&path).expect("remove");
        let report = verify(&path).expect("intact");
        let log = AuditLog::open(&path, 700, 5).expect("open");
        log.record(event(12));
        let after = verify(&path).expect("intact");
        assert_eq!((after.records, after.files.len()), (report.records + 1, report.files.len() + 1));
    }

    #[test]
    fn writers_sharing_a_file_never_fork_the_chain() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let writers: Vec<AuditLog> = (0..3).map(|_| AuditLog::open(&path, 2000, 50).expect("open")).collect();
        std::thread::scope(|scope| {
            for (w, log) in writers.iter().enumerate() {
                scope.spawn(move || {
                    for n in 0..40 {
                        log.record(event(w * 100 + n));
                    }
                });
            }
        });
        let report = verify(&path).expect("one chain");
        assert_eq!(report.records, 120);
        assert!(report.files.len() > 1, "{report:?}");
    }

    #[test]
    fn a_broken_chain_is_refused_or_set_aside_and_restarted() {
        let (temp, path) = log_of(5);
        let mut all = lines(&path);
        all.remove(1);
        write_lines(&path, &all);
        let tampered = std::fs::read(&path).expect("read");
        let refused = AuditLog::open(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP).err().expect("refused");
        assert!(refused.to_string().contains("audit.jsonl:2"), "{refused}");

        let (log, restart) = AuditLog::open_or_restart(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP).expect("restarted");
        let restart = restart.expect("a restart");
        assert_eq!((restart.broken.line, restart.moved.len()), (2, 1));
        assert_eq!(std::fs::read(&restart.moved[0]).expect("kept aside"), tampered);
        let name = restart.moved[0].file_name().expect("name").to_string_lossy().to_string();
        assert!(name.starts_with("audit.jsonl.broken-"), "{name}");
        log.record(event(9));
        let report = verify(&path).expect("a new chain");
        assert_eq!((report.records, report.anchor), (2, Some(ChainAnchor::Start)));
        let first: AuditEvent = serde_json::from_str(&lines(&path)[0]).expect("event");
        assert_eq!(first.kind, AuditKind::ChainRestarted);
        assert!(first.reason.contains("audit.jsonl:2") && first.reason.contains(&name), "{}", first.reason);
        assert!(temp.path().join("audit.jsonl.lock").exists());

        // An intact chain is left as it is.
        let (_log, restart) = AuditLog::open_or_restart(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP).expect("open");
        assert!(restart.is_none());
        assert_eq!(verify(&path).expect("intact").records, 2);
    }
}
