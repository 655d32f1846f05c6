//! What one boot produced, read back from the results share: `check` and
//! `run`, libtest's verdict per test with the failure's own output, and the
//! kernel messages that matter. Printed, as JSON, and as README's table.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::Lane;

const README_BEGIN: &str = "<!-- kernel-matrix:begin -->";
const README_END: &str = "<!-- kernel-matrix:end -->";
/// dmesg lines worth showing next to a failure.
const DMESG_MARKERS: &[&str] = &[
    "BUG",
    "WARNING",
    "Oops",
    "panic",
    "Call Trace",
    "bpf",
    "BPF",
    "segfault",
    "9p",
    "overlay",
];
/// Lines of a failing test's output printed (JSON keeps all of it).
const PRINTED_LINES: usize = 30;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Never reached: the VM hung or the binary died first.
    NotRun,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::NotRun => "not run",
        }
    }
}

pub struct TestResult {
    pub target: String,
    pub name: String,
    pub outcome: Outcome,
    /// libtest's captured output of a failing test (its panic message).
    pub message: String,
}

/// A step the guest ran (`check`, `run`): its exit status and output.
pub struct Step {
    pub ok: bool,
    pub output: String,
}

/// The result file the guest's script writes first (`uname -r`): present
/// once the guest ran the lane's script.
pub const UNAME_RESULT: &str = "uname";

pub struct KernelReport {
    pub series: String,
    pub too_old: bool,
    pub accel: &'static str,
    /// Debian package name and version.
    pub package: Option<(String, String)>,
    /// `uname -r` in the guest: present once the guest ran the lane's script.
    pub release: Option<String>,
    pub seconds: f64,
    /// Why the lane could not finish on this kernel (download, boot, timeout).
    pub error: Option<String>,
    pub check: Option<Step>,
    pub run: Option<Step>,
    pub tests: Vec<TestResult>,
    pub dmesg: Vec<String>,
    /// The end of the serial console, for boots that never reached the script.
    pub console_tail: Vec<String>,
}

impl KernelReport {
    pub fn new(series: &str, too_old: bool, accel: &'static str) -> Self {
        Self {
            series: series.to_string(),
            too_old,
            accel,
            package: None,
            release: None,
            seconds: 0.0,
            error: None,
            check: None,
            run: None,
            tests: Vec::new(),
            dmesg: Vec::new(),
            console_tail: Vec::new(),
        }
    }

    /// Reads what the guest left in `dir/results` for `suites` (target and
    /// the tests it was to run).
    pub fn collect(&mut self, dir: &Path, suites: &[(&str, &[String])]) {
        let results = dir.join("results");
        let read = |name: &str| fs::read_to_string(results.join(name)).ok();
        let step = |name: &str| {
            let rc = read(&format!("{name}.rc"))?;
            Some(Step {
                ok: rc.trim() == "0",
                output: read(&format!("{name}.out")).unwrap_or_default(),
            })
        };
        self.release = read(UNAME_RESULT).map(|text| text.trim().to_string());
        self.check = step("check");
        self.run = step("run");
        for (target, tests) in suites {
            let output = read(&format!("{target}.out")).unwrap_or_default();
            self.tests.extend(parse_libtest(target, &output, tests));
        }
        self.dmesg = read("dmesg.txt")
            .unwrap_or_default()
            .lines()
            .filter(|line| DMESG_MARKERS.iter().any(|marker| line.contains(marker)))
            .map(str::to_string)
            .collect();
        let console = fs::read_to_string(dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = console.lines().collect();
        self.console_tail = lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|line| line.to_string())
            .collect();
    }

    /// `check`'s FAIL lines as (what, the kernel's verdict).
    fn check_failures(&self) -> Vec<(String, String)> {
        self.check
            .as_ref()
            .map_or_else(Vec::new, |check| check_failures(&check.output))
    }

