//! The SSRF guard and the listener findings of an adversarial pass, tried as an attacker
//! would, in a network namespace where every address an attack aims at really exists and has
//! a counting listener on it: a case passes only if bytes did not arrive where, without the
//! guard, they would have.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{ConfigBuilder, Route, strings};
use crate::support::netns::{NetNs, NsNet};
use crate::support::origin::{Recorder, echo_head_origin};
use crate::support::proxy::TestProxy;
use crate::support::raw::{Reply, assert_refused, read_reply};
use crate::support::transparent::{Splitway, iptables, write_temp};
use crate::support::{FakeDns, HANG_SECS, Zone, aws_net, within};

const PROXY: &str = "127.0.0.1:3128";
/// The transparent listener, on every address (a documented option).
const TRANSPARENT_PORT: u16 = 15001;
/// One of the namespace's own addresses besides loopback.
const HOST_IP: &str = "10.99.0.1";
/// An ordinary upstream, reached through a route's explicit addresses.
const PUB_IP: &str = "10.99.0.2";
/// A captured destination (assigned, so it routes): nothing listens there, only the redirect
/// reaches splitway.
const CAPTURED_IP: &str = "10.99.0.5";
const DNS_IP: &str = "127.53.0.1";

/// Every local or metadata address an attack aims at, in each spelling that reaches it; each
/// is assigned in the namespace and listened on, so a missing guard would connect.
const GUARDED: &[&str] = &[
    "127.0.0.1",
    "::1",
    "169.254.169.254",
    "fd00:ec2::254",
    "fd00:ec2::23",
    // IPv4-compatible, NAT64 and 6to4 spellings of 169.254.169.254, assigned as themselves.
    "::a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
];

/// Targets, as CONNECT authorities and URL hosts, that must never connect. Each lands on a
/// recorder of [`GUARDED`] when the guard is missing (`[::]` and `0.0.0.0` reach loopback).
const TARGETS: &[&str] = &[
    "[::]",
    "0.0.0.0",
    "127.0.0.1",
    "[::1]",
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "[::a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:a9fe:a9fe::1]",
    "[fd00:ec2::254]",
    "[fd00:ec2::23]",
    // Names whose A or AAAA is one of them, and a CNAME chain ending in one.
    "meta4.test",
    "meta6.test",
    "pod6.test",
    "unspec4.test",
    "unspec6.test",
    "loop4.test",
    "mapped.test",
    "chain.test",
];

/// What the refusal of `target` says: the unspecified address is this host itself, never a
/// destination (whatever the list says); the others are in `deny_destinations`.
fn why_refused(target: &str) -> &'static str {
    match target {
        "0.0.0.0" | "[::]" => "is never a destination; ask for the destination by its own address or name",
        "unspec4.test" | "unspec6.test" => "is never a destination; correct the name's DNS records",
        _ => "deny_destinations",
    }
}

fn zone() -> Zone {
    Zone::new()
        .a("secret.corp.test", PUB_IP.parse().unwrap())
        .a("meta4.test", "169.254.169.254".parse().unwrap())
        .aaaa("meta6.test", "fd00:ec2::254".parse().unwrap())
        .aaaa("pod6.test", "fd00:ec2::23".parse().unwrap())
        .a("unspec4.test", "0.0.0.0".parse().unwrap())
        .aaaa("unspec6.test", "::".parse().unwrap())
        .a("loop4.test", "127.0.0.1".parse().unwrap())
        .aaaa("mapped.test", "::ffff:169.254.169.254".parse().unwrap())
        .cname("chain.test", "hop.test")
        .cname("hop.test", "meta6.test")
}

