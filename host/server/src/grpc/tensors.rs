//! gRPC inference messages to and from the v2 request and response bodies the pipeline
//! speaks: a `ModelInferRequest` becomes a JSON header plus a binary part (typed `contents`
//! encoded as the binary extension's little-endian raw data, `raw_input_contents` as they
//! are), with every output asked for in binary; the binary response body becomes a
//! `ModelInferResponse` with `raw_output_contents`.

use edgeinfer_oip::{Datatype, HttpBody, ProtocolError};
use serde_json::{Map, Value, json};

use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse, infer_parameter};

/// A v2 request body with a binary part: JSON header, then the inputs' data.
pub struct Framed {
    /// Header and binary part.
    pub bytes: Vec<u8>,
    /// The JSON header's length (`Inference-Header-Content-Length`).
    pub header_length: usize,
}

/// Frames `request` as a v2 binary request body; every problem names its input.
pub fn request_body(request: &ModelInferRequest) -> Result<Framed, ProtocolError> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(ProtocolError::request(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order, or none",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut binary = Vec::new();
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (index, input) in request.inputs.iter().enumerate() {
        let name = input.name.as_str();
        let datatype: Datatype = input
            .datatype
            .parse()
            .map_err(|_| ProtocolError::tensor(name, format!("unknown datatype {:?}", input.datatype)))?;
        let shape =
            input.shape.iter().map(|&d| u64::try_from(d)).collect::<Result<Vec<u64>, _>>().map_err(|_| {
                ProtocolError::tensor(name, format!("shape {:?} has a negative dimension", input.shape))
            })?;
        let count = edgeinfer_oip::element_count(&shape)
            .ok_or_else(|| ProtocolError::tensor(name, format!("shape {shape:?} holds too many elements")))?;
        let data = match raw.get(index) {
            Some(bytes) => {
                if input.contents.is_some() {
                    return Err(ProtocolError::tensor(name, "has both contents and raw_input_contents; send one"));
                }
                if let Some(size) = datatype.element_size() {
                    let needed = count.saturating_mul(size as u64);
                    if bytes.len() as u64 != needed {
                        return Err(ProtocolError::tensor(
                            name,
                            format!(
                                "raw_input_contents[{index}] holds {} bytes; shape {shape:?} of {datatype} needs {needed}",
                                bytes.len()
                            ),
                        ));
                    }
                }
                bytes.clone()
            }
            None => typed(name, datatype, input.contents.as_ref(), &shape, count)?,
        };
        inputs.push(json!({
            "name": name,
            "shape": shape,
            "datatype": datatype.as_str(),
            "parameters": {"binary_data_size": data.len()},
        }));
        binary.extend_from_slice(&data);
    }
    let outputs: Vec<Value> =
        request.outputs.iter().map(|o| json!({"name": o.name, "parameters": {"binary_data": true}})).collect();
    let mut parameters: Map<String, Value> =
        request.parameters.iter().map(|(k, v)| (k.clone(), parameter_value(v))).collect();
    parameters.insert("binary_data_output".into(), Value::Bool(true));
    let mut header = json!({"inputs": inputs, "parameters": parameters});
    if !request.id.is_empty() {
        header["id"] = Value::String(request.id.clone());
    }
    if !outputs.is_empty() {
        header["outputs"] = Value::Array(outputs);
    }
    let mut bytes = serde_json::to_vec(&header).map_err(|e| ProtocolError::request(e.to_string()))?;
    let header_length = bytes.len();
    bytes.extend_from_slice(&binary);
    Ok(Framed { bytes, header_length })
}

fn parameter_value(parameter: &InferParameter) -> Value {
    use infer_parameter::ParameterChoice;
    match &parameter.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => json!(b),
        Some(ParameterChoice::Int64Param(i)) => json!(i),
        Some(ParameterChoice::StringParam(s)) => json!(s),
        Some(ParameterChoice::DoubleParam(d)) => json!(d),
        Some(ParameterChoice::Uint64Param(u)) => json!(u),
        None => Value::Null,
    }
}

