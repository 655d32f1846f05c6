//! Judging the operation, not only the host, on the real kernel: after a
//! session reads the Railway token, its GraphQL queries reach a local TLS
//! API while a `volumeDelete` mutation never does (it is read at `SSL_write`
//! before encryption); HTTP `DELETE` is stopped where `GET` passes; a
//! destructive command is stopped at exec while a read-only one runs; a
//! client whose TLS cannot be read falls back to the session's action; and
//! processes outside the session are untouched.

use std::{process::Command, thread, time::Duration};

use agentwatch_tests::{
    Lab, TlsApi, expect_event, go_graphql_client, output_with_timeout, python_graphql, write,
};
use serde_json::Value;

const RAILWAY: &str = "127.0.0.2:443";
const VERCEL: &str = "127.0.0.7:443";
const EPERM: i64 = -1;

/// `curl -k` posting a GraphQL document to Railway's API, then the exit
/// status as `NAME=STATUS`.
fn graphql(name: &str, document: &str) -> String {
    format!(
        "curl -sk -o /dev/null https://backboard.railway.app/graphql/v2 \
         -H 'Content-Type: application/json' -d '{{\"query\":\"{document}\"}}'; echo {name}=$?\n"
    )
}

fn lab_with_client() -> Lab {
    let lab = Lab::new();
    lab.write_graphql_client();
    lab
}

const QUERY: &str = "query { deployments { edges { node { id } } } }";
const MUTATION: &str = "mutation { volumeDelete(volumeId: \"v-1\") }";
/// The mutation inside curl's `-d '{"query":"..."}'` (JSON-escaped quotes).
const CURL_MUTATION: &str = "mutation { volumeDelete(volumeId: \\\\\"v-1\\\\\") }";

