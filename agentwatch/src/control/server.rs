//! Server side of the control socket: binding it safely, deciding who may ask what, and
//! answering each client in its own task so that no client can hold up the daemon.
//!
//! A client sends one request line. A follower (Events with follow) must keep its sending side
//! open: end of input from it is taken as unsubscribing.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::timeout;
use tracing::{debug, error, info, warn};

use crate::control::protocol::{PendingRequest, Request, Response, Status};

/// Longest request line accepted, newline excluded.
const MAX_REQUEST_LINE: usize = 64 * 1024;
/// A client that connects but never finishes its request line is dropped after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that does not take what it is sent within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses are gathered up to about this many bytes per write.
const WRITE_CHUNK: usize = 64 * 1024;

/// Who is on the other end of a connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What the daemon provides to the socket. Implemented by the daemon.
///
/// Methods are called from a blocking-pool thread, so they may take locks or read /proc.
pub trait ControlHandler: Send + Sync + 'static {
    fn pending(&self) -> Vec<PendingRequest>;
    fn status(&self) -> Status;
    /// Already authorised by the server; returns a message for the client.
    fn approve(&self, id: u64, peer: Peer) -> Result<String, String>;
    fn deny(&self, id: u64, peer: Peer) -> Result<String, String>;
    /// Recent events (oldest first) and a live feed, for Events requests. Both should be taken
    /// under one lock so that no event is missed or repeated between them.
    fn events(&self) -> (Vec<Arc<Value>>, broadcast::Receiver<Arc<Value>>);
    /// Whether `pid` is, or descends from, a process of a watched session.
    fn is_watched(&self, pid: u32) -> bool;
}

/// Who may do what on the socket.
pub struct Authority {
    pub admin_gid: Option<u32>,
}

impl Authority {
    /// Read-only requests (Pending, Status, Events) are allowed to root, the admin group, and any
    /// process not inside a watched session (read access to the socket file is already enforced
    /// by its mode). A peer whose pid the daemon cannot see (pid 0, e.g. from another pid
    /// namespace) might be an agent, so it gets read access only as root or admin.
    ///
    /// Approve/Deny: the peer must be uid 0 or in the admin group (primary or supplementary), must
    /// still exist in /proc, and must not be inside a watched session — an agent must never
    /// approve its own request, whatever its uid.
    pub fn authorize(
        &self,
        request: &Request,
        peer: Peer,
        handler: &dyn ControlHandler,
    ) -> Result<(), String> {
        let verb = match request {
            Request::Approve { .. } => "approve",
            Request::Deny { .. } => "deny",
            Request::Pending | Request::Status | Request::Events { .. } => {
                if peer.uid == 0
                    || (peer.pid != 0 && !handler.is_watched(peer.pid))
                    || self.is_admin(peer)
                {
                    return Ok(());
                }
                return Err(format!(
                    "refused: process {} is inside a watched agent session (or not visible to \
                     the daemon) and is neither root nor in the admin group",
                    peer.pid
                ));
            }
        };
        // The pid is checked before anything else is decided from it: a pid the daemon cannot
        // see cannot be checked against the watched sessions.
        if peer.pid == 0 || !Path::new(&format!("/proc/{}", peer.pid)).exists() {
            return Err(format!(
                "refused to {verb}: the requesting process (pid {}) is not visible to the daemon",
                peer.pid
            ));
        }
        if handler.is_watched(peer.pid) {
            return Err(format!(
                "refused to {verb}: process {} is inside a watched agent session, and a watched \
                 session cannot approve or deny requests",
                peer.pid
            ));
        }
        if peer.uid == 0 || self.is_admin(peer) {
            return Ok(());
        }
        Err(match self.admin_gid {
            Some(gid) => format!("refused to {verb}: needs root or membership of group {gid}"),
            None => format!("refused to {verb}: needs root (no admin group is configured)"),
        })
    }

    fn is_admin(&self, peer: Peer) -> bool {
        let Some(admin) = self.admin_gid else {
            return false;
        };
        peer.gid == admin || supplementary_groups(peer.pid).contains(&admin)
    }
}

