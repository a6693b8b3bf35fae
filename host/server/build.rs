//! Generates the Open Inference Protocol's gRPC service (`proto/grpc_service.proto`) with
//! tonic: compiled in pure Rust by protox (no protoc download).

use anyhow::Result;

#[cfg(feature = "grpc")]
fn main() -> Result<()> {
    use std::path::PathBuf;
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../..");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("proto").display());
    compile_protos(&root, &out_dir)
}

/// Without the `grpc` feature there is nothing to generate.
#[cfg(not(feature = "grpc"))]
fn main() -> Result<()> {
    Ok(())
}

/// Generates the gRPC service (proto/grpc_service.proto) with tonic, and writes its file
/// descriptor set for server reflection (`grpc_service_descriptor.bin`).
#[cfg(feature = "grpc")]
fn compile_protos(manifest_dir: &std::path::Path, out_dir: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    let protos = manifest_dir.join("proto");
    let files = protox::compile([protos.join("grpc_service.proto")], [&protos]).context("compiling proto/")?;
    std::fs::write(out_dir.join("grpc_service_descriptor.bin"), prost::Message::encode_to_vec(&files))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::grpc::codec::ClientFaultCodec")
        // Raw tensor data as `Bytes`: views of the received message, not copies.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(files)
        .context("generating the gRPC service")
}
