//! Rules of the house checked over the source files, so a change that breaks one fails here
//! instead of waiting for a reviewer: what a route does is decided in one place, and every
//! outbound connection goes through the one connector.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source files below `src/` (relative paths) whose text contains `needle`, unit tests left out.
fn files_containing(needle: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found the sources: {files:?}");
    files
        .into_iter()
        .filter(|f| !f.ends_with("tests.rs") && !f.components().any(|c| c.as_os_str() == "tests"))
        .filter(|f| contains_token(&std::fs::read_to_string(f).expect("read source"), needle))
        .map(|f| f.strip_prefix(root).expect("below the root").display().to_string())
        .collect()
}

/// `needle` in `text` where it does not continue an identifier (`Action::` but not
/// `ReportAction::`).
fn contains_token(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(i, _)| {
        !text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn only_the_config_route_table_and_dial_plan_read_a_routes_action() {
    let mut found = files_containing("Action::");
    found.sort();
    let allowed = |f: &str| f.starts_with("src/config/") || f == "src/routes.rs" || f == "src/upstream/plan.rs";
    let stray: Vec<_> = found.iter().filter(|f| !allowed(f)).collect();
    assert!(
        stray.is_empty(),
        "a route's action is decided in src/upstream/plan.rs (Route::plan); these files read it too: {stray:?}"
    );
    assert!(found.contains(&"src/upstream/plan.rs".to_owned()), "{found:?}");
}

#[test]
fn only_the_connector_opens_outbound_connections() {
    let mut found = files_containing("TcpStream::connect");
    found.sort();
    // `splitway health` is a client of the proxy's own admin port, not an upstream connection;
    // hickory/tls.rs re-runs the handshake to a configured tls:// or https:// nameserver to say
    // why it failed: the resolver's own transport, like hickory's sockets, not an upstream.
    // upstream/socket.rs makes the connector's sockets (with SO_MARK when [transparent] mark
    // is set), and only the connector calls it. lambda.rs calls the Lambda Extensions API, the
    // sandbox's own control plane on a local address, not an upstream.
    assert_eq!(
        found,
        [
            "src/admin.rs",
            "src/lambda.rs",
            "src/upstream/dns/hickory/tls.rs",
            "src/upstream/socket.rs"
        ],
        "outbound connections go through upstream::connect::Connector"
    );
    assert_eq!(
        files_containing("socket::connect("),
        ["src/upstream/connect.rs"],
        "only the connector opens sockets through upstream/socket.rs"
    );
}

/// Every line of the non-test sources below `src/` outside `skip`, with its file.
fn lines_outside(skip: &[&str]) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).expect("below the root").display().to_string();
        if rel.ends_with("tests.rs") || rel.contains("/tests/") || skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        out.extend(text.lines().map(|l| (rel.clone(), l.to_owned())));
    }
    out
}

#[test]
fn layers_point_one_way() {
    // server -> proxy -> upstream: the proxy never reaches back into the server, and nothing
    // below the proxy (upstream, runtime, config, routes, conn) reaches up into it.
    let rules: &[(&str, &str)] = &[
        ("src/proxy", "crate::server"),
        ("src/upstream", "crate::proxy"),
        ("src/upstream", "crate::server"),
        ("src/runtime.rs", "crate::proxy"),
        ("src/runtime.rs", "crate::admin"),
        ("src/config", "crate::proxy"),
        ("src/conn", "crate::server"),
        ("src/conn", "crate::proxy"),
    ];
    let lines = lines_outside(&[]);
    for (below, above) in rules {
        let stray: Vec<_> = lines
            .iter()
            .filter(|(f, l)| f.starts_with(below) && l.contains(above))
            .collect();
        assert!(stray.is_empty(), "{below} must not use {above}: {stray:?}");
    }
}

