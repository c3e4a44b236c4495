//! `via`, `via_target`, `via_password_env`, `via_password_file`: the parent proxies a route's
//! connections go through, parsed and their password read at config load.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::ConfigError;
use super::error::TableCtx;
use crate::target::{Host, Target};

/// What a parent is asked for in its `CONNECT` (`via_target`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViaTarget {
    /// The address splitway resolved (or a fixed address): a parent inside the VPC cannot
    /// resolve the name to the VPC endpoint again.
    #[default]
    Address,
    /// The name as the client asked, resolved by the parent; splitway resolves nothing.
    Name,
}

/// A parent's password. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One parent proxy, `http://[user@]host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub host: Host,
    pub port: u16,
    pub user: Option<String>,
}

impl Parent {
    /// `host:port`: the `parent` metric label, and what errors and log lines name.
    pub fn authority(&self) -> String {
        Target {
            host: self.host.clone(),
            port: self.port,
        }
        .to_string()
    }
}

/// `http://user:***@host:port` as `check` and `explain` show it: the password never.
impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(f, "http://{user}:***@{}", self.authority()),
            None => write!(f, "http://{}", self.authority()),
        }
    }
}

/// A route's parents, tried in order, and how they are asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub parents: Vec<Parent>,
    pub target: ViaTarget,
    /// One user and password per route, sent to whichever parent carries the connection.
    pub password: Option<Secret>,
}

impl Via {
    /// `Proxy-Authorization: Basic …` for the parents (RFC 9110 §11.7.2, RFC 7617), when the
    /// route has credentials.
    pub fn authorization(&self) -> Option<String> {
        let user = self.parents.iter().find_map(|p| p.user.as_deref())?;
        let password = self.password.as_ref()?;
        let token = STANDARD.encode(format!("{user}:{}", password.expose()));
        Some(format!("Basic {token}"))
    }

    /// The parents' IP literals (named parents are resolved when used).
    pub fn literal_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.parents.iter().filter_map(|p| match p.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        })
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.parents.iter().map(ToString::to_string).collect();
        write!(f, "{}", list.join(" then "))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Reads `{prefix}via` and its companion keys from a table; `None` without `{prefix}via`.
/// The keys of one `via` (on a route, or `public_` ones in `[aws]`).
struct Keys {
    via: String,
    target: String,
    env: String,
    file: String,
}

pub(super) fn parse(tc: &TableCtx<'_>, prefix: &str) -> Result<Option<Arc<Via>>, ConfigError> {
    let key = |k: &str| format!("{prefix}{k}");
    let keys = Keys {
        via: key("via"),
        target: key("via_target"),
        env: key("via_password_env"),
        file: key("via_password_file"),
    };
    let env: Option<String> = tc.field(&keys.env)?;
    let file: Option<String> = tc.field(&keys.file)?;
    let target: Option<ViaTarget> = tc.field(&keys.target)?;
    let Some(list) = tc.field::<OneOrMany>(&keys.via)? else {
        for (k, set) in [
            (&keys.target, target.is_some()),
            (&keys.env, env.is_some()),
            (&keys.file, file.is_some()),
        ] {
            if set {
                let message = format!("has no effect without `{}`; add it or remove this key", keys.via);
                return Err(tc.err(k, message));
            }
        }
        return Ok(None);
    };
    let parents = parse_parents(tc, &keys, list)?;
    let has_user = parents.iter().any(|p| p.user.is_some());
    let password = password(tc, &keys, env, file, has_user)?;
    Ok(Some(Arc::new(Via {
        parents,
        target: target.unwrap_or_default(),
        password: password.map(Secret),
    })))
}

