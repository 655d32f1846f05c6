//! The core capability on the real kernel: a session that has read a
//! credential and then calls its provider's infrastructure API is stopped
//! in the kernel, and everything else goes through.
//!
//! Each test builds a lab: a network namespace whose dnsmasq answers the
//! catalog's names with loopback addresses, listeners on those addresses
//! that count connections, and a temporary home holding fake credentials.

use agentwatch_tests::{
    Lab, Watched, assert_allowed, assert_blocked, expect_event, probe, watch_with, write,
};
use serde_json::Value;

const RAILWAY: &str = "127.0.0.2:443";
const EC2: &str = "127.0.0.3:443";
const S3_BUCKET: &str = "127.0.0.5:443";
const EXAMPLE: &str = "127.0.0.9:443";
const EPERM: i64 = -1;

fn alerts(watched: &Watched) -> Vec<&Value> {
    watched.of_kind("alert")
}

#[test]
fn reading_the_railway_token_then_calling_railway_is_blocked_and_alerted() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        "cat ~/.railway/config.json >/dev/null\n$PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "block");
    assert_eq!(watched.code(), 1, "aw-probe saw the failure");

    let alert = expect_event!(watched.events, "alert", {
        "action" => "block",
        "host" => "backboard.railway.app",
        "provider" => "railway",
        "addr" => "127.0.0.2",
        "port" => 443,
        "comm" => "aw-probe",
        "credential/class" => "railway",
        "credential/source" => lab.railway_config(),
        "credential/comm" => "cat",
    });
    let credential = &alert["credential"];
    assert!(
        credential["at"].is_string(),
        "when the credential was read: {credential}"
    );
    // The ancestry names the probe, the shell that ran it, with argv.
    let ancestry = alert["ancestry"].as_array().expect("ancestry");
    assert_eq!(ancestry[0]["pid"], alert["pid"]);
    assert_eq!(ancestry[0]["argv"][1], "connect-host");
    assert!(ancestry.iter().any(|a| a["comm"] == "sh"), "{ancestry:?}");
    // The open that tainted the session names the credential it read.
    expect_event!(watched.events, "open", {
        "resolved" => lab.railway_config(),
        "credentials/0" => "railway",
    });
    // The connect event carries the name DNS answered.
    expect_event!(watched.events, "connect", {
        "addr" => "127.0.0.2",
        "host" => "backboard.railway.app",
        "ret" => EPERM,
    });
}

#[test]
fn under_kill_the_session_dies() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &["--mode", "kill"],
        &[],
        "cat ~/.railway/config.json >/dev/null\n$PROBE connect-host backboard.railway.app:443\necho survived",
    );
    assert_eq!(watched.code(), 128 + 9, "stderr:\n{}", watched.stderr);
    assert!(!watched.stdout.contains("survived"), "{}", watched.stdout);
    assert_eq!(railway.connections(), 0);
    assert_eq!(alerts(&watched)[0]["action"], "kill");
    assert!(
        watched.stderr.contains("agentwatch: KILLED"),
        "{}",
        watched.stderr
    );
}

#[test]
fn without_a_credential_read_the_call_is_allowed() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(&[], &[], "$PROBE connect-host backboard.railway.app:443");
    assert_allowed(&watched, &railway, "no read");
}

#[test]
fn a_tainted_session_may_still_call_other_hosts() {
    let lab = Lab::new();
    let example = lab.listen(EXAMPLE);
    let watched = lab.run(
        &[],
        &[],
        "cat ~/.railway/config.json >/dev/null\n$PROBE connect-host api.example.org:443",
    );
    assert_allowed(&watched, &example, "non-infrastructure host");
}

