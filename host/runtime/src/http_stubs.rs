//! `wasi:http/types` for model components, without an HTTP stack in the host: a model's
//! `wasi:http/incoming-handler` export (for Spin and other wasi:http hosts) imports those
//! types, but `infer` never touches them. Every such function traps if called and every
//! resource is an empty host type, so the runtime links the component without
//! wasmtime-wasi-http (and its hyper) and still grants no HTTP capability at all.

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceType};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, IoError};

/// Import names this module satisfies.
const HTTP_IMPORT_PREFIX: &str = "wasi:http/";

/// Whether `component` imports any `wasi:http` interface.
pub(crate) fn imports_http(engine: &Engine, component: &Component) -> bool {
    component.component_type().imports(engine).any(|(name, _)| name.starts_with(HTTP_IMPORT_PREFIX))
}

/// Defines every `wasi:http` import of `component` in `linker`: functions that trap,
/// resources of an empty host type.
pub(crate) fn define_http_stubs<T: 'static>(
    linker: &mut Linker<T>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    for (interface, item) in component.component_type().imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        if !interface.starts_with(HTTP_IMPORT_PREFIX) {
            continue;
        }
        let mut target = linker.instance(interface)?;
        for (name, export) in instance.exports(engine) {
            match export.ty {
                ComponentItem::Resource(_) => target.resource(name, resource_type(name), |_, _| Ok(()))?,
                ComponentItem::ComponentFunc(_) => {
                    let called = format!("{interface}#{name}");
                    target.func_new(name, move |_, _, _, _| {
                        wasmtime::bail!("`{called}` is not available to a model served by edgeinfer")
                    })?
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The host type of a resource `wasi:http/types` exports: the `wasi:io` resources it re-uses
/// (`use wasi:io/streams.{input-stream, ...}`) must be the very types the WASI linker
/// defines; its own resources (fields, requests, responses...) are never created here.
fn resource_type(name: &str) -> ResourceType {
    match name {
        "input-stream" => ResourceType::host::<DynInputStream>(),
        "output-stream" => ResourceType::host::<DynOutputStream>(),
        "pollable" => ResourceType::host::<DynPollable>(),
        "io-error" => ResourceType::host::<IoError>(),
        _ => ResourceType::host::<()>(),
    }
}
