//! Splits a model component so the runtime's compiled code is shared by every model.
//!
//! A model component is the runtime component with one core module snapshotted by Wizer: the
//! snapshot changes that module's memory (its initial size and data segments) and nothing
//! else, so its code is byte-identical in every model compiled by one edgeinfer build. The host
//! loads a component as two parts, never changing the file (its sha256, the `spin up` and
//! `wasmtime serve` paths stay as they are):
//!
//! - the **code module**: the snapshotted module with its memory imported instead of defined
//!   and its data segments removed; identical bytes for every model, so it is compiled once and
//!   mapped once per runtime however many models are loaded;
//! - the **shell**: the component with that module replaced by an import of it
//!   ([`CODE_IMPORT`]) and a small **state module** added, which defines the memory with the
//!   model's data segments (the weights and the parsed plan) and is instantiated first to give
//!   the code module its memory. Its memory image stays copy-on-write, as before. With native
//!   kernels, the code module's batched tile kernel is linked to the host ([`link`]) and the
//!   shell also lowers the host's kernel with that memory ([`crate::kernels`]). Everything the
//!   shell adds comes first (the prefix), and the original component's top-level indices are
//!   moved past it.
//!
//! Components of any other shape (hand-written test components, nested components) are not
//! split: [`split`] returns `None` and the host compiles them whole.

use crate::kernels::link;
use wasm_encoder::reencode::{Error as ReencodeError, Reencode, ReencodeComponent, RoundtripReencoder};
use wasm_encoder::{
    ComponentAliasSection, ComponentImportSection, ComponentSectionId, ComponentTypeRef, CoreTypeSection, EntityType,
    ExportKind, ExportSection, ImportSection, InstanceSection, MemorySection, Module, ModuleArg, ModuleType,
    RawSection, SectionId,
};
use wasmparser::{Chunk, ExternalKind, Parser, Payload, TypeRef};

/// The name under which the shell imports the code module.
pub const CODE_IMPORT: &str = "edgeinfer-runtime-code";

/// The import module name through which the code module receives its memory.
const STATE_MODULE: &str = "edgeinfer:model-state";

/// A model component split into the shared code module and the model's own shell.
#[derive(Debug)]
pub struct SplitComponent {
    /// The code module (a core module): identical for every model of one runtime build.
    pub code: Vec<u8>,
    /// The component importing [`Self::code`] as [`CODE_IMPORT`], with the model's memory.
    pub shell: Vec<u8>,
}

/// Splits `component`, or `None` when it does not have the shape of a model component. With
/// `native_kernels`, a code module that has the batched tile kernel gets it linked to the host
/// (see [`crate::kernels`]); one without keeps its wasm body.
pub fn split(component: &[u8], native_kernels: bool) -> Option<SplitComponent> {
    let sections = top_level_sections(component)?;
    let target = snapshotted_module(component, &sections)?;
    let module = &component[sections[target.section].range.clone()];
    let mut parts = split_module(module)?;
    let linked = if native_kernels { link::link(&parts.code) } else { None };
    let native = linked.is_some();
    if let Some(linked) = linked {
        parts.code_type = module_type(&linked)?;
        parts.code = linked;
    }
    let shell = shell(component, &target, &parts, native)?;
    Some(SplitComponent { code: parts.code, shell })
}

/// One top-level section of a component: its id and content range.
struct Section {
    id: u8,
    range: std::ops::Range<usize>,
}

/// The top-level sections of a component, nested modules skipped over as one section each.
fn top_level_sections(bytes: &[u8]) -> Option<Vec<Section>> {
    let mut parser = Parser::new(0);
    let mut offset = 0;
    let mut sections = Vec::new();
    loop {
        let Chunk::Parsed { consumed, payload } = parser.parse(&bytes[offset..], true).ok()? else {
            return None;
        };
        offset += consumed;
        match &payload {
            Payload::Version { encoding: wasmparser::Encoding::Component, .. } => {}
            Payload::Version { .. } => return None,
            Payload::End(_) => return Some(sections),
            Payload::ModuleSection { unchecked_range, .. } | Payload::ComponentSection { unchecked_range, .. } => {
                // The parser has moved past the nested module; its bytes are skipped here.
                sections.push(Section { id: payload.as_section()?.0, range: unchecked_range.clone() });
                offset += unchecked_range.len();
            }
            _ => {
                let (id, range) = payload.as_section()?;
                sections.push(Section { id, range });
            }
        }
    }
}

