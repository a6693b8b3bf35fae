//! The binary tensor data extension: a JSON header followed by raw tensor bytes.
//!
//! Requests carry `Inference-Header-Content-Length: N`; the first N bytes are the JSON
//! request, and inputs with `parameters.binary_data_size` take their data, in order, from
//! the bytes after it. Outputs asked for with `binary_data: true` come back the same way.

use serde_json::{Map, Value};

use crate::json::{InferenceRequest, decode_input_with};
use crate::{Bytes, Datatype, ProtocolError, Tensor, element_count};

/// The header naming the JSON part's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a request body into its JSON header and binary part (views of the same buffer,
/// not copies).
pub fn split_body(body: &Bytes, header_length: Option<&str>) -> Result<(Bytes, Bytes), ProtocolError> {
    let Some(length) = header_length else { return Ok((body.clone(), Bytes::new())) };
    let length: usize = length.trim().parse().map_err(|_| {
        ProtocolError::request(format!("Inference-Header-Content-Length '{length}' is not a byte count"))
    })?;
    if length > body.len() {
        return Err(ProtocolError::request(format!(
            "Inference-Header-Content-Length {length} exceeds the body's {} bytes",
            body.len()
        )));
    }
    Ok((body.slice(..length), body.slice(length..)))
}

/// Parses a request whose inputs may take data from `binary`; every binary byte must be used.
/// Each input's data is a view of `binary` (no copy).
pub fn decode_request_with_binary(
    json: &[u8],
    binary: &Bytes,
) -> Result<(InferenceRequest, Vec<Tensor>), ProtocolError> {
    let request: InferenceRequest = serde_json::from_slice(json)
        .map_err(|e| ProtocolError::request(format!("malformed inference request JSON: {e}")))?;
    let mut offset = 0usize;
    let mut tensors = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let tensor = decode_input_with(input, |name, datatype, shape, size| {
            take_binary(binary, &mut offset, name, datatype, shape, size)
        })?;
        tensors.push(tensor);
    }
    if offset != binary.len() {
        return Err(ProtocolError::request(format!(
            "the binary part holds {} bytes but the inputs' binary_data_size add up to {offset}",
            binary.len()
        )));
    }
    crate::json::check_unique(&tensors)?;
    Ok((request, tensors))
}

fn take_binary(
    binary: &Bytes,
    offset: &mut usize,
    name: &str,
    datatype: Datatype,
    shape: &[u64],
    size: u64,
) -> Result<Bytes, ProtocolError> {
    let size = usize::try_from(size).map_err(|_| ProtocolError::tensor(name, "binary_data_size is too large"))?;
    let end = offset.checked_add(size).filter(|&end| end <= binary.len()).ok_or_else(|| {
        ProtocolError::tensor(
            name,
            format!("binary_data_size {size} runs past the end of the binary part ({} bytes)", binary.len()),
        )
    })?;
    let data = binary.slice(*offset..end);
    *offset = end;
    check_raw_data(name, datatype, shape, &data, "binary_data_size")?;
    Ok(data)
}

/// A tensor from raw little-endian data a transport already holds (gRPC's
/// `raw_input_contents`), checked as binary request data is: the byte count matches the
/// shape, BYTES data is a sequence of length-prefixed items. `data` is kept, not copied.
pub fn raw_tensor(name: &str, datatype: Datatype, shape: Vec<u64>, data: Bytes) -> Result<Tensor, ProtocolError> {
    check_raw_data(name, datatype, &shape, &data, "raw data")?;
    Ok(Tensor { name: name.to_string(), datatype, shape, data })
}

/// Checks `data` holds exactly a `shape` of `datatype`; `what` names the size in messages.
fn check_raw_data(name: &str, datatype: Datatype, shape: &[u64], data: &[u8], what: &str) -> Result<(), ProtocolError> {
    let size = data.len();
    if let Some(element) = datatype.element_size() {
        let expected = element_count(shape).and_then(|n| n.checked_mul(element as u64));
        if expected != Some(size as u64) {
            return Err(ProtocolError::tensor(
                name,
                format!(
                    "{what} {size} does not match shape {shape:?} of {datatype} ({} bytes)",
                    expected.map_or("too many".to_string(), |e| e.to_string())
                ),
            ));
        }
    } else if !valid_bytes_items(data, shape) {
        return Err(ProtocolError::tensor(name, "BYTES binary data is not a sequence of length-prefixed items"));
    }
    Ok(())
}

fn valid_bytes_items(mut data: &[u8], shape: &[u64]) -> bool {
    let mut items = 0u64;
    while !data.is_empty() {
        let Some(len) = data.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
            return false;
        };
        let Some(rest) = data.get(4 + len..) else { return false };
        data = rest;
        items += 1;
    }
    element_count(shape) == Some(items)
}

/// Whether the caller wants `output` as binary data (per output, or request-wide).
pub fn wants_binary(
    request_parameters: Option<&Map<String, Value>>,
    output_parameters: Option<&Map<String, Value>>,
) -> bool {
    let flag =
        |params: Option<&Map<String, Value>>, key: &str| params.and_then(|p| p.get(key)).and_then(Value::as_bool);
    flag(output_parameters, "binary_data").or_else(|| flag(request_parameters, "binary_data_output")).unwrap_or(false)
}
