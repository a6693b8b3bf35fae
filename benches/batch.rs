//! Batch scoring end to end, file to file: `edgeinfer batch` on a 1,000,000-row CSV for the
//! digits model and a larger MLP (64-512-512-10), next to a Python script doing the same
//! job with pandas + onnxruntime (benches/batch_baseline.py), in the same run; rows/s per
//! batch size on 100,000 rows; peak RSS of each process.
//!
//! `cargo bench --bench batch` prints tables (the Python rows need `pip install pandas
//! onnxruntime`; without them they say so).

#[path = "support.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const ROWS: usize = 1_000_000;
const SWEEP_ROWS: usize = 100_000;

/// A CSV of `rows` digits-like rows (`key`, 64 features).
fn write_csv(path: &Path, rows: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let names: Vec<String> = (0..64).map(|j| format!("p{j}")).collect();
    writeln!(file, "key,{}", names.join(",")).expect("header");
    let mut rng = fastrand::Rng::with_seed(1);
    let lines: Vec<String> = (0..1000)
        .map(|_| (0..64).map(|_| format!("{}", rng.u8(0..17) as f32 / 16.0)).collect::<Vec<_>>().join(","))
        .collect();
    for i in 0..rows {
        writeln!(file, "r{i},{}", lines[i % lines.len()]).expect("row");
    }
    file.flush().expect("flush");
}

/// Runs a command under `/usr/bin/time`, returning its wall time and peak RSS in MiB (None
/// without GNU time), or why it failed. (The bench's own rusage would count the forked copy
/// of this large process before exec.)
fn measure(command: &mut Command) -> Result<(Duration, Option<f64>), String> {
    let report = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let timed = Path::new("/usr/bin/time").exists();
    let mut wrapped = if timed {
        let mut time = Command::new("/usr/bin/time");
        time.args(["-f", "%M", "-o"]).arg(report.path()).arg(command.get_program()).args(command.get_args());
        time
    } else {
        let mut plain = Command::new(command.get_program());
        plain.args(command.get_args());
        plain
    };
    let started = Instant::now();
    let output = wrapped.stdout(std::process::Stdio::null()).output().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(format!(
            "{}: {}",
            output.status,
            stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default()
        ));
    }
    let rss = std::fs::read_to_string(report.path()).ok().and_then(|t| t.trim().lines().last()?.parse::<f64>().ok());
    Ok((elapsed, rss.map(|kb| kb / 1024.0)))
}

fn edgeinfer(repo: &Path, model: &str, input: &Path, output: &Path, batch_size: usize) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeinfer"));
    command
        .args(["--cache-dir", cache_dir().to_str().expect("utf8"), "batch", "--repo"])
        .arg(repo)
        .args(["--model", model, "--id-column", "key", "--restart", "--batch-size", &batch_size.to_string(), "--input"])
        .arg(input)
        .arg("--output")
        .arg(output);
    command
}

fn mib(rss: Option<f64>) -> String {
    rss.map_or("n/a".into(), |m| format!("{m:.0}"))
}

fn cache_dir() -> std::path::PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target/bench-cache")
}

fn main() {
    let runtime = runtime(true);
    let repo = tempfile::tempdir().expect("tempdir");
    compile(&runtime, repo.path(), "digits.onnx", "digits");
    compile(&runtime, repo.path(), "mlp_large.onnx", "mlp");
    let data = tempfile::tempdir().expect("tempdir");
    let big = data.path().join("rows.csv");
    write_csv(&big, ROWS);
    let small = data.path().join("sweep.csv");
    write_csv(&small, SWEEP_ROWS);
    let baseline = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("benches/batch_baseline.py");

    println!("| model | tool | rows | seconds | rows/s | vs pandas+onnxruntime | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for (model, file) in [("digits", "digits.onnx"), ("mlp", "mlp_large.onnx")] {
        let ours = measure(&mut edgeinfer(repo.path(), model, &big, &data.path().join("out.csv"), 256))
            .expect("edgeinfer batch");
        let python = measure(
            Command::new("python3")
                .arg(&baseline)
                .arg(fixture(file))
                .arg(&big)
                .arg(data.path().join("py.csv"))
                .arg("256"),
        );
        let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
        let (ratio, python_row) = match &python {
            Ok((elapsed, rss)) => (
                format!("{:.2}x", rate(ours.0) / rate(*elapsed)),
                format!(
                    "| {model} | pandas + onnxruntime | {ROWS} | {:.1} | {:.0} | 1.00x | {} |",
                    elapsed.as_secs_f64(),
                    rate(*elapsed),
                    mib(*rss)
                ),
            ),
            Err(why) => ("n/a".into(), format!("| {model} | pandas + onnxruntime | skipped: {why} | | | | |")),
        };
        println!(
            "| {model} | edgeinfer batch | {ROWS} | {:.1} | {:.0} | {ratio} | {} |",
            ours.0.as_secs_f64(),
            rate(ours.0),
            mib(ours.1)
        );
        println!("{python_row}");
    }

    println!();
    println!("| batch size | digits rows/s ({SWEEP_ROWS} rows) | vs batch 1 |");
    println!("|---|---|---|");
    let mut first = None;
    for batch_size in [1usize, 16, 256, 4096] {
        let (elapsed, _) =
            measure(&mut edgeinfer(repo.path(), "digits", &small, &data.path().join("sweep.out.csv"), batch_size))
                .expect("sweep");
        let rate = SWEEP_ROWS as f64 / elapsed.as_secs_f64();
        let base = *first.get_or_insert(rate);
        println!("| {batch_size} | {rate:.0} | {:.1}x |", rate / base);
    }
}
