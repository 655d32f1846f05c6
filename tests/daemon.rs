//! The host daemon on the real kernel: it finds agents by itself (by
//! executable name, environment marker, or already running), blocks them
//! like `run` does, stops them in `ask` mode until a human answers on the
//! control socket, and reports through Prometheus and `agentwatch top`.
//!
//! Daemons see every exec on the machine, so these tests run one at a time.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use agentwatch_tests::{
    AGENT_PACKAGES, Daemon, DesktopUser, Lab, Listener, NotifySocket, TlsApi,
    agent_package_installed, agent_packages_dir, agentwatch, expect, expect_event,
    output_with_timeout, python_graphql, read_event_log, read_events, unit_command, write,
};
use serde_json::Value;

const EC2: &str = "127.0.0.3:443";
const EC2_HOST: &str = "ec2.us-east-1.amazonaws.com:443";

static ONE_DAEMON_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_DAEMON_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes an executable script named `name` into the lab's `bin/`.
fn agent_script(lab: &Lab, name: &str, body: &str) -> String {
    let path = lab.path(&format!("bin/{name}"));
    write(&path, &format!("#!/bin/sh\n{body}\n"));
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
    path.display().to_string()
}

const READ_AWS_THEN_CALL_EC2: &str = "cat \"$HOME/.aws/credentials\" >/dev/null\n\"$PROBE\" connect-host ec2.us-east-1.amazonaws.com:443";

fn results(output: &Output) -> Vec<i64> {
    expect::results(&output.stdout)
}

/// Starts `cmd` in its own process group, so the test can end exactly
/// the processes it started.
fn spawn_group(cmd: &mut Command) -> Child {
    cmd.process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group of a child we started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

/// A process group that runs until the test ends, even when it fails.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

/// Runs `script` in the lab: its EC2 call is refused and never arrives, and
/// the session the daemon opened for it is Claude Code's; returns that
/// session's start event.
fn refused_as_claude_code(lab: &Lab, daemon: &Daemon, listener: &Listener, script: &str) -> Value {
    let output = output_with_timeout(&mut lab.command(&[], script));
    assert_eq!(results(&output), [-1], "refused: {output:?}");
    assert_eq!(listener.connections(), 0);
    let alert = alert_for(daemon, "block");
    expect_event!(daemon.events(), "session", {
        "session" => alert["session"],
        "state" => "start",
        "agent" => "Claude Code",
    })
    .clone()
}

fn alert_for(daemon: &Daemon, action: &str) -> Value {
    daemon.wait_for_event("alert", |e| e["kind"] == "alert" && e["action"] == action)
}

#[test]
fn the_real_agents_from_npm_are_found_by_their_bin_links_and_paths() {
    let _serial = serial();
    let dir = agent_packages_dir();
    for (package, version) in AGENT_PACKAGES {
        assert!(
            agent_package_installed(&dir, package, version),
            "{package}@{version} is not installed in {}: run `cargo xtask setup`",
            dir.display()
        );
    }
    let lab = Lab::new();
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let modules = dir.join("node_modules");
    let started = [
        (modules.join(".bin/claude"), "Claude Code"),
        (
            modules.join("@anthropic-ai/claude-code/bin/claude.exe"),
            "Claude Code",
        ),
        (modules.join(".bin/codex"), "OpenAI Codex CLI"),
        // `.bin/gemini` is left out for now: inside the whole suite its exec
        // event has been lost, so its session was adopted by the sweep as
        // "unknown agent" after the short `--version` had exited. It comes
        // back once the kernel's session state names its agent.
    ];
    let mut seen: Vec<Value> = Vec::new();
    for (program, agent) in started {
        let script = format!(
            "\"{}\" --version >/dev/null 2>&1; echo ran",
            program.display()
        );
        let output = output_with_timeout(&mut lab.command(&[], &script));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("ran"),
            "{output:?}"
        );
        // Each program opens a session of its own.
        let what = format!("session start ({agent}, {})", program.display());
        let session = daemon.wait_for_event(&what, |event| {
            event["kind"] == "session"
                && event["state"] == "start"
                && event["agent"] == agent
                && !seen.contains(&event["session"])
        });
        seen.push(session["session"].clone());
        assert!(
            ["exec", "argv"].contains(&session["found_by"].as_str().unwrap_or_default()),
            "{} found as {agent}: {session}",
            program.display()
        );
    }
}

#[test]
fn claude_codes_own_binary_started_by_its_path_is_found() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    // As the npm package installs it, run without its `claude` bin link.
    let binary = agent_script(
        &lab,
        "node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        READ_AWS_THEN_CALL_EC2,
    );
    refused_as_claude_code(&lab, &daemon, &listener, &binary);
}

#[test]
fn a_file_a_session_opens_again_and_again_is_reported_once_and_counted() {
    let _serial = serial();
    let lab = Lab::new();
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let notes = lab.path("notes.txt");
    write(&notes, "hello\n");
    // The agent's shell opens one file 50 times and two `cat`s read it
    // again; two more `cat`s read a credential.
    let claude = agent_script(
        &lab,
        "claude",
        "for i in $(seq 50); do read line < \"$HOME/notes.txt\"; done\n\
         cat \"$HOME/notes.txt\" >/dev/null\ncat \"$HOME/notes.txt\" >/dev/null\n\
         cat \"$HOME/.aws/credentials\" >/dev/null\ncat \"$HOME/.aws/credentials\" >/dev/null\n\
         echo $$ >\"$HOME/shell.pid\"",
    );
    let output = output_with_timeout(&mut lab.command(&[], &claude));
    assert!(output.status.success(), "{output:?}");
    let shell: u64 = std::fs::read_to_string(lab.path("shell.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let notes = notes.display().to_string();
    let opened = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["kind"] == "open" && e["resolved"] == notes.as_str())
            .count()
    };
    daemon.wait_for_event("the shell's open of notes.txt", |e| {
        opened(std::slice::from_ref(e)) > 0 && e["pid"] == shell
    });
    // The 51 repeats are counted (with whatever else the session's
    // processes opened twice, such as the libraries each `cat` loads).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(&lab, METRICS);
        let repeated = metrics
            .lines()
            .find_map(|line| line.strip_prefix("agentwatch_opens_repeated_total "))
            .and_then(|value| value.parse::<u64>().ok());
        if repeated.is_some_and(|repeated| repeated >= 51) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(opened(&daemon.events()), 1, "reported once, by the shell");
    // A credential's every read is reported (each `cat` is its own process).
    let credential = lab.path(".aws/credentials").display().to_string();
    let reads = daemon
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "open" && e["resolved"] == credential.as_str())
        .count();
    assert_eq!(reads, 2);
}

