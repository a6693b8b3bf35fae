//! Hostile components written in WAT: each fails with its typed error, and the next good
//! request succeeds.

use std::path::{Path, PathBuf};

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::manifest::{ComponentInfo, Manifest, SourceInfo};
use edgeinfer_runtime::{Error, LimitOverrides, Limits, LoadedModel, sha256_hex};

use crate::common::*;

/// A core module implementing the model world's canonical ABI; `$body` is what `infer` does.
pub fn hostile_core(body: &str, extra: &str) -> String {
    format!(
        r#"(module
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 4096))
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $ptr i32)
            (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
            (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
            (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
              (then (drop (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16)) (i32.const 1))))))
            (local.get $ptr))
          (func (export "edgeinfer:inference/model@0.1.0#metadata") (result i32) (i32.const 1024))
          (func (export "edgeinfer:inference/model@0.1.0#infer") (param i32 i32 i32 i32) (result i32)
            {body}
            (i32.const 2048))
          (func (export "edgeinfer:inference/setup@0.1.0#load") (param i32 i32 i32 i32 i32 i32) (result i32)
            unreachable)
          {extra}
        )"#
    )
}

/// Turns a core module into a component of the `model-component` world.
pub fn componentize(core_wat: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) =
        resolve.push_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("wit")).expect("wit");
    let world = resolve.select_world(&[package], Some("model-component")).expect("world");
    let mut module = wat::parse_str(core_wat).expect("wat");
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)
        .expect("embed");
    wit_component::ComponentEncoder::default().module(&module).expect("module").validate(true).encode().expect("encode")
}

/// Writes a version directory with a correct manifest for `wasm`.
pub fn install(dir: &Path, wasm: &[u8], limits: Limits) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("model.wasm"), wasm).expect("write");
    let manifest = Manifest {
        format: 1,
        name: dir.parent().and_then(|p| p.file_name()).map_or("hostile".into(), |n| n.to_string_lossy().into_owned()),
        version: dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).unwrap_or(1),
        created_at: "2026-11-25T00:00:00Z".into(),
        component: ComponentInfo { file: "model.wasm".into(), sha256: sha256_hex(wasm), runtime_sha256: String::new() },
        source: SourceInfo { file: "hostile.wat".into(), sha256: String::new() },
        limits,
        grants: vec![],
        inputs: vec![],
        outputs: vec![],
        examples: vec![],
        reference: None,
    };
    manifest.save(&dir.join("manifest.toml")).expect("manifest");
    dir.to_path_buf()
}

fn load_hostile(body: &str, extra: &str, limits: Limits) -> (tempfile::TempDir, LoadedModel) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = install(&temp.path().join("hostile/1"), &componentize(&hostile_core(body, extra)), limits);
    let model = LoadedModel::load(&runtime(), &dir).expect("a hostile but well-formed component loads");
    (temp, model)
}

fn one_input() -> Vec<Tensor> {
    vec![Tensor {
        name: "x".into(),
        datatype: Datatype::Fp32,
        shape: vec![1],
        data: 1f32.to_le_bytes().to_vec().into(),
    }]
}

pub const INFINITE_LOOP: &str = "(loop $forever (br $forever))";

#[test]
fn infinite_loop_is_stopped_by_fuel() {
    let limits = Limits { fuel: 5_000_000, timeout_ms: 60_000, memory_mb: 64 };
    let (_dir, model) = load_hostile(INFINITE_LOOP, "", limits);
    let error = model.infer(one_input(), &[], LimitOverrides::default()).expect_err("must fail");
    assert!(matches!(error, Error::FuelExhausted { budget: 5_000_000 }), "{error:?}");
    assert!(error.to_string().contains("fuel exhausted"));
    assert_digits_still_serve();
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let limits = Limits { fuel: u64::MAX / 2, timeout_ms: 200, memory_mb: 64 };
    let (_dir, model) = load_hostile(INFINITE_LOOP, "", limits);
    let started = std::time::Instant::now();
    let error = model.infer(one_input(), &[], LimitOverrides::default()).expect_err("must fail");
    assert!(matches!(error, Error::DeadlineExceeded { timeout_ms: 200 }), "{error:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the deadline did stop it");
    // The same component with a per-request override.
    let error = model
        .infer(one_input(), &[], LimitOverrides { timeout_ms: Some(50), ..Default::default() })
        .expect_err("must fail");
    assert!(matches!(error, Error::DeadlineExceeded { timeout_ms: 50 }), "{error:?}");
    assert_digits_still_serve();
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    let bomb = "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
    let limits = Limits { fuel: 1_000_000_000, timeout_ms: 10_000, memory_mb: 32 };
    let (_dir, model) = load_hostile(bomb, "", limits);
    let error = model.infer(one_input(), &[], LimitOverrides::default()).expect_err("must fail");
    assert!(matches!(error, Error::MemoryLimit { limit_mb: 32 }), "{error:?}");
    assert_digits_still_serve();
}

