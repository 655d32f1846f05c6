//! One client of the control socket, in its own task so that no client
//! can hold up the daemon.
//!
//! A client sends one request line. A follower (Events with follow) must keep its sending side
//! open: end of input from it is taken as unsubscribing.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::timeout;
use tracing::{debug, error, info, warn};

use agentwatch_common::names::Action;

use super::{ControlHandler, Peer, authorize::Authority};
use crate::control::protocol::{EventLine, Request, Response};
use crate::event::Event;

/// Longest request line accepted, newline excluded.
pub(super) const MAX_REQUEST_LINE: usize = 64 * 1024;
/// A client that connects but never finishes its request line is dropped after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that does not take what it is sent within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses are gathered up to about this many bytes per write.
const WRITE_CHUNK: usize = 64 * 1024;

pub(super) async fn handle_client(
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
    /// `Response::Opened`, then the new session's events from before it opened.
    Opened {
        session: u32,
        action: Action,
        live: broadcast::Receiver<Arc<Event>>,
    },
    Events {
        recent: Vec<Arc<Event>>,
        live: Option<broadcast::Receiver<Arc<Event>>>,
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
        Request::Why { unreported } => Reply::One(Response::Refusal {
            event: handler
                .last_refusal(peer.pid, unreported)
                .map(|event| Box::new((*event).clone())),
        }),
        Request::Run { pid, argv, mode } => {
            info!(
                "control socket: run {argv:?} as pid {pid}, for pid {} uid {}",
                peer.pid, peer.uid
            );
            // Subscribed first: the session's first events come as it opens.
            let live = handler.subscribe();
            match handler.open_run(pid, argv, mode, peer) {
                Ok(action) => Reply::Opened {
                    session: pid,
                    action,
                    live,
                },
                Err(message) => Reply::One(Response::Error { message }),
            }
        }
        Request::Events {
            follow,
            session,
            replay,
        } => {
            let (recent, live) = handler.events();
            Reply::Events {
                recent: if replay { recent } else { Vec::new() },
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
            Reply::Opened {
                session,
                action,
                live,
            } => {
                self.out.queue(&Response::Opened { session, action });
                self.stream_events(Vec::new(), Some(live), Some(session))
                    .await
            }
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
        recent: Vec<Arc<Event>>,
        live: Option<broadcast::Receiver<Arc<Event>>>,
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
        self.out.send(&Response::Live).await?;
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
pub(super) struct Out {
    pub(super) wr: OwnedWriteHalf,
    pub(super) buf: Vec<u8>,
}

impl Out {
    fn queue(&mut self, response: &Response) {
        serde_json::to_writer(&mut self.buf, response).expect("a Response always serializes");
        self.buf.push(b'\n');
    }

    /// Queues `Response::Event` for `event` if it passes the session filter.
    pub(super) fn queue_event(&mut self, event: &Event, session: Option<u32>) {
        if session.is_some_and(|id| event.session != id) {
            return;
        }
        serde_json::to_writer(&mut self.buf, &EventLine { event })
            .expect("an Event always serializes");
        self.buf.push(b'\n');
    }

    /// Queues what the live feed gave; false once the feed is closed.
    fn queue_live(&mut self, got: Result<Arc<Event>, Option<u64>>, session: Option<u32>) -> bool {
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
