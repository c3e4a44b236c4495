//! `BENCH_SYSCALLS=N`: where a proxy's CPU per fresh tunnel goes, in two tables: fresh plain
//! tunnels to the in-process upstream, and the realistic workload, fresh TLS tunnels to nginx
//! (full handshakes, an API Gateway-sized chain, `CONNECT 127.0.0.1:P`). For each contender,
//! fresh tunnels (`tunnels.rs`) with the proxy untraced (max(N, 5000) of them: user and system
//! CPU per tunnel from /proc, whose 10 ms ticks need that many), then N more under
//! `strace -c -f` attached to every thread of the running proxy (so start-up is not counted):
//! system calls per tunnel, side by side.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustls::ClientConfig;

use crate::proxies::{Kind, Proxy, Setup};
use crate::tunnels;

/// Untraced tunnels at least, for the CPU figures.
const CPU_TUNNELS: usize = 5000;

/// One contender's figures: CPU per tunnel (user, system, in µs) and calls per tunnel.
struct Profile {
    name: &'static str,
    user_us: f64,
    sys_us: f64,
    calls: BTreeMap<String, f64>,
    failed: usize,
}

/// Measures every contender on each workload given (plain: the in-process upstream's plain
/// port; realistic: nginx's TLS port and the client config for it); the markdown tables.
pub(crate) fn run(
    setup: &Setup,
    kinds: &[Kind],
    plain: Option<SocketAddr>,
    realistic: Option<(SocketAddr, Arc<ClientConfig>)>,
    n: usize,
) -> io::Result<String> {
    let mut out = Vec::new();
    if let Some(target) = plain {
        let profiles = measure(setup, kinds, target, None, n)?;
        out.push(table(
            &profiles,
            &format!("System calls per fresh plain tunnel ({n} tunnels, 16 at once, `strace -c -f`)"),
        ));
    }
    if let Some((target, config)) = realistic {
        let profiles = measure(setup, kinds, target, Some(&config), n)?;
        out.push(table(&profiles, &format!("System calls per fresh TLS tunnel to nginx, `CONNECT 127.0.0.1:P` ({n} tunnels, 16 at once, `strace -c -f`)")));
    }
    Ok(out.join("\n"))
}

fn measure(
    setup: &Setup,
    kinds: &[Kind],
    target: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    n: usize,
) -> io::Result<Vec<Profile>> {
    let mut profiles = Vec::new();
    for &k in kinds.iter().filter(|&&k| k != Kind::SplitwayPp) {
        let p = setup.start(k)?;
        tunnels::run(p.addr, target, tls, 200.min(n));
        let cpu0 = p.cpu_user_sys();
        let n_cpu = n.max(CPU_TUNNELS);
        let mut failed = tunnels::run(p.addr, target, tls, n_cpu);
        let cpu = p.cpu_user_sys().zip(cpu0).map(|(b, a)| (b.0 - a.0, b.1 - a.1));
        let trace = setup.dir.join(format!("{}.strace", k.name()));
        let (calls, f) = traced(&p, target, tls, n, &trace)?;
        failed += f;
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n_cpu as f64;
        profiles.push(Profile {
            name: k.name(),
            user_us: cpu.map_or(f64::NAN, |c| per(c.0)),
            sys_us: cpu.map_or(f64::NAN, |c| per(c.1)),
            calls: calls.into_iter().map(|(k, v)| (k, v as f64 / n as f64)).collect(),
            failed,
        });
        eprintln!("syscalls: {} done ({failed} failed tunnels)", k.name());
    }
    Ok(profiles)
}

/// N tunnels with strace attached to every thread of the proxy; calls per syscall name.
fn traced(
    p: &Proxy,
    target: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    n: usize,
    out: &std::path::Path,
) -> io::Result<(BTreeMap<String, u64>, usize)> {
    // `-f -p PID` attaches to all of the process's threads, then says `Process PID attached`
    // (`with N threads` when there are several).
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(out)
        .arg("-p")
        .arg(p.pid().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = strace
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("no strace stderr"))?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("attached") => break,
            Some(Ok(_)) => {}
            _ => return Err(io::Error::other("strace ended before attaching (is it installed?)")),
        }
    }
    let failed = tunnels::run(p.addr, target, tls, n);
    Command::new("kill").arg("-INT").arg(strace.id().to_string()).status()?;
    // Drain its detach messages, then wait for the summary to be written.
    for _ in lines {}
    strace.wait()?;
    Ok((parse(&std::fs::read_to_string(out)?), failed))
}

/// strace's `-c` summary: `% time  seconds  usecs/call  calls  [errors]  syscall` rows.
fn parse(summary: &str) -> BTreeMap<String, u64> {
    summary
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            let calls = f.get(3)?.parse().ok()?;
            (f.len() >= 5 && name != "total" && f[0].parse::<f64>().is_ok()).then(|| (name.to_owned(), calls))
        })
        .collect()
}

fn table(profiles: &[Profile], title: &str) -> String {
    let mut names: Vec<&String> = profiles.iter().flat_map(|p| p.calls.keys()).collect();
    names.sort();
    names.dedup();
    // Most frequent (summed over contenders) first.
    let sum = |s: &String| -> f64 { profiles.iter().filter_map(|p| p.calls.get(s)).sum() };
    names.sort_by(|a, b| sum(b).total_cmp(&sum(a)));
    let mut out = format!("{title}\n\n| syscall |");
    for p in profiles {
        let _ = write!(out, " {} |", p.name);
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(profiles.len()));
    out.push('\n');
    let row = |out: &mut String, label: &str, f: &dyn Fn(&Profile) -> String| {
        let _ = write!(out, "| {label} |");
        for p in profiles {
            let _ = write!(out, " {} |", f(p));
        }
        out.push('\n');
    };
    for s in names.iter().filter(|s| sum(s) >= 0.05) {
        row(&mut out, &format!("`{s}`"), &|p| {
            p.calls.get(*s).map_or("–".into(), |v| format!("{v:.1}"))
        });
    }
    row(&mut out, "**total**", &|p| {
        format!("{:.1}", p.calls.values().sum::<f64>())
    });
    row(&mut out, "CPU/tunnel, user (µs, untraced)", &|p| {
        format!("{:.0}", p.user_us)
    });
    row(&mut out, "CPU/tunnel, system (µs, untraced)", &|p| {
        format!("{:.0}", p.sys_us)
    });
    row(&mut out, "failed tunnels", &|p| p.failed.to_string());
    out
}
