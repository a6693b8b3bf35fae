//! Native tract and onnxruntime-web (wasm SIMD, 1 thread, in Node) vs the same model as a
//! component: warm instance, fresh instance per request, fuel on vs off, instance start
//! alone, and compile-to-ready of a second model.
//!
//! `cargo bench --features bench-native --bench inference` prints a table; every figure is a
//! median of repeated runs (onnxruntime-web in a Node child process, the rest in this one),
//! and ratios are against native tract and onnxruntime-web. Set-up for the peer: Node and
//! `npm install --prefix benches/ort-web` (the bench runs it when the package is missing).

#[path = "support.rs"]
mod support;

use std::time::Duration;

use edgeinfer_oip::Tensor;
use edgeinfer_runtime::LimitOverrides;
use support::*;
use tract_onnx::prelude::*;

struct Case {
    name: &'static str,
    file: &'static str,
    input: Tensor,
    runs: usize,
}

#[path = "peers.rs"]
mod peers;
use peers::*;

fn main() {
    let repo = tempfile::tempdir().expect("tempdir");
    // Models are compiled in one runtime and served from another, as `edgeinfer compile` and
    // `edgeinfer serve` do: a runtime that compiled (and snapshotted) models has pool slots
    // shaped by that work, and its fresh instances measured 0.08 ms instead of 0.045.
    let compiler = runtime(true);
    let fueled = runtime(true);
    let unfueled = runtime(false);
    let returning = runtime_returning_pages();
    let cases = [
        Case { name: "digits (MLP, batch 1)", file: "digits.onnx", input: digits_input(1), runs: 2000 },
        Case { name: "squeezenet (CNN, 1x3x224x224)", file: "squeezenet.onnx", input: squeezenet_input(), runs: 30 },
    ];
    // A first model fills the runtime's code cache (a cold cache compiles the runtime's code
    // once); the compiles timed below are of new models with that code cached.
    let (_, first_compile) = compile(&compiler, repo.path(), "digits_random.onnx", "first");
    let mut compile_times = Vec::new();
    println!(
        "| model | native tract ms | onnxruntime-web ms | warm instance ms | warm/ort-web | fresh instance + infer ms | warm/native | fresh/native | fresh/warm | fresh, pages returned (0 kept) ms | default/returned (fresh) | fuel on/off (warm) | instance start ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        let (compiled, compile_time) = compile(&compiler, repo.path(), case.file, case.file.trim_end_matches(".onnx"));
        compile_times.push((case.name, compile_time));
        let model = edgeinfer_runtime::LoadedModel::load(&fueled, compiled.dir()).expect("load to serve");
        drop(compiled);
        let plain = edgeinfer_runtime::LoadedModel::load(&unfueled, model.dir()).expect("load without fuel");

        let plan = native_plan(&fixture(case.file));
        let native_input = || -> TVec<TValue> {
            let shape: Vec<usize> = case.input.shape.iter().map(|&d| d as usize).collect();
            // SAFETY: the fixture's raw bytes are little-endian f32 of exactly this shape.
            let tensor =
                unsafe { tract_onnx::prelude::Tensor::from_raw::<f32>(&shape, &case.input.data) }.expect("tensor");
            tvec!(tensor.into_tvalue())
        };
        let warmup = (case.runs / 10).max(3);
        let native = sample(warmup, case.runs, || timed(|| drop(plan.run(native_input()).expect("native run"))));

        let mut session = model.session(LimitOverrides::default()).expect("session");
        let warm = sample(warmup, case.runs, || {
            timed(|| drop(session.infer(vec![case.input.clone()], &[]).expect("warm infer")))
        });
        let mut plain_session = plain.session(LimitOverrides::default()).expect("session");
        let warm_unfueled = sample(warmup, case.runs, || {
            timed(|| drop(plain_session.infer(vec![case.input.clone()], &[]).expect("warm infer")))
        });
        let mut starts = Vec::new();
        let fresh = sample(warmup, case.runs, || {
            timed(|| {
                let outcome = model.infer(vec![case.input.clone()], &[], LimitOverrides::default()).expect("infer");
                starts.push(outcome.instantiate_time);
            })
        });
        let returning_model = edgeinfer_runtime::LoadedModel::load(&returning, model.dir()).expect("load");
        let fresh_returned = sample(warmup, case.runs, || {
            timed(|| {
                drop(returning_model.infer(vec![case.input.clone()], &[], LimitOverrides::default()).expect("infer"))
            })
        });
        let peer = ort_web(&fixture(case.file), &case.input, case.runs);
        // Instance starts of the warm-up runs are not samples.
        let mut starts = starts.split_off(warmup);
        starts.sort();
        let median = |s: &[Duration]| percentile(s, 50.0);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.name,
            ms(median(&native)),
            peer.map_or("n/a".to_string(), ms),
            ms(median(&warm)),
            peer.map_or("n/a".to_string(), |peer| ratio(median(&warm), peer)),
            ms(median(&fresh)),
            ratio(median(&warm), median(&native)),
            ratio(median(&fresh), median(&native)),
            ratio(median(&fresh), median(&warm)),
            ms(median(&fresh_returned)),
            ratio(median(&fresh), median(&fresh_returned)),
            ratio(median(&warm), median(&warm_unfueled)),
            ms(median(&starts)),
        );
    }
    println!();
    println!("| compile (ONNX -> ready component) | seconds |");
    println!("|---|---|");
    for (name, time) in compile_times {
        println!("| {name} | {:.2} |", time.as_secs_f64());
    }
    println!(
        "(runtime code cached; the first model compiled in this process took {:.2} s, which includes \
         compiling the runtime's code when the cache was cold)",
        first_compile.as_secs_f64()
    );
}
