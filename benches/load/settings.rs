//! What one run measures, from the environment.
//!
//! Knobs: `BENCH_SECS` (length of one run, default 3), `BENCH_REPS` (default 3),
//! `BENCH_ONLY` (comma-separated workloads), `BENCH_CONTENDERS` (comma-separated),
//! `BENCH_BULK_MB` (default 1024), `BENCH_IDLE` (tunnel counts, default `1000,10000`),
//! `BENCH_UPSTREAM` (`rustls`, `nginx` or `both`, the default: which origin's workloads run;
//! the `-nginx` ones need Debian's `nginx-light` or `nginx`), `BENCH_RESUME` (`on` or `off`:
//! TLS session resumption in both origins' workloads; unset, the in-process upstream's clients
//! resume, as they always have, and nginx's do full handshakes), `BENCH_RUSTLS_TARGET=ip`
//! (the in-process upstream's TLS workloads send `CONNECT 127.0.0.1:P` instead of
//! `localhost:P`; with `BENCH_RESUME` these isolate why the two origins' figures differ),
//! `BENCH_NO_SAVE` (skip writing the committed copies under benches/results), `BENCH_G3PROXY`
//! (a g3proxy binary: contender `g3proxy`), `BENCH_SYSCALLS=N` (instead of the load run: system
//! calls and CPU per fresh tunnel over N tunnels, plain through the in-process upstream and TLS
//! through nginx, `syscalls.rs`); for A/B runs while optimising, `BENCH_SPLITWAY_B` (another
//! splitway binary, contender `splitway-b`) and `BENCH_SPLITWAY_B_ENV` (`KEY=VALUE,…` set for
//! it only); `BENCH_DISTINCT` (name counts for the `distinct` workload, default `10000`);
//! `BENCH_RENDER=FILE` (instead of a run: draw the picture again from a results file such as
//! `benches/results/latest.json`, `redraw.rs`).
//!
//! `cargo bench` passes `--bench`; `cargo test --all-targets` runs the binary without it, and
//! then a seconds-long smoke run (direct, the floors and splitway only, nothing saved) proves
//! the harness works without turning the test suite into a benchmark.

use crate::NGINX;

pub(crate) struct Settings {
    /// Run under `cargo test`: a smoke run, not a benchmark.
    pub(crate) smoke: bool,
    pub(crate) run_secs: f64,
    pub(crate) reps: usize,
    pub(crate) bulk_mb: u64,
    pub(crate) idle_counts: Vec<usize>,
    pub(crate) distinct_counts: Vec<usize>,
    /// `BENCH_UPSTREAM`: `rustls`, `nginx` or `both`.
    pub(crate) upstream: String,
    only: Option<Vec<String>>,
}

impl Settings {
    pub(crate) fn from_env() -> Result<Settings, String> {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let counts = |key: &str, default: &str| -> Vec<usize> {
            env_list(key)
                .unwrap_or_else(|| default.split(',').map(String::from).collect())
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect()
        };
        let upstream = std::env::var("BENCH_UPSTREAM").unwrap_or_else(|_| "both".into());
        if !matches!(upstream.as_str(), "rustls" | "nginx" | "both") {
            return Err(format!("BENCH_UPSTREAM={upstream}: rustls, nginx or both"));
        }
        Ok(Settings {
            smoke,
            run_secs: if smoke { 0.2 } else { env_or("BENCH_SECS", 3.0) },
            reps: if smoke { 1 } else { env_or("BENCH_REPS", 3) },
            bulk_mb: if smoke { 8 } else { env_or("BENCH_BULK_MB", 1024) },
            idle_counts: counts("BENCH_IDLE", if smoke { "50" } else { "1000,10000" }),
            distinct_counts: counts("BENCH_DISTINCT", if smoke { "200" } else { "10000" }),
            upstream,
            only: env_list("BENCH_ONLY"),
        })
    }

    /// Whether `workload`'s origin is one `BENCH_UPSTREAM` asks for.
    pub(crate) fn origin_wanted(&self, workload: &str) -> bool {
        match self.upstream.as_str() {
            "rustls" => !workload.ends_with(NGINX),
            "nginx" => workload.ends_with(NGINX),
            _ => true,
        }
    }

    /// Whether `workload` runs: its origin is wanted and `BENCH_ONLY` (if set) names it, or
    /// names `idle` or `distinct` for each of their counts.
    pub(crate) fn wanted(&self, workload: &str) -> bool {
        self.origin_wanted(workload)
            && self.only.as_ref().is_none_or(|o| {
                o.iter()
                    .any(|x| x == workload || ((x == "idle" || x == "distinct") && workload.starts_with(x.as_str())))
            })
    }
}

pub(crate) fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A comma-separated list, its items trimmed and empty ones dropped.
pub(crate) fn env_list(key: &str) -> Option<Vec<String>> {
    std::env::var(key).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}
