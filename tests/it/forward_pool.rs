//! The forwarding pool's bounds: idle upstream connections never exceed the per-host cap nor
//! the total cap, and a request past the total cap is still served (on a single-use
//! connection), never queued or refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use splitway::{POOL_MAX_CONNECTIONS, POOL_MAX_IDLE_PER_HOST};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, watch};

use crate::support::proxy::{PrivateDns, TestProxy, proxy_section, resolver_sections};
use crate::support::*;

/// Not a synchronisation device: only turns a hung test into a failed one.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// A plain HTTP origin that counts the connections open at it now and the most ever open;
/// with a barrier, each request waits until that many are in flight.
struct Origin {
    addr: SocketAddr,
    open: watch::Receiver<(usize, usize)>,
}

async fn start_origin(ip: &str, barrier: Option<Arc<Barrier>>) -> Origin {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    let (tx, open) = watch::channel((0, 0));
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tx.send_modify(|(now, most)| {
                *now += 1;
                *most = (*most).max(*now);
            });
            let (tx, barrier) = (tx.clone(), barrier.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                    let barrier = barrier.clone();
                    async move {
                        if let Some(b) = barrier {
                            b.wait().await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"pooled\n"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                tx.send_modify(|(now, _)| *now -= 1);
            });
        }
    });
    Origin { addr, open }
}

fn config(origin: &Origin) -> String {
    proxy_section(aws_net())
        + &resolver_sections(aws_net(), PrivateDns::On)
        + &format!(
            "\n[[route]]\nname = \"pool\"\nhosts = [\"*.pool.test\"]\naddresses = [\"{}\"]\n",
            origin.addr.ip()
        )
}

/// One forwarded GET on its own client connection (closed after the response).
async fn get_via(proxy: &TestProxy, host: &str, port: u16) {
    let request = format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, _, body, _) = tokio::time::timeout(HANG_GUARD, connect_raw(proxy.addr, request.as_bytes()))
        .await
        .expect("forwarded in time");
    assert_eq!(status_of(&status), 200, "{host}: {status}\n{body}");
    assert_eq!(body, "pooled\n");
}

/// Waits until exactly `n` connections stay open at the origin.
async fn settles_at(origin: &mut Origin, n: usize) {
    let waited = tokio::time::timeout(HANG_GUARD, origin.open.wait_for(|(now, _)| *now == n))
        .await
        .is_ok();
    let now = origin.open.borrow().0;
    assert!(waited, "{now} connections open at the origin, want {n}");
}

#[tokio::test]
async fn forward_pool_keeps_at_most_its_total_cap_of_idle_connections() {
    let mut origin = start_origin("127.12.1.1", None).await;
    let proxy = TestProxy::start(&config(&origin)).await;
    // More distinct hosts than the pool may keep: each request leaves its connection idle.
    let hosts = POOL_MAX_CONNECTIONS + 12;
    for i in 0..hosts {
        get_via(&proxy, &format!("h{i}.pool.test"), origin.addr.port()).await;
    }
    // Past the cap, each connection served its one request and was closed.
    settles_at(&mut origin, POOL_MAX_CONNECTIONS).await;
    let most = origin.open.borrow().1;
    assert!(most <= POOL_MAX_CONNECTIONS + 1, "{most} open at once");
    // With the budget full of idle connections to other hosts, a new host is still served.
    get_via(&proxy, "late.pool.test", origin.addr.port()).await;
    // And a host already pooled reuses its connection.
    get_via(&proxy, "h0.pool.test", origin.addr.port()).await;
    settles_at(&mut origin, POOL_MAX_CONNECTIONS).await;
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn forward_pool_keeps_at_most_its_per_host_cap_of_idle_connections() {
    let concurrent = POOL_MAX_IDLE_PER_HOST + 4;
    let barrier = Arc::new(Barrier::new(concurrent));
    let mut origin = start_origin("127.12.1.2", Some(barrier)).await;
    let proxy = Arc::new(TestProxy::start(&config(&origin)).await);
    // All in flight at once (the origin answers none until every one has arrived), so each
    // has its own upstream connection.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..concurrent {
        let (proxy, port) = (proxy.clone(), origin.addr.port());
        requests.spawn(async move { get_via(&proxy, "one.pool.test", port).await });
    }
    while let Some(done) = requests.join_next().await {
        done.expect("request task");
    }
    assert_eq!(
        origin.open.borrow().1,
        concurrent,
        "one upstream connection per request"
    );
    settles_at(&mut origin, POOL_MAX_IDLE_PER_HOST).await;
    proxy.assert_no_leaks().await;
    let proxy = Arc::into_inner(proxy).expect("no request task holds the proxy");
    proxy.stop().await;
}
