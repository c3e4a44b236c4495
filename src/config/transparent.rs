//! `[transparent]`: the listener iptables `REDIRECT` sends captured TCP to, loop prevention
//! (`mark`, `exclude_uid`), what happens without a name (`no_sni`), and what `splitway
//! iptables` captures (`capture`, `http_ports`).

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// Default for `[transparent] listen`.
pub const DEFAULT_TRANSPARENT_LISTEN: &str = "127.0.0.1:15001";

/// `[transparent]`; absent, transparent mode is off.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TransparentSettings {
    /// Where redirected connections arrive; [`DEFAULT_TRANSPARENT_LISTEN`]. Port 0 (tests)
    /// binds any free port, which `splitway iptables` refuses: its rules need the port. On a loopback
    /// IPv4 address, the same port on `[::1]` is bound too (where ip6tables sends IPv6).
    pub listen: SocketAddr,
    /// `SO_MARK` on every outbound socket, so the capture rules let splitway's own
    /// connections through (needs `CAP_NET_ADMIN`); none by default.
    pub mark: Option<u32>,
    /// The UID whose connections the capture rules let through (splitway's own user), for
    /// deployments without `CAP_NET_ADMIN`; none by default.
    pub exclude_uid: Option<u32>,
    /// A connection without a usable name: route by its original address, or close it.
    pub no_sni: NoSni,
    /// Destination blocks `splitway iptables` captures; empty (the default) means every
    /// destination but loopback and link-local.
    pub capture: Vec<IpNet>,
    /// Plain-HTTP ports `splitway iptables` captures besides `[proxy] connect_ports`; none by
    /// default (plain HTTP on a captured port is recognised either way).
    pub http_ports: Vec<u16>,
}

/// `[transparent] no_sni`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoSni {
    /// Route by the original destination address (the table's IP routes; by default straight
    /// to that address).
    #[default]
    Original,
    /// Close the connection (logged and counted).
    Refuse,
}

impl NoSni {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Refuse => "refuse",
        }
    }
}

impl Default for TransparentSettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_TRANSPARENT_LISTEN
                .parse()
                .expect("DEFAULT_TRANSPARENT_LISTEN is a socket address"),
            mark: None,
            exclude_uid: None,
            no_sni: NoSni::Original,
            capture: Vec::new(),
            http_ports: Vec::new(),
        }
    }
}

impl TransparentSettings {
    /// Cross-field checks; the message names the key.
    pub(super) fn check(&self, proxy_listen: SocketAddr) -> Result<(), (&'static str, String)> {
        if self.listen == proxy_listen && self.listen.port() != 0 {
            return Err((
                "transparent.listen",
                format!(
                    "{} is [proxy] listen too; give the transparent listener its own port",
                    self.listen
                ),
            ));
        }
        if self.mark == Some(0) {
            return Err(("transparent.mark", "0 is no mark; pick a value such as 0x539".into()));
        }
        if self.http_ports.contains(&0) {
            return Err(("transparent.http_ports", "port 0 is not a valid port".into()));
        }
        Ok(())
    }

    /// One line for `splitway check`.
    pub fn describe(&self) -> String {
        let capture = if self.capture.is_empty() {
            "all but loopback and link-local".to_owned()
        } else {
            self.capture
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "transparent listen {} (mark {}, exclude_uid {}, no_sni {}, capture {capture}, http_ports {:?})",
            self.listen,
            self.mark.map_or_else(|| "none".into(), |m| format!("{m:#x}")),
            self.exclude_uid.map_or_else(|| "none".into(), |u| u.to_string()),
            self.no_sni.as_str(),
            self.http_ports,
        )
    }
}
