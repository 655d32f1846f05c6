//! Where the kernel learns infrastructure addresses beyond a plain UDP
//! answer: answers over TCP (whole, or split across segments), CNAME chains
//! from a name outside the catalog into it, and /etc/hosts entries under the
//! catalog's domains. Each test builds a lab as enforcement's do: a network
//! namespace with its own DNS, listeners counting connections, and a home
//! holding fake credentials.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc, RwLock, RwLockReadGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use agentwatch_tests::{
    DnsLab, Lab, Resolver, Watched, assert_allowed, assert_blocked, expect_event,
};

/// The DNS sensor hears every answer on the machine: a test whose other
/// lab resolves Railway in a loop would relabel how the hosts-file tests'
/// address was learned. They never run at once.
static LOOKUPS_ELSEWHERE: RwLock<()> = RwLock::new(());

fn no_lookups_elsewhere() -> RwLockReadGuard<'static, ()> {
    LOOKUPS_ELSEWHERE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const READ_AWS: &str = "cat ~/.aws/credentials >/dev/null\n";
const READ_RAILWAY: &str = "cat ~/.railway/config.json >/dev/null\n";
const EPERM: i64 = -1;

fn connect(host: &str) -> String {
    format!("$PROBE connect-host {host}:443\n")
}

/// A session that read the Railway token calls Railway: refused at connect,
/// with an alert saying how the address was `learned`.
fn railway_blocked(lab: &Lab, what: &str, learned: &str) -> Watched {
    let railway = lab.listen("127.0.0.2:443");
    let watched = lab.run(
        &[],
        &[],
        &format!("{READ_RAILWAY}{}", connect("backboard.railway.app")),
    );
    assert_blocked(&watched, &railway, what);
    expect_event!(watched.events, "alert", {
        "host" => "backboard.railway.app",
        "learned" => learned,
        "provider" => "railway",
        "credential/class" => "railway",
    });
    watched
}

/// The kernel followed every DNS-over-TCP connection it saw.
fn assert_followed(watched: &Watched) {
    assert!(
        !watched.stderr.contains("DNS-over-TCP"),
        "stderr:\n{}",
        watched.stderr
    );
}

#[test]
fn answers_over_tcp_are_learned() {
    let dns = DnsLab::with_resolver(
        &[
            "--host-record=backboard.railway.app,127.0.0.2".into(),
            "--host-record=ec2.us-east-1.amazonaws.com,127.0.0.3".into(),
        ],
        &Resolver {
            options: &["use-vc"],
            ..Resolver::default()
        },
    );
    let lab = Lab::with_dns(dns);

    let watched = railway_blocked(&lab, "railway over TCP", "dns");
    assert_followed(&watched);

    // Not an exact catalog host: only the kernel's reading of the TCP
    // answer can make its address infrastructure.
    let ec2 = lab.listen("127.0.0.3:443");
    let watched = lab.run(
        &[],
        &[],
        &format!("{READ_AWS}{}", connect("ec2.us-east-1.amazonaws.com")),
    );
    assert_blocked(&watched, &ec2, "a domain's name over TCP");
    assert_followed(&watched);
    drop(ec2);

    let ec2 = lab.listen("127.0.0.3:443");
    let watched = lab.run(&[], &[], &connect("ec2.us-east-1.amazonaws.com"));
    assert_allowed(&watched, &ec2, "over TCP without a credential");
    expect_event!(watched.events, "connect", {
        "host" => "ec2.us-east-1.amazonaws.com",
        "learned" => "dns",
        "ret" => 0,
    });
}

/// A DNS server over TCP only, on 127.0.0.53:53 in a lab's namespace: A
/// queries for `name` get `addr`, AAAA queries for it no answer, anything
/// else NXDOMAIN. Every response is written in three segments: the first
/// byte of its length, the second with half the message, the rest.
struct SplitServer {
    stop: Arc<AtomicBool>,
}

const SPLIT_SERVER: &str = "127.0.0.53";

