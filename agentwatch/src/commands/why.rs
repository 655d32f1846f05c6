//! Telling an agent why its call was refused: `agentwatch why` (run by the agent's hook after
//! each tool call) and `agentwatch hooks install` (which sets that hook up). An agent that
//! only sees EPERM retries or looks for another way; told the reason, and that only a human
//! can approve, it can stop and ask.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::control::client::request;
use crate::control::protocol::{DEFAULT_SOCKET, Request, Response};
use crate::event::{Alert, Body, Event, OperationSeen};
use crate::policy::{Action, Policy};

/// What `why` prints when the session has no refusal.
pub const NOTHING_REFUSED: &str = "agentwatch: nothing refused in this session";

/// `agentwatch why [--hook]`: the latest refusal of the caller's session, in words for an
/// agent. With `hook`, in the JSON of Claude Code's and Codex's `PostToolUse` hooks, once per
/// refusal, and nothing at all (exit 0) when there is none or the daemon cannot be asked: a
/// hook must never stand in the agent's way.
pub async fn why_command(socket: &Path, hook: bool, out: &mut impl Write) -> anyhow::Result<i32> {
    if hook && !io::stdin().is_terminal() {
        // The hook's input (the tool call) is not needed; read it so the agent's write of it
        // does not fail.
        io::copy(&mut io::stdin().lock().take(1 << 20), &mut io::sink())?;
    }
    let answer = request(socket, &Request::Why { unreported: hook }).await;
    let event = match answer {
        Ok(Response::Refusal { event }) => event,
        Ok(Response::Error { message }) if !hook => bail!("the daemon refused: {message}"),
        Ok(other) if !hook => bail!("unexpected answer from the daemon: {other:?}"),
        Err(error) if !hook => return Err(error),
        _ => return Ok(0),
    };
    let Some(event) = event else {
        if !hook {
            writeln!(out, "{NOTHING_REFUSED}")?;
        }
        return Ok(0);
    };
    let Body::Alert(alert) = &event.body else {
        bail!("the daemon answered with a {} event", event.body.kind());
    };
    let text = explain(&event, alert, SystemTime::now());
    if hook {
        let output = json!({
            "hookSpecificOutput": {
                "hookEventName": "PostToolUse",
                "additionalContext": text,
            }
        });
        writeln!(out, "{output}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(0)
}

/// The refusal in words an agent acts on: what, why, what happened, and that a human decides.
fn explain(event: &Event, alert: &Alert, now: SystemTime) -> String {
    let builtin = Policy::builtin();
    let provider = alert.provider.as_deref().map(|id| {
        builtin
            .provider(id)
            .map_or(id.to_string(), |p| p.name.clone())
    });
    let target = alert.host.as_deref().unwrap_or(&alert.addr);
    let api = provider
        .as_deref()
        .map_or("an infrastructure API".to_string(), |p| {
            format!("{p}'s infrastructure API")
        });
    let what = match alert.judged() {
        Some((OperationSeen::Tls, operation)) => {
            format!("sent {} to {target}", operation.with_class())
        }
        Some((OperationSeen::Exec, operation)) => format!("ran {}", operation.with_class()),
        None => format!("called {api} at {target}:{}", alert.port),
    };
    let mut text = format!(
        "agentwatch refused a call of this agent session (session {}): {} (pid {}) {what}.",
        event.session, event.comm, event.pid
    );
    match &alert.credential {
        Some(credential) => {
            let ago = now
                .duration_since(credential.at)
                .map(|d| format!("{:.1} s earlier", d.as_secs_f64()))
                .unwrap_or_else(|_| "earlier".into());
            text.push_str(&format!(
                " Why: the session had read the {} credential ({}, by {} pid {}, {ago}), and a \
                 session holding a provider's credential may not call that provider's API \
                 without a human.",
                credential.class, credential.source, credential.comm, credential.pid
            ));
        }
        None => text.push_str(&format!(
            " Why: the session holds credentials ({}) that count against this API.",
            alert.credentials.join(", ")
        )),
    }
    text.push_str(match alert.action {
        Action::Ask => {
            " What happened: the session is stopped until a human approves or denies the call \
             (it is listed in `agentwatch pending`)."
        }
        Action::Kill => {
            " What happened: the call was refused and the session's processes were killed."
        }
        _ if alert.seen == Some(OperationSeen::Exec) => {
            " What happened: the command was stopped before it ran, and killed."
        }
        _ if alert.seen == Some(OperationSeen::Tls) => {
            " What happened: the request was refused before it was sent (the write failed \
             with EACCES)."
        }
        _ => " What happened: the call was refused (the connection failed with EPERM).",
    });
    if alert.operation.is_some() {
        text.push_str(
            " Calls that only read (queries, GET, status and list commands) still pass; only \
             this operation needs a human.",
        );
    }
    text.push_str(
        " What to do: only a human can approve this; you cannot approve it yourself, and \
         retrying or making the same call another way will be refused too. Stop, tell the user \
         which call you tried to make and why, and ask them to approve it (`agentwatch pending`, \
         `agentwatch approve ID`) or to make it themselves.",
    );
    text
}

/// Agents whose hooks `hooks install` sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookAgent {
    /// Claude Code: a `PostToolUse` hook in ~/.claude/settings.json.
    ClaudeCode,
    /// OpenAI Codex CLI: a `PostToolUse` hook in ~/.codex/hooks.json ($CODEX_HOME).
    Codex,
}

impl HookAgent {
    fn file(self, home: &Path) -> PathBuf {
        match self {
            HookAgent::ClaudeCode => home.join(".claude/settings.json"),
            HookAgent::Codex => std::env::var_os("CODEX_HOME")
                .map_or_else(|| home.join(".codex"), PathBuf::from)
                .join("hooks.json"),
        }
    }

    /// Claude Code runs the hook after every tool; Codex's `PostToolUse` covers Bash.
    fn matcher(self) -> &'static str {
        match self {
            HookAgent::ClaudeCode => "*",
            HookAgent::Codex => "Bash",
        }
    }
}

