//! edgeinfer patch: the valid tiles of `wasm_f32_8x8` are queued and run in batches through
//! one exported entry point, [`edgeinfer_mmm_f32_8x8_tiles`], so an embedding host can link
//! a native implementation of the same arithmetic in its place (edgeinfer's host does, see
//! `host/runtime/src/kernels/`); every other host runs the wasm body below.
//!
//! The contract both implementations keep, bit for bit:
//!
//! - `specs` holds `tiles` operation lists back to back, each ended by `Done`, of at most
//!   [`MAX_OPS`] operations taken from [`batchable`] (no `Store`, no quantization steps);
//! - each list runs on an 8x8 accumulator starting at zero, exactly as `kernel_f32_8x8` does
//!   (unfused multiply then add, `k` in order); the accumulator of tile `t` lands row-major at
//!   `out[64 t .. 64 t + 64]`;
//! - `ret` receives `(out, 64 tiles)` (the host writes it as the canonical ABI's return area);
//! - the answer is 0, or non-zero for a malformed list.
//!
//! The caller then copies each tile to its real destination ([`flush`]), so where the tile was
//! computed never changes what is stored.
use crate::mmm::{FusedKerSpec, OutputStoreKer};
use std::cell::RefCell;
use tract_data::internal::*;

/// Tiles per call into the entry point: a call costs about as much as a few hundred
/// multiply-adds, a batch of 64 tiles does at least 64 x 64 x k of them.
const MAX_TILES: usize = 64;

/// Operations per tile list, `Done` excluded.
pub const MAX_OPS: usize = 14;

/// Shallowest product worth batching: below it a tile is a few hundred multiply-adds and the
/// batch's own costs (queueing, the call, storing each tile) outweigh what a faster kernel
/// saves, so the kernel runs directly (same bits either way).
const MIN_DEPTH: usize = 32;

const TILE: usize = 64;

#[derive(Default)]
struct Queue {
    specs: Vec<FusedKerSpec<f32>>,
    stores: Vec<OutputStoreKer>,
    out: Vec<f32>,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::default();
}

/// Whether the batched entry point computes `op`.
pub fn batchable(op: &FusedKerSpec<f32>) -> bool {
    use FusedKerSpec as F;
    matches!(
        op,
        F::Clear
            | F::ScalarMin(_)
            | F::ScalarMax(_)
            | F::ScalarAdd(_)
            | F::ScalarMul(_)
            | F::ScalarSub(_)
            | F::ScalarSubF(_)
            | F::LeakyRelu(_)
            | F::PerRowMin(_)
            | F::PerRowMax(_)
            | F::PerRowAdd(_)
            | F::PerRowMul(_)
            | F::PerRowSub(_)
            | F::PerRowSubF(_)
            | F::PerColMin(_)
            | F::PerColMax(_)
            | F::PerColAdd(_)
            | F::PerColMul(_)
            | F::PerColSub(_)
            | F::PerColSubF(_)
            | F::AddUnicast(_)
            | F::AddRowColProducts(_, _)
            | F::AddMatMul { .. }
    )
}

/// Queues one tile of `wasm_f32_8x8` (its operation list, ended by `Store` then `Done`).
/// `Ok(false)` when the list has anything else: the caller runs the kernel directly.
pub fn push(specs: &[FusedKerSpec<f32>]) -> TractResult<bool> {
    let [ops @ .., FusedKerSpec::Store(store), FusedKerSpec::Done] = specs else {
        return Ok(false);
    };
    if store.item_size != 4 || ops.len() > MAX_OPS || !ops.iter().all(batchable) {
        return Ok(false);
    }
    if !ops.iter().any(|op| matches!(op, FusedKerSpec::AddMatMul { k, .. } if *k >= MIN_DEPTH)) {
        return Ok(false);
    }
    let full = QUEUE.with_borrow_mut(|queue| {
        queue.specs.extend_from_slice(ops);
        queue.specs.push(FusedKerSpec::Done);
        queue.stores.push(*store);
        queue.stores.len() >= MAX_TILES
    });
    if full {
        flush()?;
    }
    Ok(true)
}

