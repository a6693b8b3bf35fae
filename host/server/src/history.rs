//! The durable change log of a repository: one JSON object per line, appended and fsync'd
//! before a change takes effect, replayed at start-up to restore each model's deployment.

use edgeinfer_runtime::clock::now_rfc3339;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::deployment::Deployment;
use crate::{Error, Result};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A version was verified, compiled, smoke-tested and loaded.
    Load,
    /// A version (or, without a version, the whole model) stopped being served.
    Unload,
    /// A version was refused (integrity, capabilities, smoke test...); it takes no traffic.
    Refused,
    /// The traffic split or shadow changed.
    Split,
    /// The split went back to the one before.
    Rollback,
    /// A rollout moved (started, stepped, promoted, rolled back, paused, resumed,
    /// aborted); `rollout` holds its state and the checks behind the decision, `new` the
    /// deployment when it changed.
    Rollout,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// RFC 3339 time of the change.
    pub time: String,
    /// The model concerned.
    pub model: String,
    /// What changed.
    pub kind: ChangeKind,
    /// The version concerned, for load, unload and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The deployment before (`{"split": ..., "shadow": ...}`), when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The deployment after, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
    /// Why: the operator's reason, or the error that refused a version.
    pub reason: String,
    /// For rollout events: the rollout after the change, its action and checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Value>,
}

/// A change about to be recorded (the log adds `seq` and `time`).
#[derive(Debug, Clone)]
pub struct Change {
    /// The model concerned.
    pub model: String,
    /// What changed.
    pub kind: ChangeKind,
    /// The version concerned.
    pub version: Option<u64>,
    /// Deployment before, when the change touched it.
    pub old: Option<Deployment>,
    /// Deployment after, when the change touched it.
    pub new: Option<Deployment>,
    /// Why.
    pub reason: String,
    /// For rollout changes: the rollout after the change, its action and checks.
    pub rollout: Option<Value>,
}

/// An append-only JSON-lines file. Each append opens the file anew, so a log replaced or
/// moved meanwhile is written where its path now points, and a failed write is cut back out.
pub struct HistoryLog {
    path: PathBuf,
    last_seq: Mutex<u64>,
}

impl HistoryLog {
    /// Opens (creating) the log at `path`.
    pub fn open(path: &Path) -> Result<HistoryLog> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening the history log {}", path.display()), e))?;
        drop_torn_tail(path, &file)?;
        let last_seq = read_events(path)?.last().map_or(0, |e| e.seq);
        Ok(HistoryLog { path: path.to_path_buf(), last_seq: Mutex::new(last_seq) })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a change and waits until it is on disk; on failure (disk full, file not
    /// writable) nothing is left of it in the file and the caller must not apply the change.
    pub fn append(&self, change: Change) -> Result<HistoryEvent> {
        let mut last_seq = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
        let event = HistoryEvent {
            seq: *last_seq + 1,
            time: now_rfc3339(),
            model: change.model,
            kind: change.kind,
            version: change.version,
            old: change.old.as_ref().map(Deployment::to_json),
            new: change.new.as_ref().map(Deployment::to_json),
            reason: change.reason,
            rollout: change.rollout,
        };
        let mut line = serde_json::to_vec(&event).map_err(Error::runtime)?;
        line.push(b'\n');
        let context = || format!("appending to the history log {}", self.path.display());
        let mut file = OpenOptions::new().append(true).open(&self.path).map_err(|e| Error::io(context(), e))?;
        let before = file.metadata().map(|m| m.len()).ok();
        let written = file.write_all(&line).and_then(|()| file.sync_data());
        if let Err(error) = written {
            if let Some(len) = before {
                let _ = file.set_len(len);
            }
            return Err(Error::io(context(), error));
        }
        *last_seq = event.seq;
        Ok(event)
    }

    /// Every event, oldest first.
    pub fn events(&self) -> Result<Vec<HistoryEvent>> {
        let _guard = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
        read_events(&self.path)
    }
}

/// Cuts a last line left without its newline by a crash mid-append, so appends start clean.
fn drop_torn_tail(path: &Path, file: &File) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        tracing::warn!(path = %path.display(), "dropping a torn last line");
        file.set_len(keep as u64).map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
    }
    Ok(())
}

