//! Per-request store state: an empty WASI context and the memory limiter.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How much of a guest's stderr is kept to explain a trap.
const STDERR_CAPTURE: usize = 4096;

/// What a `Store` carries for one request.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    pub(crate) limiter: MemoryLimiter,
    /// When the request's wall-clock budget ends; host code that runs long (the native
    /// kernels) checks it, as the epoch does for guest code.
    pub(crate) deadline: Option<std::time::Instant>,
}

impl StoreState {
    /// No preopens, no environment, no network, stdin empty, stdout discarded.
    pub(crate) fn new(memory_cap: usize) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            stderr,
            limiter: MemoryLimiter { cap: memory_cap, total: 0, denied: false },
            deadline: None,
        }
    }

    /// Like [`StoreState::new`], but every random byte the guest draws comes from `seed`, so
    /// a snapshot taken afterwards is reproducible (same model, same component bytes).
    pub(crate) fn deterministic(memory_cap: usize, seed: &[u8]) -> Self {
        let mut state = Self::new(memory_cap);
        state.wasi = WasiCtxBuilder::new()
            .stderr(state.stderr.clone())
            .secure_random(Deterministic::new(seed.to_vec()))
            .insecure_random(Deterministic::new(seed.to_vec()))
            .insecure_random_seed(u128::from_le_bytes(
                seed.get(..16).and_then(|s| s.try_into().ok()).unwrap_or([7; 16]),
            ))
            .build();
        state
    }

    /// What the guest wrote to stderr (a panic message, typically).
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_string()
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps the sum of all of a store's linear memories (a component may define several) and
/// remembers whether it had to refuse growth.
pub(crate) struct MemoryLimiter {
    cap: usize,
    pub(crate) total: usize,
    pub(crate) denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.total.saturating_sub(current).saturating_add(desired);
        if total > self.cap {
            self.denied = true;
            wasmtime::bail!(
                "memory limit of {} bytes reached (all memories would take {total}, this one wanted {desired})",
                self.cap
            );
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
