//! The `edgeinfer` command line: one file per subcommand under `commands/`.

mod commands;
mod demo;
mod package;

/// mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// buffers on several threads (`cargo bench --bench http_load` measures it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;

use clap::Parser;
use edgeinfer_server::LogFormat;

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    init_logging(cli.log_format());
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: text (ANSI colour only on a terminal) or JSON lines.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "edgeinfer=info,warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