    /// "pass", "fail", "error" or "too old".
    pub fn result(&self) -> &'static str {
        if self.too_old {
            "too old"
        } else if self.error.is_some() {
            "error"
        } else if self.check.as_ref().is_some_and(|check| check.ok)
            && self.run.as_ref().is_some_and(|run| run.ok)
            && self.tests.iter().all(|test| test.outcome == Outcome::Pass)
        {
            "pass"
        } else {
            "fail"
        }
    }

    pub fn failed(&self) -> bool {
        !matches!(self.result(), "pass" | "too old")
    }

    /// "foundation 12/12, enforcement 0/15".
    fn counts(&self) -> String {
        let mut targets: Vec<&str> = Vec::new();
        for test in &self.tests {
            if !targets.contains(&test.target.as_str()) {
                targets.push(&test.target);
            }
        }
        targets
            .iter()
            .map(|target| {
                let of: Vec<_> = self.tests.iter().filter(|t| t.target == *target).collect();
                let passed = of.iter().filter(|t| t.outcome == Outcome::Pass).count();
                format!("{target} {passed}/{}", of.len())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line for the table: what passed, and why not.
    fn notes(&self) -> String {
        let mut notes = Vec::new();
        if let Some(error) = &self.error {
            notes.push(error.lines().next().unwrap_or_default().to_string());
        }
        if let Some(check) = self.check.as_ref().filter(|check| check.ok) {
            notes.push(format!("check ok ({})", judgments(&check.output)));
        }
        // One note per verdict: the hooks a kernel refuses usually share one.
        let mut verdicts: Vec<(String, Vec<String>)> = Vec::new();
        for (what, verdict) in self.check_failures() {
            match verdicts.iter_mut().find(|(v, _)| *v == verdict) {
                Some((_, whats)) => whats.push(what),
                None => verdicts.push((verdict, vec![what])),
            }
        }
        for (verdict, whats) in verdicts {
            notes.push(format!("check FAIL {}: {verdict}", whats.join(", ")));
        }
        if self.run.as_ref().is_some_and(|run| !run.ok) {
            notes.push("`run` fails".to_string());
        }
        let counts = self.counts();
        if !counts.is_empty() {
            notes.push(counts);
        }
        notes.join("; ").replace('|', "\\|")
    }
}

/// Which judgment this kernel gets, from `check`'s lines: names at the first
/// write or addresses only, where a refusal's signal is sent, and uprobes.
fn judgments(output: &str) -> String {
    let status = |what: &str| {
        output
            .lines()
            .find(|line| line.get(6..).is_some_and(|rest| rest.starts_with(what)))
            .map(|line| (line.starts_with("ok"), line))
    };
    let names = match status("first-write judgment") {
        Some((true, _)) => "names at the first write",
        _ => "addresses only",
    };
    let signal = match status("kill and stop at a refusal") {
        Some((_, line)) if line.contains("in the connect hook") => "signal in the hook",
        _ => "signal at the syscall's exit",
    };
    let uprobes = match status("uprobes") {
        Some((true, _)) => "uprobes",
        _ => "no uprobes",
    };
    format!("{names}, {signal}, {uprobes}")
}

/// `check` prints `FAIL  WHAT(padded to 34) DETAIL`; for a program the
/// kernel refused, the detail is the verifier's reason.
fn check_failures(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("FAIL  "))
        .map(|rest| {
            let (what, detail) = match (rest.get(..34), rest.get(34..)) {
                (Some(what), Some(detail)) if detail.starts_with(' ') => (what, &detail[1..]),
                _ => rest.split_once("  ").unwrap_or((rest, "")),
            };
            (what.trim().to_string(), detail.trim().to_string())
        })
        .collect()
}

/// libtest's output: `test NAME ... ok|FAILED|ignored` per test, then a
/// `---- NAME stdout ----` section per failure. Tests of `planned` that never
/// printed a verdict are "not run".
fn parse_libtest(target: &str, output: &str, planned: &[String]) -> Vec<TestResult> {
    let mut results: Vec<TestResult> = planned
        .iter()
        .map(|name| TestResult {
            target: target.to_string(),
            name: name.clone(),
            outcome: Outcome::NotRun,
            message: String::new(),
        })
        .collect();
    let mut section: Option<usize> = None;
    // A test whose verdict a child's stderr pushed onto a later line.
    let mut awaiting: Option<usize> = None;
    let verdict_of = |text: &str| match text.trim() {
        "ok" => Some(Outcome::Pass),
        "FAILED" => Some(Outcome::Fail),
        _ => None,
    };
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, verdict)) = rest.split_once(" ... ")
            && let Some(index) = results.iter().position(|result| result.name == name)
        {
            match verdict_of(verdict) {
                Some(outcome) => results[index].outcome = outcome,
                None => awaiting = Some(index),
            }
            continue;
        }
        if let Some(index) = awaiting
            && let Some(outcome) = verdict_of(line)
        {
            results[index].outcome = outcome;
            awaiting = None;
            continue;
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            section = results.iter().position(|result| result.name == name);
            continue;
        }
        if line == "failures:" || line.starts_with("test result:") {
            section = None;
        }
        if let Some(index) = section {
            results[index].message.push_str(line);
            results[index].message.push('\n');
        }
    }
    for result in &mut results {
        result.message = result.message.trim_end().to_string();
        if result.outcome == Outcome::NotRun && result.message.is_empty() {
            result.message = "no verdict: the VM stopped or the test binary died first".into();
        }
    }
    results
}

