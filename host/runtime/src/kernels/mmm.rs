//! The native 8x8 f32 tile kernel: the same arithmetic as tract's `wasm_f32_8x8` under the
//! batching contract of `vendor/tract-linalg/src/wasm/tile_batch.rs`, read from a guest's
//! linear memory through checked offsets.
//!
//! Everything the guest passes is untrusted: operation lists are parsed into [`Op`]s first,
//! each offset and length checked with checked arithmetic against the memory the call sees
//! (tags, list lengths, `k`, strides), and only then is anything computed. The host never
//! writes guest memory here: the tiles are returned, and the canonical ABI copies them to
//! the place the guest chose (bounds-checked by wasmtime).
//!
//! Bit-identity with the wasm kernel: every accumulator step is an unfused multiply then add
//! in `k` order, as the wasm body (plain simd128, no relaxed FMA) does; min and max follow
//! wasm's `f32x4.min`/`max` (NaN wins, -0 below +0). Only NaN payloads may differ, as wasm
//! itself leaves them unspecified.

use thiserror::Error;

/// Floats in one tile.
pub const TILE: usize = 64;

/// Operations per tile list, `Done` excluded (the guest's `tile_batch::MAX_OPS`).
pub const MAX_OPS: usize = 14;

/// Tiles per call the host accepts (the guest sends at most 64).
pub const MAX_TILES: u32 = 1024;

/// Bytes of one `FusedKerSpec<f32>` on wasm32: a tag word, then the payload at offset 4.
const SPEC_SIZE: u64 = 20;

/// Why a kernel call was refused; the guest traps with this message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KernelError {
    /// A range of guest memory the call names lies outside the memory.
    #[error("native kernel: {what} at offset {offset} (+{len} bytes) is outside the guest's {memory} bytes of memory")]
    OutOfRange {
        /// Which operand.
        what: &'static str,
        /// Its start, as the guest gave it (or computed from it).
        offset: i64,
        /// Its length in bytes.
        len: u64,
        /// The memory's size during the call.
        memory: u64,
    },
    /// An operation the batch does not take, or an unknown tag.
    #[error("native kernel: operation tag {0} is not accepted in a batched tile")]
    BadOperation(u32),
    /// A tile's list does not end within the operation limit.
    #[error("native kernel: a tile's list has more than {MAX_OPS} operations")]
    ListTooLong,
    /// More tiles than one call takes.
    #[error("native kernel: {0} tiles in one call (at most {MAX_TILES})")]
    TooManyTiles(u32),
    /// The output range overlaps something the call reads.
    #[error("native kernel: the output at offset {out} (+{len} bytes) overlaps the {what} at offset {offset}")]
    Overlap {
        /// The output's start.
        out: u64,
        /// The output's length in bytes.
        len: u64,
        /// What it overlaps.
        what: &'static str,
        /// Where that starts.
        offset: u64,
    },
}

/// A binary operation between the accumulator and a scalar, row or column value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `min(value, acc)`.
    Min,
    /// `max(value, acc)`.
    Max,
    /// `value + acc`.
    Add,
    /// `value * acc`.
    Mul,
    /// `value - acc`.
    Sub,
    /// `acc - value`.
    SubF,
}

/// One parsed, range-checked operation of a tile list. Offsets are into guest memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Zero the accumulator.
    Clear,
    /// The same value for every element.
    Scalar(BinOp, f32),
    /// `acc > 0 ? acc : alpha * acc`.
    LeakyRelu(f32),
    /// One value per row (8 floats at the offset).
    PerRow(BinOp, usize),
    /// One value per column (8 floats at the offset).
    PerCol(BinOp, usize),
    /// Adds a strided 8x8 tile: element (r, c) at `ptr + r * row + c * col`.
    AddUnicast {
        /// Offset of element (0, 0).
        ptr: i64,
        /// Byte stride between rows.
        row: i64,
        /// Byte stride between columns.
        col: i64,
    },
    /// `acc[r][c] += rows[r] * cols[c]`.
    AddRowColProducts(usize, usize),
    /// `acc[r][c] += a[k][r] * b[k][c]` for k in order; panels of 8 floats per k.
    AddMatMul {
        /// The depth.
        k: usize,
        /// Packed A panel offset.
        a: usize,
        /// Packed B panel offset.
        b: usize,
    },
}