/// Where the snapshotted module sits: its section and its core module index.
struct Target {
    section: usize,
    module_index: u32,
}

/// Finds the one module that defines a memory with data (the runtime's main module); refuses
/// shapes the rewrite does not handle (module imports and exports, outer module aliases,
/// core types, a second memory-defining or a memory-importing module).
fn snapshotted_module(bytes: &[u8], sections: &[Section]) -> Option<Target> {
    let mut found = None;
    let mut module_index = 0;
    for (position, section) in sections.iter().enumerate() {
        let reader = reader_at(bytes, section);
        let refused = match section.id {
            id if id == ComponentSectionId::CoreModule as u8 => {
                let memory = memory_use(&bytes[section.range.clone()]);
                let first = memory == MemoryUse::DefinesWithData && found.is_none();
                if first {
                    found = Some(Target { section: position, module_index });
                }
                module_index += 1;
                !first && memory != MemoryUse::Other
            }
            id if id == ComponentSectionId::CoreType as u8 => true,
            // wit-component wraps exports in nested components that only ascribe types; one
            // that aliases a core module of ours would see its index shift.
            id if id == ComponentSectionId::Component as u8 => {
                Parser::new(0).parse_all(&bytes[section.range.clone()]).any(|payload| match payload {
                    Ok(Payload::ComponentAliasSection(reader)) => aliases_outer_module(reader),
                    Ok(_) => false,
                    Err(_) => true,
                })
            }
            id if id == ComponentSectionId::Alias as u8 => {
                aliases_outer_module(wasmparser::ComponentAliasSectionReader::new(reader).ok()?)
            }
            id if id == ComponentSectionId::Import as u8 => wasmparser::ComponentImportSectionReader::new(reader)
                .ok()?
                .into_iter()
                .any(|import| matches!(import.map(|i| i.ty), Ok(wasmparser::ComponentTypeRef::Module(_)) | Err(_))),
            id if id == ComponentSectionId::Export as u8 => wasmparser::ComponentExportSectionReader::new(reader)
                .ok()?
                .into_iter()
                .any(|export| matches!(export.map(|e| e.kind), Ok(wasmparser::ComponentExternalKind::Module) | Err(_))),
            _ => false,
        };
        if refused {
            return None;
        }
    }
    found
}

/// Whether an alias section aliases an outer core module (or cannot be read).
fn aliases_outer_module(reader: wasmparser::ComponentAliasSectionReader<'_>) -> bool {
    reader.into_iter().any(|alias| {
        matches!(
            alias,
            Ok(wasmparser::ComponentAlias::Outer { kind: wasmparser::ComponentOuterAliasKind::CoreModule, .. })
                | Err(_)
        )
    })
}

fn reader_at<'a>(bytes: &'a [u8], section: &Section) -> wasmparser::BinaryReader<'a> {
    wasmparser::BinaryReader::new(&bytes[section.range.clone()], section.range.start)
}

/// How a core module uses memory.
#[derive(PartialEq)]
enum MemoryUse {
    /// Defines exactly one memory, imports none, has data segments: a snapshotted module.
    DefinesWithData,
    /// Imports a memory (e.g. Wizer's accessors of the instrumented runtime): the code
    /// module's memory type would have to match that import, so the component is not split.
    Imports,
    Other,
}

