//! splitway's integration tests: one binary, run against the emulated AWS network in
//! `support/` (loopback only; never the machine's resolver).

mod aws_failures;
mod aws_preset;
mod cli;
mod custom_domains;
mod deploy;
mod diagnostics;
mod dns_cache_bounds;
mod dns_cache_reload;
mod docs;
mod docs_reference;
mod encrypted_dns;
mod env_clients;
mod forward;
mod forward_pool;
mod hardening_bad_input;
mod hardening_dns;
mod hardening_faults;
mod hardening_limits;
mod hardening_load;
mod lifecycle;
mod operations;
mod parent;
mod parent_diagnostics;
mod parent_faults;
mod refusals;
mod reload_process;
mod scenarios;
mod sni_pinning;
mod source_rules;
mod support;
mod transparent;
