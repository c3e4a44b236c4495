//! The `[aws]` preset: a few lines that expand into the ordinary routes of the common API
//! Gateway setup. Explicit `[[route]]`s win over what it generates; each clash is reported.

use std::collections::HashSet;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::error::{Ctx, TableCtx};
use super::route::{Action, CnameRule, ConnectName, Pattern, RouteSpec, SniMode};
use crate::glob::NameGlob;
use crate::target::Host;

pub(super) const KEYS: &[&str] = &[
    "region",
    "vpc_endpoint",
    "availability_zone",
    "public_api_ids",
    "public_domains",
    "public_resolver",
    "detect_custom_domains",
    "public_via",
    "public_via_target",
    "public_via_password_env",
    "public_via_password_file",
    "private_domains",
    "peered",
];

/// The route `[aws]` generates for every host no other route claims, when
/// `detect_custom_domains` is on: the system resolver, with `on_cname` rules.
pub(crate) const DETECT_ROUTE: &str = "aws-custom-domains";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Peer {
    region: String,
    vpc_endpoint: String,
    /// That region's private custom domain names, reached through its endpoint.
    #[serde(default)]
    private_domains: Vec<String>,
}

/// `[aws]` as read, before any route is generated.
struct Preset {
    region: String,
    endpoint: String,
    zone: Option<String>,
    api_ids: Vec<String>,
    domains: Vec<String>,
    /// Private custom domain names: connected to the endpoint, SNI and `Host` untouched.
    private_domains: Vec<String>,
    public: Option<String>,
    peers: Vec<Peer>,
    detect: Option<bool>,
    public_via: Option<std::sync::Arc<super::via::Via>>,
    /// The `[aws]` header's line: every generated route points at it.
    line: usize,
}

/// Expands `[aws]` into routes, leaving out patterns that `explicit` routes already claim;
/// returns the routes and a note for each pattern left out.
pub(super) fn expand(
    ctx: &Ctx<'_>,
    table: &Spanned<toml::Table>,
    explicit: &[RouteSpec],
) -> Result<(Vec<RouteSpec>, Vec<String>), ConfigError> {
    let tc = TableCtx {
        ctx,
        table,
        route: None,
        prefix: "aws.".into(),
    };
    let p = read(&tc)?;
    let mut notes = Vec::new();
    let mut routes = public_routes(&tc, &p)?;
    routes.extend(detect_route(&tc, &p, &mut notes)?);
    routes.extend(private_routes(&tc, &p)?);
    drop_overridden(&mut routes, explicit, &mut notes);
    Ok((routes, notes))
}

fn read(tc: &TableCtx<'_>) -> Result<Preset, ConfigError> {
    tc.only_keys(KEYS, "[aws]")?;
    let region: String = tc
        .field("region")?
        .ok_or_else(|| tc.err("region", "missing, e.g. \"us-east-1\""))?;
    let endpoint: String = tc
        .field("vpc_endpoint")?
        .ok_or_else(|| tc.err("vpc_endpoint", "missing: the endpoint's DNS name"))?;
    check_endpoint(&endpoint, &region).map_err(|e| tc.bad("vpc_endpoint", &e))?;
    let zone: Option<String> = tc.field("availability_zone")?;
    if let Some(z) = zone
        .as_ref()
        .filter(|z| !z.starts_with(&region) || z.len() == region.len())
    {
        return Err(tc.err(
            "availability_zone",
            format!("`{z}` is not a zone of {region}, e.g. \"{region}a\""),
        ));
    }
    Ok(Preset {
        zone,
        api_ids: tc.field("public_api_ids")?.unwrap_or_default(),
        domains: tc.field("public_domains")?.unwrap_or_default(),
        private_domains: tc.field("private_domains")?.unwrap_or_default(),
        public: tc.field("public_resolver")?,
        peers: tc.field("peered")?.unwrap_or_default(),
        detect: tc.field("detect_custom_domains")?,
        public_via: super::via::parse(tc, "public_")?,
        line: tc.ctx.line(tc.table.span().start),
        region,
        endpoint,
    })
}

