//! The guest is linked as a core module; `edgeinfer`'s build script strips the WASI
//! imports a model never needs and only then makes it a component.

fn main() {
    println!("cargo:rustc-link-arg=--skip-wit-component");
}
