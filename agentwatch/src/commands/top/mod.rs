//! `agentwatch top`: a live terminal view of the daemon's sessions, pending
//! ask-mode requests, alerts, connections and credential reads, from which a
//! human approves or denies requests.

mod model;
mod view;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{self, Instant, MissedTickBehavior};

use crate::control::client::{self, ReadError, Subscription};
use crate::control::protocol::{Request, Response};
use model::{Command, Link, Model};

const POLL_EVERY: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// At most ~10 redraws a second, however fast events come.
const FRAME: Duration = Duration::from_millis(100);
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// `agentwatch top`. Returns the exit code.
pub async fn top_command(socket: &Path) -> Result<i32> {
    // Before the terminal is taken over, so the error prints as usual.
    request(socket, &Request::Status).await?;
    if !std::io::stdout().is_terminal() {
        bail!("agentwatch top needs a terminal");
    }
    let terminal = ratatui::try_init();
    // Dropped last: restores the terminal on return, on error and after a
    // half-done init (try_init adds a panic hook that restores on panic).
    let _restore = Restore;
    let mut terminal = terminal.context("cannot set up the terminal")?;
    let (keys, input) = mpsc::channel(64);
    std::thread::spawn(move || read_input(keys));
    run(&mut terminal, socket, input).await
}

struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = ratatui::try_restore();
    }
}

