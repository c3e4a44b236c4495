//! Report mode (`[proxy] mode = "report"`): traffic follows the system resolver's path, and
//! splitway logs and counts where its routes would have sent it instead — so a team can roll
//! splitway out and see the effect before turning it on.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::metrics::ReportAction;
use crate::routes::{DEFAULT_ROUTE, Route};
use crate::runtime::Runtime;
use crate::target::Target;
use crate::upstream::connect::Upstream;
use crate::upstream::plan::Plan;
use crate::upstream::walk::Walk;

/// Connects along the system path and, at the same time, works out what `route` would do;
/// a difference is logged and counted under `route`'s name.
pub(crate) async fn connect_and_compare(
    rt: &Runtime,
    route: &Route,
    target: &Target,
) -> Result<(TcpStream, Upstream), ProxyError> {
    let (actual, would) = tokio::join!(
        rt.connector.connect(&rt.system_route, target),
        would_connect(rt, route, target)
    );
    let actual_ip = actual.as_ref().ok().map(|(_, up)| up.addr().ip());
    let difference = match &would {
        Would::Same => None,
        Would::Deny => Some(ReportAction::Deny),
        Would::Connect(ips) if actual_ip.is_some_and(|ip| ips.contains(&ip)) => None,
        Would::Connect(_) | Would::Fail(_) => Some(ReportAction::Reroute),
    };
    if let Some(action) = difference {
        rt.connector.metrics().report_difference(&route.name, action);
        tracing::info!(
            target: "splitway::report",
            host = %target,
            route = &*route.name,
            action = action.as_str(),
            system_path = actual_ip.map(|ip| SocketAddr::new(ip, target.port).to_string()).unwrap_or_else(|| "failed".into()),
            splitway = %would,
            "report mode: splitway would handle this differently"
        );
    }
    actual
}

enum Would {
    Same,
    Deny,
    Connect(Vec<IpAddr>),
    Fail(String),
}

impl std::fmt::Display for Would {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Would::Same => f.write_str("same"),
            Would::Deny => f.write_str("deny 403"),
            Would::Connect(ips) => write!(
                f,
                "{}",
                ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            Would::Fail(e) => write!(f, "refuse: {e}"),
        }
    }
}

async fn would_connect(rt: &Runtime, route: &Route, target: &Target) -> Would {
    let deadline = Instant::now() + rt.config.proxy.connect_timeout;
    let plan = route.plan(target);
    // Through a parent, what is compared is the address the parent would be asked for; in
    // name mode the parent resolves, so there is nothing of splitway's to compare.
    let (resolver, names, on_cname) = match plan.local().cloned() {
        Some(plan) if &*route.name == DEFAULT_ROUTE && plan.is_system_path() => return Would::Same,
        None | Some(Plan::Parent { .. }) => return Would::Same,
        Some(Plan::Deny) => return Would::Deny,
        Some(Plan::Fixed(addrs)) => return Would::Connect(addrs.iter().map(SocketAddr::ip).collect()),
        Some(Plan::Resolve {
            resolver,
            names,
            on_cname,
            ..
        }) => (resolver, names, on_cname),
    };
    let mut walk = Walk::new(&rt.connector, route, &resolver, &on_cname, &names, deadline);
    match walk.next().await {
        Some(found) => Would::Connect(found.candidates.addrs.iter().map(SocketAddr::ip).collect()),
        None => Would::Fail(walk.failure(target).describe()),
    }
}
