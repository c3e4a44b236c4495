//! PROXY header framing and parsing: v1, v2, LOCAL, the AWS VPC endpoint TLV, and the bounds.

use ppp::v2::{Builder, Command, Protocol, Version};

use super::*;
use crate::test_util::within;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn v2(command: Command, tlv: Option<&[u8]>) -> Vec<u8> {
    let addresses = (addr("10.1.2.3:40000"), addr("10.0.0.5:3128"));
    let b = Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses);
    let b = match tlv {
        Some(value) => b.write_tlv(PP2_TYPE_AWS, value).expect("tlv"),
        None => b,
    };
    b.build().expect("header")
}

#[test]
fn frames_say_how_far_a_header_goes() {
    let h = v2(Command::Proxy, None);
    assert_eq!(frame(&h), Frame::Header(h.len()));
    assert_eq!(frame(&h[..13]), Frame::Incomplete);
    assert_eq!(frame(&h[..5]), Frame::Incomplete);
    assert_eq!(frame(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET"), Frame::Header(32));
    assert_eq!(frame(b"PROX"), Frame::Incomplete);
    assert_eq!(frame(b"CONNECT a:443 HTTP/1.1\r\n"), Frame::None);
    assert_eq!(frame(b"POST"), Frame::None);
    assert_eq!(frame(&[b'P'; 200]), Frame::None);
    let mut long = b"PROXY TCP4 ".to_vec();
    long.extend([b'1'; 120]);
    assert_eq!(frame(&long), Frame::TooLarge);
    let mut huge = h[..14].to_vec();
    huge.extend(u16::MAX.to_be_bytes());
    assert_eq!(frame(&huge), Frame::TooLarge);
}

#[test]
fn the_source_is_the_client_and_the_peer_is_kept() {
    let peer = addr("10.0.0.9:5555");
    let who = parse(&v2(Command::Proxy, None), peer).expect("valid").expect("proxy");
    assert_eq!(who.client, addr("10.1.2.3:40000"));
    assert_eq!(who.peer, Some(peer));
    assert_eq!(who.vpc_endpoint, None);
    let v1 = parse(b"PROXY TCP6 fd00::1 fd00::2 40001 3128\r\n", peer)
        .expect("valid")
        .expect("proxy");
    assert_eq!(v1.client, addr("[fd00::1]:40001"));
    let unknown = parse(b"PROXY UNKNOWN\r\n", peer).expect("valid").expect("proxy");
    assert_eq!(unknown.client, peer);
}

#[test]
fn local_is_a_health_check_and_the_aws_tlv_names_the_endpoint() {
    let peer = addr("10.0.0.9:5555");
    assert!(parse(&v2(Command::Local, None), peer).expect("valid").is_none());
    let tlv = [&[PP2_SUBTYPE_AWS_VPCE_ID][..], b"vpce-0a1b2c3d4e5f60789"].concat();
    let who = parse(&v2(Command::Proxy, Some(&tlv)), peer)
        .expect("valid")
        .expect("proxy");
    assert_eq!(who.vpc_endpoint.as_deref(), Some("vpce-0a1b2c3d4e5f60789"));
    // Another AWS subtype is not an endpoint ID.
    let other = parse(&v2(Command::Proxy, Some(&[0x02, b'x'])), peer)
        .expect("valid")
        .expect("proxy");
    assert_eq!(other.vpc_endpoint, None);
    let bad_id = [&[PP2_SUBTYPE_AWS_VPCE_ID][..], b"vpce-\n"].concat();
    assert!(parse(&v2(Command::Proxy, Some(&bad_id)), peer).is_err());
}

#[test]
fn malformed_headers_are_errors() {
    let peer = addr("10.0.0.9:5555");
    for bad in [
        &b"PROXY TCP4 1.2.3.4\r\n"[..],
        b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        assert!(parse(bad, peer).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    let mut wrong_version = v2(Command::Proxy, None);
    wrong_version[12] = 0x31;
    assert!(parse(&wrong_version, peer).is_err());
}

/// A connection with `bytes` from a peer that is (or is not) trusted.
async fn arrive(bytes: &[u8], mode: ProxyProtocol, trusted: bool) -> Arrival {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (mut stream, peer) = within("accept", listener.accept()).await.expect("accept");
    client.write_all(bytes).await.expect("write");
    client.shutdown().await.expect("shutdown");
    let from: Vec<IpNet> = if trusted {
        vec!["127.0.0.0/8".parse().expect("net")]
    } else {
        vec!["10.0.0.0/8".parse().expect("net")]
    };
    within("header", read(&mut stream, peer, mode, &from, Duration::from_secs(5))).await
}

#[tokio::test]
async fn trust_and_requirement_decide() {
    let h = [v2(Command::Proxy, None), b"CONNECT a:443 HTTP/1.1\r\n\r\n".to_vec()].concat();
    match arrive(&h, ProxyProtocol::Required, true).await {
        Arrival::Serve(who, rest) => {
            assert_eq!(who.client, addr("10.1.2.3:40000"));
            assert_eq!(
                &rest[..],
                b"CONNECT a:443 HTTP/1.1\r\n\r\n",
                "bytes after the header are the head's"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        arrive(&h, ProxyProtocol::Optional, false).await,
        Arrival::Close(Some(ProxyHeader::Untrusted))
    ));
    assert!(matches!(
        arrive(b"GET / HTTP/1.1\r\n\r\n", ProxyProtocol::Required, false).await,
        Arrival::Close(Some(ProxyHeader::Untrusted))
    ));
    assert!(matches!(
        arrive(b"GET / HTTP/1.1\r\n\r\n", ProxyProtocol::Required, true).await,
        Arrival::Close(Some(ProxyHeader::Missing))
    ));
    assert!(matches!(
        arrive(b"GET / HTTP/1.1\r\n\r\n", ProxyProtocol::Optional, true).await,
        Arrival::Serve(_, _)
    ));
    assert!(matches!(
        arrive(b"PROXY TCP4 1.2", ProxyProtocol::Optional, true).await,
        Arrival::Close(Some(ProxyHeader::Timeout))
    ));
    assert!(matches!(
        arrive(&v2(Command::Local, None), ProxyProtocol::Required, true).await,
        Arrival::Local(_)
    ));
    assert!(matches!(
        arrive(b"", ProxyProtocol::Required, true).await,
        Arrival::Close(None)
    ));
}

#[test]
fn a_v1_header_that_is_not_ascii_is_malformed_not_a_panic() {
    // Found by the fuzz target: ppp sliced inside the two-byte 'Μ'.
    let peer = SocketAddr::from(([10, 0, 0, 1], 40000));
    let crash = b"PROXY T\xce\x9c\x008\r\xce\x9c\x008\r\n";
    assert!(matches!(frame(crash), Frame::Header(_)), "{:?}", frame(crash));
    assert!(parse(crash, peer).is_err());
    assert!(parse("PROXY TCP4 10.0.0.1 10.0.0.2 1 2 é\r\n".as_bytes(), peer).is_err());
}
