//! The readiness-driven pipe over real loopback sockets: bytes and counts both ways,
//! half-closes, a destination slower than its source, and the idle timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Activity, PipeEnd, run};
use crate::test_util::within;

/// A connected pair: (the end a test drives, the end the pipe owns).
async fn pair() -> (TcpStream, TcpStream) {
    within("a connected loopback pair", connected_pair()).await
}

/// `pair` without a bound, for a test on a paused clock (where a bound fires at once).
async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (outer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (outer.expect("connect"), accepted.expect("accept").0)
}

fn spawn_pipe(
    mut client: TcpStream,
    mut upstream: TcpStream,
    idle: Duration,
) -> (Arc<Activity>, tokio::task::JoinHandle<PipeEnd>) {
    let activity = Arc::new(Activity::default());
    let a = activity.clone();
    (
        activity,
        tokio::spawn(async move { run(&mut client, &mut upstream, idle, None, &a).await }),
    )
}

/// A pipe's end on a paused clock, bounded past its 300 s idle timeout (a bound in real time
/// would fire at once there): a pipe that never ends fails instead of hanging.
async fn idle_end(pipe: tokio::task::JoinHandle<PipeEnd>) -> PipeEnd {
    tokio::time::timeout(Duration::from_secs(600), pipe)
        .await
        .expect("the pipe did not end within 600 s of virtual time")
        .expect("pipe task")
}

/// `from` writes `bytes` and half-closes; `to` reads exactly them, then the end of stream.
async fn send_and_end(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
    within("write", from.write_all(bytes)).await.expect("write");
    within("half-close", from.shutdown()).await.expect("half-close");
    let mut got = Vec::new();
    within("read to the end", to.read_to_end(&mut got))
        .await
        .expect("read to the end");
    assert_eq!(got, bytes);
}

/// How a test starts a pipe: [`spawn_pipe`] (the fast path) or [`spawn_generic`].
type Spawn = fn(TcpStream, TcpStream, Duration) -> (Arc<Activity>, tokio::task::JoinHandle<PipeEnd>);

#[tokio::test]
async fn bytes_cross_both_ways_and_half_closes_propagate() {
    crosses_both_ways_and_closes(spawn_pipe).await;
}

/// The fallback for a client hyper hands back in another type: the same counts and ends.
#[tokio::test]
async fn the_generic_pipe_crosses_both_ways_and_half_closes_propagate() {
    crosses_both_ways_and_closes(spawn_generic).await;
}

