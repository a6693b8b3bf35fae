//! Shared fixtures: a runtime and a repository holding the digits and SqueezeNet models,
//! compiled once per test run; compiled code is cached under the target directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{CompileRequest, Limits, LoadedModel, Runtime, RuntimeConfig, compile_model};
use serde::Deserialize;

pub struct Fixtures {
    pub runtime: Arc<Runtime>,
    pub repo: PathBuf,
    pub digits: LoadedModel,
    pub squeezenet: LoadedModel,
    _dir: tempfile::TempDir,
}

/// The held-out digits set recorded by `tests/fixtures/make_fixtures.py`.
#[derive(Deserialize)]
pub struct Holdout {
    pub input_name: String,
    pub accuracy: f64,
    pub x: Vec<Vec<f32>>,
    pub y: Vec<i64>,
    pub ort_labels: Vec<i64>,
    pub ort_probabilities: Vec<Vec<f32>>,
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/fixtures").join(name)
}

/// Compiled code cache shared by every test (and test process) of this target directory.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("edgeinfer-cache")
}

pub fn runtime() -> Arc<Runtime> {
    fixtures().runtime.clone()
}

pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let config = RuntimeConfig { cache_dir: cache_dir(), ..RuntimeConfig::default() };
        let runtime = Runtime::new(config).expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().to_path_buf();
        let digits = compile_fixture(&runtime, &repo, "digits.onnx", "digits", 1);
        let squeezenet = compile_fixture(&runtime, &repo, "squeezenet.onnx", "squeezenet", 1);
        Fixtures { runtime, repo, digits, squeezenet, _dir: dir }
    })
}

pub fn compile_fixture(runtime: &Arc<Runtime>, repo: &Path, file: &str, name: &str, version: u64) -> LoadedModel {
    let onnx = std::fs::read(fixture(file)).expect("fixture");
    try_compile(runtime, repo, &onnx, file, name, version).unwrap_or_else(|e| panic!("compiling {file}: {e}"))
}

/// Compiles ONNX bytes into `repo` with default limits.
pub fn try_compile(
    runtime: &Arc<Runtime>,
    repo: &Path,
    onnx: &[u8],
    file: &str,
    name: &str,
    version: u64,
) -> edgeinfer_runtime::Result<LoadedModel> {
    let request = CompileRequest {
        onnx,
        source_file: file.into(),
        name: name.into(),
        version,
        repo: repo.to_path_buf(),
        limits: Limits::default(),
        examples: Vec::new(),
        reference: None,
        text: None,
    };
    compile_model(runtime, &request, &|_: &str| {})
}

/// `root/repo` holding version 1 of digits, SqueezeNet and the scikit-learn pipeline
/// (`tests/fixtures/pipeline.onnx`): one model of each kind an edge target must serve.
pub fn three_model_repo(root: &Path) -> PathBuf {
    let repo = root.join("repo");
    copy_version(fixtures().digits.dir(), &repo.join("digits/1"), 1);
    copy_version(fixtures().squeezenet.dir(), &repo.join("squeezenet/1"), 1);
    compile_fixture(&runtime(), &repo, "pipeline.onnx", "pipeline", 1);
    repo
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Copies a version directory to `to`, its manifest saying `version`.
pub fn copy_version(from: &Path, to: &Path, version: u64) {
    copy_dir(from, to);
    let path = to.join("manifest.toml");
    let mut manifest = edgeinfer_runtime::Manifest::load(&path).expect("manifest");
    manifest.version = version;
    manifest.save(&path).expect("save");
}

/// Import prefixes a model component may have: everything inside the wasi:http/proxy world
/// that a model and its HTTP handler use.
pub const MODEL_IMPORTS: [&str; 7] = [
    "wasi:io/",
    "wasi:random/random@",
    "wasi:http/types@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "edgeinfer:inference/types@",
];

pub fn holdout() -> &'static Holdout {
    static HOLDOUT: OnceLock<Holdout> = OnceLock::new();
    HOLDOUT.get_or_init(|| {
        let text = std::fs::read_to_string(fixture("digits_holdout.json")).expect("holdout");
        serde_json::from_str(&text).expect("holdout json")
    })
}

/// FP32 tensor from rows.
pub fn fp32(name: &str, rows: &[Vec<f32>]) -> Tensor {
    let width = rows.first().map_or(0, Vec::len);
    Tensor {
        name: name.into(),
        datatype: Datatype::Fp32,
        shape: vec![rows.len() as u64, width as u64],
        data: rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

pub fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn i64s(data: &[u8]) -> Vec<i64> {
    data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// One good digits request, to show the runtime still serves after a failure.
pub fn assert_digits_still_serve() {
    let holdout = holdout();
    let input = fp32(&holdout.input_name, &holdout.x[..1]);
    let outcome = fixtures().digits.infer(vec![input], &["label".into()], Default::default()).expect("good request");
    assert_eq!(i64s(&outcome.outputs[0].data), vec![holdout.ort_labels[0]]);
}

/// |a - b| <= atol + rtol * |b| for every element; returns the worst violation.
pub fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(actual.len(), expected.len(), "length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= atol + rtol * e.abs(), "element {i}: {a} vs expected {e}");
    }
}

/// Fuel an in-process digits inference of the first `rows` held-out rows, asking for
/// `outputs` (empty: all), uses: the sandbox is deterministic, so every transport must report
/// exactly this.
pub fn digits_fuel(rows: usize, outputs: &[&str]) -> u64 {
    let holdout = holdout();
    let input = fp32(&holdout.input_name, &holdout.x[..rows]);
    let outputs: Vec<String> = outputs.iter().map(|o| o.to_string()).collect();
    fixtures().digits.infer(vec![input], &outputs, Default::default()).expect("digits").fuel_used
}

/// Runs the `edgeinfer` binary with the tests' shared code cache.
pub fn edgeinfer(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(args)
        .env("EDGEINFER_CACHE_DIR", cache_dir())
        .output()
        .expect("run edgeinfer")
}

/// A command's standard output as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A command's standard error as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits until `condition` holds, checking every 10 ms; fails the test naming `what` when
/// `timeout` passes first. The one way tests wait: on an observable event (a counter, a
/// status, a log line), never by sleeping past an interval of the code under test.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Serializes the tests whose assertions depend on latency (the rollouts: each puts load on a
/// server and checks a p99 ratio over a few dozen requests) with each other and with the test
/// that keeps both cores busy under qemu (`aarch64`): held for the whole test, so no two of
/// them run at once.
pub fn cpu_exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether to skip a long suite (the ONNX conformance run, the soak, the scikit-learn
/// matrix): `EDGEINFER_SKIP_SLOW=1` skips them locally, saying so on stderr; under CI (`CI`
/// set) nothing is skipped.
pub fn skip_slow(test: &str) -> bool {
    let asked = std::env::var("EDGEINFER_SKIP_SLOW").is_ok_and(|v| v == "1");
    let skip = asked && std::env::var_os("CI").is_none();
    if skip {
        eprintln!("SKIPPED {test}: EDGEINFER_SKIP_SLOW=1");
    }
    skip
}
