//! `xtask bench-load`: the load generator `cargo xtask bench` runs, a
//! separate process so that it can be started inside a watched session,
//! under bpftrace or under an audit rule. System calls are made through libc
//! directly; every kind prints one JSON object on stdout.

use std::{
    ffi::{CString, OsString},
    io::{BufRead as _, Write as _},
    net::{SocketAddr, SocketAddrV4, ToSocketAddrs as _},
    os::{
        fd::AsRawFd as _,
        unix::{ffi::OsStrExt as _, process::ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub struct LoadArgs {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Subcommand)]
enum Kind {
    /// open(2)+close(2) of a temporary file, in a loop.
    OpenClose(LoopArgs),
    /// socket(2)+connect(2) to a closed port on 127.0.0.1 (ECONNREFUSED)+close(2).
    Connect(LoopArgs),
    /// Both loops, one after the other.
    Loops(LoopArgs),
    /// Connect to TO (a listener that discards), send a first request
    /// naming HOST, wait SETTLE_MS, then write SIZE bytes in a loop.
    Writes {
        #[command(flatten)]
        loops: LoopArgs,
        #[arg(long)]
        to: SocketAddrV4,
        /// The host the first write's HTTP `Host:` names.
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to wait after the first write: what judges it may act
        /// on it after the write has returned.
        #[arg(long, default_value_t = 100)]
        settle_ms: u64,
    },
    /// open(2) of a missing path at RATE per second for MILLIS milliseconds.
    OpenRate {
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        millis: u64,
    },
    /// Resolve TARGET, then read CREDENTIAL and connect to TARGET at once.
    RaceOnce {
        #[arg(long)]
        credential: PathBuf,
        #[arg(long)]
        target: String,
    },
    /// COUNT fresh children, one after the other, each reading CREDENTIAL
    /// and connecting to TARGET at once.
    RaceChildren {
        #[arg(long)]
        credential: PathBuf,
        #[arg(long)]
        target: String,
        #[arg(long)]
        count: u64,
    },
    /// Read CREDENTIAL, then connect to TARGET COUNT times, INTERVAL_MS
    /// apart, printing for each [called, returned] (CLOCK_MONOTONIC ns),
    /// CLOCK_REALTIME ns after it returned, and its result.
    Latency {
        #[arg(long)]
        credential: PathBuf,
        #[arg(long)]
        target: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
    },
    /// Fork COUNT children that sleep; print when they all exist, then wait
    /// for a line (or end of file) on stdin and kill them.
    Sleepers {
        #[arg(long)]
        count: u64,
    },
    /// Run CMD and print how long it took.
    Time {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

#[derive(Args, Clone, Copy)]
struct LoopArgs {
    /// Run each loop this many times (instead of for --millis).
    #[arg(long)]
    iterations: Option<u64>,
    /// Run each loop for this long.
    #[arg(long, default_value_t = 400)]
    millis: u64,
    /// Print `{"ready":PID}` and wait for a line on stdin before starting, so
    /// that a tracer can be attached to PID first.
    #[arg(long)]
    wait_stdin: bool,
    /// Around each timed loop (after its warm-up, and after it), print
    /// `{"before":LOOP,"pid":PID}` or `{"after":…}` and wait for a line on stdin,
    /// so that the bench can read the BPF programs' counters there.
    #[arg(long)]
    pause_each: bool,
}

pub fn main(args: LoadArgs) -> Result<()> {
    let out = match args.kind {
        Kind::OpenClose(args) => loops(args, true, false)?,
        Kind::Connect(args) => loops(args, false, true)?,
        Kind::Loops(args) => loops(args, true, true)?,
        Kind::Writes {
            loops,
            to,
            host,
            size,
            settle_ms,
        } => writes(loops, to, &host, size, settle_ms)?,
        Kind::OpenRate { rate, millis } => open_rate(rate, millis)?,
        Kind::RaceOnce { credential, target } => race_once(&credential, &target)?,
        Kind::RaceChildren {
            credential,
            target,
            count,
        } => race_children(&credential, &target, count)?,
        Kind::Latency {
            credential,
            target,
            count,
            interval_ms,
        } => latency(&credential, &target, count, interval_ms)?,
        Kind::Sleepers { count } => sleepers(count)?,
        Kind::Time { command } => time(&command)?,
    };
    println!("{out}");
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock and a valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of the calling thread: what a system call costs it, whoever
/// else shares the machine.
fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("NUL in path")
}

/// A temporary file to open, removed on drop.
struct TempFile {
    path: PathBuf,
    c_path: CString,
}

impl TempFile {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("aw-bench-load-{}", std::process::id()));
        std::fs::write(&path, b"agentwatch bench\n")
            .with_context(|| format!("writing {}", path.display()))?;
        let c_path = cstring(&path)?;
        Ok(Self { path, c_path })
    }

    fn open_close(&self) -> bool {
        // SAFETY: a valid NUL-terminated path.
        unsafe {
            let fd = libc::open(self.c_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return false;
            }
            libc::close(fd);
        }
        true
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// socket+connect+close; 0 or -errno of the connect.
fn connect_once(addr: &libc::sockaddr_in) -> i32 {
    // SAFETY: plain system calls on a socket this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return -errno();
        }
        let ret = libc::connect(
            fd,
            (addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let ret = if ret == 0 { 0 } else { -errno() };
        libc::close(fd);
        ret
    }
}

/// A port on 127.0.0.1 nothing listens on (in this network namespace).
fn closed_port() -> Result<SocketAddrV4> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let SocketAddr::V4(addr) = socket.local_addr()? else {
        bail!("not IPv4");
    };
    drop(socket);
    // A bound-then-closed socket leaves nothing listening: check.
    let ret = connect_once(&sockaddr(addr));
    if ret != -libc::ECONNREFUSED {
        bail!("connect to {addr} returned {ret}, not ECONNREFUSED");
    }
    Ok(addr)
}

/// Runs `op` for `args.iterations` or `args.millis`, after a short warm-up.
fn measure(args: LoopArgs, name: &str, mut op: impl FnMut() -> bool) -> Result<Value> {
    const WARMUP: u64 = 500;
    const CHUNK: u64 = 64;
    let mut failures = 0u64;
    for _ in 0..WARMUP {
        failures += u64::from(!op());
    }
    if args.pause_each {
        pause("before", name)?;
    }
    let start = monotonic_ns();
    let cpu_start = thread_cpu_ns();
    let mut iterations = 0u64;
    match args.iterations {
        Some(n) => {
            for _ in 0..n {
                failures += u64::from(!op());
            }
            iterations = n;
        }
        None => {
            let limit = args.millis * 1_000_000;
            while monotonic_ns() - start < limit {
                for _ in 0..CHUNK {
                    failures += u64::from(!op());
                }
                iterations += CHUNK;
            }
        }
    }
    let ns = monotonic_ns() - start;
    let cpu_ns = thread_cpu_ns() - cpu_start;
    if args.pause_each {
        pause("after", name)?;
    }
    Ok(json!({
        "iterations": iterations,
        "ns": ns,
        "ns_per_op": ns as f64 / iterations.max(1) as f64,
        "cpu_ns": cpu_ns,
        "cpu_ns_per_op": cpu_ns as f64 / iterations.max(1) as f64,
        "failures": failures,
    }))
}

/// Says where the load is (`{"before":"open_close","pid":PID}`) and waits
/// for a line.
fn pause(at: &str, name: &str) -> Result<()> {
    println!("{}", json!({ at: name, "pid": std::process::id() }));
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("stdin closed while paused {at} {name}");
    }
    Ok(())
}

fn wait_for_go() -> Result<()> {
    println!("{}", json!({ "ready": std::process::id() }));
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

fn loops(args: LoopArgs, open: bool, connect: bool) -> Result<Value> {
    let file = TempFile::new()?;
    let target = sockaddr(closed_port()?);
    if args.wait_stdin {
        wait_for_go()?;
    }
    let mut out = json!({ "pid": std::process::id() });
    if open {
        out["open_close"] = measure(args, "open_close", || file.open_close())?;
    }
    if connect {
        out["connect"] = measure(args, "connect", || {
            connect_once(&target) == -libc::ECONNREFUSED
        })?;
    }
    Ok(out)
}

fn writes(
    args: LoopArgs,
    to: SocketAddrV4,
    host: &str,
    size: usize,
    settle_ms: u64,
) -> Result<Value> {
    let mut stream =
        std::net::TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
    // As HTTP and TLS clients do: each write is a segment of its own.
    stream.set_nodelay(true)?;
    if args.wait_stdin {
        wait_for_go()?;
    }
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .context("the first write")?;
    std::thread::sleep(Duration::from_millis(settle_ms));
    let fd = stream.as_raw_fd();
    let buf = vec![b'x'; size];
    // SAFETY: a write from a live buffer to the stream's own socket.
    let write = || unsafe { libc::write(fd, buf.as_ptr().cast(), size) } == size as isize;
    Ok(json!({
        "pid": std::process::id(),
        "to": to.to_string(),
        "host": host,
        "size": size,
        "settle_ms": settle_ms,
        "writes": sliced(args, write)?,
    }))
}

/// [`measure`] in slices: the median slice leaves out a burst of the
/// machine's other work (on a shared VM that inflates even CPU time).
fn sliced(args: LoopArgs, op: impl Fn() -> bool) -> Result<Value> {
    const SLICES: u64 = 5;
    let slice = LoopArgs {
        iterations: args.iterations.map(|n| n / SLICES),
        millis: args.millis / SLICES,
        ..args
    };
    let slices: Vec<Value> = (0..SLICES)
        .map(|_| measure(slice, "writes", &op))
        .collect::<Result<_>>()?;
    let median_of = |key: &str| {
        let values: Vec<f64> = slices.iter().filter_map(|s| s[key].as_f64()).collect();
        super::report::median(&values)
    };
    let total = |key: &str| slices.iter().filter_map(|s| s[key].as_u64()).sum::<u64>();
    Ok(json!({
        "ns_per_op": median_of("ns_per_op"),
        "cpu_ns_per_op": median_of("cpu_ns_per_op"),
        "iterations": total("iterations"),
        "failures": total("failures"),
        "slices": slices,
    }))
}

/// open(2) at `rate` for `millis` of a path that does not exist: every
/// failed open is reported, where a thread's repeat of a successful one
/// is counted and not sent, so each call is one event to ingest.
fn open_rate(rate: u64, millis: u64) -> Result<Value> {
    let missing = cstring(
        &std::env::temp_dir().join(format!("aw-bench-load-{}-absent", std::process::id())),
    )?;
    let open_missing = || {
        // SAFETY: a valid NUL-terminated path; a descriptor it gave would be closed.
        unsafe {
            let fd = libc::open(missing.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::close(fd);
            }
            fd < 0
        }
    };
    let limit = millis * 1_000_000;
    let start = monotonic_ns();
    let mut done = 0u64;
    let mut failures = 0u64;
    loop {
        let elapsed = monotonic_ns() - start;
        if elapsed >= limit {
            break;
        }
        let due = (rate as u128 * elapsed as u128 / 1_000_000_000) as u64;
        if done >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        for _ in 0..(due - done).min(64) {
            failures += u64::from(!open_missing());
            done += 1;
        }
    }
    let ns = monotonic_ns() - start;
    Ok(json!({
        "ops": done,
        "ns": ns,
        "rate": done as f64 * 1e9 / ns as f64,
        "failures": failures,
    }))
}

fn resolve_v4(target: &str) -> Result<libc::sockaddr_in> {
    let addr = target
        .to_socket_addrs()
        .with_context(|| format!("resolving {target}"))?
        .find_map(|addr| match addr {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .with_context(|| format!("{target} has no IPv4 address"))?;
    Ok(sockaddr(addr))
}

/// open+read+close of `path`; false when it could not be read.
fn read_credential(path: &CString) -> bool {
    let mut buf = [0u8; 256];
    // SAFETY: a valid path and buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n > 0
    }
}

fn race_once(credential: &Path, target: &str) -> Result<Value> {
    let addr = resolve_v4(target)?;
    let path = cstring(credential)?;
    let read = read_credential(&path);
    let ret = connect_once(&addr);
    Ok(json!({ "read": read, "connect": ret }))
}

/// Exit codes of a race child.
const CHILD_BLOCKED: i32 = 0;
const CHILD_CONNECTED: i32 = 200;
const CHILD_UNREAD: i32 = 201;

fn race_children(credential: &Path, target: &str, count: u64) -> Result<Value> {
    let addr = resolve_v4(target)?;
    let path = cstring(credential)?;
    let (mut blocked, mut connected, mut unread, mut fork_failed) = (0u64, 0u64, 0u64, 0u64);
    let mut other = std::collections::BTreeMap::<String, u64>::new();
    let start = monotonic_ns();
    for _ in 0..count {
        // SAFETY: this process is single-threaded; the child makes only
        // system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            fork_failed += 1;
            continue;
        }
        if pid == 0 {
            let code = if !read_credential(&path) {
                CHILD_UNREAD
            } else {
                match connect_once(&addr) {
                    0 => CHILD_CONNECTED,
                    ret if ret == -libc::EPERM => CHILD_BLOCKED,
                    ret => (-ret).clamp(1, 199),
                }
            };
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let status = std::process::ExitStatus::from_raw(status);
        match status.code() {
            Some(CHILD_BLOCKED) => blocked += 1,
            Some(CHILD_CONNECTED) => connected += 1,
            Some(CHILD_UNREAD) => unread += 1,
            Some(errno) => *other.entry(format!("errno {errno}")).or_default() += 1,
            None => {
                *other
                    .entry(format!("signal {}", status.signal().unwrap_or(0)))
                    .or_default() += 1
            }
        }
    }
    Ok(json!({
        "count": count,
        "blocked": blocked,
        "connected": connected,
        "unread": unread,
        "fork_failed": fork_failed,
        "other": other,
        "ns": monotonic_ns() - start,
    }))
}

fn latency(credential: &Path, target: &str, count: u64, interval_ms: u64) -> Result<Value> {
    let addr = resolve_v4(target)?;
    let path = cstring(credential)?;
    if !read_credential(&path) {
        bail!("cannot read {}", credential.display());
    }
    let mut samples = Vec::with_capacity(count as usize);
    for _ in 0..count {
        std::thread::sleep(Duration::from_millis(interval_ms));
        // SAFETY: plain system calls on a socket this loop owns.
        let (called, returned, ret) = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!("socket: {}", std::io::Error::last_os_error());
            }
            let called = monotonic_ns();
            let ret = libc::connect(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let returned = monotonic_ns();
            let ret = if ret == 0 { 0 } else { -errno() };
            libc::close(fd);
            (called, returned, ret)
        };
        samples.push(json!([called, returned, realtime_ns(), ret]));
    }
    Ok(json!({ "samples": samples }))
}

fn sleepers(count: u64) -> Result<Value> {
    let parent = std::process::id() as i32;
    let mut children = Vec::with_capacity(count as usize);
    let mut error = None;
    for _ in 0..count {
        // SAFETY: single-threaded; the child only makes system calls.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            error = Some(std::io::Error::last_os_error().to_string());
            break;
        }
        if pid == 0 {
            // SAFETY: system calls only; the child dies with its parent.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
                loop {
                    libc::pause();
                }
            }
        }
        children.push(pid);
    }
    println!(
        "{}",
        json!({
            "ready": children.len(),
            "pid": parent,
            // SAFETY: getppid cannot fail.
            "ppid": unsafe { libc::getppid() },
            "error": error,
        })
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    for &pid in &children {
        // SAFETY: our own children, still unreaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &children {
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    Ok(json!({ "killed": children.len() }))
}

fn time(command: &[OsString]) -> Result<Value> {
    let start = monotonic_ns();
    let status = Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("starting {:?}", command[0]))?;
    let ns = monotonic_ns() - start;
    Ok(json!({ "ns": ns, "success": status.success(), "status": status.to_string() }))
}