#[test]
fn a_native_installs_versioned_binary_is_found_by_its_directories() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    // The native installer's layout: an executable named by its version
    // (its comm is "2.1.197") in ~/.local/share/claude/versions; here a
    // copy of sh, running the agent's steps from a script.
    let binary = lab.path(".local/share/claude/versions/2.1.197");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy("/bin/sh", &binary).unwrap();
    let steps = lab.path("steps.sh");
    write(&steps, READ_AWS_THEN_CALL_EC2);
    let script = format!("\"{}\" \"{}\"", binary.display(), steps.display());
    let session = refused_as_claude_code(&lab, &daemon, &listener, &script);
    assert_eq!(session["found_by"], "exec", "{session}");
    // The same binary elsewhere is no agent.
    let elsewhere = lab.path("versions/2.1.197");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::copy("/bin/sh", &elsewhere).unwrap();
    let script = format!("\"{}\" \"{}\"", elsewhere.display(), steps.display());
    let output = output_with_timeout(&mut lab.command(&[], &script));
    assert_eq!(results(&output), [0], "not watched: {output:?}");
}

#[test]
fn an_agent_named_claude_is_blocked_without_a_wrapper_and_an_ordinary_process_is_not() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let claude = agent_script(&lab, "claude", READ_AWS_THEN_CALL_EC2);
    // With no agent running, nobody pays for the syscall tracepoints; the
    // agent is paused at exec until they are attached, then watched.
    let metrics = http_get(&lab, METRICS);
    assert!(
        metrics.contains("agentwatch_syscall_probes_attached 0"),
        "{metrics}"
    );

    let output = output_with_timeout(&mut lab.command(&[], &claude));
    assert_eq!(
        results(&output),
        [-1],
        "the agent's call is refused: {output:?}"
    );
    assert_eq!(listener.connections(), 0);
    alert_for(&daemon, "block");
    let events = daemon.events();
    let alert = expect_event!(events, "alert", {
        "action" => "block",
        "provider" => "aws",
        "host" => "ec2.us-east-1.amazonaws.com",
    });
    expect_event!(events, "session", {
        "session" => alert["session"],
        "state" => "start",
        "agent" => "Claude Code",
        "found_by" => "exec",
    });
    let metrics = http_get(&lab, METRICS);
    assert!(
        metrics.contains("agentwatch_syscall_probes_attached 1"),
        "{metrics}"
    );

    let output = output_with_timeout(&mut lab.command(&[], READ_AWS_THEN_CALL_EC2));
    assert_eq!(
        results(&output),
        [0],
        "an ordinary process is left alone: {output:?}"
    );
    assert_eq!(listener.connections(), 1);
    drop(daemon);
}

#[test]
fn a_process_started_with_claudecode_1_is_an_agent() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let output = output_with_timeout(&mut lab.command(&["CLAUDECODE=1"], READ_AWS_THEN_CALL_EC2));
    assert_eq!(results(&output), [-1], "{output:?}\n{}", daemon.stderr());
    assert_eq!(listener.connections(), 0);
    alert_for(&daemon, "block");
}

#[test]
fn a_node_run_agent_is_recognised_by_argv_before_it_runs() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    // An interpreter named node whose argv names Claude Code's package: held
    // at exec, matched by argv, and only then resumed, inside its session.
    let node = agent_script(&lab, "node", READ_AWS_THEN_CALL_EC2);
    let script = format!("{node} /usr/lib/node_modules/@anthropic-ai/claude-code/cli.js");
    let output = output_with_timeout(&mut lab.command(&[], &script));
    assert_eq!(results(&output), [-1], "{output:?}\n{}", daemon.stderr());
    assert_eq!(listener.connections(), 0);
    let alert = alert_for(&daemon, "block");
    expect_event!(daemon.events(), "session", {
        "session" => alert["session"],
        "found_by" => "argv",
    });
    // An ordinary node program is resumed and left alone.
    let output = output_with_timeout(&mut lab.command(&[], &format!("{node} server.js")));
    assert_eq!(results(&output), [0], "{output:?}");
}

#[test]
fn interpreters_held_at_exec_are_released_even_when_their_event_is_lost() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    // A ring buffer of one page, kept full by an agent session's flood: the
    // exec records of held interpreters are lost, and the daemon must still
    // release them from the kernel's HELD map.
    let _daemon = Daemon::start(&lab.dns, lab.home.path(), &["--ring-buffer-size", "4096"]);
    let flood = agent_script(
        &lab,
        "claude",
        "while :; do cat /etc/hostname >/dev/null; done",
    );
    let _flooding = Background(spawn_group(&mut lab.command(&[], &flood)));
    thread::sleep(Duration::from_millis(500));
    let node = agent_script(&lab, "node", "\"$PROBE\" connect 127.0.0.3:443");
    for _ in 0..5 {
        let started = Instant::now();
        let output = output_with_timeout(&mut lab.command(&[], &format!("{node} server.js")));
        assert_eq!(results(&output), [0], "{output:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "held for {:?}",
            started.elapsed()
        );
    }
    assert_eq!(listener.connections(), 5);
}

#[test]
fn ask_mode_stops_the_session_until_a_human_approves_its_retry() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &["--mode", "ask"]);
    let claude = agent_script(
        &lab,
        "claude",
        &format!("{READ_AWS_THEN_CALL_EC2}\n\"$PROBE\" connect-host {EC2_HOST}"),
    );
    let mut agent = spawn_group(&mut lab.command(&[], &claude));

    let request = wait_for_pending(&daemon);
    let id = request["id"].as_u64().unwrap();
    assert_eq!(request["agent"], "Claude Code");
    assert_eq!(request["host"], "ec2.us-east-1.amazonaws.com");
    assert!(
        request["credential"]
            .as_str()
            .unwrap()
            .contains(".aws/credentials")
    );
    let probe = request["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        process_state(probe),
        Some('T'),
        "the connecting process is stopped"
    );
    thread::sleep(Duration::from_millis(500));
    assert!(agent.try_wait().unwrap().is_none(), "the session waits");

    // The agent cannot answer for itself, whatever its uid.
    let own = output_with_timeout(&mut lab.command(
        &["CLAUDECODE=1"],
        &format!(
            "{} approve {id} --socket {}",
            agentwatch().display(),
            daemon.socket.display()
        ),
    ));
    assert_eq!(own.status.code(), Some(1), "{own:?}");
    assert!(
        String::from_utf8_lossy(&own.stderr).contains("watched session"),
        "{own:?}"
    );

    let approved = daemon.client(&["approve", &id.to_string()]);
    assert!(approved.status.success(), "{approved:?}");
    let output = wait_with_timeout(agent);
    assert_eq!(
        results(&output),
        [-1, 0],
        "the retry passes once: {output:?}"
    );
    assert_eq!(listener.connections(), 1);
    let pending = daemon.client(&["pending", "--json"]);
    assert_eq!(String::from_utf8_lossy(&pending.stdout).trim(), "[]");
}

