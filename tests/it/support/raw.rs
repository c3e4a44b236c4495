//! Raw HTTP/1.1 exchanges for bad-input tests: send arbitrary bytes, read whatever comes back
//! (possibly nothing), and tell whether the proxy then closed the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bound::{HANG_SECS, within};
use super::wire::read_response;

/// Not a synchronisation device: only turns a hung test into a failed one.
const HANG_GUARD: Duration = Duration::from_secs(HANG_SECS);

/// One response as read off the wire.
#[derive(Debug)]
pub(crate) struct Reply {
    /// `None` when the connection ended before any response.
    pub(crate) status: Option<u16>,
    /// Header names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response (see [`read_response`]); a reply with `status: None` when the
/// connection ends before any response.
pub(crate) async fn read_reply(stream: &mut TcpStream) -> Reply {
    match read_response(stream).await {
        Some(r) => Reply {
            status: Some(r.status),
            headers: r.headers,
            body: r.body,
        },
        None => Reply {
            status: None,
            headers: vec![],
            body: String::new(),
        },
    }
}

/// Sends `bytes` in one write and reads one reply.
pub(crate) async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> (Reply, TcpStream) {
    let mut stream = within(HANG_SECS, "connect to the proxy", TcpStream::connect(proxy))
        .await
        .expect("connect to the proxy");
    within(HANG_SECS, "send to the proxy", stream.write_all(bytes))
        .await
        .expect("send");
    let reply = read_reply(&mut stream).await;
    (reply, stream)
}

/// Whether the peer closes `stream` (EOF or reset) without sending anything more. Only
/// called where a close is expected: a peer that keeps the connection open trips the guard.
pub(crate) async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(HANG_GUARD, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("expected a close, got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

/// Asserts `reply` is splitway's refusal: `status`, `Proxy-Status` with the RFC 9209 `error`
/// type, and a body that `says` what was wrong.
#[track_caller]
pub(crate) fn assert_refused(reply: &Reply, status: u16, error: &str, says: &str) {
    assert_eq!(reply.status, Some(status), "{reply:?}");
    let want = format!("splitway; error={error};");
    assert!(
        reply.header("proxy-status").is_some_and(|ps| ps.starts_with(&want)),
        "Proxy-Status is not {want:?}: {reply:?}"
    );
    assert!(reply.body.contains(says), "the body does not say {says:?}: {reply:?}");
}

/// The TCP sockets in `state` (`established`, `listening`) whose `side` (`sport`, `dport`) is
/// `port`, as `ss -tno` shows them, one a line (the timer column says `keepalive` when TCP
/// keepalive is on). Callers `require` `ss` first.
pub(crate) fn sockets(state: &str, side: &str, port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", state, &format!("( {side} = :{port} )")])
        .output()
        .expect("run ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
