//! End-to-end tests: real components compiled from real ONNX models, run by real wasmtime.
//! One test binary so every fixture component is compiled once per run.

mod aarch64;
mod audit_chain;
mod batch;
mod batching;
mod cli;
mod common;
mod compile;
mod conformance;
mod data_protection;
mod deploy;
mod determinism;
mod docs;
mod grpc;
mod hostile;
mod http;
mod integrity;
mod invalid_input;
mod kernels;
mod layout;
mod metrics;
mod monitoring;
mod native_interference;
mod properties;
mod python;
mod reliability;
mod rollout;
mod security;
mod server;
mod signing;
mod sklearn;
mod soak;
mod text;
mod tls;
mod wasi_http;
mod zoo;