/// Typed `contents` as the binary extension's raw data: little-endian elements, BYTES items
/// each after a 4-byte little-endian length.
fn typed(
    name: &str,
    datatype: Datatype,
    contents: Option<&InferTensorContents>,
    shape: &[u64],
    count: u64,
) -> Result<Vec<u8>, ProtocolError> {
    let contents = contents
        .ok_or_else(|| ProtocolError::tensor(name, "has neither contents nor an entry in raw_input_contents"))?;
    fn le<T: Copy, const N: usize>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|v| to(*v)).collect()
    }
    let c = contents;
    let (field, values, bytes): (&str, usize, Vec<u8>) = match datatype {
        Datatype::Bool => {
            ("bool_contents", c.bool_contents.len(), c.bool_contents.iter().map(|b| u8::from(*b)).collect())
        }
        Datatype::Int8 => ("int_contents", c.int_contents.len(), le(&c.int_contents, |v| (v as i8).to_le_bytes())),
        Datatype::Int16 => ("int_contents", c.int_contents.len(), le(&c.int_contents, |v| (v as i16).to_le_bytes())),
        Datatype::Int32 => ("int_contents", c.int_contents.len(), le(&c.int_contents, i32::to_le_bytes)),
        Datatype::Int64 => ("int64_contents", c.int64_contents.len(), le(&c.int64_contents, i64::to_le_bytes)),
        Datatype::Uint8 => ("uint_contents", c.uint_contents.len(), le(&c.uint_contents, |v| (v as u8).to_le_bytes())),
        Datatype::Uint16 => {
            ("uint_contents", c.uint_contents.len(), le(&c.uint_contents, |v| (v as u16).to_le_bytes()))
        }
        Datatype::Uint32 => ("uint_contents", c.uint_contents.len(), le(&c.uint_contents, u32::to_le_bytes)),
        Datatype::Uint64 => ("uint64_contents", c.uint64_contents.len(), le(&c.uint64_contents, u64::to_le_bytes)),
        Datatype::Fp32 => ("fp32_contents", c.fp32_contents.len(), le(&c.fp32_contents, f32::to_le_bytes)),
        Datatype::Fp64 => ("fp64_contents", c.fp64_contents.len(), le(&c.fp64_contents, f64::to_le_bytes)),
        Datatype::Bytes => {
            let mut bytes = Vec::new();
            for item in &c.bytes_contents {
                let length = u32::try_from(item.len())
                    .map_err(|_| ProtocolError::tensor(name, "a bytes_contents item is over 4 GiB"))?;
                bytes.extend_from_slice(&length.to_le_bytes());
                bytes.extend_from_slice(item);
            }
            ("bytes_contents", c.bytes_contents.len(), bytes)
        }
        Datatype::Fp16 => {
            return Err(ProtocolError::tensor(name, "FP16 has no typed contents; send it in raw_input_contents"));
        }
    };
    if values as u64 != count {
        return Err(ProtocolError::tensor(
            name,
            format!("{field} holds {values} values; shape {shape:?} of {datatype} needs {count}"),
        ));
    }
    Ok(bytes)
}

/// The pipeline's v2 response body (outputs in binary) as a `ModelInferResponse`.
pub fn response(body: HttpBody) -> Result<ModelInferResponse, String> {
    let header: Value = serde_json::from_slice(&body.json).map_err(|e| format!("unreadable response header: {e}"))?;
    let mut binary = body.binary.into_iter();
    let text = |key: &str| header.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut outputs = Vec::new();
    let mut raw = Vec::new();
    for output in header.get("outputs").and_then(Value::as_array).into_iter().flatten() {
        let size = output
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("output {} came back without binary data", output["name"]))?;
        let data = binary
            .next()
            .filter(|data| data.len() as u64 == size)
            .ok_or_else(|| format!("output {} came back without its {size} bytes of binary data", output["name"]))?;
        raw.push(Vec::from(data));
        outputs.push(InferOutputTensor {
            name: output.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            datatype: output.get("datatype").and_then(Value::as_str).unwrap_or_default().to_string(),
            shape: output
                .get("shape")
                .and_then(Value::as_array)
                .map(|dims| dims.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default(),
            parameters: Default::default(),
            contents: None,
        });
    }
    Ok(ModelInferResponse {
        model_name: text("model_name"),
        model_version: text("model_version"),
        id: text("id"),
        parameters: Default::default(),
        outputs,
        raw_output_contents: raw,
    })
}