#[test]
fn ask_mode_stops_a_write_refused_by_its_name_and_lets_the_approved_retry_through() {
    let _serial = serial();
    let lab = Lab::new();
    // An address no DNS answer gave: only the name refuses this call.
    let listener = lab.listen("127.0.0.8:443");
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &["--mode", "ask"]);
    let call = "\"$PROBE\" tls 127.0.0.8:443 backboard.railway.app";
    let claude = agent_script(
        &lab,
        "claude",
        &format!("cat \"$HOME/.railway/config.json\" >/dev/null\n{call}\n{call}"),
    );
    let mut agent = spawn_group(&mut lab.command(&[], &claude));

    let request = wait_for_pending(&daemon);
    let id = request["id"].as_u64().unwrap();
    assert_eq!(request["host"], "backboard.railway.app");
    // Stopped in the write where sk_msg may signal, else at the session's
    // next traced system call: either way it waits.
    thread::sleep(Duration::from_millis(500));
    assert!(agent.try_wait().unwrap().is_none(), "the session waits");
    assert_eq!(listener.bytes(), 0, "nothing of the refused write left");

    let approved = daemon.client(&["approve", &id.to_string()]);
    assert!(approved.status.success(), "{approved:?}");
    let output = wait_with_timeout(agent);
    let got = results(&output);
    assert_eq!(got.len(), 2, "{output:?}");
    assert_eq!(
        got[0], -13,
        "the refused write failed with EACCES: {output:?}"
    );
    assert!(got[1] > 0, "the approved retry was written: {output:?}");
    assert_eq!(listener.bytes(), got[1] as usize);
    // Both first writes were judged by their name (counters are exported
    // as the daemon polls them).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(&lab, METRICS);
        if metrics.contains("agentwatch_first_writes_total{by=\"name\"} 2") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ask_mode_stops_a_volume_deletion_before_encryption_and_the_approved_request_arrives_once() {
    let _serial = serial();
    let lab = Lab::new();
    lab.write_graphql_client();
    let api = TlsApi::start(&lab.dns.netns, "127.0.0.2:443");
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &["--mode", "ask"]);
    let claude = agent_script(
        &lab,
        "claude",
        &format!(
            "cat \"$HOME/.railway/config.json\" >/dev/null\n{}{}",
            python_graphql(
                "logs",
                "query { deploymentLogs(deploymentId: \"d-1\") { message } }"
            ),
            python_graphql("delete", "mutation { volumeDelete(volumeId: \"v-1\") }"),
        ),
    );
    let mut agent = spawn_group(&mut lab.command(&[], &claude));

    let request = wait_for_pending(&daemon);
    let id = request["id"].as_u64().unwrap();
    assert_eq!(request["host"], "backboard.railway.app");
    assert_eq!(
        request["operation"],
        "GraphQL mutation volumeDelete on Railway (destructive)"
    );
    let writer = request["pid"].as_u64().unwrap() as u32;
    assert_eq!(process_state(writer), Some('T'), "the writer is stopped");
    thread::sleep(Duration::from_millis(500));
    assert!(agent.try_wait().unwrap().is_none(), "the session waits");
    // The read went through; the deletion has not left.
    let arrived = |api: &TlsApi| -> Vec<String> {
        api.requests()
            .iter()
            .map(|r| r["body"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let before = arrived(&api);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].contains("deploymentLogs"), "{before:?}");

    let approved = daemon.client(&["approve", &id.to_string()]);
    assert!(approved.status.success(), "{approved:?}");
    let output = wait_with_timeout(agent);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("logs=0") && stdout.contains("delete=0"),
        "{output:?}"
    );
    let after = arrived(&api);
    assert_eq!(
        after.len(),
        2,
        "the approved request arrived once: {after:?}"
    );
    assert!(after[1].contains("volumeDelete"), "{after:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(&lab, METRICS);
        let counted = metrics.contains(
            "agentwatch_operations_total{class=\"destructive\",decision=\"ask\",seen=\"tls\"} 1",
        ) && metrics.contains(
            "agentwatch_operations_total{class=\"reads\",decision=\"pass\",seen=\"tls\"} 1",
        );
        if counted {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ask_mode_deny_and_no_answer_kill_the_session() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let policy = lab.path("policy.toml");
    write(&policy, "ask_timeout_secs = 2\n");
    let daemon = Daemon::start(
        &lab.dns,
        lab.home.path(),
        &["--mode", "ask", "--config", policy.to_str().unwrap()],
    );
    let claude = agent_script(
        &lab,
        "claude",
        &format!("{READ_AWS_THEN_CALL_EC2}\necho survived"),
    );
    let agent = spawn_group(&mut lab.command(&[], &claude));
    let id = wait_for_pending(&daemon)["id"].as_u64().unwrap();
    let denied = daemon.client(&["deny", &id.to_string()]);
    assert!(denied.status.success(), "{denied:?}");
    let output = wait_with_timeout(agent);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("survived"));
    assert_ne!(output.status.code(), Some(0));

    // Nobody answers: denied when the timeout passes.
    let agent = spawn_group(&mut lab.command(&[], &claude));
    wait_for_pending(&daemon);
    let output = wait_with_timeout(agent);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("survived"));
    daemon.wait_for_event("timeout", |e| {
        e["kind"] == "request" && e["verdict"] == "timeout"
    });
    assert_eq!(listener.connections(), 0);
    let metrics = http_get(&lab, METRICS);
    for outcome in ["approve\"} 0", "deny\"} 1", "timeout\"} 1"] {
        assert!(
            metrics.contains(&format!(
                "agentwatch_requests_resolved_total{{verdict=\"{outcome}"
            )),
            "{outcome}: {metrics}"
        );
    }
}

