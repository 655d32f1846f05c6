//! End to end: real work, watched against unwatched, in interleaved pairs
//! (each pair flips which goes first), as the median of the pairs' ratios
//! with a distribution-free 95% interval for it (report::median_interval).
//!
//! - The build: `cargo build --release --offline` (`--quick`: debug, no
//!   warm-up) of a small program depending on `regex` (5 crates from the
//!   local cargo registry cache: deterministic and offline), from an empty
//!   target directory each time, after one warm-up. 10 pairs (`--quick`: 2).
//! - A test suite, what an agent's day is made of besides builds: a shell
//!   runner over many small test scripts, each running a handful of short
//!   processes (grep, sed, sort, wc, cat) on small files of a generated
//!   project and writing its output; thousands of execs and file opens, no
//!   network. 10 pairs (`--quick`: 3), after one warm-up.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Ctx,
    procs::{Proc, check_interrupted, run_quiet},
    report::{median, median_interval},
};

pub fn run(ctx: &Ctx) -> Result<Value> {
    let build = build(ctx).unwrap_or_else(|error| json!({ "error": format!("{error:#}") }));
    let suite = suite(ctx).unwrap_or_else(|error| json!({ "error": format!("{error:#}") }));
    let mut out = build;
    out["suite"] = suite;
    Ok(out)
}

/// `pairs` interleaved pairs of `run(watched)`, each giving `seconds`; the
/// first of a pair alternates. The rounds and their summary.
fn pairs(
    what: &str,
    pairs: usize,
    mut run: impl FnMut(bool) -> Result<Value>,
) -> (Vec<Value>, Value) {
    let mut rounds = Vec::new();
    let mut ratios = Vec::new();
    let (mut plain, mut watched) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let order = if pair.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        };
        let mut figures = json!({ "first": if order[0] { "watched" } else { "unwatched" } });
        for watched in order {
            figures[if watched { "watched" } else { "unwatched" }] =
                run(watched).unwrap_or_else(|error| json!({ "error": format!("{error:#}") }));
        }
        let (u, w) = (
            figures["unwatched"]["seconds"].as_f64().unwrap_or(f64::NAN),
            figures["watched"]["seconds"].as_f64().unwrap_or(f64::NAN),
        );
        eprintln!(
            "bench: {what} pair {}/{pairs}: unwatched {u:.2} s, watched {w:.2} s",
            pair + 1
        );
        plain.push(u);
        watched.push(w);
        ratios.push(w / u);
        rounds.push(figures);
    }
    let interval = median_interval(&ratios, 0.95);
    let summary = json!({
        "pairs": pairs,
        "pairs_measured": ratios.iter().filter(|r| r.is_finite()).count(),
        "median_unwatched_seconds": median(&plain),
        "median_watched_seconds": median(&watched),
        "median_ratio": median(&ratios),
        "interval": interval.map(|(low, high, coverage)| json!({
            "low": low,
            "high": high,
            "coverage": coverage,
            "method": "distribution-free order-statistic interval for the median of the pair ratios \
                       (x(k), x(n+1-k), k from Binomial(n, 1/2)); coverage is exact",
        })),
        "ratios": ratios.iter().map(|r| if r.is_finite() { json!(r) } else { Value::Null }).collect::<Vec<_>>(),
    });
    (rounds, summary)
}

fn build(ctx: &Ctx) -> Result<Value> {
    // --quick: two debug builds each way (~6 s each) and no warm-up.
    let (pairs_n, release): (usize, bool) = if ctx.quick { (2, false) } else { (10, true) };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let project = ctx.dir.join("e2e");
    let target = ctx.dir.join("e2e-target");
    let regex = regex_version()?;
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"aw-bench-build\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nregex = \"={regex}\"\n\n[workspace]\n"
        ),
    )?;
    std::fs::write(
        project.join("src/main.rs"),
        "fn main() {\n    let re = regex::Regex::new(r\"(\\w+)@(\\w+)\").unwrap();\n    \
         println!(\"{}\", re.is_match(\"a@b\"));\n}\n",
    )?;
    run_quiet(
        Command::new(&cargo)
            .args(["generate-lockfile", "--offline"])
            .current_dir(&project),
    )
    .context("resolving regex from the local registry cache")?;
    let build = |watched: bool| -> Result<Value> {
        check_interrupted()?;
        let _ = std::fs::remove_dir_all(&target);
        let args: Vec<&std::ffi::OsStr> = [
            "time".as_ref(),
            "--".as_ref(),
            cargo.as_os_str(),
            "build".as_ref(),
            "--offline".as_ref(),
            "--quiet".as_ref(),
        ]
        .into_iter()
        .chain(release.then_some("--release".as_ref()))
        .collect();
        let name = ctx.name(if watched { "build-watched" } else { "build" });
        let events = ctx.dir.join(format!("{name}.jsonl"));
        let events_arg = events.to_string_lossy().into_owned();
        let mut cmd = if watched {
            ctx.watched_load(&["--events", &events_arg], &args)
        } else {
            ctx.load(&args)
        };
        cmd.current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_BUILD_JOBS", "2")
            .env("CARGO_TERM_COLOR", "never");
        let finished =
            Proc::spawn_logged(&mut cmd, &ctx.dir, &name)?.finish(Duration::from_secs(900))?;
        let result = finished.json()?;
        if result["success"] != true {
            bail!(
                "the build failed: {}",
                super::procs::tail(&finished.stderr, 600)
            );
        }
        let seconds = result["ns"].as_f64().unwrap_or(0.0) / 1e9;
        let events_count = std::fs::read_to_string(&events)
            .map(|text| text.lines().count())
            .ok();
        let _ = std::fs::remove_file(&events);
        Ok(json!({ "watched": watched, "seconds": seconds, "events": events_count }))
    };
    let warmup = if release { Some(build(false)?) } else { None };
    let (rounds, summary) = pairs("build", pairs_n, build);
    Ok(json!({
        "method": format!(
            "`cargo build [--release] --offline` (CARGO_BUILD_JOBS=2) of a program using regex {regex} \
             (regex, regex-automata, regex-syntax, aho-corasick, memchr from the cargo cache), \
             empty target dir each build, timed by `xtask bench-load time` inside the session \
             (agentwatch's own start-up is not counted); pairs alternate which goes first"
        ),
        "warmup_seconds": warmup.map(|w| w["seconds"].clone()),
        "profile": if release { "release" } else { "debug" },
        "summary": summary,
        "rounds": rounds,
    }))
}

