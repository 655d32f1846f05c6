//! `cargo xtask bench`: what agentwatch costs and whether it holds, measured
//! on this machine against a no-monitor baseline taken in the same run.
//!
//! Sections (each fails soft: its error is recorded and the others run):
//! - `overhead`: open+close and connect loops, as ratios to no monitor, for
//!   a process outside any session while one runs, inside a watched
//!   session, with the daemon and no session, at the floor (bpftrace
//!   programs that return at once on the tracepoints agentwatch uses), and
//!   under bpftrace and auditd doing equivalent work; interleaved rounds,
//!   medians. Then a profile with `kernel.bpf_stats_enabled=1`: each BPF
//!   program's ns per loop iteration (bench/bpfstats.rs), against the
//!   measured extra ns.
//! - `writes`: 64-byte writes to a loopback socket, as ratios to no
//!   monitor, for a process outside any session while one runs, and inside
//!   a watched session on a socket whose first write named a harmless host
//!   (taken out of the sockhash) or an infrastructure host (every write
//!   judged: the ns each write pays); the writer's CPU time, same rounds.
//! - `throughput`: events/s ingested from parallel busy sessions, and the
//!   rate at which the ring buffer starts to lose events.
//! - `race`: read a credential and connect at once, under block: fresh
//!   sessions, and fresh children of one session; nothing may get through.
//! - `memory`: resident memory with 10,000 tracked processes and with none.
//! - `latency`: from a blocked connect to its alert line on stderr.
//! - `start`: `agentwatch run -- true`, standalone and through a daemon.
//! - `build`: a real cargo build, and a shell test suite (many short
//!   processes, many small file opens), inside a watched session against
//!   unwatched: interleaved pairs, the median ratio and a distribution-free
//!   95% interval for it.
//!
//! The load is `xtask bench-load` (bench/load.rs), a separate process. All
//! of it runs in a network namespace the bench creates (bench/lab.rs).

mod bpfstats;
mod e2e;
mod lab;
mod latency;
pub mod load;
mod memory;
mod overhead;
mod peers;
mod procs;
mod race;
mod report;
mod rounds;
mod start;
mod throughput;
mod tls;
mod writes;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::{run, setup};
use lab::Lab;
use procs::{Proc, check_interrupted};

#[derive(Args)]
pub struct Options {
    /// A smoke run of a few minutes (fewer rounds and pairs, shorter loops).
    #[arg(long)]
    quick: bool,
    /// Run only these sections.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
    /// The agentwatch binary to measure (default: build target/release/agentwatch).
    #[arg(long, value_name = "PATH")]
    agentwatch: Option<PathBuf>,
    /// Rounds of the syscall loops (default 5, 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Print the table only; write nothing under bench/results.
    #[arg(long)]
    no_save: bool,
    /// Measure nothing: print the table of a results file (e.g. bench/results/latest.json).
    #[arg(long, value_name = "JSON")]
    table_from: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Section {
    Overhead,
    Writes,
    Tls,
    Throughput,
    Race,
    Memory,
    Latency,
    Start,
    Build,
}

impl Section {
    const ALL: [Section; 9] = [
        Section::Overhead,
        Section::Writes,
        Section::Tls,
        Section::Throughput,
        Section::Race,
        Section::Memory,
        Section::Latency,
        Section::Start,
        Section::Build,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Overhead => "overhead",
            Section::Writes => "writes",
            Section::Tls => "tls",
            Section::Throughput => "throughput",
            Section::Race => "race",
            Section::Memory => "memory",
            Section::Latency => "latency",
            Section::Start => "start",
            Section::Build => "build",
        }
    }
}

/// What every section needs.
pub struct Ctx {
    pub quick: bool,
    pub rounds: usize,
    pub agentwatch: PathBuf,
    pub xtask: PathBuf,
    /// Scratch directory, removed at the end.
    pub dir: PathBuf,
    pub lab: Lab,
    /// `agentwatch daemon --help`, when this build has a daemon.
    pub daemon_help: Option<String>,
    /// The bench added `auditctl -a task,never` (see peers::AuditQuiet).
    pub audit_quiet: bool,
    seq: AtomicU64,
}

