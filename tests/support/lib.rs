//! Helpers for agentwatch's integration tests: running commands under
//! `agentwatch run`, reading the events it wrote, and network namespaces the
//! tests create and remove themselves.

use std::{
    fs::File,
    io::Read as _,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod expect;

/// How long any agentwatch invocation in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The agentwatch binary under test: `AGENTWATCH_BIN` (set by `cargo xtask
/// test`), else the workspace's debug build.
pub fn agentwatch() -> PathBuf {
    let path = std::env::var_os("AGENTWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("agentwatch"));
    assert!(
        path.is_file(),
        "{} does not exist: build it with `cargo xtask build`",
        path.display()
    );
    path
}

/// The directory holding this package's binaries (next to `deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("target dir").to_path_buf()
}

/// The real agents' npm packages the daemon tests start (`cargo xtask
/// setup` installs them into [`agent_packages_dir`]): package, version.
pub const AGENT_PACKAGES: &[(&str, &str)] = &[
    ("@anthropic-ai/claude-code", "2.1.197"),
    ("@openai/codex", "0.171.0"),
    ("@google/gemini-cli", "0.61.0"),
];

/// Where the agents' packages are installed (an npm prefix), beside the
/// toolchain set-up builds; `AGENTWATCH_AGENTS_DIR` overrides it.
pub fn agent_packages_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AGENTWATCH_AGENTS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/agentwatch/agents")
}

/// Whether `package` at `version` is installed under `dir`'s node_modules.
pub fn agent_package_installed(dir: &Path, package: &str, version: &str) -> bool {
    let manifest = dir.join("node_modules").join(package).join("package.json");
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|json| json["version"] == version)
}

/// `aw-probe`, the helper that makes single system calls.
pub fn probe() -> PathBuf {
    target_dir().join("aw-probe")
}

/// Tests load eBPF programs: without root they must fail, never skip.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "agentwatch's integration tests load eBPF programs and must run as root"
    );
}

/// Waits for `cmd` with [`TIMEOUT`], killing it (by its pid) if it overruns.
pub fn output_with_timeout(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("starting {cmd:?}: {error}"));
    wait_child_with_timeout(child, &format!("{cmd:?}"))
}

/// Waits for `child` (`what`) and what it wrote to its pipes; killed, and
/// the test failed, after TIMEOUT.
fn wait_child_with_timeout(child: std::process::Child, what: &str) -> Output {
    let pid = child.id();
    let waiter = thread::spawn(move || child.wait_with_output());
    let deadline = Instant::now() + TIMEOUT;
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the pid of the child we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    waiter.join().expect("waiter").expect("wait")
}

/// Runs `cmd` as the session leader of a new terminal of `rows` x `cols`
/// (its stdin, stdout and stderr), as a full-screen program runs; returns
/// how it exited and every byte that reached the screen.
pub fn output_on_terminal(cmd: &mut Command, rows: u16, cols: u16) -> (ExitStatus, Vec<u8>) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes the two descriptors it opens; the name buffer
    // and termios are optional.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
    cmd.stdin(stdio(&slave))
        .stdout(stdio(&slave))
        .stderr(stdio(&slave));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|error| panic!("starting {cmd:?}: {error}"));
    // Only the child holds the terminal now (the command's copies go with
    // its stdio): reading ends (EIO) when it and everything it started
    // have closed it.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    drop(slave);
    let reader = thread::spawn(move || {
        let mut screen = Vec::new();
        let mut master = master;
        let _ = master.read_to_end(&mut screen);
        screen
    });
    let output = wait_child_with_timeout(child, &format!("{cmd:?}"));
    (output.status, reader.join().expect("terminal reader"))
}

/// What one `agentwatch run` produced.
#[derive(Debug)]
pub struct Watched {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub events: Vec<Value>,
}

impl Watched {
    pub fn code(&self) -> i32 {
        self.status.code().expect("agentwatch exited by a signal")
    }

    /// The system call results aw-probe printed, one per line.
    pub fn results(&self) -> Vec<i64> {
        expect::results(self.stdout.as_bytes())
    }