pub fn print(reports: &[KernelReport]) {
    for report in reports {
        let (package, version) = report
            .package
            .clone()
            .unwrap_or_else(|| ("?".into(), "?".into()));
        println!(
            "\n== kernel {}: {}  ({package} {version}, uname {}, {}, {:.0} s)",
            report.series,
            report.result().to_uppercase(),
            report.release.as_deref().unwrap_or("?"),
            report.accel,
            report.seconds,
        );
        if let Some(error) = &report.error {
            println!("   error: {error}");
            for line in &report.console_tail {
                println!("   | {line}");
            }
        }
        match &report.check {
            Some(check) if check.ok => println!("   check: ok"),
            Some(check) => {
                println!("   check: FAIL");
                for line in check.output.lines().filter(|line| !line.starts_with("ok")) {
                    println!("     {line}");
                }
            }
            None => println!("   check: no result"),
        }
        match &report.run {
            Some(run) if run.ok => println!("   run: ok"),
            Some(run) => {
                println!("   run: FAIL");
                for line in run.output.lines().take(PRINTED_LINES) {
                    println!("     {line}");
                }
            }
            None => println!("   run: no result"),
        }
        for test in &report.tests {
            println!(
                "   {:<7} {}::{}",
                test.outcome.as_str(),
                test.target,
                test.name
            );
            if test.outcome != Outcome::Pass {
                for line in test.message.lines().take(PRINTED_LINES) {
                    println!("           {line}");
                }
            }
        }
        if report.failed() && !report.dmesg.is_empty() {
            println!("   dmesg:");
            for line in &report.dmesg {
                println!("     {line}");
            }
        }
    }
    println!("\n{}", table(reports));
    // A plain closing line, as test runners end theirs (not-run tests count
    // as failed: the lane could not show they pass).
    let tests = || reports.iter().flat_map(|report| &report.tests);
    let passed = tests().filter(|test| test.outcome == Outcome::Pass).count();
    println!("vm: {passed} passed, {} failed", tests().count() - passed);
}

