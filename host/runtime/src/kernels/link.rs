//! Links the guest's batched tile kernel to the host: rewrites the shared code module so the
//! exported `edgeinfer_mmm_f32_8x8_tiles` calls two new imports instead of running its wasm
//! body. Nothing else changes; every function index past the imports moves up by two.
//!
//! The new body, for `(specs, tiles, out, ret) -> status`:
//!
//! ```text
//! (call $set-out (local.get out))            ;; where the canonical ABI's realloc answers
//! (call $mmm (i32.const 0) (memory.size << 16) ;; the whole memory as list<u8>
//!            (local.get specs) (local.get tiles) (local.get out) (local.get ret))
//! (i32.const 0)
//! ```
//!
//! `$mmm` is the lowering of [`super::COMPONENT_IMPORT`]
//! (`func(memory: list<u8>, specs: u32, tiles: u32, out: u32) -> list<f32>`; `out` only so
//! the host can refuse an output overlapping what it reads): the host returns the tiles, wasmtime asks the shell's realloc for room (which answers `out`, checked in bounds
//! and alignment by wasmtime) and copies them there, then writes `(out, 64 tiles)` at `ret`.

use wasm_encoder::reencode::{Error, Reencode};
use wasm_encoder::{CodeSection, Function, ImportSection, TypeSection, ValType};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

/// The core import module the linked code module imports the kernel from.
pub(crate) const KERNEL_MODULE: &str = "edgeinfer:native-kernels";
/// The kernel itself (the lowered [`super::COMPONENT_IMPORT`]).
pub(crate) const MMM: &str = "mmm-f32-8x8-tiles";
/// Sets the address the realloc given to the lowering answers.
pub(crate) const SET_OUT: &str = "set-out";

/// What the rewrite needs to know about the module.
struct Scan {
    types: u32,
    imported_funcs: u32,
    target: u32,
}

/// The code module with the kernel linked to the host, or `None` when it has no such
/// kernel export of the expected type (an older or foreign runtime: it keeps its wasm body).
pub(crate) fn link(code: &[u8]) -> Option<Vec<u8>> {
    let scan = scan(code)?;
    let mut rewrite = Rewrite { scan, defined: 0 };
    let mut module = wasm_encoder::Module::new();
    wasm_encoder::reencode::utils::parse_core_module(&mut rewrite, &mut module, Parser::new(0), code).ok()?;
    Some(module.finish())
}

fn scan(code: &[u8]) -> Option<Scan> {
    let mut types = Vec::new();
    let mut imported_funcs = 0u32;
    let mut function_types = Vec::new();
    let mut target = None;
    let mut saw_imports = false;
    for payload in Parser::new(0).parse_all(code) {
        match payload.ok()? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for ty in group.ok()?.into_types() {
                        types.push(ty.composite_type.inner.clone());
                    }
                }
            }
            Payload::ImportSection(reader) => {
                saw_imports = true;
                for import in reader.into_imports() {
                    if matches!(import.ok()?.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)) {
                        imported_funcs += 1;
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    function_types.push(ty.ok()?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.ok()?;
                    if export.name == super::GUEST_EXPORT && export.kind == ExternalKind::Func {
                        target = Some(export.index);
                    }
                }
            }
            _ => {}
        }
    }
    let target = target?;
    let ty = function_types.get(target.checked_sub(imported_funcs)? as usize)?;
    let wasmparser::CompositeInnerType::Func(func) = types.get(*ty as usize)? else { return None };
    let i32 = wasmparser::ValType::I32;
    let expected = func.params() == [i32, i32, i32, i32] && func.results() == [i32];
    (expected && saw_imports).then_some(Scan { types: u32::try_from(types.len()).ok()?, imported_funcs, target })
}

struct Rewrite {
    scan: Scan,
    /// Defined functions seen so far in the code section.
    defined: u32,
}

impl Rewrite {
    fn mmm_index(&self) -> u32 {
        self.scan.imported_funcs
    }

    fn set_out_index(&self) -> u32 {
        self.scan.imported_funcs + 1
    }

    fn linked_body(&self) -> Function {
        let mut body = Function::new([]);
        body.instructions()
            .local_get(2)
            .call(self.set_out_index())
            .i32_const(0)
            .memory_size(0)
            .i32_const(16)
            .i32_shl()
            .local_get(0)
            .local_get(1)
            .local_get(2)
            .local_get(3)
            .call(self.mmm_index())
            .i32_const(0)
            .end();
        body
    }
}

