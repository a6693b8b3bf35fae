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
//!   the code module its memory. Its memory image stays copy-on-write, as before.
//!
//! Components of any other shape (hand-written test components, nested components) are not
//! split: [`split`] returns `None` and the host compiles them whole.

use wasm_encoder::reencode::{Reencode, ReencodeComponent, RoundtripReencoder};
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

/// Splits `component`, or `None` when it does not have the shape of a model component.
pub fn split(component: &[u8]) -> Option<SplitComponent> {
    let sections = top_level_sections(component)?;
    let target = snapshotted_module(component, &sections)?;
    let module = &component[sections[target.section].range.clone()];
    let parts = split_module(module)?;
    let shell = shell(component, &sections, &target, &parts)?;
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
    let mut types = Vec::new();
    let mut imports = Vec::new();
    let mut functions: Vec<u32> = Vec::new();
    let mut tables = Vec::new();
    let mut globals = Vec::new();
    let mut exports = Vec::new();
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
            imports.push((STATE_MODULE.to_string(), "memory".to_string(), EntityType::Memory(memory)));
        }
        match payload {
            Payload::Version { .. } => {}
            Payload::End(_) => break,
            Payload::TypeSection(reader) => {
                for ty in reader.clone().into_iter_err_on_gc_types() {
                    types.push(ty.ok()?);
                }
                code.section(&raw(reader.range(), SectionId::Type as u8));
            }
            Payload::ImportSection(reader) => {
                saw_imports = true;
                let mut section = ImportSection::new();
                for import in reader.into_imports() {
                    let import = import.ok()?;
                    match import.ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => functions.push(ty),
                        TypeRef::Table(ty) => tables.push(ty),
                        TypeRef::Global(ty) => globals.push(ty),
                        _ => return None,
                    }
                    let ty = RoundtripReencoder.entity_type(import.ty).ok()?;
                    section.import(import.module, import.name, ty);
                    imports.push((import.module.to_string(), import.name.to_string(), ty));
                }
                // The memory becomes the last import; the memory section is dropped.
                section.import(STATE_MODULE, "memory", EntityType::Memory(memory));
                imports.push((STATE_MODULE.to_string(), "memory".to_string(), EntityType::Memory(memory)));
                code.section(&section);
            }
            Payload::FunctionSection(reader) => {
                for ty in reader.clone() {
                    functions.push(ty.ok()?);
                }
                code.section(&raw(reader.range(), SectionId::Function as u8));
            }
            Payload::TableSection(reader) => {
                for table in reader.clone() {
                    tables.push(table.ok()?.ty);
                }
                code.section(&raw(reader.range(), SectionId::Table as u8));
            }
            Payload::MemorySection(reader) => {
                let memory = reader.into_iter().next()?.ok()?;
                state_memory = Some(RoundtripReencoder.memory_type(memory).ok()?);
            }
            Payload::GlobalSection(reader) => {
                for global in reader.clone() {
                    globals.push(global.ok()?.ty);
                }
                code.section(&raw(reader.range(), SectionId::Global as u8));
            }
            Payload::ExportSection(reader) => {
                for export in reader.clone() {
                    let export = export.ok()?;
                    exports.push((export.name.to_string(), export.kind, export.index));
                }
                code.section(&raw(reader.range(), SectionId::Export as u8));
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

    let mut code_type = ModuleType::new();
    for ty in &types {
        let func = RoundtripReencoder.func_type(ty.clone()).ok()?;
        code_type.ty().function(func.params().iter().copied(), func.results().iter().copied());
    }
    for (module, name, ty) in &imports {
        code_type.import(module, name, *ty);
    }
    for (name, kind, index) in exports {
        let index = index as usize;
        let ty = match kind {
            ExternalKind::Func | ExternalKind::FuncExact => EntityType::Function(*functions.get(index)?),
            ExternalKind::Table => EntityType::Table(RoundtripReencoder.table_type(*tables.get(index)?).ok()?),
            ExternalKind::Global => EntityType::Global(RoundtripReencoder.global_type(*globals.get(index)?).ok()?),
            ExternalKind::Memory if index == 0 => EntityType::Memory(memory),
            _ => return None,
        };
        code_type.export(&name, ty);
    }
    Some(ModuleParts { code: code.finish(), state: state.finish(), code_type })
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

/// Index remapping for the sections after the insertion: one more module after the code
/// module's slot, one more core instance before the code module's instance.
struct Remap {
    code_module: u32,
    code_instance: Option<u32>,
}

impl Reencode for Remap {
    type Error = std::convert::Infallible;
}

impl ReencodeComponent for Remap {
    fn module_index(&mut self, index: u32) -> u32 {
        if index > self.code_module { index + 1 } else { index }
    }

    fn instance_index(&mut self, index: u32) -> u32 {
        match self.code_instance {
            Some(code) if index >= code => index + 1,
            _ => index,
        }
    }
}

/// Writes the shell: the component with the code module imported, the state module added
/// right after it and instantiated right before it.
fn shell(bytes: &[u8], sections: &[Section], target: &Target, parts: &ModuleParts) -> Option<Vec<u8>> {
    let mut shell = wasm_encoder::Component::new();
    let mut remap = Remap { code_module: target.module_index, code_instance: None };
    let mut core_instances = 0u32;
    for (position, section) in sections.iter().enumerate() {
        let reader = reader_at(bytes, section);
        match section.id {
            _ if position == target.section => {
                let mut types = CoreTypeSection::new();
                types.ty().module(&parts.code_type);
                shell.section(&types);
                let mut import = ComponentImportSection::new();
                import.import(CODE_IMPORT, ComponentTypeRef::Module(0));
                shell.section(&import);
                shell.section(&RawSection { id: ComponentSectionId::CoreModule as u8, data: &parts.state });
            }
            id if id == ComponentSectionId::CoreInstance as u8 => {
                let mut instances = InstanceSection::new();
                for instance in wasmparser::InstanceSectionReader::new(reader).ok()? {
                    let instance = instance.ok()?;
                    if let wasmparser::Instance::Instantiate { module_index, args } = &instance
                        && *module_index == target.module_index
                    {
                        if remap.code_instance.is_some() {
                            return None;
                        }
                        instances.instantiate(target.module_index + 1, Vec::<(&str, ModuleArg)>::new());
                        remap.code_instance = Some(core_instances);
                        let mut new_args = Vec::new();
                        for arg in args.iter() {
                            new_args.push((arg.name, ModuleArg::Instance(remap.instance_index(arg.index))));
                        }
                        new_args.push((STATE_MODULE, ModuleArg::Instance(core_instances)));
                        instances.instantiate(target.module_index, new_args);
                    } else {
                        remap.parse_instance(&mut instances, instance).ok()?;
                    }
                    core_instances += 1;
                }
                shell.section(&instances);
            }
            id if id == ComponentSectionId::Alias as u8 => {
                let mut aliases = ComponentAliasSection::new();
                let reader = wasmparser::ComponentAliasSectionReader::new(reader).ok()?;
                remap.parse_component_alias_section(&mut aliases, reader).ok()?;
                shell.section(&aliases);
            }
            id => {
                shell.section(&RawSection { id, data: &bytes[section.range.clone()] });
            }
        }
    }
    remap.code_instance?;
    Some(shell.finish())
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
        assert!(split(&component).is_none());
        assert!(split(b"\0asm\x01\0\0\0").is_none(), "a core module is not a component");
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
        let split = split(&component).expect("split");
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
