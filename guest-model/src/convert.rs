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
        Datatype::Bytes => return None,
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

/// Builds a tract tensor from raw little-endian bytes whose length was already checked.
pub fn to_tract(datum_type: DatumType, shape: &[usize], data: &[u8]) -> Result<Tensor, String> {
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
    let served = datum_type(datatype).unwrap_or(DatumType::I64);
    let cast = tensor.cast_to_dt(served).map_err(|e| format!("output {name}: {e:#}"))?;
    Ok(WitTensor {
        name,
        datatype,
        shape: cast.shape().iter().map(|&d| d as u64).collect(),
        data: cast.as_bytes().to_vec(),
    })
}
