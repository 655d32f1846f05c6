//! A connection judged by the name it asks for, at its first write, on the
//! real kernel: the TLS server name, a plaintext request's Host, a proxy's
//! CONNECT target. A refused write fails with EACCES and the listener
//! receives nothing; the user's own app on an address shared with an API
//! host, and a tainted session that only resolves names, pass.

use agentwatch_tests::{Lab, Listener, Watched, expect_event, write};

const EACCES: i64 = -13;
const EPERM: i64 = -1;
/// Where dnsmasq puts `api.vercel.com` and the user's `myapp.vercel.app`,
/// as a CDN would: one address.
const VERCEL_POOL: &str = "127.0.0.7:443";
/// An address no DNS answer gave (what `curl --resolve` or a hosts file
/// points a name at).
const UNLISTED: &str = "127.0.0.8:443";
const UNLISTED_HTTP: &str = "127.0.0.8:80";
const RAILWAY: &str = "127.0.0.2:443";
/// A forward proxy outside the session (here only a listener).
const PROXY: &str = "127.0.0.1:3128";
const READ_RAILWAY: &str = "cat ~/.railway/config.json >/dev/null";

fn vercel_lab() -> Lab {
    let lab = Lab::with_records(&[
        "--host-record=api.vercel.com,127.0.0.7",
        "--host-record=myapp.vercel.app,127.0.0.7",
    ]);
    write(
        &lab.path(".local/share/com.vercel.cli/auth.json"),
        r#"{"token":"fake"}"#,
    );
    lab
}

fn assert_results(watched: &Watched, expected: &[i64], what: &str) -> Vec<i64> {
    let results = watched.results();
    assert_eq!(results.len(), expected.len(), "{what}: {}", watched.stderr);
    for (i, (got, want)) in results.iter().zip(expected).enumerate() {
        // 1 stands for "some bytes were written".
        let ok = if *want == 1 { *got > 0 } else { got == want };
        assert!(
            ok,
            "{what}: result {i} is {got}, expected {want}; stderr:\n{}",
            watched.stderr
        );
    }
    results
}

fn assert_received(listener: &Listener, bytes: usize, what: &str) {
    assert_eq!(
        listener.bytes(),
        bytes,
        "{what}: bytes that reached the listener"
    );
}

#[test]
fn the_users_app_on_a_shared_address_passes_and_the_api_host_is_refused_by_its_name() {
    let lab = vercel_lab();
    let pool = lab.listen(VERCEL_POOL);
    let watched = lab.run(
        &[],
        &[],
        "cat ~/.local/share/com.vercel.cli/auth.json >/dev/null\n\
         getent hosts myapp.vercel.app >/dev/null\n\
         $PROBE tls 127.0.0.7:443 myapp.vercel.app\n\
         $PROBE tls 127.0.0.7:443 api.vercel.com",
    );
    let results = assert_results(&watched, &[1, EACCES], "shared address");
    // The app's ClientHello arrived whole; the API's, not a byte.
    assert_received(&pool, results[0] as usize, "shared address");
    assert_eq!(pool.connections(), 2, "both connects went through");
    expect_event!(watched.events, "alert", {
        "action" => "block",
        "host" => "api.vercel.com",
        "learned" => "sni",
        "provider" => "vercel",
        "addr" => "127.0.0.7",
        "port" => 443,
        "comm" => "aw-probe",
        "credential/class" => "vercel",
    });
    assert_eq!(watched.of_kind("alert").len(), 1, "{:#?}", watched.events);
    expect_event!(watched.events, "name", {
        "host" => "myapp.vercel.app",
        "learned" => "sni",
        "judgment" => "harmless",
        "addr" => "127.0.0.7",
    });
    expect_event!(watched.events, "name", {
        "host" => "api.vercel.com",
        "learned" => "sni",
        "judgment" => "infrastructure",
        "provider" => "vercel",
    });
    assert!(
        watched.stderr.contains("agentwatch: BLOCKED"),
        "{}",
        watched.stderr
    );
}

