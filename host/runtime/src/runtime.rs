//! The shared wasmtime runtime: one engine (fuel, epochs, pooling allocator, incremental
//! compilation cache), the WASI linker, the code cache and the epoch ticker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig};

use crate::code_cache::CodeCache;
use crate::store::StoreState;
use crate::{Error, Result};

/// The cache key of a model's shell: the model and the shell's own bytes (how a shell is
/// written changes with edgeinfer, and with native kernels on or off; the model's digest
/// alone would find a stale one).
fn shell_key(digest: &str, shell: &[u8]) -> String {
    let shell_digest = crate::digest::sha256_hex(shell);
    format!("{digest}-shell-{}", &shell_digest[..16])
}

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is cached (`$EDGEINFER_CACHE_DIR`, else `$XDG_CACHE_HOME/edgeinfer`,
    /// else `~/.cache/edgeinfer`, else a per-user `edgeinfer-cache-<uid>` in the temp dir);
    /// it must belong to this user and be writable by nobody else.
    pub cache_dir: PathBuf,
    /// Instances that may exist at once (pooling allocator slots).
    pub max_instances: u32,
    /// The largest linear memory any model may be granted, in MiB.
    pub max_memory_mb: u64,
    /// Meter fuel (on by default; off only to measure its overhead).
    pub consume_fuel: bool,
    /// Bytes of each linear memory kept resident between instances of a pool slot and reset
    /// in place, so a fresh instance does not fault its pages back in. Only the pages an
    /// instance dirtied are reset (found with Linux's `PAGEMAP_SCAN`), so what a slot keeps
    /// is what its model's requests touch, up to this cap: the sizing is per model by
    /// construction, and loading a model measures it ([`crate::LoadedModel::request_memory_bytes`]).
    /// Default 32 MiB (a 4.8 MB image request reaches 16 MiB; with 64 MiB, dynamic batches
    /// under 256 connections left the demo server 190 MB larger); 0, or a kernel without `PAGEMAP_SCAN` (before 6.7), returns the pages to the
    /// kernel after every instance.
    pub keep_resident_bytes: usize,
    /// Pool slots that may stay warm (keeping their resident pages) while no instance uses
    /// them; beyond this, a new instance reuses the least recently used warm slot of another
    /// model instead of warming a cold one. Bounds the memory that keeping pages resident
    /// costs to about `(warm_slots + instances running) x pages a request dirties`.
    pub warm_slots: u32,
    /// Generate code as for an x86-64 CPU without AVX, AVX2, FMA, AVX-512, BMI or LZCNT, whatever
    /// this CPU has (SSE4.2 stays). Outputs are the same bits either way (the determinism test
    /// compares them); this exists to prove it and to pin code generation when wanted.
    pub without_avx: bool,
    /// Run the matrix products models lower to on the host's native kernels (see
    /// [`crate::kernels`]): same bits, fuel and deadline as the wasm kernels, several times
    /// faster. On by default; off (or with [`Self::without_avx`]) models run the wasm
    /// kernels they carry, as every other wasm host does.
    pub native_kernels: bool,
    /// Compile for another target (a target triple such as `aarch64-unknown-linux-gnu`):
    /// such a runtime only precompiles ([`Runtime::precompile`]) into its cache, for a host of
    /// that target sharing the cache directory. `None`: this host. On aarch64 this host's code
    /// is always generated for the baseline ISA (see [`portable_target`]), so an entry
    /// precompiled elsewhere is the same bytes and is found.
    pub target: Option<String>,
}

/// The target triple this host compiles for explicitly, so that its code does not depend on
/// the CPU's optional features and can be precompiled on another machine: aarch64's baseline
/// (NEON included; wasm SIMD lowers to it). `None` on x86-64, whose optional features
/// (AVX and later) are worth several times the speed and are detected at start.
pub fn portable_target() -> Option<&'static str> {
    cfg!(all(target_arch = "aarch64", target_os = "linux")).then_some("aarch64-unknown-linux-gnu")
}

