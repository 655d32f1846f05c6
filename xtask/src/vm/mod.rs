//! The VM lane: the host-built agentwatch and integration tests run on other
//! kernels (Debian's packages, booted under qemu with the host's `/` as a
//! read-only root), reported per kernel and per test.

mod initramfs;
mod kernel;
mod qemu;
mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use report::KernelReport;

/// Every kernel series the lane knows: the oldest Debian still ships
/// (bullseye) up to the newest backport.
pub const ALL: &[&str] = &["5.10", "6.1", "6.12", "6.16", "6.18", "7.3"];
/// The oldest supported kernel and the newest, for the quick lane.
pub const QUICK: &[&str] = &["6.1", "7.3"];
/// Older than agentwatch supports: booted and `check` recorded, the suite
/// not run, and never counted as a failure.
const TOO_OLD: &[&str] = &["5.10"];
/// The integration test targets of the `tests` crate.
const TARGETS: &[&str] = &[
    "foundation",
    "enforcement",
    "names",
    "dns",
    "daemon",
    "operations",
    "scanning",
];
/// The quick lane's tests, by target: a block, a kill, an allowed call
/// without a credential read, a token inherited in the environment, and a
/// refusal by the name a first write asks for next to the user's app on the
/// same address, and a TLS request judged by its operation at `SSL_write`.
const QUICK_TESTS: &[(&str, &str)] = &[
    (
        "enforcement",
        "reading_the_railway_token_then_calling_railway_is_blocked_and_alerted",
    ),
    ("enforcement", "under_kill_the_session_dies"),
    (
        "enforcement",
        "without_a_credential_read_the_call_is_allowed",
    ),
    (
        "enforcement",
        "a_session_started_with_a_token_in_its_environment_is_blocked",
    ),
    (
        "names",
        "the_users_app_on_a_shared_address_passes_and_the_api_host_is_refused_by_its_name",
    ),
    (
        "operations",
        "a_graphql_query_reaches_railway_and_the_volume_deletion_never_does",
    ),
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `check`, `run` and [`QUICK_TESTS`].
    Quick,
    /// `check`, `run` and every integration test.
    Full,
}

impl Lane {
    fn timeout(self) -> Duration {
        match self {
            Lane::Quick => Duration::from_secs(10 * 60),
            Lane::Full => Duration::from_secs(45 * 60),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lane::Quick => "quick",
            Lane::Full => "full",
        }
    }

    /// What the lane runs, for README's table.
    fn describe(self) -> &'static str {
        match self {
            Lane::Quick => "the quick lane: check, run and the core enforcement tests",
            Lane::Full => "the full lane: check, run and the whole integration suite",
        }
    }
}

/// One test binary as the guest runs it.
struct Suite {
    target: &'static str,
    exe: PathBuf,
    args: Vec<String>,
    /// Every test it will run, so that tests a hung VM never reached are
    /// reported too.
    tests: Vec<String>,
}

/// Boots each of `kernels` in turn and runs `lane` there; prints the report,
/// writes it to target/vm/LANE/report.json and, with `update_readme`, README's
/// kernel table. Fails when any supported kernel fails.
pub fn run(
    root: &Path,
    kernels: &[&str],
    lane: Lane,
    update_readme: bool,
    how: Source,
) -> Result<()> {
    let suites = suites(root, lane)?;
    let mut reports = Vec::new();
    for &series in kernels {
        eprintln!("vm: kernel {series}, {} lane", lane.name());
        let mut report = KernelReport::new(series, TOO_OLD.contains(&series), qemu::accel());
        let result = match how {
            Source::Boot => boot(root, series, lane, &suites, &mut report),
            Source::LastRun => collect_last(root, series, lane, &suites, &mut report),
        };
        if let Err(error) = result {
            report.error = Some(format!("{error:#}"));
        }
        reports.push(report);
    }
    report::print(&reports);
    let json = lane_dir(root, lane).join("report.json");
    fs::create_dir_all(lane_dir(root, lane))?;
    fs::write(&json, report::json(lane.name(), &reports))?;
    eprintln!("vm: report written to {}", json.display());
    if update_readme {
        report::update_readme(&root.join("README.md"), &reports, lane, &commit(root))?;
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|report| report.failed())
        .map(|report| report.series.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("the VM lane failed on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}

/// Where a kernel's results come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Boot the kernel and run the lane.
    Boot,
    /// Read what the last boot of this lane left in target/vm (after a run
    /// that was interrupted, say), booting nothing.
    LastRun,
}

fn collect_last(
    root: &Path,
    series: &str,
    lane: Lane,
    suites: &[Suite],
    report: &mut KernelReport,
) -> Result<()> {
    let dir = lane_dir(root, lane).join(series);
    if !dir.join("results").is_dir() {
        bail!(
            "no results of an earlier {} lane run in {}",
            lane.name(),
            dir.display()
        );
    }
    collect(&dir, &lane_suites(suites, report), report);
    ran_the_script(&dir, report)
}

/// The suites a kernel runs: none on one too old to load the programs.
fn lane_suites<'a>(suites: &'a [Suite], report: &KernelReport) -> Vec<&'a Suite> {
    if report.too_old {
        Vec::new()
    } else {
        suites.iter().collect()
    }
}