/// One generated route; its errors point at `[aws]` and `key`, the key its hosts came from.
fn route(
    tc: &TableCtx<'_>,
    p: &Preset,
    (name, key): (String, &str),
    hosts: Vec<String>,
    action: Action,
    resolver: &str,
) -> Result<RouteSpec, ConfigError> {
    let patterns = hosts
        .iter()
        .map(|h| {
            super::route::parse_pattern(h)
                .map(|pattern| (pattern, p.line))
                .map_err(|e| tc.bad(key, &e))
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteSpec {
        name,
        patterns,
        action,
        resolver: resolver.to_owned(),
        resolver_line: Some(p.line),
        sni: SniMode::Match,
        on_cname: vec![],
        on_cname_line: None,
        via: None,
        line: p.line,
    })
}

/// `aws-public-domains` and `aws-public-api-ids`, through `public_resolver` (and `public_via`).
fn public_routes(tc: &TableCtx<'_>, p: &Preset) -> Result<Vec<RouteSpec>, ConfigError> {
    let mut routes = Vec::new();
    if p.api_ids.is_empty() && p.domains.is_empty() {
        return Ok(routes);
    }
    let resolver = p.public.as_deref().ok_or_else(|| {
        tc.err(
            "public_resolver",
            "missing: name the [resolver.NAME] that sees public DNS (e.g. \"public\")",
        )
    })?;
    if !p.domains.is_empty() {
        let name = ("aws-public-domains".into(), "public_domains");
        routes.push(route(tc, p, name, p.domains.clone(), Action::Resolve, resolver)?);
    }
    if !p.api_ids.is_empty() {
        let hosts = p
            .api_ids
            .iter()
            .map(|id| format!("{id}.execute-api.{}.amazonaws.com", p.region))
            .collect();
        routes.push(route(
            tc,
            p,
            ("aws-public-api-ids".into(), "public_api_ids"),
            hosts,
            Action::Resolve,
            resolver,
        )?);
    }
    // The public routes leave the VPC; only they take the egress proxy.
    for r in &mut routes {
        r.via.clone_from(&p.public_via);
    }
    Ok(routes)
}

/// `aws-custom-domains` (`detect_custom_domains`): `*` on the system resolver, re-planned
/// through `public_resolver` when a CNAME chain reaches an API Gateway domain name of the
/// region or a peered one.
fn detect_route(tc: &TableCtx<'_>, p: &Preset, notes: &mut Vec<String>) -> Result<Option<RouteSpec>, ConfigError> {
    let resolver = match (p.detect, p.public.as_deref()) {
        (Some(false), _) => return Ok(None),
        (_, Some(resolver)) => resolver,
        (Some(true), None) => {
            return Err(tc.err(
                "public_resolver",
                "missing: detect_custom_domains resolves detected custom domains through it (e.g. \"public\")",
            ));
        }
        (None, None) => {
            notes.push(
                "[aws] detect_custom_domains is off: it needs public_resolver (the [resolver.NAME] that sees public DNS)"
                    .to_owned(),
            );
            return Ok(None);
        }
    };
    let regions = std::iter::once(p.region.as_str()).chain(p.peers.iter().map(|peer| peer.region.as_str()));
    let mut r = route(
        tc,
        p,
        (DETECT_ROUTE.into(), "detect_custom_domains"),
        vec!["*".into()],
        Action::Resolve,
        "system",
    )?;
    r.on_cname = regions
        .map(|region| {
            let pattern = format!("d-*.execute-api.{region}.amazonaws.com");
            NameGlob::parse(&pattern).map(|pattern| CnameRule {
                pattern,
                resolver: resolver.to_owned(),
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| tc.bad("detect_custom_domains", &e))?;
    r.on_cname_line = Some(p.line);
    Ok(Some(r))
}

/// `aws-private-apis` (zonal endpoint name first, then regional) and one route per peered
/// region; beside each, `aws-private-domains[-REGION]` for that region's private custom domain
/// names, which reach the same endpoint names with the application's SNI and `Host` untouched
/// (what a private hosted zone's alias record to the endpoint would do).
fn private_routes(tc: &TableCtx<'_>, p: &Preset) -> Result<Vec<RouteSpec>, ConfigError> {
    let mut names = Vec::new();
    if let Some(z) = &p.zone {
        names.push(zonal_name(&p.endpoint, z));
    }
    names.push(p.endpoint.clone());
    let mut routes = endpoint_routes(tc, p, "", &p.region, &names, &p.private_domains)?;
    for peer in &p.peers {
        check_endpoint(&peer.vpc_endpoint, &peer.region).map_err(|e| tc.bad("peered", &e))?;
        let suffix = format!("-{}", peer.region);
        let names = [peer.vpc_endpoint.clone()];
        routes.extend(endpoint_routes(
            tc,
            p,
            &suffix,
            &peer.region,
            &names,
            &peer.private_domains,
        )?);
    }
    Ok(routes)
}

/// The routes of one region's endpoint: its API IDs, and its private custom domains if any.
fn endpoint_routes(
    tc: &TableCtx<'_>,
    p: &Preset,
    suffix: &str,
    region: &str,
    endpoint: &[String],
    private_domains: &[String],
) -> Result<Vec<RouteSpec>, ConfigError> {
    let hosts = vec![format!("*.execute-api.{region}.amazonaws.com")];
    let name = (format!("aws-private-apis{suffix}"), "vpc_endpoint");
    let mut routes = vec![route(tc, p, name, hosts, connect(endpoint.to_vec()), "system")?];
    if !private_domains.is_empty() {
        let key = if suffix.is_empty() { "private_domains" } else { "peered" };
        let name = (format!("aws-private-domains{suffix}"), key);
        let action = connect(endpoint.to_vec());
        routes.push(route(tc, p, name, private_domains.to_vec(), action, "system")?);
    }
    Ok(routes)
}

/// Explicit routes win: their patterns leave the generated routes, each with a note.
fn drop_overridden(routes: &mut Vec<RouteSpec>, explicit: &[RouteSpec], notes: &mut Vec<String>) {
    let claimed: HashSet<&Pattern> = explicit
        .iter()
        .flat_map(|r| r.patterns.iter().map(|(p, _)| p))
        .collect();
    for r in routes.iter_mut() {
        r.patterns.retain(|(p, _)| {
            let keep = !claimed.contains(p);
            if !keep {
                let owner = explicit
                    .iter()
                    .find(|e| e.patterns.iter().any(|(q, _)| q == p))
                    .map_or("?", |e| e.name.as_str());
                notes.push(format!(
                    "[aws] pattern `{p}` of route `{}` is overridden by route `{owner}`",
                    r.name
                ));
            }
            keep
        });
    }
    routes.retain(|r| !r.patterns.is_empty());
}

fn connect(names: Vec<String>) -> Action {
    Action::Connect(
        names
            .into_iter()
            .map(|n| ConnectName {
                host: Host::Name(n),
                port: None,
            })
            .collect(),
    )
}

/// `vpce-…-abcd1234.execute-api.REGION.vpce.amazonaws.com` → the zonal name AWS publishes,
/// `vpce-…-abcd1234-ZONE.execute-api.REGION.vpce.amazonaws.com`.
fn zonal_name(endpoint: &str, zone: &str) -> String {
    match endpoint.split_once('.') {
        Some((first, rest)) => format!("{first}-{zone}.{rest}"),
        None => format!("{endpoint}-{zone}"),
    }
}

/// A `vpc_endpoint` that is not an execute-api endpoint name of its region.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{endpoint}` is not an execute-api VPC endpoint name of {region}; copy the endpoint's regional DNS name, \
     `vpce-<id>-<suffix>.execute-api.{region}.vpce.amazonaws.com`"
)]
struct NotAnEndpoint {
    endpoint: String,
    region: String,
}

fn check_endpoint(endpoint: &str, region: &str) -> Result<(), NotAnEndpoint> {
    let suffix = format!(".execute-api.{region}.vpce.amazonaws.com");
    let ok = endpoint.starts_with("vpce-") && endpoint.to_ascii_lowercase().ends_with(&suffix);
    if ok {
        Ok(())
    } else {
        Err(NotAnEndpoint {
            endpoint: endpoint.to_owned(),
            region: region.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::zonal_name;

    #[test]
    fn zonal_name_inserts_the_zone_after_the_endpoint_id() {
        assert_eq!(
            zonal_name(
                "vpce-0123456789abcdef0-abcd1234.execute-api.us-east-1.vpce.amazonaws.com",
                "us-east-1a"
            ),
            "vpce-0123456789abcdef0-abcd1234-us-east-1a.execute-api.us-east-1.vpce.amazonaws.com"
        );
    }
}
