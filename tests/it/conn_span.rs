//! The connection span on a tunnel's line: an idle tunnel holds no span, so its close makes
//! the connection's span again to log in. The line must read as if the span had been held all
//! along, on a connection's first `CONNECT` and on one hyper handed back after a request.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::bin::Running;
use crate::support::config::loopback_toml;
use crate::support::origin::{echo_head_origin, sink_origin};
use crate::support::raw::{exchange, read_reply};
use crate::support::*;

/// The text line's `conn{…}: ` prefix as the JSON log carries it: the span's fields.
fn assert_in_conn_span(line: &serde_json::Value, client: std::net::SocketAddr) {
    let span = &line["span"];
    assert_eq!(span["name"], "conn", "{line}");
    assert_eq!(span["listener"], "proxy", "{line}");
    assert_eq!(span["client"], client.to_string(), "{line}");
    assert!(span.get("peer").is_none(), "no PROXY header, no peer: {line}");
    assert_eq!(
        line["spans"].as_array().map(Vec::len),
        Some(1),
        "one span, not nested: {line}"
    );
}

#[tokio::test]
async fn a_tunnels_line_is_in_its_connections_span() {
    let up = sink_origin().await;
    let origin = echo_head_origin().await;
    let toml = loopback_toml(up.port());
    let mut proxy = Running::start(&toml).await;

    // A connection's first CONNECT: its tunnel idles in the connection's own task.
    let connect = format!("CONNECT {up} HTTP/1.1\r\nhost: {up}\r\n\r\n");
    let (reply, mut first) = exchange(proxy.listen, connect.as_bytes()).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    let client = first.local_addr().expect("addr");
    within(HANG_SECS, "tunnel bytes", first.write_all(b"hello"))
        .await
        .expect("write");
    drop(first);
    let line = proxy.next_log("tunnel closed").await;
    assert_eq!(line["client"], client.to_string(), "{line}");
    assert_in_conn_span(&line, client);

    // A CONNECT after a forwarded request on the same connection: hyper hands it back.
    let mut kept = within(HANG_SECS, "connect to the proxy", TcpStream::connect(proxy.listen))
        .await
        .expect("connect");
    let client = kept.local_addr().expect("addr");
    let get = format!("GET http://{origin}/ HTTP/1.1\r\nhost: {origin}\r\n\r\n{connect}");
    within(HANG_SECS, "requests", kept.write_all(get.as_bytes()))
        .await
        .expect("write");
    assert_eq!(read_reply(&mut kept).await.status, Some(200), "the forwarded GET");
    assert_eq!(read_reply(&mut kept).await.status, Some(200), "the CONNECT after it");
    drop(kept);
    let line = proxy.next_log("tunnel closed").await;
    assert_eq!(line["client"], client.to_string(), "{line}");
    assert_in_conn_span(&line, client);
}
