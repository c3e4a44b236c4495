//! The one reader of raw HTTP/1.1 responses in the tests: a head read one byte at a time (so
//! nothing after it is consumed: a CONNECT 200 leaves the tunnel's first byte unread), then
//! the body delimited as RFC 9112 §6.3 says. Every read is bounded.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::bound::{HANG_SECS, within};

/// Longest response head accepted from a proxy or server.
const MAX_HEAD: usize = 64 * 1024;

/// One response as read off the wire.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status_line: String,
    pub(crate) status: u16,
    /// Header names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

/// Reads one response; `None` when the connection ends (EOF or reset) before its first byte.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Response> {
    let (status_line, headers) = read_head(stream).await?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let body = read_body(stream, status, &headers).await;
    Some(Response {
        status_line,
        status,
        headers,
        body,
    })
}

/// The status line and the headers with lowercased names; `None` on an end before any byte.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(String, Vec<(String, String)>)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < MAX_HEAD, "response head longer than {MAX_HEAD} bytes");
        match within(HANG_SECS, "response head byte", stream.read_u8()).await {
            Ok(byte) => head.push(byte),
            Err(_) if head.is_empty() => return None,
            Err(e) => panic!(
                "connection ended in the head ({e}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8(head).expect("response head is UTF-8");
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .map(|line| {
            line.split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"))
        })
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Some((status_line, headers))
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Reads the body the way RFC 9112 §6.3 delimits it; a 2xx without a length (a CONNECT
/// success) has none, so the tunnel's bytes stay unread.
async fn read_body<S: AsyncRead + Unpin>(stream: &mut S, status: u16, headers: &[(String, String)]) -> String {
    let chunked = find(headers, "transfer-encoding").is_some_and(|te| te.contains("chunked"));
    let length = find(headers, "content-length").map(|l| l.parse().expect("content-length"));
    let mut body = Vec::new();
    match length {
        Some(len) => {
            body.resize(len, 0);
            within(HANG_SECS, "response body", stream.read_exact(&mut body))
                .await
                .expect("read the body");
        }
        None if chunked => body = read_chunked(stream).await,
        None if (200..300).contains(&status) || status == 204 || status == 304 => {}
        None => {
            within(HANG_SECS, "close-delimited body", stream.read_to_end(&mut body))
                .await
                .expect("read the close-delimited body");
        }
    }
    String::from_utf8(body).expect("body is UTF-8")
}

async fn read_chunked<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream).await;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).expect("chunk size");
        if size == 0 {
            while !read_line(stream).await.is_empty() {}
            return body;
        }
        let start = body.len();
        body.resize(start + size, 0);
        within(HANG_SECS, "a chunk", stream.read_exact(&mut body[start..]))
            .await
            .expect("read a chunk");
        read_line(stream).await;
    }
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        let byte = within(HANG_SECS, "a chunked-body line", stream.read_u8()).await;
        line.push(byte.expect("read a chunked-body line"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).expect("chunk line is UTF-8")
}