/// Cranelift's x86-64 features beyond SSE4.2 and POPCNT, turned off by
/// [`RuntimeConfig::without_avx`].
const AVX_AND_LATER: [&str; 13] = [
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_avx_vnni",
    "has_avx512bitalg",
    "has_avx512dq",
    "has_avx512vl",
    "has_avx512vbmi",
    "has_avx512f",
    "has_avx512vnni",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
];

/// Default of [`RuntimeConfig::keep_resident_bytes`].
pub const DEFAULT_KEEP_RESIDENT_BYTES: usize = 32 << 20;

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cache_dir = std::env::var_os("EDGEINFER_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("edgeinfer")))
            .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/edgeinfer")))
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("edgeinfer-cache-{}", crate::code_cache::current_uid()))
            });
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        RuntimeConfig {
            cache_dir,
            max_instances: 128,
            max_memory_mb: 4096,
            consume_fuel: true,
            keep_resident_bytes: DEFAULT_KEEP_RESIDENT_BYTES,
            warm_slots: (2 * cores).max(4),
            without_avx: false,
            native_kernels: true,
            target: None,
        }
    }
}

impl RuntimeConfig {
    /// Whether models run on native kernels: asked for, and the engine is not pinned to
    /// code without AVX (that engine proves the wasm path gives the same bits).
    pub fn native_kernels_used(&self) -> bool {
        self.native_kernels && !self.without_avx
    }

    /// Whether pool slots keep pages resident: asked for and the kernel can find the dirtied
    /// pages. Without `PAGEMAP_SCAN`, keeping memory resident means a memset of the whole kept
    /// range per instance: slower than giving the pages back for small models.
    pub fn keeps_pages_resident(&self) -> bool {
        self.keep_resident_bytes > 0 && PoolingAllocationConfig::is_pagemap_scan_available()
    }
}