#[test]
fn the_api_host_is_refused_by_its_name_at_an_address_dns_never_gave() {
    let lab = Lab::new();
    let https = lab.listen(UNLISTED);
    let http = lab.listen(UNLISTED_HTTP);
    let watched = lab.run(
        &[],
        &[],
        &format!(
            "{READ_RAILWAY}\n\
             $PROBE tls {UNLISTED} backboard.railway.app\n\
             $PROBE http {UNLISTED_HTTP} backboard.railway.app"
        ),
    );
    // aw-probe's own ClientHello: a client whose TLS is not probed, so its
    // SNI decides (a probed libssl's requests are judged at SSL_write, in
    // tests/operations.rs).
    assert_results(&watched, &[EACCES, EACCES], "by name");
    assert_received(&https, 0, "TLS");
    assert_received(&http, 0, "plaintext");
    expect_event!(watched.events, "alert", {
        "host" => "backboard.railway.app",
        "learned" => "sni",
        "addr" => "127.0.0.8",
        "comm" => "aw-probe",
    });
    expect_event!(watched.events, "alert", {
        "host" => "backboard.railway.app",
        "learned" => "host",
        "port" => 80,
    });
}

#[test]
fn a_proxy_is_asked_for_the_api_in_vain_and_for_other_hosts_freely() {
    let lab = Lab::new();
    let proxy = lab.listen(PROXY);
    let watched = lab.run(
        &[],
        &[],
        &format!(
            "{READ_RAILWAY}\n\
             HTTPS_PROXY=http://{PROXY} curl -s --max-time 2 https://backboard.railway.app/ \
             >/dev/null 2>&1; echo $?\n\
             http_proxy=http://{PROXY} curl -s --max-time 2 -X POST http://backboard.railway.app/ \
             >/dev/null 2>&1; echo $?\n\
             $PROBE proxy-connect {PROXY} api.example.org:443"
        ),
    );
    let results = watched.results();
    assert_eq!(results.len(), 3, "{}", watched.stderr);
    assert!(
        results[0] != 0 && results[0] != 28 && results[1] != 0 && results[1] != 28,
        "curl through the proxy must fail at once, not time out: {results:?}"
    );
    assert!(
        results[2] > 0,
        "another host through the proxy: {results:?}"
    );
    assert_received(&proxy, results[2] as usize, "proxy");
    expect_event!(watched.events, "alert", {
        "host" => "backboard.railway.app",
        "learned" => "connect-proxy",
        "port" => 3128,
        "comm" => "curl",
    });
    // A plain HTTP proxy is sent the absolute URI.
    expect_event!(watched.events, "alert", {
        "host" => "backboard.railway.app",
        "learned" => "host",
        "port" => 3128,
    });
    expect_event!(watched.events, "name", {
        "host" => "api.example.org",
        "learned" => "connect-proxy",
        "judgment" => "harmless",
    });
}

#[test]
fn a_connection_opened_before_the_credential_read_is_refused_after_it() {
    let lab = Lab::new();
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        "$PROBE keep-alive 127.0.0.2:443 backboard.railway.app ~/.railway/config.json",
    );
    let results = assert_results(&watched, &[1, EACCES], "keep-alive");
    assert_received(&railway, results[0] as usize, "keep-alive");
    expect_event!(watched.events, "alert", {
        "host" => "backboard.railway.app",
        "learned" => "host",
        "credential/class" => "railway",
    });
}

#[test]
fn under_kill_a_refused_write_kills_the_session() {
    let lab = Lab::new();
    let https = lab.listen(UNLISTED);
    let watched = lab.run(
        &["--mode", "kill"],
        &[],
        &format!("{READ_RAILWAY}\n$PROBE tls {UNLISTED} backboard.railway.app\necho survived"),
    );
    assert_eq!(watched.code(), 128 + 9, "stderr:\n{}", watched.stderr);
    assert!(!watched.stdout.contains("survived"), "{}", watched.stdout);
    assert_received(&https, 0, "kill");
    expect_event!(watched.events, "alert", {"action" => "kill", "learned" => "sni"});
}

#[test]
fn a_tainted_session_resolving_names_is_neither_alerted_nor_killed() {
    // Several answers: glibc sorts them with a UDP connect() to each.
    let lab = Lab::with_records(&[
        "--host-record=backboard.railway.app,127.0.0.12",
        "--host-record=backboard.railway.app,127.0.0.13",
    ]);
    let watched = lab.run(
        &["--mode", "kill"],
        &[],
        &format!("{READ_RAILWAY}\ngetent ahosts backboard.railway.app >/dev/null; echo $?"),
    );
    assert_eq!(watched.code(), 0, "stderr:\n{}", watched.stderr);
    assert_eq!(watched.results(), [0], "{}", watched.stderr);
    assert!(
        watched.of_kind("alert").is_empty(),
        "{:#?}",
        watched.of_kind("alert")
    );
}

