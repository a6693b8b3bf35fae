//! Data at rest: a server with a data key seals its prediction log (no plaintext input or
//! caller on disk), a key rotated while it runs takes over without a restart, replay of old and
//! new segments is bit-exact with the key file and a clear error naming the key without it or
//! with the wrong one, an altered segment is reported while the rest replays; per-model
//! redaction in the log and in replay; erasure of one caller (admin API) and one request (CLI)
//! removes exactly those records, forgets them for feedback and lands in the audit chain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeinfer_monitor::keys::Keyring;
use edgeinfer_monitor::predictions::read_log;
use edgeinfer_server::security::{Scope, TokenLimits, TokensFile};
use edgeinfer_server::{AuthMode, ServerConfig};
use serde_json::{Value, json};

use crate::common::*;
use crate::http::*;
use crate::server::TestServer;

/// A repository holding digits, a tokens file (alice and bob may infer, ops administers) and
/// a data key made by the CLI.
struct Protected {
    repo: tempfile::TempDir,
    tokens_path: PathBuf,
    tokens: std::collections::BTreeMap<&'static str, String>,
    key: PathBuf,
}

fn protected() -> Protected {
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    let tokens_path = repo.path().join("secrets/tokens.toml");
    let mut file = TokensFile::default();
    let mut tokens = std::collections::BTreeMap::new();
    for (name, scope) in [("alice", Scope::Infer(None)), ("bob", Scope::Infer(None)), ("ops", Scope::Admin)] {
        tokens.insert(name, file.create(name, vec![scope], None, TokenLimits::default()).expect("create"));
    }
    file.save(&tokens_path).expect("save");
    let key = repo.path().join("secrets/data.key");
    let created = edgeinfer(&["key", "create", "--out", key.to_str().expect("utf8")]);
    assert!(created.status.success(), "{}", stderr(&created));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
    Protected { repo, tokens_path, tokens, key }
}

impl Protected {
    fn serve(&self) -> TestServer {
        let config = ServerConfig {
            auth: Some(AuthMode::Tokens),
            tokens_file: Some(self.tokens_path.clone()),
            data_key_file: Some(self.key.clone()),
            ..ServerConfig::default()
        };
        TestServer::start(self.repo.path(), config)
    }

    fn log_dir(&self) -> PathBuf {
        self.repo.path().join(".edgeinfer/predictions")
    }

    fn repo_arg(&self) -> &str {
        self.repo.path().to_str().expect("utf8")
    }

    fn key_arg(&self) -> &str {
        self.key.to_str().expect("utf8")
    }

