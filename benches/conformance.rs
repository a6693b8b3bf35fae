//! The ONNX backend node test suite (the `onnx` package's case definitions, exported by
//! `tests/conformance/export_cases.py`), every case compiled into a component and run in the
//! sandbox, and the same case run by native tract: per-operator pass counts for the book's
//! conformance page (docs/src/conformance.md) and the list of cases that pass in the sandbox.
//!
//! `cargo bench --features bench-native --bench conformance` prints the table; with
//! `EDGEINFER_WRITE_PASSING=1` it also rewrites `tests/conformance/passing.txt`, the list the
//! conformance test (`tests/all/conformance.rs`) holds CI to. Needs Python's `onnx`.

#[path = "../tests/support/conformance.rs"]
mod conformance;
#[path = "support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use conformance::{Case, compare, run_in_sandbox};
use edgeinfer_oip::{Datatype, Tensor};
use tract_onnx::prelude::*;

fn main() {
    let export = tempfile::tempdir().expect("tempdir");
    if !conformance::export_cases(export.path()) {
        eprintln!("conformance needs Python's onnx: pip install -r tests/fixtures/requirements.txt");
        return;
    }
    let cases: Vec<Case> =
        conformance::case_names(export.path()).iter().map(|name| conformance::load_case(export.path(), name)).collect();
    let runtime = support::runtime(true);
    let repo = tempfile::tempdir().expect("repo");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());

    let started = Instant::now();
    let sandbox = conformance::run_parallel(&cases, threads, Duration::MAX, |case| {
        run_in_sandbox(&runtime, None, repo.path(), case)
    });
    let sandbox_time = started.elapsed();
    let started = Instant::now();
    let native = conformance::run_parallel(&cases, threads, Duration::MAX, run_native);
    let native_time = started.elapsed();

    #[derive(Default)]
    struct Counts {
        cases: usize,
        sandbox: usize,
        native: usize,
        native_only: Vec<String>,
    }
    let mut by_op: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut passing = Vec::new();
    let mut disagreements = Vec::new();
    for ((case, sandbox), native) in cases.iter().zip(&sandbox).zip(&native) {
        let sandbox_ok = matches!(sandbox, Some(Ok(())));
        let native_ok = matches!(native, Some(Ok(())));
        let counts = by_op.entry(&case.op).or_default();
        counts.cases += 1;
        counts.sandbox += usize::from(sandbox_ok);
        counts.native += usize::from(native_ok);
        if sandbox_ok {
            passing.push(case.name.clone());
        } else if native_ok {
            counts.native_only.push(case.name.clone());
            disagreements.push(format!("{}: {}", case.name, describe(sandbox)));
        }
    }
    let total = cases.len();
    let sandbox_passed = passing.len();
    let native_passed = native.iter().filter(|r| matches!(r, Some(Ok(())))).count();
    println!(
        "\nONNX backend node tests ({total} cases, onnx {}): sandbox {sandbox_passed} passed in {:.0} s, native tract {native_passed} passed in {:.0} s ({threads} threads)\n",
        onnx_version(),
        sandbox_time.as_secs_f64(),
        native_time.as_secs_f64()
    );
    println!("| operator | cases | sandbox passes | native tract passes |");
    println!("|---|---|---|---|");
    for (op, counts) in &by_op {
        println!("| {op} | {} | {} | {} |", counts.cases, counts.sandbox, counts.native);
    }
    println!("\nnative tract passes, sandbox does not ({}):", disagreements.len());
    for line in &disagreements {
        println!("  {line}");
    }
    let failures: BTreeMap<String, usize> = sandbox
        .iter()
        .filter_map(|r| match r {
            Some(Err(why)) => Some(reason_class(why)),
            _ => None,
        })
        .fold(BTreeMap::new(), |mut acc, class| {
            *acc.entry(class).or_default() += 1;
            acc
        });
    println!("\nsandbox failures by kind:");
    for (class, count) in failures {
        println!("  {count:>5}  {class}");
    }
    if std::env::var_os("EDGEINFER_WRITE_PASSING").is_some() {
        let header = "# ONNX backend node test cases that pass in the sandbox; regenerate with\n\
                      # EDGEINFER_WRITE_PASSING=1 cargo bench --features bench-native --bench conformance\n";
        std::fs::write(conformance::passing_list_path(), format!("{header}{}\n", passing.join("\n")))
            .expect("write passing list");
        println!("\nwrote {} cases to {}", passing.len(), conformance::passing_list_path().display());
    }
}

fn describe(result: &Option<Result<(), String>>) -> String {
    match result {
        Some(Ok(())) => "passed".into(),
        Some(Err(why)) => why.chars().take(160).collect(),
        None => "not run".into(),
    }
}