/// Terminal input, on a plain thread: crossterm's reader blocks, and a tokio
/// blocking task would hold up the runtime's shutdown. Ends soon after the
/// event loop drops its receiver.
fn read_input(keys: mpsc::Sender<Event>) {
    while !keys.is_closed() {
        match event::poll(Duration::from_millis(250)) {
            Ok(false) => {}
            Ok(true) => {
                let Ok(e) = event::read() else { return };
                if keys.blocking_send(e).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

enum Msg {
    Link(Link, bool),
    Response(Response),
}

/// The event loop, on any backend and input stream (tests use a TestBackend
/// and a channel of keys).
async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    socket: &Path,
    mut input: mpsc::Receiver<Event>,
) -> Result<i32>
where
    B::Error: Send + Sync + 'static,
{
    let (tx, mut rx) = mpsc::channel(1024);
    // Dropping the set on return stops the feeds.
    let mut feeds = JoinSet::new();
    feeds.spawn(follow(socket.to_path_buf(), tx.clone()));
    feeds.spawn(poll(socket.to_path_buf(), tx.clone()));

    let mut model = Model::default();
    // Redraws countdowns and expires footer messages when nothing else happens.
    let mut second = time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_draw = Instant::now();
    let mut draw_at: Option<Instant> = None;
    loop {
        let changed = tokio::select! {
            Some(msg) = rx.recv() => {
                match msg {
                    Msg::Link(link, up) => model.link(link, up),
                    Msg::Response(r) => model.apply(r, Instant::now().into_std()),
                }
                true
            }
            e = input.recv() => match e {
                None => bail!("terminal input closed"),
                Some(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                    match model.key(key, Instant::now().into_std()) {
                        Some(Command::Quit) => return Ok(0),
                        Some(Command::Approve(id)) => {
                            decide(socket, Request::Approve { id }, tx.clone());
                        }
                        Some(Command::Deny(id)) => decide(socket, Request::Deny { id }, tx.clone()),
                        None => {}
                    }
                    true
                }
                Some(Event::Resize(..)) => true,
                Some(_) => false,
            },
            _ = second.tick() => true,
            _ = time::sleep_until(draw_at.unwrap_or_else(Instant::now)), if draw_at.is_some() => {
                terminal.draw(|f| view::draw(f, &model, Instant::now().into_std()))?;
                last_draw = Instant::now();
                draw_at = None;
                false
            }
        };
        if changed && draw_at.is_none() {
            draw_at = Some((last_draw + FRAME).max(Instant::now()));
        }
    }
}

/// Sends an approval or denial on a connection of its own; the daemon's answer
/// goes to the footer.
fn decide(socket: &Path, req: Request, tx: mpsc::Sender<Msg>) {
    let socket = socket.to_path_buf();
    tokio::spawn(async move {
        let answer = request(&socket, &req)
            .await
            .unwrap_or_else(|e| Response::Error {
                message: format!("{e:#}"),
            });
        let _ = tx.send(Msg::Response(answer)).await;
    });
}

/// The live event subscription, reconnecting every second while the daemon is away.
async fn follow(socket: PathBuf, tx: mpsc::Sender<Msg>) {
    let subscribe = Request::Events {
        follow: true,
        session: None,
        replay: true,
    };
    loop {
        if let Ok(mut events) = Subscription::open(&socket, &subscribe).await {
            if tx.send(Msg::Link(Link::Events, true)).await.is_err() {
                return;
            }
            loop {
                match events.next().await {
                    Ok(Some(r)) => {
                        if tx.send(Msg::Response(r)).await.is_err() {
                            return;
                        }
                    }
                    // A line this version can't read is skipped, not fatal.
                    Err(ReadError::Unreadable { .. }) => {}
                    Ok(None) | Err(ReadError::Io(_)) => break,
                }
            }
        }
        if tx.send(Msg::Link(Link::Events, false)).await.is_err() {
            return;
        }
        time::sleep(RETRY_EVERY).await;
    }
}

/// Status and pending requests every second.
async fn poll(socket: PathBuf, tx: mpsc::Sender<Msg>) {
    let mut tick = time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let msgs = match (
            request(&socket, &Request::Status).await,
            request(&socket, &Request::Pending).await,
        ) {
            (Ok(status), Ok(pending)) => vec![
                Msg::Link(Link::Poll, true),
                Msg::Response(status),
                Msg::Response(pending),
            ],
            _ => vec![Msg::Link(Link::Poll, false)],
        };
        for msg in msgs {
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// One request, one response; a daemon that does not answer in time counts as away, so the
/// view says so rather than freeze.
async fn request(socket: &Path, req: &Request) -> Result<Response> {
    time::timeout(ANSWER_WITHIN, client::request(socket, req))
        .await
        .map_err(|_| {
            anyhow!(
                "no answer from the agentwatch daemon at {} within {} s",
                socket.display(),
                ANSWER_WITHIN.as_secs()
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::PendingRequest;
    use model::tests::{alert_event, pending_request, status};
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// Answers like the daemon: one session, request 4242 pending until approved.
    async fn fake_daemon(listener: UnixListener, approvals: mpsc::Sender<u64>) {
        let approved = Arc::new(AtomicBool::new(false));
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (approved, approvals) = (approved.clone(), approvals.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let line = BufReader::new(read)
                    .lines()
                    .next_line()
                    .await
                    .unwrap()
                    .unwrap();
                let req: Request = serde_json::from_str(&line).unwrap();
                let follow = matches!(req, Request::Events { follow: true, .. });
                let answers = match req {
                    Request::Status => vec![Response::Status(status())],
                    Request::Pending => {
                        let pending: Vec<PendingRequest> = if approved.load(Ordering::SeqCst) {
                            vec![]
                        } else {
                            vec![pending_request(4242, 30)]
                        };
                        vec![Response::Pending { pending }]
                    }
                    Request::Events { .. } => vec![alert_event(1)],
                    Request::Approve { id } => {
                        approved.store(true, Ordering::SeqCst);
                        approvals.send(id).await.unwrap();
                        vec![Response::Done {
                            message: format!("request {id} approved"),
                        }]
                    }
                    Request::Deny { .. } | Request::Why { .. } | Request::Run { .. } => {
                        vec![Response::Error {
                            message: "unexpected".into(),
                        }]
                    }
                };
                for answer in answers {
                    let mut line = serde_json::to_string(&answer).unwrap();
                    line.push('\n');
                    write.write_all(line.as_bytes()).await.unwrap();
                }
                if follow {
                    // A subscription stays open.
                    std::future::pending::<()>().await;
                }
            });
        }
    }

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[tokio::test]
    async fn approve_reaches_the_daemon() {
        let path = std::env::temp_dir().join(format!("agentwatch-top-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let (approvals_tx, mut approvals) = mpsc::channel(8);
        let daemon = tokio::spawn(fake_daemon(listener, approvals_tx));

        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let (keys, input) = mpsc::channel(16);
        let driver = async {
            keys.send(key(KeyCode::Tab)).await.unwrap();
            // Request 4242 shows up with the first poll: press `a` until the
            // daemon hears of it.
            let id = loop {
                keys.send(key(KeyCode::Char('a'))).await.unwrap();
                if let Ok(Some(id)) =
                    time::timeout(Duration::from_millis(200), approvals.recv()).await
                {
                    break id;
                }
            };
            // Time for the daemon's answer to reach the footer.
            time::sleep(Duration::from_millis(500)).await;
            keys.send(key(KeyCode::Char('q'))).await.unwrap();
            id
        };
        let (code, id) = time::timeout(Duration::from_secs(20), async {
            tokio::join!(run(&mut terminal, &path, input), driver)
        })
        .await
        .expect("the app did not finish");
        daemon.abort();
        let _ = std::fs::remove_file(&path);

        assert_eq!(code.unwrap(), 0);
        assert_eq!(id, 4242);
        let text = view::tests::screen(terminal.backend().buffer());
        assert!(text.contains("request 4242 approved"), "{text}");
        assert!(text.contains("Claude Code"), "{text}");
        assert!(text.contains("backboard.railway.app"), "{text}");
    }

    #[tokio::test]
    async fn unreachable_daemon_is_an_error() {
        let path = std::env::temp_dir().join("agentwatch-top-nobody-here.sock");
        let err = top_command(&path).await.unwrap_err().to_string();
        assert!(
            err.starts_with("cannot reach the agentwatch daemon at "),
            "{err}"
        );
        assert!(err.contains("(is it running?"), "{err}");
    }
}
