//! A test-only PROXY protocol writer: what an AWS NLB sends in front of a connection (v2, with
//! the PrivateLink VPC endpoint ID in TLV `0xEA` subtype `0x01`, which HAProxy cannot add),
//! and v1 lines, so the proxy's header reading is tested byte for byte.

use std::net::SocketAddr;

use ppp::v2::{AddressFamily, Builder, Command, Protocol, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::bound::{HANG_SECS, within};

/// TLV type of AWS's own values, and the subtype of the VPC endpoint ID.
pub(crate) const PP2_TYPE_AWS: u8 = 0xEA;
pub(crate) const PP2_SUBTYPE_AWS_VPCE_ID: u8 = 0x01;

/// A v2 `PROXY` header from `source` to `destination`, with the VPC endpoint ID when given.
pub(crate) fn v2(source: SocketAddr, destination: SocketAddr, vpce: Option<&str>) -> Vec<u8> {
    let b = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (source, destination));
    let b = match vpce {
        Some(id) => {
            let value = [&[PP2_SUBTYPE_AWS_VPCE_ID][..], id.as_bytes()].concat();
            b.write_tlv(PP2_TYPE_AWS, &value).expect("TLV")
        }
        None => b,
    };
    b.build().expect("v2 header")
}

/// A v2 `LOCAL` header: what an NLB's TCP health check sends.
pub(crate) fn v2_local() -> Vec<u8> {
    Builder::new(
        Version::Two | Command::Local,
        AddressFamily::Unspecified | Protocol::Unspecified,
    )
    .build()
    .expect("v2 LOCAL header")
}

/// A v1 line for a TCP4 or TCP6 connection.
pub(crate) fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// Connects to `proxy` and sends `header` then `request` in one write, as a load balancer
/// that coalesced them would.
pub(crate) async fn connect_with(proxy: SocketAddr, header: &[u8], request: &[u8]) -> TcpStream {
    let mut stream = within(HANG_SECS, "connect to the proxy", TcpStream::connect(proxy))
        .await
        .expect("connect to the proxy");
    let bytes = [header, request].concat();
    within(HANG_SECS, "send to the proxy", stream.write_all(&bytes))
        .await
        .expect("send");
    stream
}
