//! `ConfigError`: what is wrong with a config, located by file, line, route and key.

use std::fmt;
use std::ops::Range;

/// A config that cannot be used, said so that the fix is obvious.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read the config file (pass --config FILE or set SPLITWAY_CONFIG)")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}{}: {message}", Line(*line))]
    Syntax {
        origin: String,
        line: Option<usize>,
        message: String,
    },
    #[error(
        "{origin}{}: {}key `{key}`: {message}",
        Line(*line),
        route.as_ref().map(|r| format!("route `{r}`: ")).unwrap_or_default()
    )]
    Invalid {
        origin: String,
        line: Option<usize>,
        route: Option<String>,
        key: String,
        message: String,
    },
}

struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

impl ConfigError {
    pub(super) fn from_toml(origin: &str, src: &str, e: &toml::de::Error) -> Self {
        ConfigError::Syntax {
            origin: origin.to_owned(),
            line: e.span().map(|s| line_of(src, s.start)),
            message: e.message().trim_end().replace('\n', "; "),
        }
    }

    /// The line the error points at, if any (tests and `check` use it).
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Io { .. } => None,
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => *line,
        }
    }
}

/// The text being parsed and its name, for locating errors.
pub(super) struct Ctx<'a> {
    pub(super) origin: &'a str,
    pub(super) src: &'a str,
    /// Offsets of every `\n`, so a line number is a binary search (configs with thousands of
    /// routes look up several lines per route).
    newlines: Vec<usize>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(origin: &'a str, src: &'a str) -> Self {
        let newlines = src
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i)
            .collect();
        Ctx { origin, src, newlines }
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }

    /// The line where `key = ` is written in the table starting at `span` (toml spans an
    /// array-of-tables entry by its header only, so the table runs to the next header).
    pub(super) fn key_line(&self, span: &Range<usize>, key: &str) -> usize {
        let text = self.src.get(span.start..).unwrap_or_default();
        let mut offset = span.start;
        for (i, l) in text.split_inclusive('\n').enumerate() {
            let t = l.trim_start();
            if i > 0 && t.starts_with('[') {
                break;
            }
            if t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                return self.line(offset);
            }
            offset += l.len();
        }
        self.line(span.start)
    }

    pub(super) fn invalid(
        &self,
        line: usize,
        route: Option<&str>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line: Some(line),
            route: route.map(str::to_owned),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One TOML table being read key by key, so each error points at its own key's line.
pub(super) struct TableCtx<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) table: &'a toml::Spanned<toml::Table>,
    /// The route the table is, for route tables.
    pub(super) route: Option<String>,
    /// Prefix of key names in messages, e.g. `resolver.public.`.
    pub(super) prefix: String,
}

impl TableCtx<'_> {
    /// `e` at `key`, its causes after it.
    pub(super) fn bad(&self, key: &str, e: &(dyn std::error::Error + 'static)) -> ConfigError {
        self.err(key, chain(e))
    }

    pub(super) fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self.ctx.key_line(&self.table.span(), key);
        self.ctx
            .invalid(line, self.route.as_deref(), &format!("{}{key}", self.prefix), message)
    }

    pub(super) fn field<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.table.get_ref().get(key) else {
            return Ok(None);
        };
        T::deserialize(value.clone())
            .map(Some)
            .map_err(|e| self.err(key, e.message().trim_end()))
    }

    /// Rejects keys outside `known` (unknown keys are errors, never ignored).
    pub(super) fn only_keys(&self, known: &[&str], what: &str) -> Result<(), ConfigError> {
        match self.table.get_ref().keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(self.err(key, format!("unknown key; {what} takes: {}", known.join(", ")))),
            None => Ok(()),
        }
    }
}

/// An error and its causes, each after a `: ` (how every error a user sees is printed once:
/// `Display` says only its own level).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
