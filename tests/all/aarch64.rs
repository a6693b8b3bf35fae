//! The component is the portable artifact: models compiled on x86-64 are served by the
//! aarch64 build of `edgeinfer` (cross-built by `tests/setup.sh` with Debian's
//! `gcc-aarch64-linux-gnu`, run under `qemu-aarch64`), and every answer is the same bytes as
//! the x86-64 server's: outputs bit for bit, and the same fuel. The aarch64 server loads code
//! that `edgeinfer precompile --target aarch64-unknown-linux-gnu` compiled on x86-64 (the
//! device's flow when its own CPU is slow to compile; here, emulated, it would take many
//! minutes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::http::{Reply, get, post_json, request};

use crate::soak::soak_driver;

const TARGET: &str = "aarch64-unknown-linux-gnu";

/// The cross-built binary (`cargo build --release --target aarch64-unknown-linux-gnu`), or
/// `None` (skipped, saying so) outside CI when it or qemu is missing.
fn aarch64_binary() -> Option<PathBuf> {
    let binary =
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target").join(TARGET).join("release/edgeinfer");
    let qemu = Command::new("qemu-aarch64").arg("--version").output().is_ok_and(|o| o.status.success());
    if binary.is_file() && qemu {
        return Some(binary);
    }
    let why = format!("needs {} and qemu-aarch64 (tests/setup.sh builds and installs them)", binary.display());
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED aarch64_serves_the_same_bits_and_fuel: {why}");
    None
}

/// Entries (compiled components and modules) in a cache directory.
fn cached_entries(cache: &Path) -> usize {
    ["components", "modules"]
        .iter()
        .flat_map(|kind| std::fs::read_dir(cache.join(kind)).into_iter().flatten().flatten())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".cwasm"))
        .count()
}

