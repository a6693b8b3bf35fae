//! The ONNX backend node test suite run through the sandbox, shared by the conformance test
//! (`tests/all/conformance.rs`: the committed passing list must still pass) and the
//! conformance bench (`benches/conformance.rs`: every case, sandbox and native tract, the
//! README's per-operator table and a regenerated passing list).
//!
//! Cases come from `tests/conformance/export_cases.py` (the `onnx` package's case
//! definitions, exported as model.onnx + case.json per case).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{CompileRequest, LimitOverrides, Limits, Runtime, compile_model};

/// The committed list of cases that pass in the sandbox.
pub fn passing_list_path() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/conformance/passing.txt")
}

/// The case names in the committed passing list.
pub fn passing_list() -> Vec<String> {
    std::fs::read_to_string(passing_list_path())
        .expect("tests/conformance/passing.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Exports the node test cases into `out` with Python's `onnx`; false when it is missing.
pub fn export_cases(out: &Path) -> bool {
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/conformance/export_cases.py");
    Command::new("python3")
        .arg(script)
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// One node test case.
pub struct Case {
    /// The test name (`test_abs`).
    pub name: String,
    /// The operator it tests.
    pub op: String,
    /// The ONNX model.
    pub model: PathBuf,
    /// Inputs and expected outputs, or why the protocol cannot express them.
    pub data: Result<CaseData, String>,
}

/// A case's first data set and tolerances.
pub struct CaseData {
    pub rtol: f64,
    pub atol: f64,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

/// Reads the case named `name` from the export directory.
pub fn load_case(dir: &Path, name: &str) -> Case {
    let case_dir = dir.join(name);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case_dir.join("case.json")).expect("case.json")).expect("json");
    let op = json["op"].as_str().unwrap_or("?").to_string();
    let data = match json["unsupported"].as_str() {
        Some(why) => Err(format!("not expressible in the protocol: {why}")),
        None => Ok(CaseData {
            rtol: json["rtol"].as_f64().expect("rtol"),
            atol: json["atol"].as_f64().expect("atol"),
            inputs: tensors(&json["inputs"]),
            outputs: tensors(&json["outputs"]),
        }),
    };
    Case { name: name.to_string(), op, model: case_dir.join("model.onnx"), data }
}

/// Every exported case name, sorted.
pub fn case_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("export dir")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn tensors(list: &serde_json::Value) -> Vec<Tensor> {
    list.as_array()
        .expect("tensor list")
        .iter()
        .map(|t| Tensor {
            name: t["name"].as_str().expect("name").to_string(),
            datatype: t["datatype"].as_str().expect("datatype").parse::<Datatype>().expect("datatype"),
            shape: t["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim")).collect(),
            data: base64::engine::general_purpose::STANDARD
                .decode(t["data"].as_str().expect("data"))
                .expect("base64")
                .into(),
        })
        .collect()
}

/// Operators that lower to matrix products, the work native kernels take over.
pub const PRODUCT_OPS: &[&str] =
    &["Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "LSTM", "GRU", "RNN", "Attention", "MatMulInteger"];

/// Compiles the case into a component in `repo` and runs it in a fresh sandbox; with
/// `wasm_kernels` (a runtime without native kernels), a case of [`PRODUCT_OPS`] is also run
/// there and must give the same output bits.
pub fn run_in_sandbox(
    runtime: &Arc<Runtime>,
    wasm_kernels: Option<&Arc<Runtime>>,
    repo: &Path,
    case: &Case,
) -> Result<(), String> {
    let data = case.data.as_ref().map_err(Clone::clone)?;
    let onnx = std::fs::read(&case.model).map_err(|e| e.to_string())?;
    let request = CompileRequest {
        onnx: &onnx,
        source_file: "model.onnx".into(),
        name: case.name.replace('_', "-"),
        version: 1,
        repo: repo.to_path_buf(),
        limits: Limits::default(),
        examples: Vec::new(),
        reference: None,
        text: None,
    };
    let model = compile_model(runtime, &request, &|_: &str| {}).map_err(|e| format!("compile: {e}"))?;
    let outcome =
        model.infer(data.inputs.clone(), &[], LimitOverrides::default()).map_err(|e| format!("infer: {e}"))?;
    if let Some(other) = wasm_kernels.filter(|_| PRODUCT_OPS.contains(&case.op.as_str())) {
        let wasm = edgeinfer_runtime::LoadedModel::load(other, model.dir()).map_err(|e| format!("load: {e}"))?;
        let again = wasm
            .infer(data.inputs.clone(), &[], LimitOverrides::default())
            .map_err(|e| format!("wasm kernels: {e}"))?;
        if again.outputs.iter().zip(&outcome.outputs).any(|(a, b)| a.data != b.data) {
            return Err("outputs differ between native and wasm kernels".into());
        }
    }
    let _ = std::fs::remove_dir_all(model.dir());
    compare(&data.outputs, &outcome.outputs, data.rtol, data.atol)
}

/// Compares outputs the way onnx's backend tests do: same count, datatype and shape; floats
/// within `atol + rtol * |expected|` (NaN equals NaN), everything else exactly.
pub fn compare(expected: &[Tensor], actual: &[Tensor], rtol: f64, atol: f64) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!("{} outputs, expected {}", actual.len(), expected.len()));
    }
    for (index, (want, got)) in expected.iter().zip(actual).enumerate() {
        let label = format!("output {index} ({})", want.name);
        if want.datatype != got.datatype {
            return Err(format!("{label}: datatype {}, expected {}", got.datatype, want.datatype));
        }
        if want.shape != got.shape {
            return Err(format!("{label}: shape {:?}, expected {:?}", got.shape, want.shape));
        }
        let (Some(want_values), Some(got_values)) = (floats(want), floats(got)) else {
            if want.data != got.data {
                return Err(format!("{label}: values differ"));
            }
            continue;
        };
        for (position, (w, g)) in want_values.iter().zip(&got_values).enumerate() {
            let equal = (w.is_nan() && g.is_nan()) || w == g || (w - g).abs() <= atol + rtol * w.abs();
            if !equal {
                return Err(format!("{label}: element {position} is {g}, expected {w}"));
            }
        }
    }
    Ok(())
}

/// A float tensor's values as f64; `None` for other datatypes.
fn floats(tensor: &Tensor) -> Option<Vec<f64>> {
    let data = &tensor.data;
    Some(match tensor.datatype {
        Datatype::Fp16 => data.chunks_exact(2).map(|b| f16_to_f64(u16::from_le_bytes([b[0], b[1]]))).collect(),
        Datatype::Fp32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect(),
        Datatype::Fp64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
        _ => return None,
    })
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f64::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f64.powi(-24),
        31 if fraction == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + fraction / 1024.0) * 2f64.powi(exponent - 15),
    }
}

/// Runs `run` over `items` on `threads` threads, each result paired with its item's index;
/// items not started after `budget` are reported as `None`.
pub fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    budget: Duration,
    run: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut Option<R>>> = results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= items.len() || started.elapsed() > budget {
                        return;
                    }
                    let result = run(&items[index]);
                    **slots[index].lock().expect("slot") = Some(result);
                }
            });
        }
    });
    drop(slots);
    results
}