impl Reencode for Rewrite {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, Error<Self::Error>> {
        Ok(if func >= self.scan.imported_funcs { func + 2 } else { func })
    }

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_type_section(self, types, section)?;
        types.ty().function([ValType::I32; 6], []);
        types.ty().function([ValType::I32], []);
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_import_section(self, imports, section)?;
        imports.import(KERNEL_MODULE, MMM, wasm_encoder::EntityType::Function(self.scan.types));
        imports.import(KERNEL_MODULE, SET_OUT, wasm_encoder::EntityType::Function(self.scan.types + 1));
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), Error<Self::Error>> {
        let index = self.scan.imported_funcs + self.defined;
        self.defined += 1;
        if index == self.scan.target {
            code.function(&self.linked_body());
            Ok(())
        } else {
            wasm_encoder::reencode::utils::parse_function_body(self, code, func)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_body_is_replaced_and_every_call_still_reaches_its_function() {
        let module = wat::parse_str(format!(
            r#"(module
                (import "wasi" "f" (func $f (param i32)))
                (import "edgeinfer:model-state" "memory" (memory 1))
                (func $helper (result i32) (i32.const 7))
                (func $kernel (export "{export}") (param i32 i32 i32 i32) (result i32) (i32.const 1))
                (func (export "run") (result i32)
                    (call $f (i32.const 0))
                    (drop (call $helper))
                    (call $kernel (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
                (table 1 funcref) (elem (i32.const 0) $helper))"#,
            export = super::super::GUEST_EXPORT
        ))
        .expect("wat");
        let linked = link(&module).expect("linked");
        wasmparser::Validator::new().validate_all(&linked).expect("the linked module validates");
        let printed: Vec<String> = Parser::new(0)
            .parse_all(&linked)
            .filter_map(|p| match p {
                Ok(Payload::ImportSection(r)) => Some(
                    r.into_imports()
                        .map(|i| i.expect("import"))
                        .map(|i| format!("{}.{}", i.module, i.name))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            printed,
            [
                "wasi.f",
                "edgeinfer:model-state.memory",
                "edgeinfer:native-kernels.mmm-f32-8x8-tiles",
                "edgeinfer:native-kernels.set-out"
            ]
        );
        // Run it: the kernel now calls the imports; the helper (moved from index 1 to 3) is
        // still what the table and the direct call reach.
        let engine = wasmtime::Engine::default();
        let compiled = wasmtime::Module::new(&engine, &linked).expect("compiles");
        let mut store = wasmtime::Store::new(&engine, Vec::<String>::new());
        let mut linker = wasmtime::Linker::new(&engine);
        linker
            .func_wrap("wasi", "f", |mut c: wasmtime::Caller<'_, Vec<String>>, _: i32| c.data_mut().push("f".into()))
            .expect("f");
        linker
            .func_wrap(
                KERNEL_MODULE,
                MMM,
                |mut c: wasmtime::Caller<'_, Vec<String>>, p: i32, len: i32, s: i32, t: i32, o: i32, r: i32| {
                    c.data_mut().push(format!("mmm {p} {len} {s} {t} {o} {r}"))
                },
            )
            .expect("mmm");
        linker
            .func_wrap(KERNEL_MODULE, SET_OUT, |mut c: wasmtime::Caller<'_, Vec<String>>, out: i32| {
                c.data_mut().push(format!("out {out}"))
            })
            .expect("set-out");
        let memory = wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(1, None)).expect("memory");
        linker.define(&mut store, "edgeinfer:model-state", "memory", memory).expect("memory");
        let instance = linker.instantiate(&mut store, &compiled).expect("instantiates");
        let run = instance.get_typed_func::<(), i32>(&mut store, "run").expect("run");
        assert_eq!(run.call(&mut store, ()).expect("runs"), 0, "the linked body answers 0");
        assert_eq!(store.data(), &["f", "out 0", "mmm 0 65536 0 0 0 0"]);
    }

    #[test]
    fn a_module_without_the_kernel_is_left_alone() {
        let module =
            wat::parse_str(r#"(module (import "a" "b" (func)) (func (export "edgeinfer_mmm_f32_8x8_tiles")))"#)
                .expect("wat");
        assert!(link(&module).is_none(), "wrong type: not linked");
        let module = wat::parse_str("(module (func))").expect("wat");
        assert!(link(&module).is_none());
    }
}
