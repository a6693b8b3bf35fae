//! The audit log is tamper-evident end to end: `edgeinfer serve` writes a hash chain,
//! `edgeinfer audit verify` names an edited line, `serve` refuses to append to the broken
//! chain, and `serve --accept-broken-audit` keeps the broken file aside and starts a new chain.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeinfer_server::security::{AuditEvent, AuditKind};
use serde_json::json;

use crate::common::*;
use crate::http::request;

/// `edgeinfer serve` on a free loopback port, once it serves or has exited.
struct Serve {
    child: Child,
    stderr: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

impl Serve {
    fn start(repo: &Path, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
            .arg(repo)
            .args(extra)
            .env("EDGEINFER_CACHE_DIR", cache_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgeinfer serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                sink.lock().expect("stderr").push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let mut exit = None;
        wait_until("edgeinfer serve to listen or exit", Duration::from_secs(120), || {
            exit = child.try_wait().expect("status");
            exit.is_some() || Self::listening(&stderr.lock().expect("stderr")).is_some()
        });
        if exit.is_some() {
            reader.join().expect("stderr reader");
        }
        Serve { child, stderr, exit }
    }

    fn listening(stderr: &str) -> Option<SocketAddr> {
        let line = stderr.lines().find(|l| l.starts_with("edgeinfer serving") && l.contains(" on http://"))?;
        line.rsplit("http://").next()?.trim().parse().ok()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    fn addr(&self) -> SocketAddr {
        Self::listening(&self.stderr()).unwrap_or_else(|| panic!("not serving: {}", self.stderr()))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn change_traffic(addr: SocketAddr, n: usize) {
    let split = json!({"split": {"1": 100}, "reason": format!("audited change {n}")}).to_string();
    let reply = request(addr, "PUT", "/v2/admin/models/digits/traffic", &[], split.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn an_edited_audit_record_is_named_refused_and_set_aside() {
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    let state = repo.path().join(".edgeinfer");
    let audit = state.join("audit.jsonl");
    let verify = || edgeinfer(&["audit", "verify", "--repo", path(repo.path())]);

    let server = Serve::start(repo.path(), &[]);
    for n in 0..3 {
        change_traffic(server.addr(), n);
    }
    let count = || std::fs::read_to_string(&audit).map_or(0, |text| text.lines().count());
    wait_until("three audit records", Duration::from_secs(10), || count() >= 3);
    drop(server);

    let intact = verify();
    assert!(intact.status.success(), "{}", stderr(&intact));
    assert!(stdout(&intact).contains("audit chain intact: 3 records in 1 file"), "{}", stdout(&intact));
    assert!(stdout(&intact).contains("last record hash: "), "{}", stdout(&intact));

    // One record edited: its line is named, by `audit verify` and by `serve`.
    let lines: Vec<String> = std::fs::read_to_string(&audit).expect("audit").lines().map(String::from).collect();
    let mut edited = lines.clone();
    edited[1] = edited[1].replacen("\"outcome\":\"200\"", "\"outcome\":\"204\"", 1);
    assert_ne!(edited[1], lines[1], "the record has an outcome to edit: {}", lines[1]);
    let tampered: String = edited.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&audit, &tampered).expect("tamper");
    let at = format!("{}:2", audit.display());
    let broken = edgeinfer(&["audit", "verify", "--file", path(&audit)]);
    assert!(!broken.status.success(), "{}", stdout(&broken));
    assert!(stderr(&broken).contains(&format!("audit log broken at {at}: edited")), "{}", stderr(&broken));

    let refused = Serve::start(repo.path(), &[]);
    assert!(refused.exit.is_some_and(|status| !status.success()), "serve started: {}", refused.stderr());
    let message = refused.stderr();
    assert!(message.contains(&at) && message.contains("edited"), "{message}");
    assert!(message.contains("edgeinfer audit verify") && message.contains("--accept-broken-audit"), "{message}");
    assert_eq!(std::fs::read_to_string(&audit).expect("audit"), tampered, "nothing appended");

    // Accepted: the broken file is kept aside as it was, and a new chain starts.
    let server = Serve::start(repo.path(), &["--accept-broken-audit"]);
    assert!(server.exit.is_none(), "{}", server.stderr());
    change_traffic(server.addr(), 3);
    wait_until("the restart and one change", Duration::from_secs(10), || count() >= 2);
    drop(server);
    let aside: Vec<PathBuf> = std::fs::read_dir(&state)
        .expect("state dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("audit.jsonl.broken-")))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).expect("kept aside"), tampered);
    let first: AuditEvent =
        serde_json::from_str(std::fs::read_to_string(&audit).expect("audit").lines().next().expect("a record"))
            .expect("an event");
    assert_eq!(first.kind, AuditKind::ChainRestarted);
    let aside_name = aside[0].file_name().expect("name").to_string_lossy().to_string();
    assert!(first.reason.contains(&at) && first.reason.contains(&aside_name), "{}", first.reason);
    let intact = verify();
    assert!(intact.status.success(), "{}", stderr(&intact));
    assert!(stdout(&intact).contains("audit chain intact: 2 records in 1 file"), "{}", stdout(&intact));

    let unsaid = edgeinfer(&["audit", "verify"]);
    assert!(!unsaid.status.success() && stderr(&unsaid).contains("--file PATH or --repo DIR"), "{}", stderr(&unsaid));
}