/// The newest regex 1.x in the local cargo registry cache.
fn regex_version() -> Result<String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .context("no CARGO_HOME or HOME")?;
    let mut versions: Vec<Vec<u64>> = std::fs::read_dir(home.join("registry/src"))?
        .flatten()
        .filter_map(|index| std::fs::read_dir(index.path()).ok())
        .flat_map(|dir| dir.flatten())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("regex-1.")?;
            let parts: Option<Vec<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
            parts.map(|p| [vec![1], p].concat())
        })
        .collect();
    versions.sort();
    let newest = versions
        .last()
        .context("regex 1.x is not in the cargo registry cache (build agentwatch once)")?;
    Ok(newest
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// Test scripts in the suite, and source files they read.
const SUITE_TESTS: usize = 150;
const SUITE_FILES: usize = 300;

/// The runner: every test script in turn, its output kept, a summary at
/// the end, as `make check` or a test harness does.
const SUITE_RUNNER: &str = r#"#!/bin/sh
rm -rf out && mkdir out
pass=0; fail=0
for t in tests/*.sh; do
    name=$(basename "$t" .sh)
    if sh "$t" > "out/$name.log" 2>&1; then pass=$((pass+1)); else fail=$((fail+1)); fi
done
echo "pass $pass fail $fail"
test "$fail" -eq 0
"#;

/// A test: short processes over a few small files, its result checked.
fn suite_test(n: usize) -> String {
    let (a, b, c) = (
        n % SUITE_FILES,
        (n * 7 + 1) % SUITE_FILES,
        (n * 13 + 2) % SUITE_FILES,
    );
    format!(
        "#!/bin/sh\nset -e\n\
         grep -c 'fn ' src/m{a}.rs > /dev/null\n\
         cat src/m{a}.rs src/m{b}.rs | sort | uniq | wc -l > out/t{n}.count\n\
         test -s out/t{n}.count\n\
         sed -n '2,4p' src/m{c}.rs | tr a-z A-Z > out/t{n}.upper\n\
         for f in src/m{a}.rs src/m{b}.rs src/m{c}.rs; do head -c 64 \"$f\" > /dev/null; done\n\
         grep -l 'value_{a}' src/m{a}.rs > /dev/null\n\
         cmp -s src/m{a}.rs src/m{a}.rs\n\
         echo ok {n}\n"
    )
}

fn suite(ctx: &Ctx) -> Result<Value> {
    let pairs_n = if ctx.quick { 3 } else { 10 };
    let project = ctx.dir.join("suite");
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::create_dir_all(project.join("tests"))?;
    for i in 0..SUITE_FILES {
        let body: String = (0..12)
            .map(|j| {
                format!(
                    "fn f{j}() -> u32 {{ let value_{i} = {}; value_{i} }}\n",
                    i * j
                )
            })
            .collect();
        std::fs::write(project.join(format!("src/m{i}.rs")), body)?;
    }
    for n in 0..SUITE_TESTS {
        std::fs::write(project.join(format!("tests/t{n:03}.sh")), suite_test(n))?;
    }
    std::fs::write(project.join("run-tests.sh"), SUITE_RUNNER)?;
    let run = |watched: bool| -> Result<Value> {
        check_interrupted()?;
        let name = ctx.name(if watched { "suite-watched" } else { "suite" });
        let events = ctx.dir.join(format!("{name}.jsonl"));
        let events_arg = events.to_string_lossy().into_owned();
        let args = ["time", "--", "sh", "run-tests.sh"];
        let mut cmd = if watched {
            ctx.watched_load(&["--events", &events_arg], &args)
        } else {
            ctx.load(&args)
        };
        cmd.current_dir(&project);
        let finished =
            Proc::spawn_logged(&mut cmd, &ctx.dir, &name)?.finish(Duration::from_secs(600))?;
        let result = finished.json()?;
        if result["success"] != true {
            bail!(
                "the test suite failed: {}",
                super::procs::tail(&finished.stdout, 600)
            );
        }
        let events_count = std::fs::read_to_string(&events)
            .map(|text| text.lines().count())
            .ok();
        let _ = std::fs::remove_file(&events);
        Ok(json!({
            "watched": watched,
            "seconds": result["ns"].as_f64().unwrap_or(0.0) / 1e9,
            "events": events_count,
        }))
    };
    let warmup = run(false)?;
    let (rounds, summary) = pairs("test suite", pairs_n, run);
    Ok(json!({
        "method": format!(
            "`sh run-tests.sh`: {SUITE_TESTS} test scripts run one after the other, each about 12 short \
             processes (grep, cat, sort, uniq, wc, sed, tr, head, cmp) over 3 of {SUITE_FILES} small \
             generated files, output to files; timed by `xtask bench-load time` inside the session; \
             one warm-up, then pairs alternating which goes first"
        ),
        "tests": SUITE_TESTS,
        "warmup_seconds": warmup["seconds"],
        "summary": summary,
        "rounds": rounds,
    }))
}
