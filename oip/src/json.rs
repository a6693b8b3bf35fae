//! The JSON form of v2 inference requests and responses.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Bytes, Datatype, ProtocolError, Tensor, element_count};

/// A v2 inference request body, before its tensors are decoded.
#[derive(Debug, Clone, Deserialize)]
pub struct InferenceRequest {
    /// Request id, echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors, still in JSON form.
    pub inputs: Vec<Value>,
    /// Outputs the caller wants; all when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// An output the caller asks for.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestedOutput {
    /// Output tensor name.
    pub name: String,
    /// Output parameters (e.g. `binary_data`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// A v2 inference response body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InferenceResponse {
    /// The model that answered.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The request id, when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters (edgeinfer reports `fuel_used`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of a response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseOutput {
    /// Tensor name.
    pub name: String,
    /// Datatype name.
    pub datatype: Datatype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Output parameters (e.g. `binary_data_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Flat row-major data; absent when sent as binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Parses a JSON request body and decodes every input into a raw tensor.
pub fn decode_request(body: &[u8]) -> Result<(InferenceRequest, Vec<Tensor>), ProtocolError> {
    let request: InferenceRequest = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::request(format!("malformed inference request JSON: {e}")))?;
    let no_binary = |name: &str, _: Datatype, _: &[u64], _: u64| -> Result<Bytes, ProtocolError> {
        Err(ProtocolError::tensor(name, "has binary_data_size but the request has no binary part"))
    };
    let tensors =
        request.inputs.iter().map(|input| decode_input_with(input, no_binary)).collect::<Result<Vec<_>, _>>()?;
    check_unique(&tensors)?;
    Ok((request, tensors))
}

/// Refuses a request that names one input twice.
/// Refuses a request that names one input twice.
pub fn check_unique(tensors: &[Tensor]) -> Result<(), ProtocolError> {
    let mut seen = std::collections::HashSet::new();
    for tensor in tensors {
        if !seen.insert(tensor.name.as_str()) {
            return Err(ProtocolError::tensor(&tensor.name, "appears more than once in the request"));
        }
    }
    Ok(())
}

/// Decodes one input tensor (`name`, `shape`, `datatype`, then `data`, or
/// `parameters.binary_data_size` bytes taken by `binary`).
pub(crate) fn decode_input_with(
    input: &Value,
    binary: impl FnOnce(&str, Datatype, &[u64], u64) -> Result<Bytes, ProtocolError>,
) -> Result<Tensor, ProtocolError> {
    let object = input.as_object().ok_or_else(|| ProtocolError::request("each entry of 'inputs' must be an object"))?;
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ProtocolError::request("an input has no string 'name'"))?;
    let datatype: Datatype = object
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| ProtocolError::tensor(name, "has no string 'datatype'"))?
        .parse()
        .map_err(|e: String| ProtocolError::tensor(name, e))?;
    let shape = decode_shape(name, object.get("shape"))?;
    let count =
        element_count(&shape).ok_or_else(|| ProtocolError::tensor(name, format!("shape {shape:?} is too large")))?;
    if let Some(size) = object.get("parameters").and_then(|p| p.get("binary_data_size")) {
        let size = size
            .as_u64()
            .ok_or_else(|| ProtocolError::tensor(name, format!("binary_data_size {size} is not a byte count")))?;
        if object.contains_key("data") {
            return Err(ProtocolError::tensor(name, "has both 'data' and binary_data_size"));
        }
        let data = binary(name, datatype, &shape, size)?;
        return Ok(Tensor { name: name.to_string(), datatype, shape, data });
    }
    let data = object.get("data").ok_or_else(|| ProtocolError::tensor(name, "has no 'data'"))?;
    let mut leaves = Vec::new();
    flatten(data, &mut leaves);
    if leaves.len() as u64 != count {
        return Err(ProtocolError::tensor(
            name,
            format!("shape {shape:?} needs {count} elements but 'data' holds {}", leaves.len()),
        ));
    }
    let data = encode_leaves(name, datatype, &leaves)?.into();
    Ok(Tensor { name: name.to_string(), datatype, shape, data })
}

fn decode_shape(name: &str, shape: Option<&Value>) -> Result<Vec<u64>, ProtocolError> {
    let dims = shape.and_then(Value::as_array).ok_or_else(|| ProtocolError::tensor(name, "has no 'shape' array"))?;
    dims.iter()
        .map(|dim| {
            dim.as_u64().ok_or_else(|| {
                ProtocolError::tensor(name, format!("shape dimension {dim} is not a non-negative integer"))
            })
        })
        .collect()
}

fn flatten<'a>(value: &'a Value, leaves: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, leaves)),
        leaf => leaves.push(leaf),
    }
}

/// Encodes JSON leaves as little-endian raw bytes of `datatype`.
fn encode_leaves(name: &str, datatype: Datatype, leaves: &[&Value]) -> Result<Vec<u8>, ProtocolError> {
    let mismatch = |leaf: &Value| ProtocolError::tensor(name, format!("value {leaf} is not a valid {datatype}"));
    let mut out = Vec::with_capacity(leaves.len() * datatype.element_size().unwrap_or(8));
    for &leaf in leaves {
        match datatype {
            Datatype::Bool => out.push(u8::from(leaf.as_bool().ok_or_else(|| mismatch(leaf))?)),
            Datatype::Uint8 => out.extend(unsigned::<u8>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Uint16 => out.extend(unsigned::<u16>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Uint32 => out.extend(unsigned::<u32>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Uint64 => out.extend(unsigned::<u64>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Int8 => out.extend(signed::<i8>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Int16 => out.extend(signed::<i16>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Int32 => out.extend(signed::<i32>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Int64 => out.extend(signed::<i64>(leaf).ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Fp32 => out.extend((leaf.as_f64().ok_or_else(|| mismatch(leaf))? as f32).to_le_bytes()),
            Datatype::Fp64 => out.extend(leaf.as_f64().ok_or_else(|| mismatch(leaf))?.to_le_bytes()),
            Datatype::Fp16 => {
                return Err(ProtocolError::tensor(
                    name,
                    "FP16 data must be sent with the binary tensor data extension",
                ));
            }
            Datatype::Bytes => {
                let text = leaf.as_str().ok_or_else(|| mismatch(leaf))?;
                let len = u32::try_from(text.len()).map_err(|_| mismatch(leaf))?;
                out.extend(len.to_le_bytes());
                out.extend(text.as_bytes());
            }
        }
    }
    Ok(out)
}

/// A JSON integer that fits the unsigned type `T`.
fn unsigned<T: TryFrom<u64>>(value: &Value) -> Option<T> {
    value.as_u64().and_then(|v| T::try_from(v).ok())
}

/// A JSON integer that fits the signed type `T`.
fn signed<T: TryFrom<i64>>(value: &Value) -> Option<T> {
    value.as_i64().and_then(|v| T::try_from(v).ok())
}

/// Turns raw little-endian output data into a flat JSON array.
pub fn encode_output(tensor: &Tensor) -> Result<Value, ProtocolError> {
    let bad = || ProtocolError::tensor(&tensor.name, "output data does not match its datatype and shape");
    if let Some(size) = tensor.datatype.element_size() {
        let expected = element_count(&tensor.shape).and_then(|n| n.checked_mul(size as u64));
        if expected != Some(tensor.data.len() as u64) {
            return Err(bad());
        }
    }
    let data = &tensor.data;
    let values: Vec<Value> = match tensor.datatype {
        Datatype::Bool => data.iter().map(|&b| Value::from(b != 0)).collect(),
        Datatype::Uint8 => data.iter().map(|&b| Value::from(b)).collect(),
        Datatype::Int8 => data.iter().map(|&b| Value::from(b as i8)).collect(),
        Datatype::Uint16 => chunks::<2>(data).map(|c| Value::from(u16::from_le_bytes(c))).collect(),
        Datatype::Int16 => chunks::<2>(data).map(|c| Value::from(i16::from_le_bytes(c))).collect(),
        Datatype::Uint32 => chunks::<4>(data).map(|c| Value::from(u32::from_le_bytes(c))).collect(),
        Datatype::Int32 => chunks::<4>(data).map(|c| Value::from(i32::from_le_bytes(c))).collect(),
        Datatype::Uint64 => chunks::<8>(data).map(|c| Value::from(u64::from_le_bytes(c))).collect(),
        Datatype::Int64 => chunks::<8>(data).map(|c| Value::from(i64::from_le_bytes(c))).collect(),
        Datatype::Fp32 => chunks::<4>(data).map(|c| float_value(f64::from(f32::from_le_bytes(c)), true)).collect(),
        Datatype::Fp64 => chunks::<8>(data).map(|c| float_value(f64::from_le_bytes(c), false)).collect(),
        Datatype::Fp16 => {
            return Err(ProtocolError::tensor(&tensor.name, "FP16 outputs can only be returned as binary data"));
        }
        Datatype::Bytes => bytes_items(data).ok_or_else(bad)?.into_iter().map(Value::from).collect(),
    };
    Ok(Value::Array(values))
}

/// JSON number for a float; FP32 values are printed with the shortest f32 representation.
fn float_value(value: f64, single: bool) -> Value {
    if single {
        // Round-trip through the f32 text so 0.1f32 prints as 0.1, not 0.10000000149011612.
        let text = (value as f32).to_string();
        text.parse::<f64>().map(Value::from).unwrap_or(Value::Null)
    } else {
        Value::from(value)
    }
}

fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|c| {
        let mut array = [0u8; N];
        array.copy_from_slice(c);
        array
    })
}

/// Splits BYTES data (4-byte little-endian length, then the bytes) into strings; `None` when
/// a length runs past the end.
pub fn bytes_items(mut data: &[u8]) -> Option<Vec<String>> {
    let mut items = Vec::new();
    while !data.is_empty() {
        let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let item = data.get(4..4 + len)?;
        items.push(String::from_utf8_lossy(item).into_owned());
        data = &data[4 + len..];
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_decode_to_the_same_bytes() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        let (_, a) = decode_request(flat).expect("flat");
        let (_, b) = decode_request(nested).expect("nested");
        assert_eq!(a, b);
        assert_eq!(a[0].data.len(), 16);
        assert_eq!(&a[0].data[4..8], &2f32.to_le_bytes());
    }

    #[test]
    fn errors_name_the_input() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
                "input 'x': shape [3] needs 3 elements",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "input 'x': value 300 is not a valid UINT8",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
                "input 'x': shape dimension -1",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#,
                "input 'x': unknown datatype 'FLOAT'",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
                "input 'x': FP16 data must be sent",
            ),
            (br#"{"inputs": 3}"#, "malformed inference request JSON"),
        ];
        for (body, expected) in cases {
            let err = decode_request(body).expect_err("must fail");
            assert!(err.to_string().starts_with(expected), "{err} does not start with {expected}");
        }
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[1],"datatype":"INT64","parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.to_vec();
        body.extend([1f32, 2f32].iter().flat_map(|v| v.to_le_bytes()));
        body.extend(9i64.to_le_bytes());
        let body = Bytes::from(body);
        let length = json.len().to_string();
        let (header, binary) = crate::split_body(&body, Some(&length)).expect("split");
        let (_, tensors) = crate::decode_request_with_binary(&header, &binary).expect("decode");
        assert_eq!(tensors[0].data, [1f32, 2f32].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        assert_eq!(tensors[1].data, &9i64.to_le_bytes()[..]);
        // The inputs are views of the body, not copies.
        assert_eq!(tensors[0].data.as_ptr(), body[json.len()..].as_ptr());
        let lying = (json.len() + 100).to_string();
        assert!(crate::split_body(&body, Some(&lying)).is_err());
        let short = body.slice(json.len()..body.len() - 1);
        let err = crate::decode_request_with_binary(&header, &short).expect_err("short");
        assert!(err.to_string().contains("input 'b'"), "{err}");
    }

    #[test]
    fn outputs_round_trip_through_json() {
        let tensor = Tensor {
            name: "y".into(),
            datatype: Datatype::Fp32,
            shape: vec![2],
            data: [0.1f32, -2.5].iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        assert_eq!(encode_output(&tensor).expect("encodes").to_string(), "[0.1,-2.5]");
        let labels = Tensor {
            name: "l".into(),
            datatype: Datatype::Int64,
            shape: vec![1],
            data: 7i64.to_le_bytes().to_vec().into(),
        };
        assert_eq!(encode_output(&labels).expect("encodes").to_string(), "[7]");
    }

    #[test]
    fn bytes_tensors_round_trip_with_length_prefixes() {
        let body = br#"{"inputs":[{"name":"s","shape":[3],"datatype":"BYTES","data":["a","","h\u00e9"]}]}"#;
        let (_, tensors) = decode_request(body).expect("decode");
        let expected: Vec<u8> =
            [&1u32.to_le_bytes()[..], b"a", &0u32.to_le_bytes(), &3u32.to_le_bytes(), "h\u{e9}".as_bytes()].concat();
        assert_eq!(tensors[0].data, expected);
        assert_eq!(encode_output(&tensors[0]).expect("encodes"), serde_json::json!(["a", "", "h\u{e9}"]));
        // A truncated item is an error naming the output, never a panic or a short answer.
        let truncated = Tensor { data: expected[..expected.len() - 1].to_vec().into(), ..tensors[0].clone() };
        let err = encode_output(&truncated).expect_err("truncated");
        assert!(err.to_string().contains("'s'") && err.to_string().contains("does not match"), "{err}");
        let not_text = br#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","data":[5]}]}"#;
        let err = decode_request(not_text).expect_err("number as BYTES");
        assert!(err.to_string().contains("not a valid BYTES"), "{err}");
    }

    #[test]
    fn fp16_travels_only_as_binary_data() {
        let json_body = br#"{"inputs":[{"name":"h","shape":[2],"datatype":"FP16","data":[1.0, 2.0]}]}"#;
        let err = decode_request(json_body).expect_err("FP16 as JSON");
        assert!(err.to_string().contains("FP16 data must be sent with the binary tensor data extension"), "{err}");
        let header = br#"{"inputs":[{"name":"h","shape":[2],"datatype":"FP16","parameters":{"binary_data_size":4}}]}"#;
        let halves = [0x3c00u16, 0xc000]; // 1.0 and -2.0
        let raw: Bytes = halves.iter().flat_map(|h| h.to_le_bytes()).collect::<Vec<u8>>().into();
        let (_, tensors) = crate::decode_request_with_binary(header, &raw).expect("binary FP16");
        assert_eq!((tensors[0].datatype, tensors[0].data.clone()), (Datatype::Fp16, raw.clone()));
        let err = crate::decode_request_with_binary(header, &raw.slice(..3)).expect_err("3 bytes for 2 halves");
        assert!(err.to_string().contains("input 'h'"), "{err}");
        let err = encode_output(&tensors[0]).expect_err("FP16 as JSON output");
        assert!(err.to_string().contains("FP16 outputs can only be returned as binary data"), "{err}");
    }
}
