use super::*;

fn pending(session: u32, deadline: Instant) -> Pending {
    Pending {
        session,
        retry: Retry::Connect("1.2.3.4".parse().unwrap()),
        deadline,
    }
}

#[test]
fn ids_are_never_reused_and_close_answers_once() {
    let now = Instant::now();
    let mut requests = Requests::default();
    let first = requests.open(pending(7, now));
    let second = requests.open(pending(8, now));
    assert_eq!((first, second), (1, 2));
    assert_eq!(requests.close(first).map(|p| p.session), Some(7));
    assert_eq!(requests.close(first), None);
    assert_eq!(requests.open(pending(7, now)), 3);
    assert_eq!(requests.ids(), vec![2, 3]);
}

#[test]
fn deadlines_expire_and_count_down() {
    let now = Instant::now();
    let mut requests = Requests::default();
    let soon = requests.open(pending(1, now + Duration::from_secs(5)));
    let later = requests.open(pending(2, now + Duration::from_secs(60)));
    assert!(requests.expired(now).is_empty());
    assert_eq!(requests.expired(now + Duration::from_secs(5)), vec![soon]);
    assert_eq!(
        requests.expires_in(later, now + Duration::from_secs(20)),
        Some(Duration::from_secs(40))
    );
    assert_eq!(
        requests.expires_in(soon, now + Duration::from_secs(90)),
        Some(Duration::ZERO)
    );
    assert_eq!(requests.expires_in(99, now), None);
}

#[test]
fn an_ended_session_takes_its_requests_with_it() {
    let now = Instant::now();
    let mut requests = Requests::default();
    let a = requests.open(pending(1, now));
    let b = requests.open(pending(2, now));
    let c = requests.open(pending(1, now));
    assert_eq!(requests.close_session(1), vec![a, c]);
    assert_eq!(requests.ids(), vec![b]);
    assert_eq!(requests.len(), 1);
}