/// One request: the model, the body and its binary header length.
pub struct Case {
    pub model: &'static str,
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

impl Case {
    /// Posts it to `/v2/models/{model}/infer` at `addr`.
    pub fn send(&self, addr: std::net::SocketAddr) -> Reply {
        let mut headers = vec![("Content-Type", "application/json".to_string())];
        if let Some(length) = self.header_length {
            headers = vec![
                ("Content-Type", "application/octet-stream".to_string()),
                ("Inference-Header-Content-Length", length.to_string()),
            ];
        }
        request(addr, "POST", &format!("/v2/models/{}/infer", self.model), &headers, &self.body)
    }
}

/// Digits (40 rows, binary outputs), SqueezeNet (one binary image) and the scikit-learn
/// pipeline (JSON): one request per fixture model.
pub fn cases() -> Vec<Case> {
    let holdout = holdout();
    let digits = json!({
        "id": "aarch64-digits",
        "inputs": [{"name": holdout.input_name, "shape": [40, 64], "datatype": "FP32", "data": holdout.x[..40]}],
        "parameters": {"binary_data_output": true},
    });
    let image = std::fs::read(fixture("squeezenet_input.bin")).expect("squeezenet input");
    let header = json!({
        "id": "aarch64-squeezenet",
        "inputs": [{"name": "data_0", "shape": [1, 3, 224, 224], "datatype": "FP32",
                    "parameters": {"binary_data_size": image.len()}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut squeezenet = header.clone().into_bytes();
    squeezenet.extend_from_slice(&image);
    let mut pipeline: Value =
        serde_json::from_slice(&std::fs::read(fixture("pipeline_request.json")).expect("pipeline request"))
            .expect("pipeline request JSON");
    pipeline["id"] = json!("aarch64-pipeline");
    vec![
        Case { model: "digits", body: digits.to_string().into_bytes(), header_length: None },
        Case { model: "squeezenet", body: squeezenet, header_length: Some(header.len()) },
        Case { model: "pipeline", body: pipeline.to_string().into_bytes(), header_length: None },
    ]
}

/// The JSON part of an answer (the whole body, or the part before the binary data).
pub fn header_of(reply: &Reply) -> Value {
    let length =
        reply.header("inference-header-content-length").map_or(reply.body.len(), |l| l.parse().expect("length"));
    serde_json::from_slice(&reply.body[..length]).expect("answer JSON")
}

#[test]
fn aarch64_serves_the_same_bits_and_fuel() {
    let Some(binary) = aarch64_binary() else { return };
    // Emulation keeps both cores busy: latency-sensitive tests wait (see `cpu_exclusive`).
    let _alone = cpu_exclusive();
    let elf = std::fs::read(&binary).expect("binary");
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 0xb7, "{} is an aarch64 (EM_AARCH64) ELF", binary.display());

    let temp = tempfile::tempdir().expect("tempdir");
    let repo = three_model_repo(temp.path());
    // Emulated, SqueezeNet takes seconds per image, more beside other suites: a deadline far
    // above the manifests' 5 s (the same for both servers; fuel does not depend on it).
    for model in ["digits", "squeezenet", "pipeline"] {
        let path = repo.join(model).join("1/manifest.toml");
        let mut manifest = edgeinfer_runtime::Manifest::load(&path).expect("manifest");
        manifest.limits.timeout_ms = 120_000;
        manifest.save(&path).expect("save the manifest");
    }

    let cache = temp.path().join("aarch64-cache");
    let precompiled = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["precompile", "--target", TARGET, "--repo"])
        .arg(&repo)
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .expect("edgeinfer precompile");
    assert!(precompiled.status.success(), "precompile: {}", String::from_utf8_lossy(&precompiled.stderr));
    let entries = cached_entries(&cache);
    assert!(entries >= 4, "the shared code module and a shell per model: {entries} entries");

    let x86 = soak_driver::ServerProcess::start(&repo, &cache_dir());
    let mut qemu = Command::new("qemu-aarch64");
    qemu.arg("-L").arg("/usr/aarch64-linux-gnu").arg(&binary);
    let arm = soak_driver::ServerProcess::start_program(qemu, &repo, &cache, &[], Duration::from_secs(600));
    for server in [&x86, &arm] {
        for model in ["digits", "squeezenet", "pipeline"] {
            wait_until(&format!("{model} ready"), Duration::from_secs(600), || {
                get(server.addr, &format!("/v2/models/{model}/ready")).status == 200
            });
        }
    }
    assert_eq!(cached_entries(&cache), entries, "the aarch64 server loaded the precompiled code, compiling nothing");

    for case in cases() {
        let (expected, actual) = (case.send(x86.addr), case.send(arm.addr));
        assert_eq!(expected.status, 200, "{}: {}", case.model, String::from_utf8_lossy(&expected.body));
        assert_eq!(actual.status, 200, "{} on aarch64: {}", case.model, String::from_utf8_lossy(&actual.body));
        let (x86_header, arm_header) = (header_of(&expected), header_of(&actual));
        let fuel = |header: &Value| header["parameters"]["fuel_used"].as_u64().expect("fuel_used");
        assert_eq!(fuel(&arm_header), fuel(&x86_header), "{}: fuel differs on aarch64", case.model);
        assert_eq!(arm_header, x86_header, "{}: the answers differ", case.model);
        assert!(actual.body == expected.body, "{}: the output bytes differ on aarch64", case.model);
        println!("{}: {} bytes, fuel {}, identical on aarch64", case.model, actual.body.len(), fuel(&arm_header));
    }
    the_lean_build_names_what_it_leaves_out(&binary, &arm, &repo, &cache);
}

/// The aarch64 binary is the lean build (`--no-default-features`): the status page, batch
/// jobs and gRPC are left out, and each refusal names its cargo feature.
fn the_lean_build_names_what_it_leaves_out(binary: &Path, arm: &soak_driver::ServerProcess, repo: &Path, cache: &Path) {
    let page = get(arm.addr, "/ui");
    assert!(page.status == 404 && page.text().contains("cargo feature `status-page`"), "{}", page.text());
    let jobs = post_json(arm.addr, "/v2/batch/jobs", &json!({"model": "digits"}));
    assert!(jobs.status == 501 && jobs.text().contains("cargo feature `batch`"), "{}", jobs.text());
    let emulated = |args: &[&str]| {
        let mut command = Command::new("qemu-aarch64");
        command.arg("-L").arg("/usr/aarch64-linux-gnu").arg(binary).args(args);
        command.arg("--repo").arg(repo).arg("--cache-dir").arg(cache);
        command.output().expect("qemu-aarch64")
    };
    let grpc = emulated(&["serve", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&grpc.stderr);
    assert!(!grpc.status.success() && stderr.contains("leaves out gRPC (cargo feature `grpc`)"), "{stderr}");
    let batch = emulated(&["batch", "--model", "digits"]);
    let stderr = String::from_utf8_lossy(&batch.stderr);
    assert!(!batch.status.success() && stderr.contains("cargo feature `batch`"), "{stderr}");
}