#[test]
fn the_load_bench_contenders_know_nothing_of_the_workloads() {
    // proxies.rs starts and configures the contenders; the workloads (and the reports of
    // them) use it, never the other way round.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/load/proxies.rs");
    let text = std::fs::read_to_string(&path).expect("read benches/load/proxies.rs");
    let workloads = ["distinct", "idle", "workloads", "report", "syscalls", "tunnels"];
    let stray: Vec<&str> = text
        .lines()
        .filter(|l| {
            workloads
                .iter()
                .any(|w| l.contains(&format!("crate::{w}")) || l.contains(&format!("super::{w}")))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "benches/load/proxies.rs reaches into a workload: {stray:?}"
    );
}

#[test]
fn only_metrics_defines_label_values() {
    // Recording methods take label enums from metrics/; a string literal beside one of these
    // calls would be a label value defined somewhere else.
    let calls = [".request(", ".sni_rejected(", ".report_difference(", ".tunnel_closed("];
    let stray: Vec<_> = lines_outside(&["src/metrics"])
        .into_iter()
        .filter(|(_, l)| calls.iter().any(|c| l.contains(c)) && l.contains('"'))
        .collect();
    assert!(stray.is_empty(), "label values belong in src/metrics/: {stray:?}");
}

/// The string literals of a Rust source (plain and raw), each with its line: enough of a
/// lexer to tell a literal from code and comments.
fn string_literals(src: &str) -> Vec<(usize, String)> {
    let (b, mut i, mut out) = (src.as_bytes(), 0, Vec::new());
    let line = |at: usize| src[..at].matches('\n').count() + 1;
    while i < b.len() {
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if b[i] == b'r' && !ident_before && matches!(b.get(i + 1), Some(b'#' | b'"')) {
            let hashes = src[i + 1..].bytes().take_while(|&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let start = i + 2 + hashes;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = src[start..].find(&close).map_or(b.len(), |n| start + n);
            out.push((line(i), src[start..end].to_owned()));
            i = end + close.len();
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            out.push((line(i), src[i + 1..j.min(b.len())].to_owned()));
            i = j + 1;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i = src[i + 2..].find('\'').map_or(b.len(), |n| i + 3 + n);
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn every_test_config_brings_its_own_system_resolver() {
    // A config without `[resolver.system]` nameservers makes the proxy read this machine's
    // /etc/resolv.conf. The builder (support/config.rs) adds one by default and every proxy a
    // test starts is checked at start (support::config::assert_hermetic); this catches the
    // configs written out by hand, including those only `splitway check` or `explain` reads.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("tests"), &mut files);
    assert!(files.len() > 20, "found the tests: {files:?}");
    // Files whose hand-written configs may leave [resolver.system] out, and why.
    let allowed = [(
        "tests/it/security.rs",
        "runs the binary in a namespace whose resolv.conf the test writes (/etc/netns/NAME), \
         its search domain being the point",
    )];
    let mut configs = 0;
    let mut stray = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).expect("below the root").display().to_string();
        let exempt = allowed.iter().any(|(file, _)| *file == rel);
        if exempt || rel == "tests/it/support/config.rs" || rel == "tests/it/source_rules.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read test source");
        for (line, lit) in string_literals(&text) {
            if !lit.trim_start().starts_with("[proxy]") {
                continue;
            }
            configs += 1;
            if !(lit.contains("[resolver.system]") && lit.contains("hosts_file = false")) {
                stray.push(format!("{rel}:{line}"));
            }
        }
    }
    assert!(configs >= 3, "found the hand-written configs ({configs})");
    assert!(
        stray.is_empty(),
        "test configs without their own [resolver.system] (nameservers and hosts_file = false): {stray:?}"
    );
}

#[test]
fn string_literals_are_told_from_code() {
    let src = "let a = \"[proxy]\"; // \"not this\"\nlet c = '\"'; let r = r#\"raw \"q\"\"#; 'a: loop {}\n";
    assert_eq!(
        string_literals(src),
        [(1, "[proxy]".to_owned()), (2, "raw \"q\"".to_owned())],
        "{src}"
    );
}

#[test]
fn every_skip_goes_through_support_require() {
    // A test that returns early with a message of its own passes where CI cannot see it;
    // support::require prints the same message locally and fails under CI.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("tests"), &mut files);
    let mut stray = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).expect("below the root").display().to_string();
        if rel == "tests/it/support/require.rs" || rel == "tests/it/source_rules.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read test source");
        for (line, lit) in string_literals(&text) {
            if lit.to_ascii_lowercase().contains("skip") && !lit.contains("--skip") {
                stray.push(format!("{rel}:{line}: {lit:?}"));
            }
        }
    }
    assert!(
        stray.is_empty(),
        "skips that CI cannot see (use support::require): {stray:?}"
    );
}
