//! The side-by-side load benchmark: `cargo bench --bench load`.
//!
//! Starts an upstream (in-process, own runtime; plus a child process for `idle`), nginx as a
//! second, realistic upstream (`nginx.rs`, when installed), the two floors (minimal relays:
//! `floor.rs` on mio, in a child process of this binary, and `relay.c`, compiled at start),
//! splitway's release binary,
//! squid and tinyproxy when installed and g3proxy when `BENCH_G3PROXY` names its binary; runs
//! every workload against direct (no proxy) and each proxy, round-robin within each repetition,
//! so that a noisy neighbour on the shared machine hurts every contender alike. Prints medians
//! and ratios to direct, then splitway's figures against the floor and the best peer; writes
//! `target/bench-results.json`, `benches/results/latest.json` and `benches/results/latest.svg`.
//!
//! Knobs (environment): `settings.rs`.

mod binaries;
mod client;
mod distinct;
mod floor;
mod idle;
mod nginx;
mod pki;
mod proxies;
mod redraw;
mod relay_c;
mod report;
mod settings;
mod svg;
mod syscalls;
mod tunnels;
mod upstream;
mod workloads;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use client::Via;
use proxies::{Kind, Proxy, Setup};
use report::Runs;
use settings::{Settings, env_list};
use workloads::{Env, Sample};

pub(crate) const WORKLOADS: &[&str] = &[
    "fresh-tls",
    "fresh-plain",
    "fresh-proxy-v2",
    "keepalive",
    "bulk",
    "forward",
    "fresh-tls-nginx",
    "fresh-plain-nginx",
    "keepalive-nginx",
    "keepalive-plain-nginx",
    "bulk-nginx",
];

/// The suffix of the workloads whose origin is nginx (`nginx.rs`) instead of the in-process
/// upstream.
const NGINX: &str = "-nginx";

