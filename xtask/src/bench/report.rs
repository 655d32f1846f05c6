//! Statistics, machine facts, and the markdown table.

use std::{fmt::Write as _, path::Path, process::Command};

use serde_json::{Value, json};

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// A distribution-free confidence interval for the median of `values`:
/// the order statistics x(k) and x(n+1-k) (1-based, sorted), with k the
/// largest for which P(k <= B <= n-k) >= `level`, B ~ Binomial(n, 1/2).
/// Returns (low, high, the interval's exact coverage). With fewer than 6
/// values no pair reaches 95%: then it is the range, min to max, and its
/// (smaller) coverage says so.
pub fn median_interval(values: &[f64], level: f64) -> Option<(f64, f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    // P(B <= j) for B ~ Binomial(n, 1/2).
    let cdf = |j: usize| -> f64 {
        let mut term = 0.5f64.powi(n as i32); // C(n,0)/2^n
        let mut sum = 0.0;
        for i in 0..=j {
            if i > 0 {
                term *= (n + 1 - i) as f64 / i as f64;
            }
            sum += term;
        }
        sum
    };
    // Coverage of [x(k), x(n+1-k)] is 1 - 2 P(B <= k-1).
    let coverage = |k: usize| 1.0 - 2.0 * cdf(k - 1);
    let mut k = 1;
    while k < n.div_ceil(2) && coverage(k + 1) >= level {
        k += 1;
    }
    Some((sorted[k - 1], sorted[n - k], coverage(k)))
}