fn memory_use(module: &[u8]) -> MemoryUse {
    let (mut memories, mut data) = (0, false);
    for payload in Parser::new(0).parse_all(module) {
        match payload {
            Ok(Payload::MemorySection(reader)) => memories += reader.count(),
            Ok(Payload::DataSection(reader)) => data |= reader.count() > 0,
            Ok(Payload::ImportSection(reader)) => {
                let imports_memory = reader.into_imports().any(|i| matches!(i.map(|i| i.ty), Ok(TypeRef::Memory(_))));
                if imports_memory {
                    return MemoryUse::Imports;
                }
            }
            Ok(_) => {}
            Err(_) => return MemoryUse::Other,
        }
    }
    if memories == 1 && data { MemoryUse::DefinesWithData } else { MemoryUse::Other }
}

/// The snapshotted module's two halves and the code module's type.
struct ModuleParts {
    code: Vec<u8>,
    state: Vec<u8>,
    code_type: ModuleType,
}

/// Splits the snapshotted core module into the code module (memory imported, no data) and the
/// state module (the memory and its data segments, exported).
fn split_module(module: &[u8]) -> Option<ModuleParts> {
    let mut code = Module::new();
    let mut state_memory = None;
    let mut state_data = None;
    let mut saw_imports = false;
    let mut parser = Parser::new(0);
    let mut offset = 0;
    let memory = shared_memory_type(module)?;
    loop {
        let Chunk::Parsed { consumed, payload } = parser.parse(&module[offset..], true).ok()? else {
            return None;
        };
        let raw = |range: std::ops::Range<usize>, id: u8| RawSection { id, data: &module[range] };
        offset += consumed;
        // A module without imports gets an import section for its memory before its first
        // section that must follow imports.
        let follows_imports = !matches!(
            payload,
            Payload::Version { .. } | Payload::TypeSection(_) | Payload::ImportSection(_) | Payload::CustomSection(_)
        );
        if follows_imports && !saw_imports {
            saw_imports = true;
            code.section(ImportSection::new().import(STATE_MODULE, "memory", EntityType::Memory(memory)));
        }
        match payload {
            Payload::Version { .. } => {}
            Payload::End(_) => break,
            Payload::ImportSection(reader) => {
                saw_imports = true;
                let mut section = ImportSection::new();
                for import in reader.into_imports() {
                    let import = import.ok()?;
                    if matches!(import.ty, TypeRef::Memory(_) | TypeRef::Tag(_)) {
                        return None;
                    }
                    section.import(import.module, import.name, RoundtripReencoder.entity_type(import.ty).ok()?);
                }
                // The memory becomes the last import; the memory section is dropped.
                section.import(STATE_MODULE, "memory", EntityType::Memory(memory));
                code.section(&section);
            }
            Payload::MemorySection(reader) => {
                let memory = reader.into_iter().next()?.ok()?;
                state_memory = Some(RoundtripReencoder.memory_type(memory).ok()?);
            }
            Payload::DataSection(reader) => state_data = Some(reader.range()),
            Payload::DataCountSection { .. } => {}
            Payload::CodeSectionStart { range, size, .. } => {
                code.section(&raw(range, SectionId::Code as u8));
                parser.skip_section();
                offset += size as usize;
            }
            Payload::StartSection { .. } | Payload::TagSection(_) => return None,
            other => {
                let (id, range) = other.as_section()?;
                code.section(&raw(range, id));
            }
        }
    }
    let mut state = Module::new();
    state.section(MemorySection::new().memory(state_memory?));
    state.section(ExportSection::new().export("memory", ExportKind::Memory, 0));
    state.section(&RawSection { id: SectionId::Data as u8, data: &module[state_data?] });
    let code = code.finish();
    let code_type = module_type(&code)?;
    Some(ModuleParts { code, state: state.finish(), code_type })
}

