//! The `tether` binary: parse arguments, run, turn the result into an exit
//! code. Nothing else happens here.

use std::process::ExitCode;

use clap::Parser as _;
use tether::cli::{self, Cli};
use tether::exit::{self, ExitStatus};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints help/version to stdout (exit 0) and usage errors to
        // stderr (exit 2, our usage code).
        Err(e) => {
            let _ = e.print();
            let status = if e.use_stderr() {
                ExitStatus::Usage
            } else {
                ExitStatus::Success
            };
            return ExitCode::from(status.code());
        }
    };
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::from(ExitStatus::Success.code()),
        Err(e) if e.is_broken_pipe() => ExitCode::from(ExitStatus::Success.code()),
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(e.exit_status().code())
        }
    }
}

fn run(cli: Cli) -> Result<(), exit::CommandError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(exit::CommandError::Output)?;
    runtime.block_on(cli::dispatch(cli))
}

/// The error and its causes, each once (thiserror messages that already
/// include their source are not repeated).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let msg = cause.to_string();
        if !text.contains(&msg) {
            text.push_str(&format!("\n  caused by: {msg}"));
        }
        source = cause.source();
    }
    text
}

/// Logs go to stderr, filtered by `TETHER_LOG` (e.g. `TETHER_LOG=debug`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
