//! Kernel records → [`Event`]s. Pure functions of the bytes, so everything
//! here is tested without loading any program.

pub mod path;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use agentwatch_common::{
    dns::{DNS_CAP, DnsParser, MAX_STEPS, Step},
    event::{
        AlertEvent, BASE_CAP, ConnectEvent, DnsEvent, EventHeader, ExecEvent, ExitEvent, ForkEvent,
        NameEvent, OpenEvent, TLS_CAP, TlsWriteEvent, truncated,
    },
    first_write::NAME_CAP,
    maps::SocketKey,
    names::{Action, Kind, NameSource, OpenSyscall, SocketJudgment, UnknownCode},
    offsets::user_dev,
};
use aya::Pod;

use crate::event::{Alert, Body, Connect, Event, Exec, Exit, Named, Open};

/// A decoded ring buffer record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(Event),
    /// Facts of an alert before enrichment with names and history.
    Alert(Event, RawAlert),
    Dns(DnsAnswer),
    /// What a socket's first write named, with the socket (to forget it
    /// when harmless) and the domain it matched.
    Name(Event, SocketKey, Option<u32>),
    /// A tainted session's TLS plaintext; its writer is stopped.
    TlsWrite(TlsWrite),
    /// A session's process (pid) started using probed OpenSSL; it is
    /// stopped until its `SSL_write` probes are attached.
    TlsProcess(u32),
}

/// The plaintext a stopped writer passed to `SSL_write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsWrite {
    pub ts: SystemTime,
    pub session: u32,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    /// The `SSL *` written to (a request's head and body are matched by it).
    pub ssl: u64,
    /// Credential classes the session held; 0 when it held none and the
    /// write was stopped by the scan fence (see `engine::fence`).
    pub held: u64,
    /// Bytes the caller asked to write; `data` holds the first of them.
    pub len: u32,
    pub data: Vec<u8>,
}

/// What the kernel knew when it raised an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAlert {
    /// Credential classes the session held that counted against the host.
    pub held: u64,
    /// The classes the session took last, and when.
    pub last_classes: u64,
    pub last_at: SystemTime,
    /// Index into the domain table.
    pub domain: u32,
    pub ip: IpAddr,
    /// The name the socket's first write asked for, when it was judged there.
    pub name: Option<String>,
}

/// A DNS response: the question name and the addresses answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub name: String,
    pub addrs: Vec<IpAddr>,
    /// The infrastructure domain the kernel matched the name to.
    pub domain: Option<u32>,
    /// When the kernel matched it (CLOCK_BOOTTIME ns): an answer matched
    /// before the catalog was in the kernel's tables matches nothing.
    pub matched_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("record of unknown kind {}", .0.0)]
    UnknownKind(UnknownCode),
    #[error("alert with unknown action {}", .0.0)]
    UnknownAction(UnknownCode),
    #[error("record with unknown name source {}", .0.0)]
    UnknownNameSource(UnknownCode),
    #[error("name record with unknown judgment {}", .0.0)]
    UnknownJudgment(UnknownCode),
}

/// Copies a record into `T`, zero-filling what a shortened record left out.
fn read_record<T: Pod>(bytes: &[u8]) -> T {
    let mut value = unsafe { std::mem::zeroed::<T>() };
    let len = bytes.len().min(size_of::<T>());
    // SAFETY: T is Pod (any bytes are a valid T) and `len` fits both buffers.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut value).cast::<u8>(), len);
    }
    value
}

/// Text from a kernel buffer: up to the first NUL, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Converts the kernel's boot-time clock to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot_epoch: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let wall = SystemTime::now();
        Self {
            boot_epoch: wall - Duration::from_nanos(boot),
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot_epoch + Duration::from_nanos(boot_ns)
    }
}

pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn decode(clock: &Clock, record: &[u8]) -> Result<Record, DecodeError> {
    if record.len() < size_of::<EventHeader>() {
        return Err(DecodeError::TooShort(record.len()));
    }
    let header: EventHeader = read_record(record);
    let kind = Kind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
    let body = match kind {
        Kind::Open => Body::Open(open(&read_record(record))),
        Kind::Connect => Body::Connect(connect(&read_record(record))),
        Kind::Exec => Body::Exec(exec(&read_record(record))),
        Kind::Fork => Body::Fork {
            child: read_record::<ForkEvent>(record).child,
        },
        Kind::Exit => Body::Exit(exit(read_record::<ExitEvent>(record).exit_code)),
        Kind::Alert => {
            let raw: AlertEvent = read_record(record);
            let (alert, facts) = alert(clock, &raw)?;
            return Ok(Record::Alert(
                with_header(clock, &header, Body::Alert(alert)),
                facts,
            ));
        }
        Kind::Dns => return Ok(Record::Dns(dns(&read_record::<DnsEvent>(record)))),
        Kind::TlsWrite => {
            let raw: TlsWriteEvent = read_record(record);
            let copied = (raw.copied as usize).min(TLS_CAP);
            return Ok(Record::TlsWrite(TlsWrite {
                ts: clock.wall(header.boot_ns),
                session: header.session,
                pid: header.pid,
                tid: header.tid,
                uid: header.uid,
                comm: text(&header.comm),
                ssl: raw.ssl,
                held: raw.held,
                len: raw.len,
                data: raw.data[..copied].to_vec(),
            }));
        }
        Kind::TlsProcess => return Ok(Record::TlsProcess(header.pid)),
        Kind::Name => {
            let raw: NameEvent = read_record(record);
            let named = named(&raw)?;
            return Ok(Record::Name(
                with_header(clock, &header, Body::Name(named)),
                raw.key,
                raw.domain.checked_sub(1),
            ));
        }
    };
    Ok(Record::Event(with_header(clock, &header, body)))
}

fn with_header(clock: &Clock, header: &EventHeader, body: Body) -> Event {
    Event {
        ts: clock.wall(header.boot_ns),
        session: header.session,
        pid: header.pid,
        tid: header.tid,
        ppid: header.ppid,
        uid: header.uid,
        comm: text(&header.comm),
        body,
    }
}

fn alert(clock: &Clock, raw: &AlertEvent) -> Result<(Alert, RawAlert), DecodeError> {
    let action = Action::try_from(raw.action).map_err(DecodeError::UnknownAction)?;
    let learned = NameSource::try_from(raw.learned).map_err(DecodeError::UnknownNameSource)?;
    let ip = if i32::from(raw.family) == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(
            raw.addr[0],
            raw.addr[1],
            raw.addr[2],
            raw.addr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(raw.addr))
    };
    let alert = Alert {
        action,
        host: None,
        learned: Some(learned),
        addr: ip.to_string(),
        port: raw.port,
        provider: None,
        credential: None,
        credentials: Vec::new(),
        ancestry: Vec::new(),
        operation: None,
        seen: None,
    };
    let facts = RawAlert {
        held: raw.held,
        last_classes: raw.last_classes,
        last_at: clock.wall(raw.last_ns),
        domain: raw.domain,
        ip,
        name: name_text(&raw.name, raw.name_len),
    };
    Ok((alert, facts))
}

/// A name the kernel read (lower-cased ASCII), if it kept one.
fn name_text(name: &[u8; NAME_CAP], len: u32) -> Option<String> {
    let len = (len as usize).min(NAME_CAP);
    (len > 0).then(|| String::from_utf8_lossy(&name[..len]).into_owned())
}

/// The remote end of a socket as the first-write programs key it.
pub fn socket_peer(key: &SocketKey) -> (IpAddr, u16) {
    let port = u16::from_be(key.remote_port as u16);
    let ip = if key.family as i32 == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::from(key.remote_ip[0].to_ne_bytes()))
    } else {
        let mut bytes = [0u8; 16];
        for (i, word) in key.remote_ip.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    };
    (ip, port)
}

fn named(raw: &NameEvent) -> Result<Named, DecodeError> {
    let (ip, port) = socket_peer(&raw.key);
    Ok(Named {
        host: name_text(&raw.name, raw.name_len),
        learned: NameSource::try_from(raw.learned).map_err(DecodeError::UnknownNameSource)?,
        judgment: SocketJudgment::try_from(raw.judgment).map_err(DecodeError::UnknownJudgment)?,
        addr: ip.to_string(),
        port,
        provider: None,
    })
}