fn main() {
    if std::env::args().any(|a| a == "--upstream-child") {
        if let Err(e) = upstream::run_child() {
            eprintln!("upstream child: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor-child") {
        if let Err(e) = floor::run_child(args.get(i + 1).map_or("", String::as_str)) {
            eprintln!("floor child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(path) = std::env::var_os("BENCH_RENDER") {
        if let Err(e) = redraw::redraw(Path::new(&path)) {
            eprintln!("redraw failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run() {
        eprintln!("load bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    rustls::crypto::ring::default_provider().install_default().ok();
    let settings = Settings::from_env()?;
    let Settings {
        smoke,
        run_secs,
        reps,
        bulk_mb,
        ..
    } = settings;
    let (idle_counts, distinct_counts) = (&settings.idle_counts, &settings.distinct_counts);
    let wanted = |w: &str| settings.wanted(w);

    let target_dir = binaries::target_dir()?;
    let up = upstream::Upstream::start()?;
    let children = proxies::Children::default();
    proxies::kill_children_on_signal(children.clone());
    let (mut idle_child, idle_port) = idle::spawn_upstream()?;
    children.lock().unwrap_or_else(|p| p.into_inner()).push(idle_child.id());
    let dns = distinct::start_dns()?;
    let dir = std::env::temp_dir().join(format!("splitway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut notes = Vec::new();
    let relay_c_bin = match relay_c::build(&binaries::profile_dir()?) {
        Ok(bin) => Some(bin),
        Err(e) => {
            notes.push(format!("relay-c not built, skipped: {e}"));
            None
        }
    };
    // nginx is the realistic origin of the full run only: the smoke run under `cargo test`
    // needs no nginx.
    let want_nginx = !smoke && WORKLOADS.iter().any(|w| w.ends_with(NGINX) && wanted(w));
    let nginx = match nginx::binary().filter(|_| want_nginx) {
        Some(bin) => Some(nginx::Nginx::start(&bin, &dir, bulk_mb << 20, &children)?),
        None if want_nginx => {
            notes.push("nginx is not installed: the -nginx workloads are skipped (apt-get install nginx-light)".into());
            None
        }
        None => None,
    };
    let mut ports = vec![up.tls.port(), up.plain.port(), idle_port];
    ports.extend(nginx.iter().flat_map(|n| [n.tls.port(), n.plain.port()]));
    let setup = Setup {
        splitway_bin: binaries::splitway_binary(smoke)?,
        splitway_b: std::env::var_os("BENCH_SPLITWAY_B").map(|bin| {
            let vars = env_list("BENCH_SPLITWAY_B_ENV").unwrap_or_default();
            (
                PathBuf::from(bin),
                vars.iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            )
        }),
        squid_bin: binaries::which("squid").filter(|_| !smoke),
        tinyproxy_bin: binaries::which("tinyproxy").filter(|_| !smoke),
        g3proxy_bin: std::env::var_os("BENCH_G3PROXY").map(PathBuf::from).filter(|_| !smoke),
        floor_bin: std::env::current_exe()?,
        relay_c_bin,
        ports,
        dns,
        dir: dir.clone(),
        children,
    };
    for (name, bin) in [("squid", &setup.squid_bin), ("tinyproxy", &setup.tinyproxy_bin)] {
        if bin.is_none() && !smoke {
            notes.push(format!("{name} is not installed: skipped (apt-get install {name})"));
        }
    }
    let filter = env_list("BENCH_CONTENDERS");
    let kinds: Vec<Kind> = setup
        .kinds()
        .into_iter()
        .filter(|k| filter.as_ref().is_none_or(|f| f.iter().any(|x| x == k.name())))
        .collect();
    let mut contenders = vec!["direct".to_owned()];
    contenders.extend(kinds.iter().map(|k| k.name().to_owned()));
    if let Some(n) = std::env::var("BENCH_SYSCALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| !smoke)
    {
        let realistic = nginx.as_ref().map(|n| (n.tls, n.client_config.clone()));
        let plain = settings.origin_wanted("fresh-plain").then_some(up.plain);
        let table = syscalls::run(&setup, &kinds, plain, realistic, n)?;
        println!("\n{}\n\n{table}", machine());
        std::fs::write(target_dir.join("bench-syscalls.md"), &table)?;
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }

    let env = Arc::new(Env {
        tls: up.tls,
        plain: up.plain,
        idle: ([127, 0, 0, 1], idle_port).into(),
        dns,
        tls_host: match std::env::var("BENCH_RUSTLS_TARGET").as_deref() {
            Ok("ip") => "127.0.0.1",
            _ => upstream::TLS_NAME,
        },
        client_config: resumption(&up.client_config),
        run: Duration::from_secs_f64(run_secs),
        bulk_bytes: bulk_mb << 20,
    });
    // The same workloads against nginx, reached by IP literal.
    let nginx_env = nginx.as_ref().map(|n| {
        notes.push(format!(
            "-nginx workloads: nginx (OpenSSL) presents {} bytes of certificates (RSA-2048, 4 certificates), {}, CONNECT 127.0.0.1:P",
            n.chain_bytes,
            match std::env::var("BENCH_RESUME").as_deref() {
                Ok("on") => "sessions resumed (BENCH_RESUME=on)",
                _ => "full handshakes",
            }
        ));
        Arc::new(Env {
            tls: n.tls,
            plain: n.plain,
            tls_host: "127.0.0.1",
            client_config: resumption(&n.client_config),
            ..clone_env(&env)
        })
    });
    // The generator: one thread, so its cost is the same for every contender.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut runs = Runs::default();
    let mut running: Vec<Proxy> = kinds.iter().map(|&k| setup.start(k)).collect::<Result<_, _>>()?;
    eprintln!("contenders: {}; {} reps of {run_secs}s", contenders.join(", "), reps);

    // Warm-up: TLS session caches, the proxies' first allocations, the CPU's clocks.
    for e in std::iter::once(&env).chain(nginx_env.as_ref()) {
        let warm = Arc::new(Env {
            run: Duration::from_millis(500),
            bulk_bytes: 0,
            ..clone_env(e)
        });
        for p in std::iter::once(None).chain(running.iter().map(Some)) {
            let via = match p {
                None => Via::Direct,
                Some(p) if p.kind == Kind::SplitwayPp => Via::ProxyV2(p.addr),
                Some(p) => Via::Proxy(p.addr),
            };
            rt.block_on(workloads::fresh(warm.clone(), via, true, || None));
        }
    }

    for rep in 0..reps {
        for &w in WORKLOADS.iter().filter(|w| wanted(w)) {
            let (base, env) = match w.strip_suffix(NGINX) {
                None => (w, env.clone()),
                Some(base) => match &nginx_env {
                    Some(e) => (base, e.clone()),
                    None => continue,
                },
            };
            measure(&rt, w, base, &env, &running, rep, &mut runs);
            // A proxy that died must not silently turn into a column of failures.
            for p in running.iter_mut() {
                if !p.alive() {
                    notes.push(format!(
                        "{} exited during {w} (rep {}); restarted",
                        p.kind.name(),
                        rep + 1
                    ));
                    *p = setup.start(p.kind)?;
                }
            }
        }
        if wanted("idle") {
            for &n in idle_counts {
                // splitway-pp is fresh-proxy-v2's alone.
                for &k in kinds.iter().filter(|&&k| k != Kind::SplitwayPp) {
                    let name = format!("idle-{n}");
                    // A fresh process: memory an allocator kept from earlier runs would hide growth.
                    let p = setup.start(k)?;
                    let s = rt.block_on(idle::idle(env.clone(), &p, n));
                    eprintln!("rep {} {name:<12} {:<10} {}", rep + 1, k.name(), brief(&s));
                    runs.add(&name, k.name(), s);
                    drop(p);
                    // Let the closed sockets drain before the next measurement.
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        if wanted("distinct") {
            for &n in distinct_counts {
                distinct::run_each(&rt, &setup, &env, &kinds, &mut runs, rep, n)?;
            }
        }
    }
    if wanted("distinct") && !distinct_counts.is_empty() {
        if kinds.contains(&Kind::Tinyproxy) {
            notes.push("distinct: tinyproxy resolves with getaddrinfo (the machine's resolver), which the bench cannot point at its DNS: not run".into());
        }
        if kinds.contains(&Kind::Squid) && dns.port() != 53 {
            notes.push(format!(
                "distinct: squid not run: its dns_nameservers takes port 53, and {} could not be bound",
                dns.ip()
            ));
        }
    }
    drop(running);
    drop(nginx);
    let _ = idle_child.kill();
    let _ = idle_child.wait();

    let mut workloads: Vec<String> = WORKLOADS.iter().map(|w| w.to_string()).collect();
    workloads.extend(idle_counts.iter().map(|n| format!("idle-{n}")));
    workloads.extend(distinct_counts.iter().map(|n| format!("distinct-{n}")));
    let rows = report::rows(&runs, &workloads, &contenders);
    notes.extend(report::error_notes(&runs));
    notes.extend(report::proxy_header_cost(&rows));
    let machine = machine();
    let table = report::table(&rows, &contenders);
    let judged = report::judged(&rows, &contenders);
    println!("\n{machine}\n\n{table}\n{judged}");
    for n in &notes {
        println!("note: {n}");
    }
    let header = serde_json::json!({
        "command": "cargo bench --bench load",
        "machine": machine,
        "settings": { "run_secs": run_secs, "reps": reps, "concurrency": workloads::CONCURRENCY, "bulk_bytes": env.bulk_bytes, "idle_tunnels": idle_counts, "distinct_names": distinct_counts, "upstream": settings.upstream, "resume": std::env::var("BENCH_RESUME").ok(), "rustls_target": std::env::var("BENCH_RUSTLS_TARGET").ok() },
        "contenders": contenders,
        "table_markdown": table,
        "judged_markdown": judged,
    });
    let json = serde_json::to_string_pretty(&report::json(&rows, &runs, header, &notes))?;
    let picture = svg::render(
        &rows,
        &contenders,
        &format!(
            "{machine}; {reps} reps of {run_secs}s; concurrency {}",
            workloads::CONCURRENCY
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
    if smoke {
        // Errors on loopback mean a broken harness or proxy; speed is never judged here.
        let errors: u64 = runs.samples.values().flatten().map(|s| s.errors).sum();
        return if errors == 0 && !json.is_empty() && !picture.is_empty() {
            Ok(())
        } else {
            Err(format!("{errors} errors in the smoke run").into())
        };
    }
    std::fs::write(target_dir.join("bench-results.json"), &json)?;
    std::fs::write(target_dir.join("bench-results.svg"), &picture)?;
    if std::env::var_os("BENCH_NO_SAVE").is_none() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
        std::fs::create_dir_all(&results)?;
        std::fs::write(results.join("latest.json"), &json)?;
        std::fs::write(results.join("latest.svg"), &picture)?;
    }
    Ok(())
}

/// One repetition of workload `w` (`base`: `w` without its origin's suffix; `env`: that
/// origin): direct, then each running contender that speaks it.
fn measure(
    rt: &tokio::runtime::Runtime,
    w: &str,
    base: &str,
    env: &Arc<Env>,
    running: &[Proxy],
    rep: usize,
    runs: &mut Runs,
) {
    for i in 0..=running.len() {
        // The floors speak CONNECT only; splitway-pp is there for fresh-proxy-v2 alone,
        // which only it runs.
        let kind = (i > 0).then(|| running[i - 1].kind);
        if w == "forward" && kind.is_some_and(Kind::is_floor)
            || (w == "fresh-proxy-v2") != (kind == Some(Kind::SplitwayPp))
        {
            continue;
        }
        let (name, via, proxy) = match i {
            0 => ("direct", Via::Direct, None),
            _ if kind == Some(Kind::SplitwayPp) => (
                running[i - 1].kind.name(),
                Via::ProxyV2(running[i - 1].addr),
                Some(&running[i - 1]),
            ),
            _ => (
                running[i - 1].kind.name(),
                Via::Proxy(running[i - 1].addr),
                Some(&running[i - 1]),
            ),
        };
        let cpu = || proxy.and_then(Proxy::cpu_time);
        let s = rt.block_on(async {
            match base {
                "fresh-tls" => workloads::fresh(env.clone(), via, true, cpu).await,
                "fresh-plain" | "fresh-proxy-v2" => workloads::fresh(env.clone(), via, false, cpu).await,
                "keepalive" => workloads::keepalive(env.clone(), via, true, cpu).await,
                "keepalive-plain" => workloads::keepalive(env.clone(), via, false, cpu).await,
                "bulk" => workloads::bulk(env.clone(), via, cpu).await,
                _ => workloads::forward(env.clone(), via, cpu).await,
            }
        });
        eprintln!("rep {} {w:<12} {name:<10} {}", rep + 1, brief(&s));
        runs.add(w, name, s);
    }
}

/// `config` with session resumption as `BENCH_RESUME` says (`on`, `off`; unset: unchanged).
fn resumption(config: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut c = (**config).clone();
    match std::env::var("BENCH_RESUME").as_deref() {
        Ok("on") => c.resumption = rustls::client::Resumption::default(),
        Ok("off") => c.resumption = rustls::client::Resumption::disabled(),
        _ => return config.clone(),
    }
    Arc::new(c)
}

fn clone_env(e: &Env) -> Env {
    Env {
        client_config: e.client_config.clone(),
        ..*e
    }
}

fn brief(s: &Sample) -> String {
    let rate = if s.secs > 0.0 { s.requests as f64 / s.secs } else { 0.0 };
    let mut out = format!(
        "{} req in {:.2}s ({rate:.0}/s), {} MB, {} errors",
        s.requests,
        s.secs,
        s.bytes / 1_000_000,
        s.errors
    );
    if let Some(k) = s.kib_per_tunnel {
        out.push_str(&format!(", {k:.1} KiB/tunnel"));
    }
    if let Some(k) = s.kib_per_10k_names {
        out.push_str(&format!(", {k:.0} KiB/10k names"));
    }
    if let Some(e) = &s.first_error {
        out.push_str(&format!(" (first: {e})"));
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{nproc} CPUs ({cpu}), Linux {}", kernel.trim())
}
