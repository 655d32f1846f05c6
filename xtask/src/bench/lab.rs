//! The bench's network namespace, as the integration tests build it
//! (tests/support/lib.rs `DnsLab`): loopback up, dnsmasq on 127.0.0.1:53
//! answering `backboard.railway.app` with 127.0.0.2 and NXDOMAIN for every
//! other name, and `/etc/netns/NAME/resolv.conf` pointing at it. Every
//! agentwatch and every load runs in it, so nothing the bench starts (nor
//! agentwatch resolving the catalog's hosts) sends a packet off this machine.

use std::{
    ffi::OsStr,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::procs::{Proc, run_quiet};

pub const RAILWAY_HOST: &str = "backboard.railway.app";
pub const RAILWAY_ADDR: &str = "127.0.0.2:443";

pub struct Lab {
    pub name: String,
    resolv_dir: PathBuf,
    dnsmasq: Option<Proc>,
}

impl Lab {
    pub fn new() -> Result<Self> {
        let name = format!("aw-bench-{}", std::process::id());
        run_quiet(Command::new("ip").args(["netns", "add", &name]))?;
        let resolv_dir = Path::new("/etc/netns").join(&name);
        let mut lab = Self {
            name,
            resolv_dir,
            dnsmasq: None,
        };
        run_quiet(Command::new("ip").args(["-n", &lab.name, "link", "set", "lo", "up"]))?;
        std::fs::create_dir_all(&lab.resolv_dir)
            .with_context(|| format!("creating {}", lab.resolv_dir.display()))?;
        std::fs::write(
            lab.resolv_dir.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
        )?;
        let mut dnsmasq = Command::new("ip");
        dnsmasq
            .args(["netns", "exec", &lab.name, "dnsmasq"])
            .args(agentwatch_tests::DNSMASQ_ARGS)
            .arg(format!("--host-record={RAILWAY_HOST},127.0.0.2"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        lab.dnsmasq = Some(Proc::spawn(&mut dnsmasq, "dnsmasq")?);
        lab.wait_for_dns()?;
        Ok(lab)
    }

    fn wait_for_dns(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let answered = Command::new("ip")
                .args(["netns", "exec", &self.name, "getent", "hosts", RAILWAY_HOST])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("127.0.0.2"));
            if answered {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("dnsmasq did not answer in {}", self.name)
    }

    /// `ip netns exec NAME PROGRAM`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside the namespace.
    fn in_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let netns = Path::new("/run/netns").join(&self.name);
        // setns(CLONE_NEWNET) changes only the calling thread.
        std::thread::spawn(move || -> Result<T> {
            let file = std::fs::File::open(&netns)?;
            // SAFETY: a valid namespace fd; affects this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    /// `GET path` from `addr` inside the namespace (loopback only).
    pub fn http_get(&self, addr: &str, path: &str) -> Result<String> {
        let addr: SocketAddr = addr.parse().context("ADDR:PORT")?;
        anyhow::ensure!(addr.ip().is_loopback(), "{addr} is not loopback");
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        self.in_netns(move || {
            use std::io::{Read as _, Write as _};
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
    }

    /// A TCP listener on `addr` inside the namespace, counting connections.
    pub fn listen(&self, addr: &str) -> Result<Counter> {
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let acceptor = self.accept(addr, move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        })?;
        Ok(Counter {
            accepted,
            _acceptor: acceptor,
        })
    }

    /// A TCP listener on `addr` inside the namespace that reads whatever
    /// its connections send, each on a thread of its own, and discards it.
    pub fn sink(&self, addr: &str) -> Result<Acceptor> {
        self.accept(addr, |mut stream| {
            std::thread::spawn(move || std::io::copy(&mut stream, &mut std::io::sink()));
        })
    }

    /// Hands each connection to `addr` inside the namespace to `accepted`,
    /// on a thread of its own, until dropped.
    fn accept(
        &self,
        addr: &str,
        mut accepted: impl FnMut(TcpStream) + Send + 'static,
    ) -> Result<Acceptor> {
        let addr: SocketAddr = addr.parse().context("ADDR:PORT")?;
        let listener = self.in_netns(move || Ok(TcpListener::bind(addr)?))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                loop {
                    match listener.accept() {
                        // Accepted sockets block, whatever the listener does.
                        Ok((stream, _)) => accepted(stream),
                        Err(_) if stop.load(Ordering::SeqCst) => break,
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Ok(Acceptor {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut dnsmasq) = self.dnsmasq.take() {
            dnsmasq.stop();
        }
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A lab listener's accepting thread, stopped when dropped.
pub struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Where it listens (the port chosen, if given 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connections accepted by a lab listener.
pub struct Counter {
    accepted: Arc<AtomicU64>,
    _acceptor: Acceptor,
}

impl Counter {
    /// Connections so far (after draining the accept queue once more).
    pub fn connections(&self) -> u64 {
        std::thread::sleep(Duration::from_millis(10));
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A temporary HOME holding a Railway token, as tests/enforcement.rs does.
pub fn railway_home(dir: &Path) -> Result<PathBuf> {
    let home = dir.join("home");
    let railway = home.join(".railway");
    std::fs::create_dir_all(&railway)?;
    std::fs::write(railway.join("config.json"), r#"{"user":{"token":"fake"}}"#)?;
    Ok(home)
}