    /// The events one per line, for a failure message, without the
    /// failed opens and execs of the loader's and the shell's path search.
    pub fn events_text(&self) -> String {
        self.events
            .iter()
            .filter(|e| {
                !(matches!(e["kind"].as_str(), Some("open" | "exec"))
                    && e["ret"].as_i64().is_some_and(|ret| ret < 0))
            })
            .map(|e| format!("{e}\n"))
            .collect()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }

    /// Successful opens whose resolved path is `resolved`.
    pub fn opens_of(&self, resolved: &str) -> Vec<&Value> {
        self.of_kind("open")
            .into_iter()
            .filter(|e| e["resolved"] == resolved && e["ret"].as_i64() >= Some(0))
            .collect()
    }

    pub fn sessions(&self) -> std::collections::BTreeSet<u64> {
        self.events
            .iter()
            .filter_map(|e| e["session"].as_u64())
            .collect()
    }
}

/// The probe's connect was refused with EPERM, nothing reached the
/// listener, and the session got one alert and the stderr line.
pub fn assert_blocked(watched: &Watched, listener: &Listener, what: &str) {
    assert_eq!(
        watched.results(),
        [-libc::EPERM as i64],
        "{what}: the connect must fail with EPERM; stderr:\n{}\nevents:\n{}",
        watched.stderr,
        watched.events_text()
    );
    assert_eq!(
        listener.connections(),
        0,
        "{what}: nothing may reach the host"
    );
    assert_eq!(
        watched.of_kind("alert").len(),
        1,
        "{what}: one alert; {:#?}",
        watched.events
    );
    assert!(
        watched.stderr.contains("agentwatch: BLOCKED"),
        "{what}: a readable line on stderr:\n{}",
        watched.stderr
    );
}

/// The probe's connect went through to the listener, with no alert.
pub fn assert_allowed(watched: &Watched, listener: &Listener, what: &str) {
    assert_eq!(
        watched.results(),
        [0],
        "{what}: the connect must succeed; stderr:\n{}",
        watched.stderr
    );
    assert_eq!(
        listener.connections(),
        1,
        "{what}: the host must see the call"
    );
    assert!(
        watched.of_kind("alert").is_empty(),
        "{what}: no alert; {:#?}",
        watched.of_kind("alert")
    );
}

/// Parses a JSON-lines file, failing the test on any malformed line.
pub fn read_events(path: &Path) -> Vec<Value> {
    parse_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("bad line {line:?}: {error}"))
        })
        .collect()
}

/// The daemon's event log at `path` as a shipper would read it: each
/// gzip-compressed backup (`events.jsonl.N.gz`, oldest first), then the file.
/// A rotation while the files are opened (they are renamed) means reading
/// them again.
pub fn read_event_log(path: &Path) -> Vec<Value> {
    loop {
        let opened: std::io::Result<Vec<_>> = event_log_files(path)
            .into_iter()
            .map(|name| std::fs::File::open(&name).map(|file| (name, file)))
            .collect();
        let opened = match opened {
            Ok(opened) => opened,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => panic!("reading the event log {}: {error}", path.display()),
        };
        return opened
            .into_iter()
            .flat_map(|(name, mut file)| {
                use std::io::Read as _;
                let mut text = String::new();
                if name.extension().is_some_and(|ext| ext == "gz") {
                    flate2::read::GzDecoder::new(file)
                        .read_to_string(&mut text)
                        .expect("gzip backup");
                } else {
                    file.read_to_string(&mut text).expect("log file");
                }
                parse_lines(&text)
            })
            .collect();
    }
}

/// The files of the event log at `path`, oldest first: `.N.gz` by falling N, then `path`.
pub fn event_log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| PathBuf::from(format!("{}.{n}.gz", path.display())))
        .take_while(|backup| backup.exists())
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// Runs `command` under `agentwatch run` with extra `options`, optionally
/// wrapped by `prefix` (e.g. `ip netns exec NS`).
pub fn watch_with<S: AsRef<std::ffi::OsStr>>(
    prefix: &[S],
    options: &[&str],
    command: &[&str],
) -> Watched {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let agentwatch = agentwatch();
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(&agentwatch);
            cmd
        }
        None => Command::new(&agentwatch),
    };
    cmd.arg("run")
        .arg("--events")
        .arg(&events)
        .args(options)
        .arg("--")
        .args(command);
    let output = output_with_timeout(&mut cmd);
    Watched {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        events: read_events(&events),
    }
}