#[test]
fn symlinks_hardlinks_relative_paths_and_bind_mounts_are_the_same_credential() {
    let lab = Lab::new();
    std::os::unix::fs::symlink(lab.railway_config(), lab.path("innocent.json")).unwrap();
    std::fs::hard_link(lab.railway_config(), lab.path("notes.txt")).unwrap();
    for (what, read) in [
        ("symlink", "cat ~/innocent.json"),
        ("hardlink", "cat ~/notes.txt"),
        ("relative path", "cd ~/.railway && cat ./config.json"),
        (
            "/proc/self/fd",
            "exec 3<~/.railway/config.json; cat /proc/self/fd/3",
        ),
        // A private mount namespace: the bind mount goes away with it.
        (
            "bind mount",
            "mkdir -p ~/mnt && unshare --mount --propagation private \\\n             sh -c 'mount --bind ~/.railway ~/mnt && cat ~/mnt/config.json'",
        ),
    ] {
        let railway = lab.listen(RAILWAY);
        let watched = lab.run(
            &[],
            &[],
            &format!("{read} >/dev/null\n$PROBE connect-host backboard.railway.app:443"),
        );
        assert_blocked(&watched, &railway, what);
    }
}

#[test]
fn a_credential_file_created_during_the_session_counts() {
    let lab = Lab::new();
    std::fs::remove_dir_all(lab.path(".railway")).unwrap();
    let railway = lab.listen(RAILWAY);
    // Like `railway login` run by the agent itself.
    let watched = lab.run(
        &[],
        &[],
        "mkdir ~/.railway && echo '{\"token\":\"new\"}' > ~/.railway/config.json\n\
         sleep 0.5\ncat ~/.railway/config.json >/dev/null\n\
         $PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "credential created after start");
}

#[test]
fn a_credential_opened_by_its_file_handle_counts() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        "$PROBE open-by-handle ~/.railway/config.json >/dev/null
\
         $PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "open_by_handle_at");
    expect_event!(watched.events, "open", {
        "syscall" => "open_by_handle_at",
        "resolved" => lab.railway_config(),
        "credentials/0" => "railway",
    });
}

#[test]
fn a_credential_opened_through_io_uring_counts_and_other_files_do_not() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let clean = lab.run(
        &[],
        &[],
        "$PROBE uring-open /etc/hostname >/dev/null\n\
         $PROBE connect-host backboard.railway.app:443",
    );
    assert_allowed(&clean, &railway, "an io_uring open of a plain file");
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        "$PROBE uring-open ~/.railway/config.json >/dev/null\n\
         $PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "IORING_OP_OPENAT");
    expect_event!(watched.events, "open", {
        "syscall" => "io_uring",
        "resolved" => lab.railway_config(),
        "credentials/0" => "railway",
    });
}

#[test]
fn an_io_uring_open_into_a_direct_descriptor_counts_as_every_credential() {
    // The file cannot be known by a descriptor: fail closed, and say so.
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        "$PROBE uring-open-direct /etc/hostname >/dev/null\n\
         $PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "a direct descriptor");
    assert!(
        watched
            .stderr
            .contains("opened through io_uring into direct descriptors could not be known"),
        "{}",
        watched.stderr
    );
}

#[test]
fn what_the_command_leaves_running_is_still_watched() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    // The command returns at once; what it started reads and calls later.
    let watched = lab.run(
        &[],
        &[],
        "setsid -f sh -c \"sleep 1; cat ~/.railway/config.json >/dev/null; \
         $PROBE connect-host backboard.railway.app:443\"",
    );
    assert_blocked(&watched, &railway, "a process left running");
    assert_eq!(watched.code(), 0, "the command's own status");
    assert!(
        watched
            .stderr
            .contains("the command exited; still watching what it left running"),
        "{}",
        watched.stderr
    );
}

#[test]
fn a_credential_inherited_as_an_open_descriptor_counts() {
    // `agentwatch run -- sh -c 'cat <&3' 3<~/.railway/config.json`: the
    // session's first process never opens the file, it holds it already.
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let mut prefix = lab.dns.prefix_with_home(lab.home.path(), &[]);
    prefix.extend(
        [
            "sh",
            "-c",
            "exec 3<\"$0\"; exec \"$@\"",
            &lab.railway_config(),
        ]
        .map(String::from),
    );
    let script = format!(
        "cat <&3 >/dev/null\n{} connect-host backboard.railway.app:443",
        probe().display()
    );
    let watched = watch_with(&prefix, &[], &["sh", "-c", &script]);
    assert_blocked(&watched, &railway, "inherited descriptor");
    expect_event!(watched.events, "open", {
        "syscall" => "inherited",
        "resolved" => lab.railway_config(),
        "ret" => 3,
        "credentials/0" => "railway",
    });
    expect_event!(watched.events, "alert", {
        "credential/source" => lab.railway_config(),
    });
}