/// No `[resolver.system]`: the system resolver reads the namespace's own resolv.conf (`ip
/// netns exec` mounts it), whose search domain is what the deny route must withstand.
fn config() -> String {
    format!(
        r#"
[proxy]
listen = "{PROXY}"
connect_ports = [443]

[admin]
listen = "127.0.0.1:9901"

[transparent]
listen = "0.0.0.0:{TRANSPARENT_PORT}"
mark = 0x539
capture = ["{CAPTURED_IP}/32"]
http_ports = [80]

[[route]]
name = "corp"
hosts = ["*.corp.test"]
deny = true

[[route]]
name = "pub"
hosts = ["pub.test"]
addresses = ["{PUB_IP}"]
"#
    )
}

/// `/etc/netns/NAME/resolv.conf`, which `ip netns exec` mounts over `/etc/resolv.conf`;
/// removed on drop.
struct NsResolvConf(PathBuf);

impl NsResolvConf {
    fn write(ns: &NetNs, text: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join("resolv.conf"), text).expect("write the namespace's resolv.conf");
        Self(dir)
    }
}

impl Drop for NsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `bytes` to `to` from inside the namespace and reads one reply (none when closed).
async fn exchange(ns_net: &NsNet, to: SocketAddr, bytes: Vec<u8>) -> Reply {
    ns_net
        .run("an exchange in the namespace", async move {
            let mut s = TcpStream::connect(to).await.expect("connect");
            s.write_all(&bytes).await.expect("send");
            read_reply(&mut s).await
        })
        .await
}

fn recorded(recorders: &[Arc<Recorder>]) -> Vec<String> {
    recorders
        .iter()
        .filter(|r| r.seen().accepted > 0)
        .map(|r| r.addr().to_string())
        .collect()
}

