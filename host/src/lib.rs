//! edgeinfer: serve ONNX models as sandboxed WebAssembly components.
//!
//! A library first: compile a model into a component, load a repository, run inferences
//! under per-request limits; the `edgeinfer` CLI and server are thin layers on top.
//!
//! ```no_run
//! use edgeinfer::{LimitOverrides, ModelRepository, Runtime, RuntimeConfig};
//! use edgeinfer_oip::{Datatype, Tensor};
//!
//! # fn main() -> edgeinfer::Result<()> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let repo = ModelRepository::open("repo")?;
//! let model = repo.load(&runtime, "digits", None)?;
//! let pixels = Tensor {
//!     name: "X".into(),
//!     datatype: Datatype::Fp32,
//!     shape: vec![1, 64],
//!     data: vec![0u8; 64 * 4],
//! };
//! let outcome = model.infer(vec![pixels], &[], LimitOverrides::default())?;
//! println!("{} outputs, {} fuel", outcome.outputs.len(), outcome.fuel_used);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod batch;
pub mod batching;
mod bindings;
pub mod capabilities;
mod class_labels;
mod code_cache;
pub mod compare;
pub mod compile;
mod cpu;
mod digest;
mod error;
pub mod limits;
pub mod manifest;
mod model;
pub mod monitor;
pub mod pipeline;
pub mod protocol;
pub mod repository;
mod runtime;
pub mod server;
mod shared_code;
pub mod signature;
mod store;

pub use capabilities::Capability;
pub use compile::{CompileRequest, RUNTIME_COMPONENT, compile_model};
pub use digest::sha256_hex;
pub use error::{Error, Result};
pub use limits::{LimitOverrides, Limits};
pub use manifest::Manifest;
pub use model::{InferOutcome, LoadedModel, ModelSession};
pub use repository::{ModelRepository, VersionRef};
pub use runtime::{Runtime, RuntimeConfig};
pub use store::NoOutgoingHttp;
