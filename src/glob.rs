//! Name patterns with a wildcard inside a label, such as `d-*.execute-api.us-east-1.amazonaws.com`
//! (an API Gateway domain name): what a route's `on_cname` rules match a CNAME chain against.
//!
//! A pattern has as many labels as the names it matches; each label is literal or holds one
//! `*`, which stands for any run of characters (none included) inside that one label. `*`
//! alone is any one label. Matching is case-insensitive and ignores a trailing dot.

use std::fmt;

/// One label of a pattern: `prefix*suffix`, or a literal when `star` is false.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Label {
    prefix: String,
    suffix: String,
    star: bool,
}

/// Why a name pattern is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("is empty; write a name such as `d-*.execute-api.us-east-1.amazonaws.com`")]
    Empty,
    #[error("`{0}` has an empty label")]
    EmptyLabel(String),
    #[error("`{0}`: a label holds at most one `*`")]
    TwoStars(String),
    #[error("`{pattern}` has a label that is not a DNS label: `{label}`")]
    NotALabel { pattern: String, label: String },
    #[error("`{0}` matches every name; name at least one label")]
    Everything(String),
}

/// A parsed name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameGlob {
    labels: Vec<Label>,
    text: String,
}

impl NameGlob {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<NameGlob, GlobError> {
        let text = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        if text.is_empty() {
            return Err(GlobError::Empty);
        }
        let labels = text
            .split('.')
            .map(|label| {
                let valid = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                match label.split_once('*') {
                    _ if label.is_empty() => Err(GlobError::EmptyLabel(pattern.to_owned())),
                    Some((_, rest)) if rest.contains('*') => Err(GlobError::TwoStars(pattern.to_owned())),
                    Some((prefix, suffix)) if valid(prefix) && valid(suffix) => Ok(Label {
                        prefix: prefix.to_owned(),
                        suffix: suffix.to_owned(),
                        star: true,
                    }),
                    None if valid(label) => Ok(Label {
                        prefix: label.to_owned(),
                        suffix: String::new(),
                        star: false,
                    }),
                    _ => Err(GlobError::NotALabel {
                        pattern: pattern.to_owned(),
                        label: label.to_owned(),
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if labels
            .iter()
            .all(|l| l.star && l.prefix.is_empty() && l.suffix.is_empty())
        {
            return Err(GlobError::Everything(pattern.to_owned()));
        }
        Ok(NameGlob { labels, text })
    }

    /// Whether `name` (any case, trailing dot allowed) matches. Allocates nothing.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        let mut labels = name.split('.');
        for want in &self.labels {
            let Some(got) = labels.next() else { return false };
            let fits = if want.star {
                got.len() >= want.prefix.len() + want.suffix.len()
                    && starts_with_ignore_case(got, &want.prefix)
                    && ends_with_ignore_case(got, &want.suffix)
            } else {
                got.eq_ignore_ascii_case(&want.prefix)
            };
            if !fits || got.is_empty() {
                return false;
            }
        }
        labels.next().is_none()
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

impl fmt::Display for NameGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::NameGlob;

    #[test]
    fn patterns_match_as_the_table_says() {
        let apigw = "d-*.execute-api.us-east-1.amazonaws.com";
        let cases: &[(&str, &str, bool)] = &[
            (apigw, "d-abc123.execute-api.us-east-1.amazonaws.com", true),
            (apigw, "D-ABC123.Execute-Api.US-East-1.amazonaws.com.", true),
            (apigw, "d-.execute-api.us-east-1.amazonaws.com", true),
            (apigw, "bmf11pk5je.execute-api.us-east-1.amazonaws.com", false),
            (apigw, "x.d-abc123.execute-api.us-east-1.amazonaws.com", false),
            (apigw, "d-abc123.execute-api.us-west-2.amazonaws.com", false),
            (
                apigw,
                "d-abc123.execute-api.us-east-1.amazonaws.com.evil.example",
                false,
            ),
            (apigw, "execute-api.us-east-1.amazonaws.com", false),
            ("*.cloudfront.net", "d111111abcdef8.cloudfront.net", true),
            ("*.cloudfront.net", "a.b.cloudfront.net", false),
            ("*-edge.example.com", "us-edge.example.com", true),
            ("*-edge.example.com", "edge.example.com", false),
            ("api-*-v2.example.com", "api-eu-v2.example.com", true),
            ("api-*-v2.example.com", "api-v2.example.com", false),
            ("exact.example.com", "exact.example.com", true),
            ("exact.example.com", "exact.example.co", false),
        ];
        for (pattern, name, want) in cases {
            let glob = NameGlob::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(glob.matches(name), *want, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("*.*", "matches every name"),
            ("d-**.example.com", "at most one `*`"),
            ("a..example.com", "empty label"),
            ("d-*/x.example.com", "not a DNS label"),
        ];
        for (pattern, why) in cases {
            let err = NameGlob::parse(pattern).expect_err(pattern);
            assert!(err.to_string().contains(why), "{pattern}: {err}");
        }
        assert_eq!(
            NameGlob::parse("D-*.Example.COM.").expect("parses").to_string(),
            "d-*.example.com"
        );
    }
}