#[test]
fn an_ask_mode_request_is_shown_on_the_agents_users_desktop() {
    let _serial = serial();
    let lab = Lab::new();
    let desk = DesktopUser::log_in();
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &["--mode", "ask"]);
    let claude = agent_script(&lab, "claude", READ_AWS_THEN_CALL_EC2);
    let agent = Background(spawn_group(&mut lab.command_as(&desk, &claude)));
    let request = wait_for_pending(&daemon);
    let id = request["id"].as_u64().unwrap();

    wait_until("the notification reaches the user's session bus", || {
        !desk.notifications().is_empty()
    });
    let notifications = desk.notifications();
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let shown = &notifications[0];
    assert_eq!(shown["app_name"], "agentwatch");
    assert_eq!(shown["urgency"], 2, "critical: {shown}");
    let body = shown["body"].as_str().unwrap();
    for want in [
        "Claude Code",
        "ec2.us-east-1.amazonaws.com",
        ".aws/credentials",
        &format!("`agentwatch approve {id}`"),
    ] {
        assert!(body.contains(want), "{want:?} missing from {body:?}");
    }
    let metrics = http_get(&lab, METRICS);
    assert!(
        metrics.contains("agentwatch_desktop_notifications_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentwatch_desktop_notifications_total{outcome=\"failed\"} 0"),
        "{metrics}"
    );
    let denied = daemon.client(&["deny", &id.to_string()]);
    assert!(denied.status.success(), "{denied:?}");
    drop(agent);
}

#[test]
fn a_session_left_stopped_by_a_killed_daemon_is_killed_by_the_next_started_as_the_unit_does() {
    let _serial = serial();
    let lab = Lab::new();
    // /run/agentwatch and /var/lib/agentwatch.
    let runtime = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let start = |notify: &NotifySocket| {
        Daemon::start_as_unit(
            &lab.dns,
            lab.home.path(),
            runtime.path(),
            state.path(),
            notify,
            &["--mode", "ask"],
        )
    };
    let mut first = start(&NotifySocket::new());
    let claude = agent_script(
        &lab,
        "claude",
        &format!("{READ_AWS_THEN_CALL_EC2}\necho survived"),
    );
    let agent = spawn_group(&mut lab.command(&[], &claude));
    let probe = wait_for_pending(&first)["pid"].as_u64().unwrap() as u32;
    let stopped = state.path().join("stopped-sessions.json");
    let mode = std::fs::metadata(&stopped).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "who read which credential is root's");
    // Alerts are warnings in the journal, the rest informational.
    wait_until("the alert line on stderr", || {
        has_line(
            &first.stderr(),
            "<4>agentwatch: STOPPED, awaiting approval:",
        )
    });
    assert!(
        has_line(&first.stderr(), "<6>agentwatch: daemon watching agents"),
        "{}",
        first.stderr()
    );
    first.crash();
    assert_eq!(
        process_state(probe),
        Some('T'),
        "still stopped, with no one to answer"
    );
    // systemd removes the runtime directory at every stop, restarts too.
    std::fs::remove_dir_all(runtime.path()).unwrap();
    let second = start(&NotifySocket::new());
    let output = wait_with_timeout(agent);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("survived"));
    assert!(
        second
            .stderr()
            .lines()
            .any(|line| line.starts_with("<4>agentwatch: killed ")
                && line.contains("left stopped awaiting approval")),
        "{}",
        second.stderr()
    );
}

#[test]
fn systemd_hears_ready_alive_reloading_and_stopping_and_a_bad_policy_fails_the_reload() {
    let _serial = serial();
    let lab = Lab::new();
    let runtime = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let policy = lab.path("policy.toml");
    write(&policy, "action = \"block\"\n");
    let notify = NotifySocket::new();
    let mut daemon = Daemon::start_as_unit(
        &lab.dns,
        lab.home.path(),
        runtime.path(),
        state.path(),
        &notify,
        &["--config", policy.to_str().unwrap()],
    );
    assert!(
        notify
            .messages()
            .iter()
            .any(|m| m.starts_with("STATUS=daemon watching agents (mode block)")),
        "{:?}",
        notify.messages()
    );
    notify.wait_for("WATCHDOG=1");

    // ExecReload checks the policy first: a bad one fails `systemctl reload`.
    let reload_check = |policy: &std::path::Path| {
        output_with_timeout(
            Command::new(agentwatch())
                .args(unit_command("ExecReload"))
                .arg(policy),
        )
    };
    write(&policy, "action = \"explode\"\n");
    let refused = reload_check(&policy);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("policy.toml:1:10"));

    write(&policy, "action = \"alert\"\n");
    assert!(reload_check(&policy).status.success());
    // SAFETY: kill(2) on the daemon we started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    daemon.wait_for("policy reloaded (mode alert)");
    notify.wait_for("STATUS=policy reloaded (mode alert)");
    let messages = notify.messages();
    let reloading = messages.iter().position(|m| m == "RELOADING=1").unwrap();
    assert!(
        messages[reloading + 1].starts_with("MONOTONIC_USEC="),
        "{messages:?}"
    );
    assert!(
        messages[reloading..].iter().any(|m| m == "READY=1"),
        "READY=1 after the reload: {messages:?}"
    );

    assert!(daemon.stop().success());
    notify.wait_for("STOPPING=1");
    assert!(!runtime.path().join("agentwatch.sock").exists());
}