async fn crosses_both_ways_and_closes(spawn: Spawn) {
    let (mut app, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let (activity, pipe) = spawn(client_side, upstream_side, Duration::from_secs(60));

    send_and_end(&mut app, &mut origin, b"hello").await;
    // The other direction still works after the client's half-close.
    send_and_end(&mut origin, &mut app, b"world!").await;

    assert_eq!(within("pipe task", pipe).await.expect("pipe task"), PipeEnd::Closed);
    assert_eq!(
        activity.client_to_upstream.load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    assert_eq!(
        activity.upstream_to_client.load(std::sync::atomic::Ordering::Relaxed),
        6
    );
}

/// The origin ends first: its end reaches the app while the app's direction goes on, and the
/// app's end then reaches the origin, although the pipe makes no `shutdown` for the direction
/// that ends last (closing both sockets sends that FIN).
#[tokio::test]
async fn the_direction_that_ends_last_reaches_its_reader_too() {
    let (mut app, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let (_, pipe) = spawn_pipe(client_side, upstream_side, Duration::from_secs(60));

    within("origin writes", origin.write_all(b"bye")).await.expect("write");
    within("origin half-closes", origin.shutdown())
        .await
        .expect("half-close");
    let mut got = Vec::new();
    within("app reads to EOF", app.read_to_end(&mut got))
        .await
        .expect("app reads to EOF");
    assert_eq!(got, b"bye");

    within("app writes after the origin's end", app.write_all(b"late"))
        .await
        .expect("write");
    within("app half-closes", app.shutdown()).await.expect("half-close");
    let mut late = Vec::new();
    within("origin reads to EOF", origin.read_to_end(&mut late))
        .await
        .expect("origin reads to EOF");
    assert_eq!(late, b"late");
    assert_eq!(within("pipe task", pipe).await.expect("pipe task"), PipeEnd::Closed);
}

#[tokio::test]
async fn a_slow_reader_gets_every_byte_in_order() {
    let (mut app, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let (activity, pipe) = spawn_pipe(client_side, upstream_side, Duration::from_secs(60));
    // Far more than the socket buffers hold, so writes to the app come back partial.
    let data: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        within("origin writes", origin.write_all(&sent))
            .await
            .expect("origin writes");
        within("close", origin.shutdown()).await.expect("close");
        origin
    });
    let mut got = Vec::with_capacity(data.len());
    let mut chunk = vec![0u8; 7000];
    loop {
        let n = within("app reads", app.read(&mut chunk)).await.expect("app reads");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        if got.len() % 5 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(got == data, "bytes differ: {} received of {}", got.len(), data.len());
    drop(app);
    drop(within("writer", writer).await.expect("writer"));
    assert!(matches!(
        within("pipe task", pipe).await.expect("pipe task"),
        PipeEnd::Closed | PipeEnd::Error(_)
    ));
    assert_eq!(
        activity.upstream_to_client.load(std::sync::atomic::Ordering::Relaxed),
        data.len() as u64
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_tunnel_ends_idle() {
    ends_idle_when_silent(spawn_pipe).await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_generic_pipe_ends_idle() {
    ends_idle_when_silent(spawn_generic).await;
}

async fn ends_idle_when_silent(spawn: Spawn) {
    let (_app, client_side) = connected_pair().await;
    let (upstream_side, _origin) = connected_pair().await;
    let (_, pipe) = spawn(client_side, upstream_side, Duration::from_secs(300));
    assert_eq!(idle_end(pipe).await, PipeEnd::Idle);
}

/// `tcp_keepalive` reaches the upstream socket once the tunnel has lasted `KEEPALIVE_AFTER`,
/// not before (a short tunnel makes no `setsockopt` for it), and the idle timeout still ends
/// a silent tunnel after it.
#[tokio::test(start_paused = true)]
async fn keepalive_reaches_the_upstream_socket_once_the_tunnel_lasts() {
    let (_app, mut client_side) = connected_pair().await;
    let (mut upstream_side, _origin) = connected_pair().await;
    let probe = socket2::SockRef::from(&upstream_side).try_clone().expect("dup");
    let a = Arc::new(Activity::default());
    let started = tokio::time::Instant::now();
    let pipe = tokio::spawn(async move {
        let keepalive = Some(Duration::from_secs(42));
        run(
            &mut client_side,
            &mut upstream_side,
            Duration::from_secs(300),
            keepalive,
            &a,
        )
        .await
    });
    tokio::time::sleep(super::KEEPALIVE_AFTER / 2).await;
    assert!(
        !probe.keepalive().expect("SO_KEEPALIVE"),
        "set before the tunnel lasted"
    );
    tokio::time::sleep(super::KEEPALIVE_AFTER).await;
    assert!(
        probe.keepalive().expect("SO_KEEPALIVE"),
        "not set once the tunnel lasted"
    );
    assert_eq!(
        probe.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
        Duration::from_secs(42)
    );
    assert_eq!(idle_end(pipe).await, PipeEnd::Idle);
    let ended = started.elapsed();
    assert!(
        (Duration::from_secs(300)..Duration::from_secs(301)).contains(&ended),
        "the idle timeout moved: ended after {ended:?}"
    );
}

#[tokio::test]
async fn a_reset_ends_the_pipe_with_an_error() {
    let (app, client_side) = pair().await;
    let (upstream_side, _origin) = pair().await;
    let (_, pipe) = spawn_pipe(client_side, upstream_side, Duration::from_secs(60));
    // SO_LINGER 0: close sends a reset instead of a FIN.
    app.set_zero_linger().expect("linger");
    drop(app);
    assert!(matches!(
        within("pipe task", pipe).await.expect("pipe task"),
        PipeEnd::Error(_)
    ));
}

#[tokio::test]
async fn bulk_both_ways_at_once_crosses_intact() {
    bulk_both_ways().await;
}

/// The same with splicing on (`SPLITWAY_SPLICE=on`). The switch is process-wide: once this
/// test has set it, other tests of this binary may splice too, which each path must survive.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn bulk_both_ways_at_once_crosses_intact_when_spliced() {
    super::splice::enable();
    bulk_both_ways().await;
}

async fn bulk_both_ways() {
    let (mut app, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let (activity, pipe) = spawn_pipe(client_side, upstream_side, Duration::from_secs(60));
    let up: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    let down: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    let (app_r, mut app_w) = app.split();
    let (origin_r, mut origin_w) = origin.split();
    let (got_down, got_up, (), ()) = tokio::join!(
        read_all(app_r),
        read_all(origin_r),
        async {
            within("app writes", app_w.write_all(&up)).await.expect("app writes");
            within("app half-closes", app_w.shutdown())
                .await
                .expect("app half-closes");
        },
        async {
            within("origin writes", origin_w.write_all(&down))
                .await
                .expect("origin writes");
            within("origin half-closes", origin_w.shutdown())
                .await
                .expect("origin half-closes");
        }
    );
    assert!(got_up == up, "upload differs: {} of {}", got_up.len(), up.len());
    assert!(
        got_down == down,
        "download differs: {} of {}",
        got_down.len(),
        down.len()
    );
    assert_eq!(within("pipe task", pipe).await.expect("pipe task"), PipeEnd::Closed);
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&activity.client_to_upstream), up.len() as u64);
    assert_eq!(count(&activity.upstream_to_client), down.len() as u64);
}

async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut got = Vec::new();
    within("read to EOF", r.read_to_end(&mut got))
        .await
        .expect("read to EOF");
    got
}

/// An idle tunnel's memory is mostly its task, and the task is as large as this future: the
/// copy future must be held once, not once as an argument and again pinned (a double that
/// cost about 700 bytes a tunnel here before).
/// An idle tunnel's task holds its relay: both directions and the idle watch in one small
/// state, no future per direction (two `async` directions joined and raced against the idle
/// timer took 1,096 bytes).
#[tokio::test]
async fn the_relay_future_is_a_few_hundred_bytes() {
    let (mut a, mut b) = pair().await;
    let act = Activity::default();
    let relay = run(
        &mut a,
        &mut b,
        Duration::from_secs(1),
        Some(Duration::from_secs(60)),
        &act,
    );
    let size = std::mem::size_of_val(&relay);
    let sleep = std::mem::size_of::<tokio::time::Sleep>();
    assert!(
        size <= sleep + 320,
        "pipe::run is {size} bytes ({sleep} of them its idle timer)"
    );
}

fn spawn_generic(
    client: TcpStream,
    mut upstream: TcpStream,
    idle: Duration,
) -> (Arc<Activity>, tokio::task::JoinHandle<PipeEnd>) {
    let activity = Arc::new(Activity::default());
    let a = activity.clone();
    (
        activity,
        tokio::spawn(async move { super::run_generic(client, &mut upstream, idle, &a).await }),
    )
}
