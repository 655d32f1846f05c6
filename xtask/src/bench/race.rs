//! The race: read a credential and connect to its provider's API at once,
//! under `--mode block`. The lab's dnsmasq answers backboard.railway.app
//! with 127.0.0.2, where a listener counts what gets through; HOME holds
//! `.railway/config.json`. Two shapes:
//! (a) fresh sessions, each one process that reads then connects (the
//!     first connect after the first read of a new session);
//! (b) one session whose process forks fresh children, each reading then
//!     connecting (the sibling taint must hold every time).

use std::{
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Ctx,
    lab::{RAILWAY_ADDR, RAILWAY_HOST, railway_home},
    procs::{INTERRUPTED, Proc},
    report::median,
};

pub fn run(ctx: &Ctx) -> Result<Value> {
    let home = railway_home(&ctx.dir)?;
    let credential = home.join(".railway/config.json");
    let target = format!("{RAILWAY_HOST}:443");
    let listener = ctx.lab.listen(RAILWAY_ADDR)?;
    let (sessions_cap, seconds) = if ctx.quick { (6, 20) } else { (200, 110) };
    let children = if ctx.quick { 1000 } else { 10_000 };

    let before = listener.connections();
    let fresh = fresh_sessions(ctx, &home, &credential, &target, sessions_cap, seconds);
    let fresh_through = listener.connections() - before;
    let fresh = match fresh {
        Ok(mut value) => {
            value["listener_accepts"] = json!(fresh_through);
            let connected = value["connected"].as_u64().unwrap_or(0);
            value["through"] = json!(connected.max(fresh_through));
            value
        }
        Err(error) => json!({ "error": format!("{error:#}"), "listener_accepts": fresh_through }),
    };
    eprintln!(
        "bench: race (a): {} fresh sessions, {} blocked, {} through",
        fresh["sessions"], fresh["blocked"], fresh["through"]
    );

    let before = listener.connections();
    let kids = fresh_children(ctx, &home, &credential, &target, children);
    let kids_through = listener.connections() - before;
    let kids = match kids {
        Ok(mut value) => {
            value["listener_accepts"] = json!(kids_through);
            let connected = value["connected"].as_u64().unwrap_or(0);
            value["through"] = json!(connected.max(kids_through));
            value
        }
        Err(error) => json!({ "error": format!("{error:#}"), "listener_accepts": kids_through }),
    };
    eprintln!(
        "bench: race (b): {} children, {} blocked, {} through",
        kids["count"], kids["blocked"], kids["through"]
    );
    Ok(json!({
        "method": "lab netns: dnsmasq answers backboard.railway.app = 127.0.0.2, a listener on 127.0.0.2:443 \
                   counts accepts; HOME has .railway/config.json; `agentwatch run --mode block`. The load \
                   resolves the host first, then open+read of the credential and socket+connect at once. \
                   through = max(connects that returned 0, listener accepts)",
        "fresh_sessions": fresh,
        "fresh_children": kids,
    }))
}

fn watched_race(ctx: &Ctx, home: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = ctx.watched_load(&["--mode", "block", "--events", "/dev/null"], args);
    cmd.current_dir(home).env("HOME", home);
    cmd
}

fn fresh_sessions(
    ctx: &Ctx,
    home: &Path,
    credential: &Path,
    target: &str,
    cap: u64,
    seconds: u64,
) -> Result<Value> {
    let credential = credential.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let next = AtomicU64::new(0);
    let results = Mutex::new(Vec::new());
    // Two at a time: a session's start-up (loading and verifying the
    // programs) is what takes time here.
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while Instant::now() < deadline
                    && !INTERRUPTED.load(Ordering::SeqCst)
                    && next.fetch_add(1, Ordering::SeqCst) < cap
                {
                    let start = Instant::now();
                    let result = (|| -> Result<Value> {
                        let mut cmd = watched_race(
                            ctx,
                            home,
                            &["race-once", "--credential", &credential, "--target", target],
                        );
                        let finished =
                            Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("race-session"))?
                                .finish(Duration::from_secs(120))?;
                        let mut load = finished.json()?;
                        load["alerted"] = json!(finished.stderr.contains("agentwatch: BLOCKED"));
                        Ok(load)
                    })();
                    let seconds = start.elapsed().as_secs_f64();
                    results.lock().unwrap().push((result, seconds));
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let (mut blocked, mut connected, mut other, mut unread, mut alerted) = (0, 0, 0, 0, 0);
    let mut errors = Vec::new();
    let mut others = Vec::new();
    let mut walls = Vec::new();
    for (result, seconds) in &results {
        walls.push(*seconds);
        match result {
            Ok(load) => {
                if load["read"] != true {
                    unread += 1;
                }
                if load["alerted"] == true {
                    alerted += 1;
                }
                match load["connect"].as_i64() {
                    Some(0) => connected += 1,
                    Some(ret) if ret == -(libc::EPERM as i64) => blocked += 1,
                    ret => {
                        other += 1;
                        others.push(json!(ret));
                    }
                }
            }
            Err(error) => errors.push(format!("{error:#}")),
        }
    }
    Ok(json!({
        "sessions": blocked + connected + other,
        "blocked": blocked,
        "connected": connected,
        "other_result": other,
        "other_results": others,
        "unread": unread,
        "alerted": alerted,
        "failed_to_run": errors.len(),
        "errors": errors.iter().take(5).collect::<Vec<_>>(),
        "median_session_seconds": median(&walls),
        "time_cap_seconds": seconds,
        "count_cap": cap,
    }))
}

fn fresh_children(
    ctx: &Ctx,
    home: &Path,
    credential: &Path,
    target: &str,
    count: u64,
) -> Result<Value> {
    let credential = credential.to_string_lossy().into_owned();
    let count = count.to_string();
    let mut cmd = watched_race(
        ctx,
        home,
        &[
            "race-children",
            "--credential",
            &credential,
            "--target",
            target,
            "--count",
            &count,
        ],
    );
    let finished = Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("race-children"))?
        .finish(Duration::from_secs(600))?;
    let mut load = finished.json().context("race-children")?;
    load["alerts_on_stderr"] = json!(finished.stderr.matches("agentwatch: BLOCKED").count());
    load["agentwatch_report"] = json!(
        finished
            .stderr
            .lines()
            .filter(
                |line| line.starts_with("agentwatch:") && !line.starts_with("agentwatch: BLOCKED")
            )
            .collect::<Vec<_>>()
    );
    Ok(load)
}
