//! gRPC inference messages straight to and from the pipeline's tensors: a
//! `ModelInferRequest`'s inputs become [`Tensor`]s (`raw_input_contents` kept as received,
//! typed `contents` as little-endian raw data), and the encoded response's outputs go back as
//! `raw_output_contents` (the outputs' own buffers). No JSON on the way.

use edgeinfer_oip::{Datatype, EncodedResponse, InferenceRequest, ProtocolError, RequestedOutput, Tensor};
use serde_json::{Map, Value, json};

use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse, infer_parameter};

/// The request's tensors and the rest of it (id, parameters, outputs asked for, every
/// output as raw data); every problem names its input.
pub fn decode(message: ModelInferRequest) -> Result<(InferenceRequest, Vec<Tensor>), ProtocolError> {
    let ModelInferRequest { id, parameters, inputs: metadata, outputs, raw_input_contents: raw, .. } = message;
    if !raw.is_empty() && raw.len() != metadata.len() {
        return Err(ProtocolError::request(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order, or none",
            raw.len(),
            metadata.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut inputs = Vec::with_capacity(metadata.len());
    for (index, input) in metadata.into_iter().enumerate() {
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
        let data = match raw.next() {
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
                bytes
            }
            None => typed(name, datatype, input.contents.as_ref(), &shape, count)?.into(),
        };
        inputs.push(edgeinfer_oip::raw_tensor(name, datatype, shape, data)?);
    }
    let mut parameters: Map<String, Value> = parameters.iter().map(|(k, v)| (k.clone(), parameter_value(v))).collect();
    parameters.insert("binary_data_output".into(), Value::Bool(true));
    let outputs = outputs.into_iter().map(|output| RequestedOutput { name: output.name, parameters: None }).collect();
    let request = InferenceRequest {
        id: (!id.is_empty()).then_some(id),
        parameters: Some(parameters),
        inputs: Vec::new(),
        outputs: Some(outputs).filter(|outputs: &Vec<_>| !outputs.is_empty()),
    };
    Ok((request, inputs))
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

/// The encoded response (every output as raw data) as a `ModelInferResponse`, with the fuel
/// used as the `fuel_used` parameter.
pub fn response(encoded: EncodedResponse) -> Result<ModelInferResponse, String> {
    let EncodedResponse { json, binary } = encoded;
    if binary.len() != json.outputs.len() {
        return Err(format!("{} outputs came back with {} raw buffers", json.outputs.len(), binary.len()));
    }
    let outputs = json
        .outputs
        .into_iter()
        .map(|output| InferOutputTensor {
            name: output.name,
            datatype: output.datatype.as_str().to_string(),
            shape: output.shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect(),
            parameters: Default::default(),
            contents: None,
        })
        .collect();
    let parameters = json
        .parameters
        .iter()
        .flatten()
        .filter_map(|(key, value)| {
            let choice = match value {
                Value::Bool(b) => infer_parameter::ParameterChoice::BoolParam(*b),
                Value::Number(n) if n.is_i64() => infer_parameter::ParameterChoice::Int64Param(n.as_i64()?),
                Value::Number(n) if n.is_u64() => infer_parameter::ParameterChoice::Uint64Param(n.as_u64()?),
                Value::Number(n) => infer_parameter::ParameterChoice::DoubleParam(n.as_f64()?),
                Value::String(s) => infer_parameter::ParameterChoice::StringParam(s.clone()),
                _ => return None,
            };
            Some((key.clone(), InferParameter { parameter_choice: Some(choice) }))
        })
        .collect();
    Ok(ModelInferResponse {
        model_name: json.model_name,
        model_version: json.model_version,
        id: json.id.unwrap_or_default(),
        parameters,
        outputs,
        raw_output_contents: binary,
    })
}

#[cfg(test)]
mod tests {
    use super::super::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
    use super::*;
    use bytes::Bytes;
    use edgeinfer_oip::ResponseOutput;

    fn input(name: &str, datatype: &str, shape: Vec<i64>, contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    #[test]
    fn typed_contents_become_little_endian_tensors() {
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
            outputs: vec![InferRequestedOutputTensor { name: "label".into(), ..Default::default() }],
            ..Default::default()
        };
        let (request, tensors) = decode(request).expect("decoded");
        assert_eq!(request.id.as_deref(), Some("r1"));
        assert_eq!(request.parameters.as_ref().and_then(|p| p.get("binary_data_output")), Some(&Value::Bool(true)));
        assert_eq!(edgeinfer_oip::requested_outputs(&request), vec!["label".to_string()]);
        let mut fp32 = Vec::new();
        fp32.extend_from_slice(&1.5f32.to_le_bytes());
        fp32.extend_from_slice(&(-2.0f32).to_le_bytes());
        assert_eq!((tensors[0].shape.as_slice(), &tensors[0].data[..]), (&[1u64, 2][..], &fp32[..]));
        assert_eq!(&tensors[1].data[..], &[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(&tensors[2].data[..], &(-2i16).to_le_bytes());
    }

    #[test]
    fn raw_contents_are_kept_not_copied() {
        let buffer = Bytes::from(vec![0u8; 8]);
        let request = ModelInferRequest {
            inputs: vec![input("X", "FP32", vec![2], None)],
            raw_input_contents: vec![buffer.clone()],
            ..Default::default()
        };
        let (_, tensors) = decode(request).expect("decoded");
        assert_eq!(tensors[0].data.as_ptr(), buffer.as_ptr());
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
        let error = decode(short).expect_err("refused");
        assert_eq!(error.tensor.as_deref(), Some("X"));
        assert!(
            error.message.contains("fp32_contents holds 1 values; shape [1, 3] of FP32 needs 3"),
            "{}",
            error.message
        );
        let raw = ModelInferRequest {
            inputs: vec![input("X", "FP32", vec![2], None)],
            raw_input_contents: vec![Bytes::from(vec![0; 7])],
            ..Default::default()
        };
        let error = decode(raw).expect_err("refused");
        assert!(error.message.contains("holds 7 bytes; shape [2] of FP32 needs 8"), "{}", error.message);
        let items = ModelInferRequest {
            inputs: vec![input("S", "BYTES", vec![1], None)],
            raw_input_contents: vec![Bytes::from(vec![9, 0, 0, 0, b'a'])],
            ..Default::default()
        };
        assert!(decode(items).expect_err("refused").message.contains("length-prefixed items"));
        let unknown = ModelInferRequest { inputs: vec![input("X", "FP33", vec![1], None)], ..Default::default() };
        assert!(decode(unknown).expect_err("refused").message.contains("unknown datatype"));
        let negative = ModelInferRequest { inputs: vec![input("X", "FP32", vec![-1], None)], ..Default::default() };
        assert!(decode(negative).expect_err("refused").message.contains("negative"));
    }

    #[test]
    fn encoded_responses_become_raw_output_contents() {
        let output = |name: &str, datatype: Datatype| ResponseOutput {
            name: name.into(),
            datatype,
            shape: vec![1],
            parameters: None,
            data: None,
        };
        let mut parameters = Map::new();
        parameters.insert("fuel_used".into(), json!(1234));
        let encoded = EncodedResponse {
            json: edgeinfer_oip::InferenceResponse {
                model_name: "m".into(),
                model_version: "2".into(),
                id: Some("r".into()),
                parameters: Some(parameters),
                outputs: vec![output("a", Datatype::Int64), output("b", Datatype::Fp32)],
            },
            binary: vec![Bytes::copy_from_slice(&7i64.to_le_bytes()), Bytes::copy_from_slice(&0.5f32.to_le_bytes())],
        };
        let response = response(encoded).expect("response");
        assert_eq!(
            (response.model_name.as_str(), response.model_version.as_str(), response.id.as_str()),
            ("m", "2", "r")
        );
        assert_eq!(
            (response.outputs[0].datatype.as_str(), response.outputs[1].shape.as_slice()),
            ("INT64", &[1i64][..])
        );
        assert_eq!(response.raw_output_contents[0], &7i64.to_le_bytes()[..]);
        assert_eq!(response.raw_output_contents[1], &0.5f32.to_le_bytes()[..]);
        let fuel = response.parameters.get("fuel_used").and_then(|p| p.parameter_choice.clone());
        assert_eq!(fuel, Some(infer_parameter::ParameterChoice::Int64Param(1234)));
    }
}
