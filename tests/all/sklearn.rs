//! scikit-learn pipelines (tests/sklearn/make_models.py: skl2onnx exports with ZipMap on, and
//! onnxruntime's outputs on held-out rows) compiled with `edgeinfer compile` and run with
//! `edgeinfer infer` answer as onnxruntime does: labels exactly, scores within 1e-5 absolute +
//! 1e-4 relative. Classifiers' probability outputs carry their class labels in the manifest
//! and the served metadata. The resulting table must be the one on the book's scikit-learn page
//! (docs/src/sklearn.md, between the `sklearn-table` markers); `EDGEINFER_WRITE_SKLEARN_TABLE=1`
//! rewrites it there.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::*;
use crate::http::get;
use crate::server::TestServer;

const BEGIN: &str = "<!-- sklearn-table:begin (written by tests/all/sklearn.rs) -->";
const END: &str = "<!-- sklearn-table:end -->";

#[test]
fn scikit_learn_pipelines_answer_as_onnxruntime_does() {
    if crate::common::skip_slow("scikit_learn_pipelines_answer_as_onnxruntime_does") {
        return;
    }
    let (models, matrix) = generate("make_models.py", "matrix.json");
    assert!(matrix.len() >= 30, "the matrix has {} models", matrix.len());
    let repo = tempfile::tempdir().expect("repo");
    let mut table = vec![
        "| model | ONNX-ML operators | compiles | matches onnxruntime |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let mut labelled = Vec::new();
    for entry in &matrix {
        let name = entry["name"].as_str().expect("name");
        let operators: Vec<&str> = entry["operators"]
            .as_array()
            .map(|ops| ops.iter().filter_map(|o| o.as_str()?.strip_prefix("ai.onnx.ml:")).collect())
            .unwrap_or_default();
        let operators = if operators.is_empty() { "-".to_string() } else { operators.join(", ") };
        let (compiles, matches) = match entry["export_error"].as_str() {
            Some(why) => (format!("no: skl2onnx cannot export it ({why})"), "-".to_string()),
            None => match check(repo.path(), models.path(), name) {
                Err(Failure::Compile(why)) => (format!("no: {why}"), "-".to_string()),
                Err(Failure::Answer(why)) => ("yes".to_string(), format!("no: {why}")),
                Ok(labels) => {
                    labelled.extend(labels);
                    ("yes".to_string(), "yes".to_string())
                }
            },
        };
        table.push(format!("| {name} | {operators} | {compiles} | {matches} |"));
    }
    let table = table.join("\n");
    println!("{table}");
    assert!(labelled.len() >= 15, "only {} classifiers had labelled probability outputs", labelled.len());
    served_metadata_carries_the_labels(repo.path(), &labelled);

    let page_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/sklearn.md");
    let page = std::fs::read_to_string(&page_path).expect("docs/src/sklearn.md");
    let (before, rest) = page.split_once(BEGIN).expect("docs/src/sklearn.md has the sklearn-table begin marker");
    let (current, after) = rest.split_once(END).expect("docs/src/sklearn.md has the sklearn-table end marker");
    if std::env::var_os("EDGEINFER_WRITE_SKLEARN_TABLE").is_some() {
        std::fs::write(&page_path, format!("{before}{BEGIN}\n{table}\n{END}{after}"))
            .expect("write docs/src/sklearn.md");
    } else {
        assert_eq!(
            current.trim(),
            table,
            "the scikit-learn table in docs/src/sklearn.md differs from this run (EDGEINFER_WRITE_SKLEARN_TABLE=1 rewrites it)"
        );
    }
}

/// Runs tests/sklearn/`script` into a fresh directory; the directory and its `list` file.
fn generate(script: &str, list: &str) -> (tempfile::TempDir, Vec<Value>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/sklearn").join(script);
    let generated = Command::new("python3").arg(path).arg(dir.path()).status().expect("python3");
    assert!(generated.success(), "tests/sklearn/{script} needs tests/python/requirements.txt");
    let listed = serde_json::from_slice(&std::fs::read(dir.path().join(list)).expect(list)).expect("json");
    (dir, listed)
}

enum Failure {
    Compile(String),
    Answer(String),
}

/// (model, output, labels) the manifest recorded for a classifier's probability output.
type Labelled = (String, String, Vec<String>);

/// Compiles one model with the CLI, runs its held-out rows with `edgeinfer infer`, compares
/// every output with onnxruntime's and the manifest's class labels with ZipMap's.
fn check(repo: &Path, models: &Path, name: &str) -> Result<Vec<Labelled>, Failure> {
    let model = name.replace('_', "-");
    let onnx = models.join(format!("{name}.onnx"));
    let repo_arg = repo.to_str().expect("utf-8 path");
    let compiled =
        edgeinfer(&["compile", "--name", &model, "--version", "1", "--repo", repo_arg, onnx.to_str().expect("path")]);
    if !compiled.status.success() {
        let why = stderr(&compiled);
        let last = why.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("?").trim();
        return Err(Failure::Compile(last.trim_start_matches("error: ").replace('|', "\\|")));
    }
    let case: Value =
        serde_json::from_slice(&std::fs::read(models.join(format!("{name}.json"))).expect("case")).expect("case json");
    let rows = case["rows"].as_array().expect("rows");
    let mut shape = vec![rows.len()];
    if let Some(first) = rows[0].as_array() {
        shape.push(first.len());
    }
    let data: Vec<&Value> = rows.iter().flat_map(flatten).collect();
    let request = serde_json::json!({"inputs": [{
        "name": case["input"], "shape": shape, "datatype": case["datatype"], "data": data,
    }]});
    let request_file = models.join(format!("{name}.request.json"));
    std::fs::write(&request_file, request.to_string()).expect("request");
    let ran =
        edgeinfer(&["infer", "--repo", repo_arg, "--model", &model, "--input", request_file.to_str().expect("path")]);
    if !ran.status.success() {
        return Err(Failure::Answer(format!("infer failed: {}", stderr(&ran).trim())));
    }
    let response: Value = serde_json::from_str(&stdout(&ran)).map_err(|e| Failure::Answer(e.to_string()))?;
    let outputs = response["outputs"].as_array().cloned().unwrap_or_default();
    for (output, expected) in case["outputs"].as_object().expect("outputs") {
        let got = outputs
            .iter()
            .find(|o| o["name"] == output.as_str())
            .ok_or_else(|| Failure::Answer(format!("no output {output}")))?;
        compare(output, got, expected).map_err(Failure::Answer)?;
    }
    let manifest = edgeinfer_runtime::Manifest::load(&repo.join(&model).join("1/manifest.toml")).expect("manifest");
    let mut labelled = Vec::new();
    for (output, labels) in case["labels"].as_object().into_iter().flatten() {
        let want: Vec<String> = serde_json::from_value(labels.clone()).expect("labels");
        let recorded = manifest.outputs.iter().find(|o| &o.name == output).map(|o| o.labels.clone());
        if recorded.as_ref() != Some(&want) {
            return Err(Failure::Answer(format!("{output}: manifest labels {recorded:?}, ZipMap's {want:?}")));
        }
        labelled.push((model.clone(), output.clone(), want));
    }
    Ok(labelled)
}

fn compare(name: &str, got: &Value, expected: &Value) -> Result<(), String> {
    let want: Vec<&Value> = flatten(expected);
    let values: Vec<&Value> = got["data"].as_array().map(|d| d.iter().collect()).unwrap_or_default();
    if values.len() != want.len() {
        return Err(format!("{name}: {} values, onnxruntime {}", values.len(), want.len()));
    }
    let datatype = got["datatype"].as_str().unwrap_or("?");
    for (index, (g, w)) in values.iter().zip(&want).enumerate() {
        let same = match datatype {
            "FP32" | "FP64" => match (g.as_f64(), w.as_f64()) {
                (Some(g), Some(w)) => (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                _ => false,
            },
            "INT64" | "INT32" => g.as_i64().is_some() && g.as_i64() == w.as_i64(),
            "BYTES" => g.as_str().is_some() && g.as_str() == w.as_str(),
            other => return Err(format!("{name}: datatype {other} not compared")),
        };
        if !same {
            return Err(format!("{name}: value {index} is {g}, onnxruntime {w}"));
        }
    }
    Ok(())
}

fn flatten(value: &Value) -> Vec<&Value> {
    match value.as_array() {
        Some(items) => items.iter().flat_map(flatten).collect(),
        None => vec![value],
    }
}

/// `GET /v2/models/{model}` gives each labelled output `parameters.labels`; the component
/// serving HTTP itself (as under Spin) answers the same metadata.
fn served_metadata_carries_the_labels(repo: &Path, labelled: &[Labelled]) {
    let server = TestServer::start(repo, Default::default());
    let (model, _, _) = &labelled[0];
    let component = crate::wasi_http::serve_component(&repo.join(model).join("1/model.wasm"));
    let path = format!("/v2/models/{model}");
    assert_eq!(get(component.addr, &path).json(), get(server.addr, &path).json(), "{path}: component vs host");
    for (model, output, labels) in labelled {
        let reply = get(server.addr, &format!("/v2/models/{model}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let metadata = reply.json();
        let served = metadata["outputs"]
            .as_array()
            .and_then(|outputs| outputs.iter().find(|o| o["name"] == output.as_str()))
            .unwrap_or_else(|| panic!("{model}: no output {output} in {metadata}"));
        assert_eq!(served["parameters"]["labels"], serde_json::json!(labels), "{model}: {metadata}");
    }
}

/// Each attribute combination an ONNX-ML operator does not support fails the compile, and the
/// error names it (tests/sklearn/make_unsupported.py lists them with the expected text).
#[test]
fn unsupported_attribute_combinations_are_named_at_compile_time() {
    if crate::common::skip_slow("unsupported_attribute_combinations_are_named_at_compile_time") {
        return;
    }
    let (models, cases) = generate("make_unsupported.py", "unsupported.json");
    assert!(cases.len() >= 10, "{} cases", cases.len());
    let repo = tempfile::tempdir().expect("repo");
    let runtime = runtime();
    for case in &cases {
        let name = case["case"].as_str().expect("case");
        let names = case["names"].as_str().expect("names");
        let onnx = std::fs::read(models.path().join(format!("{name}.onnx"))).expect("onnx");
        let error = try_compile(&runtime, repo.path(), &onnx, "model.onnx", &name.replace('_', "-"), 1)
            .err()
            .unwrap_or_else(|| panic!("{name}: compiled, but its attributes are not supported"))
            .to_string();
        assert!(error.contains(names), "{name}: the error does not name {names:?}: {error}");
    }
}
