//! agentwatch: a runtime guard for AI coding agents.

mod check;
mod event;
mod kernel;
mod privileges;
mod run;
mod sink;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "agentwatch",
    version,
    about = "Runtime guard for AI coding agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run CMD as a new watched session and report what it does.
    Run {
        /// Append events as JSON lines to FILE instead of stderr.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Bytes of the kernel-to-user ring buffer (a power of two, at least a page).
        #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, value_parser = parse_ring_buffer_size)]
        ring_buffer_size: u32,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Probe what this kernel supports; exit non-zero if agentwatch cannot run.
    Check,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AGENTWATCH_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("agentwatch: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn execute(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run {
            events,
            ring_buffer_size,
            command,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let code = runtime.block_on(run::run(run::RunOptions {
                events,
                ring_buffer_size,
                command,
            }))?;
            Ok(code.clamp(0, 255) as u8)
        }
        Command::Check => Ok(if check::check()? { 0 } else { 1 }),
    }
}

fn parse_ring_buffer_size(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|error| format!("{error}"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(bytes)
}
