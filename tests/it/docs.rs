//! The documentation cannot rot: every TOML example in `README.md` and `docs/*.md` passes
//! `splitway check` (or is marked `<!-- fragment -->` and is at least valid TOML), every
//! `splitway` command and flag shown exists, every relative link and anchor resolves. The
//! reference pages are checked against the code in `docs_reference.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::bin;
use crate::support::tmp::TempFile;

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

/// A file of the repository, by its path from the root.
pub(crate) fn doc_text(name: &str) -> String {
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
