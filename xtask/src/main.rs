//! agentwatch's automation. `cargo xtask setup` makes a fresh machine able to
//! build and test agentwatch; every other task runs it first (it is quick
//! when there is nothing to do).

mod bench;
mod dist;
mod setup;
mod vm;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Set up, then build the workspace (kernel programs included).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run agentwatch with ARGS (as root).
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, check formatting and lints, run every test against the running
    /// kernel, then the quick VM lane (6.1 and 7.3); or, with --kernel or
    /// --kernels, the integration suite in VMs only.
    Test {
        /// Run the integration suite in a VM on this Debian kernel series (6.1, 7.3, ...).
        #[arg(long, group = "vm")]
        kernel: Option<String>,
        /// `all`: every kernel the VM lane knows; regenerates README's kernel
        /// table (saying which lane measured it).
        #[arg(long, value_parser = ["all"], group = "vm")]
        kernels: Option<String>,
        /// With --kernel or --kernels: only the quick lane's tests.
        #[arg(long, requires = "vm")]
        quick: bool,
        /// With --kernel or --kernels: report what the last run left in
        /// target/vm (an interrupted one, say) instead of booting.
        #[arg(long, requires = "vm")]
        last_run: bool,
        /// Extra arguments for `cargo test` (a test name filter, say); the
        /// quick VM lane is skipped when given.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Check formatting and lints only.
    Lint,
    /// Set up, build release, and build the Debian package (binary, unit,
    /// policy, completions, man pages) into target/dist.
    Dist {
        /// Then install it into a fresh root and start the daemon as its
        /// unit says (as root; loads the programs).
        #[arg(long)]
        check: bool,
    },
    /// Set up, build release, and measure what agentwatch costs (as root; writes bench/results).
    ///
    /// Sections: overhead (syscall loops against no monitor, a floor of
    /// bpftrace programs that return at once on agentwatch's tracepoints,
    /// bpftrace and auditd doing agentwatch's work, then a bpf_stats profile
    /// of each program's ns per open and per connect), writes, tls,
    /// throughput, race, memory, latency, start, and build (a real cargo build
    /// and a shell test suite, 10 interleaved watched/unwatched pairs each,
    /// median ratio with a distribution-free 95% interval). The README's
    /// Performance section describes the method.
    Bench(bench::Options),
    /// The bench's load generator (run by `bench`, inside watched sessions).
    #[command(hide = true)]
    BenchLoad(bench::load::LoadArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Setup => setup::setup(setup::Packages::Vm),
        Task::Build { release } => {
            setup::setup(setup::Packages::Test)?;
            build(&root, release)
        }
        Task::Run { release, args } => {
            setup::setup(setup::Packages::Test)?;
            build(&root, release)?;
            let binary = binary(&root, release);
            let mut cmd = as_root(&binary);
            cmd.args(args);
            let status = cmd
                .status()
                .with_context(|| format!("running {}", binary.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test {
            kernel,
            kernels,
            quick,
            last_run,
            args,
        } => {
            setup::setup(setup::Packages::Vm)?;
            let lane = if quick {
                vm::Lane::Quick
            } else {
                vm::Lane::Full
            };
            let source = if last_run {
                vm::Source::LastRun
            } else {
                vm::Source::Boot
            };
            if (kernel.is_some() || kernels.is_some()) && !last_run {
                build(&root, false)?;
            }
            if let Some(series) = kernel {
                return vm::run(&root, &[series.as_str()], lane, false, source);
            }
            if kernels.is_some() {
                return vm::run(&root, vm::ALL, lane, true, source);
            }
            lint(&root)?;
            build(&root, false)?;
            // The debug build, packaged: the package tests install it.
            let package = dist::package(&root, false)?;
            test(&root, &binary(&root, false), &package, &args)?;
            if args.is_empty() {
                vm::run(&root, vm::QUICK, vm::Lane::Quick, false, vm::Source::Boot)
            } else {
                eprintln!("test: a filter was given, so the quick VM lane is skipped");
                Ok(())
            }
        }
        Task::Lint => lint(&root),
        Task::Dist { check } => {
            setup::setup(setup::Packages::Test)?;
            run(cargo(&root).args(["build", "--release", "--package", "agentwatch"]))?;
            let package = dist::package(&root, true)?;
            if check {
                test(
                    &root,
                    &binary(&root, true),
                    &package,
                    &["--test".into(), "package".into()],
                )?;
            }
            Ok(())
        }
        Task::Bench(options) => bench::bench(&root, options),
        Task::BenchLoad(args) => bench::load::main(args),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn binary(root: &Path, release: bool) -> PathBuf {
    root.join("target")
        .join(if release { "release" } else { "debug" })
        .join("agentwatch")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as root: directly when we are root, else through sudo.
pub fn as_root(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("--preserve-env").arg(program);
        cmd
    }
}

/// Runs `cmd`, failing with its description when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

fn build(root: &Path, release: bool) -> Result<()> {
    let mut cmd = cargo(root);
    cmd.args(["build", "--workspace", "--exclude", "agentwatch-ebpf"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn lint(root: &Path) -> Result<()> {
    run(cargo(root).args(["fmt", "--all", "--", "--check"]))?;
    run(cargo(root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "agentwatch-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel programs only build for the BPF target, with the nightly.
    run(Command::new("rustup")
        .current_dir(root.join("agentwatch-ebpf"))
        .env("PATH", setup::path_with_toolchain())
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ]))
}

/// Runs the tests against `binary` and `package` (`AGENTWATCH_BIN`,
/// `AGENTWATCH_DEB`).
fn test(root: &Path, binary: &Path, package: &Path, args: &[OsString]) -> Result<()> {
    if !is_root() {
        bail!(
            "the tests load eBPF programs into the kernel and must run as root: \
             sudo -E cargo xtask test"
        );
    }
    let mut cmd = cargo(root);
    cmd.args(["test", "--workspace", "--exclude", "agentwatch-ebpf"])
        .env("AGENTWATCH_BIN", binary)
        .env("AGENTWATCH_DEB", package)
        .args(args);
    run(&mut cmd)
}
