//! `splitway explain`: which route a host takes, which resolver, the lookup (CNAME chain,
//! addresses, TTL), the address it would connect to, and what the system resolver would have
//! answered instead — how a user sees the split-horizon problem.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::ViaTarget;
use crate::probe::{self, Probe};
use crate::routes::Route;
use crate::runtime::Runtime;
use crate::target::{Host, Target};
use crate::upstream::backoff::Backoff;
use crate::upstream::plan::Plan;
use crate::upstream::walk::Walk;

/// One name looked up through one resolver.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    pub name: String,
    pub resolver: String,
    pub cnames: Vec<String>,
    pub addresses: Vec<IpAddr>,
    pub ttl_secs: Option<u64>,
    /// Addresses dropped by `deny_destinations`.
    pub denied: Vec<IpAddr>,
    pub error: Option<String>,
}

/// The routing decision for one host.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub target: String,
    pub route: String,
    pub action: String,
    pub sni: &'static str,
    pub lookups: Vec<Lookup>,
    pub connect_to: Option<SocketAddr>,
    /// On a route with `via`: `PARENT, then CONNECT ADDRESS:PORT` (or the name, in name mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub error: Option<String>,
    /// The system resolver's answer for the host, when the route does not already use it.
    pub system: Option<Lookup>,
    /// The system resolver would send the connection somewhere else.
    pub differs: bool,
    /// An `on_cname` rule re-planned the lookup: which CNAME, which resolver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected: Option<String>,
    /// With `--probe`: what the server presents along splitway's route and the system path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// `[transparent]`, when on: redirected connections naming this host route the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transparent: Option<String>,
    /// `[proxy] address_backoff` (`"off"` when zero).
    pub address_backoff: String,
    /// With `--client` / `--source`: whether that client's `[[client]]` policy allows the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Addresses of this host in backoff now: tried after the others (`connect_to` already
    /// skips them). Only a running proxy has any (`/debug/route`).
    pub backoffs: Vec<Backoff>,
}

/// Explains where a connection to `target` would go, without connecting.
pub async fn explain(rt: &Runtime, target: &Target) -> Explanation {
    let (mut out, route, plan) = decision(rt, target);
    match plan.local() {
        // Name mode: the parent resolves the target, splitway looks nothing up.
        None | Some(Plan::Parent { .. }) => {}
        Some(Plan::Deny) => out.error = Some(format!("route `{}` denies {}", route.name, target.host)),
        Some(Plan::Fixed(addrs)) => out.connect_to = addrs.first().copied(),
        Some(Plan::Resolve {
            resolver,
            names,
            on_cname,
            ..
        }) => {
            let deadline = Instant::now() + rt.config.proxy.connect_timeout;
            // The walk a connection takes: the name it would use first, then the rest only to
            // show what they resolve to.
            let mut walk = Walk::new(&rt.connector, &route, resolver, on_cname, names, deadline).recording();
            let first = walk.next().await;
            walk.rest().await;
            let backoffs = rt.connector.backoffs();
            for reached in walk.reached() {
                let mut lookup = Lookup::new(&reached.host, resolver);
                match &reached.result {
                    Ok(c) => {
                        if let Some(d) = &c.detected {
                            lookup.resolver = d.resolver.to_string();
                            out.detected =
                                Some(format!("custom domain (CNAME {}) -> resolver {}", d.cname, d.resolver));
                        }
                        lookup.fill(
                            c.answer.as_ref(),
                            &c.addrs.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
                        );
                        lookup.denied = c.denied.clone();
                        let now = backoffs.snapshot().into_iter();
                        out.backoffs.extend(now.filter(|b| c.addrs.contains(&b.address)));
                    }
                    Err(e) => lookup.error = Some(e.describe()),
                }
                out.lookups.push(lookup);
            }
            out.connect_to = first.and_then(|f| backoffs.order(&f.candidates.addrs).first().copied());
            if out.connect_to.is_none() {
                out.error = out.lookups.iter().rev().find_map(|l| l.error.clone());
            }
        }
    }
    if let Plan::Parent { via, ask } = &plan {
        let asked = match via.target {
            ViaTarget::Address => out.connect_to.map(|a| a.to_string()),
            ViaTarget::Name => ask.first_name().map(|t| t.to_string()),
        };
        if let Some(asked) = asked {
            out.via = Some(format!("{via}, then CONNECT {asked}"));
        }
    }
    if let (Host::Name(name), false) = (&target.host, plan.is_system_path()) {
        out.system = Some(system_lookup(rt, name).await);
    }
    if let (Some(sys), Some(to)) = (&out.system, out.connect_to) {
        out.differs = !sys.addresses.contains(&to.ip());
    }
    out
}