pub fn watch(command: &[&str]) -> Watched {
    watch_options(&[], command)
}

/// `agentwatch run OPTIONS -- COMMAND`.
pub fn watch_options(options: &[&str], command: &[&str]) -> Watched {
    watch_with::<&str>(&[], options, command)
}

/// A network namespace with loopback up, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "aw-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let netns = Self { name };
        run_ok(Command::new("ip").args(["-n", &netns.name, "link", "set", "lo", "up"]));
        netns
    }

    /// `ip netns exec NAME` as a command prefix.
    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a set-up command, failing the test if it fails.
pub fn run_ok(cmd: &mut Command) {
    let output = output_with_timeout(cmd);
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `st_dev` and `st_ino` of a file, as events report them.
pub fn identity(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.dev(), meta.ino())
}

/// dnsmasq in the foreground on the namespace's 127.0.0.1:53, answering
/// only the names it is given and NXDOMAIN for every other: no query ever
/// leaves the namespace. Shared with `cargo xtask bench`.
pub const DNSMASQ_ARGS: &[&str] = &[
    "--keep-in-foreground",
    "--no-resolv",
    "--no-hosts",
    "--user=root",
    "--pid-file=",
    "--listen-address=127.0.0.1",
    "--bind-interfaces",
    "--address=/#/",
];

/// A network namespace with its own DNS: dnsmasq on 127.0.0.1:53 inside it
/// answering only the names given (NXDOMAIN for everything else), and
/// `/etc/netns/NAME/resolv.conf` pointing at it, which `ip netns exec`
/// mounts over /etc/resolv.conf. Everything is removed on drop.
pub struct DnsLab {
    pub netns: NetNs,
    dnsmasq: std::process::Child,
    resolv_dir: PathBuf,
}

/// What a lab's resolver configuration says, beyond the defaults.
#[derive(Default)]
pub struct Resolver<'a> {
    /// The nameserver in resolv.conf, instead of dnsmasq's 127.0.0.1.
    pub nameserver: Option<&'a str>,
    /// More resolv.conf options (`use-vc`: every query over TCP).
    pub options: &'a [&'a str],
    /// Lines of the namespace's /etc/hosts (`ip netns exec` mounts
    /// /etc/netns/NAME/hosts over it), after localhost's.
    pub hosts: Option<&'a str>,
}

impl DnsLab {
    /// `args` are dnsmasq options such as `--address=/host/127.0.0.2`,
    /// `--host-record=...` or `--cname=...`.
    pub fn new(args: &[String]) -> Self {
        Self::with_resolver(args, &Resolver::default())
    }

    pub fn with_resolver(args: &[String], resolver: &Resolver) -> Self {
        let netns = NetNs::new();
        let resolv_dir = Path::new("/etc/netns").join(&netns.name);
        std::fs::create_dir_all(&resolv_dir).expect("creating /etc/netns/NAME");
        std::fs::write(
            resolv_dir.join("resolv.conf"),
            format!(
                "nameserver {}\noptions timeout:1 attempts:2 {}\n",
                resolver.nameserver.unwrap_or("127.0.0.1"),
                resolver.options.join(" ")
            ),
        )
        .expect("writing resolv.conf");
        if let Some(hosts) = resolver.hosts {
            std::fs::write(
                resolv_dir.join("hosts"),
                format!("127.0.0.1 localhost\n::1 localhost\n{hosts}\n"),
            )
            .expect("writing hosts");
        }
        let dnsmasq = Command::new("ip")
            .args(["netns", "exec", &netns.name, "dnsmasq"])
            .args(DNSMASQ_ARGS)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq (is it installed? cargo xtask setup)");
        let lab = Self {
            netns,
            dnsmasq,
            resolv_dir,
        };
        lab.wait_for_dns();
        lab
    }