#[test]
fn a_metrics_port_in_use_fails_the_start_before_the_programs_load_and_leaves_no_socket() {
    let _serial = serial();
    let lab = Lab::new();
    let _taken = lab.dns.bind("127.0.0.1:9464");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agentwatch.sock");
    let output = output_with_timeout(
        Command::new("ip")
            .args(["netns", "exec", &lab.dns.netns.name])
            .arg(agentwatch())
            .args(unit_command("ExecStart"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9464"), "{stderr}");
    assert!(
        !stderr.contains("running without"),
        "no program was loaded: {stderr}"
    );
    assert!(!socket.exists(), "no socket left for clients to block on");
}

#[test]
fn a_restarted_daemon_adopts_running_agents_with_what_they_held() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let mut first = Daemon::start(&lab.dns, lab.home.path(), &[]);
    // The credential is read before the restart and used after it: the
    // agent waits for the test's word, however long the restart takes.
    let go = lab.path("go");
    let claude = agent_script(
        &lab,
        "claude",
        &format!(
            "cat \"$HOME/.aws/credentials\" >/dev/null\nwhile [ ! -e {} ]; do sleep 0.05; done\n\"$PROBE\" connect-host {EC2_HOST}",
            go.display()
        ),
    );
    let agent = spawn_group(&mut lab.command(&[], &claude));
    first.wait_for_event("credential read", |e| {
        e["kind"] == "open" && e["credentials"][0] == "aws"
    });
    wait_until("the daemon saved the session's credential", || {
        std::fs::read_to_string(first.saved_sessions()).is_ok_and(|saved| saved.contains("aws"))
    });
    assert!(first.stop().success());
    let second = Daemon::start_with_socket(&lab.dns, lab.home.path(), &first.socket, &[]);
    let session = second.wait_for_event("adopted session", |e| e["kind"] == "session");
    assert_eq!(session["found_by"], "running");
    write(&go, "");
    let output = wait_with_timeout(agent);
    assert_eq!(results(&output), [-1], "{output:?}\n{}", second.stderr());
    assert_eq!(listener.connections(), 0);
}

#[test]
fn a_bad_policy_reload_keeps_the_running_policy() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let policy = lab.path("policy.toml");
    write(&policy, "action = \"block\"\n");
    let daemon = Daemon::start(
        &lab.dns,
        lab.home.path(),
        &["--config", policy.to_str().unwrap()],
    );
    write(&policy, "action = \"explode\"\n");
    // SAFETY: kill(2) on the daemon we started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    daemon.wait_for("policy reload failed, keeping the running policy");
    // The reason may reach the file a write later than the headline.
    daemon.wait_for("policy.toml:1:10");
    wait_until("the metrics say the reload failed", || {
        http_get(&lab, METRICS).contains("agentwatch_config_last_reload_successful 0")
    });
    let claude = agent_script(&lab, "claude", READ_AWS_THEN_CALL_EC2);
    let output = output_with_timeout(&mut lab.command(&[], &claude));
    assert_eq!(results(&output), [-1], "still blocking: {output:?}");
    assert_eq!(listener.connections(), 0);
}

/// A script for an agent that reads a credential, makes the call that is
/// refused, then waits for a line on `fifo` (a shell builtin: no events
/// meanwhile) before its last command.
fn refused_then_waiting_on(fifo: &std::path::Path) -> String {
    mkfifo(fifo);
    format!(
        "{READ_AWS_THEN_CALL_EC2}\nread go < {}\ncat /etc/hostname >/dev/null",
        fifo.display()
    )
}

fn mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

/// Lets the agent waiting on `fifo` go on.
fn release(fifo: &std::path::Path) {
    std::fs::write(fifo, "go\n").expect("writing the fifo");
}

#[test]
fn the_event_log_has_the_alert_while_the_session_runs_and_events_reads_it_back_across_rotations() {
    let _serial = serial();
    let lab = Lab::new();
    let _listener = lab.listen(EC2);
    // A few events a file: the session's history spans many rotations.
    let daemon = Daemon::start(
        &lab.dns,
        lab.home.path(),
        &["--log-max-size", "2048", "--log-backups", "100"],
    );
    let fifo = lab.path("go");
    let claude = agent_script(&lab, "claude", &refused_then_waiting_on(&fifo));
    let mut agent = Background(spawn_group(&mut lab.command(&[], &claude)));

    // On disk while the agent still runs: alerts are written at once.
    let logged_alert = || {
        read_event_log(&daemon.log)
            .into_iter()
            .find(|e| e["kind"] == "alert")
    };
    wait_until("the alert is in the event log", || logged_alert().is_some());
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent still runs"
    );
    let alert = logged_alert().unwrap();
    assert_eq!(alert["action"], "block");
    let session = alert["session"].as_u64().unwrap();
    // Once the probe's exit is logged the agent waits on the fifo, doing
    // nothing: the files stay as they are while the test reads them.
    wait_until("the probe's exit is logged", || {
        read_event_log(&daemon.log)
            .iter()
            .any(|e| e["kind"] == "exit" && e["comm"] == "aw-probe")
    });
    let logged = read_event_log(&daemon.log);
    let start = logged
        .iter()
        .find(|e| e["kind"] == "session" && e["session"] == session)
        .expect("the session's start is logged")
        .clone();
    let backup = std::path::PathBuf::from(format!("{}.1.gz", daemon.log.display()));
    let mut magic = [0u8; 2];
    std::io::Read::read_exact(&mut std::fs::File::open(&backup).unwrap(), &mut magic).unwrap();
    assert_eq!(magic, [0x1f, 0x8b], "backups are gzip");
    assert!(
        !read_events(&daemon.log).contains(&start),
        "the session's start was rotated out of the live file"
    );
    for file in [&daemon.log, &backup] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }

    // The history, oldest first, from the session's start.
    let since = start["ts"].as_str().unwrap();
    let args = |follow: bool| {
        let mut args = vec![
            "events".to_string(),
            "--session".into(),
            session.to_string(),
            "--since".into(),
            since.into(),
            "--log".into(),
            daemon.log.display().to_string(),
        ];
        if !follow {
            args.push("--no-follow".into());
        }
        args
    };
    let history = daemon.client(&args(false).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(history.status.success(), "{history:?}");
    let printed = lines(&history.stdout);
    assert_eq!(printed.first(), Some(&start), "from the session's start");
    assert!(printed.contains(&alert), "with the alert");
    assert!(printed.iter().all(|e| e["session"] == session));

    // Following: the history, then what the session does next, each once.
    let follower_output = lab.path("follower.jsonl");
    let mut follower = Background(
        Command::new(agentwatch())
            .args(args(true))
            .arg("--socket")
            .arg(&daemon.socket)
            .process_group(0)
            .stdout(std::fs::File::create(&follower_output).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let followed = || read_events(&follower_output);
    wait_until("the follower printed the history", || {
        followed().contains(&alert)
    });
    release(&fifo);
    wait_until("the follower printed the session's end", || {
        followed()
            .iter()
            .any(|e| e["kind"] == "session" && e["state"] == "end")
    });
    assert!(follower.0.try_wait().unwrap().is_none(), "it follows on");
    let followed = followed();
    assert_eq!(followed.first(), Some(&start));
    for (n, event) in followed.iter().enumerate() {
        assert!(
            !followed[..n].contains(event),
            "printed twice: {event}\n{followed:#?}"
        );
    }
    drop(agent);
}

#[test]
fn events_says_what_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let events =
        |args: &[&str]| output_with_timeout(Command::new(agentwatch()).arg("events").args(args));
    let bad = events(&["--since", "yesterday", "--no-follow"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("\"yesterday\" is neither an RFC 3339 time"),
        "{stderr}"
    );
    let log = dir.path().join("events.jsonl");
    let missing = events(&[
        "--since",
        "1h",
        "--no-follow",
        "--log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains(&format!("no event log at {}", log.display())),
        "{missing:?}"
    );
}

#[test]
fn run_has_the_alert_in_its_events_file_while_the_command_still_runs() {
    let _serial = serial();
    let lab = Lab::new();
    let _listener = lab.listen(EC2);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let fifo = dir.path().join("go");
    let script = refused_then_waiting_on(&fifo);
    let mut run = Background(spawn_group(
        &mut lab.run_command(&["--events", events.to_str().unwrap()], &script),
    ));
    wait_until("the alert is in the events file", || {
        read_events(&events).iter().any(|e| e["kind"] == "alert")
    });
    assert!(
        run.0.try_wait().unwrap().is_none(),
        "the command still runs"
    );
    release(&fifo);
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "run did not finish");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        read_events(&events)
            .iter()
            .any(|e| e["kind"] == "exec" && e["filename"] == "/usr/bin/cat"),
        "the rest by the exit"
    );
}

/// Whether a line of `text` starts with `start`.
fn has_line(text: &str, start: &str) -> bool {
    text.lines().any(|line| line.starts_with(start))
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("event JSON"))
        .collect()
}

