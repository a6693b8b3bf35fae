//! The model zoo (tests/zoo/make_models.py: torchvision CNNs, Hugging Face encoders and a
//! causal LM, recurrent sequence models, LightGBM and XGBoost, onnxruntime int8; committed ONNX
//! files with one input each and onnxruntime's outputs): every model is compiled with
//! `edgeinfer compile`, run in the sandbox and compared with onnxruntime. Labels (integer
//! outputs) must be equal; float outputs within the family's tolerance (see [`tolerance`]).
//!
//! The table (model, exporter, operators, compiles, matches, warm latency against onnxruntime
//! on one thread) is printed, and written to the book's model zoo page (docs/src/zoo.md,
//! between the `zoo-table` markers) with `EDGEINFER_WRITE_ZOO_TABLE=1`. The test fails unless
//! every model compiles and matches.

#[path = "../support/zoo_case.rs"]
mod zoo_case;
use zoo_case::tensor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{LimitOverrides, LoadedModel};
use serde_json::Value;

use crate::common::*;

const BEGIN: &str = "<!-- zoo-table:begin (written by tests/all/zoo.rs) -->";
const END: &str = "<!-- zoo-table:end -->";
/// Timed runs per model after one warm-up, in the sandbox and under onnxruntime.
const RUNS: usize = 5;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Allowed difference for a float output: `atol + rtol * |expected|`, per family. Float
/// models: the same arithmetic in another order (1e-4 + 1e-3 relative). int8: one quantization
/// step of the output's range (its largest magnitude / 127), as requantizing may round the
/// other way.
fn tolerance(family: &str, expected: &[f64]) -> (f64, f64) {
    match family {
        "int8" => (expected.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 127.0, 0.0),
        "boosted trees" => (1e-5, 1e-4),
        _ => (1e-4, 1e-3),
    }
}

struct Row {
    name: String,
    family: String,
    exporter: String,
    operators: usize,
    compiles: Result<(), String>,
    matches: Result<(), String>,
    warm_ms: Option<f64>,
}

#[test]
fn the_models_people_deploy_compile_and_answer_as_onnxruntime_does() {
    if skip_slow("the_models_people_deploy_compile_and_answer_as_onnxruntime_does") {
        return;
    }
    let models = root().join("tests/zoo/models");
    let mut names: Vec<String> = std::fs::read_dir(&models)
        .expect("tests/zoo/models")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".onnx").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 19, "the zoo has {} models", names.len());
    let repo = tempfile::tempdir().expect("repo");
    let runtime = runtime();
    let mut rows = Vec::new();
    for name in &names {
        let case: Value = serde_json::from_slice(&std::fs::read(models.join(format!("{name}.json"))).expect("case"))
            .expect("case json");
        let text = |key: &str| case[key].as_str().unwrap_or_default().to_string();
        let mut row = Row {
            name: name.clone(),
            family: text("family"),
            exporter: text("exporter"),
            operators: case["operators"].as_array().map_or(0, Vec::len),
            compiles: Ok(()),
            matches: Err("-".into()),
            warm_ms: None,
        };
        row.compiles = compile(repo.path(), &models, name);
        if row.compiles.is_ok() {
            let model = LoadedModel::load(&runtime, &repo.path().join(name.replace('_', "-")).join("1"))
                .expect("a compiled model loads");
            let inputs: Vec<Tensor> = case["inputs"].as_array().expect("inputs").iter().map(tensor).collect();
            let (matches, warm_ms) = run(&model, &inputs, &case["outputs"], &row.family);
            row.matches = matches;
            row.warm_ms = warm_ms;
        }
        println!("{name}: compiles {:?}, matches {:?}", row.compiles, row.matches);
        rows.push(row);
    }
    let onnxruntime_ms = onnxruntime_latency(&models, &names);
    let table = render(&rows, &onnxruntime_ms);
    println!("{table}");

    let page_path = root().join("docs/src/zoo.md");
    let page = std::fs::read_to_string(&page_path).expect("docs/src/zoo.md");
    let (before, rest) = page.split_once(BEGIN).expect("docs/src/zoo.md has the zoo-table begin marker");
    let (_, after) = rest.split_once(END).expect("docs/src/zoo.md has the zoo-table end marker");
    if std::env::var("EDGEINFER_WRITE_ZOO_TABLE").is_ok_and(|v| v == "1") {
        std::fs::write(&page_path, format!("{before}{BEGIN}\n{table}\n{END}{after}")).expect("write the zoo page");
    }
    let failing: Vec<String> = rows
        .iter()
        .filter(|row| row.compiles.is_err() || row.matches.is_err())
        .map(|row| format!("{}: {:?} / {:?}", row.name, row.compiles, row.matches))
        .collect();
    assert!(failing.is_empty(), "models that do not compile or do not match onnxruntime: {failing:#?}");
}