    fn wait_for_dns(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let answered = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.netns.name,
                    "getent",
                    "hosts",
                    "localhost",
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            let port_open = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.netns.name,
                    "ss",
                    "-lun",
                    "sport = :53",
                ])
                .output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(":53"));
            if answered && port_open {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq did not start in {}", self.netns.name);
    }

    /// A TCP listener on `addr` inside the namespace.
    pub fn listen(&self, addr: &str) -> Listener {
        Listener::new(self.bind(addr))
    }

    /// A TCP socket bound to `addr` inside the namespace, listening.
    pub fn bind(&self, addr: &str) -> std::net::TcpListener {
        self.inside(addr, std::net::TcpListener::bind)
    }

    /// A UDP socket bound to `addr` inside the namespace, which answers
    /// nothing: a nameserver that never replies.
    pub fn bind_udp(&self, addr: &str) -> std::net::UdpSocket {
        self.inside(addr, std::net::UdpSocket::bind)
    }

    fn inside<T: Send + 'static>(
        &self,
        addr: &str,
        bind: fn(std::net::SocketAddr) -> std::io::Result<T>,
    ) -> T {
        let addr: std::net::SocketAddr = addr.parse().expect("ADDR:PORT");
        let netns_path = Path::new("/run/netns").join(&self.netns.name);
        // setns(CLONE_NEWNET) changes only the calling thread: bind there.
        thread::spawn(move || {
            let file = std::fs::File::open(&netns_path).expect("open netns");
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid namespace fd; affects this thread only.
            let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
            bind(addr).expect("bind in netns")
        })
        .join()
        .expect("listener thread")
    }

    /// `ip netns exec NAME env --chdir=HOME HOME=HOME ...` as a command
    /// prefix: agentwatch then takes `home` as both the user's home and the
    /// workspace, and `vars` (`NAME=value`) are in the session's environment.
    pub fn prefix_with_home(&self, home: &Path, vars: &[&str]) -> Vec<String> {
        let mut prefix = vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.netns.name.clone(),
            "env".into(),
            format!("--chdir={}", home.display()),
            format!("HOME={}", home.display()),
        ];
        prefix.extend(vars.iter().map(|var| var.to_string()));
        prefix
    }

    /// `sh -c SCRIPT` in the namespace, ended when the result is dropped
    /// (a failing test included).
    pub fn background(&self, script: &str) -> Background {
        Background(
            Command::new("ip")
                .args(["netns", "exec", &self.netns.name, "sh", "-c", script])
                .spawn()
                .expect("starting a background script"),
        )
    }
}

/// A process the test started, killed and reaped on drop.
pub struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
    }
}

/// A listening socket; connections are counted by draining its queue, which
/// the kernel fills as soon as a handshake completes, and the bytes they
/// delivered are read as they come (a refused write must deliver none).
pub struct Listener {
    listener: std::net::TcpListener,
    accepted: std::cell::RefCell<Vec<std::net::TcpStream>>,
    received: std::cell::Cell<usize>,
}

impl Listener {
    fn new(listener: std::net::TcpListener) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        Self {
            listener,
            accepted: Default::default(),
            received: Default::default(),
        }
    }

    /// Connections that reached the listener so far.
    pub fn connections(&self) -> usize {
        while let Ok((stream, _)) = self.listener.accept() {
            stream.set_nonblocking(true).expect("nonblocking");
            self.accepted.borrow_mut().push(stream);
        }
        self.accepted.borrow().len()
    }

    /// Bytes that reached the listener over all its connections so far.
    pub fn bytes(&self) -> usize {
        use std::io::Read as _;
        self.connections();
        let mut buf = [0u8; 4096];
        for stream in self.accepted.borrow_mut().iter_mut() {
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                self.received.set(self.received.get() + n);
            }
        }
        self.received.get()
    }
}

/// `agentwatch daemon` running inside a lab's network namespace, with its
/// control socket in a temporary directory; stopped (SIGTERM) on drop.
pub struct Daemon {
    /// In a cell: waits poll it, so a daemon that exits fails the test at once.
    child: std::cell::RefCell<std::process::Child>,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The event log, in the state directory.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `home`'s credentials counting and extra
    /// `args`, and waits until it watches.
    pub fn start(lab: &DnsLab, home: &Path, args: &[&str]) -> Self {
        Self::start_in(lab, home, None, args)
    }

    /// Like [`Daemon::start`], on the control socket (and so the runtime
    /// directory) of an earlier daemon.
    pub fn start_with_socket(lab: &DnsLab, home: &Path, socket: &Path, args: &[&str]) -> Self {
        Self::start_in(lab, home, Some(socket), args)
    }