fn collect(dir: &Path, suites: &[&Suite], report: &mut KernelReport) {
    let planned: Vec<(&str, &[String])> = suites
        .iter()
        .map(|suite| (suite.target, suite.tests.as_slice()))
        .collect();
    report.collect(dir, &planned);
}

fn ran_the_script(dir: &Path, report: &KernelReport) -> Result<()> {
    if report.release.is_none() {
        bail!(
            "the guest never ran the lane's script (console: {})",
            dir.join("console.log").display()
        );
    }
    Ok(())
}

fn boot(
    root: &Path,
    series: &str,
    lane: Lane,
    suites: &[Suite],
    report: &mut KernelReport,
) -> Result<()> {
    let kernel = kernel::fetch(series)?;
    report.package = Some((kernel.package.clone(), kernel.version.clone()));
    let dir = lane_dir(root, lane).join(series);
    let results = dir.join("results");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&results)?;
    let initramfs = dir.join("initramfs.cpio");
    initramfs::build(&kernel, &initramfs)?;
    let suites = lane_suites(suites, report);
    fs::write(results.join("guest.sh"), guest_script(root, &suites))?;
    let boot = qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initramfs: &initramfs,
        dir: &dir,
        timeout: lane.timeout(),
    };
    let mut outcome = qemu::boot(&boot)?;
    // Under TCG a guest now and then oopses in its own boot-time code
    // patching (an int3 at ~1.4 s) before it runs anything of ours: that
    // boot tells nothing about agentwatch, so it gets one more. A guest
    // that ran the script is never booted again, whatever it reported.
    if !outcome.timed_out && !results.join(report::UNAME_RESULT).exists() {
        let first = dir.join("console-first-boot.log");
        fs::rename(dir.join("console.log"), &first)?;
        eprintln!(
            "vm: kernel {series}: the guest died before the lane's script ran ({}); booting once more",
            first.display()
        );
        outcome = qemu::boot(&boot)?;
    }
    report.seconds = outcome.elapsed.as_secs_f64();
    collect(&dir, &suites, report);
    if outcome.timed_out {
        bail!(
            "timed out after {} s (console: {})",
            lane.timeout().as_secs(),
            dir.join("console.log").display()
        );
    }
    ran_the_script(&dir, report)
}

/// Where a lane's boots and report go: the quick and the full lane do not
/// overwrite each other's.
fn lane_dir(root: &Path, lane: Lane) -> PathBuf {
    root.join("target/vm").join(lane.name())
}

/// Where the guest binds the host root (the 9p mount at `/`) a second time,
/// without the mounts on it, to reach what its tmpfs `/root` hides (a 9p
/// share cannot be mounted twice: "no channels available").
const HOST_ROOT_AGAIN: &str = "/run/host";

