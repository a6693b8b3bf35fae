//! Builds the generic model runtime (`guest-model/`) for `wasm32-wasip2` once, in release,
//! strips the WASI imports a model never needs, and turns it into the component that the
//! `edgeinfer` binary ships (`EDGEINFER_RUNTIME_WASM`).
//!
//! Set `EDGEINFER_RUNTIME_CORE_WASM` to a prebuilt guest core module to skip the guest build.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Import modules a model component keeps: streams, randomness (hash seeds), stdio, and
/// the `wasi:http` types its HTTP handler (Spin's `#[http_component]`) answers with: all
/// inside the `wasi:http/proxy` world, so any wasi:http host can run the component.
const KEPT_IMPORTS: &[&str] = &[
    "wasi:io/",
    "wasi:http/types@",
    "wasi:random/random@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "edgeinfer:",
    "[export]edgeinfer:",
    "$root",
];

/// Getters the standard library may call whose stubs answer "nothing here" by zeroing
/// their return area (empty list, `none`, the epoch) instead of trapping.
const ZEROED_GETTERS: &[(&str, u64)] = &[
    ("get-environment", 8),
    ("get-arguments", 8),
    ("initial-cwd", 12),
    ("get-directories", 8),
    ("get-terminal-stdin", 8),
    ("get-terminal-stdout", 8),
    ("get-terminal-stderr", 8),
    ("now", 16),
    ("resolution", 16),
];

use sha2::{Digest, Sha256};

fn main() -> Result<()> {
    // host/runtime -> the workspace root, where guest-model/, wit/ and vendor/ live.
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../..");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-env-changed=EDGEINFER_RUNTIME_CORE_WASM");
    for watched in ["guest-model", "wit", "vendor", ".cargo/config.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", manifest_dir.join(watched).display());
    }
    let core_path = match std::env::var_os("EDGEINFER_RUNTIME_CORE_WASM") {
        Some(path) => PathBuf::from(path),
        None => build_guest(&manifest_dir, &out_dir)?,
    };
    let core = std::fs::read(&core_path).with_context(|| format!("reading {}", core_path.display()))?;
    let stripped = stub_denied_imports(&core)?;
    let component = wit_component::ComponentEncoder::default()
        .module(&stripped)?
        .validate(true)
        .encode()
        .context("encoding the runtime component")?;
    let runtime = out_dir.join("edgeinfer-runtime.wasm");
    std::fs::write(&runtime, &component)?;
    println!("cargo:rustc-env=EDGEINFER_RUNTIME_WASM={}", runtime.display());
    // Its digest, so nothing hashes 24 MB of the binary at run time to learn it.
    let digest: String = Sha256::digest(&component).iter().map(|byte| format!("{byte:02x}")).collect();
    println!("cargo:rustc-env=EDGEINFER_RUNTIME_SHA256={digest}");
    Ok(())
}

/// Runs cargo for the guest in its own target directory under the workspace's target
/// directory, so it is built once and shared by every host profile.
fn build_guest(manifest_dir: &Path, out_dir: &Path) -> Result<PathBuf> {
    // OUT_DIR is <target>/<profile>/build/<pkg>/out (or <target>/<triple>/<profile>/...).
    let target_dir = out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.join("target"));
    let guest_target = target_dir.join("guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(manifest_dir)
        .args(["build", "-p", "edgeinfer-guest-model", "--target", "wasm32-wasip2", "--profile", "guest"])
        .arg("--target-dir")
        .arg(&guest_target);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_LLVM_COV",
        "__CARGO_FIX_PLZ",
    ] {
        command.env_remove(var);
    }
    let status = command.status().context("running cargo for the guest runtime")?;
    if !status.success() {
        bail!(
            "building guest-model for wasm32-wasip2 failed ({status}); is the target installed? \
             run `rustup target add wasm32-wasip2`"
        );
    }
    Ok(guest_target.join("wasm32-wasip2/guest/edgeinfer_guest_model.wasm"))
}

/// Replaces every import outside [`KEPT_IMPORTS`] by a local stub, so the component
/// imports no filesystem, environment, clock or exit capability at all.
fn stub_denied_imports(core: &[u8]) -> Result<Vec<u8>> {
    let mut module = walrus::Module::from_buffer(core).context("parsing the guest core module")?;
    let memory = module.memories.iter().next().map(|m| m.id()).context("guest has no memory")?;
    let denied: Vec<(walrus::FunctionId, String)> = module
        .imports
        .iter()
        .filter(|import| !KEPT_IMPORTS.iter().any(|kept| import.module.starts_with(kept)))
        .filter_map(|import| match import.kind {
            walrus::ImportKind::Function(id) => Some((id, import.name.clone())),
            _ => None,
        })
        .collect();
    // `wasi:random/insecure-seed` (std's hash keys) is outside the proxy world: answer it
    // from `wasi:random/random` instead.
    let random_u64 = module
        .imports
        .iter()
        .find(|i| i.module.starts_with("wasi:random/random@") && i.name == "get-random-u64")
        .and_then(|i| match i.kind {
            walrus::ImportKind::Function(id) => Some(id),
            _ => None,
        });
    for (id, name) in denied {
        let ty = module.types.get(module.funcs.get(id).ty());
        let (params, results) = (ty.params().to_vec(), ty.results().to_vec());
        let zeroed = ZEROED_GETTERS.iter().find(|(getter, _)| *getter == name).map(|(_, size)| *size);
        let from_random = if name == "insecure-seed" { random_u64 } else { None };
        module.replace_imported_func(id, |(body, args)| {
            match (from_random, zeroed, params.as_slice(), results.as_slice()) {
                (Some(random), _, [walrus::ValType::I32], []) => {
                    for offset in [0, 8] {
                        body.local_get(args[0]).call(random).store(
                            memory,
                            walrus::ir::StoreKind::I64 { atomic: false },
                            walrus::ir::MemArg { align: 8, offset },
                        );
                    }
                }
                (None, Some(size), [walrus::ValType::I32], []) => {
                    for offset in (0..size).step_by(4) {
                        body.local_get(args[0]).i32_const(0).store(
                            memory,
                            walrus::ir::StoreKind::I32 { atomic: false },
                            walrus::ir::MemArg { align: 4, offset },
                        );
                    }
                }
                (None, Some(_), [], [walrus::ValType::I64]) => {
                    body.i64_const(0);
                }
                _ => {
                    body.unreachable();
                }
            }
        })?;
    }
    Ok(module.emit_wasm())
}
