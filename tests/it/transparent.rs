//! Transparent mode end to end, in a network namespace the test creates: the emulated AWS
//! network runs inside it, `splitway iptables --apply` installs the capture rules there, the
//! real binary serves, and clients with no proxy settings at all (reqwest, curl) resolve
//! through the VPC resolver (Private DNS on) as an application in the VPC would.

use std::net::SocketAddr;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::scenarios::expectations;
use crate::support::client::admin_get;
use crate::support::metrics::metric;
use crate::support::netns::{NetNs, NsNet};
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::transparent::*;
use crate::support::*;

#[tokio::test]
async fn transparent_mode_routes_unproxied_clients() {
    let Some(ns) = NetNs::for_test("transparent_mode_routes_unproxied_clients") else {
        return;
    };
    let ns_net = NsNet::start(&ns);
    let net = ns_net.net;
    let config = write_temp("transparent.toml", &config(net, "mark = 0x539", ""));
    let ca = write_temp("transparent-ca.pem", &net.ca_pem);
    let before = nat_rules(&ns).await;
    let printed = iptables(&ns, &config, &["--apply"]).await;
    assert!(printed.contains("-m mark --mark 0x539 -j RETURN"), "{printed}");
    let installed = nat_rules(&ns).await;
    for rule in [
        "-A SPLITWAY -m mark --mark 0x539 -j RETURN",
        "-A OUTPUT -p tcp -j SPLITWAY",
        "-A SPLITWAY -d fd00:5::/64 -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports 15001",
    ] {
        assert!(installed.contains(rule), "`{rule}` not installed:\n{installed}");
    }
    // Applying twice changes nothing (idempotent): the installed rules, not the printed script.
    iptables(&ns, &config, &["--apply"]).await;
    assert_eq!(
        nat_rules(&ns).await,
        installed,
        "a second --apply changed the installed rules"
    );
    let splitway = Splitway::start(&ns, &config, None).await;
    let curl = require("curl", tool("curl", "--version")).is_some();

    for (host, endpoint) in expectations() {
        let served = direct_get(&ns_net, &host)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}\n{}", splitway.log()));
        assert_eq!((served.status, served.served_by.as_str()), (200, endpoint), "{host}");
        if curl {
            let (ok, out) = curl_in(&ns, net, &ca, &host).await;
            assert!(ok && out.contains(" 200"), "curl {host}: {out}");
            assert!(out.contains(&format!("x-served-by: {endpoint}")), "curl {host}: {out}");
        }
    }
    let m = ns_net
        .run("metrics", admin_get(ADMIN.parse().unwrap(), "/metrics"))
        .await
        .1;
    let calls = if curl { 2.0 } else { 1.0 };
    for (route, hosts) in [("custom-domains", 2.0), ("public-api-ids", 1.0), ("private-apis", 1.0)] {
        let ok = metric(
            &m,
            "splitway_requests_total",
            &[("kind", "transparent"), ("route", route), ("outcome", "ok")],
        );
        // One per call: splitway's own (marked) connections are not captured again.
        assert_eq!(ok, hosts * calls, "{route}\n{m}");
    }

    reported_by_readyz_and_explain(&ns, &ns_net, &config).await;
    no_sni_and_not_tls_go_to_the_original_address(&ns_net).await;
    // The canonical line of each: by address, with the address the client dialled.
    splitway
        .wait_logged("method=\"TLS\" original=127.12.0.9:443 host=127.12.0.9:443 route=\"default\"")
        .await;
    splitway
        .wait_logged("method=\"TCP\" original=127.12.0.9:443 host=127.12.0.9:443 route=\"default\"")
        .await;
    // An idle tunnel holds no span: its close makes the connection's span again, naming the
    // listener it came in on.
    let log = splitway.log();
    let tls = log
        .lines()
        .find(|l| l.contains("method=\"TLS\" original=127.12.0.9:443"))
        .expect("the line logged above");
    assert!(
        tls.contains(" conn{client=") && tls.contains(" listener=\"transparent\"}: "),
        "{tls}"
    );
    if require("IPv6 loopback in the namespace", ns.ipv6()).is_some() {
        ns.run(
            "ip",
            &["-6", "addr", "add", &format!("{SINK_IP6}/128"), "dev", "lo", "nodad"],
        )
        .expect("add an IPv6 address");
        let hello = client_hello_without_sni();
        let got = sink_once(&ns_net, SINK_IP6.parse().unwrap(), hello.clone(), hello.len()).await;
        assert_eq!(
            got, hello,
            "IPv6: the original destination comes from IP6T_SO_ORIGINAL_DST"
        );
    }
    plain_http_is_routed_by_host(&ns_net).await;
    direct_connection_to_the_listener_is_refused(&ns_net).await;

    let removed = iptables(&ns, &config, &["--remove"]).await;
    assert!(removed.contains("removed"), "{removed}");
    let left = nat_rules(&ns).await;
    assert!(
        !left.contains("SPLITWAY"),
        "--remove left a SPLITWAY chain or jump:\n{left}"
    );
    assert_eq!(left, before, "--remove leaves the nat table as it was before --apply");
    iptables(&ns, &config, &["--remove"]).await;
    assert_eq!(nat_rules(&ns).await, before, "a second --remove changes nothing");
    the_problem_returns_without_the_rules(&ns, &ns_net, &ca, curl).await;
    drop(splitway);
}

