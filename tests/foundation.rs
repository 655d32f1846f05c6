//! The foundation: a watched command and all its descendants are traced —
//! opens, connects, execs, forks and exits — and nothing else is.

use std::{
    net::TcpListener,
    os::unix::fs::symlink,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use agentwatch_tests::{
    DnsLab, Lab, NetNs, Resolver, agentwatch, identity, output_on_terminal, output_with_timeout,
    probe, require_root, watch, watch_options, watch_with,
};
use serde_json::Value;

fn str_of<'a>(event: &'a Value, key: &str) -> &'a str {
    event[key].as_str().unwrap_or_default()
}

#[test]
fn the_issue_example_exits_3_with_all_event_kinds_in_one_session() {
    let watched = watch(&[
        "sh",
        "-c",
        "cat /etc/hostname; cd /etc && cat ./passwd; \
         python3 -c 'import socket; socket.socket().connect_ex((\"127.0.0.1\", 9))'; exit 3",
    ]);
    assert_eq!(watched.code(), 3, "stderr: {}", watched.stderr);
    // A session reports each file it opens once (same flags): two files,
    // one by an absolute and one by a relative path.
    for (file, given_as) in [
        ("/etc/hostname", "/etc/hostname"),
        ("/etc/passwd", "./passwd"),
    ] {
        let opens = watched.opens_of(file);
        let given: Vec<&str> = opens.iter().map(|e| str_of(e, "path")).collect();
        assert!(given.contains(&given_as), "{file}: {given:?}");
        let (dev, ino) = identity(Path::new(file));
        for open in &opens {
            assert_eq!(
                (open["dev"].as_u64(), open["ino"].as_u64()),
                (Some(dev), Some(ino))
            );
        }
    }
    let connects = watched.of_kind("connect");
    assert!(
        connects
            .iter()
            .any(|e| e["port"] == 9 && e["addr"] == "127.0.0.1" && e["ret"] == -111),
        "{connects:?}"
    );
    assert!(!watched.of_kind("exec").is_empty());
    assert!(!watched.of_kind("fork").is_empty());
    assert_eq!(watched.sessions().len(), 1, "one session id");
    let exits = watched.of_kind("exit");
    assert!(exits.iter().any(|e| e["comm"] == "sh" && e["code"] == 3));
}

#[test]
fn openat2_and_openat_with_a_directory_fd_are_resolved() {
    let probe = probe();
    let probe = probe.to_str().unwrap();
    let watched = watch(&[
        "sh",
        "-c",
        &format!("{probe} openat2 /etc/hostname && {probe} openat-in /etc ./passwd"),
    ]);
    assert_eq!(watched.code(), 0, "stderr: {}", watched.stderr);
    let syscalls: Vec<(&str, &str)> = watched
        .opens_of("/etc/hostname")
        .into_iter()
        .chain(watched.opens_of("/etc/passwd"))
        .map(|e| (str_of(e, "syscall"), str_of(e, "path")))
        .collect();
    assert!(
        syscalls.contains(&("openat2", "/etc/hostname")),
        "{syscalls:?}"
    );
    assert!(syscalls.contains(&("openat", "./passwd")), "{syscalls:?}");
}

#[test]
fn a_symlink_reports_the_path_given_and_the_target_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.txt");
    std::fs::write(&target, "x").unwrap();
    let link = dir.path().join("link.txt");
    symlink(&target, &link).unwrap();
    let watched = watch(&["cat", link.to_str().unwrap()]);
    assert_eq!(watched.code(), 0);
    let opens = watched.opens_of(link.to_str().unwrap());
    assert_eq!(opens.len(), 1, "{:?}", watched.of_kind("open"));
    let (dev, ino) = identity(&target);
    assert_eq!(
        opens[0]["ino"].as_u64(),
        Some(ino),
        "identity of the target"
    );
    assert_eq!(opens[0]["dev"].as_u64(), Some(dev));
}

#[test]
fn a_grandchild_is_in_the_session_with_its_ancestry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.txt");
    std::fs::write(&file, "x").unwrap();
    let watched = watch(&[
        "sh",
        "-c",
        &format!(
            "sh -c 'cd {} && cat ./deep.txt && exit 4'; true",
            dir.path().display()
        ),
    ]);
    assert_eq!(watched.code(), 0);
    let opens = watched.opens_of(file.to_str().unwrap());
    assert_eq!(opens.len(), 1);
    let cat = opens[0];
    assert_eq!(cat["path"], "./deep.txt");
    // cat's parent is the inner sh, whose parent is the outer sh.
    let inner_sh = cat["ppid"].as_u64().unwrap();
    let forks = watched.of_kind("fork");
    assert!(forks.iter().any(|f| f["child"] == inner_sh), "{forks:?}");
    assert!(
        forks
            .iter()
            .any(|f| f["pid"] == inner_sh && f["child"] == cat["pid"])
    );
    assert!(
        watched
            .of_kind("exit")
            .iter()
            .any(|e| e["pid"] == inner_sh && e["code"] == 4)
    );
    assert_eq!(watched.sessions().len(), 1);
}

