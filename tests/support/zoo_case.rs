//! The model zoo's recorded cases (`tests/zoo/models/<name>.json`), shared by the zoo test
//! (`tests/all/zoo.rs`) and the per-operator profile (`benches/op_profile.rs`).

use edgeinfer_oip::{Datatype, Tensor};
use serde_json::Value;

/// A case input as a tensor (FP32, INT64 or INT32 data lists).
pub fn tensor(input: &Value) -> Tensor {
    let data = input["data"].as_array().expect("data");
    let (datatype, bytes): (Datatype, Vec<u8>) = match input["datatype"].as_str().expect("datatype") {
        "FP32" => {
            (Datatype::Fp32, data.iter().flat_map(|v| (v.as_f64().expect("number") as f32).to_le_bytes()).collect())
        }
        "INT64" => (Datatype::Int64, data.iter().flat_map(|v| v.as_i64().expect("integer").to_le_bytes()).collect()),
        "INT32" => {
            (Datatype::Int32, data.iter().flat_map(|v| (v.as_i64().expect("integer") as i32).to_le_bytes()).collect())
        }
        other => panic!("unexpected input datatype {other}"),
    };
    Tensor {
        name: input["name"].as_str().expect("name").to_string(),
        datatype,
        shape: input["shape"].as_array().expect("shape").iter().filter_map(Value::as_u64).collect(),
        data: bytes.into(),
    }
}

/// The inputs of the case recorded beside `<models>/<name>.onnx`.
#[allow(dead_code)]
pub fn case_inputs(models: &std::path::Path, name: &str) -> Vec<Tensor> {
    let case: Value =
        serde_json::from_slice(&std::fs::read(models.join(format!("{name}.json"))).expect("case")).expect("case json");
    case["inputs"].as_array().expect("inputs").iter().map(tensor).collect()
}
