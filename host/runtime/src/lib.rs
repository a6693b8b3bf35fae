//! edgeinfer-runtime: ONNX models as sandboxed WebAssembly components, without a server.
//!
//! Compile a model into a component, verify and load a repository, run inferences under
//! per-request limits (fuel, deadline, memory). The monitor, batch and server crates and the
//! `edgeinfer` CLI are layers on top; this crate knows no HTTP, TLS, metrics or file formats.
//!
//! ```no_run
//! use edgeinfer_runtime::{LimitOverrides, ModelRepository, Runtime, RuntimeConfig};
//! use edgeinfer_oip::{Datatype, Tensor};
//!
//! # fn main() -> edgeinfer_runtime::Result<()> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let repo = ModelRepository::open("repo")?;
//! let model = repo.load(&runtime, "digits", None)?;
//! let pixels = Tensor {
//!     name: "X".into(),
//!     datatype: Datatype::Fp32,
//!     shape: vec![1, 64],
//!     data: vec![0u8; 64 * 4].into(),
//! };
//! let outcome = model.infer(vec![pixels], &[], LimitOverrides::default())?;
//! println!("{} outputs, {} fuel", outcome.outputs.len(), outcome.fuel_used);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod bindings;
pub mod capabilities;
mod class_labels;
pub mod clock;
pub mod coalesce;
mod code_cache;
pub mod compare;
pub mod compile;
pub mod cpu;
pub mod digest;
mod error;
pub mod features;
mod http_stubs;
pub mod kernels;
pub mod limits;
pub mod manifest;
pub mod model;
pub mod pipeline;
pub mod protocol;
pub mod reference;
pub mod repository;
pub mod runtime;
mod shared_code;
pub mod signature;
mod store;

pub use capabilities::Capability;
pub use compile::{CompileRequest, RUNTIME_COMPONENT, RUNTIME_SHA256, TextInput, compile_model};
pub use digest::sha256_hex;
pub use error::{Error, Result};
pub use limits::{LimitOverrides, Limits};
pub use manifest::Manifest;
pub use model::{InferOutcome, LoadedModel, ModelSession, NodeTime, VerifiedComponent};
pub use repository::{ModelRepository, VersionRef};
pub use runtime::{Runtime, RuntimeConfig};