fn bodies(api: &TlsApi) -> Vec<String> {
    api.requests()
        .iter()
        .map(|request| request["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn status(stdout: &str, name: &str) -> Option<i32> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .and_then(|code| code.trim().parse().ok())
}

#[test]
fn a_graphql_query_reaches_railway_and_the_volume_deletion_never_does() {
    let lab = lab_with_client();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    let script = format!(
        "cat ~/.railway/config.json >/dev/null\n{}{}",
        python_graphql("query", QUERY),
        python_graphql("mutation", MUTATION)
    );
    let watched = lab.run(&[], &[], &script);
    let bodies = bodies(&api);
    assert_eq!(
        bodies.len(),
        1,
        "only the query arrived: {bodies:?}\n{}\n{}\n{:?}",
        watched.stdout,
        watched.stderr,
        watched.of_kind("operation")
    );
    assert!(bodies[0].contains("deployments"), "{bodies:?}");
    assert_eq!(
        status(&watched.stdout, "query"),
        Some(0),
        "{}",
        watched.stdout
    );
    assert_ne!(
        status(&watched.stdout, "mutation"),
        Some(0),
        "curl saw its request refused: {}",
        watched.stdout
    );
    expect_event!(watched.events, "operation", {
        "seen" => "tls",
        "host" => "backboard.railway.app",
        "operation/kind" => "graphql-query",
        "operation/class" => "reads",
        "decision" => "pass",
    });
    expect_event!(watched.events, "operation", {
        "operation/name" => "volumeDelete",
        "operation/class" => "destructive",
        "decision" => "block",
    });
    let alert = expect_event!(watched.events, "alert", {
        "action" => "block",
        "host" => "backboard.railway.app",
        "provider" => "railway",
        "comm" => "python3",
        "credential/source" => lab.railway_config(),
        "operation/kind" => "graphql-mutation",
        "operation/name" => "volumeDelete",
        "seen" => "tls",
    });
    assert_eq!(alert["operation"]["provider"]["name"], "Railway");
    // The query raised no alert: only the mutation did.
    assert_eq!(
        watched.of_kind("alert").len(),
        1,
        "{:?}",
        watched.of_kind("alert")
    );
    assert!(
        watched.stderr.contains("volumeDelete"),
        "the alert line names the operation: {}",
        watched.stderr
    );
}

#[test]
fn a_second_request_on_one_http2_connection_is_judged_like_the_first() {
    let lab = Lab::new();
    let api = TlsApi::start_http2(&lab.dns.netns, RAILWAY);
    // One curl, one connection: the mutation is the connection's second
    // stream, and names its host by the first one's HPACK entry. Its body
    // comes from a file, so curl's argv does not show it.
    let body = lab.path("mutation.json");
    write(
        &body,
        &format!("{{\"query\":\"{}\"}}", MUTATION.replace('"', "\\\"")),
    );
    let post = |data: &str| {
        format!(
            "-sk --http2 -o /dev/null https://backboard.railway.app/graphql/v2 \
             -H 'Content-Type: application/json' -d {data}"
        )
    };
    let script = format!(
        "cat ~/.railway/config.json >/dev/null\ncurl {} --next {}; echo curl=$?\n",
        post(&format!("'{{\"query\":\"{QUERY}\"}}'")),
        post(&format!("@{}", body.display()))
    );
    let watched = lab.run(&[], &[], &script);
    let requests = api.requests();
    assert_eq!(
        requests.len(),
        1,
        "only the query arrived: {requests:?}\n{}\n{}\n{:?}",
        watched.stdout,
        watched.stderr,
        watched.of_kind("operation")
    );
    assert!(
        requests[0]["body"]
            .as_str()
            .unwrap()
            .contains("deployments")
    );
    assert_ne!(
        status(&watched.stdout, "curl"),
        Some(0),
        "{}",
        watched.stdout
    );
    expect_event!(watched.events, "operation", {
        "host" => "backboard.railway.app",
        "operation/kind" => "graphql-query",
        "decision" => "pass",
    });
    expect_event!(watched.events, "operation", {
        "host" => "backboard.railway.app",
        "operation/name" => "volumeDelete",
        "operation/class" => "destructive",
        "decision" => "block",
    });
}

/// A raw TLS client that writes a GraphQL query and a mutation pipelined in
/// one `SSL_write`, then prints how many responses it read.
const PIPELINING_CLIENT: &str = "import json, socket, ssl, sys
def post(document):
    body = json.dumps({'query': document}).encode()
    head = ('POST /graphql/v2 HTTP/1.1\\r\\nHost: backboard.railway.app\\r\\n'
            'Content-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(body))
    return head.encode() + body
context = ssl._create_unverified_context()
tls = context.wrap_socket(socket.create_connection(('backboard.railway.app', 443)),
    server_hostname='backboard.railway.app')
try:
    tls.sendall(post(sys.argv[1]) + post(sys.argv[2]))
    print('responses', tls.recv(65536).count(b'HTTP/1.1 200'))
    print('pipelined=0')
except OSError as error:
    print('refused:', error)
    print('pipelined=1')
";

#[test]
fn requests_pipelined_in_one_write_are_each_judged() {
    let lab = Lab::new();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    write(&lab.path("pipelined.py"), PIPELINING_CLIENT);
    let script = format!(
        "cat ~/.railway/config.json >/dev/null\npython3 \"$HOME/pipelined.py\" '{QUERY}' '{MUTATION}'\n"
    );
    let watched = lab.run(&[], &[], &script);
    let bodies = bodies(&api);
    assert!(
        bodies.is_empty(),
        "the write carrying the mutation never left: {bodies:?}\n{}\n{}",
        watched.stdout,
        watched.stderr
    );
    assert_eq!(
        status(&watched.stdout, "pipelined"),
        Some(1),
        "{}\n{}",
        watched.stdout,
        watched.stderr
    );
    expect_event!(watched.events, "operation", {
        "operation/kind" => "graphql-query",
        "decision" => "pass",
    });
    expect_event!(watched.events, "operation", {
        "operation/name" => "volumeDelete",
        "decision" => "block",
    });
}

#[test]
fn a_go_programs_requests_are_judged_in_its_crypto_tls() {
    let lab = Lab::new();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    let client = go_graphql_client();
    let call = |name: &str, document: &str| {
        format!(
            "{} https://backboard.railway.app/graphql/v2 '{document}'; echo {name}=$?\n",
            client.display()
        )
    };
    // Its first run teaches agentwatch the program (a dial that fails), as
    // its exec event arrives: every later run is stopped at its first dial
    // until its probe is on.
    let script = format!(
        "{} https://127.0.0.1:1/ '{QUERY}'; echo first=$?\nsleep 0.5\n\
         cat ~/.railway/config.json >/dev/null\n{}{}",
        client.display(),
        call("query", QUERY),
        call("mutation", MUTATION)
    );
    let watched = lab.run(&[], &[], &script);
    let bodies = bodies(&api);
    assert_eq!(
        bodies.len(),
        1,
        "the query alone arrived: {bodies:?}\n{}\n{}",
        watched.stdout,
        watched.stderr
    );
    assert!(bodies[0].contains("deployments"), "{bodies:?}");
    assert_eq!(
        status(&watched.stdout, "query"),
        Some(0),
        "{}",
        watched.stdout
    );
    // Block kills a Go writer: its goroutine may write on another thread.
    assert_eq!(
        status(&watched.stdout, "mutation"),
        Some(128 + 9),
        "{}",
        watched.stdout
    );
    expect_event!(watched.events, "operation", {
        "seen" => "tls",
        "comm" => "go_graphql",
        "operation/kind" => "graphql-query",
        "decision" => "pass",
    });
    expect_event!(watched.events, "operation", {
        "comm" => "go_graphql",
        "operation/name" => "volumeDelete",
        "decision" => "block",
    });
}

#[test]
fn under_kill_the_deleting_client_dies_before_its_request_is_encrypted() {
    let lab = lab_with_client();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    let script = format!(
        "cat ~/.railway/config.json >/dev/null\n{}echo survived",
        python_graphql("mutation", MUTATION)
    );
    let watched = lab.run(&["--mode", "kill"], &[], &script);
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    assert!(!watched.stdout.contains("survived"), "{}", watched.stdout);
    assert_eq!(watched.code(), 128 + 9, "stderr:\n{}", watched.stderr);
    expect_event!(watched.events, "alert", {
        "action" => "kill",
        "operation/name" => "volumeDelete",
        "host" => "backboard.railway.app",
    });
}

#[test]
fn curls_own_argv_shows_the_mutation_and_it_never_runs() {
    let lab = Lab::new();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    let script = format!(
        "cat ~/.railway/config.json >/dev/null\n{}{}",
        graphql("query", QUERY),
        graphql("mutation", CURL_MUTATION)
    );
    let watched = lab.run(&[], &[], &script);
    let bodies = bodies(&api);
    assert_eq!(bodies.len(), 1, "only the query arrived: {bodies:?}");
    assert_eq!(
        status(&watched.stdout, "query"),
        Some(0),
        "{}",
        watched.stdout
    );
    // Stopped at exec, before its first instruction, and killed.
    assert_eq!(
        status(&watched.stdout, "mutation"),
        Some(137),
        "{}",
        watched.stdout
    );
    expect_event!(watched.events, "operation", {
        "seen" => "exec",
        "comm" => "curl",
        "operation/name" => "volumeDelete",
        "decision" => "block",
    });
    assert!(
        watched
            .stderr
            .contains("refused GraphQL mutation volumeDelete on Railway"),
        "{}",
        watched.stderr
    );
}

#[test]
fn node_requests_are_judged_in_its_built_in_openssl() {
    let lab = Lab::new();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    // node links OpenSSL statically but exports SSL_write: the probe on the
    // node binary sees its requests.
    let client = "const https = require('https');\n\
        function post(name, query, next) {\n\
        \x20 const body = JSON.stringify({ query });\n\
        \x20 const request = https.request({ host: 'backboard.railway.app', path: '/graphql/v2', \
        method: 'POST', rejectUnauthorized: false, agent: false,\n\
        \x20   headers: { 'Content-Type': 'application/json', 'Content-Length': body.length } },\n\
        \x20   (res) => { res.resume(); res.on('end', () => { console.log(name + '=0'); next(); }); });\n\
        \x20 request.on('error', (error) => { console.log(name + '=1 ' + error.code); next(); });\n\
        \x20 request.end(body);\n\
        }\n\
        post('query', process.argv[2], () => post('mutation', process.argv[3], () => {}));\n";
    write(&lab.path("client.js"), client);
    let watched = lab.run(
        &[],
        &[],
        &format!("cat ~/.railway/config.json >/dev/null\nnode client.js '{QUERY}' '{MUTATION}'"),
    );
    let bodies = bodies(&api);
    assert_eq!(
        bodies.len(),
        1,
        "only the query arrived: {bodies:?}\n{}",
        watched.stdout
    );
    assert!(bodies[0].contains("deployments"), "{bodies:?}");
    assert!(watched.stdout.contains("query=0"), "{}", watched.stdout);
    assert!(watched.stdout.contains("mutation=1"), "{}", watched.stdout);
    expect_event!(watched.events, "alert", {
        "action" => "block",
        "comm" => "node",
        "operation/name" => "volumeDelete",
    });
}

#[test]
fn http_delete_is_stopped_where_get_passes() {
    let lab = Lab::with_records(&["--host-record=api.vercel.com,127.0.0.7"]);
    let api = TlsApi::start(&lab.dns.netns, VERCEL);
    let client = "import ssl, sys, urllib.request\n\
        context = ssl._create_unverified_context()\n\
        for method in ('GET', 'DELETE'):\n\
        \x20   request = urllib.request.Request('https://api.vercel.com/v9/projects/web', method=method)\n\
        \x20   try:\n\
        \x20       urllib.request.urlopen(request, context=context).read()\n\
        \x20       print(method, 'ok')\n\
        \x20   except Exception as error:\n\
        \x20       print(method, 'failed', error)\n";
    write(&lab.path("client.py"), client);
    let watched = lab.run(&[], &["VERCEL_TOKEN=fake"], "python3 client.py");
    let methods: Vec<Value> = api.requests().iter().map(|r| r["method"].clone()).collect();
    assert_eq!(methods, ["GET"], "only the GET arrived");
    assert!(watched.stdout.contains("GET ok"), "{}", watched.stdout);
    assert!(
        watched.stdout.contains("DELETE failed"),
        "{}",
        watched.stdout
    );
    expect_event!(watched.events, "alert", {
        "action" => "block",
        "provider" => "vercel",
        "operation/kind" => "http",
        "operation/name" => "DELETE /v9/projects/web",
        "operation/class" => "destructive",
    });
}

#[test]
fn terraform_destroy_never_runs_and_terraform_plan_does() {
    let lab = Lab::new();
    write(
        &lab.path("bin/terraform"),
        "#!/bin/sh\necho \"terraform ran: $*\"\n",
    );
    let watched = lab.run(
        &[],
        &[],
        "chmod +x bin/terraform\nbin/terraform plan\nbin/terraform destroy -auto-approve\necho destroy=$?",
    );
    assert!(
        watched.stdout.contains("terraform ran: plan"),
        "{}",
        watched.stdout
    );
    assert!(
        !watched.stdout.contains("ran: destroy"),
        "{}",
        watched.stdout
    );
    assert_eq!(
        status(&watched.stdout, "destroy"),
        Some(137),
        "{}",
        watched.stdout
    );
    assert!(
        watched.stderr.contains("refused command terraform destroy"),
        "the command was told why on its stderr: {}",
        watched.stderr
    );
    expect_event!(watched.events, "operation", {
        "seen" => "exec",
        "operation/name" => "terraform plan",
        "operation/class" => "reads",
        "decision" => "pass",
    });
    expect_event!(watched.events, "alert", {
        "action" => "block",
        "operation/kind" => "command",
        "operation/class" => "destructive",
        "seen" => "exec",
    });
}

#[test]
fn a_client_whose_tls_cannot_be_read_gets_the_sessions_action() {
    let lab = Lab::new();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    // aw-probe writes a ClientHello of its own: no probed libssl.
    let watched = lab.run(
        &[],
        &[],
        "cat ~/.railway/config.json >/dev/null\n$PROBE tls 127.0.0.2:443 backboard.railway.app",
    );
    assert!(api.requests().is_empty());
    // Refused at connect: nothing said its TLS would be read.
    assert_eq!(watched.results(), [EPERM], "{}", watched.stderr);
    let alert = expect_event!(watched.events, "alert", {
        "action" => "block",
        "host" => "backboard.railway.app",
    });
    assert!(alert.get("operation").is_none(), "{alert}");
}

/// Python opening a TLS connection to Railway's API, then writing a
/// GraphQL query on it from a forked child (whose `SSL_write` is not probed).
const FORKED_WRITER: &str = r#"import os, socket, ssl, sys
context = ssl._create_unverified_context()
host = 'backboard.railway.app'
tls = context.wrap_socket(socket.create_connection((host, 443)), server_hostname=host)
body = b'{"query":"query { deployments { edges { node { id } } } }"}'
request = (b'POST /graphql/v2 HTTP/1.1\r\nHost: ' + host.encode() +
    b'\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body) + body)
child = os.fork()
if child == 0:
    try:
        tls.sendall(request)
        print('child=0')
    except OSError as error:
        print('child=1')
        print(error)
    sys.stdout.flush()
    os._exit(0)
os.waitpid(child, 0)
"#;

#[test]
fn a_child_writing_on_its_parents_tls_connection_is_judged_by_host() {
    // The child's SSL_write is not probed (probes are per process), so
    // what it sends cannot be read: the socket's writes fall back to the
    // host's judgment, which refuses a tainted session (fail closed).
    let lab = Lab::new();
    write(&lab.path("forked.py"), FORKED_WRITER);
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    let script = "cat ~/.railway/config.json >/dev/null
python3 \"$HOME/forked.py\"";
    let watched = lab.run(&[], &[], script);
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    assert_eq!(
        status(&watched.stdout, "child"),
        Some(1),
        "the child's write was refused: {}\n{}",
        watched.stdout,
        watched.stderr
    );
    expect_event!(watched.events, "alert", {
        "action" => "block",
        "host" => "backboard.railway.app",
        "provider" => "railway",
    });
    assert!(
        watched.of_kind("operation").is_empty(),
        "nothing was read at SSL_write: {:?}",
        watched.of_kind("operation")
    );
}

/// A file of `lines` harmless log lines, then `last`: long enough that its
/// content scan takes longer than a client takes to start and call.
fn long_notes(dir: &std::path::Path, lines: usize, last: &str) -> String {
    let path = dir.join("deploy-log.txt");
    let filler = "2026-11-30 12:00:01 deploy step ok, nothing to see here\n".repeat(lines);
    write(&path, &format!("{filler}{last}\n"));
    path.display().to_string()
}

#[test]
fn a_call_made_while_what_the_session_read_is_still_scanned_waits_for_the_scan() {
    let lab = lab_with_client();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    // Outside the workspace (no walk at the start finds it), in no catalog.
    let notes = tempfile::tempdir().expect("tempdir");
    // Built at run time so this source does not look like it holds a secret.
    let token = format!(
        "{}-{}-4{}-a{}-{}",
        "6f1c2e9d", "3b7a", "d21", "9c4", "0e8b5f7a2c61"
    );
    let harmless = long_notes(notes.path(), 400_000, "all done");
    // Nothing to find: the request waits for the scan, then goes unchanged.
    let script = format!(
        "cat {harmless} >/dev/null\n{}",
        python_graphql("mutation", MUTATION)
    );
    let watched = lab.run(&[], &[], &script);
    assert_eq!(
        status(&watched.stdout, "mutation"),
        Some(0),
        "{}",
        watched.stderr
    );
    assert_eq!(bodies(&api).len(), 1, "the request arrived once");
    assert!(
        watched.of_kind("alert").is_empty(),
        "{:?}",
        watched.of_kind("alert")
    );

    let secret = long_notes(notes.path(), 400_000, &format!("RAILWAY_TOKEN={token}"));
    let script = format!(
        "cat {secret} >/dev/null\n{}",
        python_graphql("mutation", MUTATION)
    );
    let watched = lab.run(&[], &[], &script);
    assert_eq!(
        bodies(&api).len(),
        1,
        "the deletion never arrived: {}\n{:?}",
        watched.stderr,
        watched.of_kind("found")
    );
    assert_ne!(
        status(&watched.stdout, "mutation"),
        Some(0),
        "{}",
        watched.stdout
    );
    expect_event!(watched.events, "found", {
        "path" => secret.as_str(),
        "provider" => "railway",
    });
    expect_event!(watched.events, "alert", {
        "action" => "block",
        "provider" => "railway",
        "operation/name" => "volumeDelete",
        "credential/source" => secret.as_str(),
    });
}

/// `railway login` as the session runs it: the credential file written
/// anew (a new inode no expansion has seen), read back, and the GraphQL
/// client run at once in the same process with the document in argv[1].
const LOGIN_THEN_CALL: &str = "import os, runpy, sys
path = os.path.expanduser('~/.railway/config.json')
os.remove(path)
with open(path, 'w') as login:
    login.write('{\"projects\": {}}')
with open(path) as config:
    config.read()
sys.argv = ['graphql.py', 'mutation', sys.argv[1]]
runpy.run_path(os.path.expanduser('~/graphql.py'))
";

#[test]
fn a_credential_file_written_anew_and_read_at_once_counts() {
    let lab = lab_with_client();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    write(&lab.path("login_then_call.py"), LOGIN_THEN_CALL);
    for round in 0..3 {
        let script = format!("python3 \"$HOME/login_then_call.py\" '{MUTATION}'\n");
        let watched = lab.run(&[], &[], &script);
        assert_ne!(
            status(&watched.stdout, "mutation"),
            Some(0),
            "round {round}: {}\n{}",
            watched.stdout,
            watched.stderr
        );
        expect_event!(watched.events, "alert", {
            "action" => "block",
            "provider" => "railway",
            "operation/name" => "volumeDelete",
            "credential/source" => lab.railway_config(),
        });
    }
    assert!(bodies(&api).is_empty(), "{:?}", bodies(&api));
}

#[test]
fn processes_outside_the_session_are_untouched() {
    let lab = Lab::new();
    let api = TlsApi::start(&lab.dns.netns, RAILWAY);
    let outsider = {
        let prefix = lab.dns.prefix_with_home(lab.home.path(), &[]);
        let script = format!("sleep 1\n{}", graphql("mutation", CURL_MUTATION));
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..]).args(["sh", "-c", &script]);
        thread::spawn(move || output_with_timeout(&mut cmd))
    };
    // A tainted session exists meanwhile.
    let watched = lab.run(&[], &[], "cat ~/.railway/config.json >/dev/null\nsleep 3");
    let outside = outsider.join().expect("outsider");
    assert_eq!(watched.code(), 0);
    let stdout = String::from_utf8_lossy(&outside.stdout);
    assert_eq!(status(&stdout, "mutation"), Some(0), "{stdout}");
    assert_eq!(bodies(&api).len(), 1, "the outsider's request arrived");
    thread::sleep(Duration::from_millis(10));
}