/// The route and plan for `target`, before anything is looked up.
fn decision(rt: &Runtime, target: &Target) -> (Explanation, Arc<Route>, Plan) {
    let route = rt.routes.lookup(&target.host).clone();
    let plan = route.plan(target);
    let out = Explanation {
        target: target.to_string(),
        route: route.name.to_string(),
        action: plan.to_string(),
        sni: if crate::proxy::tunnel::expected_sni(&route, target).is_some() {
            "match"
        } else {
            "any"
        },
        lookups: vec![],
        connect_to: None,
        via: None,
        error: None,
        system: None,
        differs: false,
        detected: None,
        probes: vec![],
        transparent: rt.config.transparent.as_ref().map(|t| t.describe()),
        address_backoff: match rt.config.proxy.address_backoff {
            d if d.is_zero() => "off".into(),
            d => humantime::format_duration(d).to_string(),
        },
        backoffs: vec![],
        client: None,
    };
    (out, route, plan)
}

/// Who asked for a probe. The admin side (`/debug/route`) is reachable by whoever reaches
/// the admin port, so it obeys the proxy's own rules in full, `connect_ports` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFrom {
    /// `splitway explain --probe`, run by the operator.
    Cli,
    /// `GET /debug/route` on the admin listener.
    Admin,
}

/// [`explain`], then a TLS probe along splitway's route and along the system resolver's path.
/// Both connections go through the one connector: `deny_destinations` and the own-listener
/// check apply to each, and from the admin side a port outside `connect_ports` is refused
/// before anything is resolved or connected.
pub async fn explain_and_probe(
    rt: &Runtime,
    target: &Target,
    roots: &rustls::RootCertStore,
    from: ProbeFrom,
) -> Explanation {
    if let (ProbeFrom::Admin, Err(e)) = (from, rt.check_connect_port(target)) {
        let (mut out, _, _) = decision(rt, target);
        out.error = Some(e.describe());
        return out;
    }
    let mut out = explain(rt, target).await;
    let Host::Name(host) = &target.host else {
        out.error
            .get_or_insert_with(|| "probes need a host name (the SNI)".into());
        return out;
    };
    let route = rt.routes.lookup(&target.host).clone();
    out.probes
        .push(probe_along(rt, "splitway", &route, target, host, roots).await);
    if out.system.is_some() {
        let system = rt.system_route.clone();
        out.probes
            .push(probe_along(rt, "system", &system, target, host, roots).await);
    }
    out
}

/// Connects along `route` through the connector and probes what the server presents.
async fn probe_along(
    rt: &Runtime,
    path: &str,
    route: &Route,
    target: &Target,
    host: &str,
    roots: &rustls::RootCertStore,
) -> Probe {
    match rt.connector.connect(route, target).await {
        Ok((stream, up)) => probe::probe(path, stream, up.addr(), host, roots).await,
        Err(e) => Probe {
            path: path.into(),
            error: Some(e.describe()),
            ..Probe::default()
        },
    }
}

async fn system_lookup(rt: &Runtime, name: &str) -> Lookup {
    let mut lookup = Lookup::new(&Host::Name(name.to_owned()), "system");
    match rt.connector.resolvers().get("system") {
        Some(resolver) => match resolver.resolve(name).await.0 {
            Ok(a) => lookup.fill(Some(&a), &a.addrs),
            Err(e) => lookup.error = Some(e.describe()),
        },
        None => lookup.error = Some("no system resolver".into()),
    }
    lookup
}