    fn start_in(lab: &DnsLab, home: &Path, socket: Option<&Path>, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = socket.map_or_else(|| dir.path().join("agentwatch.sock"), Path::to_path_buf);
        // The state beside the socket: a daemon on an earlier one's socket finds its state.
        let state = socket.parent().expect("socket dir").to_path_buf();
        let daemon = Self::spawn(lab, dir, socket, &state, home, &["daemon"], &[], args);
        daemon.wait_for("daemon watching agents");
        daemon
    }

    /// Starts the daemon as the unit file does: its ExecStartPre must pass,
    /// then its ExecStart runs with `NOTIFY_SOCKET`, a watchdog and stderr
    /// as the journal (`JOURNAL_STREAM`), its
    /// control socket in `runtime`, its state in `state`. Returns once the
    /// daemon says READY=1.
    pub fn start_as_unit(
        lab: &DnsLab,
        home: &Path,
        runtime: &Path,
        state: &Path,
        notify: &NotifySocket,
        args: &[&str],
    ) -> Self {
        let pre = unit_command("ExecStartPre");
        let checked = output_with_timeout(Command::new(agentwatch()).args(&pre));
        assert!(checked.status.success(), "ExecStartPre failed: {checked:?}");
        let start = unit_command("ExecStart");
        let start: Vec<&str> = start.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        // systemd connects stderr to the journal and names the stream; the
        // file spawn writes stderr to stands in for it.
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let journal_stream = {
            use std::os::unix::fs::MetadataExt as _;
            let meta = stderr.metadata().expect("stat stderr");
            format!("{}:{}", meta.dev(), meta.ino())
        };
        let env = [
            ("NOTIFY_SOCKET", notify.path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("2000000")),
            ("JOURNAL_STREAM", std::ffi::OsStr::new(&journal_stream)),
        ];
        let socket = runtime.join("agentwatch.sock");
        let daemon = Self::spawn(lab, dir, socket, state, home, &start, &env, args);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !notify.received("READY=1") {
            daemon.assert_running("READY=1");
            assert!(
                Instant::now() < deadline,
                "no READY=1; stderr:\n{}",
                daemon.stderr()
            );
        }
        daemon
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        lab: &DnsLab,
        dir: tempfile::TempDir,
        socket: PathBuf,
        state: &Path,
        home: &Path,
        command: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        args: &[&str],
    ) -> Self {
        require_root();
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let log = state.join("events.jsonl");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.netns.name])
            .arg(agentwatch())
            .args(command)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(state)
            .arg("--log")
            .arg(&log)
            .arg("--home")
            .arg(home)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting agentwatch daemon");
        Self {
            child: std::cell::RefCell::new(child),
            dir,
            socket,
            log,
        }
    }

    /// Waits until the daemon's stderr contains `text`, failing at once if
    /// the daemon exits first (a kernel that rejects its programs, say).
    pub fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.stderr().contains(text) {
            self.assert_running(&format!("saying {text:?}"));
            assert!(
                Instant::now() < deadline,
                "the daemon never said {text:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test, with the daemon's stderr, if the daemon has exited.
    fn assert_running(&self, before: &str) {
        let exited = self.child.borrow_mut().try_wait().expect("wait");
        if let Some(status) = exited {
            panic!(
                "the daemon exited ({status}) before {before}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.borrow().id()
    }

    /// The file beside the control socket where the daemon saves what each
    /// session held, for a restarted daemon.
    pub fn saved_sessions(&self) -> PathBuf {
        self.socket.with_file_name("sessions.json")
    }

    /// `agentwatch ARGS --socket SOCKET`, a client of this daemon.
    pub fn client(&self, args: &[&str]) -> Output {
        output_with_timeout(
            Command::new(agentwatch())
                .args(args)
                .arg("--socket")
                .arg(&self.socket),
        )
    }

    /// The events the daemon has published so far (its recent ones).
    pub fn events(&self) -> Vec<Value> {
        let output = self.client(&["events", "--no-follow"]);
        assert!(output.status.success(), "agentwatch events: {output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("event JSON"))
            .collect()
    }

    /// Polls the daemon's events until one satisfies `wanted`.
    pub fn wait_for_event(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(event) = self.events().into_iter().find(&wanted) {
                return event;
            }
            self.assert_running(&format!("a {what} event"));
            assert!(
                Instant::now() < deadline,
                "no {what} event; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the daemon without warning, as a crash would.
    pub fn crash(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the daemon as systemd would and returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let child = self.child.get_mut();
        // SAFETY: kill(2) on the pid of the child we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().expect("wait");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.get_mut().try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// The arguments of the unit file's `KEY=/usr/bin/agentwatch ARGS`
/// line (the first, when there are several).
pub fn unit_command(key: &str) -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agentwatch/dist/agentwatch.service");
    let text = std::fs::read_to_string(&unit).expect("the unit file");
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {}", unit.display()));
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/agentwatch"), "{line}");
    words.map(str::to_string).collect()
}

/// A socket standing in for systemd's `NOTIFY_SOCKET`: what a service
/// tells the manager (READY=1, RELOADING=1, WATCHDOG=1, ...).
pub struct NotifySocket {
    pub path: PathBuf,
    socket: std::os::unix::net::UnixDatagram,
    messages: std::cell::RefCell<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Self {
            path,
            socket,
            messages: Default::default(),
            _dir: dir,
        }
    }

    /// Every assignment (`READY=1`) received so far, in order, after
    /// waiting up to 100 ms for more.
    pub fn messages(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            self.messages
                .borrow_mut()
                .extend(text.lines().map(str::to_string));
        }
        self.messages.borrow().clone()
    }

    pub fn received(&self, line: &str) -> bool {
        self.messages().iter().any(|message| message == line)
    }

    /// Waits up to 30 s until `line` arrives.
    pub fn wait_for(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.received(line) {
            assert!(
                Instant::now() < deadline,
                "never told {line}: {:?}",
                self.messages()
            );
        }
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        Self::new()
    }
}

/// The world enforcement tests run in: a [`DnsLab`] answering the catalog's
/// names with loopback addresses, and a home holding fake credentials.
pub struct Lab {
    pub dns: DnsLab,
    pub home: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Self {
        Self::with_records(&[])
    }

    /// The lab, with more dnsmasq options (`--host-record=NAME,ADDR`).
    pub fn with_records(records: &[&str]) -> Self {
        let mut args: Vec<String> = vec![
            "--host-record=backboard.railway.app,127.0.0.2".into(),
            "--host-record=api.example.org,127.0.0.9".into(),
            "--host-record=ec2.us-east-1.amazonaws.com,127.0.0.3".into(),
            // A CNAME out of the infrastructure suffix: what the name
            // resolves to counts, whatever the chain's last name is.
            "--cname=s3.eu-west-1.amazonaws.com,bucket-lb.storage.test".into(),
            "--host-record=bucket-lb.storage.test,127.0.0.5".into(),
        ];
        args.extend(records.iter().map(|record| record.to_string()));
        Self::with_dns(DnsLab::new(&args))
    }

    /// A lab around DNS of the test's own making.
    pub fn with_dns(dns: DnsLab) -> Self {
        let home = tempfile::tempdir().expect("home");
        write(
            &home.path().join(".railway/config.json"),
            r#"{"user":{"token":"fake"}}"#,
        );
        write(
            &home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = fake\naws_secret_access_key = fake\n",
        );
        Self { dns, home }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.home.path().join(relative)
    }

    pub fn railway_config(&self) -> String {
        self.path(".railway/config.json").display().to_string()
    }

    pub fn listen(&self, addr: &str) -> Listener {
        self.dns.listen(addr)
    }

    /// `agentwatch run OPTIONS -- sh -c SCRIPT` in the lab, with `vars` in
    /// the session's environment. `$PROBE` is aw-probe.
    pub fn run(&self, options: &[&str], vars: &[&str], script: &str) -> Watched {
        let prefix = self.dns.prefix_with_home(self.home.path(), vars);
        let script = format!("PROBE={}\n{script}", probe().display());
        watch_with(&prefix, options, &["sh", "-c", &script])
    }

    /// `sh -c SCRIPT` in the lab with no wrapper (the daemon finds agents
    /// by itself), with `vars` in its environment. `$PROBE` is aw-probe.
    pub fn command(&self, vars: &[&str], script: &str) -> Command {
        self.wrapped(vars, &[], script)
    }

    /// `agentwatch run OPTIONS -- sh -c SCRIPT` in the lab, to be waited for
    /// by the test. `$PROBE` is aw-probe.
    pub fn run_command(&self, options: &[&str], script: &str) -> Command {
        let mut wrapper = vec![agentwatch().into_os_string(), "run".into()];
        wrapper.extend(options.iter().map(Into::into));
        wrapper.push("--".into());
        self.wrapped(&[], &wrapper, script)
    }

    /// Like [`Lab::command`], as `user`, whose the lab's home becomes.
    pub fn command_as(&self, user: &DesktopUser, script: &str) -> Command {
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", user.uid, user.gid))
                .arg(self.home.path()),
        );
        self.wrapped(&[], &user.setpriv(), script)
    }

    fn wrapped(&self, vars: &[&str], wrapper: &[std::ffi::OsString], script: &str) -> Command {
        let prefix = self.dns.prefix_with_home(self.home.path(), vars);
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..])
            .arg(format!("PROBE={}", probe().display()))
            .args(wrapper)
            .args(["sh", "-c", script]);
        cmd
    }
}

/// A python client (system libssl, verification off) posting the GraphQL
/// document given as its argument to Railway's API; prints `NAME=0`, or
/// `NAME=1` and the error.
const GRAPHQL_CLIENT: &str = "import json, ssl, sys, urllib.request
name, document = sys.argv[1:3]
body = json.dumps({'query': document}).encode()
request = urllib.request.Request('https://backboard.railway.app/graphql/v2', data=body,
    headers={'Content-Type': 'application/json'})
try:
    urllib.request.urlopen(request, context=ssl._create_unverified_context()).read()
    print(name + '=0')
except Exception as error:
    print(name + '=1', error)
";

impl Lab {
    /// Puts the GraphQL client in the lab's home as `graphql.py`.
    pub fn write_graphql_client(&self) {
        write(&self.path("graphql.py"), GRAPHQL_CLIENT);
    }
}

/// Names a prebuilt [`go_graphql_client`] (the VM lane's guest, whose
/// target directory is read-only, gets the host's).
pub const GO_CLIENT_ENV: &str = "AGENTWATCH_GO_CLIENT";

/// `support/go_graphql`, a GraphQL client in Go (net/http over
/// crypto/tls), built once per test binary with the set-up's Go, offline,
/// unless [`GO_CLIENT_ENV`] names one built already.
pub fn go_graphql_client() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| match std::env::var_os(GO_CLIENT_ENV) {
            Some(prebuilt) => PathBuf::from(prebuilt),
            None => build_go_graphql_client(&target_dir()),
        })
        .clone()
}