/// The nat table installed in `ns`, IPv4 then IPv6, as `iptables -S` lists it.
async fn nat_rules(ns: &NetNs) -> String {
    let mut rules = String::new();
    for tool in ["iptables", "ip6tables"] {
        let listed = ns
            .run_async(tool, &["-w", "-t", "nat", "-S"])
            .await
            .unwrap_or_else(|e| panic!("{tool} -t nat -S: {e}"));
        rules += &format!("# {tool}\n{listed}");
    }
    rules
}

/// Accepts one connection on `SINK_IP:port` (inside the namespace) and returns what arrived.
async fn sink_once(ns_net: &NsNet, ip: std::net::IpAddr, send: Vec<u8>, until: usize) -> Vec<u8> {
    let client_target = SocketAddr::new(ip, 443);
    let listener = ns_net
        .run("bind sink", async move { TcpListener::bind(client_target).await })
        .await
        .expect("bind the sink");
    ns_net
        .run("sink exchange", async move {
            let mut client = TcpStream::connect(client_target).await.expect("connect (redirected)");
            client.write_all(&send).await.expect("send the first flight");
            let (mut accepted, _) = listener
                .accept()
                .await
                .expect("splitway connects to the original address");
            let mut got = vec![0; until];
            accepted
                .read_exact(&mut got)
                .await
                .expect("the first flight arrives whole");
            got
        })
        .await
}

/// A ClientHello without SNI and a first flight that is not TLS reach the original
/// destination untouched (`no_sni = "original"`, the default).
async fn no_sni_and_not_tls_go_to_the_original_address(ns_net: &NsNet) {
    let hello = client_hello_without_sni();
    let sink = SINK_IP.parse().unwrap();
    let got = sink_once(ns_net, sink, hello.clone(), hello.len()).await;
    assert_eq!(got, hello, "the ClientHello without SNI arrives byte for byte");
    let banner = b"SSH-2.0-OpenSSH_9.6\r\n".to_vec();
    let got = sink_once(ns_net, sink, banner.clone(), banner.len()).await;
    assert_eq!(got, banner, "a non-TLS first flight arrives byte for byte");
}

/// A TLS 1.2-style ClientHello with no extensions at all, hence no SNI (RFC 8446 §4.1.2).
fn client_hello_without_sni() -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]); // random
    body.push(0); // empty session id
    body.extend([0, 2, 0x13, 0x01]); // one cipher suite
    body.extend([1, 0]); // null compression
    let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend(body);
    let mut record = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend(hs);
    record
}

/// Plain HTTP to an address where nothing listens reaches the route of its `Host`.
async fn plain_http_is_routed_by_host(ns_net: &NsNet) {
    let origin = ns_net
        .run("bind origin", async { TcpListener::bind((SINK_IP, 80)).await })
        .await
        .expect("bind the plain-HTTP origin");
    let (status, head) = ns_net
        .run("plain HTTP", async move {
            let serve = async {
                let (mut s, _) = origin.accept().await.expect("origin accepts");
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(s.read_u8().await.expect("request head"));
                }
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await
                    .expect("answer");
                String::from_utf8_lossy(&head).into_owned()
            };
            let call = async {
                let mut c = TcpStream::connect((NOWHERE_IP, 80))
                    .await
                    .expect("connect (redirected)");
                let req = format!("GET /x HTTP/1.1\r\nHost: {PLAIN_HOST}\r\nConnection: close\r\n\r\n");
                c.write_all(req.as_bytes()).await.expect("send");
                let mut out = String::new();
                c.read_to_string(&mut out).await.expect("read the answer");
                out
            };
            let (head, out) = tokio::join!(serve, call);
            (out, head)
        })
        .await;
    assert!(status.starts_with("HTTP/1.1 200") && status.ends_with("ok"), "{status}");
    assert!(head.starts_with("GET /x HTTP/1.1\r\n"), "origin-form upstream: {head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!("host: {PLAIN_HOST}\r\n")),
        "{head}"
    );
}

