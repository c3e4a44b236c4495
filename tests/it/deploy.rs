//! The deployment files say what the README says: the Kubernetes native sidecar, the ECS task
//! definition and the Dockerfile, read as data and checked field by field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use splitway::Config;

const PROXY_URL: &str = "http://127.0.0.1:3128";
const CONFIG_PATH: &str = "/etc/splitway/splitway.toml";
const BUILD_COMMAND: &str = "cargo build --release --locked";

/// The `NO_PROXY` entries `splitway env` prints for a proxy on `127.0.0.1:3128`: loopback and
/// the metadata and credential endpoints.
fn env_no_proxy() -> Vec<String> {
    let env = splitway::env::ClientEnv::new(&Config::embedded()).expect("client settings");
    let no_proxy = env.get("NO_PROXY").expect("NO_PROXY");
    no_proxy.split(',').map(str::to_owned).collect()
}

fn read(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every document of `deploy/kubernetes/sidecar.yaml`.
fn kubernetes_docs() -> Vec<Yaml> {
    kubernetes_docs_of("sidecar.yaml")
}

/// Every document of `deploy/kubernetes/FILE`.
fn kubernetes_docs_of(file: &str) -> Vec<Yaml> {
    let text = read(&format!("deploy/kubernetes/{file}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect();
    assert_eq!(found.len(), 1, "sidecar.yaml should hold exactly one {kind}");
    found[0]
}

fn named<'a>(list: &'a Yaml, name: &str) -> &'a Yaml {
    list.as_sequence()
        .unwrap_or_else(|| panic!("not a list where `{name}` should be: {list:?}"))
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no entry named `{name}`"))
}

fn yaml_env<'a>(container: &'a Yaml, var: &str) -> &'a str {
    named(&container["env"], var)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{var} has no string value"))
}

fn json_env<'a>(container: &'a Json, var: &str) -> &'a str {
    container["environment"]
        .as_array()
        .expect("environment is a list")
        .iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{} has no {var}", container["name"]))
}

fn json_container<'a>(task: &'a Json, name: &str) -> &'a Json {
    task["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions is a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container `{name}` in the task definition"))
}

fn no_proxy_has(no_proxy: &str, entry: &str) -> bool {
    no_proxy.split(',').any(|e| e.trim() == entry)
}

/// The config the image bakes in, which the ECS task runs.
fn image_config() -> Config {
    Config::from_toml(&read("config/splitway.toml"), "config/splitway.toml").expect("config/splitway.toml is valid")
}

/// The config inside the ConfigMap, parsed as splitway parses it.
fn configmap_config(docs: &[Yaml]) -> Config {
    let cm = kind(docs, "ConfigMap");
    let text = cm["data"]["splitway.toml"]
        .as_str()
        .expect("the ConfigMap holds splitway.toml");
    Config::from_toml(text, "sidecar.yaml").unwrap_or_else(|e| panic!("the ConfigMap's config: {e}"))
}

fn port(addr: SocketAddr) -> i64 {
    i64::from(addr.port())
}

#[test]
fn kubernetes_runs_splitway_as_a_native_sidecar_with_admin_probes() {
    let docs = kubernetes_docs();
    let pod = &kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let sidecar = named(&pod["initContainers"], "splitway");
    assert_eq!(
        sidecar["restartPolicy"].as_str(),
        Some("Always"),
        "a native sidecar needs restartPolicy: Always"
    );
    assert!(
        pod["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|c| c["name"].as_str() != Some("splitway")),
        "splitway belongs in initContainers, not containers"
    );
    let args: Vec<_> = sidecar["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args, ["run", "--config", CONFIG_PATH]);

    let config = configmap_config(&docs);
    let admin = config
        .admin
        .as_ref()
        .expect("the ConfigMap's config has an [admin] table")
        .listen;
    assert_eq!(admin, "0.0.0.0:9901".parse().unwrap(), "kubelet probes hit the pod IP");
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_i64(), Some(port(admin)), "{probe}");
    }

    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert!(
        sidecar["resources"]["requests"].is_mapping(),
        "the sidecar asks for resources"
    );

    // The ConfigMap reaches the path in `args`, as a directory mount so edits are reloaded.
    let mount = named(&sidecar["volumeMounts"], "splitway-config");
    assert_eq!(mount["mountPath"].as_str(), Some("/etc/splitway"));
    assert!(
        mount["subPath"].is_null(),
        "a subPath mount never sees ConfigMap updates"
    );
    let volume = named(&pod["volumes"], "splitway-config");
    let cm_name = kind(&docs, "ConfigMap")["metadata"]["name"].as_str();
    assert_eq!(volume["configMap"]["name"].as_str(), cm_name);
}