/// The `Groups:` of /proc/PID/status; empty when it cannot be read.
fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Binds `path` (creating the parent dir 0755, removing a stale socket file only if nothing
/// listens on it), sets mode 0660 with group `admin_gid` (or 0600 when None).
///
/// Must be called inside a tokio runtime. The mode and group are set before `listen`, so no
/// client can connect while the socket still has the umask's permissions.
pub fn bind(path: &Path, admin_gid: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // The umask may have narrowed it, and group members must be able to reach the socket.
        fs::set_permissions(parent, Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set the mode of {}", parent.display()))?;
    }
    remove_stale(path)?;

    let addr =
        UnixAddr::new(path).with_context(|| format!("bad socket path {}", path.display()))?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("cannot create a unix socket")?;
    socket::bind(fd.as_raw_fd(), &addr)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    let mode = if let Some(gid) = admin_gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
        0o660
    } else {
        0o600
    };
    fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    socket::listen(&fd, Backlog::MAXCONN)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
        .context("cannot register the control socket with the runtime")
}

/// Removes a socket file left by a daemon that is gone; refuses when one still listens.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or choose another path",
            path.display()
        );
    }
    // Non-blocking, so a live daemon with a full backlog answers EAGAIN instead of hanging us.
    let probe = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("cannot create a unix socket")?;
    match socket::connect(probe.as_raw_fd(), &UnixAddr::new(path)?) {
        Err(Errno::ECONNREFUSED) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Ok(()) | Err(Errno::EAGAIN) => {
            bail!(
                "another agentwatch daemon is listening on {}",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot probe {}", path.display())),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove the stale socket {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Accept loop; each client in its own task. Runs until the listener errors fatally.
pub async fn serve(
    listener: UnixListener,
    authority: Arc<Authority>,
    handler: Arc<dyn ControlHandler>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle_client(stream, authority.clone(), handler.clone()));
            }
            Err(e) if is_transient(&e) => {
                // Out of descriptors or memory: wait for clients to go rather than spin.
                warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                error!("control socket: accept failed, no longer serving: {e}");
                return;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM | Errno::ECONNABORTED)
    )
}

async fn handle_client(
    stream: UnixStream,
    authority: Arc<Authority>,
    handler: Arc<dyn ControlHandler>,
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            pid: cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            uid: cred.uid(),
            gid: cred.gid(),
        },
        Err(e) => {
            debug!("control socket: no peer credentials: {e}");
            return;
        }
    };
    let (rd, wr) = stream.into_split();
    let mut client = Client {
        rd: BufReader::new(rd),
        out: Out {
            wr,
            buf: Vec::new(),
        },
        peer,
    };
    if let Err(e) = client.run(authority, handler).await {
        debug!(
            "control socket: client pid {} uid {}: {e}",
            peer.pid, peer.uid
        );
    }
}

/// What a request is answered with.
enum Reply {
    One(Response),
    Events {
        recent: Vec<Arc<Value>>,
        live: Option<broadcast::Receiver<Arc<Value>>>,
        session: Option<u32>,
    },
}

/// Authorises and answers one request; runs on the blocking pool.
fn answer(
    authority: &Authority,
    handler: &dyn ControlHandler,
    request: Request,
    peer: Peer,
) -> Reply {
    if let Err(message) = authority.authorize(&request, peer, handler) {
        warn!(
            "control socket: {request:?} from pid {} uid {} refused: {message}",
            peer.pid, peer.uid
        );
        return Reply::One(Response::Error { message });
    }
    let decided = |result: Result<String, String>| {
        Reply::One(match result {
            Ok(message) => Response::Done { message },
            Err(message) => Response::Error { message },
        })
    };
    match request {
        Request::Pending => Reply::One(Response::Pending {
            pending: handler.pending(),
        }),
        Request::Status => Reply::One(Response::Status(handler.status())),
        Request::Approve { id } => {
            info!(
                "control socket: approve {id} by pid {} uid {}",
                peer.pid, peer.uid
            );
            decided(handler.approve(id, peer))
        }
        Request::Deny { id } => {
            info!(
                "control socket: deny {id} by pid {} uid {}",
                peer.pid, peer.uid
            );
            decided(handler.deny(id, peer))
        }
        Request::Events { follow, session } => {
            let (recent, live) = handler.events();
            Reply::Events {
                recent,
                live: follow.then_some(live),
                session,
            }
        }
    }
}

struct Client {
    rd: BufReader<OwnedReadHalf>,
    out: Out,
    peer: Peer,
}

