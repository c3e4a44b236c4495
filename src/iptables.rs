//! `splitway iptables`: the nat rules that send an application's TCP to the `[transparent]`
//! listener, printed, installed (`--apply`, idempotent) or removed (`--remove`) by running
//! the `iptables` / `ip6tables` binaries.
//!
//! Everything lives in one chain, [`CHAIN`], jumped to from `nat OUTPUT` (connections made
//! on this host or in this pod's network namespace), so removing it is clean. In the chain:
//! splitway's own connections `RETURN` (by `SO_MARK`, `-m mark --mark`, and/or by user,
//! `-m owner --uid-owner`), then the captured destinations `REDIRECT` to the listener's port.

use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;

use crate::config::Config;

/// The chain splitway's rules live in.
pub const CHAIN: &str = "SPLITWAY";

/// Why the rules cannot be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("{0}: there is no [transparent] table; add one to capture connections")]
    NotEnabled(String),
    #[error(
        "{0}: [transparent] sets neither `mark` nor `exclude_uid` (nor --exclude-uid): splitway's own \
         connections would be captured too and loop; set one"
    )]
    NoExclusion(String),
    #[error("{0}: [transparent] listen has port 0; the rules redirect to a fixed port, e.g. 127.0.0.1:15001")]
    NoPort(String),
    #[error(
        "cannot run `{command}`: {source}; install iptables (with the nat table) or apply the printed rules by hand"
    )]
    Run {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// The rules of one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// `iptables` or `ip6tables`.
    pub binary: &'static str,
    /// The chain's rules, each the arguments after `-A SPLITWAY`.
    pub rules: Vec<Vec<String>>,
}

/// The rules for one config, per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub families: Vec<Family>,
}

/// The jump from `nat OUTPUT` into [`CHAIN`].
fn hook() -> Vec<String> {
    args(&["OUTPUT", "-p", "tcp", "-j", CHAIN])
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Builds the rules for `config`; `exclude_uid` (from `--exclude-uid`) overrides the config's.
pub fn plan(config: &Config, exclude_uid: Option<u32>) -> Result<Plan, IptablesError> {
    let t = config
        .transparent
        .as_ref()
        .ok_or_else(|| IptablesError::NotEnabled(config.origin.clone()))?;
    if t.listen.port() == 0 {
        return Err(IptablesError::NoPort(config.origin.clone()));
    }
    let uid = exclude_uid.or(t.exclude_uid);
    if t.mark.is_none() && uid.is_none() {
        return Err(IptablesError::NoExclusion(config.origin.clone()));
    }
    let mut ports: Vec<u16> = config
        .proxy
        .connect_ports
        .iter()
        .chain(&t.http_ports)
        .copied()
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let to_port = t.listen.port().to_string();
    let mut families = Vec::new();
    for (binary, v6) in [("iptables", false), ("ip6tables", true)] {
        let of_family = |n: &&IpNet| matches!(n, IpNet::V6(_)) == v6;
        let capture: Vec<&IpNet> = t.capture.iter().filter(of_family).collect();
        if (!t.capture.is_empty() && capture.is_empty()) || !listens_for(t.listen.ip(), v6) {
            continue;
        }
        let rules = family_rules(t.mark, uid, &capture, v6, &ports, &to_port);
        families.push(Family { binary, rules });
    }
    Ok(Plan { families })
}

/// One address family's chain: the exclusions (mark, UID) return first, then what is
/// captured is redirected to the listener (everything but loopback and link-local when
/// `capture` is empty).
fn family_rules(
    mark: Option<u32>,
    uid: Option<u32>,
    capture: &[&IpNet],
    v6: bool,
    ports: &str,
    to_port: &str,
) -> Vec<Vec<String>> {
    let mut rules = Vec::new();
    if let Some(mark) = mark {
        rules.push(args(&["-m", "mark", "--mark", &format!("{mark:#x}"), "-j", "RETURN"]));
    }
    if let Some(uid) = uid {
        rules.push(args(&["-m", "owner", "--uid-owner", &uid.to_string(), "-j", "RETURN"]));
    }
    let redirect = |dest: Option<String>| {
        let mut r = args(&["-p", "tcp"]);
        if let Some(d) = dest {
            r.extend(args(&["-d", &d]));
        }
        r.extend(args(&[
            "-m",
            "multiport",
            "--dports",
            ports,
            "-j",
            "REDIRECT",
            "--to-ports",
            to_port,
        ]));
        r
    };
    if capture.is_empty() {
        let never = if v6 {
            ["::1/128", "fe80::/10"]
        } else {
            ["127.0.0.0/8", "169.254.0.0/16"]
        };
        for net in never {
            rules.push(args(&["-d", net, "-j", "RETURN"]));
        }
        rules.push(redirect(None));
    } else {
        rules.extend(capture.iter().map(|net| redirect(Some(net.to_string()))));
    }
    rules
}

/// Whether a listener on `ip` receives what `REDIRECT` sends from this host: IPv4 to
/// 127.0.0.1, IPv6 to `::1` (a listener on 127.0.0.1 binds `[::1]` too).
fn listens_for(ip: IpAddr, v6: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => !v6 || v4.is_loopback(),
        IpAddr::V6(v6addr) => v6 || v6addr.is_unspecified(),
    }
}