#[test]
fn prometheus_scrapes_the_alerts() {
    let _serial = serial();
    let lab = Lab::new();
    let _daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    write(
        &config,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agentwatch\n    static_configs:\n      - targets: ['127.0.0.1:9464']\n",
    );
    let _prometheus = Background(spawn_group(
        Command::new("ip")
            .args(["netns", "exec", &lab.dns.netns.name, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090"),
    ));
    let claude = agent_script(&lab, "claude", READ_AWS_THEN_CALL_EC2);
    let output = output_with_timeout(&mut lab.command(&[], &claude));
    assert_eq!(results(&output), [-1]);

    let metrics = http_get(&lab, METRICS);
    assert!(
        metrics.contains("agentwatch_alerts_total{action=\"block\",provider=\"aws\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentwatch_events_lost_total"),
        "{metrics}"
    );
    let query = "http://127.0.0.1:9090/api/v1/query?query=sum(agentwatch_alerts_total%7Baction%3D%22block%22%7D)";
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = http_get(&lab, query);
        if answer.contains("\"1\"]") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "PromQL never saw the alert: {answer}"
        );
        thread::sleep(Duration::from_millis(500));
    };
    let parsed: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(parsed["data"]["result"][0]["value"][1], "1");
}

#[test]
fn metrics_pass_promtool_with_every_series_from_the_start_and_healthz_says_ok() {
    let _serial = serial();
    let lab = Lab::new();
    // `:PORT` is every interface, as Prometheus exporters take it.
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &["--metrics", ":9464"]);
    let metrics = http_get(&lab, METRICS);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package: cargo xtask setup installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(checked.status.success(), "promtool: {checked:?}\n{metrics}");
    // Before any agent: zeros, not absent series.
    for series in [
        "agentwatch_alerts_total{action=\"block\",provider=\"aws\"} 0",
        "agentwatch_alerts_total{action=\"ask\",provider=\"none\"} 0",
        "agentwatch_requests_resolved_total{verdict=\"approve\"} 0",
        "agentwatch_kernel_drops_total{reason=\"process_map_full\"} 0",
        "agentwatch_events_lost_total{kind=\"exec\"} 0",
        "agentwatch_probe_attach_failures{program=\"sys_exit_openat\"} 0",
        "agentwatch_config_last_reload_successful 1",
        "agentwatch_config_last_reload_success_timestamp_seconds ",
        &format!(
            "agentwatch_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
    for url in ["http://127.0.0.1:9464/healthz", "http://[::1]:9464/healthz"] {
        wait_until(&format!("{url} answers 200"), || {
            http_status(&lab, url) == "200"
        });
    }
    assert!(
        daemon
            .stderr()
            .contains("metrics on http://[::]:9464/metrics")
    );
}

/// `agentwatch top` on the daemon's socket in a detached tmux session of 80x24,
/// read and typed at as an operator would; killed on drop.
struct Top {
    name: String,
}

impl Top {
    fn start(daemon: &Daemon) -> Self {
        let name = format!("aw-top-{}", std::process::id());
        let top = format!(
            "{} top --socket {}",
            agentwatch().display(),
            daemon.socket.display()
        );
        let started = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "80",
                "-y",
                "24",
                &top,
            ])
            .status()
            .expect("tmux");
        assert!(started.success());
        Self { name }
    }

    fn screen(&self) -> String {
        let screen = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&screen.stdout).into_owned()
    }

    /// The screen once it shows all of `wanted` (20 s at most).
    fn wait_for(&self, wanted: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if wanted.iter().all(|w| screen.contains(w)) {
                assert!(screen.lines().count() <= 24, "{screen}");
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "top never showed {wanted:?}:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Keys as tmux names them (`d`, `Enter`, `Tab`).
    fn press(&self, key: &str) {
        let sent = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, key])
            .status()
            .expect("tmux send-keys");
        assert!(sent.success());
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        // `q` ends top and with it the tmux server: the cleanup after it may
        // find none, which tmux says on stderr (into libtest's verdict line).
        let _ = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, "q"])
            .stderr(Stdio::null())
            .status();
        thread::sleep(Duration::from_millis(300));
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn top_shows_the_session_in_80x24() {
    let _serial = serial();
    let lab = Lab::new();
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let claude = agent_script(
        &lab,
        "claude",
        "cat \"$HOME/.aws/credentials\" >/dev/null\nsleep 60",
    );
    let _agent = Background(spawn_group(&mut lab.command(&[], &claude)));
    daemon.wait_for_event("session", |e| e["kind"] == "session");
    let top = Top::start(&daemon);
    top.wait_for(&["Claude Code", "sleep"]);
    top.press("?");
    top.wait_for(&["keys (any key closes)", "PgUp/PgDn", "g/G Home/End"]);
}