/// Runs the queued tiles and stores each where its list said. Cheap when nothing is queued;
/// called before anything reuses a buffer a queued tile reads, and at the end of every
/// matrix product.
pub fn flush() -> TractResult<()> {
    QUEUE.with_borrow_mut(|queue| {
        let tiles = queue.stores.len();
        if tiles == 0 {
            return Ok(());
        }
        queue.out.clear();
        queue.out.resize(tiles * TILE, 0.0);
        let mut ret = [0u32; 2];
        // SAFETY: `specs` holds `tiles` lists of batchable operations built by `push` from the
        // kernel's own operation lists, whose pointers are live until this flush; `out` has
        // room for every tile.
        let status = unsafe {
            edgeinfer_mmm_f32_8x8_tiles(
                queue.specs.as_ptr(),
                tiles as u32,
                queue.out.as_mut_ptr(),
                ret.as_mut_ptr(),
            )
        };
        let expected = [queue.out.as_ptr() as usize as u32, (tiles * TILE) as u32];
        let result = if status != 0 || ret != expected {
            Err(format_err!("batched 8x8 kernel failed: status {status}, returned {ret:?}"))
        } else {
            for (tile, store) in queue.out.chunks_exact(TILE).zip(&queue.stores) {
                // SAFETY: the same writes `kernel_f32_8x8`'s `Store` makes for this tile.
                unsafe { store_tile(tile, store) };
            }
            Ok(())
        };
        queue.specs.clear();
        queue.stores.clear();
        result
    })
}

/// Drops whatever is queued (after an error, so nothing stale runs later).
pub fn discard() {
    QUEUE.with_borrow_mut(|queue| {
        queue.specs.clear();
        queue.stores.clear();
    })
}

/// Writes an 8x8 row-major tile through `store`'s strides, as the kernel's `Store` does.
unsafe fn store_tile(tile: &[f32], store: &OutputStoreKer) {
    unsafe {
        let mut row_ptr = store.ptr;
        for row in tile.chunks_exact(8) {
            for (col, value) in row.iter().enumerate() {
                *(row_ptr.offset(store.col_byte_stride * col as isize) as *mut f32) = *value;
            }
            row_ptr = row_ptr.add(store.row_byte_stride as usize);
        }
    }
}

/// The batched 8x8 f32 tile kernel (contract in the module documentation). Exported under
/// this name so a host can find it; never inlined, so a host that links its own body in its
/// place is the one every call reaches.
///
/// # Safety
/// `specs` must hold `tiles` well-formed lists whose pointers are valid, `out` must have room
/// for `64 tiles` floats and `ret` for two words.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn edgeinfer_mmm_f32_8x8_tiles(
    specs: *const FusedKerSpec<f32>,
    tiles: u32,
    out: *mut f32,
    ret: *mut u32,
) -> i32 {
    unsafe {
        let mut spec = specs;
        let mut ops = [FusedKerSpec::Done; MAX_OPS + 2];
        for tile in 0..tiles as usize {
            let mut count = 0;
            while !matches!(*spec, FusedKerSpec::Done) {
                if count == MAX_OPS || !batchable(&*spec) {
                    return 1;
                }
                ops[count] = *spec;
                count += 1;
                spec = spec.add(1);
            }
            spec = spec.add(1);
            ops[count] = FusedKerSpec::Store(OutputStoreKer {
                ptr: out.add(tile * TILE) as *mut u8,
                row_byte_stride: 32,
                col_byte_stride: 4,
                item_size: 4,
            });
            ops[count + 1] = FusedKerSpec::Done;
            super::mmm_f32_gemm::kernel_f32_8x8(ops.as_ptr());
        }
        *ret = out as usize as u32;
        *ret.add(1) = tiles * TILE as u32;
        0
    }
}

// The host reads the lists with this layout (tag word, then the payload at offset 4).
const _: () = assert!(std::mem::size_of::<FusedKerSpec<f32>>() == 20);