pub fn json(lane: &str, reports: &[KernelReport]) -> String {
    let kernels: Vec<Value> = reports
        .iter()
        .map(|report| {
            let step = |step: &Option<Step>| {
                step.as_ref()
                    .map(|step| json!({"ok": step.ok, "output": step.output}))
            };
            json!({
                "series": report.series,
                "result": report.result(),
                "package": report.package.as_ref().map(|(name, _)| name),
                "version": report.package.as_ref().map(|(_, version)| version),
                "release": report.release,
                "accel": report.accel,
                "seconds": report.seconds.round(),
                "error": report.error,
                "check": step(&report.check),
                "check_failures": report.check_failures(),
                "run": step(&report.run),
                "tests": report.tests.iter().map(|test| json!({
                    "target": test.target,
                    "name": test.name,
                    "result": test.outcome.as_str(),
                    "message": test.message,
                })).collect::<Vec<_>>(),
                "dmesg": report.dmesg,
                "console_tail": report.console_tail,
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({"lane": lane, "kernels": kernels}))
        .expect("a JSON value serializes")
}

fn table(reports: &[KernelReport]) -> String {
    let mut table = String::from("| kernel | result | notes |\n| --- | --- | --- |\n");
    for report in reports {
        let kernel = match (&report.package, &report.release) {
            (_, Some(release)) => format!("{} (`{release}`)", report.series),
            (Some((_, version)), None) => format!("{} ({version})", report.series),
            _ => report.series.clone(),
        };
        table.push_str(&format!(
            "| {kernel} | {} | {} |\n",
            report.result(),
            report.notes()
        ));
    }
    table
}

/// Replaces what is between README's kernel-matrix markers with the table.
pub fn update_readme(
    path: &Path,
    reports: &[KernelReport],
    lane: Lane,
    commit: &str,
) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(README_BEGIN), text.find(README_END)) else {
        bail!(
            "{} lacks the {README_BEGIN} / {README_END} markers",
            path.display()
        );
    };
    let command = match lane {
        Lane::Full => "cargo xtask test --kernels all",
        Lane::Quick => "cargo xtask test --kernels all --quick",
    };
    let body = format!(
        "{README_BEGIN}\n{}\nMeasured by `{command}` ({}) at commit {commit}, under qemu ({}).\n",
        table(reports),
        lane.describe(),
        reports.first().map_or("tcg", |report| report.accel)
    );
    let updated = format!("{}{body}{}", &text[..begin], &text[end..]);
    fs::write(path, updated).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("vm: kernel table updated in {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
running 3 tests
test a_block ... ok
test a_kill ... FAILED
test a_third ... 
failures:

---- a_kill stdout ----
thread 'a_kill' panicked at enforcement.rs:10:5:
agentwatch: loading connect4: unknown func bpf_send_signal#109

failures:
    a_kill
";

    #[test]
    fn verdicts_messages_and_tests_never_reached() {
        let planned: Vec<String> = ["a_block", "a_kill", "a_third", "a_fourth"]
            .map(String::from)
            .to_vec();
        let results = parse_libtest("enforcement", OUTPUT, &planned);
        let outcomes: Vec<Outcome> = results.iter().map(|r| r.outcome).collect();
        assert!(
            outcomes
                == [
                    Outcome::Pass,
                    Outcome::Fail,
                    Outcome::NotRun,
                    Outcome::NotRun
                ],
            "{:?}",
            results
                .iter()
                .map(|r| r.outcome.as_str())
                .collect::<Vec<_>>()
        );
        assert!(
            results[1]
                .message
                .contains("unknown func bpf_send_signal#109")
        );
        assert!(!results[1].message.contains("failures:"));
        assert!(results[3].message.starts_with("no verdict"));
        // A child's stderr between a test's name and its verdict.
        let interleaved = "test a_top ... no server running on /tmp/tmux-0/default\nok\n";
        let results = parse_libtest("daemon", interleaved, &["a_top".to_string()]);
        assert!(
            results[0].outcome == Outcome::Pass,
            "{}",
            results[0].outcome.as_str()
        );
    }

    #[test]
    fn judgments_say_how_each_kernel_judges() {
        let newer = "\
ok    kill and stop at a refusal         in the connect hook, before the refused call returns
ok    first-write judgment               a session's TCP socket is judged by the name ...
ok    uprobes                            available in this kernel (uprobe PMU)
";
        assert_eq!(
            judgments(newer),
            "names at the first write, signal in the hook, uprobes"
        );
        let older = "\
ok    kill and stop at a refusal         at the refused connect's return (...)
warn  first-write judgment               unavailable: this kernel lacks sk_msg
warn  uprobes                            missing: no uprobe PMU
";
        assert_eq!(
            judgments(older),
            "addresses only, signal at the syscall's exit, no uprobes"
        );
    }

    #[test]
    fn check_failures_keep_the_hook_and_the_verifiers_verdict() {
        let output = "\
ok    Syscall sys_exit_execveat          attached
FAIL  CgroupSockAddr connect4            this kernel's verifier rejected it (Invalid argument): unknown func bpf_send_signal#109
FAIL  kernel programs                    not probed: needs root
warn  OS keyring                         tokens are not seen
agentwatch cannot run here: see FAIL above.
";
        assert_eq!(
            check_failures(output),
            [
                (
                    "CgroupSockAddr connect4".to_string(),
                    "this kernel's verifier rejected it (Invalid argument): unknown func bpf_send_signal#109"
                        .to_string()
                ),
                (
                    "kernel programs".to_string(),
                    "not probed: needs root".to_string()
                ),
            ]
        );
    }
}
