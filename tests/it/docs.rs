//! The documentation cannot rot: every TOML example in `README.md` and `docs/*.md` passes
//! `splitway check` (or is marked `<!-- fragment -->` and is at least valid TOML), every config
//! key the parsers accept is in `docs/configuration.md` (and nothing else is), every metric
//! `/metrics` serves is in `docs/operations.md`, and every `splitway` command and flag shown
//! exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::bin;
use crate::support::client::admin_get;
use crate::support::config::ConfigBuilder;
use crate::support::proxy::TestProxy;
use crate::support::tmp::TempFile;
use crate::support::*;

/// The marker line that exempts the code block after it from `splitway check`.
const FRAGMENT: &str = "<!-- fragment";

/// Secrets the examples name (`via_password_env`), given to `splitway check`.
const EXAMPLE_ENV: &[(&str, &str)] = &[("EGRESS_PASSWORD", "example-password")];

/// One fenced code block: where it starts, its language, whether it is a fragment, its text.
struct Block {
    at: String,
    lang: String,
    fragment: bool,
    text: String,
}

/// `README.md` and every `docs/*.md`, with their text.
fn doc_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("read docs/");
    let mut pages: Vec<PathBuf> = docs
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 8, "docs/ has only {pages:?}");
    paths.extend(pages);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

fn doc_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every fenced code block of a markdown text.
fn blocks(path: &Path, text: &str) -> Vec<Block> {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(lang) = line.strip_prefix("```") {
            let start = i;
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_start().starts_with("```"))
                .unwrap_or_else(|| panic!("{name}:{}: code block never closed", i + 1));
            let fragment = start > 0 && lines[start - 1].trim_start().starts_with(FRAGMENT);
            out.push(Block {
                at: format!("{name}:{}", start + 1),
                lang: lang.trim().to_owned(),
                fragment,
                text: lines[start + 1..end].join("\n") + "\n",
            });
            i = end;
        }
        i += 1;
    }
    out
}

#[tokio::test]
async fn every_toml_example_passes_splitway_check() {
    let mut checked = 0;
    for (path, text) in doc_files() {
        for block in blocks(&path, &text).into_iter().filter(|b| b.lang == "toml") {
            if block.fragment {
                if let Err(e) = block.text.parse::<toml::Table>() {
                    panic!("{} (a fragment) is not valid TOML: {e}\n{}", block.at, block.text);
                }
                continue;
            }
            let file = TempFile::new("example.toml", &block.text);
            let out = bin::run_with_env(&["check", "--config", file.arg()], EXAMPLE_ENV).await;
            assert!(
                out.status.success(),
                "{}: `splitway check` refuses this example (mark it `{FRAGMENT} -->` if it is one):\n{}\n{}",
                block.at,
                String::from_utf8_lossy(&out.stderr),
                block.text
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} TOML examples checked");
}

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

/// A markdown text without its fenced code blocks.
fn without_blocks(text: &str) -> String {
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
}

/// The inline code spans of a markdown text, fenced blocks left out.
fn code_spans(text: &str) -> Vec<String> {
    let prose = without_blocks(text);
    prose.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// `splitway CMD` and the `--flags` after it, from every code span and code block; each flag
/// with the page that shows it.
fn commands_shown() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut shown: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (path, text) in doc_files() {
        let page = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let mut code = code_spans(&text);
        code.extend(
            blocks(&path, &text)
                .into_iter()
                .flat_map(|b| b.text.lines().map(str::to_owned).collect::<Vec<_>>()),
        );
        for snippet in code {
            let mut rest = snippet.as_str();
            while let Some(i) = rest.find("splitway ") {
                let after = &rest[i + "splitway ".len()..];
                let preceded_ok = rest[..i]
                    .chars()
                    .last()
                    .is_none_or(|c| matches!(c, ' ' | '/' | '(' | '"' | '\t'));
                rest = after;
                let cmd: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect();
                if !preceded_ok || cmd.is_empty() || cmd.starts_with('-') {
                    continue;
                }
                let words = after.split(['|', ')', '"', '`', ';']).next().unwrap_or_default();
                let flags = words
                    .split_whitespace()
                    .filter_map(|w| w.trim_start_matches('[').strip_prefix("--"))
                    .map(|f| f.split(['=', ']', ' ']).next().unwrap_or_default().to_owned())
                    .filter(|f| !f.is_empty());
                let entry = shown.entry(cmd).or_default();
                entry.entry(String::new()).or_insert_with(|| page.clone());
                for flag in flags {
                    entry.entry(flag).or_insert_with(|| page.clone());
                }
            }
        }
    }
    shown
}

#[tokio::test]
async fn every_command_and_flag_shown_exists() {
    let shown = commands_shown();
    for expected in ["run", "check", "explain", "env", "iptables", "health"] {
        assert!(
            shown.contains_key(expected),
            "no doc shows `splitway {expected}`: {shown:?}"
        );
    }
    for (cmd, flags) in &shown {
        let out = bin::run(&[cmd, "--help"]).await;
        let help = String::from_utf8_lossy(&out.stdout);
        let page = &flags[""];
        assert!(
            out.status.success(),
            "{page} shows `splitway {cmd}`, which does not exist:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (flag, page) in flags.iter().filter(|(f, _)| !f.is_empty()) {
            assert!(
                help.contains(&format!("--{flag}")),
                "{page} shows `splitway {cmd} --{flag}`, which it does not take:\n{help}"
            );
        }
    }
}

/// Pages the README links to that other work is writing: their links are checked once the
/// page exists.
const PENDING: &[&str] = &["docs/security.md", "docs/lambda.md"];

/// GitHub's anchor for a heading: lowercase, punctuation but `-` dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    let text = heading.trim_start_matches('#').trim().to_lowercase();
    let kept = text
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ');
    kept.map(|c| if c == ' ' { '-' } else { c }).collect()
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for (path, text) in doc_files() {
        let dir = path.parent().expect("a file has a directory");
        let prose: String = code_spans_removed(&text);
        for link in prose.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() { path.clone() } else { dir.join(file) };
            let shown = format!("{}: link `{link}`", path.display());
            let relative = target.strip_prefix(root).map(|p| p.to_string_lossy().into_owned());
            if !target.exists() {
                let pending = relative
                    .as_deref()
                    .is_ok_and(|r| PENDING.iter().any(|p| r.ends_with(p)));
                assert!(pending, "{shown}: no such file");
                continue;
            }
            if !fragment.is_empty() {
                let page = std::fs::read_to_string(&target).unwrap_or_default();
                let anchors: BTreeSet<String> = page.lines().filter(|l| l.starts_with('#')).map(anchor).collect();
                assert!(
                    anchors.contains(fragment),
                    "{shown}: no heading makes `#{fragment}` in {}",
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} links checked");
}

/// The text without fenced blocks and inline code, where `](` is not a link.
fn code_spans_removed(text: &str) -> String {
    without_blocks(text).split('`').step_by(2).collect::<Vec<_>>().join("")
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
