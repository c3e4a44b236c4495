//! The kubernetes form, as a container's environment, read by Node's `fetch` and its global
//! `http`/`https` agents (`NODE_USE_ENV_PROXY`).

use super::{assert_answers, assert_pair, env_output, kubernetes_env, run, setup};
use crate::support::client::ca_file;
use crate::support::*;

/// Where `.ci/run` installs a Node that honours `NODE_USE_ENV_PROXY` (a machine's own `node`
/// is often older).
const CI_NODE: &str = "/opt/node24/bin/node";

/// Prints the API's answer and `/healthz`'s through `fetch`, then the same through the global
/// agents (`https.get`, `http.get`). Name lookups fail: a client that went around the proxy
/// must not reach the machine's resolver.
const NODE: &str = r#"
require('node:dns').lookup = (host, options, callback) =>
  (callback ?? options)(new Error(`lookup ${host}: the test client must not resolve`));
const http = require('node:http');
const https = require('node:https');
const [api, healthz] = process.argv.slice(1);
const bound = 20000;
async function viaFetch(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(bound) });
  return [r.status, (await r.text()).trim()];
}
function viaAgent(url) {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { timeout: bound }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve([res.statusCode, body.trim()]));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${bound} ms`)));
    req.on('error', reject);
  });
}
(async () => {
  for (const get of [viaFetch, viaAgent]) {
    console.log((await get(api))[1]);
    console.log((await get(healthz)).join(' '));
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
"#;

/// Whether Node `version` (`24.5.0`) honours `NODE_USE_ENV_PROXY` for `fetch` and the global
/// agents: 22.21 and later 22s, 24.5 and later.
fn honours_env_proxy(version: &str) -> bool {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (next(), next()) {
        (Some(22), Some(minor)) => minor >= 21,
        (Some(24), Some(minor)) => minor >= 5,
        (Some(major), Some(_)) => major >= 25,
        _ => false,
    }
}

/// The first of `SPLITWAY_TEST_NODE`, [`CI_NODE`] and `node` on `PATH` that honours
/// `NODE_USE_ENV_PROXY`, or what each one is.
fn node() -> Result<String, String> {
    let from_env = std::env::var("SPLITWAY_TEST_NODE").ok();
    let candidates = from_env.into_iter().chain([CI_NODE.to_owned(), "node".to_owned()]);
    let mut seen = Vec::new();
    for program in candidates {
        let out = std::process::Command::new(&program)
            .args(["-p", "process.versions.node"])
            .env_clear()
            .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if honours_env_proxy(&version) {
                    return Ok(program);
                }
                seen.push(format!("{program} is {version}"));
            }
            Ok(out) => seen.push(format!("{program} exited with {}", out.status)),
            Err(e) => seen.push(format!("{program}: {e}")),
        }
    }
    Err(format!(
        "{} (.ci/run installs one at {CI_NODE}; SPLITWAY_TEST_NODE may name another)",
        seen.join("; ")
    ))
}

#[test]
fn the_node_versions_that_honour_node_use_env_proxy() {
    for yes in ["22.21.0", "v22.23.1", "24.5.0", "24.22.3", "25.0.0"] {
        assert!(honours_env_proxy(yes), "{yes}");
    }
    for no in ["20.20.2", "22.20.0", "23.11.1", "24.4.1", "", "x"] {
        assert!(!honours_env_proxy(no), "{no}");
    }
}

#[tokio::test]
async fn node_reads_the_kubernetes_form() {
    let Some(node) = require("Node ≥ 22.21 or ≥ 24.5", node()) else {
        return;
    };
    let setup = setup().await;
    let mut env = kubernetes_env(&env_output(&setup, "kubernetes").await);
    let ca = ca_file(aws_net());
    env.push((
        "NODE_EXTRA_CA_CERTS".to_owned(),
        ca.to_str().expect("UTF-8 path").to_owned(),
    ));
    let out = run(&node, &["-e", NODE, &setup.api, &setup.healthz], &env).await;
    let agents = assert_answers("node fetch", &out);
    let context = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pair("node's global https/http agents", &agents, &context);
    setup.proxy.stop().await;
}