impl Ctx {
    /// A unique name for a log file in the scratch directory.
    pub fn name(&self, what: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        format!("{n:05}-{what}")
    }

    /// `xtask bench-load ARGS` in the lab's namespace.
    pub fn load<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = self.lab.command(&self.xtask);
        cmd.arg("bench-load").args(args).current_dir(&self.dir);
        cmd
    }

    /// `agentwatch run OPTIONS -- xtask bench-load ARGS` in the lab's namespace.
    pub fn watched_load<S: AsRef<OsStr>>(&self, options: &[&str], args: &[S]) -> Command {
        let mut cmd = self.watched(options);
        cmd.arg(&self.xtask).arg("bench-load").args(args);
        cmd
    }

    /// `agentwatch run OPTIONS --` in the lab's namespace, for the caller
    /// to append the command to.
    pub fn watched(&self, options: &[&str]) -> Command {
        let mut cmd = self.lab.command(&self.agentwatch);
        cmd.arg("run")
            .args(options)
            .arg("--")
            .current_dir(&self.dir);
        cmd
    }

    /// `agentwatch daemon` in the lab's namespace, once it watches: in
    /// observe mode (it adopts agents already running on this machine, whose
    /// connections the bench must not touch), with its control socket in
    /// the scratch directory and its metrics on the lab's loopback. Returns
    /// it and its control socket.
    pub fn start_daemon(&self) -> Result<(Proc, PathBuf)> {
        let Some(help) = &self.daemon_help else {
            bail!("not available in this build (no `agentwatch daemon`)");
        };
        let name = self.name("daemon");
        let mut cmd = self.lab.command(&self.agentwatch);
        cmd.arg("daemon").current_dir(&self.dir);
        if help.contains("--mode") {
            cmd.args(["--mode", "observe"]);
        }
        let socket = self.dir.join(format!("{name}.sock"));
        if help.contains("--socket") {
            cmd.arg("--socket").arg(&socket);
        }
        if help.contains("--metrics") {
            cmd.args(["--metrics", DAEMON_METRICS]);
        }
        let daemon = Proc::spawn_logged(&mut cmd, &self.dir, &name)?;
        let stderr = self.dir.join(format!("{name}.stderr"));
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            if text.contains("daemon watching agents") {
                break;
            }
            if !daemon.running() {
                bail!("agentwatch daemon exited: {}", procs::tail(&text, 600));
            }
            if Instant::now() >= deadline {
                // An older or newer daemon may word it differently.
                procs::wait_attached(&daemon, "agentwatch daemon")?;
                break;
            }
            check_interrupted()?;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok((daemon, socket))
    }

    /// The daemon's Prometheus metrics: the sum of each sample of `metric`.
    pub fn daemon_metric(&self, metric: &str) -> Option<f64> {
        let text = self.lab.http_get(DAEMON_METRICS, "/metrics").ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|line| {
                line.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.split_whitespace().last()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

/// Where the bench's daemon serves metrics (inside the lab's namespace).
const DAEMON_METRICS: &str = "127.0.0.1:9464";

pub fn bench(root: &Path, options: Options) -> Result<()> {
    if let Some(path) = &options.table_from {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        print!("{}", report::table(&serde_json::from_str(&text)?));
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "the bench loads eBPF programs, creates a network namespace and adds audit rules: \
             run it as root (sudo -E cargo xtask bench)"
        );
    }
    procs::catch_interrupts();
    let started = Instant::now();
    let mut results = json!({});
    results["started"] = json!(report::utc_timestamp(load::realtime_ns(), true));
    if let Err(error) = setup::setup(setup::Packages::Bench) {
        eprintln!("bench: set-up failed, going on with what is installed: {error:#}");
        results["setup_error"] = json!(format!("{error:#}"));
    }
    let (agentwatch, binary) = agentwatch_binary(root, options.agentwatch.as_deref());
    results["binary"] = binary;
    let agentwatch = agentwatch?
        .canonicalize()
        .context("the agentwatch binary")?;
    results["machine"] = report::machine(root, &agentwatch);
    let dir = scratch_dir()?;
    let audit_quiet = peers::AuditQuiet::engage();
    let outcome = (|| -> Result<()> {
        let lab = Lab::new().context("creating the bench's network namespace")?;
        let daemon_help = Command::new(&agentwatch)
            .args(["daemon", "--help"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
        results["daemon_available"] = json!(daemon_help.is_some());
        let ctx = Ctx {
            quick: options.quick,
            rounds: options.rounds.unwrap_or(if options.quick { 2 } else { 5 }),
            agentwatch: agentwatch.clone(),
            xtask: std::env::current_exe().context("the xtask binary")?,
            dir: dir.clone(),
            lab,
            daemon_help,
            audit_quiet: audit_quiet.engaged,
            seq: AtomicU64::new(0),
        };
        results["quick"] = json!(ctx.quick);
        results["rounds"] = json!(ctx.rounds);
        let sections: Vec<Section> = if options.only.is_empty() {
            Section::ALL.to_vec()
        } else {
            options.only.clone()
        };
        for section in sections {
            let name = section.name();
            let start = Instant::now();
            eprintln!("bench: {name} ...");
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_interrupted()?;
                match section {
                    Section::Overhead => overhead::run(&ctx),
                    Section::Writes => writes::run(&ctx),
                    Section::Tls => tls::run(&ctx),
                    Section::Throughput => throughput::run(&ctx),
                    Section::Race => race::run(&ctx),
                    Section::Memory => memory::run(&ctx),
                    Section::Latency => latency::run(&ctx),
                    Section::Start => start::run(&ctx),
                    Section::Build => e2e::run(&ctx),
                }
            }));
            let mut value = match result {
                Ok(Ok(value)) => value,
                Ok(Err(error)) => json!({ "error": format!("{error:#}") }),
                Err(panic) => json!({ "error": format!("panicked: {}", panic_text(&panic)) }),
            };
            let seconds = start.elapsed().as_secs_f64();
            value["seconds"] = json!(seconds);
            if let Some(error) = value.get("error") {
                eprintln!("bench: {name} failed after {seconds:.0} s: {error}");
            } else {
                eprintln!("bench: {name} done in {seconds:.0} s");
            }
            results[name] = value;
        }
        Ok(())
    })();
    drop(audit_quiet);
    if let Err(error) = outcome {
        results["error"] = json!(format!("{error:#}"));
        eprintln!("bench: {error:#}");
    }
    results["seconds"] = json!(started.elapsed().as_secs_f64());
    results["load_average_end"] = json!(report::loadavg());
    if procs::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        results["interrupted"] = json!(true);
    }
    let table = report::table(&results);
    println!("{table}");
    if !options.no_save {
        let out = root.join("bench/results");
        std::fs::create_dir_all(&out)?;
        let text = serde_json::to_string_pretty(&results)? + "\n";
        let stamp = report::utc_timestamp(load::realtime_ns(), false);
        let file = out.join(format!("{stamp}.json"));
        std::fs::write(&file, &text)?;
        std::fs::write(out.join("latest.json"), &text)?;
        std::fs::write(out.join("latest.md"), &table)?;
        eprintln!("bench: wrote {} and latest.json", file.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn scratch_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("aw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The binary to measure: the one given, or a fresh release build; if that
/// build fails (others may be mid-edit), the newest existing build.
fn agentwatch_binary(root: &Path, given: Option<&Path>) -> (Result<PathBuf>, Value) {
    if let Some(path) = given {
        return (
            Ok(path.to_path_buf()),
            json!({ "path": path, "given": true }),
        );
    }
    let build = run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args(["build", "--release", "-p", "agentwatch"]),
    );
    let mut info = json!({});
    if let Err(error) = &build {
        eprintln!("bench: the release build failed; measuring the newest existing build");
        info["build_error"] = json!(format!("{error:#}"));
    }
    let candidates = [
        root.join("target/release/agentwatch"),
        root.join("target/debug/agentwatch"),
    ];
    let newest = if build.is_ok() {
        Some(candidates[0].clone())
    } else {
        candidates
            .iter()
            .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
            .max()
            .map(|(_, path)| path.clone())
    };
    match newest {
        Some(path) => {
            info["path"] = json!(path);
            info["profile"] = json!(if path.ends_with("release/agentwatch") {
                "release"
            } else {
                "debug"
            });
            (Ok(path), info)
        }
        None => (Err(anyhow::anyhow!("no agentwatch binary")), info),
    }
}