/// A connection straight to the transparent listener (not redirected) has no other
/// destination than the listener itself: refused (counted as having no original
/// destination), so it can neither loop nor serve as an open proxy.
async fn direct_connection_to_the_listener_is_refused(ns_net: &NsNet) {
    let admin: SocketAddr = ADMIN.parse().unwrap();
    let before = ns_net.run("metrics", admin_get(admin, "/metrics")).await.1;
    // Absent before the first refusal: `metric_or_zero` for the "before" reading.
    let refused = |m: &str| {
        crate::support::metrics::metric_or_zero(
            m,
            "splitway_requests_total",
            &[
                ("kind", "transparent"),
                ("route", "none"),
                ("outcome", "no_original_dst"),
            ],
        )
    };
    let read = ns_net
        .run("direct to the listener", async {
            let mut c = TcpStream::connect("127.0.0.1:15001")
                .await
                .expect("connect to the listener");
            c.write_all(&client_hello_without_sni()).await.expect("send");
            let mut buf = [0u8; 16];
            c.read(&mut buf).await
        })
        .await;
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    let after = ns_net.run("metrics", admin_get(admin, "/metrics")).await.1;
    assert_eq!(refused(&after) - refused(&before), 1.0, "{after}");
}

/// With the rules removed, the same calls fail as the problem statement says.
async fn the_problem_returns_without_the_rules(ns: &NetNs, ns_net: &NsNet, ca: &Path, curl: bool) {
    let custom = direct_get(ns_net, CUSTOM_DOMAIN).await;
    assert!(
        custom.as_ref().is_err_and(|e| e.starts_with("name mismatch")),
        "{custom:?}"
    );
    let public = execute_api_host(PUBLIC_API_ID, REGION);
    let served = direct_get(ns_net, &public).await.expect("the VPC endpoint answers");
    assert_eq!((served.status, served.served_by.as_str()), (403, "vpce-us-east-1"));
    let west = execute_api_host(WEST_PRIVATE_API_ID, WEST_REGION);
    let west = direct_get(ns_net, &west).await;
    assert!(
        west.as_ref().is_err_and(|e| e.starts_with("connection refused")),
        "the other region's public endpoint is not reachable from the VPC: {west:?}"
    );
    if curl {
        let (ok, out) = curl_in(ns, ns_net.net, ca, CUSTOM_DOMAIN).await;
        assert!(!ok && out.contains("SSL"), "curl {CUSTOM_DOMAIN}: {out}");
        let (ok, out) = curl_in(ns, ns_net.net, ca, &public).await;
        assert!(ok && out.contains(" 403"), "curl {public}: {out}");
    }
}

