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
    (batch.tiles() as u64).saturating_mul(FUEL_PER_TILE).saturating_add(batch.depth.saturating_mul(FUEL_PER_DEPTH))
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
            let mut out = vec![0f32; batch.tiles() * mmm::TILE];
            let (mut index, mut since_check) = (0, TILES_PER_DEADLINE_CHECK);
            while index < batch.tiles() {
                if since_check >= TILES_PER_DEADLINE_CHECK {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Trap::Interrupt.into());
                    }
                    since_check = 0;
                }
                let rest = &mut out[index * mmm::TILE..];
                if index + 1 < batch.tiles() && mmm::run_pair(memory, &batch, index, &mut rest[..2 * mmm::TILE]) {
                    index += 2;
                    since_check += 2;
                } else {
                    let tile: &mut [f32; mmm::TILE] =
                        (&mut rest[..mmm::TILE]).try_into().unwrap_or_else(|_| unreachable!("TILE floats"));
                    mmm::run_tile(memory, &batch, index, tile);
                    index += 1;
                    since_check += 1;
                }
            }
            Ok((out,))
        },
    )
}
