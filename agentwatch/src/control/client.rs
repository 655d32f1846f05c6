//! Client side of the control socket: the CLI subcommands and a subscription for the terminal UI.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::control::protocol::{PendingRequest, Request, Response};

/// Sends one request and returns the daemon's first response.
pub async fn request(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    Subscription::open(socket, request)
        .await?
        .next()
        .await?
        .context("the daemon closed the connection without answering")
}

/// `agentwatch pending [--json]`: a table, or with `json` one JSON array. Returns the exit code.
pub async fn pending_command(
    socket: &Path,
    json: bool,
    out: &mut (impl Write + Send),
) -> anyhow::Result<i32> {
    let pending = match request(socket, &Request::Pending).await? {
        Response::Pending { pending } => pending,
        Response::Error { message } => return Ok(refused(&message)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    if json {
        serde_json::to_writer(&mut *out, &pending)?;
        writeln!(out)?;
    } else if pending.is_empty() {
        writeln!(out, "no pending requests")?;
    } else {
        write_table(out, &pending)?;
    }
    out.flush()?;
    Ok(0)
}

/// `agentwatch approve ID` / `agentwatch deny ID`: prints the daemon's message; exit code 0 when
/// done, 1 when the daemon refused (message on stderr).
pub async fn decide_command(
    socket: &Path,
    id: u64,
    approve: bool,
    out: &mut (impl Write + Send),
) -> anyhow::Result<i32> {
    let request = if approve {
        Request::Approve { id }
    } else {
        Request::Deny { id }
    };
    match self::request(socket, &request).await? {
        Response::Done { message } => {
            writeln!(out, "{}", printable(&message))?;
            out.flush()?;
            Ok(0)
        }
        Response::Error { message } => Ok(refused(&message)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// `agentwatch events` without the event log: the daemon's recent events, each as one JSON
/// line, then with `follow` its live events.
pub async fn events_command(
    socket: &Path,
    follow: bool,
    session: Option<u32>,
    out: &mut (impl Write + Send),
) -> anyhow::Result<i32> {
    let request = Request::Events {
        follow,
        session,
        replay: true,
    };
    print_events(Subscription::open(socket, &request).await?, out, |_| false).await
}

/// Writes each event of `subscription` as one JSON line, but those `printed_already` says
/// were, until the daemon ends the replay (or, following, until it goes away, which is an
/// error). Returns the exit code.
pub async fn print_events(
    mut subscription: Subscription,
    out: &mut (impl Write + Send),
    mut printed_already: impl FnMut(&str) -> bool,
) -> anyhow::Result<i32> {
    let mut refused_last = false;
    while let Some(response) = subscription.next().await? {
        refused_last = false;
        match response {
            Response::Event { event } => {
                let line = serde_json::to_string(&event)?;
                if printed_already(&line) {
                    continue;
                }
                match write_line(out, &line) {
                    // The reader went away (`agentwatch events | head`): nothing left to do.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(0),
                    written => written?,
                }
            }
            Response::Live => {}
            Response::End => return Ok(0),
            // Lost events are reported in-band and the stream goes on; a refusal is followed
            // by the daemon closing the connection.
            Response::Error { message } => {
                refused(&message);
                refused_last = true;
            }
            other => bail!("unexpected answer from the daemon: {other:?}"),
        }
    }
    if refused_last {
        return Ok(1);
    }
    bail!("the daemon closed the connection")
}

/// One JSON line, flushed: whoever reads it sees events as they come.
pub fn write_line(out: &mut impl Write, line: &str) -> io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

/// Why the next response could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The connection failed: nothing more will come.
    #[error("cannot read from the daemon")]
    Io(#[from] io::Error),
    /// One line this version cannot read; the lines after it may still be read.
    #[error("the daemon sent an unreadable line: {line}")]
    Unreadable {
        line: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Responses to one request, line by line (for the terminal UI and the commands above).
pub struct Subscription {
    lines: Lines<BufReader<OwnedReadHalf>>,
    /// Kept open: the daemon takes the end of a follower's input as unsubscribing.
    _requests: OwnedWriteHalf,
}

impl Subscription {
    /// Connects to the daemon and sends `request`.
    pub async fn open(socket: &Path, request: &Request) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                "run it as root or as a member of the daemon's admin group"
            } else {
                "is it running? `systemctl status agentwatch`"
            };
            anyhow::anyhow!(
                "cannot reach the agentwatch daemon at {}: {e} ({hint})",
                socket.display()
            )
        })?;
        let (rd, mut wr) = stream.into_split();
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        wr.write_all(&line)
            .await
            .context("cannot send the request to the daemon")?;
        Ok(Self {
            lines: BufReader::new(rd).lines(),
            _requests: wr,
        })
    }

    /// The next response, or None when the daemon closed the connection.
    pub async fn next(&mut self) -> Result<Option<Response>, ReadError> {
        loop {
            let Some(line) = self.lines.next_line().await? else {
                return Ok(None);
            };
            if !line.trim().is_empty() {
                return serde_json::from_str(&line)
                    .map(Some)
                    .map_err(|source| ReadError::Unreadable { line, source });
            }
        }
    }
}

/// Prints a refusal from the daemon; returns the exit code for it.
pub fn refused(message: &str) -> i32 {
    eprintln!("agentwatch: {}", printable(message));
    1
}

/// Agents choose their process names, host names and paths: keep control characters in them
/// from reaching the operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn write_table(out: &mut impl Write, pending: &[PendingRequest]) -> io::Result<()> {
    const HEADER: [&str; 8] = [
        "ID",
        "SESSION",
        "AGENT",
        "PID",
        "CREDENTIAL",
        "CALL",
        "SINCE",
        "EXPIRES",
    ];
    let rows: Vec<[String; 8]> = pending
        .iter()
        .map(|p| {
            [
                p.id.to_string(),
                p.session.to_string(),
                printable(&p.agent),
                format!("{} ({})", p.pid, printable(&p.comm)),
                printable(&p.credential),
                printable(&p.target()),
                printable(&p.since),
                format!("in {}s", p.expires_in_secs),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    write_row(out, HEADER, &widths)?;
    for row in &rows {
        write_row(out, row.each_ref().map(String::as_str), &widths)?;
    }
    Ok(())
}

fn write_row(out: &mut impl Write, cells: [&str; 8], widths: &[usize; 8]) -> io::Result<()> {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    writeln!(out, "{}", line.trim_end())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    use super::*;
    use crate::control::fake::{Fake, event, pending_request, require_root, start};

    /// A one-connection daemon that answers any request with `lines`, then hangs up.
    fn scripted(lines: String) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentwatch.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request).await.unwrap();
            stream.write_all(lines.as_bytes()).await.unwrap();
        });
        (dir, path)
    }

    #[tokio::test]
    async fn pending_as_table_and_json() {
        let fake = Fake::new(16);
        let (_dir, path) = start(&fake);
        let mut out = Vec::new();
        assert_eq!(pending_command(&path, false, &mut out).await.unwrap(), 0);
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        let header: Vec<_> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "ID",
                "SESSION",
                "AGENT",
                "PID",
                "CREDENTIAL",
                "CALL",
                "SINCE",
                "EXPIRES"
            ]
        );
        // Columns line up: each cell starts where its header does.
        let at = |what: &str| lines[1].find(what).unwrap();
        assert_eq!(at("4242 (curl)"), lines[0].find("PID").unwrap());
        assert_eq!(
            at("backboard.railway.app:443"),
            lines[0].find("CALL").unwrap()
        );
        assert!(lines[1].ends_with("in 55s"));

        let mut out = Vec::new();
        assert_eq!(pending_command(&path, true, &mut out).await.unwrap(), 0);
        let parsed: Vec<PendingRequest> = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, [pending_request()]);
    }

    #[tokio::test]
    async fn decide_exit_codes() {
        require_root();
        let fake = Fake::new(16);
        let (_dir, path) = start(&fake);
        let mut out = Vec::new();
        assert_eq!(decide_command(&path, 1, false, &mut out).await.unwrap(), 0);
        assert_eq!(out, b"request 1 denied\n");
        let mut out = Vec::new();
        assert_eq!(decide_command(&path, 7, true, &mut out).await.unwrap(), 1);
        fake.watched.store(true, Ordering::Relaxed);
        assert_eq!(decide_command(&path, 1, true, &mut out).await.unwrap(), 1);
        assert!(out.is_empty());
        assert_eq!(fake.decisions.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn events_lines_until_end() {
        let fake = Fake::new(16);
        let (_dir, path) = start(&fake);
        let mut out = Vec::new();
        assert_eq!(
            events_command(&path, false, Some(1), &mut out)
                .await
                .unwrap(),
            0
        );
        let expected = [2, 4]
            .map(|n| serde_json::to_string(&event(n, 1)).unwrap() + "\n")
            .concat();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[tokio::test]
    async fn events_follow_ends_in_an_error_when_the_daemon_goes() {
        let event = serde_json::to_string(&event(1, 1)).unwrap();
        let (_dir, path) = scripted(format!("{{\"type\":\"event\",\"event\":{event}}}\n"));
        let mut out = Vec::new();
        let err = events_command(&path, true, None, &mut out)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the daemon closed the connection");
        assert_eq!(String::from_utf8(out.clone()).unwrap(), event + "\n");

        let (_dir, path) = scripted("{\"type\":\"error\",\"message\":\"refused\"}\n".into());
        assert_eq!(
            events_command(&path, true, None, &mut out).await.unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn unreachable_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let err = request(&path, &Request::Status)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "cannot reach the agentwatch daemon at {}: ",
                path.display()
            )) && err.ends_with("(is it running? `systemctl status agentwatch`)"),
            "{err}"
        );
    }

    #[test]
    fn control_characters_are_not_printed() {
        assert_eq!(printable("cu\x1b]0;rl\n"), "cu?]0;rl?");
    }
}