#[cfg(test)]
mod tests {
    use super::super::proto::model_infer_request::InferInputTensor;
    use super::*;
    use bytes::Bytes;

    fn input(name: &str, datatype: &str, shape: Vec<i64>, contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    fn header(framed: &Framed) -> Value {
        serde_json::from_slice(&framed.bytes[..framed.header_length]).expect("json header")
    }

    #[test]
    fn typed_contents_become_the_binary_part_little_endian() {
        let request = ModelInferRequest {
            id: "r1".into(),
            inputs: vec![
                input(
                    "X",
                    "FP32",
                    vec![1, 2],
                    Some(InferTensorContents { fp32_contents: vec![1.5, -2.0], ..Default::default() }),
                ),
                input(
                    "S",
                    "BYTES",
                    vec![2],
                    Some(InferTensorContents { bytes_contents: vec![b"ab".to_vec(), vec![]], ..Default::default() }),
                ),
                input(
                    "I",
                    "INT16",
                    vec![1],
                    Some(InferTensorContents { int_contents: vec![-2], ..Default::default() }),
                ),
            ],
            ..Default::default()
        };
        let framed = request_body(&request).expect("framed");
        let header = header(&framed);
        assert_eq!(header["id"], "r1");
        assert_eq!(header["parameters"]["binary_data_output"], true);
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(header["inputs"][1]["parameters"]["binary_data_size"], 10);
        let mut want = Vec::new();
        want.extend_from_slice(&1.5f32.to_le_bytes());
        want.extend_from_slice(&(-2.0f32).to_le_bytes());
        want.extend_from_slice(&[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        want.extend_from_slice(&(-2i16).to_le_bytes());
        assert_eq!(&framed.bytes[framed.header_length..], &want[..]);
    }

    #[test]
    fn mismatches_name_the_input() {
        let short = ModelInferRequest {
            inputs: vec![input(
                "X",
                "FP32",
                vec![1, 3],
                Some(InferTensorContents { fp32_contents: vec![1.0], ..Default::default() }),
            )],
            ..Default::default()
        };
        let error = request_body(&short).err().expect("refused");
        assert_eq!(error.tensor.as_deref(), Some("X"));
        assert!(
            error.message.contains("fp32_contents holds 1 values; shape [1, 3] of FP32 needs 3"),
            "{}",
            error.message
        );
        let raw = ModelInferRequest {
            inputs: vec![input("X", "FP32", vec![2], None)],
            raw_input_contents: vec![vec![0; 7]],
            ..Default::default()
        };
        let error = request_body(&raw).err().expect("refused");
        assert!(error.message.contains("holds 7 bytes; shape [2] of FP32 needs 8"), "{}", error.message);
        let unknown = ModelInferRequest { inputs: vec![input("X", "FP33", vec![1], None)], ..Default::default() };
        assert!(request_body(&unknown).err().expect("refused").message.contains("unknown datatype"));
        let negative = ModelInferRequest { inputs: vec![input("X", "FP32", vec![-1], None)], ..Default::default() };
        assert!(request_body(&negative).err().expect("refused").message.contains("negative"));
    }

    #[test]
    fn binary_response_bodies_become_raw_output_contents() {
        let header = br#"{"model_name":"m","model_version":"2","id":"r","outputs":[{"name":"a","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":8}},{"name":"b","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let body = HttpBody {
            json: header.to_vec(),
            binary: vec![Bytes::copy_from_slice(&7i64.to_le_bytes()), Bytes::copy_from_slice(&0.5f32.to_le_bytes())],
            content_type: "application/octet-stream",
            header_length: Some(header.len()),
        };
        let response = response(body).expect("response");
        assert_eq!(
            (response.model_name.as_str(), response.model_version.as_str(), response.id.as_str()),
            ("m", "2", "r")
        );
        assert_eq!(response.outputs[1].shape, vec![1]);
        assert_eq!(response.raw_output_contents, vec![7i64.to_le_bytes().to_vec(), 0.5f32.to_le_bytes().to_vec()]);
    }
}