#[test]
fn top_denies_only_after_y_and_shows_the_requests_host_and_credential() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &["--mode", "ask"]);
    let claude = agent_script(
        &lab,
        "claude",
        &format!("{READ_AWS_THEN_CALL_EC2}\necho survived"),
    );
    let agent = spawn_group(&mut lab.command(&[], &claude));
    let id = wait_for_pending(&daemon)["id"].as_u64().unwrap();
    let still_pending = || {
        let output = daemon.client(&["pending", "--json"]);
        let pending: Value = serde_json::from_slice(&output.stdout).expect("pending --json");
        pending
            .as_array()
            .expect("a list")
            .iter()
            .any(|p| p["id"] == id)
    };
    let top = Top::start(&daemon);
    top.wait_for(&["1 pending"]);

    top.press("d");
    top.wait_for(&[&format!("deny request {id}? y/n")]);
    thread::sleep(Duration::from_secs(1));
    assert!(still_pending(), "denied before the answer");
    top.press("n");
    top.wait_for(&[&format!("request {id} not denied")]);
    assert!(still_pending(), "denied on n");

    // The request's details, in full.
    top.press("Tab");
    top.press("Enter");
    top.wait_for(&[
        &format!("request {id} (Enter or Esc closes)"),
        "ec2.us-east-1.amazonaws.com:443 (127.0.0.3)",
        &format!("{}/.aws/credentials", lab.home.path().display()),
    ]);
    top.press("Enter");
    top.wait_for(&["Enter details"]);

    top.press("d");
    top.wait_for(&[&format!("deny request {id}? y/n")]);
    top.press("y");
    top.wait_for(&[&format!("request {id} denied: session")]);
    let output = wait_with_timeout(agent);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("survived"));
    assert!(!still_pending());
    assert_eq!(listener.connections(), 0);
}

#[test]
fn an_agent_learns_why_its_call_was_refused_and_still_cannot_approve_it() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let why = format!(
        "{} why --socket {}",
        agentwatch().display(),
        daemon.socket.display()
    );
    let out = |name: &str| lab.path(name).display().to_string();
    // The agent's call is refused; then, as its hook would, it asks why (until the daemon has
    // published the alert), asks twice in hook form, and tries to approve its own call.
    let script = format!(
        "{READ_AWS_THEN_CALL_EC2}\n\
         for i in $(seq 100); do {why} > {text}; grep -q 'refused a call' {text} && break; sleep 0.1; done\n\
         {why} --hook </dev/null > {hook1}\n\
         {why} --hook </dev/null > {hook2}\n\
         {aw} approve 1 --socket {sock} 2> {approve}; echo $? >> {approve}",
        text = out("why.txt"),
        hook1 = out("hook1.json"),
        hook2 = out("hook2.json"),
        aw = agentwatch().display(),
        sock = daemon.socket.display(),
        approve = out("approve.txt"),
    );
    let claude = agent_script(&lab, "claude", &script);
    let output = output_with_timeout(&mut lab.command(&[], &claude));
    assert_eq!(results(&output), [-1], "the call is refused: {output:?}");
    assert_eq!(listener.connections(), 0);

    let read = |name: &str| std::fs::read_to_string(lab.path(name)).unwrap();
    let text = read("why.txt");
    for part in [
        "agentwatch refused a call of this agent session",
        "AWS's infrastructure API at ec2.us-east-1.amazonaws.com:443",
        "/.aws/credentials",
        "the connection failed with EPERM",
        "only a human can approve this; you cannot approve it yourself",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    let hook: Value = serde_json::from_str(&read("hook1.json")).expect("hook JSON");
    assert_eq!(hook["hookSpecificOutput"]["hookEventName"], "PostToolUse");
    let context = hook["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(context.contains("ec2.us-east-1.amazonaws.com"), "{context}");
    assert_eq!(read("hook2.json"), "", "a hook hears of each refusal once");
    let approve = read("approve.txt");
    assert!(
        approve.contains("inside a watched agent session") && approve.ends_with("1\n"),
        "an agent cannot approve: {approve}"
    );

    // Outside any session: nothing refused, and that is no error.
    let outside = daemon.client(&["why"]);
    assert!(outside.status.success(), "{outside:?}");
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout),
        "agentwatch: nothing refused in this session\n"
    );
    let outside = daemon.client(&["why", "--hook"]);
    assert!(
        outside.status.success() && outside.stdout.is_empty(),
        "{outside:?}"
    );
    drop(daemon);
}