/// A failure message reduced to its kind, for the summary.
fn reason_class(why: &str) -> String {
    let why = why.split(['\n']).next().unwrap_or(why);
    if why.starts_with("not expressible") {
        return "not expressible in the protocol (sequence, map, optional or exotic element type)".into();
    }
    if why.contains("unsupported ONNX operator") {
        return "operator not implemented by tract".into();
    }
    if why.contains("element") && why.contains("expected") {
        return "values outside tolerance".into();
    }
    if why.contains("datatype") {
        return "different output datatype".into();
    }
    if why.contains("shape") && why.contains("expected") {
        return "different output shape".into();
    }
    if why.starts_with("compile") {
        return "tract cannot load the model (other)".into();
    }
    "inference error".into()
}

fn onnx_version() -> String {
    std::process::Command::new("python3")
        .args(["-c", "import onnx; print(onnx.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs a case with native tract, parsed and optimized as the guest does.
fn run_native(case: &Case) -> Result<(), String> {
    let data = case.data.as_ref().map_err(Clone::clone)?;
    let outputs = std::panic::catch_unwind(|| -> TractResult<Vec<Tensor>> {
        let model = tract_onnx::onnx().model_for_path(&case.model)?;
        let names: Vec<String> = model
            .output_outlets()?
            .iter()
            .map(|outlet| {
                model.outlet_label(*outlet).map(String::from).unwrap_or_else(|| model.node(outlet.node).name.clone())
            })
            .collect();
        let plan = model.into_optimized()?.into_runnable()?;
        let inputs: TVec<TValue> =
            data.inputs.iter().map(|t| to_tract(t).map(TValue::from)).collect::<TractResult<_>>()?;
        let results = plan.run(inputs)?;
        results.iter().zip(names).map(|(value, name)| from_tract(name, value)).collect()
    });
    match outputs {
        Ok(Ok(outputs)) => compare(&data.outputs, &outputs, data.rtol, data.atol),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("native tract panicked".into()),
    }
}

fn datum_type(datatype: Datatype) -> Option<DatumType> {
    Some(match datatype {
        Datatype::Bool => DatumType::Bool,
        Datatype::Uint8 => DatumType::U8,
        Datatype::Uint16 => DatumType::U16,
        Datatype::Uint32 => DatumType::U32,
        Datatype::Uint64 => DatumType::U64,
        Datatype::Int8 => DatumType::I8,
        Datatype::Int16 => DatumType::I16,
        Datatype::Int32 => DatumType::I32,
        Datatype::Int64 => DatumType::I64,
        Datatype::Fp16 => DatumType::F16,
        Datatype::Fp32 => DatumType::F32,
        Datatype::Fp64 => DatumType::F64,
        Datatype::Bytes => return None,
    })
}

fn to_tract(tensor: &Tensor) -> TractResult<tract_onnx::prelude::Tensor> {
    let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
    match datum_type(tensor.datatype) {
        // SAFETY: the data length matches the shape (written by the exporter from numpy), and
        // every bit pattern is a valid value of these numeric types.
        Some(dt) => unsafe { tract_onnx::prelude::Tensor::from_raw_dt(dt, &shape, &tensor.data) },
        None => {
            let items = edgeinfer_oip::bytes_items(&tensor.data).ok_or_else(|| anyhow::anyhow!("malformed BYTES"))?;
            Ok(tract_ndarray::ArrayD::from_shape_vec(shape, items)?.into())
        }
    }
}

fn from_tract(name: String, value: &tract_onnx::prelude::Tensor) -> TractResult<Tensor> {
    let shape = value.shape().iter().map(|&d| d as u64).collect();
    if value.datum_type() == DatumType::String {
        let mut data = Vec::new();
        for item in value.to_plain_array_view::<String>()?.iter() {
            data.extend_from_slice(&(item.len() as u32).to_le_bytes());
            data.extend_from_slice(item.as_bytes());
        }
        return Ok(Tensor { name, datatype: Datatype::Bytes, shape, data: data.into() });
    }
    let (datatype, dt) = match value.datum_type() {
        DatumType::TDim => (Datatype::Int64, DatumType::I64),
        dt => {
            let datatype = Datatype::ALL
                .into_iter()
                .find(|d| datum_type(*d) == Some(dt))
                .ok_or_else(|| anyhow::anyhow!("output {name} has type {dt:?}"))?;
            (datatype, dt)
        }
    };
    let cast = value.cast_to_dt(dt)?;
    Ok(Tensor { name, datatype, shape, data: cast.as_bytes().to_vec().into() })
}