/// The type of a core module: its function types, imports and exports.
fn module_type(module: &[u8]) -> Option<ModuleType> {
    let mut module_type = ModuleType::new();
    let mut functions: Vec<u32> = Vec::new();
    let mut tables = Vec::new();
    let mut globals = Vec::new();
    let mut memories = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.ok()? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let func = RoundtripReencoder.func_type(ty.ok()?).ok()?;
                    module_type.ty().function(func.params().iter().copied(), func.results().iter().copied());
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.ok()?;
                    let ty = RoundtripReencoder.entity_type(import.ty).ok()?;
                    match ty {
                        EntityType::Function(f) => functions.push(f),
                        EntityType::Table(t) => tables.push(t),
                        EntityType::Global(g) => globals.push(g),
                        EntityType::Memory(m) => memories.push(m),
                        _ => return None,
                    }
                    module_type.import(import.module, import.name, ty);
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    functions.push(ty.ok()?);
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    tables.push(RoundtripReencoder.table_type(table.ok()?.ty).ok()?);
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    memories.push(RoundtripReencoder.memory_type(memory.ok()?).ok()?);
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    globals.push(RoundtripReencoder.global_type(global.ok()?.ty).ok()?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.ok()?;
                    let index = export.index as usize;
                    let ty = match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => EntityType::Function(*functions.get(index)?),
                        ExternalKind::Table => EntityType::Table(*tables.get(index)?),
                        ExternalKind::Global => EntityType::Global(*globals.get(index)?),
                        ExternalKind::Memory => EntityType::Memory(*memories.get(index)?),
                        _ => return None,
                    };
                    module_type.export(export.name, ty);
                }
            }
            _ => {}
        }
    }
    Some(module_type)
}

/// The memory type the code module imports: the module's own with no minimum, so every
/// model's state memory (whatever its snapshot size) satisfies it and the bytes never vary.
fn shared_memory_type(module: &[u8]) -> Option<wasm_encoder::MemoryType> {
    for payload in Parser::new(0).parse_all(module) {
        if let Ok(Payload::MemorySection(reader)) = payload {
            let memory = reader.into_iter().next()?.ok()?;
            let mut ty = RoundtripReencoder.memory_type(memory).ok()?;
            ty.minimum = 0;
            return Some(ty);
        }
    }
    None
}

/// How far each index space at the shell's top level moves: by what the prefix defines.
#[derive(Clone, Copy, Default)]
struct Shift {
    modules: u32,
    instances: u32,
    memories: u32,
    core_funcs: u32,
    types: u32,
    funcs: u32,
}

/// Writes the shell: the prefix, then the component with every top-level index moved past
/// it, the snapshotted module replaced by the import of the code module, and that module's
/// instantiation given the state (and kernel) instances.
struct ShellWriter<'a> {
    parts: &'a ModuleParts,
    shift: Shift,
    /// Nesting below the shell's top level (nested components, type scopes, modules).
    depth: u32,
    target_module: u32,
    /// Top-level core modules seen so far, in the original numbering.
    modules_seen: u32,
    code_instances: u32,
    native: bool,
}

impl ShellWriter<'_> {
    fn at_top(&self) -> bool {
        self.depth == 0
    }

    /// Whether an outer alias `count` scopes up from here names the top level.
    fn names_top(&self, count: u32) -> bool {
        self.depth.checked_sub(count) == Some(0)
    }

    /// The prefix: the state module and its instance first; with native kernels, the realloc
    /// shim, the kernel's component import lowered with the state memory, and the core
    /// instance the code module imports it from.
    fn prefix(&self, shell: &mut wasm_encoder::Component) {
        shell.section(&RawSection { id: ComponentSectionId::CoreModule as u8, data: &self.parts.state });
        if !self.native {
            let mut instances = InstanceSection::new();
            instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
            shell.section(&instances);
            return;
        }
        shell.section(&wasm_encoder::ModuleSection(&realloc_shim()));
        let mut instances = InstanceSection::new();
        instances.instantiate(0, Vec::<(&str, ModuleArg)>::new()).instantiate(1, Vec::<(&str, ModuleArg)>::new());
        shell.section(&instances);
        let mut aliases = ComponentAliasSection::new();
        for (instance, kind, name) in
            [(0, ExportKind::Memory, "memory"), (1, ExportKind::Func, "realloc"), (1, ExportKind::Func, "set-out")]
        {
            aliases.alias(wasm_encoder::Alias::CoreInstanceExport { instance, kind, name });
        }
        shell.section(&aliases);
        let mut types = wasm_encoder::ComponentTypeSection::new();
        types.defined_type().list(wasm_encoder::PrimitiveValType::U8);
        types.defined_type().list(wasm_encoder::PrimitiveValType::F32);
        let u32 = wasm_encoder::ComponentValType::Primitive(wasm_encoder::PrimitiveValType::U32);
        types
            .function()
            .params([("memory", wasm_encoder::ComponentValType::Type(0)), ("specs", u32), ("tiles", u32), ("out", u32)])
            .result(Some(wasm_encoder::ComponentValType::Type(1)));
        shell.section(&types);
        let mut import = ComponentImportSection::new();
        import.import(crate::kernels::COMPONENT_IMPORT, ComponentTypeRef::Func(2));
        shell.section(&import);
        let mut canon = wasm_encoder::CanonicalFunctionSection::new();
        canon.lower(0, [wasm_encoder::CanonicalOption::Memory(0), wasm_encoder::CanonicalOption::Realloc(0)]);
        shell.section(&canon);
        let mut bundle = InstanceSection::new();
        bundle.export_items([(link::MMM, ExportKind::Func, 2), (link::SET_OUT, ExportKind::Func, 1)]);
        shell.section(&bundle);
    }
}