/// p50, p90, p99, min and max (nearest rank).
pub fn percentiles(values: &[f64]) -> Value {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return Value::Null;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
    };
    json!({
        "n": sorted.len(),
        "min": sorted[0],
        "p50": rank(50.0),
        "p90": rank(90.0),
        "p99": rank(99.0),
        "max": sorted[sorted.len() - 1],
    })
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-27T15:20:00Z`, or `20261127T152000Z` for a file name.
pub fn utc_timestamp(realtime_ns: u64, readable: bool) -> String {
    let secs = (realtime_ns / 1_000_000_000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if readable {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
    }
}

/// `2026-11-25T11:50:21.132193Z` → nanoseconds since the epoch.
pub fn parse_rfc3339_ns(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    let digits = frac.len().min(9);
    let frac_ns = frac[..digits].parse::<u64>().ok()? * 10u64.pow((9 - digits) as u32);
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as u64 * 1_000_000_000 + frac_ns)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn command_output(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn machine(root: &Path, agentwatch: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|line| {
        line.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
    });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo.lines().find_map(|line| {
        line.strip_prefix("MemTotal:")?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    let dirty = command_output("git", &["status", "--porcelain"], root)
        .map(|status| status.lines().count());
    json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_mb": mem_kb.map(|kb| kb / 1024),
        "load_average_start": loadavg(),
        "git_head": command_output("git", &["rev-parse", "--short", "HEAD"], root),
        "git_uncommitted_files": dirty,
        "agentwatch": agentwatch,
        "agentwatch_version": command_output(&agentwatch.to_string_lossy(), &["--version"], root),
    })
}

fn ratio_cell(summary: &Value, config: &str, name: &str) -> String {
    let figure = &summary[config][name];
    match (
        figure["median_ratio"].as_f64(),
        figure["median_ns"].as_f64(),
    ) {
        (Some(ratio), Some(ns)) => format!("{ratio:.2}x ({:.2} µs)", ns / 1e3),
        _ => "not measured".into(),
    }
}

fn ratio(summary: &Value, config: &str, name: &str) -> Option<f64> {
    summary[config][name]["median_ratio"].as_f64()
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn all(values: &[Option<bool>]) -> Option<bool> {
    values
        .iter()
        .copied()
        .collect::<Option<Vec<bool>>>()
        .map(|v| v.iter().all(|&b| b))
}

fn mb(kb: &Value) -> String {
    kb.as_f64()
        .map_or("n/a".into(), |kb| format!("{:.1} MB", kb / 1024.0))
}

/// Why a section (or part) has no figures: it failed, or it was not run.
fn error_of(section: &Value) -> Option<String> {
    if section.is_null() {
        return Some("not run".into());
    }
    section
        .get("error")
        .map(|e| e.as_str().unwrap_or_default().chars().take(160).collect())
}

/// Small socket writes: the first-write sensor's cost per write, in the
/// writer's CPU time (wall time, in the JSON, also holds waiting for a core).
fn writes_table(out: &mut String, r: &Value) {
    let w = &r["writes"];
    let s = &w["summary"];
    let _ = writeln!(
        out,
        "\n| 64-byte socket writes ({} rounds, medians; ratio to no agentwatch in the same round) | writer's CPU time per write | goal | verdict |",
        r["rounds"]
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    if let Some(error) = error_of(w) {
        let _ = writeln!(out, "| writes section failed: {error} | | | not measured |");
    }
    let baseline = s["baseline"]["cpu"]["median_ns"]
        .as_f64()
        .map_or("not measured".into(), |ns| format!("{:.2} µs", ns / 1e3));
    let _ = writeln!(out, "| no agentwatch (baseline) | {baseline} | | |");
    for (key, label) in [
        (
            "untracked",
            "process outside any session, a session running",
        ),
        (
            "harmless",
            "watched session, first write named a harmless host (socket taken out of the sockhash)",
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | unchanged (≤ {WRITES_NOISE}x, noise) | {} |",
            ratio_cell(s, key, "cpu"),
            verdict(ratio(s, key, "cpu").map(|r| r <= WRITES_NOISE))
        );
    }
    let extra = s["infrastructure"]["cpu"]["median_extra_ns"]
        .as_f64()
        .map_or(String::new(), |ns| format!(", {ns:+.0} ns per write"));
    let _ = writeln!(
        out,
        "| watched session, first write named an infrastructure host, no credential read (every write judged) | {}{extra} | reported | |",
        ratio_cell(s, "infrastructure", "cpu"),
    );
}

/// TLS writes: what the SSL_write probes cost per write.
fn tls_table(out: &mut String, r: &Value) {
    let t = &r["tls"];
    let s = &t["summary"];
    let _ = writeln!(
        out,
        "\n| 64-byte TLS writes through libssl ({} rounds, medians; ratio to no agentwatch in the same round) | writer's CPU time per write | goal | verdict |",
        r["rounds"]
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    if let Some(error) = error_of(t) {
        let _ = writeln!(out, "| tls section failed: {error} | | | not measured |");
    }
    let baseline = s["baseline"]["cpu"]["median_ns"]
        .as_f64()
        .map_or("not measured".into(), |ns| format!("{:.2} µs", ns / 1e3));
    let _ = writeln!(out, "| no agentwatch (baseline) | {baseline} | | |");
    let _ = writeln!(
        out,
        "| process outside any session, a session running (its SSL_write is not probed) | {} | within noise (≤ {WRITES_NOISE}x) | {} |",
        ratio_cell(s, "untracked", "cpu"),
        verdict(ratio(s, "untracked", "cpu").map(|r| r <= WRITES_NOISE))
    );
    for (key, label) in [
        (
            "watched",
            "watched session, no credential read (its SSL_write probed, the probe returns)",
        ),
        (
            "tainted",
            "tainted session: every write stopped, judged in user space, resumed",
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | reported | |",
            ratio_cell(s, key, "cpu")
        );
    }
}

/// An end-to-end row: medians, the median ratio of the pairs with its
/// interval, and whether 1% is met (the interval's top within 1.01),
/// missed (its bottom above 1.01) or unresolved (the interval holds 1.01).
fn pairs_text(sum: &Value, what: &str) -> (String, &'static str) {
    let ratio = sum["median_ratio"].as_f64();
    let interval = &sum["interval"];
    let (low, high, coverage) = (
        interval["low"].as_f64(),
        interval["high"].as_f64(),
        interval["coverage"].as_f64(),
    );
    let interval_text = match (low, high, coverage) {
        (Some(low), Some(high), Some(coverage)) => {
            format!(", {:.1}% interval {low:.3}–{high:.3}", coverage * 100.0)
        }
        _ => String::new(),
    };
    let met = match (low, high, coverage) {
        (Some(_), Some(high), Some(coverage)) if coverage >= 0.95 && high <= 1.01 => "met",
        (Some(low), Some(_), Some(coverage)) if coverage >= 0.95 && low > 1.01 => "**missed**",
        (Some(_), Some(_), Some(_)) => "not resolved",
        _ => "not measured",
    };
    (
        format!(
            "{what}: unwatched {:.2} s, watched {:.2} s, median ratio {}{interval_text} ({} pairs)",
            sum["median_unwatched_seconds"].as_f64().unwrap_or(f64::NAN),
            sum["median_watched_seconds"].as_f64().unwrap_or(f64::NAN),
            ratio.map_or("?".into(), |r| format!("{r:.3}x")),
            sum["pairs_measured"].as_u64().map_or_else(
                || sum["ratios"].as_array().map_or(0, Vec::len).to_string(),
                |n| n.to_string()
            ),
        ),
        met,
    )
}

/// "Outside a session" is judged against the floor: within 5% of it.
const FLOOR_MARGIN: f64 = 1.05;

/// The profile (bpf_stats) under the overhead table: per configuration and
/// loop, the monitor's programs' ns per iteration, the costliest named with
/// their runs per iteration (1 for the load's own calls; more is other
/// processes, the floor's proving it is not filtered by pid), against the
/// measured extra ns over no monitor.
fn profile_lines(out: &mut String, p: &Value) {
    if p.is_null() {
        return;
    }
    let _ = writeln!(out);
    if let Some(error) = error_of(p) {
        let _ = writeln!(out, "Profile (bpf_stats) failed: {error}");
        return;
    }
    for (key, label) in [
        ("watched", "watched"),
        ("untracked", "outside a session"),
        ("floor", "floor"),
    ] {
        let c = &p[key];
        if c.is_null() {
            continue;
        }
        if let Some(error) = error_of(c) {
            let _ = writeln!(out, "- Profile, {label}: failed: {error}");
            continue;
        }
        let parts: Vec<String> = [("open_close", "open+close"), ("connect", "connect")]
            .into_iter()
            .map(|(name, shown)| profile_text(&c[name], shown))
            .collect();
        let _ = writeln!(out, "- Profile (bpf_stats), {label}: {}", parts.join("; "));
    }
}

/// `open+close: programs 412 ns/op (sys_exit_openat 250 ×1.00, …) of +620
/// ns measured, rest +208 ns`: ns per iteration, and runs per iteration.
fn profile_text(loop_: &Value, shown: &str) -> String {
    let Some(total) = loop_["ns_per_op"].as_f64() else {
        return format!("{shown}: not measured");
    };
    let programs: Vec<String> = loop_["programs"]
        .as_array()
        .map(|programs| {
            programs
                .iter()
                .filter(|p| p["runs_per_op"].as_f64().unwrap_or(0.0) >= 0.01)
                .take(4)
                .map(|p| {
                    format!(
                        "{} {:.0} ×{:.2}",
                        p["name"].as_str().unwrap_or("?"),
                        p["ns_per_op"].as_f64().unwrap_or(0.0),
                        p["runs_per_op"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let split = &loop_["split"];
    let rest = match (
        split["measured_extra_ns"].as_f64(),
        split["rest_ns"].as_f64(),
    ) {
        (Some(measured), Some(rest)) => {
            format!(" of {measured:+.0} ns measured, rest {rest:+.0} ns")
        }
        _ => String::new(),
    };
    format!(
        "{shown}: programs {total:.0} ns/op ({}){rest}",
        programs.join(", ")
    )
}

/// What the writes section calls unchanged: the spread of its figures
/// between rounds on a shared 2-vCPU machine.
const WRITES_NOISE: f64 = 1.05;

pub fn table(r: &Value) -> String {
    let mut out = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        out,
        "agentwatch bench, {}: {} ({} cores), Linux {}, agentwatch {} build{}{}\n",
        r["started"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        r["binary"]["profile"].as_str().unwrap_or("given"),
        if r["quick"] == true { ", --quick" } else { "" },
        if r["interrupted"] == true {
            ", INTERRUPTED"
        } else {
            ""
        },
    );

    // Syscall overhead.
    let o = &r["overhead"];
    let s = &o["summary"];
    let _ = writeln!(
        out,
        "| syscall loop ({} rounds, medians; ratio to no monitor in the same round) | open+close | connect | goal | verdict |",
        r["rounds"]
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    if let Some(error) = error_of(o) {
        let _ = writeln!(
            out,
            "| overhead section failed: {error} | | | | not measured |"
        );
    }
    let ns = |config: &str, name: &str| {
        s[config][name]["median_ns"]
            .as_f64()
            .map_or("not measured".into(), |ns| format!("{:.2} µs", ns / 1e3))
    };
    let _ = writeln!(
        out,
        "| no monitor (baseline) | {} | {} | | |",
        ns("baseline", "open_close"),
        ns("baseline", "connect")
    );
    let floor = &o["vs_floor"];
    let floor_cell = |name: &str| {
        floor["untracked"][name]["median_ratio"]
            .as_f64()
            .map_or(String::new(), |r| format!(", {r:.2}x the floor"))
    };
    let untracked_ok = ratio(floor, "untracked", "open_close").map(|r| r <= FLOOR_MARGIN);
    let _ = writeln!(
        out,
        "| process outside any session, a session running | {}{} | {}{} | open+close within 5% of the floor | {} |",
        ratio_cell(s, "untracked", "open_close"),
        floor_cell("open_close"),
        ratio_cell(s, "untracked", "connect"),
        floor_cell("connect"),
        verdict(untracked_ok)
    );
    let (floor_open, floor_connect) = match o["unavailable"]["bpftrace"].as_str() {
        Some(why) => (format!("not measured: {why}"), "not measured".to_string()),
        None => (
            ratio_cell(s, "floor", "open_close"),
            ratio_cell(s, "floor", "connect"),
        ),
    };
    let _ = writeln!(
        out,
        "| floor: programs that return at once on agentwatch's tracepoints (bpftrace, every process; no cgroup hooks) | {floor_open} | {floor_connect} | reported | |"
    );
    let daemon_ok = all(&[
        ratio(s, "daemon", "open_close").map(|r| r <= 1.03),
        ratio(s, "daemon", "connect").map(|r| r <= 1.03),
    ]);
    let daemon_cells = if o["unavailable"]["daemon"].is_string() {
        (
            "not available in this build".to_string(),
            "not available in this build".to_string(),
        )
    } else {
        (
            ratio_cell(s, "daemon", "open_close"),
            ratio_cell(s, "daemon", "connect"),
        )
    };
    let _ = writeln!(
        out,
        "| daemon running, no agent session | {} | {} | nothing (≤ 1.03x, noise) | {} |",
        daemon_cells.0,
        daemon_cells.1,
        verdict(daemon_ok)
    );
    let watched_ok = all(&[
        ratio(s, "watched", "open_close").map(|r| r <= 1.5),
        ratio(s, "watched", "connect").map(|r| r <= 1.5),
    ]);
    let _ = writeln!(
        out,
        "| process inside a watched session | {} | {} | ≤ 1.5x | {} |",
        ratio_cell(s, "watched", "open_close"),
        ratio_cell(s, "watched", "connect"),
        verdict(watched_ok)
    );
    for (key, label) in [
        (
            "bpftrace_map",
            "bpftrace, same tracepoints, events into a map",
        ),
        (
            "bpftrace_print",
            "bpftrace, same tracepoints, every event printed",
        ),
        ("auditd", "auditd, openat+connect rule for the pid"),
    ] {
        let cheaper = all(&[
            ratio(s, "watched", "open_close")
                .zip(ratio(s, key, "open_close"))
                .map(|(w, p)| w < p),
            ratio(s, "watched", "connect")
                .zip(ratio(s, key, "connect"))
                .map(|(w, p)| w < p),
        ]);
        let (open, connect) = match o["unavailable"][key.split('_').next().unwrap_or(key)].as_str()
        {
            Some(why) => (format!("not measured: {why}"), "not measured".to_string()),
            None => (
                ratio_cell(s, key, "open_close"),
                ratio_cell(s, key, "connect"),
            ),
        };
        let _ = writeln!(
            out,
            "| {label} | {open} | {connect} | watched cheaper on every loop | {} |",
            verdict(cheaper)
        );
    }

    profile_lines(&mut out, &o["profile"]);

    writes_table(&mut out, r);
    tls_table(&mut out, r);

    // Everything else.
    let _ = writeln!(out, "\n| measure | result | goal | verdict |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    let race = &r["race"];
    for (key, label, count_key) in [
        (
            "fresh_sessions",
            "race (a): fresh sessions, each reads the token then connects at once",
            "sessions",
        ),
        (
            "fresh_children",
            "race (b): fresh children of one session, each reads then connects",
            "count",
        ),
    ] {
        let part = &race[key];
        let (result, met) = match error_of(race).or_else(|| error_of(part)) {
            Some(error) => (format!("failed: {error}"), None),
            None => {
                let through = part["through"].as_u64();
                let other = part["other_result"].as_u64().unwrap_or(0)
                    + part["failed_to_run"].as_u64().unwrap_or(0)
                    + part["unread"].as_u64().unwrap_or(0);
                (
                    format!(
                        "{} tries, {} blocked (EPERM), {} through{}",
                        part[count_key],
                        part["blocked"],
                        part["through"],
                        if other > 0 {
                            format!(", {other} other outcomes")
                        } else {
                            String::new()
                        }
                    ),
                    through.map(|t| t == 0),
                )
            }
        };
        let _ = writeln!(out, "| {label} | {result} | 0 through | {} |", verdict(met));
    }

    let t = &r["throughput"];
    let (result, met) = match error_of(t) {
        Some(error) => (format!("failed: {error}"), None),
        None => {
            let sum = &t["summary"];
            let steps = t["steps"].as_array().cloned().unwrap_or_default();
            let k = |rate: f64| format!("{:.0}k/s", rate / 1e3);
            let paced: Vec<&Value> = steps
                .iter()
                .filter(|step| step.get("error").is_none() && step["offered"].as_u64() > Some(0))
                .collect();
            let paced_lossless = paced.iter().all(|step| step["zero_loss"] == true);
            let paced_top = paced
                .iter()
                .filter_map(|step| step["offered"].as_f64())
                .reduce(f64::max);
            let paced_text = match (paced_top, paced_lossless) {
                (Some(top), true) => {
                    format!("0 lost at every paced rate up to {} (2 sessions)", k(top))
                }
                (Some(_), false) => format!(
                    "0 lost up to {} in all; paced steps with loss: {}",
                    sum["max_zero_loss_rate"].as_f64().map_or("none".into(), k),
                    paced
                        .iter()
                        .filter(|step| step["zero_loss"] != true)
                        .map(|step| format!(
                            "{} lost at {}",
                            step["lost"],
                            k(step["offered"].as_f64().unwrap_or(0.0))
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (None, _) => "no paced step measured".into(),
            };
            let flat_out: Vec<String> = steps
                .iter()
                .filter(|step| step.get("error").is_none() && step["offered"] == 0)
                .map(|step| {
                    let opens = step["opens"].as_f64().unwrap_or(0.0).max(1.0);
                    format!(
                        "{} sessions {} in all, {} lost ({:.1}%)",
                        step["sessions"],
                        k(step["achieved_rate"].as_f64().unwrap_or(0.0)),
                        step["lost"],
                        step["lost"].as_f64().unwrap_or(0.0) * 100.0 / opens
                    )
                })
                .collect();
            (
                format!(
                    "{paced_text}; flat out: {}; at 100k/s: {} lost, {} missing",
                    flat_out.join("; "),
                    sum["at_100k"]["lost"],
                    sum["at_100k"]["missing"],
                ),
                sum["at_100k"]["zero_loss"].as_bool(),
            )
        }
    };
    let _ = writeln!(
        out,
        "| throughput: open events ingested | {result} | 0 lost at 100k events/s | {} |",
        verdict(met)
    );

    let mem = &r["memory"];
    let result = match error_of(mem) {
        Some(error) => format!("failed: {error}"),
        None => {
            let run = &mem["run"];
            format!(
                "idle session {} RSS; {} processes in the session {} RSS (kernel maps+programs {})",
                mb(&run["idle"]["rss_kb"]),
                mem["processes"],
                mb(&run["tracked"]["rss_kb"]),
                mb(&run["tracked"]["bpf_memlock_kb"]),
            )
        }
    };
    let _ = writeln!(out, "| memory: `agentwatch run` | {result} | | |");
    let daemon = &mem["daemon"];
    let result = match error_of(daemon) {
        Some(error) => error,
        None => format!(
            "no agent {} RSS; {} sleepers under an agent (`claude`), daemon tracking {}: {} RSS",
            mb(&daemon["idle"]["rss_kb"]),
            mem["processes"],
            daemon["tracked"]["metrics"]["tracked_processes"]
                .as_f64()
                .map_or("?".into(), |n| format!("{n:.0}")),
            mb(&daemon["tracked"]["rss_kb"])
        ),
    };
    let _ = writeln!(out, "| memory: `agentwatch daemon` | {result} | | |");

    let l = &r["latency"];
    let result = match error_of(l) {
        Some(error) => format!("failed: {error}"),
        None => {
            let p = &l["call_to_line_us"];
            let r = &l["return_to_line_us"];
            let us = |v: &Value| v.as_f64().map_or("?".into(), |v| format!("{v:.0}"));
            format!(
                "denied connect called → `BLOCKED` line read: p50 {} µs, p90 {}, p99 {}, max {} ({} alerts); \
                 from its return: p50 {} µs, p99 {}",
                us(&p["p50"]),
                us(&p["p90"]),
                us(&p["p99"]),
                us(&p["max"]),
                p["n"],
                us(&r["p50"]),
                us(&r["p99"]),
            )
        }
    };
    let _ = writeln!(out, "| detection latency (block) | {result} | | |");

    let st = &r["start"];
    let (result, met) = match error_of(st) {
        Some(error) => (format!("failed: {error}"), None),
        None => {
            let ms = |v: &Value| v["p50"].as_f64();
            let shown = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0} ms"));
            let (standalone, through) = (ms(&st["standalone_ms"]), ms(&st["through_daemon_ms"]));
            (
                format!(
                    "`run -- true`, medians of {}: standalone {} ({} started right after another, \
                     waiting for its detaching), through a running daemon {} (`true` alone {})",
                    st["rounds"],
                    shown(standalone),
                    shown(ms(&st["standalone_back_to_back_ms"])),
                    shown(through),
                    shown(ms(&st["true_ms"])),
                ),
                standalone.zip(through).map(|(s, t)| s < 500.0 && t < 100.0),
            )
        }
    };
    let _ = writeln!(
        out,
        "| start and exit | {result} | standalone < 0.5 s, through the daemon < 0.1 s | {} |",
        verdict(met)
    );

    let b = &r["build"];
    let (result, met) = match error_of(b) {
        Some(error) => (format!("failed: {error}"), "not measured"),
        None => pairs_text(&b["summary"], "cargo build (regex, 5 crates)"),
    };
    let _ = writeln!(
        out,
        "| end to end: a real build | {result} | within 1% | {met} |"
    );
    let suite = &b["suite"];
    let (result, met) = match error_of(b).or_else(|| error_of(suite)) {
        Some(error) => (format!("failed: {error}"), "not measured"),
        None => pairs_text(
            &suite["summary"],
            &format!(
                "{} shell test scripts (short processes, small files)",
                suite["tests"]
            ),
        ),
    };
    let _ = writeln!(
        out,
        "| end to end: a test suite | {result} | within 1% | {met} |"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_interval_uses_the_binomial_order_statistics() {
        // n = 10: [x(2), x(9)], coverage 1 - 2 * 11/1024.
        let values: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let (low, high, coverage) = median_interval(&values, 0.95).unwrap();
        assert_eq!((low, high), (2.0, 9.0));
        assert!((coverage - (1.0 - 22.0 / 1024.0)).abs() < 1e-12);
        // n = 20: [x(6), x(15)], coverage 0.9586.
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let (low, high, coverage) = median_interval(&values, 0.95).unwrap();
        assert_eq!((low, high), (6.0, 15.0));
        assert!((coverage - 0.958_610_5).abs() < 1e-6);
        // n = 3: the range, at 75%.
        let (low, high, coverage) = median_interval(&[3.0, 1.0, 2.0], 0.95).unwrap();
        assert_eq!((low, high), (1.0, 3.0));
        assert!((coverage - 0.75).abs() < 1e-12);
        assert_eq!(median_interval(&[], 0.95), None);
    }
}