#[test]
fn a_datagram_to_the_api_is_refused_when_sent() {
    let lab = Lab::new();
    let watched = lab.run(
        &[],
        &[],
        &format!("$PROBE udp {RAILWAY}\n{READ_RAILWAY}\n$PROBE udp {RAILWAY}"),
    );
    assert_results(&watched, &[1, EPERM], "QUIC-like datagram");
    expect_event!(watched.events, "alert", {
        "host" => "backboard.railway.app",
        "learned" => "dns",
        "port" => 443,
    });
}

#[test]
fn a_session_may_not_open_an_mptcp_socket_which_could_not_be_inspected() {
    let outside = std::process::Command::new(agentwatch_tests::probe())
        .arg("mptcp")
        .output()
        .expect("aw-probe");
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout).trim(),
        "0",
        "this kernel must support MPTCP for the test to mean anything"
    );
    let lab = Lab::new();
    let watched = lab.run(&[], &[], "$PROBE mptcp");
    assert_eq!(watched.results(), [EPERM], "{}", watched.stderr);
}

#[test]
fn a_connect_that_could_not_be_watched_is_judged_by_address_at_connect() {
    let lab = vercel_lab();
    let pool = lab.listen(VERCEL_POOL);
    // Room for one watched socket, held by a connection that never writes.
    let watched = lab.run(
        &["--max-sockets", "1"],
        &[],
        "cat ~/.local/share/com.vercel.cli/auth.json >/dev/null\n\
         getent hosts myapp.vercel.app >/dev/null\n\
         $PROBE second-socket 127.0.0.7:443 api.vercel.com",
    );
    assert_results(&watched, &[EPERM], "unwatchable connect");
    assert_received(&pool, 0, "unwatchable connect");
    assert_eq!(pool.connections(), 1, "only the held connection");
    expect_event!(watched.events, "alert", {
        "host" => "api.vercel.com",
        "learned" => "dns",
        "action" => "block",
        "comm" => "aw-probe",
    });
}

#[test]
fn fast_open_data_in_a_syn_is_judged_by_address() {
    let lab = vercel_lab();
    // The namespace's TCP accepts Fast Open as client and server.
    agentwatch_tests::run_ok(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &lab.dns.netns.name,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_fastopen=3",
    ]));
    let watched = lab.run(
        &[],
        &[],
        "getent hosts myapp.vercel.app >/dev/null\n\
         $PROBE fast-open 127.0.0.7:8443 api.vercel.com\n\
         cat ~/.local/share/com.vercel.cli/auth.json >/dev/null\n\
         $PROBE fast-open 127.0.0.7:8444 api.vercel.com",
    );
    // Untainted, the SYN's request arrives; tainted, not a byte of it.
    assert_results(&watched, &[1, 0], "fast open");
    expect_event!(watched.events, "alert", {
        "host" => "api.vercel.com",
        "learned" => "dns",
        "port" => 8444,
    });
}

#[test]
fn check_names_other_programs_that_own_sk_msg() {
    use std::{
        process::{Command, Stdio},
        time::{Duration, Instant},
    };
    // Another agentwatch's sockhash is as foreign to this one as Cilium's.
    let mut other = Command::new(agentwatch_tests::agentwatch())
        .args(["run", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting agentwatch run");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut report = String::new();
    while Instant::now() < deadline {
        let check = agentwatch_tests::output_with_timeout(
            Command::new(agentwatch_tests::agentwatch()).arg("check"),
        );
        report = String::from_utf8_lossy(&check.stdout).into_owned();
        if report.contains("other sk_msg programs") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on the pid of the child started above.
    unsafe { libc::kill(other.id() as i32, libc::SIGTERM) };
    let _ = other.wait();
    let line = report
        .lines()
        .find(|line| line.contains("other sk_msg programs"))
        .unwrap_or_else(|| panic!("check does not report the other sk_msg program:\n{report}"));
    assert!(line.starts_with("warn"), "{line}");
    assert!(line.contains("first_write (id "), "{line}");
}