#[tokio::test]
async fn an_attacker_reaches_no_local_or_metadata_address_and_no_open_listener() {
    let Some(ns) = NetNs::for_test("an_attacker_reaches_no_local_or_metadata_address") else {
        return;
    };
    assert!(ns.has_ipv6(), "IPv6 loopback in the namespace: the IPv6 cases need it");
    for ip in GUARDED.iter().chain(&[HOST_IP, PUB_IP, CAPTURED_IP]) {
        let family = if ip.contains(':') { "-6" } else { "-4" };
        let mut args = vec![family, "addr", "add", ip, "dev", "lo"];
        if ip.contains(':') {
            args.push("nodad");
        }
        if *ip != "127.0.0.1" && *ip != "::1" {
            ns.run("ip", &args).unwrap_or_else(|e| panic!("add {ip}: {e}"));
        }
    }
    let ns_net = NsNet::start(&ns);
    let dns_ip: IpAddr = DNS_IP.parse().unwrap();
    let dns = ns_net
        .run(
            "DNS on port 53",
            async move { FakeDns::start_on_53(dns_ip, zone()).await },
        )
        .await
        .expect("port 53 in the namespace");
    let _resolv = NsResolvConf::write(&ns, &format!("search corp.test\nnameserver {DNS_IP}\n"));
    let mut recorders = Vec::new();
    for ip in GUARDED.iter().chain(&[PUB_IP]) {
        for port in [443, 80, 8080] {
            let at = SocketAddr::new(ip.parse().unwrap(), port);
            recorders.push(Arc::new(ns_net.run("a recorder", Recorder::start_at(at)).await));
        }
    }
    let config = write_temp("security.toml", &config());
    iptables(&ns, &config, &["--apply"]).await;
    let splitway = Splitway::start(&ns, &config, None).await;
    let proxy: SocketAddr = PROXY.parse().unwrap();

    // CONNECT and plain HTTP to every spelling: 403 destination_ip_prohibited, saying why.
    for target in TARGETS {
        let why = why_refused(target);
        let connect = format!("CONNECT {target}:443 HTTP/1.1\r\nHost: {target}:443\r\n\r\n");
        let reply = exchange(&ns_net, proxy, connect.into_bytes()).await;
        assert_refused(&reply, 403, "destination_ip_prohibited", why);
        for (method, path) in [("GET", "/latest/meta-data/"), ("PUT", "/latest/api/token")] {
            let req = format!(
                "{method} http://{target}{path} HTTP/1.1\r\nHost: {target}\r\n\
                 X-aws-ec2-metadata-token-ttl-seconds: 21600\r\ncontent-length: 0\r\n\r\n"
            );
            let reply = exchange(&ns_net, proxy, req.into_bytes()).await;
            assert_refused(&reply, 403, "destination_ip_prohibited", why);
        }
    }
    // The transparent listener: plain HTTP redirected from a captured address, by its Host.
    let captured = SocketAddr::new(CAPTURED_IP.parse().unwrap(), 80);
    for target in TARGETS {
        let req = format!("GET /latest/meta-data/ HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let reply = exchange(&ns_net, captured, req.into_bytes()).await;
        assert_refused(&reply, 403, "destination_ip_prohibited", why_refused(target));
    }
    assert_eq!(
        recorded(&recorders),
        Vec::<String>::new(),
        "nothing may connect:\n{}",
        splitway.log()
    );

    // ... and TLS, by the ClientHello's SNI (names only: an SNI is never an address).
    let captured_tls = SocketAddr::new(CAPTURED_IP.parse().unwrap(), 443);
    for name in TARGETS.iter().filter(|t| t.ends_with(".test")) {
        let hello = crate::support::pki::client_hello(name);
        let read = ns_net
            .run("a redirected ClientHello", async move {
                let mut s = TcpStream::connect(captured_tls).await.expect("connect (redirected)");
                s.write_all(&hello).await.expect("send the ClientHello");
                let mut buf = [0u8; 64];
                s.read(&mut buf).await
            })
            .await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{name}: closed without an answer: {read:?}"
        );
    }
    let m = ns_net
        .run(
            "metrics",
            crate::support::client::admin_get("127.0.0.1:9901".parse().unwrap(), "/metrics"),
        )
        .await
        .1;
    let prohibited = crate::support::metrics::metric(
        &m,
        "splitway_requests_total",
        &[
            ("kind", "transparent"),
            ("route", "default"),
            ("outcome", "destination_ip_prohibited"),
        ],
    );
    let names = TARGETS.iter().filter(|t| t.ends_with(".test")).count();
    assert_eq!(
        prohibited as usize,
        TARGETS.len() + names,
        "every transparent case refused and counted:\n{m}"
    );
    assert_eq!(
        recorded(&recorders),
        Vec::<String>::new(),
        "nothing may connect:\n{}",
        splitway.log()
    );

    // A deny route holds for the name resolved: no search domain turns `secret` into
    // `secret.corp.test` behind the route's back.
    let reply = exchange(
        &ns_net,
        proxy,
        b"CONNECT secret.corp.test:443 HTTP/1.1\r\n\r\n".to_vec(),
    )
    .await;
    assert_refused(&reply, 403, "http_request_denied", "corp");
    let reply = exchange(&ns_net, proxy, b"CONNECT secret:443 HTTP/1.1\r\n\r\n".to_vec()).await;
    assert_refused(&reply, 502, "dns_error", "secret");
    let expanded: Vec<_> = dns
        .queries()
        .into_iter()
        .filter(|(name, _)| name.starts_with("secret.corp"))
        .collect();
    assert_eq!(expanded, vec![], "no lookup of a search-expanded name");

    // Plain HTTP on the transparent listener may reach only the captured ports.
    let req = b"GET /secret HTTP/1.1\r\nHost: pub.test:8080\r\n\r\n".to_vec();
    let reply = exchange(&ns_net, captured, req).await;
    assert_refused(&reply, 403, "http_request_denied", "8080");
    // Connected to directly (not redirected) at one of the host's addresses, the listener on
    // every address is no open proxy: closed without an answer.
    let direct = SocketAddr::new(HOST_IP.parse().unwrap(), TRANSPARENT_PORT);
    let req = b"GET /secret HTTP/1.1\r\nHost: pub.test:80\r\n\r\n".to_vec();
    let reply = exchange(&ns_net, direct, req).await;
    assert_eq!(reply.status, None, "closed, not answered: {reply:?}");
    let hello = b"\x16\x03\x01\x00\x05hello".to_vec();
    let closed = ns_net
        .run("a direct TLS-looking flight", async move {
            let mut s = TcpStream::connect(direct).await.expect("connect");
            s.write_all(&hello).await.expect("send");
            let mut buf = [0u8; 64];
            s.read(&mut buf).await
        })
        .await;
    assert!(matches!(closed, Ok(0) | Err(_)), "closed: {closed:?}");
    splitway.wait_logged("not redirected").await;

    assert_eq!(
        recorded(&recorders),
        Vec::<String>::new(),
        "nothing may connect:\n{}",
        splitway.log()
    );
    iptables(&ns, &config, &["--remove"]).await;
}