fn dns(record: &DnsEvent) -> DnsAnswer {
    let (name, addrs) = parse_dns(&record.payload, record.len);
    DnsAnswer {
        name: name.unwrap_or_default(),
        addrs,
        domain: record.domain.checked_sub(1),
        matched_ns: record.header.boot_ns,
    }
}

/// The question name and the A/AAAA answers of a DNS response, with the
/// same step parser the kernel runs.
pub fn parse_dns(payload: &[u8; DNS_CAP], len: u32) -> (Option<String>, Vec<IpAddr>) {
    let mut addrs = Vec::new();
    let Some(mut parser) = DnsParser::start(payload, len) else {
        return (None, addrs);
    };
    let name = question_name(payload, parser.len);
    for _ in 0..MAX_STEPS {
        match parser.step(payload) {
            Step::Continue | Step::Question | Step::Target => {}
            Step::Address { offset, len } => {
                let bytes = &payload[offset as usize..(offset + len) as usize];
                addrs.push(match <[u8; 4]>::try_from(bytes) {
                    Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                    Err(_) => IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(bytes).unwrap_or_default(),
                    )),
                });
            }
            Step::Done | Step::Malformed => break,
        }
    }
    (name, addrs)
}

/// The question name, lower-case and without the trailing dot.
fn question_name(payload: &[u8; DNS_CAP], len: u32) -> Option<String> {
    let message = payload.get(..len as usize)?;
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let label_len = usize::from(*message.get(at)?);
        if label_len == 0 {
            break;
        }
        if label_len > 63 {
            return None;
        }
        let label = message.get(at + 1..at + 1 + label_len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += 1 + label_len;
    }
    Some(labels.join("."))
}

fn open(record: &OpenEvent) -> Open {
    let path = text(&record.path[..usize::from(record.path_len).min(record.path.len())]);
    let base_len = usize::from(record.base_len).min(BASE_CAP);
    let resolved = if base_len > 0 {
        path::resolve(&text(&record.base[BASE_CAP - base_len..]), &path)
    } else if path.starts_with('/') {
        path::resolve("/", &path)
    } else {
        // The directory could not be read: keep what the process gave.
        path.clone()
    };
    let opened = record.ret >= 0 && record.ino != 0;
    // Every open program sets a known code; should one ever be missing,
    // openat (the common case) stands in rather than failing the event.
    let syscall = OpenSyscall::try_from(record.syscall).unwrap_or(OpenSyscall::Openat);
    // A file opened by handle or through io_uring has no path: name it by
    // its descriptor while the process still holds it.
    let pathless = matches!(syscall, OpenSyscall::OpenByHandleAt | OpenSyscall::IoUring);
    let by_handle = (opened && pathless)
        .then(|| std::fs::read_link(format!("/proc/{}/fd/{}", record.header.pid, record.ret)));
    let resolved = match by_handle {
        Some(Ok(target)) => target.to_string_lossy().into_owned(),
        _ => resolved,
    };
    Open {
        path,
        resolved,
        flags: record.flags,
        ret: record.ret,
        dev: if opened { user_dev(record.dev) } else { 0 },
        ino: if opened { record.ino } else { 0 },
        syscall,
        truncated: record.truncated & (truncated::PATH | truncated::BASE) != 0,
        cred_classes: record.cred_classes,
        credentials: Vec::new(),
    }
}

fn connect(record: &ConnectEvent) -> Connect {
    let len = (record.addr_len as usize).min(record.addr.len());
    let (family, addr, port) = sockaddr(&record.addr[..len]);
    Connect {
        family,
        addr,
        port,
        ret: record.ret,
        host: None,
        learned: None,
    }
}