#[test]
fn deep_recursion_traps_with_stack_overflow() {
    let extra = "(func $deeper (param i32) (result i32) (call $deeper (i32.add (local.get 0) (i32.const 1))))";
    let limits = Limits { fuel: 10_000_000_000, timeout_ms: 10_000, memory_mb: 64 };
    let (_dir, model) = load_hostile("(drop (call $deeper (i32.const 0)))", extra, limits);
    let error = model.infer(one_input(), &[], LimitOverrides::default()).expect_err("must fail");
    assert!(matches!(error, Error::GuestTrap(_)), "{error:?}");
    assert!(error.to_string().contains("stack"), "{error}");
    // A trapped instance is never reused: the next call on the same model gets a fresh one.
    let again = model.infer(one_input(), &[], LimitOverrides::default()).expect_err("must fail");
    assert!(again.to_string().contains("stack"), "{again}");
    assert_digits_still_serve();
}

#[test]
fn filesystem_import_is_refused_before_compiling() {
    let wasm = wat::parse_str(
        r#"(component
             (import "wasi:filesystem/preopens@0.2.4" (instance
               (export "get-directories" (func (result (list string))))))
           )"#,
    )
    .expect("wat");
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = install(&temp.path().join("fs/1"), &wasm, Limits::default());
    let error = LoadedModel::load(&runtime(), &dir).err().expect("must be refused");
    assert!(matches!(error, Error::CapabilityRefused(_)), "{error:?}");
    assert!(error.to_string().contains("wasi:filesystem/preopens"), "{error}");
    assert!(error.to_string().contains("filesystem"), "{error}");
    assert_digits_still_serve();
}

#[test]
fn core_module_instead_of_component_is_refused() {
    let wasm = wat::parse_str("(module)").expect("wat");
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = install(&temp.path().join("core/1"), &wasm, Limits::default());
    let error = LoadedModel::load(&runtime(), &dir).err().expect("must be refused");
    assert!(error.to_string().contains("core module"), "{error}");
}

/// An `infer` that returns `count` output tensors whose data all alias the first 64 KiB of
/// memory: `count` x 64 KiB for a host that copies them blindly.
fn aliasing_outputs(count: u32) -> String {
    format!(
        "(local $i i32) (local $p i32)
         (drop (memory.grow (i32.const 3)))
         (local.set $p (i32.const 8192))
         (block $done (loop $fill
           (br_if $done (i32.ge_u (local.get $i) (i32.const {count})))
           (i32.store offset=20 (local.get $p) (i32.const 0))
           (i32.store offset=24 (local.get $p) (i32.const 65536))
           (local.set $p (i32.add (local.get $p) (i32.const 28)))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br $fill)))
         (i32.store8 (i32.const 2048) (i32.const 0))
         (i32.store (i32.const 2052) (i32.const 8192))
         (i32.store (i32.const 2056) (i32.const {count}))"
    )
}

#[test]
fn aliased_outputs_are_capped_before_the_host_copies_them() {
    let limits = Limits { fuel: 1_000_000_000, timeout_ms: 10_000, memory_mb: 16 };
    // 1,000 x 64 KiB = 62.5 MiB of outputs from a 256 KiB memory: over the 16 MiB cap.
    let (_dir, model) = load_hostile(&aliasing_outputs(1000), "", limits);
    let error = model.infer(one_input(), &[], LimitOverrides::default()).expect_err("must fail");
    assert!(matches!(error, Error::OutputLimit(_)), "{error:?}");
    assert!(error.to_string().contains("exceed 16777216 bytes, its memory cap"), "{error}");
    // Within the cap, the same aliasing outputs are copied (200 x 64 KiB = 12.5 MiB).
    let (_dir, model) = load_hostile(&aliasing_outputs(200), "", limits);
    let outcome = model.infer(one_input(), &[], LimitOverrides::default()).expect("under the cap");
    assert_eq!(outcome.outputs.len(), 200);
    assert!(outcome.outputs.iter().all(|t| t.data.len() == 65536));
    assert_digits_still_serve();
}

#[test]
fn the_memory_cap_covers_all_of_a_components_memories() {
    // Each memory alone stays under the 16 MiB cap (10 MiB each); together they do not.
    let grow_both = "(drop (memory.grow (i32.const 160))) (drop (memory.grow $second (i32.const 160)))";
    let limits = Limits { fuel: 1_000_000_000, timeout_ms: 10_000, memory_mb: 16 };
    let (_dir, model) = load_hostile(grow_both, "(memory $second 1)", limits);
    let error = model.infer(one_input(), &[], LimitOverrides::default()).expect_err("must fail");
    assert!(matches!(error, Error::MemoryLimit { limit_mb: 16 }), "{error:?}");
    // With a cap that fits both, the same component runs.
    let roomy = LimitOverrides { memory_mb: Some(32), ..Default::default() };
    let outcome = model.infer(one_input(), &[], roomy).expect("both memories fit in 32 MiB");
    assert!(outcome.outputs.is_empty());
    assert_digits_still_serve();
}
