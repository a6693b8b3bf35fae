//! The audit log: one JSON object per line, flushed on every write, for what matters after an
//! incident (failed authentication, forbidden and throttled requests, lockouts, admin changes,
//! refused components, guest traps). Rotated by size, keeping a fixed number of old files.
//!
//! Every line is chained to the one before it, so an edit, a removal or a reordering shows.
//! A line is the event's JSON with two fields appended: `"prev"`, the hash of the record before
//! it (64 zeros for the very first), then `"hash"`, the sha256 of the line's bytes up to the
//! `,"hash":"` that precedes it. Rotation carries the chain: the first line of a file links to
//! the last line of the file rotated before it. [`verify`] walks the files oldest first and
//! names the first broken link. A removed tail cannot be seen from inside the files: only an
//! outside copy of the last hash (a remote log) can tell.
//!
//! Writers in one process or several (the server, CLI commands) take an exclusive lock on
//! `<file>.lock` for each record and re-read the last hash when another writer appended since,
//! so the chain never forks.

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
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: ChainProblem,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.problem)
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

/// Checks the chain of the audit log at `path` and its rotated files (`path.N` ... `path.1`,
/// then `path`), oldest first. A missing log is an intact, empty chain.
pub fn verify(path: &Path) -> Result<ChainReport, AuditError> {
    // Read under a shared lock, when there is one, so a writer's half-written line is not
    // taken for a break.
    let lock = File::open(lock_path(path)).ok();
    let _locked = lock.as_ref().and_then(|file| file.lock_shared().ok().map(|()| Unlock(file)));
    walk(path)
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
        let chain = Mutex::new(Chain { last: GENESIS, seen: None });
        let log = AuditLog { path: path.to_path_buf(), max_bytes, keep, lock: open_lock(path)?, chain };
        // Checked, and restarted, under the lock: no other writer slips a record in between.
        let restart = {
            let _locked = Unlock::exclusive(&log.lock, path)?;
            let mut chain = log.chain.lock().unwrap_or_else(|p| p.into_inner());
            match walk(path) {
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
        if current.as_ref().map(FileStamp::of) != chain.seen
            && let Some(last) = last_on_disk(&self.path)?
        {
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
        Ok(())
    }

    /// `audit.jsonl` -> `.1` -> `.2` ...; the oldest beyond `keep` is removed, and so is any
    /// left beyond it by a larger `keep` before, so the numbered files stay one chain.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: usize| rotated(&self.path, n);
        let mut stale = self.keep.max(1);
        while numbered(stale).exists() {
            std::fs::remove_file(numbered(stale))?;
            stale += 1;
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

/// Walks the files oldest first; the first broken link is the error.
fn walk(path: &Path) -> Result<ChainReport, AuditError> {
    let mut report = ChainReport { records: 0, legacy: 0, files: Vec::new(), anchor: None, last_hash: None };
    let mut line = Vec::new();
    for file in chain_files(path) {
        let opened = match File::open(&file) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(AuditError::io(format!("reading {}", file.display()))(e)),
        };
        let mut reader = BufReader::with_capacity(64 << 10, opened);
        let mut number = 0;
        loop {
            line.clear();
            let read = reader
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(AuditError::io(format!("reading {}", file.display())))?;
            if read == 0 {
                break;
            }
            number += 1;
            let broken = |problem| AuditError::Broken(ChainBreak { file: file.clone(), line: number, problem });
            if line.pop() != Some(b'\n') {
                let why = if line.len() >= MAX_LINE { "longer than 1 MiB" } else { "cut short (no end of line)" };
                return Err(broken(ChainProblem::Unparseable(why.into())));
            }
            match parse_line(&line).map_err(broken)? {
                Link::Unchained if report.last_hash.is_some() => return Err(broken(ChainProblem::Unchained)),
                Link::Unchained => report.legacy += 1,
                Link::Chained { prev, hash } => {
                    match report.last_hash {
                        Some(last) if prev != last => return Err(broken(ChainProblem::Unlinked)),
                        Some(_) => {}
                        // After lines from before chaining, the chain starts from zeros.
                        None if report.legacy > 0 && prev != GENESIS => {
                            return Err(broken(ChainProblem::Unlinked));
                        }
                        None if prev == GENESIS => report.anchor = Some(ChainAnchor::Start),
                        None => report.anchor = Some(ChainAnchor::RotatedAway(prev)),
                    }
                    report.last_hash = Some(hash);
                    report.records += 1;
                }
            }
        }
        report.files.push(file);
    }
    Ok(report)
}

/// Renames the log's files `<name>.broken-<unix ms>`; returns where they went.
fn set_aside(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mut moved = Vec::new();
    for file in chain_files(path) {
        let aside = with_suffix(&file, &format!(".broken-{millis}"));
        let context = format!("moving {} aside to {}", file.display(), aside.display());
        std::fs::rename(&file, &aside).map_err(AuditError::io(context))?;
        moved.push(aside);
    }
    Ok(moved)
}

/// The existing files of the log at `path`, oldest first: `path.N` ... `path.1`, `path`.
fn chain_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..).map(|n| rotated(path, n)).take_while(|p| p.exists()).collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
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
        for _ in 0..300 {
            let mut bytes = good.clone();
            let at = rng.usize(..bytes.len());
            bytes[at] ^= 1 << rng.u8(..8);
            std::fs::write(&path, &bytes).expect("write");
            assert!(matches!(verify(&path), Err(AuditError::Broken(_))), "byte {at} changed unnoticed");
        }
        for garbage in [
            b"\xff\xfe\x00garbage\n".to_vec(),
            b"{\"a\":1".to_vec(),
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