#[test]
fn kubernetes_app_reaches_the_proxy_and_the_pod_outlives_the_drain() {
    let docs = kubernetes_docs();
    let pod = &kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let config = configmap_config(&docs);
    assert_eq!(
        config.proxy.listen,
        "127.0.0.1:3128".parse().unwrap(),
        "the proxy stays pod-local"
    );

    let app = named(&pod["containers"], "app");
    assert_eq!(yaml_env(app, "HTTPS_PROXY"), PROXY_URL);
    assert_eq!(yaml_env(app, "HTTP_PROXY"), PROXY_URL);
    let no_proxy = yaml_env(app, "NO_PROXY");
    for entry in env_no_proxy() {
        assert!(
            no_proxy_has(no_proxy, &entry),
            "NO_PROXY lacks {entry} (`splitway env` has it): {no_proxy}"
        );
    }
    assert_eq!(yaml_env(app, "NODE_USE_ENV_PROXY"), "1");

    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds is set");
    assert!(
        Duration::from_secs(grace) > config.proxy.drain_timeout,
        "terminationGracePeriodSeconds {grace}s must exceed drain_timeout {:?}",
        config.proxy.drain_timeout
    );
}

#[test]
fn ecs_task_waits_for_a_healthy_splitway_and_stops_it_after_the_drain() {
    let task: Json = serde_json::from_str(&read("deploy/ecs/task-definition.json")).expect("valid JSON");
    assert_eq!(task["networkMode"], "awsvpc");
    assert!(
        task["requiresCompatibilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "FARGATE")
    );

    let splitway = json_container(&task, "splitway");
    assert_eq!(splitway["essential"], true);
    let command: Vec<_> = splitway["healthCheck"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(
        matches!(command[..], ["CMD", bin, "health"] if bin.ends_with("/splitway")),
        "the health check must be [\"CMD\", \".../splitway\", \"health\"] (exec form: no shell): {command:?}"
    );
    assert_eq!(json_env(splitway, "SPLITWAY_CONFIG"), CONFIG_PATH);

    // `splitway health` asks 127.0.0.1:9901 by default: the image's config must serve there.
    let config = image_config();
    let admin = config
        .admin
        .as_ref()
        .expect("config/splitway.toml has an [admin] table")
        .listen;
    assert_eq!(admin.port(), 9901);
    let stop = splitway["stopTimeout"].as_u64().expect("splitway has a stopTimeout");
    assert!(
        Duration::from_secs(stop) > config.proxy.drain_timeout,
        "stopTimeout {stop}s must exceed drain_timeout {:?}",
        config.proxy.drain_timeout
    );

    let app = json_container(&task, "app");
    let depends = app["dependsOn"].as_array().expect("app has dependsOn");
    assert!(
        depends
            .iter()
            .any(|d| d["containerName"] == "splitway" && d["condition"] == "HEALTHY"),
        "app must start after splitway is HEALTHY: {depends:?}"
    );
    assert_eq!(json_env(app, "HTTPS_PROXY"), PROXY_URL);
    assert_eq!(json_env(app, "HTTP_PROXY"), PROXY_URL);
    let no_proxy = json_env(app, "NO_PROXY");
    for entry in env_no_proxy() {
        assert!(
            no_proxy_has(no_proxy, &entry),
            "NO_PROXY lacks {entry} (`splitway env` has it): {no_proxy}"
        );
    }
}

/// The one non-comment line of `text` that holds the release build command.
fn build_line(text: &str, file: &str) -> String {
    let lines: Vec<_> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains(BUILD_COMMAND))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{file} should run `{BUILD_COMMAND}` exactly once: {lines:?}"
    );
    lines[0].trim_start_matches("RUN ").trim().to_owned()
}

