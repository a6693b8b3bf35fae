//! Generates the Open Inference Protocol's gRPC service (`proto/grpc_service.proto`) with
//! tonic: compiled in pure Rust by protox (no protoc download).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../..");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("proto").display());
    compile_protos(&root, &out_dir)
}

/// Generates the gRPC service (proto/grpc_service.proto) with tonic, and writes its file
/// descriptor set for server reflection (`grpc_service_descriptor.bin`).
fn compile_protos(manifest_dir: &Path, out_dir: &Path) -> Result<()> {
    let protos = manifest_dir.join("proto");
    let files = protox::compile([protos.join("grpc_service.proto")], [&protos]).context("compiling proto/")?;
    std::fs::write(out_dir.join("grpc_service_descriptor.bin"), prost::Message::encode_to_vec(&files))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::grpc::codec::ClientFaultCodec")
        .compile_fds(files)
        .context("generating the gRPC service")
}