/// One engine for every model; cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: CodeCache,
    config: RuntimeConfig,
    /// Code modules split off model components (see `shared_code`), by sha256: compiled
    /// once and shared by every model whose code is the same. Kept for the runtime's life
    /// (one per edgeinfer build whose models are loaded).
    shared_code: Mutex<HashMap<String, Module>>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine, linker and epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Runtime>> {
        let cache = CodeCache::new(&config.cache_dir)?;
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(config.consume_fuel)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .enable_incremental_compilation(Arc::new(cache.function_store()))
            .map_err(Error::runtime)?;
        // Off for the values the CLI's flags read as false (clap's `FalseyValueParser`).
        let perf_map = std::env::var("EDGEINFER_PERF_MAP").is_ok_and(|v| {
            !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "n" | "no" | "f" | "false" | "off")
        });
        if perf_map {
            // `perf record` then names the guest's functions (wasmtime writes /tmp/perf-PID.map).
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(target) = config.target.as_deref().or(portable_target()) {
            wasm.target(target).map_err(|e| Error::Runtime(format!("target {target:?}: {e:#}")))?;
        }
        if config.without_avx && cfg!(target_arch = "x86_64") && config.target.is_none() {
            for flag in AVX_AND_LATER {
                // SAFETY: turning a CPU feature off only restricts the instructions cranelift
                // may use to a subset of what this CPU runs.
                unsafe { wasm.cranelift_flag_set(flag, "false") };
            }
        }
        let mut pool = PoolingAllocationConfig::default();
        let max_memory = usize::try_from(config.max_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 5)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .max_memories_per_component(4)
            .max_memories_per_module(2)
            .max_memory_size(max_memory)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .max_unused_warm_slots(config.warm_slots);
        if config.keeps_pages_resident() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(config.keep_resident_bytes)
                .table_keep_resident(64 << 10);
        }
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(Error::runtime)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::runtime)?;
        crate::kernels::add_to_linker(&mut linker).map_err(Error::runtime)?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Arc::new(Runtime { engine, linker, cache, config, shared_code: Mutex::default(), _ticker: ticker }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles (or loads from the verified cache) a component whose digest is `digest`.
    pub fn compile(&self, wasm: &[u8], digest: &str) -> Result<Component> {
        self.cache.load_or_compile(&self.engine, wasm, digest)
    }

    /// Compiles and links a verified component, ready to instantiate. A model component is
    /// split (see `shared_code`): its runtime code module is compiled once per runtime and
    /// shared with every other model of the same edgeinfer build, and only the model's own
    /// small shell (its memory image) is compiled per model. Other components are compiled
    /// whole.
    pub(crate) fn prepare(&self, wasm: &[u8], digest: &str) -> Result<InstancePre<StoreState>> {
        let link_error = |e: wasmtime::Error| Error::Runtime(format!("{e:#}"));
        let native = self.config.native_kernels_used();
        let split_key = self.split_key(digest);
        let (code, shell) = match self.recorded_split(&split_key) {
            Some(parts) => parts,
            None => {
                let Some(split) = crate::shared_code::split(wasm, native) else {
                    let component = self.compile(wasm, digest)?;
                    let linker = self.linker_for(&component).map_err(link_error)?;
                    return linker.instantiate_pre(&component).map_err(link_error);
                };
                let code_digest = crate::digest::sha256_hex(&split.code);
                let code = self.shared_code_module(&split.code, &code_digest)?;
                let key = shell_key(digest, &split.shell);
                let shell = self.compile(&split.shell, &key)?;
                self.cache.record_split(&self.engine, &split_key, &code_digest, &key);
                (code, shell)
            }
        };
        let mut linker = self.linker_for(&shell).map_err(link_error)?;
        linker.root().module(crate::shared_code::CODE_IMPORT, &code).map_err(link_error)?;
        linker.instantiate_pre(&shell).map_err(link_error)
    }

    /// The key of a component's split record: its digest and whether kernels are linked.
    fn split_key(&self, digest: &str) -> String {
        format!("{digest}-{}", if self.config.native_kernels_used() { "native" } else { "wasm" })
    }

    /// The code module and shell a component was split into before, loaded from the cache
    /// without splitting it again; `None` when either is missing (then it is split).
    fn recorded_split(&self, split_key: &str) -> Option<(Module, Component)> {
        let (code_digest, shell_key) = self.cache.split_record(&self.engine, split_key)?;
        let mut modules = self.shared_code.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let code = match modules.get(&code_digest) {
            Some(module) => module.clone(),
            None => {
                let module = self.cache.cached_module(&self.engine, &code_digest)?;
                modules.insert(code_digest, module.clone());
                module
            }
        };
        drop(modules);
        let shell = self.cache.cached(&self.engine, &shell_key)?;
        Some((code, shell))
    }

    /// Compiles a verified component (whose digest is `digest`) into the cache as
    /// [`Self::prepare`] would on a host of this runtime's target, without loading it: with
    /// [`RuntimeConfig::target`], a build machine fills the cache an aarch64 device then
    /// loads from instead of compiling under its own, slower CPU.
    pub fn precompile(&self, wasm: &[u8], digest: &str) -> Result<()> {
        let Some(split) = crate::shared_code::split(wasm, self.config.native_kernels_used()) else {
            return self.cache.precompile(&self.engine, wasm, digest);
        };
        let code_digest = crate::digest::sha256_hex(&split.code);
        self.cache.precompile_module(&self.engine, &split.code, &code_digest)?;
        let key = shell_key(digest, &split.shell);
        self.cache.precompile(&self.engine, &split.shell, &key)?;
        self.cache.record_split(&self.engine, &self.split_key(digest), &code_digest, &key);
        Ok(())
    }

    /// The WASI linker, plus trapping `wasi:http` stubs when `component` imports them.
    pub(crate) fn linker_for(&self, component: &Component) -> wasmtime::Result<Linker<StoreState>> {
        let mut linker = self.linker.clone();
        if crate::http_stubs::imports_http(&self.engine, component) {
            crate::http_stubs::define_http_stubs(&mut linker, &self.engine, component)?;
        }
        Ok(linker)
    }

    /// The compiled code module for `wasm`, compiled (or read from the verified cache) on
    /// first use and shared from then on.
    fn shared_code_module(&self, wasm: &[u8], digest: &str) -> Result<Module> {
        let mut modules = self.shared_code.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(module) = modules.get(digest) {
            return Ok(module.clone());
        }
        let module = self.cache.load_or_compile_module(&self.engine, wasm, digest)?;
        modules.insert(digest.to_string(), module.clone());
        Ok(module)
    }

    /// Asks the kernel to reclaim the resident pages of the shared code modules' images (Linux
    /// `MADV_PAGEOUT`; their contents stay as they are). Loading and the smoke tests touch code
    /// all over the image, and each fault on a file mapping maps its cached neighbours too, so
    /// after loading most of the runtime's code is resident though requests run a fraction of
    /// it; after this, what is resident is what requests run. A no-op where unsupported.
    pub fn release_resident_code(&self) {
        let modules = self.shared_code.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for module in modules.values() {
            let range = module.image_range();
            let length = (range.end as usize).saturating_sub(range.start as usize);
            // SAFETY: the range is the module's own mapped image, page-aligned by wasmtime; with
            // MADV_PAGEOUT the kernel only reclaims pages, their contents are kept (clean file
            // pages are read again, changed ones swapped), so nothing that uses the image changes.
            let advised = unsafe { libc::madvise(range.start as *mut libc::c_void, length, libc::MADV_PAGEOUT) };
            if advised != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "MADV_PAGEOUT on compiled code");
            }
        }
    }

    /// How many distinct runtime code modules are compiled and shared in this runtime.
    pub fn shared_code_modules(&self) -> usize {
        self.shared_code.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// The number of epoch ticks in `timeout_ms`.
    pub(crate) fn deadline_ticks(timeout_ms: u64) -> u64 {
        (timeout_ms / EPOCH_TICK.as_millis() as u64).max(1)
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`]; joins its thread on drop.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker; without it deadlines would never fire, so failing is an error.
    fn start(engine: Engine) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("edgeinfer-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::io("starting the epoch ticker thread (request deadlines need it)", e))?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module that grows its memory and fills it (`fill`), or grows it and counts the bytes
    /// past its data segment that are not zero (`leftovers`).
    const SCRATCH: &str = r#"
        (module
          (memory (export "memory") 1)
          (data (i32.const 0) "snapshot")
          (func $grow (param $pages i32) (result i32)
            (drop (memory.grow (local.get $pages)))
            (i32.mul (memory.size) (i32.const 65536)))
          (func (export "fill") (param $pages i32) (param $value i32)
            (local $end i32)
            (local.set $end (call $grow (local.get $pages)))
            (memory.fill (i32.const 0) (local.get $value) (local.get $end)))
          (func (export "leftovers") (param $pages i32) (result i32)
            (local $end i32) (local $at i32) (local $found i32)
            (local.set $end (call $grow (local.get $pages)))
            (local.set $at (i32.const 8))
            (block $done
              (loop $scan
                (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
                (if (i32.load8_u (local.get $at))
                  (then (local.set $found (i32.add (local.get $found) (i32.const 1)))))
                (local.set $at (i32.add (local.get $at) (i32.const 1)))
                (br $scan)))
            (local.get $found))
          (func (export "snapshot_intact") (result i32)
            (i64.eq (i64.load (i32.const 0)) (i64.const 0x746f687370616e73))))
    "#;

    /// Pool slots keep pages resident between instances (32 MiB by default), but a fresh
    /// instance in a reused slot sees only its snapshot and zeros: nothing another request
    /// wrote, in the kept range or past it.
    #[test]
    fn a_reused_pool_slot_shows_nothing_of_the_previous_instance() {
        let cache = tempfile::tempdir().expect("tempdir");
        let config = RuntimeConfig { cache_dir: cache.path().into(), max_instances: 1, ..RuntimeConfig::default() };
        let runtime = Runtime::new(config).expect("runtime");
        let module = Module::new(runtime.engine(), wat::parse_str(SCRATCH).expect("wat")).expect("module");
        // 96 MiB: past the default 32 MiB kept resident.
        let pages = 96 * 16;
        for round in 0..3 {
            let mut writer = wasmtime::Store::new(runtime.engine(), ());
            writer.set_fuel(u64::MAX).expect("fuel");
            writer.set_epoch_deadline(u64::MAX / 2);
            let instance = wasmtime::Instance::new(&mut writer, &module, &[]).expect("instance");
            let fill = instance.get_typed_func::<(i32, i32), ()>(&mut writer, "fill").expect("fill");
            fill.call(&mut writer, (pages, 0xab)).expect("fill");
            drop(writer);

            let mut reader = wasmtime::Store::new(runtime.engine(), ());
            reader.set_fuel(u64::MAX).expect("fuel");
            reader.set_epoch_deadline(u64::MAX / 2);
            let instance = wasmtime::Instance::new(&mut reader, &module, &[]).expect("instance");
            let intact = instance.get_typed_func::<(), i32>(&mut reader, "snapshot_intact").expect("intact");
            assert_eq!(intact.call(&mut reader, ()).expect("intact"), 1, "round {round}: snapshot altered");
            let leftovers = instance.get_typed_func::<i32, i32>(&mut reader, "leftovers").expect("leftovers");
            assert_eq!(leftovers.call(&mut reader, pages).expect("scan"), 0, "round {round}: another instance's bytes");
        }
    }
}

/// Hostile calls of the native kernels, end to end: a model-shaped component whose kernel
/// export the host links natively (here, where `prepare` is reachable).
#[cfg(test)]
mod native_kernel_tests {
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
            export = crate::kernels::GUEST_EXPORT,
        ))
        .expect("wat")
    }

    /// A store with room to run the test component: 64 MiB, no deadline, ample fuel.
    fn roomy_store(runtime: &Runtime) -> wasmtime::Store<StoreState> {
        let mut store = wasmtime::Store::new(runtime.engine(), StoreState::new(64 << 20));
        store.set_epoch_deadline(1 << 40);
        store.set_fuel(1 << 40).expect("fuel");
        store
    }

    #[test]
    fn hostile_kernel_calls_trap_with_a_clear_error_and_the_host_carries_on() {
        let cache = tempfile::tempdir().expect("cache dir");
        let runtime = Runtime::new(RuntimeConfig { cache_dir: cache.path().to_path_buf(), ..RuntimeConfig::default() })
            .expect("runtime");
        let wasm = hostile_component();
        let pre = runtime.prepare(&wasm, &crate::sha256_hex(&wasm)).expect("prepared");
        assert!(
            pre.component()
                .component_type()
                .imports(runtime.engine())
                .any(|(name, _)| name == crate::kernels::COMPONENT_IMPORT),
            "the kernel is linked to the host"
        );
        let call = |args: (u32, u32, u32)| -> Result<f32, String> {
            let mut store = roomy_store(&runtime);
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
        let mut store = roomy_store(&runtime);
        let instance = pre.instantiate(&mut store).expect("instance");
        let run = instance.get_typed_func::<(u32, u32, u32), (f32,)>(&mut store, "run").expect("run");
        let error =
            run.call(&mut store, (0, 1, 70_000)).expect_err("an output in the second page traps before it exists");
        assert!(format!("{error:#}").contains("output at offset 70000"), "{error:#}");
        // A trapped instance cannot be entered again: a fresh one grows, then calls.
        let mut store = roomy_store(&runtime);
        let instance = pre.instantiate(&mut store).expect("instance");
        let run = instance.get_typed_func::<(u32, u32, u32), (f32,)>(&mut store, "run").expect("run");
        let grow = instance.get_typed_func::<(), (i32,)>(&mut store, "grow").expect("grow");
        assert_eq!(grow.call(&mut store, ()).expect("grows").0, 1);
        assert_eq!(run.call(&mut store, (0, 1, 70_000)).expect("the grown page is in view").0, 2.0);
    }
}
