//! End to end: a real build, watched against unwatched, interleaved. The
//! build is `cargo build --release --offline` (`--quick`: debug, no warm-up)
//! of a small program depending on `regex` (5 crates from the local cargo
//! registry cache: deterministic and offline), from an empty target
//! directory each time, after one warm-up.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Ctx,
    procs::{Proc, check_interrupted, run_quiet},
    report::median,
};

pub fn run(ctx: &Ctx) -> Result<Value> {
    // --quick: one debug build each way (~6 s) and no warm-up.
    let (pairs, release): (usize, bool) = if ctx.quick { (1, false) } else { (3, true) };
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
    let mut rounds = Vec::new();
    let mut ratios = Vec::new();
    let (mut plain, mut watched) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let order = if pair.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        };
        let mut figures = json!({});
        for watched in order {
            figures[if watched { "watched" } else { "unwatched" }] =
                build(watched).unwrap_or_else(|error| json!({ "error": format!("{error:#}") }));
        }
        let (u, w) = (
            figures["unwatched"]["seconds"].as_f64().unwrap_or(f64::NAN),
            figures["watched"]["seconds"].as_f64().unwrap_or(f64::NAN),
        );
        eprintln!(
            "bench: build pair {}/{pairs}: unwatched {u:.2} s, watched {w:.2} s",
            pair + 1
        );
        plain.push(u);
        watched.push(w);
        ratios.push(w / u);
        rounds.push(figures);
    }
    Ok(json!({
        "method": format!(
            "`cargo build [--release] --offline` (CARGO_BUILD_JOBS=2) of a program using regex {regex} \
             (regex, regex-automata, regex-syntax, aho-corasick, memchr from the cargo cache), \
             empty target dir each build, timed by `xtask bench-load time` inside the session \
             (agentwatch's own start-up is not counted); pairs alternate which goes first"
        ),
        "warmup_seconds": warmup.map(|w| w["seconds"].clone()),
        "profile": if release { "release" } else { "debug" },
        "summary": {
            "median_unwatched_seconds": median(&plain),
            "median_watched_seconds": median(&watched),
            "median_ratio": median(&ratios),
            "ratios": ratios,
        },
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