/// How an installed hook is recognised again (to update, not duplicate, it).
const HOOK_ARGS: &str = " why --hook";

/// `agentwatch hooks install AGENT [--dry-run]`: adds (or updates) the hook in the agent's
/// settings under `home`, keeping everything else in the file. Prints what it did, or with
/// `dry_run` the file it would write.
pub fn install_command(
    agent: HookAgent,
    home: &Path,
    socket: &Path,
    dry_run: bool,
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find agentwatch's own path")?;
    let mut command = format!("{}{HOOK_ARGS}", shell_quote(&exe.display().to_string()));
    if socket != Path::new(DEFAULT_SOCKET) {
        command.push_str(&format!(
            " --socket {}",
            shell_quote(&socket.display().to_string())
        ));
    }
    let path = agent.file(home);
    let mut settings: Value = match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => json!({}),
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let changed = add_hook(&mut settings, agent.matcher(), &command)
        .with_context(|| format!("cannot add the hook to {}", path.display()))?;
    let text = serde_json::to_string_pretty(&settings)? + "\n";
    if dry_run {
        writeln!(out, "would write {}:\n{text}", path.display())?;
        return Ok(0);
    }
    if !changed {
        writeln!(
            out,
            "{}: the agentwatch hook is already installed",
            path.display()
        )?;
        return Ok(0);
    }
    let dir = path
        .parent()
        .context("the settings file has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Written beside and renamed, so the agent never reads half a file.
    let tmp = path.with_extension("json.agentwatch-tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(
        out,
        "{}: installed the PostToolUse hook `{command}`",
        path.display()
    )?;
    Ok(0)
}

/// Adds `{matcher, hooks: [{type: command, command}]}` to `hooks.PostToolUse`, or updates the
/// command of an agentwatch hook already there. Returns whether anything changed.
fn add_hook(settings: &mut Value, matcher: &str, command: &str) -> anyhow::Result<bool> {
    let Value::Object(root) = settings else {
        bail!("the settings are not a JSON object");
    };
    let hooks = root.entry("hooks").or_insert_with(|| json!({}));
    let Value::Object(hooks) = hooks else {
        bail!("\"hooks\" is not an object");
    };
    let groups = hooks.entry("PostToolUse").or_insert_with(|| json!([]));
    let Value::Array(groups) = groups else {
        bail!("\"hooks.PostToolUse\" is not an array");
    };
    let ours = |hook: &Value| {
        hook["command"]
            .as_str()
            .is_some_and(|c| c.contains("agentwatch") && c.contains(HOOK_ARGS))
    };
    for group in groups.iter_mut() {
        let Some(list) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            continue;
        };
        if let Some(hook) = list.iter_mut().find(|h| ours(h)) {
            if hook["command"] == command {
                return Ok(false);
            }
            hook["command"] = json!(command);
            return Ok(true);
        }
    }
    groups.push(json!({
        "matcher": matcher,
        "hooks": [{"type": "command", "command": command}],
    }));
    Ok(true)
}

/// Quotes `word` for the shell that runs hook commands, when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_added_beside_others_and_only_once() {
        let mut settings = json!({
            "model": "opus",
            "hooks": {
                "PostToolUse": [{"matcher": "Edit", "hooks": [{"type": "command", "command": "fmt"}]}],
                "PreToolUse": [],
            }
        });
        let command = "/usr/bin/agentwatch why --hook";
        assert!(add_hook(&mut settings, "*", command).unwrap());
        assert!(!add_hook(&mut settings, "*", command).unwrap());
        let groups = settings["hooks"]["PostToolUse"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["hooks"][0]["command"], "fmt");
        assert_eq!(groups[1]["matcher"], "*");
        assert_eq!(settings["model"], "opus");
        // A moved binary updates the hook in place.
        assert!(add_hook(&mut settings, "*", "/opt/agentwatch why --hook").unwrap());
        let groups = settings["hooks"]["PostToolUse"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[1]["hooks"][0]["command"],
            "/opt/agentwatch why --hook"
        );
        assert!(add_hook(&mut json!({"hooks": []}), "*", command).is_err());
        assert_eq!(shell_quote("/a b/agentwatch"), "'/a b/agentwatch'");
    }
}