/// Builds the Go GraphQL client into `target/go` (a cargo profile's
/// directory, such as `target/debug`) and returns its path.
pub fn build_go_graphql_client(target: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/go_graphql");
    let target = target.join("go");
    let binary = target.join("go_graphql");
    run_ok(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(&source)
            .env("GOCACHE", target.join("cache"))
            .env("GOPATH", target.join("path"))
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", "0"),
    );
    binary
}

/// The GraphQL client's command line, for a script run in the lab's home.
pub fn python_graphql(name: &str, document: &str) -> String {
    format!("python3 \"$HOME/graphql.py\" {name} '{document}'\n")
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

pub fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

/// Writes a self-signed P-256 certificate and its key into `dir` (openssl),
/// for the local TLS servers of the tests and the bench: (cert, key).
pub fn self_signed_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    use anyhow::Context as _;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=agentwatch-local", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl")?;
    anyhow::ensure!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((cert, key))
}

/// An HTTPS API inside a lab's namespace (`support/tls_server.py`, with a
/// self-signed certificate), recording every request it received. Clients
/// connect with verification off (`curl -k`). Killed, by its pid, on drop.
pub struct TlsApi {
    server: std::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsApi {
    /// Serves HTTP/1.1 on `addr` (`IP:PORT`) inside `netns`.
    pub fn start(netns: &NetNs, addr: &str) -> Self {
        Self::serve(netns, addr, "python3", "support/tls_server.py")
    }

    /// Serves HTTP/2 (ALPN `h2`) on `addr` inside `netns`, with Debian's
    /// python3 and its h2 module.
    pub fn start_http2(netns: &NetNs, addr: &str) -> Self {
        Self::serve(netns, addr, "/usr/bin/python3", "support/h2_server.py")
    }

    fn serve(netns: &NetNs, addr: &str, python: &str, server: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed_certificate(dir.path()).expect("a certificate");
        let log = dir.path().join("requests.jsonl");
        let (ip, port) = addr.rsplit_once(':').expect("IP:PORT");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(server);
        let mut server = Command::new("ip")
            .args(["netns", "exec", &netns.name, python])
            .arg(script)
            .args([&cert, &key])
            .args([ip, port])
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the TLS server");
        use std::io::BufRead as _;
        let mut ready = String::new();
        std::io::BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("reading the TLS server's readiness");
        assert_eq!(ready.trim(), "ready", "the TLS server did not start");
        Self {
            server,
            log,
            _dir: dir,
        }
    }

    /// Every whole request received so far: `method`, `path`, `body`. A
    /// head whose body was refused arrives alone and is not one.
    pub fn requests(&self) -> Vec<Value> {
        read_events(&self.log)
            .into_iter()
            .filter(|request| request["complete"] == true)
            .collect()
    }
}

impl Drop for TlsApi {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A throwaway user logged in at a desktop, as logind and a desktop set one
/// up: a runtime directory `/run/user/UID` (0700, the user's), a session bus
/// (`dbus-daemon --session`) at `/run/user/UID/bus` run as the user, and on
/// it a stand-in notification server (`support/notification_server.py`)
/// recording every Notify call. Everything, the user too, goes on drop.
pub struct DesktopUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    runtime_dir: PathBuf,
    bus: Option<std::process::Child>,
    server: Option<std::process::Child>,
    notifications: PathBuf,
    _dir: tempfile::TempDir,
}

impl DesktopUser {
    pub fn log_in() -> Self {
        let name = format!("aw-desk-{}", std::process::id());
        run_ok(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            &name,
        ]));
        let id = |flag: &str| -> u32 {
            let output = output_with_timeout(Command::new("id").args([flag, &name]));
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let dir = tempfile::tempdir().expect("tempdir");
        let notifications = dir.path().join("notifications.jsonl");
        std::fs::write(&notifications, "").expect("notifications file");
        let runtime_dir = PathBuf::from(format!("/run/user/{uid}"));
        let mut user = Self {
            name,
            uid,
            gid,
            runtime_dir,
            bus: None,
            server: None,
            notifications,
            _dir: dir,
        };
        std::fs::create_dir_all(&user.runtime_dir).expect("runtime dir");
        for path in [&user.runtime_dir, &user.notifications] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&user.runtime_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let address = format!("unix:path={}/bus", user.runtime_dir.display());
        let mut bus = user
            .as_user("dbus-daemon")
            .args(["--session", "--nofork", "--print-address"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon");
        let printed = first_line(&mut bus);
        user.bus = Some(bus);
        assert!(
            printed.starts_with(&address),
            "dbus-daemon said {printed:?}"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/notification_server.py");
        // Debian's python, which has its dbus and GLib modules.
        let mut server = user
            .as_user("/usr/bin/python3")
            .arg(script)
            .arg(&user.notifications)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the notification server");
        let ready = first_line(&mut server);
        user.server = Some(server);
        assert_eq!(ready, "ready", "the notification server did not start");
        user
    }

    /// `program` as this user.
    pub fn as_user(&self, program: &str) -> Command {
        let setpriv = self.setpriv();
        let mut cmd = Command::new(&setpriv[0]);
        cmd.args(&setpriv[1..]).arg(program);
        cmd
    }

    /// The command line that runs what follows it as this user, with no
    /// supplementary groups.
    fn setpriv(&self) -> Vec<std::ffi::OsString> {
        vec![
            "setpriv".into(),
            format!("--reuid={}", self.uid).into(),
            format!("--regid={}", self.gid).into(),
            "--clear-groups".into(),
        ]
    }

    /// Every Notify call the server received, oldest first.
    pub fn notifications(&self) -> Vec<Value> {
        read_events(&self.notifications)
    }
}

fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reading the first line");
    line.trim().to_string()
}

impl Drop for DesktopUser {
    fn drop(&mut self) {
        for child in [self.server.take(), self.bus.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}