#[test]
fn dockerfile_builds_like_ci_and_runs_unprivileged_with_a_shell_free_health_check() {
    let dockerfile = read("Dockerfile");
    // The Dockerfile builds the binary once; .ci/run replays its build stage (COPY list into a
    // clean directory, RUN lines verbatim), so the command is the Dockerfile's by construction.
    build_line(&dockerfile, "Dockerfile");
    let ci = read(".ci/run");
    assert!(
        ci.lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("Dockerfile") && l.contains("sed")),
        ".ci/run should replay the Dockerfile's build stage"
    );

    let instructions: Vec<_> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let last = |keyword: &str| -> String {
        instructions
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(keyword))
            .unwrap_or_else(|| panic!("the Dockerfile has no {keyword}"))
            .trim()
            .to_owned()
    };
    let user = last("USER ");
    let uid = user.split(':').next().unwrap();
    assert!(
        !["root", "0", ""].contains(&uid),
        "the image must not run as root: USER {user}"
    );
    let mut exposed: Vec<_> = last("EXPOSE ").split_whitespace().map(str::to_owned).collect();
    exposed.sort();
    assert_eq!(exposed, ["3128", "9901"]);
    assert!(
        dockerfile.contains(r#"splitway", "health"]"#),
        "HEALTHCHECK runs `splitway health` in exec form"
    );
    assert!(instructions.iter().any(|l| l.starts_with("HEALTHCHECK ")));
    assert_eq!(last("ENV SPLITWAY_CONFIG="), CONFIG_PATH);
    assert_eq!(last("ENTRYPOINT "), r#"["/usr/local/bin/splitway"]"#);
}

fn strings(list: &Yaml) -> Vec<&str> {
    list.as_sequence()
        .map_or(vec![], |l| l.iter().filter_map(Yaml::as_str).collect())
}

#[test]
fn kubernetes_transparent_variant_captures_in_an_init_container_and_excludes_the_sidecar_uid() {
    let docs = kubernetes_docs_of("transparent.yaml");
    let pod = &kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let config = configmap_config(&docs);
    let t = config
        .transparent
        .as_ref()
        .expect("the ConfigMap's config has [transparent]");
    assert_eq!(t.mark, None, "the sidecar has no NET_ADMIN: it cannot set SO_MARK");

    let init = pod["initContainers"].as_sequence().expect("initContainers");
    assert_eq!(
        init[0]["name"].as_str(),
        Some("splitway-iptables"),
        "the rules go in first"
    );
    let rules = &init[0];
    assert!(
        rules["restartPolicy"].is_null(),
        "the rules container runs to completion"
    );
    assert_eq!(
        strings(&rules["args"]),
        ["iptables", "--apply", "--config", CONFIG_PATH]
    );
    assert!(strings(&rules["securityContext"]["capabilities"]["add"]).contains(&"NET_ADMIN"));
    assert_eq!(rules["securityContext"]["runAsUser"].as_i64(), Some(0));
    assert_eq!(
        named(&rules["volumeMounts"], "splitway-config")["mountPath"].as_str(),
        Some("/etc/splitway")
    );

    let sidecar = named(&pod["initContainers"], "splitway");
    assert_eq!(sidecar["restartPolicy"].as_str(), Some("Always"));
    let sc = &sidecar["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(
        sc["capabilities"]["add"].is_null(),
        "the sidecar runs without capabilities"
    );
    assert_eq!(
        sc["runAsUser"].as_i64(),
        t.exclude_uid.map(i64::from),
        "exclude_uid must be the sidecar's UID, or its own connections loop"
    );
    let app = named(&pod["containers"], "app");
    assert!(app["env"].is_null(), "the app needs no proxy variables");
    assert_ne!(app["securityContext"]["runAsUser"].as_i64(), sc["runAsUser"].as_i64());

    let plan = splitway::iptables::script(&splitway::iptables::plan(&config, None).expect("rules for the ConfigMap"));
    assert!(plan.contains("-m owner --uid-owner 65532 -j RETURN"), "{plan}");
    assert!(plan.contains("--dports 443 -j REDIRECT --to-ports 15001"), "{plan}");
    let volume = named(&pod["volumes"], "splitway-config");
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        kind(&docs, "ConfigMap")["metadata"]["name"].as_str()
    );
}