/// Decodes a `struct sockaddr` as passed to connect(2).
pub fn sockaddr(bytes: &[u8]) -> (String, String, Option<u16>) {
    let Some(family) = bytes.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
        return ("unspec".into(), String::new(), None);
    };
    let port = || bytes.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match i32::from(family) {
        libc::AF_INET => {
            let addr = bytes
                .get(4..8)
                .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                .unwrap_or_default();
            ("inet".into(), addr, port())
        }
        libc::AF_INET6 => {
            let addr = bytes
                .get(8..24)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(|b| Ipv6Addr::from(b).to_string())
                .unwrap_or_default();
            ("inet6".into(), addr, port())
        }
        libc::AF_UNIX => {
            let path = bytes.get(2..).unwrap_or_default();
            let addr = match path.first() {
                Some(0) => format!("@{}", text(&path[1..])),
                _ => text(path),
            };
            ("unix".into(), addr, None)
        }
        libc::AF_UNSPEC => ("unspec".into(), String::new(), None),
        other => (other.to_string(), String::new(), None),
    }
}

fn exec(record: &ExecEvent) -> Exec {
    let filename_len = usize::from(record.filename_len).min(record.filename.len());
    let argv_len = usize::from(record.argv_len).min(record.argv.len());
    let block = &record.argv[..argv_len];
    // The block ends with the last argument's NUL unless it was cut short.
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    let argv = if block.is_empty() {
        Vec::new()
    } else {
        block
            .split(|&b| b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect()
    };
    Exec {
        filename: text(&record.filename[..filename_len]),
        argv,
        ret: record.ret,
        truncated: record.truncated & (truncated::FILENAME | truncated::ARGV) != 0,
        env_classes: record.env_classes,
        credentials: Vec::new(),
        agent_id: record.agent,
        agent: None,
        held_command: record.hold != 0,
    }
}

/// Decodes `task_struct::exit_code` the way wait(2) status is decoded.
pub fn exit(exit_code: u32) -> Exit {
    let signal = (exit_code & 0x7f) as i32;
    if signal == 0 {
        Exit {
            code: ((exit_code >> 8) & 0xff) as i32,
            signal: None,
        }
    } else {
        Exit {
            code: 128 + signal,
            signal: Some(signal),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{mem::offset_of, time::UNIX_EPOCH};

    use agentwatch_common::event::{ARGV_CAP, PATH_CAP};

    use super::*;

    fn header(kind: u32) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"cat");
        EventHeader {
            kind,
            pid: 10,
            tid: 11,
            ppid: 9,
            session: 7,
            uid: 1000,
            boot_ns: 5_000_000_000,
            comm,
        }
    }

    fn bytes_of<T: Pod>(value: &T) -> Vec<u8> {
        // SAFETY: Pod values are plain bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn clock() -> Clock {
        Clock {
            boot_epoch: UNIX_EPOCH,
        }
    }

    fn open_record(path: &str, base: &str, ret: i64) -> OpenEvent {
        let mut record: OpenEvent = unsafe { std::mem::zeroed() };
        record.header = header(Kind::Open.code());
        record.path[..path.len()].copy_from_slice(path.as_bytes());
        record.path_len = path.len() as u16;
        record.base[BASE_CAP - base.len()..].copy_from_slice(base.as_bytes());
        record.base_len = base.len() as u16;
        record.ret = ret;
        record.dev = (254 << 20) | 1;
        record.ino = 42;
        record.syscall = OpenSyscall::Openat.code();
        record
    }

    fn event(record: &[u8]) -> Event {
        match decode(&clock(), record).unwrap() {
            Record::Event(event) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn open_with_relative_path_resolves_against_base() {
        let record = open_record("./hostname", "/etc", 3);
        let event = event(&bytes_of(&record));
        assert_eq!(event.ts, UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(event.comm, "cat");
        let Body::Open(open) = event.body else {
            panic!("not an open")
        };
        assert_eq!(open.path, "./hostname");
        assert_eq!(open.resolved, "/etc/hostname");
        assert_eq!((open.dev, open.ino), ((254 << 8) | 1, 42));
    }

    #[test]
    fn shortened_absolute_open_record_decodes() {
        let record = open_record("/etc/hostname", "", -2);
        let wire = &bytes_of(&record)[..record.wire_len()];
        assert_eq!(wire.len(), offset_of!(OpenEvent, path) + 13);
        let Body::Open(open) = event(wire).body else {
            panic!("not an open")
        };
        assert_eq!(open.resolved, "/etc/hostname");
        assert_eq!(open.ret, -2);
        assert_eq!((open.dev, open.ino), (0, 0), "a failed open has no file");
    }

    #[test]
    fn truncated_path_is_marked() {
        let long = "a".repeat(PATH_CAP - 1);
        let mut record = open_record(&long, "/tmp", 3);
        record.truncated = truncated::PATH;
        let Body::Open(open) = event(&bytes_of(&record)).body else {
            panic!("not an open")
        };
        assert!(open.truncated);
        assert_eq!(open.resolved.len(), "/tmp/".len() + long.len());
    }

    #[test]
    fn connect_families() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&9u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(sockaddr(&v4), ("inet".into(), "127.0.0.1".into(), Some(9)));

        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(sockaddr(&v6), ("inet6".into(), "::1".into(), Some(443)));

        let mut unix = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        unix.extend_from_slice(b"/run/docker.sock\0");
        assert_eq!(
            sockaddr(&unix),
            ("unix".into(), "/run/docker.sock".into(), None)
        );
        let mut abstract_ = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abstract_.extend_from_slice(b"\0bus");
        assert_eq!(sockaddr(&abstract_).1, "@bus");

        assert_eq!(sockaddr(&[]).0, "unspec");
        assert_eq!(sockaddr(&v4[..3]), ("inet".into(), String::new(), None));
    }

    #[test]
    fn exec_argv_split_and_truncation() {
        let mut record: ExecEvent = unsafe { std::mem::zeroed() };
        record.header = header(Kind::Exec.code());
        let block = b"sh\0-c\0echo hi\0";
        record.argv[..block.len()].copy_from_slice(block);
        record.argv_len = block.len() as u16;
        record.filename[..7].copy_from_slice(b"/bin/sh");
        record.filename_len = 7;
        let wire = &bytes_of(&record)[..record.wire_len()];
        let Body::Exec(exec) = event(wire).body else {
            panic!("not an exec")
        };
        assert_eq!(exec.argv, ["sh", "-c", "echo hi"]);
        assert_eq!(exec.filename, "/bin/sh");
        assert!(!exec.truncated);

        record.argv = [b'x'; ARGV_CAP];
        record.argv_len = ARGV_CAP as u16;
        record.truncated = truncated::ARGV;
        let Body::Exec(exec) = event(&bytes_of(&record)).body else {
            panic!("not an exec")
        };
        assert!(exec.truncated);
        assert_eq!(exec.argv, ["x".repeat(ARGV_CAP)]);
    }

    #[test]
    fn exit_codes_like_wait_status() {
        assert_eq!(
            exit(3 << 8),
            Exit {
                code: 3,
                signal: None
            }
        );
        assert_eq!(
            exit(9),
            Exit {
                code: 137,
                signal: Some(9)
            }
        );
        assert_eq!(
            exit(0),
            Exit {
                code: 0,
                signal: None
            }
        );
    }

    #[test]
    fn alert_records_carry_what_the_kernel_decided() {
        let mut record: AlertEvent = unsafe { std::mem::zeroed() };
        record.header = header(Kind::Alert.code());
        record.held = 0b101;
        record.last_classes = 0b100;
        record.last_ns = 3_000_000_000;
        record.action = Action::Block.code();
        record.domain = 7;
        record.family = libc::AF_INET as u16;
        record.port = 443;
        record.addr[..4].copy_from_slice(&[127, 0, 0, 2]);
        record.learned = NameSource::Sni.code();
        record.name[..9].copy_from_slice(b"a.example");
        record.name_len = 9;
        let Ok(Record::Alert(event, raw)) = decode(&clock(), &bytes_of(&record)) else {
            panic!("not an alert");
        };
        let Body::Alert(alert) = event.body else {
            panic!("not an alert body");
        };
        assert_eq!(
            (alert.action, alert.addr.as_str(), alert.port),
            (Action::Block, "127.0.0.2", 443)
        );
        assert_eq!(alert.learned, Some(NameSource::Sni));
        assert_eq!((raw.held, raw.last_classes, raw.domain), (0b101, 0b100, 7));
        assert_eq!(raw.last_at, UNIX_EPOCH + Duration::from_secs(3));
        assert_eq!(raw.ip, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(raw.name.as_deref(), Some("a.example"));
        // A code the kernel never writes is an error, not a guess.
        record.learned = 0;
        assert_eq!(
            decode(&clock(), &bytes_of(&record)),
            Err(DecodeError::UnknownNameSource(UnknownCode(0)))
        );
    }

    #[test]
    fn name_records_carry_the_socket_and_what_its_first_write_named() {
        let mut record: NameEvent = unsafe { std::mem::zeroed() };
        record.header = header(Kind::Name.code());
        record.key.family = libc::AF_INET as u32;
        record.key.remote_ip[0] = u32::from_ne_bytes([127, 0, 0, 7]);
        record.key.remote_port = u32::from(443u16.to_be());
        record.judgment = SocketJudgment::Harmless.code();
        record.learned = NameSource::Sni.code();
        record.name[..16].copy_from_slice(b"myapp.vercel.app");
        record.name_len = 16;
        let Ok(Record::Name(event, key, domain)) = decode(&clock(), &bytes_of(&record)) else {
            panic!("not a name record");
        };
        assert_eq!(key, record.key);
        assert_eq!(domain, None);
        let Body::Name(named) = event.body else {
            panic!("not a name body");
        };
        assert_eq!(named.host.as_deref(), Some("myapp.vercel.app"));
        assert_eq!(
            (
                named.learned,
                named.judgment,
                named.addr.as_str(),
                named.port
            ),
            (NameSource::Sni, SocketJudgment::Harmless, "127.0.0.7", 443)
        );
    }

    /// A response for `name` with one A answer, using a compression pointer.
    fn dns_response(name: &str, addr: [u8; 4]) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        for label in name.split('.') {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.extend_from_slice(&[0, 0, 1, 0, 1]);
        packet.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        packet.extend_from_slice(&addr);
        packet
    }

    #[test]
    fn dns_records_name_the_question_and_the_answers() {
        let mut record: DnsEvent = unsafe { std::mem::zeroed() };
        record.header = header(Kind::Dns.code());
        let packet = dns_response("Backboard.Railway.App", [127, 0, 0, 2]);
        record.payload[..packet.len()].copy_from_slice(&packet);
        record.len = packet.len() as u32;
        record.domain = 1;
        let wire = &bytes_of(&record)[..record.wire_len()];
        let Ok(Record::Dns(answer)) = decode(&clock(), wire) else {
            panic!("not a DNS record");
        };
        assert_eq!(answer.name, "backboard.railway.app");
        assert_eq!(answer.addrs, ["127.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(answer.domain, Some(0));
        // Cut short: the question survives, the answer does not.
        record.len = (packet.len() - 6) as u32;
        let wire = &bytes_of(&record)[..record.wire_len()];
        let Ok(Record::Dns(answer)) = decode(&clock(), wire) else {
            panic!("not a DNS record");
        };
        assert!(answer.addrs.is_empty(), "{answer:?}");
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert_eq!(decode(&clock(), &[1, 2, 3]), Err(DecodeError::TooShort(3)));
        let unknown = bytes_of(&header(99));
        assert_eq!(
            decode(&clock(), &unknown),
            Err(DecodeError::UnknownKind(UnknownCode(99)))
        );
        // A header-only record of a known kind decodes with empty fields.
        let bare = bytes_of(&header(Kind::Open.code()));
        assert!(decode(&clock(), &bare).is_ok());
        // An action the decoder does not know is not taken for another.
        let mut alert: AlertEvent = unsafe { std::mem::zeroed() };
        alert.header = header(Kind::Alert.code());
        alert.action = 9;
        assert_eq!(
            decode(&clock(), &bytes_of(&alert)),
            Err(DecodeError::UnknownAction(UnknownCode(9)))
        );
    }

    #[test]
    fn json_schema() {
        let record = open_record("./hostname", "/etc", 3);
        let json: serde_json::Value = serde_json::to_value(event(&bytes_of(&record))).unwrap();
        assert_eq!(json["kind"], "open");
        assert_eq!(json["ts"], "1970-01-01T00:00:05.000000Z");
        for key in [
            "session", "pid", "ppid", "comm", "path", "resolved", "flags", "ret", "dev", "ino",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert!(json.get("truncated").is_none());
    }
}
