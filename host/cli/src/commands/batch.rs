//! `edgeinfer batch --repo DIR --model M --input FILE --output FILE`: scores a file on every
//! core, resumable after a crash (run the same command again), every row exactly once.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use edgeinfer_batch::{BatchOptions, Format, MaxErrors, Status};
use indicatif::{ProgressBar, ProgressStyle};

use super::RuntimeArgs;

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The model version to run.
    #[command(flatten)]
    target: super::ModelArgs,
    /// Input file: .csv (header row), .ndjson (feature objects or OIP `inputs` objects) or .parquet.
    #[arg(long)]
    input: PathBuf,
    /// The input's format, when its extension does not say.
    #[arg(long, value_parser = PossibleValuesParser::new(Format::NAMES).try_map(|name| name.parse::<Format>()))]
    input_format: Option<Format>,
    /// Output file: .csv, .ndjson or .parquet; appears only once complete.
    #[arg(long)]
    output: PathBuf,
    /// Where failed rows go, with their row number, id and reason (default: <output>.errors.csv).
    #[arg(long)]
    errors: Option<PathBuf>,
    /// Rows per call (default: 256 for models with a dynamic batch dimension, else 1).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Scoring threads (default: every core).
    #[arg(long)]
    workers: Option<usize>,
    /// The column with row ids (default: the 0-based row number).
    #[arg(long)]
    id_column: Option<String>,
    /// Feature columns in the model's input order, e.g. a,b,c (default: every column but the id).
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// Stop once more rows failed than this: a count (1000) or a share (2.5%).
    #[arg(long)]
    max_errors: Option<MaxErrors>,
    /// Discard the checkpoint of an earlier run and start over.
    #[arg(long)]
    restart: bool,
}

pub fn run(args: BatchArgs, runtime: &RuntimeArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime.runtime()?;
    let model = args.target.load(&runtime)?;
    let options = BatchOptions {
        input: args.input,
        input_format: args.input_format,
        output: args.output,
        errors: args.errors,
        batch_size: args.batch_size,
        workers: args.workers,
        id_column: args.id_column,
        columns: args.columns,
        max_errors: args.max_errors,
        restart: args.restart,
    };
    let reporter = Reporter::new();
    let cancel = AtomicBool::new(false);
    let summary = edgeinfer_batch::run(&model, &options, &|status: &Status| reporter.update(status), &cancel);
    reporter.finish();
    let summary = summary.with_context(|| format!("scoring {}", options.input.display()))?;
    if summary.already_complete {
        println!(
            "already complete: {} ({} rows ok, {} failed); --restart scores it again",
            summary.output.display(),
            summary.rows_ok,
            summary.rows_failed
        );
        return Ok(ExitCode::SUCCESS);
    }
    if summary.resumed_from_row > 0 {
        println!("resumed from row {}", summary.resumed_from_row);
    }
    println!(
        "{} rows ok, {} failed, {:.1} s, {:.0} rows/s -> {} (failures: {})",
        summary.rows_ok,
        summary.rows_failed,
        summary.seconds,
        summary.rows_per_second,
        summary.output.display(),
        summary.errors.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal, a plain line every 10 s otherwise.
struct Reporter {
    bar: Option<ProgressBar>,
    last_line: std::sync::Mutex<Instant>,
}

impl Reporter {
    fn new() -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {percent:>3}% {msg} [{elapsed} elapsed, ETA {eta}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Reporter { bar, last_line: std::sync::Mutex::new(Instant::now()) }
    }

    fn update(&self, status: &Status) {
        let estimated_total = (status.bytes_read > 0)
            .then(|| status.rows_done as f64 * status.bytes_total as f64 / status.bytes_read as f64)
            .map_or(0, |t| t as u64);
        let text = format!(
            "{} / ~{} rows, {} failed, {:.0} rows/s",
            status.rows_done, estimated_total, status.rows_failed, status.rows_per_second
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(status.bytes_total);
                bar.set_position(status.bytes_read);
                bar.set_message(text);
            }
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= Duration::from_secs(10) {
                    eprintln!("batch: {text}");
                    *last = Instant::now();
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