impl Reencode for ShellWriter<'_> {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, ReencodeError<Self::Error>> {
        Ok(if self.at_top() { func + self.shift.core_funcs } else { func })
    }

    fn memory_index(&mut self, memory: u32) -> Result<u32, ReencodeError<Self::Error>> {
        Ok(if self.at_top() { memory + self.shift.memories } else { memory })
    }
}

impl ReencodeComponent for ShellWriter<'_> {
    fn component_type_index(&mut self, ty: u32) -> u32 {
        if self.at_top() { ty + self.shift.types } else { ty }
    }

    fn component_func_index(&mut self, func: u32) -> u32 {
        if self.at_top() { func + self.shift.funcs } else { func }
    }

    fn module_index(&mut self, module: u32) -> u32 {
        if self.at_top() { module + self.shift.modules } else { module }
    }

    fn instance_index(&mut self, instance: u32) -> u32 {
        if self.at_top() { instance + self.shift.instances } else { instance }
    }

    fn outer_component_type_index(&mut self, count: u32, ty: u32) -> u32 {
        if self.names_top(count) { ty + self.shift.types } else { ty }
    }

    fn push_depth(&mut self) {
        self.depth += 1;
    }

    fn pop_depth(&mut self) {
        self.depth -= 1;
    }

    fn parse_component_submodule(
        &mut self,
        component: &mut wasm_encoder::Component,
        _parser: Parser,
        module: &[u8],
    ) -> Result<(), ReencodeError<Self::Error>> {
        let index = self.modules_seen;
        self.modules_seen += 1;
        if index == self.target_module {
            let mut types = CoreTypeSection::new();
            types.ty().module(&self.parts.code_type);
            component.section(&types);
            let mut import = ComponentImportSection::new();
            import.import(CODE_IMPORT, ComponentTypeRef::Module(0));
            component.section(&import);
        } else {
            // Core modules have no component indices: copied as they are.
            component.section(&RawSection { id: ComponentSectionId::CoreModule as u8, data: module });
        }
        Ok(())
    }

    fn parse_instance_section(
        &mut self,
        instances: &mut InstanceSection,
        section: wasmparser::InstanceSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        for instance in section {
            match instance? {
                wasmparser::Instance::Instantiate { module_index, args }
                    if self.at_top() && module_index == self.target_module =>
                {
                    self.code_instances += 1;
                    let mut new_args: Vec<(&str, ModuleArg)> = Vec::new();
                    for arg in args.iter() {
                        new_args.push((arg.name, ModuleArg::Instance(self.instance_index(arg.index))));
                    }
                    new_args.push((STATE_MODULE, ModuleArg::Instance(0)));
                    if self.native {
                        new_args.push((link::KERNEL_MODULE, ModuleArg::Instance(2)));
                    }
                    instances.instantiate(self.module_index(module_index), new_args);
                }
                instance => self.parse_instance(instances, instance)?,
            }
        }
        Ok(())
    }
}

