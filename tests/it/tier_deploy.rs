//! The shared egress tier's deployment recipes: `deploy/kubernetes/egress/` passes
//! `kubernetes-validate --strict` and wires the tier as the docs say (PROXY protocol on both
//! sides, /healthz checks, a grace period and deregistration delay above the drain, the HPA on
//! a metric splitway serves); `deploy/ecs/egress.yaml` and `egress-consumer.yaml` pass
//! `cfn-lint` and agree with `deploy/ecs/egress.toml`.
//!
//! `kubernetes-validate` and `cfn-lint` are needed where `CI` is set (`pip install
//! kubernetes-validate cfn-lint`); elsewhere a test without them is skipped with why.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value as Yaml;
use splitway::Config;
use splitway::config::ProxyProtocol;
use tokio::process::Command;

use crate::support::bound::{HANG_SECS, within};
use crate::support::require;

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The one document of `deploy/kubernetes/egress/FILE`.
fn k8s(file: &str) -> Yaml {
    let text = read(&format!("deploy/kubernetes/egress/{file}"));
    Yaml::deserialize(serde_norway::Deserializer::from_str(&text)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn secs(d: Duration) -> i64 {
    d.as_secs() as i64
}

fn tier_config() -> Config {
    let map = k8s("configmap.yaml");
    let toml = map["data"]["splitway.toml"]
        .as_str()
        .expect("splitway.toml in the ConfigMap");
    Config::from_toml(toml, "configmap.yaml").unwrap_or_else(|e| panic!("the ConfigMap's config: {e}"))
}

#[test]
fn tier_kubernetes_recipe_drains_behind_an_nlb_with_proxy_protocol() {
    let config = tier_config();
    let p = &config.proxy;
    assert_eq!(p.proxy_protocol, ProxyProtocol::Required);
    assert!(!p.drain_delay.is_zero() && p.tcp_keepalive.is_some_and(|k| k < Duration::from_secs(350)));
    let admin_port = i64::from(config.admin.as_ref().expect("[admin]").listen.port());
    let pod = &k8s("deployment.yaml")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("preStop sleep");
    let grace = pod["terminationGracePeriodSeconds"].as_i64().expect("grace period");
    assert!(
        grace > pre_stop + secs(p.drain_delay) + secs(p.drain_timeout),
        "grace {grace}"
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let svc = k8s("service.yaml");
    let a = &svc["metadata"]["annotations"];
    let note = |k: &str| {
        a[format!("service.beta.kubernetes.io/aws-load-balancer-{k}").as_str()]
            .as_str()
            .unwrap_or("")
    };
    assert_eq!(
        (note("scheme"), note("nlb-target-type"), note("proxy-protocol")),
        ("internal", "ip", "*")
    );
    assert_eq!(
        (note("healthcheck-path"), note("healthcheck-port")),
        ("/healthz", &*admin_port.to_string())
    );
    let attrs = note("target-group-attributes");
    assert!(attrs.contains("preserve_client_ip.enabled=false"), "{attrs}");
    let delay: i64 = attrs
        .split(',')
        .find_map(|kv| kv.strip_prefix("deregistration_delay.timeout_seconds="))
        .and_then(|v| v.parse().ok())
        .expect("deregistration delay");
    assert!(
        delay >= secs(p.drain_delay) + secs(p.drain_timeout),
        "deregistration delay {delay}"
    );
    let hpa = k8s("hpa.yaml");
    let metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
        .as_str()
        .expect("Pods metric");
    let served = splitway::metrics::Metrics::new();
    assert!(
        served.families().iter().any(|f| f == metric),
        "the HPA scales on {metric}, which splitway serves"
    );
    assert_eq!(k8s("pdb.yaml")["spec"]["maxUnavailable"], 1);
    let ports = &k8s("networkpolicy.yaml")["spec"]["ingress"][0]["ports"];
    assert_eq!(
        (ports[0]["port"].as_i64(), ports[1]["port"].as_i64()),
        (Some(3128), Some(admin_port))
    );
}

#[test]
fn tier_ecs_recipe_agrees_with_its_config() {
    let config = Config::from_toml(&read("deploy/ecs/egress.toml"), "deploy/ecs/egress.toml")
        .unwrap_or_else(|e| panic!("egress.toml: {e}"));
    let p = &config.proxy;
    assert_eq!((p.proxy_protocol, p.listen.port()), (ProxyProtocol::Required, 3128));
    let text = read("deploy/ecs/egress.yaml");
    // CloudFormation's short tags (!Ref …) are not plain YAML: read the values by text.
    let value = |key: &str| {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("{key}"));
        line.split_once(':')
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .expect("value")
    };
    assert_eq!(value("HealthCheckPath:"), "/healthz");
    assert_eq!(
        value("HealthCheckPort:"),
        config.admin.as_ref().expect("[admin]").listen.port().to_string()
    );
    let stop: u64 = value("StopTimeout:").parse().expect("StopTimeout");
    assert!(
        stop > p.drain_delay.as_secs() + p.drain_timeout.as_secs() && stop <= 120,
        "StopTimeout {stop}"
    );
    for attr in [
        "proxy_protocol_v2.enabled",
        "preserve_client_ip.enabled",
        "deregistration_delay.timeout_seconds",
    ] {
        assert!(text.contains(&format!("Key: {attr}")), "target group attribute {attr}");
    }
    assert!(text.contains("AWS::EC2::VPCEndpointService") && text.contains("TargetTrackingScaling"));
}

/// Whether `program` runs; where it does not, the test is skipped, or fails under `CI`
/// (support::require).
fn tool(program: &str) -> bool {
    let found = require::tool(program, "--version").map_err(|why| format!("{why} (pip install {program})"));
    require::require(program, found).is_some()
}

async fn passes(program: &str, args: &[&str], files: &[PathBuf]) {
    let run = Command::new(program).args(args).args(files).kill_on_drop(true).output();
    let out = within(HANG_SECS * 3, program, run)
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tier_kubernetes_recipe_passes_kubernetes_validate() {
    if !tool("kubernetes-validate") {
        return;
    }
    let dir = path("deploy/kubernetes/egress");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes/egress")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    // 1.30: the oldest release with the preStop sleep action on by default.
    passes("kubernetes-validate", &["--strict", "--quiet", "-k", "1.30.0"], &files).await;
}

#[tokio::test]
async fn tier_ecs_recipe_passes_cfn_lint() {
    if !tool("cfn-lint") {
        return;
    }
    let files = [path("deploy/ecs/egress.yaml"), path("deploy/ecs/egress-consumer.yaml")];
    passes("cfn-lint", &[], &files).await;
}
