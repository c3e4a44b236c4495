//! `deploy/lambda/`: the layer's config loads, the SAM template wires the layer, the proxy
//! variables and the VPC into the function and passes `cfn-lint`, and the build script packs
//! the layout Lambda expects (`extensions/splitway`, `splitway/splitway.toml`).
//!
//! `cfn-lint` and `unzip` are needed where `CI` is set (the CI script installs them: `pip install
//! cfn-lint`, `apt-get install zip unzip`); elsewhere a test without them is skipped with why.

use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value as Yaml;
use splitway::Config;
use tokio::process::Command;

use crate::support::bound::{HANG_SECS, within};
use crate::support::require;
use crate::support::tmp::TempFile;

const PROXY_URL: &str = "http://127.0.0.1:3128";
const LAYER_CONFIG: &str = "/opt/splitway/splitway.toml";

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn template() -> Yaml {
    let text = read("deploy/lambda/template.yaml");
    Yaml::deserialize(serde_norway::Deserializer::from_str(&text)).expect("template.yaml is plain YAML")
}

/// Whether `program` runs; where it does not, `CI` makes that a failure, elsewhere a skip
/// (support::require).
async fn tool(test: &str, program: &str, version_arg: &str) -> bool {
    let ran = Command::new(program).arg(version_arg).kill_on_drop(true).output();
    let ok =
        matches!(within(HANG_SECS, format!("{program} {version_arg}"), ran).await, Ok(out) if out.status.success());
    let found = if ok {
        Ok(())
    } else {
        Err(format!("`{program} {version_arg}` does not run"))
    };
    require(&format!("{program} (for {test})"), found).is_some()
}

#[test]
fn lambda_template_wires_layer_proxy_and_vpc_and_the_layer_config_loads() {
    let config = Config::from_toml(&read("deploy/lambda/splitway.toml"), "deploy/lambda/splitway.toml")
        .unwrap_or_else(|e| panic!("the layer's config: {e}"));
    assert_eq!(config.proxy.listen.to_string(), PROXY_URL.trim_start_matches("http://"));

    let t = template();
    let layer = &t["Resources"]["SplitwayLayer"];
    assert_eq!(layer["Type"].as_str(), Some("AWS::Serverless::LayerVersion"));
    assert_eq!(
        layer["Properties"]["ContentUri"].as_str(),
        Some("../../target/lambda/splitway-layer.zip"),
        "what build-layer.sh writes by default"
    );
    let f = &t["Resources"]["ApiCaller"]["Properties"];
    assert_eq!(f["Layers"][0]["Ref"].as_str(), Some("SplitwayLayer"));
    assert_eq!(f["VpcConfig"]["SubnetIds"]["Ref"].as_str(), Some("SubnetIds"));
    assert_eq!(
        f["VpcConfig"]["SecurityGroupIds"]["Ref"].as_str(),
        Some("SecurityGroupIds")
    );
    let env = &f["Environment"]["Variables"];
    for var in ["HTTPS_PROXY", "HTTP_PROXY"] {
        assert_eq!(env[var].as_str(), Some(PROXY_URL), "{var}");
    }
    assert_eq!(env["SPLITWAY_CONFIG"].as_str(), Some(LAYER_CONFIG));
    let no_proxy: Vec<&str> = env["NO_PROXY"].as_str().expect("NO_PROXY").split(',').collect();
    for entry in [
        "localhost",
        "127.0.0.1",
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
    ] {
        assert!(no_proxy.contains(&entry), "NO_PROXY lacks {entry}: {no_proxy:?}");
    }
}

#[tokio::test]
async fn lambda_template_passes_cfn_lint() {
    if !tool("lambda_template_passes_cfn_lint", "cfn-lint", "--version").await {
        return;
    }
    let lint = Command::new("cfn-lint")
        .arg(path("deploy/lambda/template.yaml"))
        .kill_on_drop(true)
        .output();
    let out = within(HANG_SECS * 3, "cfn-lint", lint).await.expect("run cfn-lint");
    assert!(
        out.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn lambda_layer_zip_has_the_extension_layout() {
    let test = "lambda_layer_zip_has_the_extension_layout";
    if !tool(test, "zip", "-v").await || !tool(test, "unzip", "-v").await {
        return;
    }
    // A small stand-in for the release binary that runs the real one (the script checks the
    // config with it), so the test packs kilobytes instead of a debug build.
    let bin = TempFile::new(
        "splitway",
        format!("#!/bin/sh\nexec {} \"$@\"\n", env!("CARGO_BIN_EXE_splitway")),
    );
    std::fs::set_permissions(&*bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let out_zip = bin.with_file_name("layer.zip");
    let build = Command::new(path("deploy/lambda/build-layer.sh"))
        .arg(path("deploy/lambda/splitway.toml"))
        .arg(&out_zip)
        .env("SPLITWAY_BIN", &*bin)
        .kill_on_drop(true)
        .output();
    let out = within(HANG_SECS * 3, "build-layer.sh", build)
        .await
        .expect("run build-layer.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        out_zip.display().to_string()
    );
    let list = Command::new("unzip")
        .arg("-Z")
        .arg(&out_zip)
        .kill_on_drop(true)
        .output();
    let list = within(HANG_SECS, "unzip -Z", list).await.expect("run unzip");
    let text = String::from_utf8_lossy(&list.stdout);
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let name = *fields.last()?;
            // Entry lines start with the permissions, e.g. `-rwxr-xr-x`.
            let entry = fields.len() >= 9 && fields[0].len() == 10 && fields[0].starts_with('-');
            entry.then_some((fields[0], name))
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("-rwxr-xr-x", "extensions/splitway"),
            ("-rw-r--r--", "splitway/splitway.toml")
        ],
        "{text}"
    );
    let _ = std::fs::remove_file(&out_zip);
}

#[tokio::test]
async fn lambda_layer_build_refuses_a_bad_config() {
    let bin = env!("CARGO_BIN_EXE_splitway");
    let bad = TempFile::new(
        "bad-layer.toml",
        "[proxy]\nlisten = \"nope\"\n[resolver.system]\nnameservers = [\"127.53.0.2\"]\nhosts_file = false\n",
    );
    let out_zip = bad.with_file_name("never.zip");
    let build = Command::new(path("deploy/lambda/build-layer.sh"))
        .arg(&*bad)
        .arg(&out_zip)
        .env("SPLITWAY_BIN", bin)
        .kill_on_drop(true)
        .output();
    let out = within(HANG_SECS * 3, "build-layer.sh", build)
        .await
        .expect("run build-layer.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("needs zip") && require::<()>("zip", Err(format!("build-layer.sh: {stderr}"))).is_none() {
        return;
    }
    assert!(!out.status.success(), "a bad config must fail the build");
    assert!(stderr.contains(&format!("error: {}:2", bad.display())), "{stderr}");
    assert!(!out_zip.exists(), "no zip for a bad config");
}