/// A core module with a mutable global: `set-out` stores an address, `realloc` answers it.
/// The shell gives it to the kernel's lowering as its realloc, so the tiles the host returns
/// land where the guest asked (wasmtime checks the answer's bounds and alignment).
fn realloc_shim() -> Module {
    let mut module = Module::new();
    let mut types = wasm_encoder::TypeSection::new();
    types.ty().function([wasm_encoder::ValType::I32], []);
    types.ty().function([wasm_encoder::ValType::I32; 4], [wasm_encoder::ValType::I32]);
    module.section(&types);
    let mut functions = wasm_encoder::FunctionSection::new();
    functions.function(0).function(1);
    module.section(&functions);
    let mut globals = wasm_encoder::GlobalSection::new();
    globals.global(
        wasm_encoder::GlobalType { val_type: wasm_encoder::ValType::I32, mutable: true, shared: false },
        &wasm_encoder::ConstExpr::i32_const(0),
    );
    module.section(&globals);
    let mut exports = ExportSection::new();
    exports.export("set-out", ExportKind::Func, 0).export("realloc", ExportKind::Func, 1);
    module.section(&exports);
    let mut code = wasm_encoder::CodeSection::new();
    let mut set_out = wasm_encoder::Function::new([]);
    set_out.instructions().local_get(0).global_set(0).end();
    let mut realloc = wasm_encoder::Function::new([]);
    realloc.instructions().global_get(0).end();
    code.function(&set_out).function(&realloc);
    module.section(&code);
    module
}

/// Writes the shell (see [`ShellWriter`]).
fn shell(bytes: &[u8], target: &Target, parts: &ModuleParts, native: bool) -> Option<Vec<u8>> {
    let shift = if native {
        Shift { modules: 2, instances: 3, memories: 1, core_funcs: 3, types: 3, funcs: 1 }
    } else {
        Shift { modules: 1, instances: 1, ..Shift::default() }
    };
    let mut writer = ShellWriter {
        parts,
        shift,
        depth: 0,
        target_module: target.module_index,
        modules_seen: 0,
        code_instances: 0,
        native,
    };
    let mut shell = wasm_encoder::Component::new();
    writer.prefix(&mut shell);
    writer.parse_component(&mut shell, Parser::new(0), bytes).ok()?;
    (writer.code_instances == 1).then(|| shell.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_without_a_snapshotted_module_is_not_split() {
        let component = wat::parse_str(
            r#"(component
                (core module $m (func (export "f")))
                (core instance (instantiate $m)))"#,
        )
        .expect("wat");
        assert!(split(&component, true).is_none());
        assert!(split(b"\0asm\x01\0\0\0", true).is_none(), "a core module is not a component");
    }

    #[test]
    fn a_snapshotted_module_is_split_into_code_and_state() {
        let component = wat::parse_str(
            r#"(component
                (core module $m
                  (memory (export "memory") 2)
                  (global $g (mut i32) (i32.const 7))
                  (func (export "get") (result i32) (i32.load (i32.const 16)))
                  (data (i32.const 16) "\2a\00\00\00"))
                (core instance $i (instantiate $m))
                (func (export "get") (result s32) (canon lift (core func $i "get"))))"#,
        )
        .expect("wat");
        let split = split(&component, true).expect("split");
        let mut features = wasmparser::WasmFeatures::default();
        features.insert(wasmparser::WasmFeatures::COMPONENT_MODEL);
        wasmparser::Validator::new_with_features(features).validate_all(&split.code).expect("code module validates");
        assert!(!split.code.windows(4).any(|w| w == b"\x2a\0\0\0"), "the data stays out of the code module");
        let imports: Vec<_> = Parser::new(0)
            .parse_all(&split.shell)
            .filter_map(|p| match p {
                Ok(Payload::ComponentImportSection(r)) => Some(r.into_iter().map(|i| i.expect("import").name.name)),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(imports, [CODE_IMPORT]);
        wasmparser::Validator::new_with_features(features).validate_all(&split.shell).expect("shell validates");
    }
}
