use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::event::Event;
use crate::policy::Action;
use crate::sys::proc::supplementary_groups;

use super::{
    ControlHandler, Peer,
    authorize::Authority,
    client::{self, Subscription},
    connection::{MAX_REQUEST_LINE, Out},
    fake::{Fake, event, pending_request, require_root, start},
    listener::bind,
    protocol::{Request, Response},
};

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
    let mine = supplementary_groups(std::process::id()).unwrap();
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
            replay: true,
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
        .map(|n| Response::Event {
            event: event(n, 2).into(),
        })
        .into_iter()
        .chain([Response::End])
        .collect();
    assert_eq!(replay, expected);

    let follow = Request::Events {
        follow: true,
        session: Some(1),
        replay: true,
    };
    let mut sub = Subscription::open(&path, &follow).await.unwrap();
    for n in [2, 4] {
        let got = sub.next().await.unwrap().unwrap();
        assert_eq!(
            got,
            Response::Event {
                event: event(n, 1).into(),
            }
        );
    }
    assert_eq!(sub.next().await.unwrap().unwrap(), Response::Live);
    for (n, session) in [(5, 2), (6, 1), (7, 2), (8, 1)] {
        fake.events.send(Arc::new(event(n, session))).unwrap();
    }
    for n in [6, 8] {
        let got = sub.next().await.unwrap().unwrap();
        assert_eq!(
            got,
            Response::Event {
                event: event(n, 1).into(),
            }
        );
    }
}

#[tokio::test]
async fn a_follower_without_replay_hears_live_first_then_only_new_events() {
    let fake = Fake::new(64);
    let (_dir, path) = start(&fake);
    let live_only = Request::Events {
        follow: true,
        session: None,
        replay: false,
    };
    let mut sub = Subscription::open(&path, &live_only).await.unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap(), Response::Live);
    fake.events.send(Arc::new(event(9, 1))).unwrap();
    assert_eq!(
        sub.next().await.unwrap().unwrap(),
        Response::Event {
            event: event(9, 1).into(),
        }
    );
}

#[tokio::test]
async fn a_lagging_follower_is_told_and_goes_on() {
    let fake = Fake::new(4);
    let (_dir, path) = start(&fake);
    let follow = Request::Events {
        follow: true,
        session: None,
        replay: true,
    };
    let mut sub = Subscription::open(&path, &follow).await.unwrap();
    for _ in 0..fake.recent.len() {
        sub.next().await.unwrap().unwrap();
    }
    assert_eq!(sub.next().await.unwrap().unwrap(), Response::Live);
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
        assert_eq!(
            got,
            Response::Event {
                event: event(n, 1).into(),
            }
        );
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
                    let event = Event {
                        comm: padding.clone(),
                        ..event(n, 1)
                    };
                    let _ = fake.events.send(Arc::new(event));
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
    let event = Event {
        comm: "a\"b\n".into(),
        ..event(1, 3)
    };
    out.queue_event(&event, Some(3));
    out.queue_event(&event, Some(4));
    let mut expected = serde_json::to_vec(&Response::Event {
        event: event.into(),
    })
    .unwrap();
    expected.push(b'\n');
    assert_eq!(out.buf, expected);
}

#[tokio::test]
async fn a_watched_session_may_ask_why_but_never_approve() {
    let fake = Fake::new(1);
    fake.watched.store(true, Ordering::Relaxed);
    let authority = Authority { admin_gid: None };
    let agent = me(1000, 1000);
    let why = Request::Why { unreported: true };
    authority.authorize(&why, agent, &*fake).unwrap();
    let hidden = Peer { pid: 0, ..agent };
    assert!(authority.authorize(&why, hidden, &*fake).is_err());
    for decision in [Request::Approve { id: 1 }, Request::Deny { id: 1 }] {
        let err = authority
            .authorize(&decision, me(0, 0), &*fake)
            .unwrap_err();
        assert!(err.contains("watched session cannot approve"), "{err}");
    }
    // Over the socket, the answer is the session's refusal event.
    let (_dir, path) = start(&fake);
    match client::request(&path, &why).await.unwrap() {
        Response::Refusal { event } => {
            assert_eq!(event.as_deref(), fake.recent.last().map(|e| &**e))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn run_opens_a_session_only_for_the_askers_own_child_and_streams_it_alone() {
    require_root();
    let fake = Fake::new(64);
    let (_dir, path) = start(&fake);
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let run = |pid| Request::Run {
        pid,
        argv: vec!["sleep".into(), "30".into()],
        mode: Some(Action::Kill),
    };
    let mut sub = Subscription::open(&path, &run(pid)).await.unwrap();
    assert_eq!(
        sub.next().await.unwrap().unwrap(),
        Response::Opened {
            session: pid,
            action: Action::Kill
        }
    );
    assert_eq!(sub.next().await.unwrap().unwrap(), Response::Live);
    fake.events.send(Arc::new(event(7, 1))).unwrap();
    fake.events.send(Arc::new(event(8, pid))).unwrap();
    assert_eq!(
        sub.next().await.unwrap().unwrap(),
        Response::Event {
            event: event(8, pid).into(),
        }
    );
    assert_eq!(*fake.runs.lock().unwrap(), [pid]);

    // Not the asker's child (init is nobody's).
    let Response::Error { message } = client::request(&path, &run(1)).await.unwrap() else {
        panic!("a session for another's process");
    };
    assert!(message.contains("not a child"), "{message}");
    fake.watched.store(true, Ordering::Relaxed);
    let Response::Error { message } = client::request(&path, &run(pid)).await.unwrap() else {
        panic!("a session opened from a watched one");
    };
    assert!(
        message.contains("cannot approve or deny requests or open sessions"),
        "{message}"
    );
    assert_eq!(fake.runs.lock().unwrap().len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
}