/// The parents, in order; all with the same user or none.
fn parse_parents(tc: &TableCtx<'_>, keys: &Keys, list: OneOrMany) -> Result<Vec<Parent>, ConfigError> {
    let list = match list {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if list.is_empty() {
        return Err(tc.err(&keys.via, "must list at least one parent proxy, http://host:port"));
    }
    let parents = list
        .iter()
        .map(|s| parse_parent(s).map_err(|e| tc.bad(&keys.via, &e)))
        .collect::<Result<Vec<_>, _>>()?;
    let users: Vec<&str> = parents.iter().filter_map(|p| p.user.as_deref()).collect();
    if users.iter().any(|u| *u != users[0]) || (!users.is_empty() && users.len() != parents.len()) {
        return Err(tc.err(
            &keys.via,
            "every parent of a route carries the same user (the password is the route's); split the route otherwise",
        ));
    }
    Ok(parents)
}

/// The password from the environment or a file, required exactly when a parent names a user.
fn password(
    tc: &TableCtx<'_>,
    keys: &Keys,
    env: Option<String>,
    file: Option<String>,
    has_user: bool,
) -> Result<Option<String>, ConfigError> {
    let (env_key, file_key) = (&keys.env, &keys.file);
    let password_key = if file.is_some() { file_key } else { env_key };
    let password = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(tc.err(file_key, format!("set one of `{env_key}` and `{file_key}`, not both")));
        }
        (Some(var), None) => Some(std::env::var(&var).map_err(|_| {
            tc.err(
                env_key,
                format!("environment variable `{var}` is not set (or not UTF-8)"),
            )
        })?),
        (None, Some(path)) => Some(read_password_file(&path).map_err(|e| tc.bad(file_key, &e))?),
        (None, None) => None,
    };
    match (&password, has_user) {
        (Some(_), false) => Err(tc.err(
            &keys.via,
            "a password is set but no parent names a user; write http://USER@host:port",
        )),
        (None, true) => Err(tc.err(
            &keys.via,
            format!("names a user but no password; set `{env_key}` or `{file_key}`"),
        )),
        (Some(p), true) if p.chars().any(char::is_control) => {
            Err(tc.err(password_key, "the password must not contain control characters"))
        }
        _ => Ok(password),
    }
}

/// A `via_password_file` that gives no password.
#[derive(Debug, thiserror::Error)]
enum PasswordFileError {
    #[error("cannot read `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` is empty")]
    Empty(String),
}

fn read_password_file(path: &str) -> Result<String, PasswordFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(PasswordFileError::Empty(path.to_owned()));
    }
    Ok(password.to_owned())
}

/// A `via` URL that is not a parent proxy's; the URL shown with any password starred out.
#[derive(Debug, thiserror::Error)]
pub(super) enum ParentUrlError {
    #[error("`{0}` is not http://[user@]host:port (only http:// parents)")]
    Scheme(String),
    #[error("`{0}`: a password never goes in the file; use via_password_env or via_password_file")]
    Password(String),
    #[error("`{0}` has an empty or invalid user")]
    User(String),
    #[error("`{url}` is not http://[user@]host:port")]
    Authority {
        url: String,
        #[source]
        source: crate::target::TargetError,
    },
}

pub(super) fn parse_parent(s: &str) -> Result<Parent, ParentUrlError> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| ParentUrlError::Scheme(redact(s)))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (user, authority) = match rest.rsplit_once('@') {
        Some((u, _)) if u.contains(':') => return Err(ParentUrlError::Password(redact(s))),
        Some((u, a)) if !u.is_empty() && !u.chars().any(char::is_control) => (Some(u.to_owned()), a),
        Some(_) => return Err(ParentUrlError::User(redact(s))),
        None => (None, rest),
    };
    let t =
        Target::parse_authority(authority).map_err(|source| ParentUrlError::Authority { url: redact(s), source })?;
    Ok(Parent {
        host: t.host,
        port: t.port,
        user,
    })
}

/// A parent URL fit for an error message: any `user:password@` becomes `user:***@`.
fn redact(s: &str) -> String {
    let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}{user}:***@{host}")
        }
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_urls_parse_and_show_no_password() {
        let p = parse_parent("http://alice@egress.corp.example:3128").expect("parent");
        assert_eq!(p.user.as_deref(), Some("alice"));
        assert_eq!(p.authority(), "egress.corp.example:3128");
        assert_eq!(p.to_string(), "http://alice:***@egress.corp.example:3128");
        let p = parse_parent("http://10.0.0.5:3128/").expect("parent");
        assert_eq!(p.host, Host::Ip("10.0.0.5".parse().unwrap()));
        let e = parse_parent("http://alice:hunter2@proxy:3128").unwrap_err().to_string();
        assert!(!e.contains("hunter2") && e.contains("via_password_env"), "{e}");
        assert!(parse_parent("https://proxy:3128").is_err());
        let e = parse_parent("http://proxy").unwrap_err();
        let cause = std::error::Error::source(&e)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(cause.contains("port"), "{e}: {cause}");
    }

    #[test]
    fn the_authorization_is_basic_over_user_and_password() {
        let via = Via {
            parents: vec![parse_parent("http://Aladdin@p:1").unwrap()],
            target: ViaTarget::Address,
            password: Some(Secret("open sesame".into())),
        };
        // RFC 7617 §2's example.
        assert_eq!(
            via.authorization().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(format!("{:?}", via.password), "Some(<redacted>)");
    }
}