/// The parsed tiles of one call: each tile's operations, and the multiply-adds they do.
#[derive(Debug, Default)]
pub struct Batch {
    /// Operations, tile after tile.
    pub ops: Vec<Op>,
    /// Where each tile's operations end in `ops`.
    pub ends: Vec<usize>,
    /// Sum of `k` over every `AddMatMul` (each is 64 multiply-adds per step).
    pub depth: u64,
}

impl Batch {
    /// The operations of tile `index`.
    pub fn tile(&self, index: usize) -> &[Op] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.ops[start..self.ends[index]]
    }

    /// How many tiles the batch has.
    pub fn tiles(&self) -> usize {
        self.ends.len()
    }
}

/// Reads `tiles` operation lists starting at `specs` from `memory`, checking every range,
/// and that the output (`64 tiles` floats at `out`) lies in memory clear of all of them.
pub fn parse(memory: &[u8], specs: u32, tiles: u32, out: u32) -> Result<Batch, KernelError> {
    if tiles > MAX_TILES {
        return Err(KernelError::TooManyTiles(tiles));
    }
    let out_len = u64::from(tiles) * TILE as u64 * 4;
    range(memory, "output", i64::from(out), out_len)?;
    let mut reader = Reader { memory, at: u64::from(specs), read: Vec::new() };
    let mut batch = Batch::default();
    for _ in 0..tiles {
        let mut count = 0;
        loop {
            let spec = reader.spec()?;
            let Some(op) = spec else { break };
            if count == MAX_OPS {
                return Err(KernelError::ListTooLong);
            }
            count += 1;
            if let Op::AddMatMul { k, .. } = op {
                batch.depth += k as u64;
            }
            batch.ops.push(op);
        }
        batch.ends.push(batch.ops.len());
    }
    let (out, out_end) = (u64::from(out), u64::from(out) + out_len);
    for &(what, start, end) in &reader.read {
        if start < out_end && out < end {
            return Err(KernelError::Overlap { out, len: out_len, what, offset: start });
        }
    }
    Ok(batch)
}

/// Walks the operation lists in guest memory, remembering every range it will read.
struct Reader<'m> {
    memory: &'m [u8],
    at: u64,
    read: Vec<(&'static str, u64, u64)>,
}

impl Reader<'_> {
    /// The next operation, `None` for `Done`.
    fn spec(&mut self) -> Result<Option<Op>, KernelError> {
        let memory = self.memory;
        let base = self.at;
        let bytes = self.checked("operation list", base as i64, SPEC_SIZE)?;
        self.at += SPEC_SIZE;
        let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let value = f32::from_bits(word(4));
        let ptr = word(4) as usize;
        use BinOp::*;
        let tag = word(0);
        let op = match tag {
            0 => return Ok(None),
            1 => Op::Clear,
            3 => Op::Scalar(Min, value),
            4 => Op::Scalar(Max, value),
            5 => Op::Scalar(Add, value),
            6 => Op::Scalar(Mul, value),
            7 => Op::Scalar(Sub, value),
            8 => Op::Scalar(SubF, value),
            9 => Op::LeakyRelu(value),
            10..=15 => {
                Op::PerRow([Min, Max, Add, Mul, Sub, SubF][(tag - 10) as usize], self.floats8("per-row values", ptr)?)
            }
            16..=21 => Op::PerCol(
                [Min, Max, Add, Mul, Sub, SubF][(tag - 16) as usize],
                self.floats8("per-column values", ptr)?,
            ),
            25 => {
                // Strides are wasm32 `isize`: signed.
                let (ptr, row, col) = (i64::from(word(4)), i64::from(word(8) as i32), i64::from(word(12) as i32));
                let corners = [(0, 0), (0, 7), (7, 0), (7, 7)].map(|(r, c)| ptr + r * row + c * col);
                for corner in corners {
                    range(memory, "added tile", corner, 4)?;
                }
                // The elements lie between the lowest and the highest corner.
                let (low, high) =
                    (corners.iter().min().copied().unwrap_or(ptr), corners.iter().max().copied().unwrap_or(ptr));
                self.checked("added tile", low, (high - low + 4) as u64)?;
                Op::AddUnicast { ptr, row, col }
            }
            26 => {
                let rows = self.floats8("row values", ptr)?;
                Op::AddRowColProducts(rows, self.floats8("column values", word(8) as usize)?)
            }
            28 => {
                let k = word(4) as usize;
                let len = (k as u64).saturating_mul(32);
                self.checked("packed A panel", i64::from(word(8)), len)?;
                self.checked("packed B panel", i64::from(word(12)), len)?;
                Op::AddMatMul { k, a: word(8) as usize, b: word(12) as usize }
            }
            other => return Err(KernelError::BadOperation(other)),
        };
        Ok(Some(op))
    }
}

