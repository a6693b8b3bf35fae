//! The `edgeinfer` binary: compile, verify and infer as a user runs them.

use std::path::Path;
use std::process::Output;

use crate::common::*;

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn compile_verify_infer_round_trip_and_tamper_detection() {
    fixtures(); // warm the shared code cache first
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = temp.path().to_str().expect("utf8");
    let onnx = fixture("digits.onnx");
    let reference = fixture("digits_reference.csv");
    let out = edgeinfer(&[
        "compile",
        onnx.to_str().expect("utf8"),
        "--name",
        "digits",
        "--version",
        "7",
        "--repo",
        repo,
        "--reference",
        reference.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(Path::new(repo).join("digits/7/model.wasm").exists());
    let manifest =
        edgeinfer_runtime::Manifest::load(&Path::new(repo).join("digits/7/manifest.toml")).expect("manifest");
    let recorded = manifest.reference.expect("--reference recorded in the manifest");
    assert_eq!((recorded.file.as_str(), recorded.rows), ("reference.json", 1347));
    let bytes = std::fs::read(Path::new(repo).join("digits/7/reference.json")).expect("reference file");
    assert_eq!(edgeinfer_runtime::sha256_hex(&bytes), recorded.sha256);

    let again =
        edgeinfer(&["compile", onnx.to_str().expect("utf8"), "--name", "digits", "--version", "7", "--repo", repo]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));

    let holdout = holdout();
    let request = serde_json::json!({
        "id": "cli-1",
        "inputs": [{"name": holdout.input_name, "shape": [2, 64], "datatype": "FP32", "data": &holdout.x[..2]}],
        "outputs": [{"name": "label"}]
    });
    let request_path = temp.path().join("request.json");
    std::fs::write(&request_path, request.to_string()).expect("write");

    // --replace rebuilds it; --example records the request's outputs as the smoke test.
    let onnx_arg = onnx.to_str().expect("utf8");
    let example = request_path.to_str().expect("utf8");
    let compile_args = ["compile", onnx_arg, "--name", "digits", "--version", "7", "--repo", repo, "--replace"];
    let bad_example = temp.path().join("bad.json");
    std::fs::write(&bad_example, "{\"inputs\": [").expect("write");
    let out = edgeinfer(&[&compile_args[..], &["--example", bad_example.to_str().expect("utf8")]].concat());
    assert!(!out.status.success());
    assert!(text(&out).contains("malformed inference request JSON"), "{}", text(&out));
    assert!(Path::new(repo).join("digits/7/model.wasm").exists(), "a failed --replace keeps the old version");
    let out = edgeinfer(&[&compile_args[..], &["--example", example]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let manifest =
        edgeinfer_runtime::Manifest::load(&Path::new(repo).join("digits/7/manifest.toml")).expect("manifest");
    assert_eq!(manifest.examples.len(), 1);
    let names: Vec<&str> = manifest.examples[0].outputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["label", "probabilities"]);

    let out =
        edgeinfer(&["infer", "--repo", repo, "--model", "digits", "--input", request_path.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json response");
    assert_eq!(response["model_name"], "digits");
    assert_eq!(response["model_version"], "7");
    assert_eq!(response["id"], "cli-1");
    assert_eq!(response["outputs"][0]["name"], "label");
    assert_eq!(response["outputs"][0]["data"], serde_json::json!(&holdout.ort_labels[..2]));
    assert_eq!(response["parameters"]["fuel_used"], digits_fuel(2, &["label"]), "the same fuel as in-process");

    let out = edgeinfer(&[
        "infer",
        "--repo",
        repo,
        "--model",
        "digits",
        "--input",
        request_path.to_str().expect("utf8"),
        "--fuel",
        "1000",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("fuel exhausted"), "{}", text(&out));

    let out = edgeinfer(&["verify", "--repo", repo]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok      digits/7"), "{}", text(&out));

    let wasm = Path::new(repo).join("digits/7/model.wasm");
    let mut bytes = std::fs::read(&wasm).expect("read");
    bytes[1000] ^= 0x20;
    std::fs::write(&wasm, bytes).expect("write");
    let out = edgeinfer(&["verify", "--repo", repo]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED  digits/7: integrity mismatch"), "{}", text(&out));
}

#[test]
fn refusals_name_the_operator_the_node_and_the_model_file() {
    let temp = tempfile::tempdir().expect("tempdir");
    let refusals = fixture("refusals");
    let cases = [
        (fixture("unsupported.onnx"), vec!["unsupported ONNX operator Col2Im (node"]),
        (
            refusals.join("unknown_operator.onnx"),
            vec!["unsupported ONNX operator FrobnicateV2 (node custom_frobnicator)"],
        ),
        (refusals.join("unsupported_attribute.onnx"), vec!["node wrap_padding (Pad)", "Unsupported mode wrap"]),
        (
            refusals.join("dynamic_channels.onnx"),
            vec!["\"stem\" ConvHir", "dimension `channels` is dynamic, but this node needs 3"],
        ),
        (
            refusals.join("dynamic_image_into_dense.onnx"),
            vec!["\"fc\" Gemm", "dimensions `height`, `width` are dynamic, but this node needs 48"],
        ),
    ];
    for (i, (onnx, says)) in cases.iter().enumerate() {
        let path = onnx.to_str().expect("utf8");
        let version = (i + 1).to_string();
        let repo = temp.path().to_str().expect("utf8");
        let out = edgeinfer(&["compile", path, "--name", "u", "--version", &version, "--repo", repo]);
        assert!(!out.status.success(), "{path} compiled");
        let said = text(&out);
        assert!(said.contains(&format!("compiling {path}")), "the error names the model file: {said}");
        for fragment in says {
            assert!(said.contains(fragment), "{said} does not say {fragment}");
        }
        assert!(!said.contains("panicked"), "{said}");
    }
}
