//! The first-head check against hyper's rules, byte for byte.

use super::*;
use crate::conn::Prefixed;
use crate::test_util::within;

fn verdict(head: &[u8]) -> Option<Result<(), u16>> {
    check(head).map(|r| r.map_err(|e| e.status().as_u16()))
}

#[test]
fn good_heads_pass_and_incomplete_ones_wait() {
    assert_eq!(
        verdict(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
        Some(Ok(()))
    );
    assert_eq!(verdict(b"CONNECT [::1]:443 HTTP/1.0\r\n\r\n"), Some(Ok(())));
    assert_eq!(
        verdict(b"GET http://x/ HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n"),
        Some(Ok(()))
    );
    assert_eq!(
        verdict(b"POST http://x/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        Some(Ok(()))
    );
    assert_eq!(
        verdict(b"\r\nGET http://x/ HTTP/1.1\r\n\r\n"),
        Some(Ok(())),
        "a leading empty line is skipped"
    );
    assert_eq!(verdict(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a"), None);
    assert_eq!(verdict(b""), None);
}

#[test]
fn bad_heads_get_400_and_too_many_fields_431() {
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"CONNECT ::1:443 HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        assert_eq!(verdict(bad), Some(Err(400)), "{}", bad.escape_ascii());
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("CONNECT a.example:443 HTTP/1.1\r\n{many}\r\n");
    assert_eq!(verdict(head.as_bytes()), Some(Err(431)));
}

#[tokio::test]
async fn prefixed_replays_the_prefix_then_reads_the_socket() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connected = async { tokio::join!(TcpStream::connect(addr), listener.accept()) };
    let (client, accepted) = within("a connected loopback pair", connected).await;
    let mut client = client.expect("connect");
    within("write", tokio::io::AsyncWriteExt::write_all(&mut client, b" world"))
        .await
        .expect("write");
    drop(client);
    let mut io = Prefixed::new(Bytes::from_static(b"hello"), accepted.expect("accept").0);
    let mut got = Vec::new();
    within("read", io.read_to_end(&mut got)).await.expect("read");
    assert_eq!(got, b"hello world");
    assert!(io.into_parts().0.is_empty(), "the prefix was read whole");
}
