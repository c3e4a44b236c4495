//! The shell form, sourced by `sh`, read by a Go program's `net/http` default client.

use std::path::{Path, PathBuf};

use super::{assert_answers, env_output, run, setup};
use crate::support::client::{ca_file, client_or_skip, runs};
use crate::support::tmp::TempDir;
use crate::support::*;

/// Calls its first two arguments with `http.Get` (the default client, so
/// `http.ProxyFromEnvironment`) and prints the answers, then prints Go's own proxy decision
/// for each further URL: `URL direct` or `URL via PROXY`. DNS lookups fail: a client that went
/// around the proxy must not reach the machine's resolver.
const GO: &str = r#"package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func get(url string) (int, string) {
	r, err := http.Get(url)
	if err != nil {
		fail(err)
	}
	defer r.Body.Close()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fail(err)
	}
	return r.StatusCode, strings.TrimSpace(string(body))
}

func main() {
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("the test client must not resolve")
	}}
	http.DefaultClient.Timeout = 20 * time.Second
	_, api := get(os.Args[1])
	fmt.Println(api)
	code, health := get(os.Args[2])
	fmt.Println(code, health)
	for _, url := range os.Args[3:] {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			fail(err)
		}
		proxy, err := http.ProxyFromEnvironment(req)
		switch {
		case err != nil:
			fail(err)
		case proxy == nil:
			fmt.Println(url, "direct")
		default:
			fmt.Println(url, "via", proxy)
		}
	}
}
"#;

/// The metadata and credential endpoints `splitway env` puts in `NO_PROXY`. The admin listener
/// is on loopback, which Go never proxies whatever `NO_PROXY` says, so these show that Go read
/// the list.
const METADATA: [&str; 5] = [
    "http://169.254.169.254/latest/api/token",
    "http://169.254.170.2/v2/credentials",
    "http://169.254.170.23/v1/credentials",
    "http://[fd00:ec2::254]/latest/api/token",
    "http://[fd00:ec2::23]/v1/credentials",
];

/// A link-local address not in `NO_PROXY` (the VPC's Route 53 Resolver): Go sends it to the
/// proxy, so the endpoints above are direct because of the list, not because of their kind.
const NOT_LISTED: &str = "http://169.254.169.253/";

/// Builds `source` into `dir` with the go tool, its build cache and module path under cargo's
/// scratch directory for integration tests (kept between runs, so only the first build of a
/// target directory compiles the standard library), and nothing fetched.
async fn go_build(dir: &Path, source: &Path) -> PathBuf {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    let binary = dir.join("client");
    let env = [
        ("GOCACHE", scratch.join("cache")),
        ("GOPATH", scratch.join("path")),
        // Whatever else the go tool keeps (telemetry, config) stays there too.
        ("HOME", scratch.join("home")),
        ("XDG_CONFIG_HOME", scratch.join("home")),
        ("GOPROXY", "off".into()),
        ("GOTOOLCHAIN", "local".into()),
        // The pure-Go resolver and no C toolchain; the client resolves nothing anyway.
        ("CGO_ENABLED", "0".into()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_str().expect("UTF-8 path").to_owned()));
    let args = ["build", "-o", path_str(&binary), path_str(source)];
    let out = run("go", &args, &env).await;
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[tokio::test]
async fn go_net_http_reads_the_shell_form() {
    if !client_or_skip("go", runs("go", &["version"]), "golang-go") {
        return;
    }
    let setup = setup().await;
    let dir = TempDir::new("env-go");
    let client = go_build(&dir, &dir.write("client.go", GO)).await;
    let env = dir.write("env.sh", env_output(&setup, "shell").await);
    let mut urls = vec![setup.api.clone(), NOT_LISTED.to_owned()];
    urls.extend(METADATA.map(str::to_owned));
    let script = format!(
        ". '{}'\nexec '{}' '{}' '{}' {}\n",
        path_str(&env),
        path_str(&client),
        setup.api,
        setup.healthz,
        urls.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(" ")
    );
    let script = dir.write("client.sh", script);
    // Go reads its trust store from SSL_CERT_FILE on Linux.
    let ca = ca_file(aws_net());
    let trust = [("SSL_CERT_FILE".to_owned(), path_str(&ca).to_owned())];
    let out = run("sh", &[path_str(&script)], &trust).await;
    let decisions = assert_answers("go", &out);
    let via = format!("via http://{}", setup.proxy.addr);
    let mut expected = vec![format!("{} {via}", setup.api), format!("{NOT_LISTED} {via}")];
    expected.extend(METADATA.map(|u| format!("{u} direct")));
    assert_eq!(decisions, expected, "Go's proxy decisions");
    setup.proxy.stop().await;
}
