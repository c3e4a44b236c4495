//! The reference pages cannot drift from the code: every config key the parsers accept is a
//! row of `docs/configuration.md` (and every row is a real key), every metric family is named
//! in `docs/operations.md` (and nothing else is), every `Proxy-Status` error type has a cause
//! and a fix in `docs/troubleshooting.md`.

use std::collections::{BTreeMap, BTreeSet};

use crate::docs::doc_text;
use crate::support::client::admin_get;
use crate::support::config::ConfigBuilder;
use crate::support::proxy::TestProxy;
use crate::support::*;

/// `(table, key)` rows of the `| Key | Default | Example | Meaning |` tables of
/// `docs/configuration.md`, each under the last heading that names a table (`## \`[proxy]\``).
fn documented_keys(text: &str) -> BTreeMap<(String, String), String> {
    let mut rows = BTreeMap::new();
    let (mut table, mut in_keys) = (None::<String>, false);
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            table = line.split('`').nth(1).filter(|t| t.starts_with('[')).map(str::to_owned);
            in_keys = false;
        } else if line.starts_with("| Key | Default | Example | Meaning |") {
            in_keys = true;
        } else if in_keys && line.starts_with("| `") {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            let table = table
                .clone()
                .unwrap_or_else(|| panic!("configuration.md:{}: key outside a table section", n + 1));
            assert!(
                cells.len() == 4 && cells[1..].iter().all(|c| !c.is_empty()),
                "configuration.md:{}: a key row needs a default, an example and a meaning: {line}",
                n + 1
            );
            rows.insert(
                (table, cells[0].trim_matches('`').to_owned()),
                format!("configuration.md:{}", n + 1),
            );
        } else if !line.starts_with('|') {
            in_keys = false;
        }
    }
    rows
}

#[test]
fn every_config_key_is_in_the_reference_and_nothing_else_is() {
    let code: BTreeSet<(String, String)> = splitway::config::schema::keys()
        .into_iter()
        .map(|(t, k)| (t.to_owned(), k))
        .collect();
    assert!(code.len() >= 40, "the schema walk found only {code:?}");
    let documented = documented_keys(&doc_text("docs/configuration.md"));
    let missing: Vec<String> = code
        .iter()
        .filter(|k| !documented.contains_key(*k))
        .map(|(t, k)| format!("{t} {k}"))
        .collect();
    assert!(
        missing.is_empty(),
        "config keys the code accepts but docs/configuration.md does not list (add a row \
         `| \\`key\\` | default | example | meaning |` under the table's heading): {missing:#?}"
    );
    let unknown: Vec<String> = documented
        .iter()
        .filter(|(k, _)| !code.contains(*k))
        .map(|((t, k), at)| format!("{at}: {t} {k}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the code does not accept: {unknown:#?}"
    );
}

/// The family names a Prometheus text serves (`# TYPE` lines).
fn served_names(text: &str) -> BTreeSet<String> {
    let types = text.lines().filter_map(|l| l.strip_prefix("# TYPE "));
    types
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn every_metric_is_in_the_operations_page_and_nothing_else_is() {
    let net = aws_net();
    let proxy = TestProxy::start(&ConfigBuilder::scenario(net, proxy::PrivateDns::On).admin().build()).await;
    let admin = proxy.admin.expect("admin listener");
    let (status, text) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    // Every family registered, from the registrations themselves (a family without a series is
    // not in the text yet), and checked against what the scrape does serve.
    let families: BTreeSet<String> = splitway::metrics::Metrics::new().families().iter().cloned().collect();
    assert!(families.len() >= 15, "only {families:?}");
    let served = served_names(&text);
    assert!(!served.is_empty(), "no family in:\n{text}");
    let unregistered: Vec<&String> = served.difference(&families).collect();
    assert!(
        unregistered.is_empty(),
        "/metrics serves families Metrics::families() does not list: {unregistered:?}"
    );
    let page = doc_text("docs/operations.md");
    let missing: Vec<&String> = families.iter().filter(|m| !page.contains(&format!("`{m}`"))).collect();
    assert!(
        missing.is_empty(),
        "metrics /metrics serves that docs/operations.md does not name: {missing:?}"
    );
    let named: BTreeSet<String> = page
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.len() > "splitway_".len() && s.starts_with("splitway_"))
        .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect();
    let unknown: Vec<&String> = named.difference(&families).collect();
    assert!(
        unknown.is_empty(),
        "docs/operations.md names metrics splitway does not have: {unknown:?}"
    );
    proxy.stop().await;
}

/// The tokens an enum's `as_str` returns, read from the source of `src/metrics/values.rs`
/// (where every closed label set lives): `=> "token"` arms from `impl NAME` to its end.
fn tokens_of(name: &str) -> Vec<String> {
    let source = doc_text("src/metrics/values.rs");
    let start = source
        .find(&format!("impl {name} {{"))
        .unwrap_or_else(|| panic!("no `impl {name}` in src/metrics/values.rs"));
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
    let tokens: Vec<String> = body
        .split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(tokens.len() >= 5, "only {tokens:?} found for {name}");
    tokens
}

#[test]
fn every_error_type_is_in_troubleshooting_and_every_sni_reason_in_operations() {
    let troubleshooting = doc_text("docs/troubleshooting.md");
    for token in tokens_of("ErrorType") {
        assert!(
            troubleshooting.contains(&format!("| `{token}`")) || troubleshooting.contains(&format!("/ `{token}`")),
            "Proxy-Status error `{token}` has no row (cause and fix) in docs/troubleshooting.md"
        );
    }
    let operations = doc_text("docs/operations.md");
    for token in tokens_of("SniReason") {
        assert!(
            operations.contains(&format!("`{token}`")),
            "SNI rejection reason `{token}` is not in docs/operations.md"
        );
    }
}