impl Lookup {
    fn new(host: &Host, resolver: &str) -> Self {
        Lookup {
            name: host.to_string(),
            resolver: if matches!(host, Host::Ip(_)) {
                String::new()
            } else {
                resolver.to_owned()
            },
            cnames: vec![],
            addresses: vec![],
            ttl_secs: None,
            denied: vec![],
            error: None,
        }
    }

    fn fill(&mut self, answer: Option<&crate::upstream::dns::Answer>, addrs: &[IpAddr]) {
        if let Some(a) = answer {
            self.cnames = a.cnames.to_vec();
            self.ttl_secs = Some(a.ttl.as_secs());
        }
        self.addresses = addrs.to_vec();
    }
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        for c in &self.cnames {
            write!(f, " -> CNAME {c}")?;
        }
        if let Some(e) = &self.error {
            return write!(f, " -> error: {e}");
        }
        let addrs = self.addresses.iter().map(ToString::to_string).collect::<Vec<_>>();
        write!(f, " -> {}", addrs.join(", "))?;
        if let Some(ttl) = self.ttl_secs {
            write!(f, " (ttl {ttl}s)")?;
        }
        if !self.denied.is_empty() {
            let d = self.denied.iter().map(ToString::to_string).collect::<Vec<_>>();
            write!(f, " [dropped by deny_destinations: {}]", d.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "target:     {}", self.target)?;
        writeln!(f, "route:      {}", self.route)?;
        writeln!(f, "action:     {}", self.action)?;
        writeln!(f, "sni:        {}", self.sni)?;
        if let Some(d) = &self.detected {
            writeln!(f, "detected:   {d}")?;
        }
        for l in &self.lookups {
            writeln!(
                f,
                "lookup:     {l} [resolver {}]",
                if l.resolver.is_empty() { "-" } else { &l.resolver }
            )?;
        }
        match (&self.via, &self.connect_to, &self.error) {
            (Some(v), _, _) => writeln!(f, "connect to: {v}")?,
            (None, Some(a), _) => writeln!(f, "connect to: {a}")?,
            (None, None, Some(e)) => writeln!(f, "refused:    {e}")?,
            (None, None, None) => writeln!(f, "connect to: -")?,
        }
        if let Some(c) = &self.client {
            writeln!(f, "client:     {c}")?;
        }
        for b in &self.backoffs {
            writeln!(f, "backoff:    {b}")?;
        }
        if self.backoffs.is_empty() {
            writeln!(
                f,
                "backoff:    no address in backoff (address_backoff {})",
                self.address_backoff
            )?;
        }
        for p in &self.probes {
            writeln!(f, "probe:      {p}")?;
        }
        if let Some(t) = &self.transparent {
            writeln!(f, "also:       {t} (SNI or Host {} routes the same)", self.target)?;
        }
        if let Some(sys) = &self.system {
            writeln!(f, "system:     {sys}")?;
            if self.differs {
                writeln!(
                    f,
                    "            the system resolver would send this connection elsewhere; splitway's route avoids that path"
                )?;
            } else if self.connect_to.is_some() && sys.error.is_none() {
                writeln!(f, "            the system resolver agrees")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.address.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        write!(f, "{:<8} {addr}", self.path)?;
        if let Some(subject) = &self.subject {
            write!(f, " certificate `{subject}` SANs [{}]", self.sans.join(", "))?;
        }
        match self.covers_host {
            Some(true) => write!(f, ", covers the host")?,
            Some(false) => write!(f, ", does NOT cover the host: clients fail the TLS name check")?,
            None => {}
        }
        if self.trusted == Some(false) {
            write!(f, ", not trusted")?;
        }
        if let Some(status) = self.http_status {
            write!(f, ", GET / -> HTTP {status}")?;
        }
        if let Some(e) = &self.error {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}
