//! edgeinfer
/// The runtime.
pub const RUNTIME: &[u8] = include_bytes!(env!("EDGEINFER_RUNTIME_WASM"));
