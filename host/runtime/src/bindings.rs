//! Host bindings for the `edgeinfer:inference` WIT package and conversions to protocol types.

#![allow(missing_docs)]

use edgeinfer_oip::{Datatype as OipDatatype, Tensor as OipTensor};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "model-component",
});

pub use self::edgeinfer::inference::types::{Datatype, Error as GuestError, Tensor, TensorSpec};

impl From<OipDatatype> for Datatype {
    fn from(datatype: OipDatatype) -> Self {
        match datatype {
            OipDatatype::Bool => Datatype::Bool,
            OipDatatype::Uint8 => Datatype::Uint8,
            OipDatatype::Uint16 => Datatype::Uint16,
            OipDatatype::Uint32 => Datatype::Uint32,
            OipDatatype::Uint64 => Datatype::Uint64,
            OipDatatype::Int8 => Datatype::Int8,
            OipDatatype::Int16 => Datatype::Int16,
            OipDatatype::Int32 => Datatype::Int32,
            OipDatatype::Int64 => Datatype::Int64,
            OipDatatype::Fp16 => Datatype::Fp16,
            OipDatatype::Fp32 => Datatype::Fp32,
            OipDatatype::Fp64 => Datatype::Fp64,
            OipDatatype::Bytes => Datatype::Bytes,
        }
    }
}

impl From<Datatype> for OipDatatype {
    fn from(datatype: Datatype) -> Self {
        match datatype {
            Datatype::Bool => OipDatatype::Bool,
            Datatype::Uint8 => OipDatatype::Uint8,
            Datatype::Uint16 => OipDatatype::Uint16,
            Datatype::Uint32 => OipDatatype::Uint32,
            Datatype::Uint64 => OipDatatype::Uint64,
            Datatype::Int8 => OipDatatype::Int8,
            Datatype::Int16 => OipDatatype::Int16,
            Datatype::Int32 => OipDatatype::Int32,
            Datatype::Int64 => OipDatatype::Int64,
            Datatype::Fp16 => OipDatatype::Fp16,
            Datatype::Fp32 => OipDatatype::Fp32,
            Datatype::Fp64 => OipDatatype::Fp64,
            Datatype::Bytes => OipDatatype::Bytes,
        }
    }
}

/// The WIT interface every model component exports (`infer` and `metadata`).
pub const MODEL_INTERFACE: &str = "edgeinfer:inference/model@0.1.0";

/// An input tensor lowered into the guest as the WIT `tensor` record straight from the
/// host's buffers (the request body, for binary inputs): the only copy of its data between
/// the socket and the guest is the one into the guest's memory.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct TensorView<'a> {
    name: &'a str,
    datatype: Datatype,
    shape: &'a [u64],
    data: &'a [u8],
}

impl<'a> From<&'a OipTensor> for TensorView<'a> {
    fn from(t: &'a OipTensor) -> Self {
        TensorView { name: &t.name, datatype: t.datatype.into(), shape: &t.shape, data: &t.data }
    }
}

/// The per-node profiling interface (exported by model components built from this runtime,
/// outside the serving world).
pub const PROFILING_INTERFACE: &str = "edgeinfer:inference/profiling@0.1.0";

/// One node of a model's plan, as `profiling.start` lists them.
#[derive(Debug, Clone, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct PlanNode {
    pub name: String,
    pub op: String,
}

/// `profiling.start` called with borrowed inputs.
pub type ProfileStartFunc<'a, 'b> =
    wasmtime::component::TypedFunc<(&'a [TensorView<'b>],), (Result<Vec<PlanNode>, GuestError>,)>;

/// `profiling.step`.
pub type ProfileStepFunc = wasmtime::component::TypedFunc<(), (Result<bool, GuestError>,)>;

/// `infer` called with borrowed inputs (see [`TensorView`]).
pub type InferFunc<'a, 'b> =
    wasmtime::component::TypedFunc<(&'a [TensorView<'b>], &'a [String]), (Result<Vec<Tensor>, GuestError>,)>;

impl From<Tensor> for OipTensor {
    fn from(t: Tensor) -> Self {
        // The guest's output buffer becomes the tensor's (no copy).
        OipTensor { name: t.name, datatype: t.datatype.into(), shape: t.shape, data: t.data.into() }
    }
}
