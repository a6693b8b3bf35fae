//! Native kernels under the sandbox's control.
//!
//! The model's graph stays in the sandbox (parsing, planning, control flow, small operators);
//! the heavy arithmetic its matrix products lower to runs here, natively, behind one narrow
//! entry point the host fully controls:
//!
//! - the guest runtime batches the tiles of tract's 8x8 f32 kernel and calls one exported
//!   function, `edgeinfer_mmm_f32_8x8_tiles` (vendor/tract-linalg/src/wasm/tile_batch.rs),
//!   whose wasm body computes them. The component file carries that body and runs unchanged
//!   under any wasi:http host;
//! - when this host loads a model, [`link`] rewrites the shared code module so that function
//!   calls [`COMPONENT_IMPORT`] instead, and the model's shell lowers that import with the
//!   model's memory (see `shared_code`). The untrusted model never chooses code, only
//!   offsets and shapes, and [`mmm`] checks every one of them against the memory's size
//!   before computing;
//! - the native code gives the wasm body's bits (unfused multiply then add, `k` in order), so
//!   an output never depends on the host or the CPU; fuel is charged per call in proportion
//!   to the work ([`fuel_cost`]), the deadline is checked between tiles, and nothing the
//!   guest cannot already reach is touched (the tiles come back through the canonical ABI).

pub(crate) mod link;
pub mod mmm;

use std::time::Instant;

use wasmtime::component::{Linker, WasmList};
use wasmtime::{StoreContextMut, Trap};

use crate::store::StoreState;

/// The component-level import a model's shell lowers for the native tile kernel.
pub const COMPONENT_IMPORT: &str = "edgeinfer-native-mmm-f32-8x8";

/// The guest export whose body [`link`] replaces.
pub const GUEST_EXPORT: &str = "edgeinfer_mmm_f32_8x8_tiles";

/// Tiles between two deadline checks (8 tiles at k = 4608 are about 2.4 M multiply-adds).
const TILES_PER_DEADLINE_CHECK: usize = 8;

/// Fuel per tile whatever its depth: what the wasm body spends reading and dispatching one
/// tile's list, its fused operations and storing its result. Fitted with [`FUEL_PER_DEPTH`]
/// to the wasm kernels' fuel on the digits MLP (45 tiles, depth 2,880) and SqueezeNet
/// (44,604 tiles, depth 5.4 M); `determinism.rs` holds every fixture within 10%.
pub const FUEL_PER_TILE: u64 = 1274;

/// Fuel per step of `k` in a tile (64 multiply-adds): what the wasm body's inner loop spends.
pub const FUEL_PER_DEPTH: u64 = 144;

/// The fuel a batch costs: the same, within 10%, as running it in wasm.
pub fn fuel_cost(batch: &mmm::Batch) -> u64 {
    (batch.ends.len() as u64).saturating_mul(FUEL_PER_TILE).saturating_add(batch.depth.saturating_mul(FUEL_PER_DEPTH))
}

/// Defines [`COMPONENT_IMPORT`] in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.root().func_wrap(
        COMPONENT_IMPORT,
        |mut store: StoreContextMut<'_, StoreState>, (memory, specs, tiles, out): (WasmList<u8>, u32, u32, u32)| {
            let batch = mmm::parse(memory.as_le_slice(&store), specs, tiles, out)?;
            if let Ok(fuel) = store.get_fuel() {
                let cost = fuel_cost(&batch);
                if cost > fuel {
                    store.set_fuel(0)?;
                    return Err(Trap::OutOfFuel.into());
                }
                store.set_fuel(fuel - cost)?;
            }
            let deadline = store.data().deadline;
            let memory = memory.as_le_slice(&store);
            let mut out = vec![0f32; batch.ends.len() * mmm::TILE];
            for (index, tile) in out.chunks_exact_mut(mmm::TILE).enumerate() {
                if index % TILES_PER_DEADLINE_CHECK == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Trap::Interrupt.into());
                }
                let tile: &mut [f32; mmm::TILE] = tile.try_into().unwrap_or_else(|_| unreachable!("chunks of TILE"));
                mmm::run_tile(memory, &batch, index, tile);
            }
            Ok((out,))
        },
    )
}

#[cfg(test)]
mod tests {
    use crate::runtime::{Runtime, RuntimeConfig};
    use crate::store::StoreState;