/// The password file of a parent the tests never reach.
fn parent_password_file() -> String {
    let path = write_temp("parent-password", "pw-Zr8-never-sent\n");
    path.to_str().expect("UTF-8 temp path").to_owned()
}

/// Report mode forwards along the system path, straight to the origin: the credentials of
/// the parent that the enforcing route names must not go with it.
#[tokio::test]
async fn report_mode_never_sends_a_parents_credentials_to_the_origin() {
    let net = aws_net();
    let origin = echo_head_origin().await;
    let parent = crate::support::parent::down_parent(IpAddr::from([127, 60, 9, 1])).await;
    let toml = ConfigBuilder::new(net)
        .proxy_str("mode", "report")
        .route(
            Route::new("everything")
                .hosts(["*"])
                .str("via", format!("http://svc-splitway@{parent}"))
                .str("via_password_file", parent_password_file()),
        )
        .build();
    let proxy = TestProxy::start(&toml).await;
    let req = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let (reply, _) = crate::support::raw::exchange(proxy.addr, req.as_bytes()).await;
    assert_eq!(
        reply.status,
        Some(200),
        "report mode follows the system path: {reply:?}"
    );
    assert!(reply.body.starts_with("GET / HTTP/1.1"), "{}", reply.body);
    assert!(
        !reply.body.to_ascii_lowercase().contains("proxy-authorization"),
        "a parent's credentials reached the origin: {}",
        reply.body
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

/// Sends `req` on a kept-alive connection and reads its reply.
async fn send(stream: &mut TcpStream, req: String) -> Reply {
    within(HANG_SECS, "send", stream.write_all(req.as_bytes()))
        .await
        .expect("send");
    read_reply(stream).await
}

/// A reload reaches a kept-alive connection at its next request: an old connection cannot
/// keep the rules (no auth, no deny) of the config it was opened under.
#[tokio::test]
async fn a_reload_reaches_a_kept_alive_connection_at_its_next_request() {
    let net = aws_net();
    let origin = echo_head_origin().await;
    let echo = Route::new("echo")
        .hosts(["echo.test"])
        .key("addresses", strings([origin]));
    let before = ConfigBuilder::new(net).route(echo.clone());
    let proxy = TestProxy::start(&before.build()).await;
    let mut stream = within(HANG_SECS, "connect", TcpStream::connect(proxy.addr))
        .await
        .expect("connect");
    let get = |auth: &str| format!("GET http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\n{auth}\r\n");
    let reply = send(&mut stream, get("")).await;
    assert_eq!(reply.status, Some(200), "before the reload: {reply:?}");
    let after = before
        .proxy("auth", "{ username = \"app\", password = \"s3cret\" }")
        .replace_route(Route::new("echo").hosts(["echo.test"]).deny());
    let config = splitway::Config::from_toml(&after.build(), "reloaded.toml").expect("valid config");
    proxy.handle.reload(config).expect("reloads");
    let reply = send(&mut stream, get("")).await;
    assert_refused(&reply, 407, "http_request_denied", "proxy authentication required");
    let reply = send(&mut stream, get("Proxy-Authorization: Basic YXBwOnMzY3JldA==\r\n")).await;
    assert_refused(&reply, 403, "http_request_denied", "route `echo` denies");
    drop(stream);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
