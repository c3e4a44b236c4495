//! The emulated AWS network shared by every test of the binary: three resolvers and four
//! API Gateway endpoints, started once on a runtime of their own.
//!
//! Each `#[tokio::test]` has a runtime that dies with the test, so servers shared between
//! tests must not be spawned on one: they run on a dedicated thread for the whole process.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;

use super::apigw::{ApiGw, EndpointSpec};
use super::dns::FakeDns;
use super::names::*;
use super::pki::TestCa;
use super::zone::Zone;

/// Which resolver a client asks, i.e. where it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// An internet resolver.
    Public,
    /// The VPC resolver, with the execute-api endpoint's Private DNS on.
    VpcPrivateDnsOn,
    /// The VPC resolver, with Private DNS off.
    VpcPrivateDnsOff,
}

pub(crate) struct AwsNet {
    /// The one port every endpoint listens on (each on its own address), like 443.
    pub(crate) port: u16,
    /// The CA the endpoints' certificates chain to; start extra servers with it.
    pub(crate) ca: TestCa,
    pub(crate) ca_der: CertificateDer<'static>,
    pub(crate) ca_pem: String,
    /// The resolvers' addresses (UDP and TCP); `dns(which)` gives the servers themselves.
    pub(crate) public_dns: SocketAddr,
    pub(crate) vpc_dns_private_on: SocketAddr,
    pub(crate) vpc_dns_private_off: SocketAddr,
    /// Public, VPC with Private DNS on, VPC with it off.
    dns_servers: [FakeDns; 3],
    /// "public-us-east-1" on PUBLIC_ENDPOINT_IP.
    pub(crate) public_endpoint: ApiGw,
    /// "vpce-us-east-1" on VPCE_IP.
    pub(crate) vpce: ApiGw,
    /// "vpce-us-east-1a" on VPCE_ZONAL_IP.
    pub(crate) vpce_zonal: ApiGw,
    /// "vpce-us-west-2" on WEST_VPCE_IP.
    pub(crate) west_vpce: ApiGw,
}

/// The shared network, started on first use.
pub(crate) fn aws_net() -> &'static AwsNet {
    static NET: OnceLock<AwsNet> = OnceLock::new();
    NET.get_or_init(|| {
        let (net, _runtime) = spawn_net("aws-net", 0, || Ok(()), std::future::pending());
        net
    })
}

/// Starts a network on a thread of its own: `enter` runs first on that thread (e.g. moves it
/// into a network namespace, which the runtime's threads and sockets then inherit), then the
/// runtime serves the network, endpoints on `port` (0: any free one), until `until` resolves.
/// Returns the network and that runtime's handle, to run clients where the network is.
pub(crate) fn spawn_net(
    name: &str,
    port: u16,
    enter: impl FnOnce() -> io::Result<()> + Send + 'static,
    until: impl std::future::Future<Output = ()> + Send + 'static,
) -> (AwsNet, tokio::runtime::Handle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            enter().expect("enter the network's namespace");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("aws-net runtime");
            let handle = runtime.handle().clone();
            runtime.block_on(async {
                tx.send((AwsNet::start(port).await, handle))
                    .expect("spawn_net() waits for the network");
                // The servers' tasks live as long as this runtime.
                until.await;
            });
        })
        .expect("spawn aws-net thread");
    rx.recv().expect("aws-net thread panicked while starting the network")
}

/// What an internet resolver (and the VPC resolver without Private DNS) answers.
pub(crate) fn public_zone() -> Zone {
    Zone::new()
        .cname(UNLISTED_DOMAIN, APIGW_DOMAIN_3)
        .cname(CDN_DOMAIN, CDN_TARGET)
        .addr(CDN_TARGET, PUBLIC_ENDPOINT_IP)
        .cname(LOOP_DOMAIN, LOOP_DOMAIN_2)
        .cname(LOOP_DOMAIN_2, LOOP_DOMAIN)
        .cname(CUSTOM_DOMAIN, APIGW_DOMAIN)
        .cname(CUSTOM_DOMAIN_2, APIGW_DOMAIN_2)
        .addr("*.execute-api.us-east-1.amazonaws.com", PUBLIC_ENDPOINT_IP)
        .addr("*.execute-api.us-west-2.amazonaws.com", WEST_PUBLIC_ENDPOINT_IP)
        // AWS publishes VPC endpoint names publicly, with their private IPs.
        .addr(VPCE, VPCE_IP)
        .addr(VPCE_ZONAL, VPCE_ZONAL_IP)
        .addr(WEST_VPCE, WEST_VPCE_IP)
}

