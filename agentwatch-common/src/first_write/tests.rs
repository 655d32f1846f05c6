use super::{
    fixtures::{client_hello, server_name},
    *,
};
use crate::hash::{SUFFIX_SEED, domain_hash, label_hash, suffix_step};

/// ClientHellos as real clients sent them to a loopback listener:
/// python's `ssl` and curl 7.88 (OpenSSL 3.0) for `backboard.railway.app`
/// and `api.vercel.com`, node 20 for `api.vercel.com`.
const PYTHON_HELLO: &[u8] = include_bytes!("client_hello_openssl.bin");
const CURL_HELLO: &[u8] = include_bytes!("client_hello_curl.bin");
const NODE_HELLO: &[u8] = include_bytes!("client_hello_node.bin");

fn buffer(write: &[u8]) -> ([u8; WRITE_CAP], u32) {
    let mut buf = [0u8; WRITE_CAP];
    let len = write.len().min(WRITE_CAP);
    buf[..len].copy_from_slice(&write[..len]);
    (buf, len as u32)
}

/// Runs the parser to its end: the name and its source, or None.
fn parse(write: &[u8]) -> Option<(String, NameSource)> {
    let (buf, len) = buffer(write);
    let mut parser = NameParser::start(len);
    for _ in 0..MAX_STEPS {
        match parser.step(&buf) {
            Step::Continue => {}
            Step::Named => {
                let name = String::from_utf8(parser.name_bytes().to_vec()).expect("ASCII");
                // The kernel's suffix walk over the kept labels gives the
                // hash user space stores for the whole name.
                let mut hash = SUFFIX_SEED;
                let mut i = 0;
                while let Some(label) = parser.label_from_right(i) {
                    hash = suffix_step(hash, label);
                    i += 1;
                }
                if parser.labels as usize <= MAX_LABELS {
                    assert_eq!(hash, domain_hash(&name), "suffix hash of {name}");
                }
                let source = NameSource::try_from(parser.source).expect("source code");
                return Some((name, source));
            }
            Step::Nameless => return None,
        }
    }
    panic!("parser did not finish within MAX_STEPS");
}

fn named(name: &str, source: NameSource) -> Option<(String, NameSource)> {
    Some((name.to_string(), source))
}

#[test]
fn real_clients_client_hellos_name_their_server() {
    assert_eq!(
        parse(PYTHON_HELLO),
        named("backboard.railway.app", NameSource::Sni)
    );
    assert_eq!(parse(CURL_HELLO), named("api.vercel.com", NameSource::Sni));
    assert_eq!(parse(NODE_HELLO), named("api.vercel.com", NameSource::Sni));
}

#[test]
fn the_server_name_is_found_after_other_extensions_in_any_case() {
    let padding = (21, vec![0; 300]);
    let hello = client_hello(&[
        (10, vec![0, 2, 0, 29]),
        padding,
        server_name("API.Vercel.COM"),
    ]);
    assert_eq!(parse(&hello), named("api.vercel.com", NameSource::Sni));
}

#[test]
fn a_client_hello_without_a_server_name_or_cut_short_names_nothing() {
    assert_eq!(parse(&client_hello(&[(10, vec![0, 2, 0, 29])])), None);
    for cut in 0..PYTHON_HELLO.len() {
        let parsed = parse(&PYTHON_HELLO[..cut]);
        assert!(
            parsed.is_none() || parsed == named("backboard.railway.app", NameSource::Sni),
            "cut at {cut}: {parsed:?}"
        );
    }
    // Cut inside the name: never a shorter name that might be judged harmless.
    let hello = client_hello(&[server_name("backboard.railway.app")]);
    let name_end = hello.len();
    for cut in name_end - 21..name_end {
        assert_eq!(parse(&hello[..cut]), None, "cut at {cut}");
    }
    // A server name that is an address literal is not a name.
    assert_eq!(parse(&client_hello(&[server_name("127.0.0.2")])), None);
}

#[test]
fn plaintext_requests_name_their_host() {
    let request =
        b"GET /v2/projects HTTP/1.1\r\nUser-Agent: curl\r\nhost:  API.vercel.com:443\r\n\r\n";
    assert_eq!(parse(request), named("api.vercel.com", NameSource::Host));
    let request =
        b"POST /graphql/v2 HTTP/1.1\r\nHost: backboard.railway.app\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(
        parse(request),
        named("backboard.railway.app", NameSource::Host)
    );
}

#[test]
fn proxy_requests_name_their_target() {
    let connect =
        b"CONNECT backboard.railway.app:443 HTTP/1.1\r\nHost: backboard.railway.app:443\r\n\r\n";
    assert_eq!(
        parse(connect),
        named("backboard.railway.app", NameSource::ConnectProxy)
    );
    // A plain HTTP proxy is sent the absolute URI; it names the host even
    // when the Host header says otherwise.
    let absolute =
        b"GET http://backboard.railway.app/graphql HTTP/1.1\r\nHost: example.org\r\n\r\n";
    assert_eq!(
        parse(absolute),
        named("backboard.railway.app", NameSource::Host)
    );
    let absolute = b"GET https://api.vercel.com:8443?x HTTP/1.1\r\n\r\n";
    assert_eq!(parse(absolute), named("api.vercel.com", NameSource::Host));
}

#[test]
fn what_is_not_a_host_name_names_nothing() {
    for write in [
        &b"GET http://user:secret@backboard.railway.app/ HTTP/1.1\r\n\r\n"[..],
        b"GET http://user@backboard.railway.app/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\nHost: x.example\r\n",
        b"GET / HTTP/1.1\r\nHost: backboard.railway",
        b"get / HTTP/1.1\r\nHost: x.example\r\n\r\n",
        b"CONNECT backboard..railway.app:443 HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x00\x01\x02",
        b"",
    ] {
        assert_eq!(parse(write), None, "{:?}", String::from_utf8_lossy(write));
    }
}

#[test]
fn deep_names_keep_their_rightmost_labels() {
    let deep = format!("{}backboard.railway.app", "a.".repeat(MAX_LABELS + 4));
    let request = format!("GET / HTTP/1.1\r\nHost: {deep}\r\n\r\n");
    let (buf, len) = buffer(request.as_bytes());
    let mut parser = NameParser::start(len);
    while parser.step(&buf) == Step::Continue {}
    assert_eq!(parser.phase, phase::NAMED);
    assert_eq!(parser.label_from_right(0), Some(label_hash(b"app")));
    assert_eq!(parser.label_from_right(2), Some(label_hash(b"backboard")));
    assert_eq!(parser.label_from_right(MAX_LABELS as u32), None);
    // The event keeps the first NAME_CAP bytes.
    let long = format!(
        "{}.example",
        "x".repeat(60) + "." + &"y".repeat(60) + "." + &"z".repeat(60)
    );
    let request = format!("GET / HTTP/1.1\r\nHost: {long}\r\n\r\n");
    let (buf, len) = buffer(request.as_bytes());
    let mut parser = NameParser::start(len);
    while parser.step(&buf) == Step::Continue {}
    assert_eq!(parser.phase, phase::NAMED);
    assert_eq!(parser.name_bytes(), &long.as_bytes()[..NAME_CAP]);
}

#[test]
fn arbitrary_bytes_never_panic_or_overrun() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let seeds: [&[u8]; 3] = [
        PYTHON_HELLO,
        b"CONNECT a.example:443 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ];
    for round in 0..20_000 {
        let mut write = seeds[round % seeds.len()].to_vec();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % write.len();
            write[at] = (seed >> 40) as u8;
        }
        let _ = parse(&write);
    }
}