impl SplitServer {
    fn start(lab: &DnsLab, name: &'static str, addr: [u8; 4]) -> Self {
        let listener = lab.bind(&format!("{SPLIT_SERVER}:53"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || serve(stream, name, addr));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { stop }
    }
}

impl Drop for SplitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, name: &str, addr: [u8; 4]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        let Some(response) = answer(&query, name, addr) else {
            return;
        };
        let mut framed = (response.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&response);
        let half = 2 + response.len() / 2;
        for piece in [&framed[..1], &framed[1..half], &framed[half..]] {
            if stream.write_all(piece).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The response to a one-question query.
fn answer(query: &[u8], name: &str, addr: [u8; 4]) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let ours = labels.join(".") == name;
    let answers = u16::from(ours && qtype == 1);
    let rcode = if ours { 0 } else { 3 };
    let mut response = vec![query[0], query[1], 0x81, 0x80 | rcode, 0, 1];
    response.extend_from_slice(&answers.to_be_bytes());
    response.extend_from_slice(&[0, 0, 0, 0]);
    response.extend_from_slice(question);
    if answers == 1 {
        response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        response.extend_from_slice(&addr);
    }
    Some(response)
}

#[test]
fn tcp_answers_split_across_segments_are_learned() {
    const NAME: &str = "ec2.us-west-2.amazonaws.com";
    let dns = DnsLab::with_resolver(
        &[],
        &Resolver {
            nameserver: Some(SPLIT_SERVER),
            options: &["use-vc"],
            ..Resolver::default()
        },
    );
    let _server = SplitServer::start(&dns, NAME, [127, 0, 0, 4]);
    let lab = Lab::with_dns(dns);
    let ec2 = lab.listen("127.0.0.4:443");
    let watched = lab.run(&[], &[], &format!("{READ_AWS}{}", connect(NAME)));
    assert_blocked(&watched, &ec2, "an answer in three segments");
    assert_followed(&watched);
}

#[test]
fn a_cname_chain_into_the_catalog_makes_its_addresses_infrastructure() {
    let lab = Lab::with_dns(DnsLab::new(&[
        "--cname=assets.mycompany.example,mybucket.s3.amazonaws.com".into(),
        "--host-record=mybucket.s3.amazonaws.com,127.0.0.6".into(),
    ]));
    let bucket = lab.listen("127.0.0.6:443");
    let watched = lab.run(
        &[],
        &[],
        &format!("{READ_AWS}{}", connect("assets.mycompany.example")),
    );
    assert_blocked(&watched, &bucket, "a CNAME into s3");
    // The name the process asked for, and the provider the chain reached.
    expect_event!(watched.events, "alert", {
        "host" => "assets.mycompany.example",
        "learned" => "dns",
        "provider" => "aws",
    });
    drop(bucket);

    let bucket = lab.listen("127.0.0.6:443");
    let watched = lab.run(&[], &[], &connect("assets.mycompany.example"));
    assert_allowed(&watched, &bucket, "a CNAME into s3 without a credential");
}

#[test]
fn hosts_file_entries_under_catalog_domains_are_infrastructure() {
    let _quiet = no_lookups_elsewhere();
    // dnsmasq answers NXDOMAIN for everything: only /etc/hosts names these.
    let dns = DnsLab::with_resolver(
        &[],
        &Resolver {
            hosts: Some(
                "127.0.0.2 backboard.railway.app\n\
                 127.0.0.7 ec2.eu-west-1.amazonaws.com # a domain's name\n\
                 127.0.0.8 myservice.internal.test",
            ),
            ..Resolver::default()
        },
    );
    let lab = Lab::with_dns(dns);

    let watched = railway_blocked(&lab, "railway from /etc/hosts", "hosts-file");
    expect_event!(watched.events, "connect", {
        "host" => "backboard.railway.app",
        "learned" => "hosts-file",
        "ret" => EPERM,
    });

    let ec2 = lab.listen("127.0.0.7:443");
    let watched = lab.run(
        &[],
        &[],
        &format!("{READ_AWS}{}", connect("ec2.eu-west-1.amazonaws.com")),
    );
    assert_blocked(&watched, &ec2, "a domain's name from /etc/hosts");
    drop(ec2);

    let railway = lab.listen("127.0.0.2:443");
    let watched = lab.run(&[], &[], &connect("backboard.railway.app"));
    assert_allowed(&watched, &railway, "/etc/hosts without a credential");
    drop(railway);

    // A name outside the catalog is named, not infrastructure.
    let service = lab.listen("127.0.0.8:443");
    let watched = lab.run(
        &[],
        &[],
        &format!(
            "{READ_RAILWAY}{READ_AWS}{}",
            connect("myservice.internal.test")
        ),
    );
    assert_allowed(&watched, &service, "a name outside the catalog");
    expect_event!(watched.events, "connect", {
        "host" => "myservice.internal.test",
        "learned" => "hosts-file",
        "ret" => 0,
    });
}

#[test]
fn a_hosts_file_entry_added_during_a_session_counts() {
    let _quiet = no_lookups_elsewhere();
    let lab = Lab::with_dns(DnsLab::with_resolver(
        &[],
        &Resolver {
            hosts: Some(""),
            ..Resolver::default()
        },
    ));
    let ec2 = lab.listen("127.0.0.9:443");
    // The session's /etc/hosts is the lab's file (ip netns exec mounts it).
    let watched = lab.run(
        &[],
        &[],
        &format!(
            "{READ_AWS}echo '127.0.0.9 ec2.ap-south-1.amazonaws.com' >> /etc/hosts\nsleep 3\n{}",
            connect("ec2.ap-south-1.amazonaws.com")
        ),
    );
    assert_blocked(&watched, &ec2, "an entry added to /etc/hosts");
}

/// DNS answers of the whole host reach every agentwatch from its attach,
/// before its catalog is loaded: another session's answers for Railway
/// while this one starts must not make Railway's address look shared with
/// some other name (which would leave the connect to the first write).
#[test]
fn answers_seen_while_agentwatch_starts_do_not_make_an_address_shared() {
    let _alone = LOOKUPS_ELSEWHERE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let other = Lab::new();
    let _asking = other
        .dns
        .background("while :; do getent hosts backboard.railway.app >/dev/null; done");
    let lab = Lab::new();
    for attempt in 0..3 {
        railway_blocked(&lab, &format!("start {attempt} among lookups"), "dns");
    }
}