    /// A model-shaped component (one module defining a memory with data) whose kernel export
    /// a `run(specs, tiles, out)` function calls: the host links it natively, so whatever
    /// `run` passes reaches the host's checks.
    fn hostile_component() -> Vec<u8> {
        // At 0: Clear, AddMatMul { k: 2, a: 1024, b: 1024 }, Done. At 64: AddMatMul reading
        // past the end of memory. At 128: a tag the batch refuses (Store).
        let spec = |tag: u32, words: [u32; 4]| {
            let mut bytes = tag.to_le_bytes().to_vec();
            words.iter().for_each(|w| bytes.extend(w.to_le_bytes()));
            bytes
        };
        let mut good = spec(1, [0; 4]);
        good.extend(spec(28, [2, 1024, 1024, 0]));
        good.extend(spec(0, [0; 4]));
        let escape = |bytes: &[u8]| bytes.iter().map(|b| format!("\\{b:02x}")).collect::<String>();
        let past_end = spec(28, [100, 65_000, 1024, 0]);
        let refused = spec(27, [0; 4]);
        let ones = escape(&1f32.to_le_bytes().repeat(16));
        wat::parse_str(format!(
            r#"(component
                (core module $m
                  (memory (export "memory") 1)
                  (data (i32.const 0) "{good}")
                  (data (i32.const 64) "{past_end}")
                  (data (i32.const 128) "{refused}")
                  (data (i32.const 1024) "{ones}")
                  (func $kernel (export "{export}") (param i32 i32 i32 i32) (result i32) (i32.const 1))
                  (func (export "run") (param i32 i32 i32) (result f32)
                    (drop (call $kernel (local.get 0) (local.get 1) (local.get 2) (i32.const 16384)))
                    (f32.load (local.get 2)))
                  (func (export "grow") (result i32) (memory.grow (i32.const 1))))
                (core instance $i (instantiate $m))
                (func (export "run") (param "specs" u32) (param "tiles" u32) (param "out" u32) (result f32)
                  (canon lift (core func $i "run")))
                (func (export "grow") (result s32) (canon lift (core func $i "grow"))))"#,
            good = escape(&good),
            past_end = escape(&past_end),
            refused = escape(&refused),
            export = super::GUEST_EXPORT,
        ))
        .expect("wat")
    }

    #[test]
    fn hostile_kernel_calls_trap_with_a_clear_error_and_the_host_carries_on() {
        let cache = tempfile::tempdir().expect("cache dir");
        let runtime = Runtime::new(RuntimeConfig { cache_dir: cache.path().to_path_buf(), ..RuntimeConfig::default() })
            .expect("runtime");
        let wasm = hostile_component();
        let pre = runtime.prepare(&wasm, &crate::sha256_hex(&wasm)).expect("prepared");
        assert!(
            pre.component().component_type().imports(runtime.engine()).any(|(name, _)| name == super::COMPONENT_IMPORT),
            "the kernel is linked to the host"
        );
        let call = |args: (u32, u32, u32)| -> Result<f32, String> {
            let mut store = wasmtime::Store::new(runtime.engine(), StoreState::new(64 << 20));
            store.set_epoch_deadline(1 << 40);
            store.set_fuel(1 << 40).map_err(|e| format!("{e:#}"))?;
            let instance = pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
            let run =
                instance.get_typed_func::<(u32, u32, u32), (f32,)>(&mut store, "run").map_err(|e| format!("{e:#}"))?;
            run.call(&mut store, args).map(|(v,)| v).map_err(|e| format!("{e:#}"))
        };
        // A good tile: 2 steps of 1 x 1, so every element is 2.
        assert_eq!(call((0, 1, 8192)), Ok(2.0));
        let refusals = [
            ((64, 1, 8192), "packed A panel at offset 65000"),
            ((128, 1, 8192), "operation tag 27"),
            ((65_530, 1, 8192), "operation list at offset 65530"),
            ((0, 1, 65_500), "output at offset 65500"),
            ((0, 1, 1000), "overlaps the packed A panel"),
            ((0, 5000, 8192), "5000 tiles in one call"),
            ((0, u32::MAX, 8192), "tiles in one call"),
        ];
        for (args, expected) in refusals {
            let error = call(args).map(|v| format!("answered {v}")).expect_err(&format!("{args:?} traps"));
            assert!(error.contains(expected), "{args:?}: {error}");
        }
        // The host is unharmed: the good call still answers.
        assert_eq!(call((0, 1, 8192)), Ok(2.0));
    }

    #[test]
    fn the_kernel_sees_memory_grown_before_the_call_and_nothing_beyond() {
        let cache = tempfile::tempdir().expect("cache dir");
        let runtime = Runtime::new(RuntimeConfig { cache_dir: cache.path().to_path_buf(), ..RuntimeConfig::default() })
            .expect("runtime");
        let wasm = hostile_component();
        let pre = runtime.prepare(&wasm, &crate::sha256_hex(&wasm)).expect("prepared");
        let mut store = wasmtime::Store::new(runtime.engine(), StoreState::new(64 << 20));
        store.set_epoch_deadline(1 << 40);
        store.set_fuel(1 << 40).expect("fuel");
        let instance = pre.instantiate(&mut store).expect("instance");
        let run = instance.get_typed_func::<(u32, u32, u32), (f32,)>(&mut store, "run").expect("run");
        let grow = instance.get_typed_func::<(), (i32,)>(&mut store, "grow").expect("grow");
        let error =
            run.call(&mut store, (0, 1, 70_000)).expect_err("an output in the second page traps before it exists");
        assert!(format!("{error:#}").contains("output at offset 70000"), "{error:#}");
        let mut store = wasmtime::Store::new(runtime.engine(), StoreState::new(64 << 20));
        store.set_epoch_deadline(1 << 40);
        store.set_fuel(1 << 40).expect("fuel");
        let instance = pre.instantiate(&mut store).expect("instance");
        let run = instance.get_typed_func::<(u32, u32, u32), (f32,)>(&mut store, "run").expect("run");
        let grow = {
            let _ = grow;
            instance.get_typed_func::<(), (i32,)>(&mut store, "grow").expect("grow")
        };
        assert_eq!(grow.call(&mut store, ()).expect("grows").0, 1);
        assert_eq!(run.call(&mut store, (0, 1, 70_000)).expect("the grown page is in view").0, 2.0);
    }
}