/// The script the guest runs as PID 1 in the host's root: each step's output
/// and exit status go to the results share, then the VM powers off.
fn guest_script(root: &Path, suites: &[&Suite]) -> String {
    let agentwatch = quote(&crate::binary(root, false));
    // Keeps the kernel's perf sched-in/out code and its syscall tracepoint
    // sites from being patched each time agentwatch attaches or detaches
    // while the suites run: under qemu's TCG, that patching has oopsed the
    // guest and locked it up (`aw-probe` says more).
    let probe = quote(&crate::binary(root, false).with_file_name("aw-probe"));
    // Built here: the guest cannot write the host's target directory.
    let go_client = quote(&agentwatch_tests::build_go_graphql_client(
        crate::binary(root, false)
            .parent()
            .expect("the binary's directory"),
    ));
    let go_env = agentwatch_tests::GO_CLIENT_ENV;
    let r = initramfs::RESULTS_IN_GUEST;
    let uname = report::UNAME_RESULT;
    // The guest's HOME is a tmpfs over the host's: the agents' npm
    // packages the daemon tests start are reached through a bind of the
    // host root without its submounts.
    let agents = quote(
        &Path::new(HOST_ROOT_AGAIN).join(
            agentwatch_tests::agent_packages_dir()
                .strip_prefix("/")
                .unwrap_or(Path::new("")),
        ),
    );
    let mut script = format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask test` for one VM boot.\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root TERM=xterm AGENTWATCH_BIN={agentwatch}\n\
         mkdir -p {HOST_ROOT_AGAIN} && mount --bind / {HOST_ROOT_AGAIN} \
         && export AGENTWATCH_AGENTS_DIR={agents}\n\
         export {go_env}={go_client}\n\
         ip link set lo up\n\
         {probe} hold-static-keys &\n\
         uname -r > {r}/{uname}\n\
         step() {{ name=$1; shift; \"$@\" > {r}/$name.out 2>&1; echo $? > {r}/$name.rc; }}\n\
         step check {agentwatch} check\n\
         step run {agentwatch} run -- sh -c 'cat /etc/hostname'\n"
    );
    // As cargo runs integration tests: from the package's directory.
    script.push_str(&format!("cd {}\n", quote(&root.join("tests"))));
    for suite in suites {
        script.push_str(&format!(
            "step {} {} --test-threads=1 {}\n",
            suite.target,
            quote(&suite.exe),
            suite.args.join(" ")
        ));
    }
    script.push_str(&format!(
        "dmesg > {r}/dmesg.txt\nsync\n/bin/busybox poweroff -f\necho o > /proc/sysrq-trigger\n"
    ));
    script
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The integration test binaries, built as `cargo xtask test` builds them (so
/// nothing is rebuilt), with the tests each will run.
fn suites(root: &Path, lane: Lane) -> Result<Vec<Suite>> {
    let out = crate::cargo(root)
        .args(["test", "--workspace", "--exclude", "agentwatch-ebpf"])
        .args(["--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed: {}", out.status);
    }
    let mut suites = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let target = &message["target"];
        let is_test = target["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "test"));
        let (Some(name), Some(exe)) = (target["name"].as_str(), message["executable"].as_str())
        else {
            continue;
        };
        let Some(&target) = TARGETS.iter().find(|&&t| t == name) else {
            continue;
        };
        let quick: Vec<&str> = QUICK_TESTS
            .iter()
            .filter(|(of, _)| *of == target)
            .map(|(_, test)| *test)
            .collect();
        if !is_test || (lane == Lane::Quick && quick.is_empty()) {
            continue;
        }
        let exe = PathBuf::from(exe);
        let listed = list_tests(&exe)?;
        let (args, tests) = match lane {
            Lane::Full => (Vec::new(), listed),
            Lane::Quick => {
                if let Some(missing) = quick.iter().find(|t| !listed.iter().any(|l| l == *t)) {
                    bail!(
                        "the quick lane's test {missing} is not in {target}: update vm::QUICK_TESTS"
                    );
                }
                let names: Vec<String> = quick.iter().map(|t| t.to_string()).collect();
                let mut args = vec!["--exact".to_string()];
                args.extend(names.iter().cloned());
                (args, names)
            }
        };
        suites.push(Suite {
            target,
            exe,
            args,
            tests,
        });
    }
    suites.sort_by_key(|suite| TARGETS.iter().position(|t| *t == suite.target));
    if suites.is_empty() {
        bail!("cargo built none of the test targets {TARGETS:?}");
    }
    Ok(suites)
}

fn list_tests(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .with_context(|| format!("listing the tests of {}", exe.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

fn commit(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default()
}
