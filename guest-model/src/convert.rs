//! Conversions between WIT tensors (little-endian raw bytes) and tract tensors.

use crate::edgeinfer::inference::types::{Datatype, Tensor as WitTensor};
use tract_onnx::prelude::{DatumType, Tensor};

/// The tract datum type that carries a WIT datatype, if tract can run it.
pub fn datum_type(datatype: Datatype) -> Option<DatumType> {
    Some(match datatype {
        Datatype::Bool => DatumType::Bool,
        Datatype::Uint8 => DatumType::U8,
        Datatype::Uint16 => DatumType::U16,
        Datatype::Uint32 => DatumType::U32,
        Datatype::Uint64 => DatumType::U64,
        Datatype::Int8 => DatumType::I8,
        Datatype::Int16 => DatumType::I16,
        Datatype::Int32 => DatumType::I32,
        Datatype::Int64 => DatumType::I64,
        Datatype::Fp16 => DatumType::F16,
        Datatype::Fp32 => DatumType::F32,
        Datatype::Fp64 => DatumType::F64,
        Datatype::Bytes => DatumType::String,
    })
}

/// The WIT datatype a tract datum type is served as (`TDim` is served as INT64).
pub fn wit_datatype(datum_type: DatumType) -> Option<Datatype> {
    Some(match datum_type {
        DatumType::Bool => Datatype::Bool,
        DatumType::U8 => Datatype::Uint8,
        DatumType::U16 => Datatype::Uint16,
        DatumType::U32 => Datatype::Uint32,
        DatumType::U64 => Datatype::Uint64,
        DatumType::I8 => Datatype::Int8,
        DatumType::I16 => Datatype::Int16,
        DatumType::I32 => Datatype::Int32,
        DatumType::I64 | DatumType::TDim => Datatype::Int64,
        DatumType::F16 => Datatype::Fp16,
        DatumType::F32 => Datatype::Fp32,
        DatumType::F64 => Datatype::Fp64,
        DatumType::String => Datatype::Bytes,
        _ => return None,
    })
}

/// The Open Inference Protocol name of a datatype, for messages.
pub fn datatype_name(datatype: Datatype) -> &'static str {
    match datatype {
        Datatype::Bool => "BOOL",
        Datatype::Uint8 => "UINT8",
        Datatype::Uint16 => "UINT16",
        Datatype::Uint32 => "UINT32",
        Datatype::Uint64 => "UINT64",
        Datatype::Int8 => "INT8",
        Datatype::Int16 => "INT16",
        Datatype::Int32 => "INT32",
        Datatype::Int64 => "INT64",
        Datatype::Fp16 => "FP16",
        Datatype::Fp32 => "FP32",
        Datatype::Fp64 => "FP64",
        Datatype::Bytes => "BYTES",
    }
}

/// Splits BYTES data (items of a 4-byte little-endian length, then that many bytes) into
/// strings, checking there are exactly `count` items of UTF-8.
pub fn bytes_items(data: &[u8], count: usize) -> Result<Vec<String>, String> {
    let mut items = Vec::with_capacity(count.min(data.len() / 4));
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("BYTES data ends inside an item's length prefix")?;
        let len = u32::from_le_bytes(*len) as usize;
        let item = tail.get(..len).ok_or("BYTES data ends inside an item")?;
        items.push(String::from_utf8(item.to_vec()).map_err(|_| format!("BYTES item {} is not UTF-8", items.len()))?);
        rest = &tail[len..];
    }
    if items.len() != count {
        return Err(format!("BYTES data holds {} items but the shape needs {count}", items.len()));
    }
    Ok(items)
}

/// Builds a tract tensor from raw little-endian bytes whose length was already checked
/// (BYTES: length-prefixed UTF-8 items, checked here).
pub fn to_tract(datum_type: DatumType, shape: &[usize], data: &[u8]) -> Result<Tensor, String> {
    if datum_type == DatumType::String {
        let items = bytes_items(data, shape.iter().product())?;
        let array =
            tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(shape, items).map_err(|e| e.to_string())?;
        return Ok(array.into());
    }
    // SAFETY: `from_raw_dt` copies `data` into an aligned buffer after checking that its
    // length equals the shape's element count times the datum size; every bit pattern is a
    // valid value of the numeric types we accept (bools are normalized below).
    let mut tensor = unsafe { Tensor::from_raw_dt(datum_type, shape, data) }.map_err(|e| format!("{e:#}"))?;
    if datum_type == DatumType::Bool {
        // Any non-zero byte is true; keep the representation canonical for tract.
        for byte in tensor.as_bytes_mut() {
            *byte = u8::from(*byte != 0);
        }
    }
    Ok(tensor)
}

/// Turns a tract output into a WIT tensor, casting `TDim` to INT64.
pub fn from_tract(name: String, tensor: &Tensor) -> Result<WitTensor, String> {
    let datatype = wit_datatype(tensor.datum_type())
        .ok_or_else(|| format!("output {name} has unsupported type {:?}", tensor.datum_type()))?;
    if datatype == Datatype::Bytes {
        let mut data = Vec::new();
        for item in tensor.to_plain_array_view::<String>().map_err(|e| format!("output {name}: {e:#}"))?.iter() {
            let len = u32::try_from(item.len()).map_err(|_| format!("output {name} has an item over 4 GiB"))?;
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(item.as_bytes());
        }
        let shape = tensor.shape().iter().map(|&d| d as u64).collect();
        return Ok(WitTensor { name, datatype, shape, data });
    }
    let served = datum_type(datatype).unwrap_or(DatumType::I64);
    let cast = tensor.cast_to_dt(served).map_err(|e| format!("output {name}: {e:#}"))?;
    Ok(WitTensor {
        name,
        datatype,
        shape: cast.shape().iter().map(|&d| d as u64).collect(),
        data: cast.as_bytes().to_vec(),
    })
}