#[test]
fn a_workspace_secret_found_after_the_command_started_counts() {
    let lab = Lab::new();
    for group in 0..10 {
        for dir in 0..10 {
            std::fs::create_dir_all(lab.path(&format!("big/g{group}/d{dir}"))).unwrap();
        }
    }
    // A state file counts for the secret it holds (built here, so this
    // source holds none).
    write(
        &lab.path("big/g9/d9/infra/terraform.tfstate"),
        &format!(
            "{{\"resources\": [{{\"attributes\": {{\"password\": \"{}{}\"}}}}]}}\n",
            "Vq8#mR2x", "Lp4!tZ9wKc7s"
        ),
    );
    let railway = lab.listen(RAILWAY);
    // The start waits for none of the walk: all of it happens while the
    // command runs, and what it finds still counts.
    let watched = lab.run(
        &["--workspace-wait", "0"],
        &[],
        "sleep 6\ncat big/g9/d9/infra/terraform.tfstate >/dev/null\n\
         $PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(
        &watched,
        &railway,
        "workspace secret found by the background walk",
    );
    expect_event!(watched.events, "alert", { "credential/class" => "workspace" });
}

#[test]
fn a_siblings_read_taints_the_whole_session() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    // cat and the probe are siblings: neither is the other's ancestor.
    let watched = lab.run(
        &[],
        &[],
        "(cat ~/.railway/config.json >/dev/null) &\nwait\n$PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "sibling");
}

#[test]
fn a_session_started_with_a_token_in_its_environment_is_blocked() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &["RAILWAY_TOKEN=fake-token"],
        "$PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "RAILWAY_TOKEN");
    let exec = watched
        .of_kind("exec")
        .into_iter()
        .find(|exec| exec["ret"] == 0)
        .expect("the shell's exec");
    assert_eq!(exec["credentials"][0], "railway", "{exec}");
    let credential = &alerts(&watched)[0]["credential"];
    assert!(
        credential["source"]
            .as_str()
            .unwrap()
            .starts_with("environment"),
        "{credential}"
    );
}

#[test]
fn reading_another_processs_environment_is_a_credential_read() {
    let lab = Lab::new();
    // A process outside any session that holds the token, started before
    // agentwatch, like an exported variable in the user's other shell.
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .env("RAILWAY_TOKEN", "fake-token")
        .spawn()
        .expect("sleep");
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        &format!(
            "cat /proc/{}/environ >/dev/null\n$PROBE connect-host backboard.railway.app:443",
            holder.id()
        ),
    );
    holder.kill().expect("ending the sleep we started");
    let _ = holder.wait();
    assert_blocked(&watched, &railway, "/proc/PID/environ");
}

#[test]
fn aws_keys_do_not_count_against_railway_unless_strict() {
    let lab = Lab::new();
    let script = "cat ~/.aws/credentials >/dev/null\n$PROBE connect-host backboard.railway.app:443";
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(&[], &[], script);
    assert_allowed(
        &watched,
        &railway,
        "AWS credential, Railway host, default scope",
    );
    drop(railway);

    let strict = lab.path("strict.toml");
    write(&strict, "strict = true\n");
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(&["--policy", strict.to_str().unwrap()], &[], script);
    assert_blocked(&watched, &railway, "AWS credential, Railway host, strict");
}