/// What `--apply` runs, as shell lines (what `splitway iptables` prints).
pub fn script(plan: &Plan) -> String {
    let mut out = String::new();
    for f in &plan.families {
        let line = |a: &[String]| format!("{} -w -t nat {}\n", f.binary, a.join(" "));
        out += &line(&args(&["-N", CHAIN]));
        out += &line(&args(&["-F", CHAIN]));
        for r in &f.rules {
            out += &line(&[args(&["-A", CHAIN]), r.clone()].concat());
        }
        out += &line(&[args(&["-A"]), hook()].concat());
    }
    out
}

/// Installs the rules; running it again replaces them (the chain is flushed and refilled,
/// the jump added only when missing).
pub fn apply(plan: &Plan) -> Result<(), IptablesError> {
    for f in &plan.families {
        // `-N` fails when the chain exists; the flush after it is what must succeed.
        let _ = run(f.binary, &args(&["-N", CHAIN]));
        run(f.binary, &args(&["-F", CHAIN]))?;
        for r in &f.rules {
            run(f.binary, &[args(&["-A", CHAIN]), r.clone()].concat())?;
        }
        if run(f.binary, &[args(&["-C"]), hook()].concat()).is_err() {
            run(f.binary, &[args(&["-A"]), hook()].concat())?;
        }
    }
    Ok(())
}

/// Removes the jump and the chain; nothing installed is not an error.
pub fn remove(plan: &Plan) -> Result<(), IptablesError> {
    for f in &plan.families {
        // The jump may have been added more than once by hand; delete every copy.
        for _ in 0..64 {
            if run(f.binary, &[args(&["-D"]), hook()].concat()).is_err() {
                break;
            }
        }
        if run(f.binary, &args(&["-F", CHAIN])).is_ok() {
            run(f.binary, &args(&["-X", CHAIN]))?;
        }
    }
    Ok(())
}

/// Runs `binary -w -t nat ARGS`.
fn run(binary: &str, a: &[String]) -> Result<(), IptablesError> {
    let command = format!("{binary} -w -t nat {}", a.join(" "));
    let out = Command::new(binary)
        .args(["-w", "-t", "nat"])
        .args(a)
        .output()
        .map_err(|source| IptablesError::Run {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(IptablesError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(transparent: &str) -> Config {
        Config::from_toml(&format!("[transparent]\n{transparent}"), "t.toml").expect("valid config")
    }

    #[test]
    fn default_capture_skips_loopback_and_link_local() {
        let p = plan(&config("mark = 0x539"), None).unwrap();
        let s = script(&p);
        assert!(
            s.contains("iptables -w -t nat -A SPLITWAY -m mark --mark 0x539 -j RETURN\n"),
            "{s}"
        );
        assert!(
            s.contains("iptables -w -t nat -A SPLITWAY -d 127.0.0.0/8 -j RETURN\n"),
            "{s}"
        );
        assert!(
            s.contains("iptables -w -t nat -A SPLITWAY -d 169.254.0.0/16 -j RETURN\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "iptables -w -t nat -A SPLITWAY -p tcp -m multiport --dports 443 -j REDIRECT --to-ports 15001\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("ip6tables -w -t nat -A SPLITWAY -d fe80::/10 -j RETURN\n"),
            "{s}"
        );
        assert!(s.ends_with("ip6tables -w -t nat -A OUTPUT -p tcp -j SPLITWAY\n"), "{s}");
    }

    #[test]
    fn narrowed_capture_uid_and_http_ports() {
        let p = plan(&config("capture = [\"10.0.0.0/8\"]\nhttp_ports = [80]"), Some(1337)).unwrap();
        assert_eq!(p.families.len(), 1, "no IPv6 block captured: no ip6tables rules");
        let s = script(&p);
        assert!(s.contains("-A SPLITWAY -m owner --uid-owner 1337 -j RETURN\n"), "{s}");
        assert!(
            s.contains("-A SPLITWAY -p tcp -d 10.0.0.0/8 -m multiport --dports 80,443 -j REDIRECT --to-ports 15001\n"),
            "{s}"
        );
    }

    #[test]
    fn refuses_without_exclusion_or_table() {
        let e = plan(&config(""), None).unwrap_err();
        assert!(e.to_string().contains("neither `mark` nor `exclude_uid`"), "{e}");
        let e = plan(&config("listen = \"127.0.0.1:0\"\nmark = 1"), None).unwrap_err();
        assert!(e.to_string().contains("port 0"), "{e}");
        let e = plan(&Config::embedded(), Some(1)).unwrap_err();
        assert!(e.to_string().contains("no [transparent] table"), "{e}");
    }
}
