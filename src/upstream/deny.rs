//! The addresses the connector refuses: `deny_destinations` (the SSRF guard), checked against
//! every form in which an IPv6 address carries an IPv4 one, and the proxy's own listeners.

use std::net::{IpAddr, SocketAddr};

pub(crate) use crate::target::embedded_ipv4;

use ipnet::IpNet;

/// Whether `ip` is an unspecified address (`0.0.0.0`, `::`) in any spelling (mapped,
/// compatible, NAT64, 6to4): on Linux, connecting to one connects to this host itself, so it
/// is never a destination, not even as a route's explicit `addresses`.
pub(crate) fn unspecified(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_unspecified() || embedded_ipv4(v6).is_some_and(|v4| v4.is_unspecified()),
    }
}

/// `deny_destinations` plus the proxy's own bound addresses.
#[derive(Debug, Clone, Default)]
pub(crate) struct DenyList {
    nets: Vec<IpNet>,
    own: Vec<SocketAddr>,
}

impl DenyList {
    pub(crate) fn new(nets: Vec<IpNet>, own: Vec<SocketAddr>) -> Self {
        Self { nets, own }
    }

    pub(crate) fn with_own(self, own: Vec<SocketAddr>) -> Self {
        Self { own, ..self }
    }

    /// Whether `deny_destinations` covers `ip` itself or the IPv4 address it embeds: an
    /// IPv4-mapped `::ffff:127.0.0.1` is 127.0.0.1 on a dual-stack socket, and a NAT64 or
    /// 6to4 address is a way to reach an IPv4 one; a deny entry for 127.0.0.0/8 means them too.
    /// The unspecified addresses are covered whatever the list says ([`unspecified`]).
    pub(crate) fn covers(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        unspecified(ip)
            || self
                .nets
                .iter()
                .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)))
    }

    /// Whether connecting to `addr` would reach this proxy's own listener (a loop). A
    /// listener on an unspecified address (`0.0.0.0`, `::`) is reached through loopback and
    /// the unspecified address; the host's interface addresses are not known here, which is
    /// why `connect_ports` should not list the proxy's port.
    pub(crate) fn is_own(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.own.iter().any(|own| {
            let own_ip = own.ip().to_canonical();
            own.port() == addr.port()
                && (ip == own_ip || ip.is_unspecified() || (own_ip.is_unspecified() && ip.is_loopback()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn list(nets: &[&str], own: &[&str]) -> DenyList {
        DenyList::new(
            nets.iter().map(|n| n.parse().unwrap()).collect(),
            own.iter().map(|a| a.parse().unwrap()).collect(),
        )
    }

    fn covers(l: &DenyList, ip: &str) -> bool {
        l.covers(ip.parse().unwrap())
    }

    const DEFAULT: &[&str] = crate::config::DEFAULT_DENY_DESTINATIONS;

    #[test]
    fn plain_addresses() {
        let l = list(DEFAULT, &[]);
        assert!(covers(&l, "127.0.0.1") && covers(&l, "169.254.169.254") && covers(&l, "::1") && covers(&l, "fe80::1"));
        assert!(!covers(&l, "10.0.0.1") && !covers(&l, "2001:db8::1"));
    }

    #[test]
    fn ipv6_metadata_and_pod_identity_endpoints() {
        let l = list(DEFAULT, &[]);
        assert!(covers(&l, "fd00:ec2::254") && covers(&l, "fd00:ec2::23"));
        assert!(!covers(&l, "fd00:ec2::253") && !covers(&l, "fd00:ec3::254"));
    }

    #[test]
    fn unspecified_is_refused_whatever_the_list_says() {
        let empty = list(&[], &[]);
        for ip in ["0.0.0.0", "::", "::ffff:0.0.0.0", "64:ff9b::", "2002::1"] {
            assert!(covers(&empty, ip), "{ip} connects to this host");
            assert!(unspecified(ip.parse().unwrap()), "{ip}");
        }
        assert!(!covers(&empty, "0.0.0.1") && !covers(&empty, "::2") && !covers(&empty, "10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped() {
        let l = list(DEFAULT, &[]);
        assert!(covers(&l, "::ffff:127.0.0.1") && covers(&l, "::ffff:169.254.169.254"));
        assert!(!covers(&l, "::ffff:10.0.0.1"));
    }

    #[test]
    fn ipv4_compatible() {
        let l = list(DEFAULT, &[]);
        assert!(covers(&l, "::127.0.0.1") && covers(&l, "::169.254.169.254"));
        assert!(!covers(&l, "::10.0.0.1"));
        // `::1` is IPv6 loopback (denied by its own entry), not 0.0.0.1.
        assert_eq!(embedded_ipv4("::1".parse().unwrap()), None);
        assert!(!list(&["0.0.0.0/8"], &[]).covers("::1".parse().unwrap()));
    }

    #[test]
    fn nat64() {
        let l = list(DEFAULT, &[]);
        assert!(covers(&l, "64:ff9b::127.0.0.1") && covers(&l, "64:ff9b::a9fe:a9fe"));
        assert!(!covers(&l, "64:ff9b::10.0.0.1"));
        assert!(
            !covers(&l, "64:ff9b:1::a9fe:a9fe"),
            "only the well-known prefix has a fixed layout"
        );
    }

    #[test]
    fn six_to_four() {
        let l = list(DEFAULT, &[]);
        // 2002:a9fe:a9fe::/48 is 6to4 for 169.254.169.254.
        assert!(covers(&l, "2002:a9fe:a9fe::1") && covers(&l, "2002:7f00:1::"));
        assert!(!covers(&l, "2002:0a00:0001::1"));
        assert_eq!(
            embedded_ipv4("2002:c000:0204::1".parse().unwrap()),
            Some(Ipv4Addr::new(192, 0, 2, 4))
        );
    }

    #[test]
    fn ipv6_entries_match_ipv6_forms_only() {
        let l = list(&["::1/128"], &[]);
        assert!(!covers(&l, "127.0.0.1") && covers(&l, "::1"));
    }

    #[test]
    fn own_listener_exact_and_mapped() {
        let l = list(&[], &["127.0.0.1:3128", "127.0.0.1:9901"]);
        let own = |a: &str| l.is_own(a.parse().unwrap());
        assert!(own("127.0.0.1:3128") && own("[::ffff:127.0.0.1]:3128") && own("127.0.0.1:9901"));
        assert!(own("0.0.0.0:3128"), "connecting to 0.0.0.0 reaches the local host");
        assert!(!own("127.0.0.2:3128") && !own("127.0.0.1:443") && !own("10.0.0.1:3128"));
    }

    #[test]
    fn own_listener_on_unspecified_address() {
        let l = list(&[], &["0.0.0.0:3128"]);
        let own = |a: &str| l.is_own(a.parse().unwrap());
        assert!(own("127.0.0.1:3128") && own("127.9.9.9:3128") && own("[::1]:3128") && own("0.0.0.0:3128"));
        assert!(!own("10.0.0.1:3128") && !own("127.0.0.1:443"));
    }
}
