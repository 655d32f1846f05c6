//! What the sections comparing configurations side by side share: rounds
//! that measure every configuration once, in an order that rotates each
//! round (so the machine's drift during the run falls on all of them
//! alike), and medians of each figure and of its ratio to the baseline's
//! figure in the same round.

use std::{process::Command, time::Duration};

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Ctx,
    procs::{Proc, check_interrupted, tail, wait_for_child},
    report::median,
};

/// One way of running a load.
pub trait Config: Copy {
    /// Its key in the results.
    fn key(self) -> &'static str;
}

/// A figure of a measurement: its name in the summary and the JSON pointer
/// of its nanoseconds in the load's result.
pub type Figure = (&'static str, &'static str);

/// `ctx.rounds` rounds of `measure` over `configs`. A configuration that
/// fails records its error and the round goes on; `brief` is a successful
/// measurement's text on the progress line.
pub fn interleaved<C: Config>(
    ctx: &Ctx,
    section: &str,
    configs: &[C],
    mut measure: impl FnMut(C) -> Result<Value>,
    brief: impl Fn(&Value) -> String,
) -> Result<Vec<Value>> {
    let mut rounds = Vec::new();
    for round in 0..ctx.rounds {
        check_interrupted()?;
        let mut order = configs.to_vec();
        order.rotate_left(round % configs.len());
        let mut figures = json!({ "order": order.iter().map(|c| c.key()).collect::<Vec<_>>() });
        let mut line = format!("bench: {section} round {}/{}:", round + 1, ctx.rounds);
        for config in order {
            check_interrupted()?;
            figures[config.key()] = match measure(config) {
                Ok(value) => {
                    line += &format!(" {} {};", config.key(), brief(&value));
                    value
                }
                Err(error) => {
                    let error = format!("{error:#}");
                    line += &format!(" {} failed ({});", config.key(), tail(&error, 300));
                    json!({ "error": error })
                }
            };
        }
        eprintln!("{line}");
        rounds.push(figures);
    }
    Ok(rounds)
}

/// A measurement's figures in µs, `a/b µs`, for a progress line.
pub fn micros(value: &Value, figures: &[Figure]) -> String {
    let us: Vec<String> = figures
        .iter()
        .map(|(_, pointer)| {
            let ns = value.pointer(pointer).and_then(Value::as_f64);
            format!("{:.2}", ns.unwrap_or(0.0) / 1e3)
        })
        .collect();
    format!("{} µs", us.join("/"))
}

/// For each configuration and figure: the median ns, the median ratio to
/// `baseline`'s figure in the same round, and the median difference from
/// it; with the errors of rounds a configuration failed in.
pub fn summarize<C: Config>(
    rounds: &[Value],
    configs: &[C],
    baseline: C,
    figures: &[Figure],
) -> Value {
    let mut summary = json!({});
    for config in configs {
        let of = |round: &Value, key: &str, pointer: &str| round[key].pointer(pointer)?.as_f64();
        for &(name, pointer) in figures {
            let ns: Vec<f64> = rounds
                .iter()
                .filter_map(|round| of(round, config.key(), pointer))
                .collect();
            let pairs: Vec<(f64, f64)> = rounds
                .iter()
                .filter_map(|round| {
                    Some((
                        of(round, config.key(), pointer)?,
                        of(round, baseline.key(), pointer)?,
                    ))
                })
                .collect();
            let ratios: Vec<f64> = pairs.iter().map(|(ns, base)| ns / base).collect();
            let extra: Vec<f64> = pairs.iter().map(|(ns, base)| ns - base).collect();
            summary[config.key()][name] = json!({
                "median_ns": median(&ns),
                "median_ratio": median(&ratios),
                "median_extra_ns": median(&extra),
                "ratios": ratios,
                "rounds_measured": ns.len(),
            });
        }
        let errors: Vec<&Value> = rounds
            .iter()
            .filter_map(|round| round[config.key()].get("error"))
            .collect();
        if !errors.is_empty() {
            summary[config.key()]["errors"] = json!(errors);
        }
    }
    summary
}

/// Runs a load to its JSON result.
pub fn result_of(ctx: &Ctx, mut cmd: Command, what: &str) -> Result<Value> {
    Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name(what))?
        .finish(Duration::from_secs(120))?
        .json()
}

/// Runs `f` while `agentwatch run -- sleep` watches a session of its own:
/// the programs are attached, but `f`'s processes are in no session.
pub fn beside_a_session<T>(ctx: &Ctx, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut cmd = ctx.watched(&["--events", "/dev/null"]);
    cmd.args(["sleep", "600"]);
    let mut session = Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("untracked-session"))?;
    wait_for_child(&session, Duration::from_secs(60))?;
    let result = f();
    session.stop();
    result
}