/// `exclude_uid` instead of `mark` (splitway runs as `nobody`, without any capability;
/// the clients run as root, so they are captured), and `no_sni =
/// "refuse"`: captured calls still work without looping, and a connection without a name
/// is closed, logged and counted.
#[tokio::test]
async fn uid_exclusion_and_no_sni_refuse() {
    let Some(ns) = NetNs::for_test("uid_exclusion_and_no_sni_refuse") else {
        return;
    };
    let ns_net = NsNet::start(&ns);
    let config = write_temp(
        "transparent-uid.toml",
        &config(ns_net.net, &format!("exclude_uid = {NOBODY}"), "no_sni = \"refuse\""),
    );
    let printed = iptables(&ns, &config, &["--apply"]).await;
    assert!(
        printed.contains(&format!("-m owner --uid-owner {NOBODY} -j RETURN")),
        "{printed}"
    );
    let splitway = Splitway::start(&ns, &config, Some(NOBODY)).await;
    let served = direct_get(&ns_net, CUSTOM_DOMAIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", splitway.log()));
    assert_eq!((served.status, served.served_by.as_str()), (200, "public-us-east-1"));

    let admin: SocketAddr = ADMIN.parse().unwrap();
    let sink: SocketAddr = format!("{SINK_IP}:443").parse().unwrap();
    for first in [client_hello_without_sni(), b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()] {
        let read = ns_net
            .run("refused first flight", async move {
                let mut c = TcpStream::connect(sink).await.expect("connect (redirected)");
                c.write_all(&first).await.expect("send");
                let mut buf = [0u8; 16];
                c.read(&mut buf).await
            })
            .await;
        assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    }
    let m = ns_net.run("metrics", admin_get(admin, "/metrics")).await.1;
    let refused = metric(
        &m,
        "splitway_requests_total",
        &[("kind", "transparent"), ("route", "none"), ("outcome", "no_sni")],
    );
    assert_eq!(refused, 2.0, "{m}");
    splitway
        .wait_logged(r#"error="no_sni" detail="no SNI or not TLS, and [transparent] no_sni = \"refuse\"""#)
        .await;
    iptables(&ns, &config, &["--remove"]).await;
    let left = nat_rules(&ns).await;
    assert!(
        !left.contains("SPLITWAY"),
        "--remove left a SPLITWAY chain or jump:\n{left}"
    );
}

/// `/readyz?verbose` lists the transparent listeners; `explain` says redirected connections
/// route the same.
async fn reported_by_readyz_and_explain(ns: &NetNs, ns_net: &NsNet, config: &Path) {
    let (status, body) = ns_net
        .run("readyz", admin_get(ADMIN.parse().unwrap(), "/readyz?verbose"))
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let listen = v["transparent"]["listen"].as_array().expect("transparent.listen");
    assert!(listen.iter().any(|a| a == "127.0.0.1:15001"), "{body}");
    let path = config.to_str().expect("UTF-8 temp path");
    let out = ns
        .run_async(
            env!("CARGO_BIN_EXE_splitway"),
            &["explain", CUSTOM_DOMAIN, "--config", path],
        )
        .await
        .expect("splitway explain");
    assert!(out.contains("route:      custom-domains"), "{out}");
    assert!(
        out.contains("also:       transparent listen 127.0.0.1:15001 (mark 0x539"),
        "{out}"
    );
}

/// `mark` without `CAP_NET_ADMIN` would fail every connection: splitway refuses to start and
/// says what to do instead. Run as `nobody` when the tests run as root.
#[tokio::test]
async fn mark_without_cap_net_admin_is_a_start_up_error() {
    let config = write_temp(
        "transparent-mark.toml",
        &format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[resolver.system]\nnameservers = [\"{VPC_DNS_PRIVATE_ON_IP}\"]\n\
             hosts_file = false\n[transparent]\nlisten = \"127.0.0.1:15999\"\nmark = 0x539\n"
        ),
    );
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let mut command = if root {
        let mut c = tokio::process::Command::new("setpriv");
        c.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ]);
        c.arg(env!("CARGO_BIN_EXE_splitway"));
        c
    } else {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_splitway"))
    };
    command.arg("--config").arg(&config).env_clear().kill_on_drop(true);
    let out = tokio::time::timeout(HANG_GUARD, command.output())
        .await
        .expect("splitway exits at once")
        .expect("run splitway");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[transparent] mark = 0x539: cannot set SO_MARK") && stderr.contains("exclude_uid"),
        "{stderr}"
    );
}

/// Straight to the transparent listener, without a redirect (here: outside any namespace with
/// capture rules), a connection has no original destination to go to: it is closed, counted
/// and logged, and nothing leaks.
#[tokio::test]
async fn unredirected_connection_is_closed_and_counted() {
    let net = aws_net();
    let toml = format!(
        "{}\n[transparent]\nlisten = \"127.0.0.1:0\"\n",
        scenario_config(net, PrivateDns::On)
    );
    let proxy = TestProxy::start(&toml).await;
    assert!(!proxy.transparent.is_empty(), "the transparent listener is bound");
    for addr in proxy.transparent.clone() {
        let read = tokio::time::timeout(HANG_GUARD, async {
            let mut c = TcpStream::connect(addr)
                .await
                .expect("connect to the transparent listener");
            c.write_all(&client_hello_without_sni()).await.expect("send");
            let mut buf = [0u8; 16];
            c.read(&mut buf).await
        })
        .await
        .expect("the listener closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    }
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    // Only one of the two outcomes happens in a given namespace: the other series is absent.
    let outcome = |o: &str| {
        crate::support::metrics::metric_or_zero(
            &m,
            "splitway_requests_total",
            &[("kind", "transparent"), ("route", "none"), ("outcome", o)],
        )
    };
    // Without conntrack in this namespace there is no NAT entry (`no_original_dst`); where
    // the host tracks connections, the entry's destination is the listener itself (a loop).
    let refused = outcome("no_original_dst") + outcome("destination_ip_prohibited");
    assert_eq!(refused, proxy.transparent.len() as f64, "{m}");
    proxy.stop().await;
}
