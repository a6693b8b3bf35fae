//! scikit-learn pipelines (tests/sklearn/make_models.py: skl2onnx exports with ZipMap on, and
//! onnxruntime's outputs on held-out rows) compile into components and answer as onnxruntime
//! does: labels exactly, scores within 1e-5 absolute + 1e-4 relative. Every model listed in
//! tests/sklearn/matching.txt must match; the table of all of them is printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use edgeinfer_oip::{Datatype, Tensor};

use crate::common::*;

#[test]
fn scikit_learn_pipelines_answer_as_onnxruntime_does() {
    let models = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sklearn/make_models.py");
    let generated = Command::new("python3").arg(script).arg(models.path()).status().expect("python3");
    assert!(generated.success(), "tests/sklearn/make_models.py needs tests/fixtures/requirements.txt");
    let matrix: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(models.path().join("matrix.json")).expect("matrix")).expect("json");
    let repo = tempfile::tempdir().expect("repo");
    let runtime = runtime();
    let mut results = BTreeMap::new();
    for entry in &matrix {
        let name = entry["name"].as_str().expect("name").to_string();
        if let Some(why) = entry["export_error"].as_str() {
            results.insert(name, format!("skl2onnx cannot export it: {why}"));
            continue;
        }
        results.insert(name.clone(), check(&runtime, repo.path(), models.path(), &name).err().unwrap_or_default());
    }
    println!("| model | result |\n|---|---|");
    for (name, problem) in &results {
        println!("| {name} | {} |", if problem.is_empty() { "matches onnxruntime" } else { problem });
    }
    let expected = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sklearn/matching.txt"))
        .expect("matching.txt");
    let regressions: Vec<String> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|name| results.get(*name).is_none_or(|problem| !problem.is_empty()))
        .map(|name| format!("{name}: {}", results.get(name).map_or("not generated", String::as_str)))
        .collect();
    assert!(regressions.is_empty(), "models that should match onnxruntime do not:\n{}", regressions.join("\n"));
}

/// Compiles one model, runs its held-out rows, compares every output with onnxruntime's.
fn check(runtime: &std::sync::Arc<edgeinfer::Runtime>, repo: &Path, models: &Path, name: &str) -> Result<(), String> {
    let onnx = std::fs::read(models.join(format!("{name}.onnx"))).map_err(|e| e.to_string())?;
    let case: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join(format!("{name}.json"))).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let model = try_compile(runtime, repo, &onnx, "model.onnx", &name.replace('_', "-"), 1)
        .map_err(|e| format!("does not compile: {e}"))?;
    let rows: Vec<Vec<f32>> = serde_json::from_value(case["rows"].clone()).map_err(|e| e.to_string())?;
    let input = fp32(case["input"].as_str().unwrap_or("X"), &rows);
    let outcome = model.infer(vec![input], &[], Default::default()).map_err(|e| format!("infer: {e}"))?;
    for (output, expected) in case["outputs"].as_object().ok_or("outputs")? {
        let got = outcome.outputs.iter().find(|t| &t.name == output).ok_or(format!("no output {output}"))?;
        compare(output, got, expected)?;
    }
    Ok(())
}

fn compare(name: &str, got: &Tensor, expected: &serde_json::Value) -> Result<(), String> {
    let flat: Vec<&serde_json::Value> = flatten(expected);
    match got.datatype {
        Datatype::Fp32 => {
            let values = f32s(&got.data);
            if values.len() != flat.len() {
                return Err(format!("{name}: {} values, expected {}", values.len(), flat.len()));
            }
            for (index, (g, w)) in values.iter().zip(&flat).enumerate() {
                let w = w.as_f64().ok_or(format!("{name}: expected a number"))?;
                if ((*g as f64) - w).abs() > 1e-5 + 1e-4 * w.abs() {
                    return Err(format!("{name}: value {index} is {g}, onnxruntime {w}"));
                }
            }
        }
        Datatype::Int64 => {
            let values = i64s(&got.data);
            let want: Vec<i64> = flat.iter().filter_map(|v| v.as_i64()).collect();
            if values != want {
                return Err(format!("{name}: labels {values:?}, onnxruntime {want:?}"));
            }
        }
        other => return Err(format!("{name}: datatype {other} not compared")),
    }
    Ok(())
}

fn flatten(value: &serde_json::Value) -> Vec<&serde_json::Value> {
    match value.as_array() {
        Some(items) => items.iter().flat_map(flatten).collect(),
        None => vec![value],
    }
}