/// `edgeinfer compile` into `repo` as `<name with dashes>/1`.
fn compile(repo: &Path, models: &Path, name: &str) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .arg("compile")
        .arg(models.join(format!("{name}.onnx")))
        .args(["--name", &name.replace('_', "-"), "--version", "1", "--repo"])
        .arg(repo)
        .env("EDGEINFER_CACHE_DIR", cache_dir())
        .output()
        .expect("run edgeinfer compile");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "compiling {name} panicked: {stderr}");
    if out.status.success() { Ok(()) } else { Err(first_line(&stderr)) }
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| l.starts_with("error")).unwrap_or_else(|| text.lines().next().unwrap_or(""));
    line.trim_start_matches("error: ").replace('|', "/").chars().take(160).collect()
}

/// Runs the case once to compare, then warm runs for the median latency.
fn run(model: &LoadedModel, inputs: &[Tensor], expected: &Value, family: &str) -> (Result<(), String>, Option<f64>) {
    let unlimited = LimitOverrides { fuel: Some(u64::MAX / 2), timeout_ms: Some(120_000), memory_mb: Some(2048) };
    let outcome = match model.infer(inputs.to_vec(), &[], unlimited) {
        Ok(outcome) => outcome,
        Err(error) => return (Err(first_line(&format!("error: {error}"))), None),
    };
    let got: BTreeMap<&str, &Tensor> = outcome.outputs.iter().map(|t| (t.name.as_str(), t)).collect();
    for (name, want) in expected.as_object().expect("outputs") {
        let Some(tensor) = got.get(name.as_str()) else { return (Err(format!("no output {name}")), None) };
        if let Err(why) = compare(name, tensor, want, family) {
            return (Err(why), None);
        }
    }
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        model.infer(inputs.to_vec(), &[], unlimited).expect("a warm run answers as the first did");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (Ok(()), Some(times[times.len() / 2]))
}

fn compare(name: &str, tensor: &Tensor, want: &Value, family: &str) -> Result<(), String> {
    let shape: Vec<u64> = want["shape"].as_array().expect("shape").iter().filter_map(Value::as_u64).collect();
    if tensor.shape != shape {
        return Err(format!("{name}: shape {:?}, onnxruntime {shape:?}", tensor.shape));
    }
    let expected: Vec<f64> = want["data"].as_array().expect("data").iter().filter_map(Value::as_f64).collect();
    let actual = numbers(tensor);
    if actual.len() != expected.len() {
        return Err(format!("{name}: {} values, onnxruntime {}", actual.len(), expected.len()));
    }
    let exact = matches!(tensor.datatype, Datatype::Int64 | Datatype::Int32);
    let (atol, rtol) = if exact { (0.0, 0.0) } else { tolerance(family, &expected) };
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        if (a - e).abs() > atol + rtol * e.abs() {
            return Err(format!("{name}[{i}] = {a}, onnxruntime {e} (tolerance {atol:.1e} + {rtol:.0e} relative)"));
        }
    }
    Ok(())
}

fn numbers(tensor: &Tensor) -> Vec<f64> {
    match tensor.datatype {
        Datatype::Fp32 => f32s(&tensor.data).into_iter().map(f64::from).collect(),
        Datatype::Int64 => i64s(&tensor.data).into_iter().map(|v| v as f64).collect(),
        Datatype::Int32 => {
            tensor.data.chunks_exact(4).map(|b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect()
        }
        Datatype::Fp64 => {
            tensor.data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
        }
        other => panic!("unexpected output datatype {other:?}"),
    }
}

/// onnxruntime's warm latency per model (one thread), from tests/zoo/ort_latency.py.
fn onnxruntime_latency(models: &Path, names: &[String]) -> BTreeMap<String, f64> {
    let out = Command::new("python3")
        .arg(root().join("tests/zoo/ort_latency.py"))
        .arg(models)
        .arg(RUNS.to_string())
        .args(names)
        .output()
        .expect("python3 runs tests/zoo/ort_latency.py");
    assert!(out.status.success(), "ort_latency.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("latency json")
}

fn render(rows: &[Row], onnxruntime_ms: &BTreeMap<String, f64>) -> String {
    let mut table = vec![
        "| model | family | exporter | operators | compiles | matches onnxruntime | warm ms | onnxruntime ms (1 thread) | ratio |"
            .to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let verdict = |result: &Result<(), String>| match result {
        Ok(()) => "yes".to_string(),
        Err(why) if why == "-" => "-".to_string(),
        Err(why) => format!("no: {why}"),
    };
    for row in rows {
        let ort = onnxruntime_ms.get(&row.name).copied();
        let (warm, ratio) = match (row.warm_ms, ort) {
            (Some(warm), Some(ort)) => (format!("{warm:.2}"), format!("{:.1}x", warm / ort)),
            _ => ("-".to_string(), "-".to_string()),
        };
        table.push(format!(
            "| {} | {} | {} | {} | {} | {} | {warm} | {} | {ratio} |",
            row.name,
            row.family,
            row.exporter,
            row.operators,
            verdict(&row.compiles),
            verdict(&row.matches),
            ort.map_or("-".to_string(), |ms| format!("{ms:.2}")),
        ));
    }
    table.join("\n")
}