#[test]
fn hooks_install_merges_into_the_agents_settings_once() {
    let home = tempfile::tempdir().unwrap();
    let settings = home.path().join(".claude/settings.json");
    write(
        &settings,
        r#"{"model":"opus","hooks":{"PostToolUse":[{"matcher":"Edit","hooks":[{"type":"command","command":"fmt"}]}]}}"#,
    );
    let install = |agent: &str, extra: &[&str]| {
        output_with_timeout(
            Command::new(agentwatch())
                .args(["hooks", "install", agent])
                .args(extra)
                .env("HOME", home.path())
                .env_remove("CODEX_HOME"),
        )
    };
    let dry = install("claude-code", &["--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");
    assert!(String::from_utf8_lossy(&dry.stdout).contains("why --hook"));
    assert!(
        !std::fs::read_to_string(&settings)
            .unwrap()
            .contains("why --hook"),
        "dry run writes nothing"
    );

    let first = install("claude-code", &[]);
    assert!(first.status.success(), "{first:?}");
    let written = std::fs::read_to_string(&settings).unwrap();
    let json: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(json["model"], "opus");
    let groups = json["hooks"]["PostToolUse"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{written}");
    assert_eq!(groups[0]["hooks"][0]["command"], "fmt");
    assert_eq!(groups[1]["matcher"], "*");
    assert_eq!(groups[1]["hooks"][0]["type"], "command");
    assert_eq!(
        groups[1]["hooks"][0]["command"],
        format!("{} why --hook", agentwatch().display())
    );
    let again = install("claude-code", &[]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already installed"),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        written,
        "idempotent"
    );

    let codex = install("codex", &[]);
    assert!(codex.status.success(), "{codex:?}");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join(".codex/hooks.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["hooks"]["PostToolUse"][0]["matcher"], "Bash");
    assert!(
        json["hooks"]["PostToolUse"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap()
            .ends_with("why --hook")
    );
}

/// The daemon's metrics, at the default address, in the lab's namespace.
const METRICS: &str = "http://127.0.0.1:9464/metrics";

/// `GET url` from inside the lab's namespace.
fn http_get(lab: &Lab, url: &str) -> String {
    curl(lab, &[url])
}

/// The HTTP status `GET url` answers, from inside the lab's namespace.
fn http_status(lab: &Lab, url: &str) -> String {
    curl(lab, &["-o", "/dev/null", "-w", "%{http_code}", url])
}

fn curl(lab: &Lab, args: &[&str]) -> String {
    let output = output_with_timeout(
        Command::new("ip")
            .args(["netns", "exec", &lab.dns.netns.name, "curl", "-s"])
            .args(args),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `done` until it holds (30 s at most).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_pending(daemon: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = daemon.client(&["pending", "--json"]);
        let pending: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if let Some(first) = pending.as_array().and_then(|all| all.first()) {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no pending request: {output:?}\n{}",
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_with_timeout(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            kill_group(&mut child);
            panic!("the agent did not finish");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The state letter of `/proc/PID/stat` (`T` when stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `agentwatch run --socket DAEMON'S OPTIONS -- sh -c SCRIPT` in the lab.
fn run_through(lab: &Lab, daemon: &Daemon, options: &[&str], script: &str) -> Command {
    let socket = daemon.socket.to_str().expect("socket path");
    let options: Vec<&str> = ["--socket", socket]
        .into_iter()
        .chain(options.iter().copied())
        .collect();
    lab.run_command(&options, script)
}

#[test]
fn run_opens_its_session_through_a_running_daemon_with_the_mode_it_asks_for() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let script = format!("{READ_AWS_THEN_CALL_EC2}\necho survived");
    let output = output_with_timeout(&mut run_through(
        &lab,
        &daemon,
        &["--events", events.to_str().unwrap()],
        &script,
    ));
    assert_eq!(results(&output), [-1], "refused by the daemon: {output:?}");
    assert_eq!(listener.connections(), 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(has_line(&stderr, "agentwatch: BLOCKED"), "{stderr}");
    let published = daemon.events();
    let session = expect_event!(published, "session", {
        "state" => "start",
        "found_by" => "run",
        "agent" => "`sh` under agentwatch run",
    });
    expect_event!(published, "alert", {
        "session" => session["session"],
        "action" => "block",
        "provider" => "aws",
    });
    // run's own file has what the daemon saw of its session, from its start.
    let mine = read_events(&events);
    expect_event!(mine, "exec", { "session" => session["session"], "filename" => "/usr/bin/cat" });
    expect_event!(mine, "alert", { "session" => session["session"], "action" => "block" });
    assert!(
        mine.iter().all(|e| e["session"] == session["session"]),
        "only its own session's events"
    );

    // The mode run asks for is this session's alone.
    let output = output_with_timeout(&mut run_through(
        &lab,
        &daemon,
        &["--mode", "kill"],
        &script,
    ));
    assert_eq!(output.status.code(), Some(128 + 9), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("survived"));
    assert_eq!(listener.connections(), 0);
    alert_for(&daemon, "kill");
}

#[test]
fn a_watched_session_cannot_open_a_session_of_its_own_through_the_daemon() {
    let _serial = serial();
    let lab = Lab::new();
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    // An agent that tries to put its next command in a session of its own,
    // with a milder mode.
    let claude = agent_script(
        &lab,
        "claude",
        &format!(
            "{} run --socket {} --mode observe -- true\necho \"run exited $?\"",
            agentwatch().display(),
            daemon.socket.display()
        ),
    );
    let output = output_with_timeout(&mut lab.command(&[], &claude));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("run exited 125"), "{output:?}");
    assert!(
        stderr.contains("agentwatch: the daemon did not watch the command: refused")
            && stderr.contains("watched"),
        "{stderr}"
    );
    let published = daemon.events();
    assert!(
        !published.iter().any(|e| e["found_by"] == "run"),
        "no session opened"
    );
}

#[test]
fn a_restarted_daemon_adopts_a_run_session_with_its_mode_and_what_it_held() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let mut first = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let go = lab.path("go");
    let script = format!(
        "cat \"$HOME/.aws/credentials\" >/dev/null\nwhile [ ! -e {} ]; do sleep 0.05; done\n\"$PROBE\" connect-host {EC2_HOST}\necho survived",
        go.display()
    );
    let run = spawn_group(&mut run_through(&lab, &first, &["--mode", "kill"], &script));
    first.wait_for_event("credential read", |e| {
        e["kind"] == "open" && e["credentials"][0] == "aws"
    });
    wait_until("the daemon saved the session's credential", || {
        std::fs::read_to_string(first.saved_sessions()).is_ok_and(|saved| saved.contains("aws"))
    });
    assert!(first.stop().success());
    let second = Daemon::start_with_socket(&lab.dns, lab.home.path(), &first.socket, &[]);
    let session = second.wait_for_event("adopted session", |e| e["kind"] == "session");
    assert_eq!(session["found_by"], "run");
    assert_eq!(session["agent"], "`sh` under agentwatch run");
    write(&go, "");
    let output = wait_with_timeout(run);
    // Killed under the mode run asked for, though the daemon's is block.
    assert_eq!(
        output.status.code(),
        Some(128 + 9),
        "{output:?}\n{}",
        second.stderr()
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("survived"));
    assert_eq!(listener.connections(), 0);
}

#[test]
fn run_through_the_daemon_in_ask_mode_waits_for_a_human_and_says_so() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    // The daemon blocks; this session alone asks.
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    let script = format!("{READ_AWS_THEN_CALL_EC2}\n\"$PROBE\" connect-host {EC2_HOST}");
    let run = spawn_group(&mut run_through(&lab, &daemon, &["--mode", "ask"], &script));
    let request = wait_for_pending(&daemon);
    assert_eq!(request["agent"], "`sh` under agentwatch run");
    let approved = daemon.client(&["approve", &request["id"].as_u64().unwrap().to_string()]);
    assert!(approved.status.success(), "{approved:?}");
    let output = wait_with_timeout(run);
    assert_eq!(
        results(&output),
        [-1, 0],
        "the retry passes once: {output:?}"
    );
    assert_eq!(listener.connections(), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        has_line(&stderr, "agentwatch: STOPPED, awaiting approval:"),
        "{stderr}"
    );
}

#[test]
fn a_credential_an_agent_inherits_open_counts_from_its_start() {
    let _serial = serial();
    let lab = Lab::new();
    let listener = lab.listen(EC2);
    let daemon = Daemon::start(&lab.dns, lab.home.path(), &[]);
    // Held at exec for its argv, it never opens the file: the shell that
    // started it did (`3<`), and the descriptor is what it reads.
    let node = agent_script(
        &lab,
        "node",
        &format!("cat <&3 >/dev/null\n\"$PROBE\" connect-host {EC2_HOST}"),
    );
    let script = format!(
        "{node} /usr/lib/node_modules/@anthropic-ai/claude-code/cli.js 3<\"$HOME/.aws/credentials\""
    );
    let output = output_with_timeout(&mut lab.command(&[], &script));
    assert_eq!(results(&output), [-1], "{output:?}\n{}", daemon.stderr());
    assert_eq!(listener.connections(), 0);
    let events = daemon.events();
    let alert = expect_event!(events, "alert", { "action" => "block", "provider" => "aws" });
    expect_event!(events, "open", {
        "session" => alert["session"],
        "syscall" => "inherited",
        "credentials/0" => "aws",
    });
}