/// What the VPC resolver answers with Private DNS on: the endpoint captures every
/// execute-api name of its region, including the target of a custom domain's CNAME.
pub(crate) fn vpc_private_dns_on_zone() -> Zone {
    Zone::new()
        .cname(UNLISTED_DOMAIN, APIGW_DOMAIN_3)
        .cname(CDN_DOMAIN, CDN_TARGET)
        .addr(CDN_TARGET, PUBLIC_ENDPOINT_IP)
        .cname(LOOP_DOMAIN, LOOP_DOMAIN_2)
        .cname(LOOP_DOMAIN_2, LOOP_DOMAIN)
        .cname(CUSTOM_DOMAIN, APIGW_DOMAIN)
        .cname(CUSTOM_DOMAIN_2, APIGW_DOMAIN_2)
        .addr("*.execute-api.us-east-1.amazonaws.com", VPCE_IP)
        .addr("*.execute-api.us-west-2.amazonaws.com", WEST_PUBLIC_ENDPOINT_IP)
        .addr(VPCE, VPCE_IP)
        .addr(VPCE_ZONAL, VPCE_ZONAL_IP)
        .addr(WEST_VPCE, WEST_VPCE_IP)
}

/// The zone `which` answers from.
pub(crate) fn zone_of(which: Resolver) -> Zone {
    match which {
        Resolver::Public | Resolver::VpcPrivateDnsOff => public_zone(),
        Resolver::VpcPrivateDnsOn => vpc_private_dns_on_zone(),
    }
}

impl AwsNet {
    async fn start(port: u16) -> Self {
        let ca = TestCa::new();
        let public_dns = FakeDns::start(PUBLIC_DNS_IP, public_zone()).await;
        let vpc_dns_private_on = FakeDns::start(VPC_DNS_PRIVATE_ON_IP, vpc_private_dns_on_zone()).await;
        let vpc_dns_private_off = FakeDns::start(VPC_DNS_PRIVATE_OFF_IP, public_zone()).await;
        let ips = [PUBLIC_ENDPOINT_IP, VPCE_IP, VPCE_ZONAL_IP, WEST_VPCE_IP];
        let (port, [public, vpce, zonal, west]) = bind_same_port(ips, port).await;
        Self {
            port,
            ca_der: ca.cert_der().clone(),
            ca_pem: ca.cert_pem().to_owned(),
            public_dns: public_dns.addr(),
            vpc_dns_private_on: vpc_dns_private_on.addr(),
            vpc_dns_private_off: vpc_dns_private_off.addr(),
            dns_servers: [public_dns, vpc_dns_private_on, vpc_dns_private_off],
            public_endpoint: ApiGw::serve(public, EndpointSpec::public_us_east_1(), &ca),
            vpce: ApiGw::serve(vpce, EndpointSpec::vpce_us_east_1(), &ca),
            vpce_zonal: ApiGw::serve(zonal, EndpointSpec::vpce_us_east_1a(), &ca),
            west_vpce: ApiGw::serve(west, EndpointSpec::vpce_us_west_2(), &ca),
            ca,
        }
    }

    /// The shared server behind `which`. Its query log is every test's: a test asserting
    /// on queries, or changing the mode, starts a `FakeDns` of its own.
    pub(crate) fn dns(&self, which: Resolver) -> &FakeDns {
        let [public, on, off] = &self.dns_servers;
        match which {
            Resolver::Public => public,
            Resolver::VpcPrivateDnsOn => on,
            Resolver::VpcPrivateDnsOff => off,
        }
    }

    pub(crate) fn dns_addr(&self, which: Resolver) -> SocketAddr {
        self.dns(which).addr()
    }

    /// `ip` at the endpoints' port.
    pub(crate) fn endpoint_addr(&self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.port)
    }

    /// The shared endpoints, for asserting on their counters.
    pub(crate) fn endpoints(&self) -> [&ApiGw; 4] {
        [&self.public_endpoint, &self.vpce, &self.vpce_zonal, &self.west_vpce]
    }

    /// What `which` resolves `host` to (following CNAMEs), answered from the zone data
    /// without a network round trip: the "direct, no proxy" client path uses it.
    pub(crate) fn lookup(&self, which: Resolver, host: &str) -> Option<IpAddr> {
        self.dns(which).lookup(host)
    }
}

/// Binds every `ip` on one port: `port`, or (0) the first on an ephemeral port and the rest on
/// the same one, starting over when that port is taken on another address.
async fn bind_same_port<const N: usize>(ips: [IpAddr; N], port: u16) -> (u16, [TcpListener; N]) {
    'attempt: for _ in 0..32 {
        let first = TcpListener::bind((ips[0], port)).await.expect("bind endpoint listener");
        let port = first.local_addr().expect("listener address").port();
        let mut listeners = vec![first];
        for &ip in &ips[1..] {
            match TcpListener::bind((ip, port)).await {
                Ok(listener) => listeners.push(listener),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue 'attempt,
                Err(e) => panic!("bind endpoint listener on {ip}:{port}: {e}"),
            }
        }
        let listeners = listeners.try_into().expect("one listener per address");
        return (port, listeners);
    }
    panic!("no port free on all of {ips:?}")
}
