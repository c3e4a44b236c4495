//! `splitway env`: the settings a client needs to use this config's proxy, in the form a
//! shell, an env file, a program or a Kubernetes container spec reads.
//!
//! A pure function of the [`Config`]: which variables, in which order, with which values.
//! Clients disagree on names and syntax (curl reads only lowercase `http_proxy`; the AWS SDK
//! for Java v2 reads `HTTP_PROXY` for HTTPS; the JVM reads system properties, not the
//! environment), so every variable is written in each spelling a common client reads.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{Config, ProxyAuth};

/// Where SDKs fetch credentials, which must never go through the proxy (its default
/// `deny_destinations` refuses link-local): EC2 instance metadata (IMDS), ECS task metadata
/// and credentials, EKS Pod Identity, then IMDS and EKS Pod Identity over IPv6.
pub const METADATA_HOSTS: &[&str] = &[
    "169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "fd00:ec2::254",
    "fd00:ec2::23",
];

/// Always bypassed: the machine itself.
const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// The output forms of `splitway env --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `export NAME='value'` lines, for `eval "$(splitway env)"`.
    Shell,
    /// `NAME=value` lines, unquoted, as `docker run --env-file`, ECS `environmentFiles` and
    /// systemd `EnvironmentFile` read them.
    Dotenv,
    /// One JSON object, names to values.
    Json,
    /// A container's `env:` list (YAML).
    Kubernetes,
}

/// Why no client settings can be printed for a config.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(
        "{origin}: [proxy] listen = \"{listen}\" has port 0, which clients cannot be pointed at; \
         give it a fixed port such as 3128"
    )]
    NoPort { origin: String, listen: SocketAddr },
}

/// The client settings for one config, in print order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnv {
    vars: Vec<(&'static str, String)>,
}

impl ClientEnv {
    /// The settings for `config`'s proxy listener.
    pub fn new(config: &Config) -> Result<ClientEnv, EnvError> {
        let listen = config.proxy.listen;
        if listen.port() == 0 {
            return Err(EnvError::NoPort {
                origin: config.origin.clone(),
                listen,
            });
        }
        let host = client_ip(listen.ip());
        let url = proxy_url(host, listen.port(), config.proxy.auth.as_ref());
        let bypass = bypass_hosts(config, host);
        let no_proxy = bypass.join(",");
        let mut vars = Vec::new();
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            vars.push((name, url.clone()));
        }
        vars.push(("NO_PROXY", no_proxy.clone()));
        vars.push(("no_proxy", no_proxy));
        vars.push(("JAVA_TOOL_OPTIONS", java_options(host, listen.port(), &bypass)));
        vars.push(("NODE_USE_ENV_PROXY", "1".to_owned()));
        Ok(ClientEnv { vars })
    }

    /// `(name, value)` pairs in print order.
    pub fn vars(&self) -> &[(&'static str, String)] {
        &self.vars
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The settings as `format` writes them, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        match format {
            Format::Shell => {
                for (name, value) in &self.vars {
                    let _ = writeln!(out, "export {name}={}", shell_quote(value));
                }
            }
            Format::Dotenv => {
                for (name, value) in &self.vars {
                    let _ = writeln!(out, "{name}={value}");
                }
            }
            Format::Json => {
                let map: serde_json::Map<String, serde_json::Value> = self
                    .vars
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), serde_json::Value::from(v.as_str())))
                    .collect();
                let _ = writeln!(out, "{:#}", serde_json::Value::Object(map));
            }
            Format::Kubernetes => {
                out.push_str("env:\n");
                for (name, value) in &self.vars {
                    // A JSON string is a valid YAML double-quoted scalar.
                    let value = serde_json::Value::from(value.as_str());
                    let _ = writeln!(out, "  - name: {name}\n    value: {value}");
                }
            }
        }
        out
    }
}

/// The address a client on this machine dials: a wildcard listener is reached on loopback.
fn client_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// `http://[user:password@]host:port`: the `http` scheme even for HTTPS, because a client
/// speaks plain HTTP to the proxy and its TLS runs inside the `CONNECT` tunnel.
fn proxy_url(ip: IpAddr, port: u16, auth: Option<&ProxyAuth>) -> String {
    let userinfo = auth.map_or_else(String::new, |a| {
        format!("{}:{}@", percent_encode(&a.username), percent_encode(&a.password))
    });
    format!("http://{userinfo}{}", SocketAddr::new(ip, port))
}

/// Loopback, the proxy's own addresses (proxy and admin listeners) and the metadata and
/// credential endpoints, each once.
fn bypass_hosts(config: &Config, proxy_ip: IpAddr) -> Vec<String> {
    let own = std::iter::once(proxy_ip).chain(config.admin.as_ref().map(|a| client_ip(a.listen.ip())));
    let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).collect();
    for ip in own {
        let ip = ip.to_string();
        if !hosts.contains(&ip) {
            hosts.push(ip);
        }
    }
    hosts.extend(METADATA_HOSTS.iter().map(|h| (*h).to_owned()));
    hosts
}

/// The JVM's proxy system properties, which it reads instead of the environment.
/// `http.nonProxyHosts` replaces the JVM's default (`localhost|127.*|[::1]`), so that is
/// kept; IPv6 literals are written in brackets, as the JVM compares them.
fn java_options(ip: IpAddr, port: u16, bypass: &[String]) -> String {
    let host = ip.to_string();
    let mut non_proxy: Vec<String> = vec!["localhost".into(), "127.*".into()];
    for h in bypass {
        let entry = match h.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            Ok(IpAddr::V4(v4)) if v4.is_loopback() => continue,
            _ if h == "localhost" => continue,
            _ => h.clone(),
        };
        if !non_proxy.contains(&entry) {
            non_proxy.push(entry);
        }
    }
    format!(
        "-Dhttps.proxyHost={host} -Dhttps.proxyPort={port} -Dhttp.proxyHost={host} -Dhttp.proxyPort={port} \
         -Dhttp.nonProxyHosts={}",
        non_proxy.join("|")
    )
}

/// A POSIX shell single-quoted word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// RFC 3986 userinfo: everything but unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
