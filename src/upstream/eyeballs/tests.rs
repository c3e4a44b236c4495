//! The race against fake attempts: never answering, refused at once, connecting.

use std::pin::Pin;

use tokio::net::TcpListener;

use super::*;

type Attempt = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// `dead` never answers, `refused` is reset at once, anything else connects to `live`.
fn connector(live: SocketAddr, dead: SocketAddr, refused: SocketAddr) -> impl Fn(SocketAddr) -> Attempt {
    move |addr| -> Attempt {
        if addr == dead {
            Box::pin(std::future::pending())
        } else if addr == refused {
            Box::pin(async { Err(io::ErrorKind::ConnectionRefused.into()) })
        } else {
            Box::pin(TcpStream::connect(live))
        }
    }
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 443))
}

#[tokio::test]
async fn an_unanswered_attempt_overtaken_by_the_next_is_reported_slow() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let connect = connector(live, addr(1), addr(2));
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    match race(&[addr(1), live], deadline, &connect).await {
        Race::Won { addr: won, slow, .. } => assert_eq!((won, slow), (live, vec![addr(1)])),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= ATTEMPT_DELAY, "the next attempt waited the delay");
    // A refusal starts the next attempt at once, and is a failure, not a slow attempt.
    let started = Instant::now();
    match race(&[addr(2), live], deadline, &connect).await {
        Race::Won { addr: won, slow, .. } => assert_eq!((won, slow), (live, vec![])),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < ATTEMPT_DELAY, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_deadline_reports_the_attempts_still_running() {
    let live = SocketAddr::from(([127, 0, 0, 1], 9));
    let connect = connector(live, addr(1), addr(2));
    let deadline = Instant::now() + Duration::from_millis(50);
    match race(&[addr(1), addr(3)], deadline, &connect).await {
        Race::TimedOut { unanswered } => assert_eq!(unanswered, [addr(1)], "the second never started"),
        other => panic!("{other:?}"),
    }
    match race(
        &[addr(2), addr(1)],
        Instant::now() + Duration::from_millis(50),
        &connect,
    )
    .await
    {
        Race::TimedOut { unanswered } => assert_eq!(unanswered, [addr(1)]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn interleave_alternates_families_ipv6_first() {
    let ips: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let out: Vec<String> = interleave(ips, 443).iter().map(ToString::to_string).collect();
    assert_eq!(out, ["[::1]:443", "10.0.0.1:443", "10.0.0.2:443"]);
}