#[test]
fn aws_hosts_known_only_from_dns_are_blocked_including_through_a_cname() {
    let lab = Lab::new();
    for (what, listen, host) in [
        ("suffix", EC2, "ec2.us-east-1.amazonaws.com"),
        ("case and trailing dot", EC2, "EC2.US-East-1.AmazonAWS.com."),
        ("cname", S3_BUCKET, "s3.eu-west-1.amazonaws.com"),
    ] {
        let listener = lab.listen(listen);
        let watched = lab.run(
            &[],
            &[],
            &format!("cat ~/.aws/credentials >/dev/null\n$PROBE connect-host {host}:443"),
        );
        assert_blocked(&watched, &listener, what);
        assert_eq!(alerts(&watched)[0]["provider"], "aws", "{what}");
    }
}

#[test]
fn an_allow_rule_lets_one_credential_call_one_host() {
    let lab = Lab::new();
    let policy = lab.path("allow.toml");
    write(
        &policy,
        "[[allow]]\nhost = \"backboard.railway.app\"\ncredential = \"railway\"\ncomment = \"deploys\"\n",
    );
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &["--policy", policy.to_str().unwrap()],
        &[],
        "cat ~/.railway/config.json >/dev/null\n$PROBE connect-host backboard.railway.app:443",
    );
    assert_allowed(&watched, &railway, "allowed by rule");
    drop(railway);
    // The rule is for Railway's credential only: AWS keys plus strict still block.
    write(
        &policy,
        "strict = true\n[[allow]]\nhost = \"backboard.railway.app\"\ncredential = \"railway\"\n",
    );
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &["--policy", policy.to_str().unwrap()],
        &[],
        "cat ~/.aws/credentials >/dev/null\n$PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "another credential than the rule's");
}

#[test]
fn a_token_found_in_an_unlisted_file_taints_the_session() {
    let lab = Lab::new();
    // Like the incident: a token in a file that no catalog names. Built at
    // run time so this source does not look like it holds a secret.
    let token = format!(
        "{}-{}-4{}-a{}-{}",
        "6f1c2e9d", "3b7a", "d21", "9c4", "0e8b5f7a2c61"
    );
    write(
        &lab.path("ops/deploy-notes.txt"),
        &format!("old deploy\nRAILWAY_TOKEN={token}\n"),
    );
    let railway = lab.listen(RAILWAY);
    // The scan runs in user space off the hot path; the agent takes a
    // moment to act on what it read, as agents do.
    let watched = lab.run(
        &[],
        &[],
        "cat ops/deploy-notes.txt >/dev/null\nsleep 1\n$PROBE connect-host backboard.railway.app:443",
    );
    assert_blocked(&watched, &railway, "token found by content");
    let credential = &alerts(&watched)[0]["credential"];
    assert!(
        credential["source"]
            .as_str()
            .unwrap()
            .ends_with("ops/deploy-notes.txt"),
        "{credential}"
    );
}

#[test]
fn a_process_outside_the_session_is_untouched() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let ready = lab.path("tainted");
    // While a tainted session runs, an unwatched process reads the same
    // credential and calls the same host.
    let outside = std::thread::scope(|scope| {
        let outside = scope.spawn(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !ready.exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the session never got tainted"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::process::Command::new("ip")
                .args(["netns", "exec", &lab.dns.netns.name])
                .arg(probe())
                .args(["read-connect", &lab.railway_config(), RAILWAY])
                .output()
                .expect("aw-probe")
        });
        let watched = lab.run(
            &[],
            &[],
            &format!(
                "cat ~/.railway/config.json >/dev/null\ntouch {}\nsleep 2\n$PROBE connect {RAILWAY}",
                ready.display()
            ),
        );
        assert_eq!(watched.results(), [EPERM], "the session itself is blocked");
        outside.join().expect("outside thread")
    });
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout).trim(),
        "0",
        "the outside call succeeds"
    );
    assert_eq!(railway.connections(), 1, "only the outside call arrived");
}

#[test]
fn reading_and_connecting_at_once_never_wins_the_race() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        &format!("$PROBE read-connect {} {RAILWAY}", lab.railway_config()),
    );
    assert_blocked(&watched, &railway, "read and connect back to back");
}
