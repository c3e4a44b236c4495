//! One name resolved through a route's resolver, and custom domain detection (`on_cname`):
//! when the answer's CNAME chain reaches a name matching a rule's pattern (an API Gateway
//! domain name `d-*.execute-api.REGION.amazonaws.com`), the host is resolved again through the
//! rule's resolver, and that answer is the one connected to (after `deny_destinations`).
//!
//! The lookups themselves are the walk's (`walk.rs`); this file only matches a chain.

use std::sync::Arc;

use super::dns::Answer;
use crate::routes::CnameRule;

/// The CNAME chain reached a rule's pattern: `cname` is the name that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detection {
    pub cname: Arc<str>,
    pub resolver: Arc<str>,
}

/// The first rule (in order) whose pattern some CNAME of the chain matches, with that CNAME.
/// A rule that names the resolver that already answered changes nothing.
pub(crate) fn detect(rules: &[CnameRule], resolver: &str, answer: &Answer) -> Option<Detection> {
    rules.iter().filter(|r| &*r.resolver != resolver).find_map(|rule| {
        answer
            .cnames
            .iter()
            .find(|c| rule.pattern.matches(c))
            .map(|c| Detection {
                cname: c.as_str().into(),
                resolver: rule.resolver.clone(),
            })
    })
}