impl<'m> Reader<'m> {
    /// `len` bytes at `offset`, checked and remembered as read.
    fn checked(&mut self, what: &'static str, offset: i64, len: u64) -> Result<&'m [u8], KernelError> {
        let bytes = range(self.memory, what, offset, len)?;
        self.read.push((what, offset as u64, offset as u64 + len));
        Ok(bytes)
    }

    /// The offset of 8 floats at `offset`, checked and remembered as read.
    fn floats8(&mut self, what: &'static str, offset: usize) -> Result<usize, KernelError> {
        self.checked(what, offset as i64, 32).map(|_| offset)
    }
}

/// `len` bytes of `memory` at `offset`, or the error naming `what`.
fn range<'m>(memory: &'m [u8], what: &'static str, offset: i64, len: u64) -> Result<&'m [u8], KernelError> {
    let error = || KernelError::OutOfRange { what, offset, len, memory: memory.len() as u64 };
    let start = usize::try_from(offset).map_err(|_| error())?;
    let end = start.checked_add(usize::try_from(len).map_err(|_| error())?).ok_or_else(error)?;
    memory.get(start..end).ok_or_else(error)
}

/// Runs tile `index` of a parsed batch into `out` (64 floats, row-major). `memory` must be
/// the memory `batch` was parsed from (ranges were checked there; they are re-sliced safely).
pub fn run_tile(memory: &[u8], batch: &Batch, index: usize, out: &mut [f32; TILE]) {
    let mut acc = [[0f32; 8]; 8];
    for op in batch.tile(index) {
        apply(memory, op, &mut acc);
    }
    store(&acc, out);
}

fn store(acc: &[[f32; 8]; 8], out: &mut [f32]) {
    for (row, dst) in acc.iter().zip(out.chunks_exact_mut(8)) {
        dst.copy_from_slice(row);
    }
}

/// The product a tile starts with: `Clear` then `AddMatMul`, as tract's tiles do.
fn leading_product(ops: &[Op]) -> Option<(usize, usize, usize)> {
    match ops {
        [Op::Clear, Op::AddMatMul { k, a, b }, ..] => Some((*k, *a, *b)),
        _ => None,
    }
}

/// Runs tiles `index` and `index + 1` together into `out` (128 floats) when their products
/// share a panel and the CPU computes pairs; `false` (nothing written) otherwise. Same bits
/// as two [`run_tile`] calls: each element is `+0` plus its products in `k` order.
pub fn run_pair(memory: &[u8], batch: &Batch, index: usize, out: &mut [f32]) -> bool {
    let (first, second) = (batch.tile(index), batch.tile(index + 1));
    let (Some((k, a1, b1)), Some((k2, a2, b2))) = (leading_product(first), leading_product(second)) else {
        return false;
    };
    let len = 32 * k;
    let panel = |offset: usize| &memory[offset..offset + len];
    let (pair, transposed) = match (k == k2, a1 == a2, b1 == b2) {
        (true, true, _) => (pair_mat_mul(panel(a1), panel(b1), panel(b2)), false),
        (true, false, true) => (pair_mat_mul(panel(b1), panel(a1), panel(a2)), true),
        _ => return false,
    };
    let Some(pair) = pair else { return false };
    for (half, (ops, out)) in [first, second].into_iter().zip(out.chunks_exact_mut(TILE)).enumerate() {
        let acc: [[f32; 8]; 8] = std::array::from_fn(|r| {
            std::array::from_fn(|c| if transposed { pair[c][r + 8 * half] } else { pair[r][c + 8 * half] })
        });
        let mut acc = acc;
        for op in &ops[2..] {
            apply(memory, op, &mut acc);
        }
        store(&acc, out);
    }
    true
}

fn floats8(memory: &[u8], offset: usize) -> [f32; 8] {
    load8(&memory[offset..offset + 32])
}

fn float_at(memory: &[u8], offset: i64) -> f32 {
    let at = offset as usize;
    f32::from_le_bytes([memory[at], memory[at + 1], memory[at + 2], memory[at + 3]])
}

fn apply(memory: &[u8], op: &Op, acc: &mut [[f32; 8]; 8]) {
    match *op {
        Op::Clear => *acc = [[0.0; 8]; 8],
        Op::Scalar(bin, value) => acc.iter_mut().flatten().for_each(|x| *x = binary(bin, value, *x)),
        Op::LeakyRelu(alpha) => acc.iter_mut().flatten().for_each(|x| *x = if *x > 0.0 { *x } else { alpha * *x }),
        Op::PerRow(bin, offset) => {
            let rows = floats8(memory, offset);
            for (row, value) in acc.iter_mut().zip(rows) {
                row.iter_mut().for_each(|x| *x = binary(bin, value, *x));
            }
        }
        Op::PerCol(bin, offset) => {
            let cols = floats8(memory, offset);
            for row in acc.iter_mut() {
                row.iter_mut().zip(cols).for_each(|(x, value)| *x = binary(bin, value, *x));
            }
        }
        Op::AddUnicast { ptr, row, col } => {
            for (r, acc_row) in acc.iter_mut().enumerate() {
                for (c, x) in acc_row.iter_mut().enumerate() {
                    *x += float_at(memory, ptr + r as i64 * row + c as i64 * col);
                }
            }
        }
        Op::AddRowColProducts(rows, cols) => {
            let (rows, cols) = (floats8(memory, rows), floats8(memory, cols));
            for (acc_row, r) in acc.iter_mut().zip(rows) {
                acc_row.iter_mut().zip(cols).for_each(|(x, c)| *x += r * c);
            }
        }
        Op::AddMatMul { k, a, b } => {
            let (a, b) = (&memory[a..a + 32 * k], &memory[b..b + 32 * k]);
            add_mat_mul(acc, a, b);
        }
    }
}

/// wasm's `op(value, acc)` lane semantics.
fn binary(op: BinOp, value: f32, acc: f32) -> f32 {
    match op {
        BinOp::Min => wasm_min(value, acc),
        BinOp::Max => wasm_max(value, acc),
        BinOp::Add => value + acc,
        BinOp::Mul => value * acc,
        BinOp::Sub => value - acc,
        BinOp::SubF => acc - value,
    }
}

/// `f32x4.min`: NaN if either is NaN, and -0 below +0.
fn wasm_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        f32::from_bits(a.to_bits() | b.to_bits())
    } else if a < b {
        a
    } else {
        b
    }
}

