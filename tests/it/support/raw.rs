//! Raw HTTP/1.1 exchanges for bad-input tests: send arbitrary bytes, read whatever comes back
//! (possibly nothing), and tell whether the proxy then closed the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Not a synchronisation device: only turns a hung test into a failed one.
const HANG_GUARD: Duration = Duration::from_secs(20);

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

/// Reads one response head and its `content-length` body (a response without one, such as a
/// CONNECT 200, has no body); `None` when the connection ends first.
pub(crate) async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(HANG_GUARD, stream.read_u8())
            .await
            .expect("hung reading a response head")
        {
            Ok(b) => head.push(b),
            Err(_) => {
                assert!(
                    head.is_empty(),
                    "connection ended inside a response head: {:?}",
                    String::from_utf8_lossy(&head)
                );
                return Reply {
                    status: None,
                    headers: vec![],
                    body: String::new(),
                };
            }
        }
    }
    let head = String::from_utf8(head).expect("response head is UTF-8");
    let mut lines = head.trim_end().split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut body))
        .await
        .expect("hung reading a body")
        .expect("body");
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends `bytes` in one write and reads one reply.
pub(crate) async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> (Reply, TcpStream) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to the proxy");
    stream.write_all(bytes).await.expect("send");
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
