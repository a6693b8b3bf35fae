//! Per-operator profile: where a model's time goes inside the sandbox, and (with
//! `--features bench-native`) in native tract running the same plan, by operator.
//!
//! Models: MobileNetV3-Small, EfficientNet-B0, ShuffleNetV2 x0.5 and ResNet18 (torchvision
//! architectures, seeded random weights) and a BERT-family sequence classifier, from the model
//! zoo (`tests/zoo/models`, with their recorded inputs). Each node of the optimized plan is
//! timed in the component (`LoadedModel::profile`: the host calls the guest once per node and
//! times each call; the sandbox has no clock) over `EDGEINFER_PROFILE_RUNS` runs (default 10)
//! after one warm-up, and natively around tract's evaluation of the same node; times are
//! summed by operator. The last column is what the compute work targets: how much slower each operator
//! is in the sandbox than natively.
//!
//! `cargo bench -p edgeinfer --features bench-native --bench op_profile` prints one table per
//! model (without the feature, the native columns say "-"); `EDGEINFER_PROFILE_MODELS`
//! (comma-separated names) profiles only those.

#[path = "support.rs"]
mod support;
#[cfg(feature = "bench-native")]
#[path = "../guest-model/src/symbols.rs"]
mod symbols;
#[path = "../tests/support/zoo_case.rs"]
mod zoo_case;

use std::collections::BTreeMap;

use edgeinfer_runtime::LimitOverrides;
use support::*;

const MODELS: [&str; 5] =
    ["mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "resnet18", "bert_classifier"];

/// Time by operator: (nodes, nanoseconds summed over the runs).
type ByOp = BTreeMap<String, (usize, u64)>;

fn main() {
    let runs: u32 = std::env::var("EDGEINFER_PROFILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let runtime = runtime(true);
    let repo = tempfile::tempdir().expect("tempdir");
    let zoo = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/zoo/models");
    let unlimited = LimitOverrides { fuel: Some(u64::MAX / 4), timeout_ms: Some(600_000), memory_mb: None };
    let only = std::env::var("EDGEINFER_PROFILE_MODELS").unwrap_or_default();
    for name in MODELS.into_iter().filter(|name| only.is_empty() || only.split(',').any(|o| o == *name)) {
        let file = format!("../zoo/models/{name}.onnx");
        let (model, _) = compile(&runtime, repo.path(), &file, &name.replace('_', "-"));
        let inputs = zoo_case::case_inputs(&zoo, name);
        model.profile(&inputs, 1, unlimited).expect("warm-up");
        let mut sandbox = ByOp::new();
        for node in model.profile(&inputs, runs, unlimited).expect("profile") {
            let entry = sandbox.entry(node.op).or_default();
            entry.0 += 1;
            entry.1 += node.time.as_nanos() as u64;
        }
        let native = native::profile(&zoo.join(format!("{name}.onnx")), &inputs, runs);
        print_table(name, runs, &sandbox, native.as_ref());
    }
}

fn print_table(name: &str, runs: u32, sandbox: &ByOp, native: Result<&ByOp, &String>) {
    let per_run_ms = |nanos: u64| nanos as f64 / 1e6 / f64::from(runs);
    let total: u64 = sandbox.values().map(|(_, nanos)| nanos).sum();
    let native_total: Option<u64> = native.ok().map(|n| n.values().map(|(_, nanos)| nanos).sum());
    println!("\n### {name}\n");
    if let Err(why) = native {
        println!("(native tract: {why})\n");
    }
    println!("| operator | nodes | sandbox ms | share | native ms | sandbox / native |");
    println!("|---|---|---|---|---|---|");
    let mut ops: Vec<(&String, &(usize, u64))> = sandbox.iter().collect();
    ops.sort_by_key(|(_, (_, nanos))| std::cmp::Reverse(*nanos));
    for (op, (nodes, nanos)) in ops {
        let native_nanos = native.ok().and_then(|n| n.get(op)).map(|(_, ns)| *ns);
        println!(
            "| `{op}` | {nodes} | {:.2} | {:.0}% | {} | {} |",
            per_run_ms(*nanos),
            100.0 * *nanos as f64 / total.max(1) as f64,
            native_nanos.map_or("-".into(), |ns| format!("{:.2}", per_run_ms(ns))),
            native_nanos.map_or("-".into(), |ns| format!("{:.1}x", *nanos as f64 / ns.max(1) as f64)),
        );
    }
    println!(
        "| **all** | {} | {:.2} | 100% | {} | {} |",
        sandbox.values().map(|(n, _)| n).sum::<usize>(),
        per_run_ms(total),
        native_total.map_or("-".into(), |ns| format!("{:.2}", per_run_ms(ns))),
        native_total.map_or("-".into(), |ns| format!("{:.1}x", total as f64 / ns.max(1) as f64)),
    );
}

#[cfg(feature = "bench-native")]
mod native {
    use std::path::Path;

    use edgeinfer_oip::{Datatype, Tensor};
    use tract_onnx::prelude::*;

    use super::symbols;

    /// Times each node of native tract's plan of `file` the way the guest does.
    pub fn profile(file: &Path, inputs: &[Tensor], runs: u32) -> Result<super::ByOp, String> {
        let mut model = tract_onnx::onnx().model_for_path(file).map_err(|e| format!("{e:#}"))?;
        symbols::name_unset_dimensions(&mut model).map_err(|e| format!("{e:#}"))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("does not load this model natively: {e:#}"))?;
        let values: TVec<TValue> =
            inputs.iter().map(to_tract).collect::<TractResult<_>>().map_err(|e| e.to_string())?;
        let mut state = plan.spawn().map_err(|e| e.to_string())?;
        let mut nanos = vec![0u64; plan.model().nodes().len()];
        for round in 0..=runs {
            state
                .run_plan_with_eval(values.clone(), |context, op_state, node, inputs| {
                    let started = std::time::Instant::now();
                    let outputs = tract_onnx::tract_core::plan::eval(context, op_state, node, inputs);
                    if round > 0 {
                        nanos[node.id] += started.elapsed().as_nanos() as u64;
                    }
                    outputs
                })
                .map_err(|e| format!("{e:#}"))?;
        }
        let mut by_op = super::ByOp::new();
        for &id in plan.order_without_consts() {
            let node = &plan.model().nodes()[id];
            let entry = by_op.entry(node.op.name().to_string()).or_default();
            entry.0 += 1;
            entry.1 += nanos[id];
        }
        Ok(by_op)
    }

    fn to_tract(tensor: &Tensor) -> TractResult<TValue> {
        let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
        // SAFETY: the data is little-endian raw elements of the datatype, as many as the shape.
        let value = unsafe {
            match tensor.datatype {
                Datatype::Fp32 => tract_onnx::prelude::Tensor::from_raw::<f32>(&shape, &tensor.data)?,
                Datatype::Int64 => tract_onnx::prelude::Tensor::from_raw::<i64>(&shape, &tensor.data)?,
                Datatype::Int32 => tract_onnx::prelude::Tensor::from_raw::<i32>(&shape, &tensor.data)?,
                other => return Err(TractError::msg(format!("unexpected input datatype {other:?}"))),
            }
        };
        Ok(value.into_tvalue())
    }
}

#[cfg(not(feature = "bench-native"))]
mod native {
    /// Without `bench-native` there is no native tract to compare with.
    pub fn profile(_: &std::path::Path, _: &[edgeinfer_oip::Tensor], _: u32) -> Result<super::ByOp, String> {
        Err("not measured: build with --features bench-native".into())
    }
}