/// `f32x4.max`: NaN if either is NaN, and +0 above -0.
fn wasm_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        f32::from_bits(a.to_bits() & b.to_bits())
    } else if a > b {
        a
    } else {
        b
    }
}

/// The product loop, compiled for the best vector unit this CPU has.
fn add_mat_mul(acc: &mut [[f32; 8]; 8], a: &[u8], b: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { add_mat_mul_avx512(acc, a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { add_mat_mul_avx2(acc, a, b) };
        }
    }
    add_mat_mul_portable(acc, a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn add_mat_mul_avx512(acc: &mut [[f32; 8]; 8], a: &[u8], b: &[u8]) {
    add_mat_mul_portable(acc, a, b)
}

/// The AVX2 tile: one 8-lane register per row of the accumulator, `b`'s eight columns loaded
/// once per step of `k`, each row's `a` broadcast, multiplied, then added (the portable loop's
/// arithmetic, in its order). The portable loop, widened by the compiler, left a call per
/// panel load in the inner loop here: on an AVX2-only CPU, SqueezeNet's warm call on native
/// kernels took 5.6x as long as with this.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_mat_mul_avx2(acc: &mut [[f32; 8]; 8], a: &[u8], b: &[u8]) {
    use std::arch::x86_64::*;
    let steps = a.len() / 32;
    assert!(b.len() >= steps * 32, "panels cover k steps");
    let (pa, pb) = (a.as_ptr().cast::<f32>(), b.as_ptr().cast::<f32>());
    let mut rows = [_mm256_setzero_ps(); 8];
    for (lane, row) in rows.iter_mut().zip(acc.iter()) {
        // SAFETY: 8 floats from an 8-float row.
        *lane = unsafe { _mm256_loadu_ps(row.as_ptr()) };
    }
    for step in 0..steps {
        // SAFETY: every read is within the first `steps * 32` bytes of its slice (asserted
        // above); unaligned loads.
        unsafe {
            let b_k = _mm256_loadu_ps(pb.add(8 * step));
            for (r, lane) in rows.iter_mut().enumerate() {
                let a_r = _mm256_set1_ps(pa.add(8 * step + r).read_unaligned());
                *lane = _mm256_add_ps(*lane, _mm256_mul_ps(a_r, b_k));
            }
        }
    }
    for (row, lane) in acc.iter_mut().zip(rows) {
        // SAFETY: 8 floats into an 8-float row.
        unsafe { _mm256_storeu_ps(row.as_mut_ptr(), lane) };
    }
}

/// `acc[r][c] = acc[r][c] + a[k][r] * b[k][c]`, k in order, never fused (Rust does not
/// contract `x + y * z`): the vectorizer widens it to whatever the enclosing target allows.
#[inline(always)]
fn add_mat_mul_portable(acc: &mut [[f32; 8]; 8], a: &[u8], b: &[u8]) {
    let mut local = *acc;
    for (a_k, b_k) in a.chunks_exact(32).zip(b.chunks_exact(32)) {
        let a_k = load8(a_k);
        let b_k = load8(b_k);
        for (row, a_r) in local.iter_mut().zip(a_k) {
            for (x, b_c) in row.iter_mut().zip(b_k) {
                *x += a_r * b_c;
            }
        }
    }
    *acc = local;
}

/// Two tiles that share one operand's panel, computed together when this CPU has AVX-512:
/// `out[i][j] = sum over k of shared[k][i] * others[k][j]`, `j` over the first panel's 8
/// columns then the second's, `k` in order, unfused. Sixteen columns fill one AVX-512
/// register per row: twice the work per instruction of an 8-wide tile. `None` without
/// AVX-512 (the tiles then run one by one).
fn pair_mat_mul(shared: &[u8], first: &[u8], second: &[u8]) -> Option<[[f32; 16]; 8]> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        return Some(unsafe { pair_mat_mul_avx512(shared, first, second) });
    }
    let _ = (shared, first, second);
    None
}