#[test]
fn connects_to_a_listener_and_to_a_closed_port() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = listener.local_addr().unwrap().port();
    // A port nothing listens on: bind, note it, release it.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let accepter = thread::spawn(move || listener.accept().map(|_| ()));
    let probe = probe();
    let probe = probe.to_str().unwrap();
    let watched = watch(&[
        "sh",
        "-c",
        &format!(
            "{probe} connect 127.0.0.1:{open_port}; {probe} connect 127.0.0.1:{closed_port}; true"
        ),
    ]);
    assert_eq!(watched.code(), 0);
    accepter
        .join()
        .unwrap()
        .expect("the listener saw the connection");
    let connects = watched.of_kind("connect");
    let seen: Vec<(u64, i64)> = connects
        .iter()
        .map(|e| (e["port"].as_u64().unwrap(), e["ret"].as_i64().unwrap()))
        .collect();
    assert!(seen.contains(&(u64::from(open_port), 0)), "{seen:?}");
    assert!(seen.contains(&(u64::from(closed_port), -111)), "{seen:?}");
    assert!(connects.iter().all(|e| e["family"] == "inet"));
}

#[test]
fn exit_statuses_pass_through() {
    assert_eq!(watch(&["sh", "-c", "exit 42"]).code(), 42);
    assert_eq!(watch(&["true"]).code(), 0);
    let killed = watch(&["sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.code(), 137);
    assert!(
        killed
            .of_kind("exit")
            .iter()
            .any(|e| e["signal"] == 9 && e["code"] == 137)
    );
}

#[test]
fn a_missing_command_exits_127_with_a_message() {
    let watched = watch(&["/nonexistent/agentwatch-test-command"]);
    assert_eq!(watched.code(), 127);
    assert!(
        watched.stderr.contains("agentwatch-test-command"),
        "{}",
        watched.stderr
    );
    assert!(!watched.stderr.contains("panicked"));
}

#[test]
fn processes_outside_the_session_produce_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside.txt");
    let inside = dir.path().join("inside.txt");
    std::fs::write(&outside, "x").unwrap();
    std::fs::write(&inside, "x").unwrap();
    let outside_for_thread = outside.clone();
    // While the session runs, an untracked process (and this test process)
    // keeps opening a file of its own.
    let stranger = thread::spawn(move || {
        for _ in 0..20 {
            let _ = Command::new("cat").arg(&outside_for_thread).output();
            let _ = std::fs::read(&outside_for_thread);
            thread::sleep(Duration::from_millis(50));
        }
    });
    let watched = watch(&["sh", "-c", &format!("sleep 1; cat {}", inside.display())]);
    stranger.join().unwrap();
    assert_eq!(watched.code(), 0);
    assert_eq!(watched.opens_of(inside.to_str().unwrap()).len(), 1);
    let outsiders: Vec<&Value> = watched
        .events
        .iter()
        .filter(|e| e.to_string().contains("outside.txt"))
        .collect();
    assert!(outsiders.is_empty(), "{outsiders:?}");
}

#[test]
fn works_when_started_inside_ip_netns_exec() {
    let netns = NetNs::new();
    let watched = watch_with(
        &netns.prefix(),
        &[],
        &["sh", "-c", "cd /etc && cat ./hostname"],
    );
    assert_eq!(watched.code(), 0, "stderr: {}", watched.stderr);
    assert_eq!(watched.opens_of("/etc/hostname").len(), 1);
}

#[test]
fn long_paths_and_argv_are_truncated_and_marked() {
    let long_name = "d".repeat(200);
    let long_path = format!(
        "/tmp/{}/{}/{}/{}/{}/{}",
        long_name, long_name, long_name, long_name, long_name, long_name
    );
    let long_arg = "a".repeat(5000);
    let watched = watch(&[
        "sh",
        "-c",
        &format!("cat {long_path} 2>/dev/null; true {long_arg}"),
    ]);
    assert_eq!(watched.code(), 0);
    let truncated_open = watched
        .of_kind("open")
        .into_iter()
        .find(|e| str_of(e, "path").starts_with("/tmp/ddd"))
        .expect("the long open");
    assert_eq!(truncated_open["truncated"], true);
    assert!(str_of(truncated_open, "path").len() < long_path.len());
    let exec = watched
        .of_kind("exec")
        .into_iter()
        .find(|e| e["comm"] == "sh" && e["ret"] == 0)
        .expect("the exec of sh");
    assert_eq!(exec["truncated"], true);
}

#[test]
fn a_full_ring_buffer_is_counted_and_reported() {
    let probe = probe();
    let files = tempfile::tempdir().expect("tempdir");
    let watched = watch_options(
        &["--ring-buffer-size", "4096"],
        &[
            probe.to_str().unwrap(),
            "open-many",
            files.path().to_str().unwrap(),
            "20000",
        ],
    );
    assert_eq!(watched.code(), 0);
    assert!(
        watched
            .stderr
            .contains("events were lost because the ring buffer was full"),
        "stderr: {}",
        watched.stderr
    );
    assert!(watched.events.len() < 20000);
}

#[test]
fn without_root_it_refuses_with_a_clear_message() {
    require_root();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(agentwatch())
    .args(["run", "--", "true"]);
    let output = output_with_timeout(&mut cmd);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `agentwatch run ARGS` as a user types it: no --events.
fn run_plain(args: &[&str]) -> (Option<i32>, String) {
    require_root();
    let output = output_with_timeout(Command::new(agentwatch()).arg("run").args(args));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn stderr_carries_only_the_commands_lines_and_agentwatchs_own_unless_events_go_there() {
    let command = [
        "--",
        "sh",
        "-c",
        "cat /etc/hostname >/dev/null; echo own-line >&2",
    ];
    let (code, stderr) = run_plain(&command);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.lines().any(|line| line == "own-line"), "{stderr}");
    for line in stderr.lines().filter(|line| *line != "own-line") {
        assert!(
            line.starts_with("agentwatch: "),
            "not agentwatch's own line: {line:?}"
        );
    }

    let (code, stderr) = run_plain(&[&["--events", "-"], &command[..]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    let events: Vec<Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("event JSON"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "open" && e["resolved"] == "/etc/hostname"),
        "{stderr}"
    );
}

#[test]
fn its_own_failures_exit_125_and_a_command_that_cannot_run_126_or_127() {
    let (code, stderr) = run_plain(&["--no-such-option", "--", "true"]);
    assert_eq!(code, Some(125), "{stderr}");
    let (code, stderr) = run_plain(&["--policy", "/nonexistent/policy.toml", "--", "true"]);
    assert_eq!(code, Some(125), "{stderr}");
    assert!(stderr.contains("/nonexistent/policy.toml"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("script");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let (code, stderr) = run_plain(&["--", not_executable.to_str().unwrap()]);
    assert_eq!(code, Some(126), "{stderr}");
    let (code, _) = run_plain(&["--", "/nonexistent/command"]);
    assert_eq!(code, Some(127));
}

#[test]
fn a_nameserver_that_never_answers_does_not_hold_the_command_back_and_run_says_so() {
    // One lookup here takes 5 x 30 s (glibc's largest timeout and attempts);
    // run waits at most 300 ms for the catalog's hosts and says so. The bound
    // below is half of one lookup, so it only fails if run waits on the
    // resolver, never because a machine (or a test VM) is slow: speed is
    // `cargo xtask bench`'s job.
    let lab = DnsLab::with_resolver(
        &[],
        &Resolver {
            nameserver: Some("127.0.0.8"),
            options: &["timeout:30", "attempts:5"],
            hosts: None,
        },
    );
    let _silent = lab.bind_udp("127.0.0.8:53");
    let started = Instant::now();
    let watched = watch_with(&lab.netns.prefix(), &[], &["true"]);
    let took = started.elapsed();
    assert_eq!(watched.code(), 0, "{}", watched.stderr);
    assert!(
        took < Duration::from_secs(75),
        "run -- true took {took:?}: it waited on the resolver"
    );
    assert!(
        watched
            .stderr
            .contains("the system resolver gave no address for the catalog's hosts"),
        "{}",
        watched.stderr
    );
}

#[test]
fn a_full_screen_program_under_run_has_its_terminal_to_itself() {
    let lab = Lab::new();
    // A credential read (no alert: no call follows), a terminal size, a
    // screen cleared and drawn: what reaches the screen is the command's.
    let script = "cat ~/.railway/config.json >/dev/null\n\
                  test -t 0 && test -t 1 && test -t 2 && echo on-a-terminal\n\
                  stty size\n\
                  printf '\\033[2J\\033[Hdrawn'";
    let (status, screen) = output_on_terminal(&mut lab.run_command(&[], script), 30, 100);
    let screen = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{status:?}: {screen:?}");
    // agentwatch may say something of its own as it starts (another
    // instance's programs, a silent resolver): whole lines, before the
    // command's first byte.
    let mut drawn = screen.as_ref();
    while let Some(rest) = drawn
        .strip_prefix("agentwatch: ")
        .and_then(|line| line.split_once("\r\n"))
    {
        drawn = rest.1;
    }
    assert_eq!(
        drawn, "on-a-terminal\r\n30 100\r\n\u{1b}[2J\u{1b}[Hdrawn",
        "{screen:?}"
    );
}
