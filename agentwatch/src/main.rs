//! agentwatch: a runtime guard for AI coding agents.

mod commands;
mod control;
mod decode;
mod engine;
mod enrich;
mod event;
mod feed;
mod kernel;
mod operation;
mod policy;
mod privileges;
mod respond;
mod scan;
mod sinks;
mod sys;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use commands::{check, daemon, events, run, top};
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
    Run(run::RunOptions),
    /// Probe what this kernel supports; exit non-zero if agentwatch cannot run.
    Check,
    /// Watch every agent on this machine (run as root, e.g. by systemd).
    Daemon(daemon::DaemonOptions),
    /// List the daemon's requests waiting for approval (ask mode).
    Pending {
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "PATH", default_value = control::protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Resume a stopped session, letting its retry of the blocked call through once.
    Approve {
        id: u64,
        #[arg(long, value_name = "PATH", default_value = control::protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Kill a session waiting for approval.
    Deny {
        id: u64,
        #[arg(long, value_name = "PATH", default_value = control::protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The daemon's events as JSON lines: the history (from the event log
    /// with --since), then live ones.
    Events(events::EventsOptions),
    /// Live terminal view of sessions, credential reads, connections, alerts and requests.
    Top {
        #[arg(long, value_name = "PATH", default_value = control::protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Report the credentials an agent could find in files and directories
    /// by content (file, line, kind, redacted value): exit 0 when there are
    /// none, 1 when there are, 2 when the scan is incomplete.
    Scan(commands::scan::ScanOptions),
    /// Validate policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Why this session's last call was refused, for the agent (run by its hook).
    Why {
        /// Print Claude Code's / Codex's PostToolUse hook JSON, once per refusal.
        #[arg(long)]
        hook: bool,
        #[arg(long, value_name = "PATH", default_value = control::protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Set up agents' hooks that tell them why a call was refused.
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// Print SHELL's completion script (the package installs bash's, zsh's and fish's).
    Completions { shell: clap_complete::Shell },
    /// Write one man page per command into DIR (run by `cargo xtask dist`).
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// What the daemon runs as a logged-in user to show an ask-mode request
    /// on that user's desktop (sinks::desktop): not for people.
    #[command(name = sinks::desktop::SUBCOMMAND, hide = true)]
    NotifyDesktop {
        /// When the notification closes by itself, in milliseconds.
        expire_ms: i32,
    },
}

#[derive(Subcommand)]
enum HooksCommand {
    /// Add a PostToolUse hook running `agentwatch why --hook` to the agent's settings.
    Install {
        agent: commands::why::HookAgent,
        /// Print the settings file it would write, and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_name = "PATH", default_value = control::protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check FILE (default: the daemon's, /etc/agentwatch/policy.toml) and the drop-ins in
    /// policy.d beside it, as the daemon loads them; report every error with its line and column.
    Check {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// What the operation catalog says a command line (after --) or a raw request does.
    Classify {
        /// A user policy file over the built-in catalog.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// A file holding the head of a request as a client wrote it (HTTP/1.x or HTTP/2).
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
        /// The provider the request went to (default: its host's).
        #[arg(long, value_name = "ID", requires = "request")]
        provider: Option<String>,
        #[arg(last = true, value_name = "ARGV")]
        argv: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AGENTWATCH_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // `run` exits with its command's status, so its own failures (a bad
    // option too) take 125, as env, timeout and chroot do; 2 elsewhere.
    let own_failure = if std::env::args_os().nth(1).is_some_and(|arg| arg == "run") {
        RUN_FAILURE
    } else {
        OWN_FAILURE
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { own_failure } else { 0 });
        }
    };
    match execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("agentwatch: {error:#}");
            ExitCode::from(own_failure)
        }
    }
}

/// `run`'s exit status when agentwatch itself fails.
const RUN_FAILURE: u8 = 125;
/// Every other command's exit status when agentwatch itself fails (a bad
/// option too).
const OWN_FAILURE: u8 = 2;

fn execute(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run(options) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let code = runtime.block_on(run::run(options));
            // Lookups still running in the background must not delay the exit.
            runtime.shutdown_background();
            Ok(code?.clamp(0, 255) as u8)
        }
        Command::Check => Ok(if check::check()? { 0 } else { 1 }),
        Command::Daemon(options) => block_on(daemon::daemon(options)),
        Command::Pending { json, socket } => block_on(control::client::pending_command(
            &socket,
            json,
            &mut std::io::stdout(),
        )),
        Command::Approve { id, socket } => block_on(control::client::decide_command(
            &socket,
            id,
            true,
            &mut std::io::stdout(),
        )),
        Command::Deny { id, socket } => block_on(control::client::decide_command(
            &socket,
            id,
            false,
            &mut std::io::stdout(),
        )),
        Command::Events(options) => {
            block_on(events::events_command(options, &mut std::io::stdout()))
        }
        Command::Top { socket } => block_on(top::top_command(&socket)),
        Command::Scan(options) => commands::scan::scan_command(options),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => Ok(if commands::policy::check_command(file.as_deref())? {
            0
        } else {
            1
        }),
        Command::Policy {
            command:
                PolicyCommand::Classify {
                    policy,
                    request,
                    provider,
                    argv,
                },
        } => Ok(commands::policy::classify_command(
            policy.as_deref(),
            request.as_deref(),
            provider.as_deref(),
            &argv,
        )? as u8),
        Command::Why { hook, socket } => block_on(commands::why::why_command(
            &socket,
            hook,
            &mut std::io::stdout(),
        )),
        Command::NotifyDesktop { expire_ms } => {
            block_on(sinks::desktop::notify_desktop_command(expire_ms))
        }
        Command::Hooks {
            command:
                HooksCommand::Install {
                    agent,
                    dry_run,
                    socket,
                },
        } => {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            Ok(commands::why::install_command(
                agent,
                std::path::Path::new(&home),
                &socket,
                dry_run,
                &mut std::io::stdout(),
            )? as u8)
        }
        Command::Completions { shell } => {
            commands::docs::completions(Cli::command(), shell, &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => {
            commands::docs::man_pages(Cli::command(), &dir)?;
            Ok(0)
        }
    }
}

fn block_on(task: impl std::future::Future<Output = anyhow::Result<i32>>) -> anyhow::Result<u8> {
    let code = tokio::runtime::Runtime::new()?.block_on(task)?;
    Ok(code.clamp(0, 255) as u8)
}

fn parse_ring_buffer_size(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|error| format!("{error}"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(bytes)
}