/// The AVX-512 pair: one 16-lane register per row, `k` in order, multiply then add (the
/// same two roundings as the portable loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn pair_mat_mul_avx512(shared: &[u8], first: &[u8], second: &[u8]) -> [[f32; 16]; 8] {
    use std::arch::x86_64::*;
    let steps = shared.len() / 32;
    assert!(first.len() >= steps * 32 && second.len() >= steps * 32, "panels cover k steps");
    let mut acc = [_mm512_setzero_ps(); 8];
    // edgeinfer's bit-identity rests on this: +0 plus the first product, as the wasm kernel's
    // cleared accumulator does.
    let (s, f, t) = (shared.as_ptr().cast::<f32>(), first.as_ptr().cast::<f32>(), second.as_ptr().cast::<f32>());
    for step in 0..steps {
        // SAFETY: every read is within the first `steps * 32` bytes of its slice (asserted
        // above); unaligned loads.
        unsafe {
            let low = _mm512_castps256_ps512(_mm256_loadu_ps(f.add(8 * step)));
            let others = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castps_pd(low),
                _mm256_castps_pd(_mm256_loadu_ps(t.add(8 * step))),
            ));
            for (row, lane) in acc.iter_mut().enumerate() {
                let s_i = _mm512_set1_ps(s.add(8 * step + row).read_unaligned());
                *lane = _mm512_add_ps(*lane, _mm512_mul_ps(s_i, others));
            }
        }
    }
    let mut out = [[0f32; 16]; 8];
    for (row, lane) in out.iter_mut().zip(acc) {
        // SAFETY: 16 floats into a 16-float row.
        unsafe { _mm512_storeu_ps(row.as_mut_ptr(), lane) };
    }
    out
}

