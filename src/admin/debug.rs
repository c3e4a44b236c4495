//! `/debug/route?host=`: `explain --probe` on the running config, as JSON, while the running
//! config has `[admin] debug = true` (a reload turns it on or off). The probe obeys the
//! proxy's own rules: `connect_ports`, `deny_destinations`, the own-listener check.

use std::sync::Arc;

use http::StatusCode;

use super::DebugRoute;
use crate::runtime::Current;
use crate::{explain, probe, target};

/// The `/debug/route` hook of the proxy whose runtime is `current`.
pub(crate) fn route(current: Arc<Current>) -> DebugRoute {
    Arc::new(move |host: Option<String>| {
        let runtime = current.load();
        Box::pin(async move {
            if !runtime.config.admin.as_ref().is_some_and(|a| a.debug) {
                return None;
            }
            let usage = || {
                (
                    StatusCode::BAD_REQUEST,
                    "usage: /debug/route?host=HOST[:PORT]\n".to_owned(),
                )
            };
            let Some(host) = host else { return Some(usage()) };
            let target = match target::Target::parse_host_port(&host, 443) {
                Ok(t) => t,
                Err(e) => return Some((StatusCode::BAD_REQUEST, format!("bad host `{host}`: {e}\n"))),
            };
            let roots = match probe::roots(None) {
                Ok(r) => r,
                Err(e) => return Some((StatusCode::INTERNAL_SERVER_ERROR, format!("trust roots: {e}\n"))),
            };
            let e = explain::explain_and_probe(&runtime, &target, &roots, explain::ProbeFrom::Admin).await;
            Some((
                StatusCode::OK,
                serde_json::to_string_pretty(&e).unwrap_or_default() + "\n",
            ))
        })
    })
}