    fn infer(&self, addr: SocketAddr, caller: &str, id: &str, row: &[f32]) -> Reply {
        let body = json!({
            "id": id,
            "inputs": [{"name": holdout().input_name, "shape": [1, 64], "datatype": "FP32", "data": row}],
        });
        let auth = ("Authorization", format!("Bearer {}", self.tokens[caller]));
        let reply = request(addr, "POST", "/v2/models/digits/infer", &[auth], body.to_string().as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply
    }

    fn admin(&self, addr: SocketAddr, path: &str, body: &Value) -> Reply {
        let auth = ("Authorization", format!("Bearer {}", self.tokens["ops"]));
        request(addr, "POST", path, &[auth], body.to_string().as_bytes())
    }
}

/// A digits row no other test sends: its bytes and its JSON text are recognisable on disk.
fn marked_row(seed: u32) -> Vec<f32> {
    (0..64).map(|i| 0.123_456 + (seed * 64 + i) as f32 * 0.000_976_562_5).collect()
}

fn log_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).expect("log dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_sealed_log_replays_bit_exact_across_a_key_rotation_and_names_missing_keys() {
    let protected = protected();
    let first_key = Keyring::load(&protected.key).expect("key").current_id().to_string();
    let server = protected.serve();
    for n in 0..3 {
        protected.infer(server.addr, "alice", &format!("before-{n}"), &marked_row(n));
    }
    wait_until("three sealed records", Duration::from_secs(10), || {
        contains(&log_bytes(&protected.log_dir()), first_key.as_bytes())
    });
    let rotated = edgeinfer(&["key", "rotate", "--file", protected.key_arg()]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let second_key = Keyring::load(&protected.key).expect("key").current_id().to_string();
    assert_ne!(first_key, second_key);
    let listed = stdout(&edgeinfer(&["key", "list", "--file", protected.key_arg()]));
    assert!(listed.contains(&first_key) && listed.contains(&format!("{second_key}  (seals new data)")), "{listed}");
    // The running server picks the new key up (it looks at the file once a second).
    let mut sent = 0;
    wait_until("segments sealed with the rotated key", Duration::from_secs(20), || {
        protected.infer(server.addr, "bob", &format!("after-{sent}"), &marked_row(10 + sent));
        sent += 1;
        std::thread::sleep(Duration::from_millis(50)); // the writer collects every 20 ms
        contains(&log_bytes(&protected.log_dir()), second_key.as_bytes())
    });
    drop(server); // flushes the log

    let bytes = log_bytes(&protected.log_dir());
    let raw: Vec<u8> = marked_row(0).iter().flat_map(|f| f.to_le_bytes()).collect();
    assert!(!contains(&bytes, &raw[..16]), "no input bytes on disk");
    assert!(!contains(&bytes, b"0.123456"), "no input text on disk");
    assert!(!contains(&bytes, b"alice") && !contains(&bytes, b"before-0"), "no caller or request id on disk");

    let total = 3 + sent as usize;
    let replayed = edgeinfer(&["replay", "--repo", protected.repo_arg(), "--data-key", protected.key_arg()]);
    let text = stdout(&replayed);
    assert!(replayed.status.success(), "{text}{}", stderr(&replayed));
    assert!(text.contains(&format!("{total} replayed, {total} bit-identical")), "{text}");

    let keyless = edgeinfer(&["replay", "--repo", protected.repo_arg()]);
    assert!(!keyless.status.success());
    let why = stderr(&keyless);
    assert!(why.contains(&first_key) && why.contains(&second_key) && why.contains("--data-key"), "{why}");
    assert!(stdout(&keyless).contains("0 replayed"), "nothing read as garbage: {}", stdout(&keyless));

    let other = protected.repo.path().join("secrets/other.key");
    assert!(edgeinfer(&["key", "create", "--out", other.to_str().expect("utf8")]).status.success());
    let wrong = edgeinfer(&["replay", "--repo", protected.repo_arg(), "--data-key", other.to_str().expect("utf8")]);
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains(&format!("sealed with key '{first_key}'")), "{}", stderr(&wrong));

    // One altered byte fails its segment's authentication; every other segment replays. The
    // file's last byte is inside its last segment's tag (a byte in the middle could land in a
    // segment header's key id or length, which are reported as such).
    let first_file = std::fs::read_dir(protected.log_dir())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eipl"))
        .min()
        .expect("a log file");
    let mut altered = std::fs::read(&first_file).expect("read");
    let last = altered.len() - 1;
    altered[last] ^= 0x01;
    std::fs::write(&first_file, altered).expect("write");
    let tampered = edgeinfer(&["replay", "--repo", protected.repo_arg(), "--data-key", protected.key_arg()]);
    assert!(!tampered.status.success());
    assert!(stderr(&tampered).contains("fails authentication"), "{}", stderr(&tampered));
    let replayed: usize = stdout(&tampered).split(' ').next().and_then(|n| n.parse().ok()).expect("count");
    assert!(replayed > 0 && replayed < total, "the rest replays: {replayed} of {total}");
}