#[inline(always)]
fn load8(bytes: &[u8]) -> [f32; 8] {
    // A plain loop rather than `array::from_fn`, which the compiler left as a call in the
    // kernels' inner loops.
    let mut values = [0f32; 8];
    for (value, word) in values.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = f32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec at `at`: tag and payload words.
    fn put_spec(memory: &mut [u8], at: usize, tag: u32, payload: [u32; 4]) {
        memory[at..at + 4].copy_from_slice(&tag.to_le_bytes());
        for (i, word) in payload.iter().enumerate() {
            memory[at + 4 + 4 * i..at + 8 + 4 * i].copy_from_slice(&word.to_le_bytes());
        }
    }

    fn put_floats(memory: &mut [u8], at: usize, values: &[f32]) {
        for (i, v) in values.iter().enumerate() {
            memory[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }

    #[test]
    fn a_tile_matches_the_reference_product_with_bias_and_relu() {
        let k = 5;
        let mut memory = vec![0u8; 4096];
        let a: Vec<f32> = (0..8 * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..8 * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let bias: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        put_floats(&mut memory, 1024, &a);
        put_floats(&mut memory, 2048, &b);
        put_floats(&mut memory, 3072, &bias);
        put_spec(&mut memory, 0, 1, [0; 4]);
        put_spec(&mut memory, 20, 28, [k as u32, 1024, 2048, 0]);
        put_spec(&mut memory, 40, 12, [3072, 0, 0, 0]);
        put_spec(&mut memory, 60, 4, [0f32.to_bits(), 0, 0, 0]);
        put_spec(&mut memory, 80, 0, [0; 4]);
        let batch = parse(&memory, 0, 1, 3584).expect("parse");
        // The output over the bias it reads, or past the end, is refused.
        assert!(matches!(parse(&memory, 0, 1, 3000), Err(KernelError::Overlap { what: "per-row values", .. })));
        assert!(matches!(parse(&memory, 0, 1, 4000), Err(KernelError::OutOfRange { what: "output", .. })));
        assert_eq!(batch.depth, k as u64);
        let mut out = [0f32; TILE];
        run_tile(&memory, &batch, 0, &mut out);
        for r in 0..8 {
            for c in 0..8 {
                let mut expected = 0f32;
                for step in 0..k {
                    expected += a[step * 8 + r] * b[step * 8 + c];
                }
                let expected = wasm_max(0.0, bias[r] + expected);
                assert_eq!(out[r * 8 + c].to_bits(), expected.to_bits(), "({r}, {c})");
            }
        }
    }

    #[test]
    fn every_vector_unit_gives_the_portable_loops_bits() {
        let k = 53;
        let floats = |seed: usize| -> Vec<u8> {
            (0..8 * k)
                .flat_map(|i| {
                    match (i + seed) % 11 {
                        0 => -0.0f32,
                        n => ((i * 17 + seed) as f32 * 0.37).cos() * n as f32 * 1e3,
                    }
                    .to_le_bytes()
                })
                .collect()
        };
        let (a, b) = (floats(1), floats(2));
        let start: [[f32; 8]; 8] = std::array::from_fn(|r| std::array::from_fn(|c| (r * 8 + c) as f32 * 0.1 - 3.0));
        let mut portable = start;
        add_mat_mul_portable(&mut portable, &a, &b);
        let bits = |acc: &[[f32; 8]; 8]| acc.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
        // Unfused: a fused multiply-add gives other bits on this fixture, so a vector path that
        // fused (as a compiler may, with FMA enabled) would fail below.
        let mut fused = start;
        for (a_k, b_k) in a.chunks_exact(32).zip(b.chunks_exact(32)) {
            for (row, a_r) in fused.iter_mut().zip(load8(a_k)) {
                for (x, b_c) in row.iter_mut().zip(load8(b_k)) {
                    *x = a_r.mul_add(b_c, *x);
                }
            }
        }
        assert_ne!(bits(&fused), bits(&portable), "the fixture cannot tell fused from unfused");
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut avx2 = start;
                // SAFETY: the CPU has AVX2 (checked above).
                unsafe { add_mat_mul_avx2(&mut avx2, &a, &b) };
                assert_eq!(bits(&avx2), bits(&portable), "AVX2");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut avx512 = start;
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { add_mat_mul_avx512(&mut avx512, &a, &b) };
                assert_eq!(bits(&avx512), bits(&portable), "AVX-512");
            }
        }
    }

    #[test]
    fn tiles_computed_in_pairs_give_the_bits_of_tiles_computed_alone() {
        let k = 37;
        let mut memory = vec![0u8; 16384];
        // Panels with both signs, zeros and negative zeros.
        for (panel, at) in [(0usize, 1024usize), (1, 3072), (2, 5120), (3, 7168)] {
            let values: Vec<f32> = (0..8 * k)
                .map(|i| match (i + panel) % 9 {
                    0 => 0.0,
                    1 => -0.0,
                    n => ((i * 31 + panel * 7) as f32 * 0.173).sin() * n as f32,
                })
                .collect();
            put_floats(&mut memory, at, &values);
        }
        put_floats(&mut memory, 9216, &[1.5, -2.0, 0.0, -0.0, 3.0, 0.25, -1.0, 8.0]);
        // Tiles 0 and 1 share A (1024); tiles 2 and 3 share B (3072).
        let tiles = [(1024, 3072), (1024, 5120), (5120, 3072), (7168, 3072)];
        for (t, (a, b)) in tiles.iter().enumerate() {
            let at = t * 80;
            put_spec(&mut memory, at, 1, [0; 4]);
            put_spec(&mut memory, at + 20, 28, [k as u32, *a, *b, 0]);
            put_spec(&mut memory, at + 40, 18, [9216, 0, 0, 0]);
            put_spec(&mut memory, at + 60, 0, [0; 4]);
        }
        let batch = parse(&memory, 0, 4, 12288).expect("parse");
        let mut alone = [0f32; 4 * TILE];
        for (index, out) in alone.chunks_exact_mut(TILE).enumerate() {
            run_tile(&memory, &batch, index, out.try_into().expect("tile"));
        }
        let mut paired = [0f32; 4 * TILE];
        let computed =
            [0, 2].map(|index| run_pair(&memory, &batch, index, &mut paired[index * TILE..(index + 2) * TILE]));
        if computed == [false, false] {
            return; // no AVX-512 here: pairs are never used
        }
        assert_eq!(computed, [true, true]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&paired), bits(&alone));
    }

    #[test]
    fn hostile_lists_are_refused_before_anything_runs() {
        let mut memory = vec![0u8; 4096];
        // A panel running past the end of memory.
        put_spec(&mut memory, 0, 28, [100, 4000, 0, 0]);
        assert!(matches!(parse(&memory, 0, 1, 3584), Err(KernelError::OutOfRange { what: "packed A panel", .. })));
        // A depth whose byte length overflows.
        put_spec(&mut memory, 0, 28, [u32::MAX, 0, 0, 0]);
        assert!(matches!(parse(&memory, 0, 1, 3584), Err(KernelError::OutOfRange { .. })));
        // The list itself outside memory, and at the very end of the address space.
        assert!(matches!(parse(&memory, 4090, 1, 3584), Err(KernelError::OutOfRange { what: "operation list", .. })));
        assert!(matches!(parse(&memory, u32::MAX, 1, 3584), Err(KernelError::OutOfRange { .. })));
        // Negative strides reaching below zero.
        put_spec(&mut memory, 0, 25, [64, (-32i32) as u32, 4, 4]);
        assert!(matches!(parse(&memory, 0, 1, 3584), Err(KernelError::OutOfRange { what: "added tile", .. })));
        // A store, a quantization step and an unknown tag.
        for tag in [27, 22, 99] {
            put_spec(&mut memory, 0, tag, [0; 4]);
            assert_eq!(parse(&memory, 0, 1, 3584).unwrap_err(), KernelError::BadOperation(tag));
        }
        // A list that never ends (all Clear).
        for i in 0..(MAX_OPS + 1) {
            put_spec(&mut memory, 20 * i, 1, [0; 4]);
        }
        assert_eq!(parse(&memory, 0, 1, 3584).unwrap_err(), KernelError::ListTooLong);
        assert_eq!(parse(&memory, 0, MAX_TILES + 1, 3584).unwrap_err(), KernelError::TooManyTiles(MAX_TILES + 1));
    }

    #[test]
    fn min_and_max_follow_wasm() {
        assert_eq!(wasm_min(0.0, -0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(wasm_max(-0.0, 0.0).to_bits(), 0f32.to_bits());
        assert!(wasm_min(f32::NAN, 1.0).is_nan() && wasm_max(1.0, f32::NAN).is_nan());
        assert_eq!(wasm_min(2.0, 1.0), 1.0);
        assert_eq!(wasm_max(2.0, 1.0), 2.0);
    }
}