impl Client {
    async fn run(
        &mut self,
        authority: Arc<Authority>,
        handler: Arc<dyn ControlHandler>,
    ) -> io::Result<()> {
        let request = match self.read_request().await? {
            Some(Ok(request)) => request,
            Some(Err(message)) => return self.out.send(&Response::Error { message }).await,
            None => return Ok(()),
        };
        let peer = self.peer;
        let reply =
            tokio::task::spawn_blocking(move || answer(&authority, &*handler, request, peer))
                .await
                .unwrap_or_else(|e| {
                    error!("control socket: request handler failed: {e}");
                    Reply::One(Response::Error {
                        message: "internal error in the daemon".into(),
                    })
                });
        match reply {
            Reply::One(response) => self.out.send(&response).await,
            Reply::Events {
                recent,
                live,
                session,
            } => self.stream_events(recent, live, session).await,
        }
    }

    /// One request line: None when the client left without one, Some(Err) for a message
    /// explaining why it is refused.
    async fn read_request(&mut self) -> io::Result<Option<Result<Request, String>>> {
        let mut line = Vec::new();
        let limit = MAX_REQUEST_LINE as u64 + 1;
        let mut limited = (&mut self.rd).take(limit);
        match timeout(REQUEST_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no request sent")),
            Ok(result) => result?,
        };
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_REQUEST_LINE {
            return Ok(Some(Err(format!(
                "request refused: longer than {MAX_REQUEST_LINE} bytes"
            ))));
        } else if line.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_slice(&line).map_err(|e| format!("invalid request: {e}")),
        ))
    }

    async fn stream_events(
        &mut self,
        recent: Vec<Arc<Value>>,
        live: Option<broadcast::Receiver<Arc<Value>>>,
        session: Option<u32>,
    ) -> io::Result<()> {
        for event in &recent {
            self.out.queue_event(event, session);
            if self.out.buf.len() >= WRITE_CHUNK {
                self.out.flush().await?;
            }
        }
        // A follower may stay for hours: do not keep its copy of the replay.
        drop(recent);
        let Some(mut live) = live else {
            return self.out.send(&Response::End).await;
        };
        self.out.flush().await?;
        let mut discard = [0u8; 512];
        loop {
            tokio::select! {
                got = live.recv() => {
                    if !self.out.queue_live(got.map_err(lost), session) {
                        return self.out.flush().await;
                    }
                    // Take what else is ready so a burst goes out in few writes.
                    while self.out.buf.len() < WRITE_CHUNK {
                        let got = match live.try_recv() {
                            Err(TryRecvError::Empty) => break,
                            Ok(event) => Ok(event),
                            Err(TryRecvError::Lagged(n)) => Err(Some(n)),
                            Err(TryRecvError::Closed) => Err(None),
                        };
                        if !self.out.queue_live(got, session) {
                            return self.out.flush().await;
                        }
                    }
                    self.out.flush().await?;
                }
                // Nothing more is expected from a follower: end of input means it has gone
                // (or hung up its sending side to unsubscribe).
                read = self.rd.read(&mut discard) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A receive error as `Some(events lost)`, or None once the feed is closed.
fn lost(e: RecvError) -> Option<u64> {
    match e {
        RecvError::Lagged(n) => Some(n),
        RecvError::Closed => None,
    }
}

/// Buffered lines to one client; each write must complete within WRITE_TIMEOUT.
struct Out {
    wr: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Out {
    fn queue(&mut self, response: &Response) {
        serde_json::to_writer(&mut self.buf, response).expect("a Response always serializes");
        self.buf.push(b'\n');
    }

    /// Queues `Response::Event` for `event` if it passes the session filter, without cloning
    /// it: the same event goes to every follower.
    fn queue_event(&mut self, event: &Value, session: Option<u32>) {
        if session.is_some_and(|id| event.get("session").and_then(Value::as_u64) != Some(id.into()))
        {
            return;
        }
        self.buf.extend_from_slice(br#"{"type":"event","event":"#);
        serde_json::to_writer(&mut self.buf, event).expect("a JSON value always serializes");
        self.buf.extend_from_slice(b"}\n");
    }

    /// Queues what the live feed gave; false once the feed is closed.
    fn queue_live(&mut self, got: Result<Arc<Value>, Option<u64>>, session: Option<u32>) -> bool {
        match got {
            Ok(event) => self.queue_event(&event, session),
            Err(Some(n)) => self.queue(&Response::Error {
                message: format!("{n} events dropped: client too slow"),
            }),
            Err(None) => return false,
        }
        true
    }

    async fn send(&mut self, response: &Response) -> io::Result<()> {
        self.queue(response);
        self.flush().await
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = timeout(WRITE_TIMEOUT, self.wr.write_all(&self.buf)).await;
        self.buf.clear();
        written.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read its responses for 5 s",
            ))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use serde_json::json;
    use tokio::io::AsyncBufReadExt;

    use super::*;
    use crate::control::client::{self, Subscription};

    /// A daemon stand-in: one pending request (id 1), a replay buffer and a live feed.
    pub(crate) struct Fake {
        pub watched: AtomicBool,
        pub events: broadcast::Sender<Arc<Value>>,
        pub recent: Vec<Arc<Value>>,
        pub decisions: Mutex<Vec<(u64, bool, Peer)>>,
    }

    impl Fake {
        pub(crate) fn new(capacity: usize) -> Arc<Self> {
            Arc::new(Self {
                watched: AtomicBool::new(false),
                events: broadcast::channel(capacity).0,
                recent: (1..=4u32)
                    .map(|n| Arc::new(event(n.into(), n % 2 + 1)))
                    .collect(),
                decisions: Mutex::new(Vec::new()),
            })
        }

        fn decide(&self, id: u64, approve: bool, peer: Peer) -> Result<String, String> {
            if id != 1 {
                return Err(format!("no pending request {id}"));
            }
            self.decisions.lock().unwrap().push((id, approve, peer));
            Ok(format!(
                "request {id} {}",
                if approve { "approved" } else { "denied" }
            ))
        }
    }

    pub(crate) fn event(n: u64, session: u32) -> Value {
        json!({"ts": "2026-01-01T00:00:00Z", "kind": "exec", "n": n, "session": session})
    }

    pub(crate) fn pending_request() -> PendingRequest {
        PendingRequest {
            id: 1,
            session: 2,
            agent: "Claude Code".into(),
            pid: 4242,
            comm: "curl".into(),
            credential: "railway: /home/u/.railway/config.json".into(),
            host: "backboard.railway.app".into(),
            addr: "1.2.3.4".into(),
            port: 443,
            since: "2026-01-01T00:00:00Z".into(),
            expires_in_secs: 55,
        }
    }

    impl ControlHandler for Fake {
        fn pending(&self) -> Vec<PendingRequest> {
            vec![pending_request()]
        }
        fn status(&self) -> Status {
            Status {
                mode: "ask".into(),
                sessions: Vec::new(),
                tracked_processes: 3,
                events_lost: 0,
                alerts: 1,
            }
        }
        fn approve(&self, id: u64, peer: Peer) -> Result<String, String> {
            self.decide(id, true, peer)
        }
        fn deny(&self, id: u64, peer: Peer) -> Result<String, String> {
            self.decide(id, false, peer)
        }
        fn events(&self) -> (Vec<Arc<Value>>, broadcast::Receiver<Arc<Value>>) {
            (self.recent.clone(), self.events.subscribe())
        }
        fn is_watched(&self, _pid: u32) -> bool {
            self.watched.load(Ordering::Relaxed)
        }
    }

    /// These tests check what root may do: run as anyone else they fail,
    /// as agentwatch's tests do, rather than skip.
    pub(crate) fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test must run as root"
        );
    }

    /// Serves `fake` on a socket in a fresh temp dir.
    pub(crate) fn start(fake: &Arc<Fake>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agentwatch.sock");
        let listener = bind(&path, None).unwrap();
        let authority = Arc::new(Authority { admin_gid: None });
        tokio::spawn(serve(listener, authority, fake.clone()));
        (dir, path)
    }

    /// Sends raw bytes and returns the response lines until the server closes.
    async fn raw(path: &Path, bytes: &[u8]) -> Vec<Response> {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let mut responses = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            responses.push(serde_json::from_str(&line).unwrap());
        }
        responses
    }

    fn me(uid: u32, gid: u32) -> Peer {
        Peer {
            pid: std::process::id(),
            uid,
            gid,
        }
    }

    /// A gid this test process is not a member of.
    fn foreign_gid() -> u32 {
        let mine = supplementary_groups(std::process::id());
        (900_000..).find(|g| !mine.contains(g)).unwrap()
    }

    #[tokio::test]
    async fn pending_and_status_roundtrip() {
        let fake = Fake::new(16);
        let (_dir, path) = start(&fake);
        assert_eq!(
            client::request(&path, &Request::Pending).await.unwrap(),
            Response::Pending {
                pending: vec![pending_request()]
            }
        );
        assert_eq!(
            client::request(&path, &Request::Status).await.unwrap(),
            Response::Status(fake.status())
        );
    }

    #[tokio::test]
    async fn approve_as_root_but_never_from_a_watched_session() {
        require_root();
        let fake = Fake::new(16);
        let (_dir, path) = start(&fake);
        let answer = client::request(&path, &Request::Approve { id: 1 })
            .await
            .unwrap();
        assert_eq!(
            answer,
            Response::Done {
                message: "request 1 approved".into()
            }
        );
        let (id, approved, peer) = fake.decisions.lock().unwrap()[0];
        assert!(id == 1 && approved && peer.uid == 0);
        assert_eq!(peer.pid, std::process::id());

        fake.watched.store(true, Ordering::Relaxed);
        let Response::Error { message } = client::request(&path, &Request::Deny { id: 1 })
            .await
            .unwrap()
        else {
            panic!("a watched root process was allowed to deny");
        };
        assert!(
            message.contains("watched session cannot approve"),
            "{message}"
        );
        assert_eq!(fake.decisions.lock().unwrap().len(), 1);
    }

    #[test]
    fn authorize_changes() {
        let fake = Fake::new(1);
        let approve = Request::Approve { id: 1 };
        let admin = foreign_gid();
        let with_admin = Authority {
            admin_gid: Some(admin),
        };
        let without_admin = Authority { admin_gid: None };

        let err = with_admin
            .authorize(&approve, me(1000, 1000), &*fake)
            .unwrap_err();
        assert!(err.contains(&format!("group {admin}")), "{err}");
        assert!(
            without_admin
                .authorize(&approve, me(1000, admin), &*fake)
                .is_err()
        );
        with_admin
            .authorize(&approve, me(1000, admin), &*fake)
            .unwrap();
        with_admin.authorize(&approve, me(0, 0), &*fake).unwrap();

        // Gone or invisible peers are refused even as root.
        for pid in [0, u32::MAX] {
            let peer = Peer {
                pid,
                uid: 0,
                gid: 0,
            };
            let err = with_admin.authorize(&approve, peer, &*fake).unwrap_err();
            assert!(err.contains("not visible"), "{err}");
        }

        fake.watched.store(true, Ordering::Relaxed);
        for peer in [me(0, 0), me(1000, admin)] {
            let err = with_admin
                .authorize(&Request::Deny { id: 1 }, peer, &*fake)
                .unwrap_err();
            assert!(err.contains("watched session cannot approve"), "{err}");
        }
    }

    #[test]
    fn authorize_reads() {
        let fake = Fake::new(1);
        let admin = foreign_gid();
        let authority = Authority {
            admin_gid: Some(admin),
        };
        let reads = [
            Request::Pending,
            Request::Status,
            Request::Events {
                follow: true,
                session: None,
            },
        ];
        let unknown = Peer {
            pid: 0,
            uid: 1000,
            gid: 1000,
        };
        for read in &reads {
            authority.authorize(read, me(1000, 1000), &*fake).unwrap();
            assert!(authority.authorize(read, unknown, &*fake).is_err());
        }
        fake.watched.store(true, Ordering::Relaxed);
        for read in &reads {
            assert!(authority.authorize(read, me(1000, 1000), &*fake).is_err());
            authority.authorize(read, me(1000, admin), &*fake).unwrap();
            authority.authorize(read, me(0, 0), &*fake).unwrap();
        }
    }

    #[tokio::test]
    async fn events_replay_then_follow_with_session_filter() {
        let fake = Fake::new(64);
        let (_dir, path) = start(&fake);

        // Replay only: the session-2 events of the buffer, then End.
        let replay = raw(
            &path,
            b"{\"op\":\"events\",\"follow\":false,\"session\":2}\n",
        )
        .await;
        let expected: Vec<_> = [1, 3]
            .map(|n| Response::Event { event: event(n, 2) })
            .into_iter()
            .chain([Response::End])
            .collect();
        assert_eq!(replay, expected);

        let follow = Request::Events {
            follow: true,
            session: Some(1),
        };
        let mut sub = Subscription::open(&path, &follow).await.unwrap();
        for n in [2, 4] {
            let got = sub.next().await.unwrap().unwrap();
            assert_eq!(got, Response::Event { event: event(n, 1) });
        }
        // The replay arrived, so the live receiver exists.
        for (n, session) in [(5, 2), (6, 1), (7, 2), (8, 1)] {
            fake.events.send(Arc::new(event(n, session))).unwrap();
        }
        for n in [6, 8] {
            let got = sub.next().await.unwrap().unwrap();
            assert_eq!(got, Response::Event { event: event(n, 1) });
        }
    }

    #[tokio::test]
    async fn a_lagging_follower_is_told_and_goes_on() {
        let fake = Fake::new(4);
        let (_dir, path) = start(&fake);
        let follow = Request::Events {
            follow: true,
            session: None,
        };
        let mut sub = Subscription::open(&path, &follow).await.unwrap();
        for _ in 0..fake.recent.len() {
            sub.next().await.unwrap().unwrap();
        }
        // The single-threaded runtime cannot run the server between these sends.
        for n in 0..20 {
            fake.events.send(Arc::new(event(n, 1))).unwrap();
        }
        assert_eq!(
            sub.next().await.unwrap().unwrap(),
            Response::Error {
                message: "16 events dropped: client too slow".into()
            }
        );
        for n in 16..20 {
            let got = sub.next().await.unwrap().unwrap();
            assert_eq!(got, Response::Event { event: event(n, 1) });
        }
    }

    #[tokio::test]
    async fn garbage_and_oversized_requests_are_refused() {
        let fake = Fake::new(16);
        let (_dir, path) = start(&fake);
        for bytes in [&b"hello\n"[..], b"{\"op\":\"reboot\"}\n"] {
            let answer = raw(&path, bytes).await;
            assert!(
                matches!(&answer[..], [Response::Error { message }] if message.starts_with("invalid request")),
                "{answer:?}"
            );
        }
        let mut long = br#"{"op":"pending","pad":""#.to_vec();
        long.resize(MAX_REQUEST_LINE + 100, b'x');
        long.extend_from_slice(b"\"}\n");
        let answer = raw(&path, &long).await;
        assert!(
            matches!(&answer[..], [Response::Error { message }] if message.contains("longer than")),
            "{answer:?}"
        );
        // The server is still there.
        assert!(matches!(
            client::request(&path, &Request::Pending).await.unwrap(),
            Response::Pending { .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_blocks_nobody() {
        let fake = Fake::new(1024);
        let (_dir, path) = start(&fake);
        // Subscribes, then never reads.
        let mut stuck = UnixStream::connect(&path).await.unwrap();
        stuck
            .write_all(b"{\"op\":\"events\",\"follow\":true,\"session\":null}\n")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while fake.events.receiver_count() == 0 {
            assert!(Instant::now() < deadline, "the follower never subscribed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let flood = {
            let fake = fake.clone();
            tokio::spawn(async move {
                let padding = "x".repeat(512);
                let deadline = Instant::now() + Duration::from_secs(15);
                while fake.events.receiver_count() > 0 && Instant::now() < deadline {
                    for n in 0..200 {
                        let _ = fake
                            .events
                            .send(Arc::new(json!({"session": 1, "n": n, "pad": padding})));
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        // Long enough for the stuck client's socket buffer to fill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..3 {
            let asked = Instant::now();
            let answer = client::request(&path, &Request::Pending).await.unwrap();
            assert!(matches!(answer, Response::Pending { .. }));
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
        }
        // The write timeout drops the stuck follower, which ends the flood.
        flood.await.unwrap();
        assert_eq!(fake.events.receiver_count(), 0, "the stuck client was kept");
        drop(stuck);
    }

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentwatch.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = bind(&path, None).unwrap();

        let err = bind(&path, None).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "another agentwatch daemon is listening on {}",
                path.display()
            )
        );
        // The live socket is untouched.
        drop(UnixStream::connect(&path).await.unwrap());
        drop(listener);

        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(bind(&file, None).is_err());
        assert!(file.exists());
    }

    #[tokio::test]
    async fn socket_modes() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("run/agentwatch");
        let path = parent.join("agentwatch.sock");
        let _listener = bind(&path, None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&parent), 0o755);

        {
            use std::os::unix::fs::MetadataExt;
            let gid = foreign_gid();
            let path = parent.join("group.sock");
            let _listener = bind(&path, Some(gid)).unwrap();
            assert_eq!(mode(&path), 0o660);
            assert_eq!(fs::metadata(&path).unwrap().gid(), gid);
        }
    }

    #[tokio::test]
    async fn queued_events_match_the_protocol() {
        let (wr, _peer) = UnixStream::pair().unwrap();
        let wr = wr.into_split().1;
        let mut out = Out {
            wr,
            buf: Vec::new(),
        };
        let event = json!({"kind": "alert", "session": 3, "msg": "a\"b\n"});
        out.queue_event(&event, Some(3));
        out.queue_event(&event, Some(4));
        let mut expected = serde_json::to_vec(&Response::Event { event }).unwrap();
        expected.push(b'\n');
        assert_eq!(out.buf, expected);
    }
}
