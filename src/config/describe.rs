//! The effective route table as `splitway check` prints it.

use std::fmt::Write;

use super::{Config, Nameserver, SniMode, ViaTarget};

/// Renders the resolvers and routes of a valid config, most specific matching first.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config {}: ok", config.origin);
    let _ = writeln!(
        out,
        "proxy listen {} (CONNECT ports {:?})",
        config.proxy.listen, config.proxy.connect_ports
    );
    let _ = match config.proxy.address_backoff {
        d if d.is_zero() => writeln!(out, "address_backoff off"),
        d => writeln!(
            out,
            "address_backoff {} (an upstream address that timed out or refused is tried after the others)",
            humantime::format_duration(d)
        ),
    };
    match &config.admin {
        Some(a) => drop(writeln!(out, "admin listen {}", a.listen)),
        None => drop(writeln!(out, "admin off")),
    }
    match &config.transparent {
        Some(t) => drop(writeln!(out, "{}", t.describe())),
        None => drop(writeln!(out, "transparent off")),
    }
    let _ = writeln!(out, "\nresolvers:");
    for (name, r) in &config.resolvers {
        let _ = writeln!(out, "  {name:<12} {}", resolver(r));
    }
    let _ = writeln!(
        out,
        "\nroutes (exact > longest *.suffix > *; IPs: exact > narrowest CIDR > *):"
    );
    for r in &config.routes {
        out.push_str(&route(r));
    }
    for note in &config.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let has_catch_all = config
        .routes
        .iter()
        .any(|r| r.patterns.iter().any(|(p, _)| *p == super::Pattern::CatchAll));
    if !has_catch_all {
        let _ = writeln!(
            out,
            "  {:<24} [*] -> resolve via `system` (implicit)",
            super::DEFAULT_ROUTE
        );
    }
    out
}

/// One resolver's line: its servers, timers, cache and trust roots.
fn resolver(r: &super::ResolverSettings) -> String {
    let servers = match &r.nameservers {
        None => "/etc/resolv.conf".to_owned(),
        Some(list) => list.iter().map(nameserver).collect::<Vec<_>>().join(", "),
    };
    format!(
        "{servers}  timeout {:?}, ttl {:?}..{:?}, serve_stale {:?}, cache_size {}{}{}",
        r.timeout,
        r.min_ttl,
        r.max_ttl,
        r.serve_stale,
        r.cache_size,
        if r.hosts_file { ", /etc/hosts" } else { "" },
        r.ca_file
            .as_ref()
            .map(|p| format!(", ca_file {}", p.display()))
            .unwrap_or_default()
    )
}

/// One route's lines: patterns, action, SNI policy, parents, then its `on_cname` rules.
fn route(route: &super::RouteSpec) -> String {
    let hosts = route
        .patterns
        .iter()
        .map(|(p, _)| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let action = if route.action.uses_resolver() {
        format!("{} via `{}`", route.action, route.resolver)
    } else {
        route.action.to_string()
    };
    let sni = if route.sni == SniMode::Any { ", sni any" } else { "" };
    // The password is never shown: a parent with a user prints as `user:***`.
    let via = match &route.via {
        Some(v) => format!(
            ", through {v} (CONNECT {})",
            match v.target {
                ViaTarget::Address => "the resolved address",
                ViaTarget::Name => "the name",
            }
        ),
        None => String::new(),
    };
    let mut out = format!("  {:<24} [{hosts}] -> {action}{sni}{via}\n", route.name);
    for rule in &route.on_cname {
        let _ = writeln!(
            out,
            "  {:<24}   on CNAME {} -> resolve via `{}`",
            "", rule.pattern, rule.resolver
        );
    }
    out
}

fn nameserver(n: &Nameserver) -> String {
    match n {
        Nameserver::UdpTcp(a) => a.to_string(),
        Nameserver::Udp(a) => format!("udp://{a}"),
        Nameserver::Tcp(a) => format!("tcp://{a}"),
        Nameserver::Tls { addr, name } => format!("tls://{addr}#{name}"),
        Nameserver::Https { addr, name, path } => format!("https://{addr}{path}#{name}"),
    }
}
