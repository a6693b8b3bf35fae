//! Signed model versions: keygen, compile --sign and sign from the CLI, verify with trusted
//! keys, and a server that refuses every kind of tampering (unsigned, wrong key, forged
//! signature, garbage envelope, manifest or component modified after signing) while the
//! good version keeps serving; the reasons show in the index, the history and the audit log.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use edgeinfer_runtime::signature::{
    SignaturePolicy, generate_key_pair, read_public_key, read_signing_key, sign_version,
};
use edgeinfer_runtime::{Limits, ModelRepository};
use edgeinfer_server::security::AuditEvent;
use edgeinfer_server::{ModelRegistry, ServerConfig};
use serde_json::Value;

use crate::common::*;
use crate::http::*;
use crate::server::{TestServer, digits_request};

fn edgeinfer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(args)
        .env("EDGEINFER_CACHE_DIR", cache_dir())
        .output()
        .expect("run")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_cli_signs_and_verifies() {
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = temp.path().join("repo");
    let key = temp.path().join("publisher");
    let out = edgeinfer(&["keygen", "--out", key.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(key.with_extension("key")).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let onnx = fixture("digits.onnx");
    let args = [
        "compile",
        onnx.to_str().expect("utf8"),
        "--name",
        "digits",
        "--version",
        "1",
        "--repo",
        repo.to_str().expect("utf8"),
    ];
    let out = edgeinfer(&[&args[..], &["--sign", key.with_extension("key").to_str().expect("utf8")]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(repo.join("digits/1/signature.json").is_file());
    copy_version(&repo.join("digits/1"), &repo.join("digits/2"), 2);
    std::fs::remove_file(repo.join("digits/2/signature.json")).expect("unsign");
    let trusted = key.with_extension("pub");
    let verify = |repo: &Path| {
        edgeinfer(&["verify", "--repo", repo.to_str().expect("utf8"), "--trusted-key", trusted.to_str().expect("utf8")])
    };
    let out = verify(&repo);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("ok      digits/1")
            && text(&out).contains("FAILED  digits/2")
            && text(&out).contains("unsigned"),
        "{}",
        text(&out)
    );
    let out = edgeinfer(&[
        "sign",
        "--key",
        key.with_extension("key").to_str().expect("utf8"),
        repo.join("digits/2").to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(verify(&repo).status.success(), "{}", text(&verify(&repo)));
}

#[test]
fn tampered_versions_are_refused_and_the_good_one_keeps_serving() {
    let temp = tempfile::tempdir().expect("tempdir");
    let (publisher, publisher_pub) = generate_key_pair(&temp.path().join("publisher")).expect("keys");
    let (other, _) = generate_key_pair(&temp.path().join("other")).expect("keys");
    let (publisher, other) = (read_signing_key(&publisher).expect("key"), read_signing_key(&other).expect("key"));
    let repo = temp.path().join("repo");
    let version = |v: u64| {
        let dir = repo.join(format!("digits/{v}"));
        copy_version(fixtures().digits.dir(), &dir, v);
        dir
    };
    sign_version(&version(1), &publisher).expect("sign");
    let registry = ModelRegistry::with_history(
        runtime(),
        ModelRepository::open(&repo).expect("repo"),
        &temp.path().join("history.jsonl"),
    )
    .expect("registry");
    registry.set_signature_policy(SignaturePolicy::from_files(&[publisher_pub]).expect("policy"));
    let registry = Arc::new(registry);
    registry.load_all().expect("load");
    let audit = temp.path().join("audit.jsonl");
    let server = TestServer::with_registry(
        registry,
        ServerConfig { watch: false, audit_file: Some(audit.clone()), ..ServerConfig::default() },
    );
    let addr = server.addr;

    version(2); // unsigned
    sign_version(&version(3), &other).expect("sign"); // the wrong key
    let forged = version(4);
    sign_version(&forged, &publisher).expect("sign");
    let envelope = std::fs::read_to_string(forged.join("signature.json")).expect("read");
    let mut value: Value = serde_json::from_str(&envelope).expect("json");
    let sig = value["signatures"][0]["sig"].as_str().expect("sig").to_string();
    let flipped = if sig.starts_with('A') { sig.replacen('A', "B", 1) } else { format!("A{}", &sig[1..]) };
    value["signatures"][0]["sig"] = Value::from(flipped);
    std::fs::write(forged.join("signature.json"), value.to_string()).expect("forge");
    std::fs::write(version(5).join("signature.json"), "{\"not\": \"an envelope\"}").expect("garbage");
    let manifest_changed = version(6);
    sign_version(&manifest_changed, &publisher).expect("sign");
    let mut manifest = edgeinfer_runtime::Manifest::load(&manifest_changed.join("manifest.toml")).expect("manifest");
    manifest.limits = Limits { fuel: u64::MAX / 2, ..manifest.limits };
    manifest.save(&manifest_changed.join("manifest.toml")).expect("save");
    let component_changed = version(7);
    sign_version(&component_changed, &publisher).expect("sign");
    let mut wasm = std::fs::read(component_changed.join("model.wasm")).expect("wasm");
    let end = wasm.len() - 1;
    wasm[end] ^= 1;
    std::fs::write(component_changed.join("model.wasm"), &wasm).expect("tamper");

    let reload = request(addr, "POST", "/v2/repository/models/digits/load", &[], b"");
    assert_eq!(reload.status, 200, "{}", reload.text());
    let index = post_json(addr, "/v2/repository/index", &serde_json::json!({})).json();
    let reason = |v: &str| {
        let row = index.as_array().expect("rows").iter().find(|r| r["version"] == v).cloned().expect("row");
        (row["state"].as_str().unwrap_or_default().to_string(), row["reason"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(reason("1").0, "READY");
    let expected = [
        ("2", "unsigned"),
        ("3", "not signed by any trusted key"),
        ("4", "not signed by any trusted key"),
        ("5", "not a DSSE envelope"),
        ("6", "manifest.toml was modified after it was signed"),
        ("7", "model.wasm was modified after it was signed"),
    ];
    for (v, why) in expected {
        let (state, reason) = reason(v);
        assert_eq!(state, "UNAVAILABLE", "version {v}");
        assert!(reason.contains("signature refused") && reason.contains(why), "version {v}: {reason}");
    }
    // The good version answers; the refused ones never take traffic.
    for _ in 0..5 {
        let reply = post_json(addr, "/v2/models/digits/infer", &digits_request(1));
        assert_eq!((reply.status, reply.json()["model_version"].clone()), (200, Value::from("1")));
    }
    assert_eq!(post_json(addr, "/v2/models/digits/versions/7/infer", &digits_request(1)).status, 404);
    let history = std::fs::read_to_string(temp.path().join("history.jsonl")).expect("history");
    let audit: Vec<AuditEvent> = std::fs::read_to_string(&audit)
        .expect("audit")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    for (v, why) in expected {
        assert!(
            history
                .lines()
                .any(|l| l.contains("\"refused\"") && l.contains(&format!("\"version\":{v}")) && l.contains(why)),
            "history lacks version {v}"
        );
        assert!(
            audit.iter().any(|e| e.version == Some(v.parse().expect("n")) && e.reason.contains(why)),
            "audit lacks version {v}"
        );
    }
}

#[test]
fn without_trusted_keys_signatures_are_checked_when_present() {
    let temp = tempfile::tempdir().expect("tempdir");
    let (key, public) = generate_key_pair(&temp.path().join("k")).expect("keys");
    let key = read_signing_key(&key).expect("key");
    assert_eq!(edgeinfer_runtime::signature::key_id(&read_public_key(&public).expect("pub")).len(), 64);
    let dir = |v: u64| {
        let dir = temp.path().join(format!("digits/{v}"));
        copy_version(fixtures().digits.dir(), &dir, v);
        dir
    };
    let policy = SignaturePolicy::default();
    assert_eq!(
        policy.check(&dir(1)).expect("unsigned is fine"),
        edgeinfer_runtime::signature::SignatureStatus::Unsigned
    );
    let signed = dir(2);
    sign_version(&signed, &key).expect("sign");
    assert!(matches!(policy.check(&signed), Ok(edgeinfer_runtime::signature::SignatureStatus::Untrusted(_))));
    let mut manifest = edgeinfer_runtime::Manifest::load(&signed.join("manifest.toml")).expect("manifest");
    manifest.version = 9;
    manifest.save(&signed.join("manifest.toml")).expect("save");
    let error = policy.check(&signed).expect_err("modified after signing").to_string();
    assert!(error.contains("manifest.toml was modified after it was signed"), "{error}");
}