/// Reads a log; a torn last line (crash mid-append) is skipped, any other bad line is an error.
fn read_events(path: &Path) -> Result<Vec<HistoryEvent>> {
    let file = File::open(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut events = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(event) => events.push(event),
            Err(_) if index + 1 == lines.len() => tracing::warn!(path = %path.display(), "ignoring a torn last line"),
            Err(error) => {
                return Err(Error::Manifest {
                    path: path.to_path_buf(),
                    message: format!("line {}: {error}", index + 1),
                });
            }
        }
    }
    Ok(events)
}

/// A model's deployment as the log left it: the current one and the stack rollback pops.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentTrail {
    /// The last deployment set, if any.
    pub current: Option<Deployment>,
    /// Earlier deployments, most recent last.
    pub previous: Vec<Deployment>,
    /// The last rollout recorded (its state as of its last event).
    pub rollout: Option<Value>,
}

impl DeploymentTrail {
    /// Replays `model`'s events.
    pub fn replay(events: &[HistoryEvent], model: &str) -> DeploymentTrail {
        let mut trail = DeploymentTrail::default();
        let parse = |value: &Option<Value>| value.as_ref().and_then(|v| Deployment::from_json(v).ok());
        for event in events.iter().filter(|e| e.model == model) {
            match event.kind {
                ChangeKind::Split => {
                    if let Some(old) = parse(&event.old) {
                        trail.previous.push(old);
                    }
                    trail.current = parse(&event.new);
                }
                ChangeKind::Rollout => {
                    if let Some(new) = parse(&event.new) {
                        trail.previous.extend(parse(&event.old));
                        trail.current = Some(new);
                    }
                    trail.rollout.clone_from(&event.rollout);
                }
                ChangeKind::Rollback => {
                    trail.previous.pop();
                    trail.current = parse(&event.new);
                }
                ChangeKind::Unload => match event.version {
                    // An unloaded version can no longer be rolled back to (as in the registry).
                    Some(version) => trail.previous.retain(|d| !d.split.contains_key(&version)),
                    None => trail = DeploymentTrail::default(),
                },
                _ => {}
            }
        }
        trail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(model: &str, old: Deployment, new: Deployment) -> Change {
        Change {
            model: model.into(),
            kind: ChangeKind::Split,
            version: None,
            old: Some(old),
            new: Some(new),
            reason: "t".into(),
            rollout: None,
        }
    }

    #[test]
    fn appends_survive_reopening_and_replay_to_the_last_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".edgeinfer/history.jsonl");
        let (one, two) = (Deployment::single(1), Deployment::single(2));
        {
            let log = HistoryLog::open(&path).unwrap();
            log.append(split("m", one.clone(), two.clone())).unwrap();
            log.append(split("other", one.clone(), two.clone())).unwrap();
        }
        let log = HistoryLog::open(&path).unwrap();
        let third = log.append(split("m", two.clone(), one.clone())).unwrap();
        assert_eq!(third.seq, 3);
        let rollback = Change {
            model: "m".into(),
            kind: ChangeKind::Rollback,
            version: None,
            old: Some(one.clone()),
            new: Some(two.clone()),
            reason: "back".into(),
            rollout: None,
        };
        log.append(rollback).unwrap();
        let events = log.events().unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let trail = DeploymentTrail::replay(&events, "m");
        assert_eq!(trail.current, Some(two));
        assert_eq!(trail.previous, vec![one]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_a_corrupt_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let good = r#"{"seq":1,"time":"t","model":"m","kind":"load","version":1,"reason":""}"#;
        std::fs::write(&path, format!("{good}\n{{\"seq\":2,\"ti")).unwrap();
        let log = HistoryLog::open(&path).unwrap();
        assert_eq!(log.events().unwrap().len(), 1);
        log.append(Change {
            model: "m".into(),
            kind: ChangeKind::Unload,
            version: Some(1),
            old: None,
            new: None,
            reason: String::new(),
            rollout: None,
        })
        .unwrap();
        assert_eq!(log.events().unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        std::fs::write(&path, format!("garbage\n{good}\n")).unwrap();
        assert!(HistoryLog::open(&path).is_err());
    }
}