#[test]
fn redaction_rules_and_erasure_of_one_caller_or_one_request() {
    let protected = protected();
    let input = holdout().input_name.clone();
    let manifest = fixtures().digits.manifest();
    let dropped = manifest.outputs.iter().find(|o| o.name != "label").expect("a second output").name.clone();
    std::fs::write(
        protected.repo.path().join("digits/config.toml"),
        format!("[redaction]\ninputs = {{ {input} = \"hash\" }}\noutputs = {{ {dropped} = \"drop\" }}\n"),
    )
    .expect("config");
    let server = protected.serve();
    for n in 0..3 {
        protected.infer(server.addr, "alice", &format!("alice-{n}"), &marked_row(20 + n));
        protected.infer(server.addr, "bob", &format!("bob-{n}"), &marked_row(30 + n));
    }
    let keys = Keyring::load(&protected.key).expect("keys");
    wait_until("six records", Duration::from_secs(10), || {
        read_log(&protected.log_dir(), Some(&keys)).is_ok_and(|read| read.records.len() == 6)
    });

    // Redaction: the input hashed element by element (equal values hash equal), the named
    // output dropped, the label kept.
    let read = read_log(&protected.log_dir(), Some(&keys)).expect("read");
    let record = &read.records[0];
    assert_eq!(record.caller.as_deref(), Some("alice"));
    let hashed = edgeinfer_oip::bytes_items(&record.inputs[0].data).expect("hashes");
    assert_eq!(hashed.len(), 64);
    assert!(hashed.iter().all(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit())));
    let dropped_output = record.outputs.iter().find(|o| o.name == dropped).expect("dropped output");
    assert!(dropped_output.data.is_empty());
    assert!(!record.outputs.iter().find(|o| o.name == "label").expect("label").data.is_empty());
    let replayed = edgeinfer(&["replay", "--repo", protected.repo_arg(), "--data-key", protected.key_arg()]);
    assert!(stdout(&replayed).contains("6 not replayable (an input redacted)"), "{}", stdout(&replayed));

    // Erasure of one caller through the admin API: exactly their records, forgotten for
    // feedback, audited.
    let erased = protected.admin(
        server.addr,
        "/v2/admin/predictions/erase",
        &json!({"caller": "alice", "reason": "GDPR art. 17"}),
    );
    assert_eq!(erased.status, 200, "{}", erased.text());
    let report = erased.json();
    assert_eq!(report["erased"], 3, "{report}");
    assert_eq!(report["complete"], true);
    let ids: Vec<String> =
        read_log(&protected.log_dir(), Some(&keys)).expect("read").records.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec!["bob-0", "bob-1", "bob-2"]);
    let feedback = protected.admin(server.addr, "/v2/models/digits/feedback", &json!({"id": "alice-0", "label": [3]}));
    assert_eq!(feedback.json()["unknown_ids"], json!(["alice-0"]), "{}", feedback.text());
    for (body, expected) in [
        (json!({}), "exactly one of"),
        (json!({"caller": "a", "request_id": "b"}), "exactly one of"),
        (json!({"caller": 7}), "non-empty string"),
        (json!({"who": "alice"}), "unknown field `who`"),
    ] {
        let refused = protected.admin(server.addr, "/v2/admin/predictions/erase", &body);
        assert_eq!(refused.status, 400, "{body}: {}", refused.text());
        assert!(refused.text().contains(expected), "{body}: {}", refused.text());
    }
    drop(server);

    // Erasure of one request offline with the CLI, also audited; the chain stays intact.
    let cli = edgeinfer(&[
        "predictions",
        "erase",
        "--request-id",
        "bob-1",
        "--repo",
        protected.repo_arg(),
        "--data-key",
        protected.key_arg(),
    ]);
    assert!(cli.status.success(), "{}", stderr(&cli));
    assert!(stdout(&cli).contains("erased 1 records of request id 'bob-1'"), "{}", stdout(&cli));
    let read = read_log(&protected.log_dir(), Some(&keys)).expect("read");
    let ids: Vec<&str> = read.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["bob-0", "bob-2"]);
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let audit = std::fs::read_to_string(protected.repo.path().join(".edgeinfer/audit.jsonl")).expect("audit");
    assert!(audit.contains("erased 3 records of caller 'alice': GDPR art. 17"), "{audit}");
    assert!(audit.contains("1 records of request id 'bob-1'"), "{audit}");
    let verified = edgeinfer(&["audit", "verify", "--repo", protected.repo_arg()]);
    assert!(verified.status.success(), "{}{}", stdout(&verified), stderr(&verified));

    // A restarted server reads its sealed log back: the records left join feedback again,
    // the erased ones do not.
    let server = protected.serve();
    let label = |id: &str| json!({"id": id, "label": [3]});
    wait_until("the sealed log read back", Duration::from_secs(20), || {
        let reply = protected.admin(server.addr, "/v2/models/digits/feedback", &json!({"feedback": [label("bob-2")]}));
        reply.json()["joined"] == 1
    });
    let reply = protected.admin(server.addr, "/v2/models/digits/feedback", &json!({"feedback": [label("bob-1")]}));
    assert_eq!(reply.json()["unknown_ids"], json!(["bob-1"]), "{}", reply.text());
}
