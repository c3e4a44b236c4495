//! The picture: grouped bar charts drawn as plain SVG (no plotting dependency).
//! Throughput relative to direct for each workload, fresh-tls latency, the proxy's CPU per unit
//! of work (each on its own scale, the floors' figures dashed), idle memory; the throughput and
//! CPU panels once for the in-process upstream and once for nginx when it ran. A bar's label is
//! written upright above it when it fits the bar's width and turned vertical when it does not,
//! so labels never overlap.

use std::fmt::Write as _;

use crate::report::Row;

const WIDTH: f64 = 980.0;
const PANEL: f64 = 270.0;

fn color(contender: &str) -> &'static str {
    match contender {
        "direct" => "#9e9e9e",
        "splitway" => "#1f6fd1",
        "squid" => "#e08a1e",
        "tinyproxy" => "#3a9d4f",
        "floor" => "#222222",
        "g3proxy" => "#9b3fb5",
        "splitway-b" => "#7fb2f0",
        "relay-c" => "#a0522d",
        _ => "#777777",
    }
}

/// One group of bars: a label under it, and (contender, bar value, text above the bar).
type Group = (String, Vec<(String, Option<f64>, String)>);

pub(crate) fn render(rows: &[Row], contenders: &[String], caption: &str) -> String {
    // A contender with no figure outside the PROXY-header row (`splitway-pp`), which has no
    // panel, would only add empty bars.
    let contenders: Vec<String> = contenders
        .iter()
        .filter(|c| {
            rows.iter()
                .any(|r| r.workload != "fresh-proxy-v2" && r.value(c).is_some())
        })
        .cloned()
        .collect();
    let contenders = &contenders[..];
    let find = |w: &str, m: &str| rows.iter().find(|r| r.workload == w && r.metric == m);
    let throughput = |suffix: &str| {
        let mut groups = Vec::new();
        for (w, m) in [
            ("fresh-tls", "req/s"),
            ("fresh-plain", "req/s"),
            ("keepalive", "req/s"),
            ("keepalive-plain", "req/s"),
            ("bulk", "throughput"),
            ("forward", "req/s"),
        ] {
            let Some(r) = find(&format!("{w}{suffix}"), m) else {
                continue;
            };
            let bars = contenders
                .iter()
                .map(|c| {
                    let label = match (r.value(c), r.ratio(c)) {
                        (Some(v), Some(x)) => format!("{x:.2}× ({})", short(v)),
                        (Some(v), None) => short(v),
                        (None, _) => "n/a".into(),
                    };
                    (c.clone(), r.ratio(c), label)
                })
                .collect();
            groups.push((format!("{w} ({})", r.unit), bars));
        }
        groups
    };
    let mut latency = Vec::new();
    for m in ["p50", "p99"] {
        if let Some(r) = find("fresh-tls", m) {
            let bars = contenders
                .iter()
                .map(|c| {
                    (
                        c.clone(),
                        r.value(c),
                        r.value(c).map_or("n/a".into(), |v| format!("{v:.2} ms")),
                    )
                })
                .collect();
            latency.push((format!("fresh-tls {m}"), bars));
        }
    }
    let mut memory = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.workload.starts_with("idle") && r.metric == "RSS/tunnel")
    {
        let bars = contenders
            .iter()
            .filter(|c| *c != "direct")
            .map(|c| {
                (
                    c.clone(),
                    r.value(c),
                    r.value(c).map_or("failed".into(), |v| format!("{v:.1} KiB")),
                )
            })
            .collect();
        memory.push((format!("{} tunnels", r.workload.trim_start_matches("idle-")), bars));
    }
    let nginx = rows.iter().any(|r| r.workload.ends_with("-nginx"));
    let panels = if nginx { 6.0 } else { 4.0 };
    let mut out = String::new();
    let height = 76.0 + panels * PANEL + 30.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="20" y="24" font-size="16" font-weight="bold">splitway load benchmark: medians of one run</text>"#
    );
    let _ = writeln!(out, r##"<text x="20" y="42" fill="#555">{}</text>"##, escape(caption));
    // Its own row under the caption: beside the title it ran into it.
    legend(&mut out, contenders, 20.0, 52.0);
    let mut top = 76.0;
    let mut next = || {
        let t = top;
        top += PANEL;
        t
    };
    panel(
        &mut out,
        next(),
        "Throughput relative to direct (no proxy) — higher is better; 1.0 = direct",
        &throughput(""),
        true,
    );
    if nginx {
        panel(
            &mut out,
            next(),
            "nginx upstream (RSA-2048 chain, CONNECT 127.0.0.1): throughput relative to direct",
            &throughput("-nginx"),
            true,
        );
    }
    panel(
        &mut out,
        next(),
        "fresh-tls latency (ms) — lower is better",
        &latency,
        false,
    );
    cpu_panel(
        &mut out,
        next(),
        "Proxy CPU per unit of work — lower is better; dashed: the floors (minimal relays)",
        &cpu_groups(rows, contenders, ""),
    );
    if nginx {
        cpu_panel(
            &mut out,
            next(),
            "nginx upstream: proxy CPU per unit of work — lower is better; dashed: the floors",
            &cpu_groups(rows, contenders, "-nginx"),
        );
    }
    panel(
        &mut out,
        next(),
        "Idle tunnels: proxy RSS growth per tunnel (KiB) — lower is better",
        &memory,
        false,
    );
    out.push_str("</svg>\n");
    out
}

fn legend(out: &mut String, contenders: &[String], x: f64, y: f64) {
    for (i, c) in contenders.iter().enumerate() {
        let x = x + i as f64 * 80.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{c}</text>"#,
            color(c),
            x + 16.0,
            y + 10.0
        );
    }
}

fn panel(out: &mut String, top: f64, title: &str, groups: &[Group], ratio_line: bool) {
    let (left, right) = (60.0, WIDTH - 20.0);
    let (chart_top, chart_bottom) = (top + 40.0, top + PANEL - 40.0);
    let _ = writeln!(
        out,
        r#"<text x="20" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top + 22.0,
        escape(title)
    );
    if groups.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{left}" y="{}" fill="#999">not measured</text>"##,
            chart_top + 30.0
        );
        return;
    }
    let max = groups
        .iter()
        .flat_map(|(_, b)| b.iter().filter_map(|(_, v, _)| *v))
        .fold(0.0_f64, f64::max)
        .max(if ratio_line { 1.0 } else { 0.0 });
    let max = if max > 0.0 { max } else { 1.0 };
    let group_w = (right - left) / groups.len() as f64;
    let bar_w = |bars: &[(String, Option<f64>, String)]| (group_w - 30.0) / bars.len().max(1) as f64;
    let headroom = groups
        .iter()
        .map(|(_, bars)| headroom(bars, bar_w(bars)))
        .fold(0.0_f64, f64::max);
    let y_of = |v: f64| chart_bottom - (v / max) * (chart_bottom - chart_top - headroom);
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{chart_bottom}" x2="{right}" y2="{chart_bottom}" stroke="#333"/>"##
    );
    if ratio_line {
        let y = y_of(1.0);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#9e9e9e" stroke-dasharray="4 3"/><text x="{}" y="{}" fill="#777">1.0</text>"##,
            left - 24.0,
            y + 4.0
        );
    }
    for (gi, (label, bars)) in groups.iter().enumerate() {
        let gx = left + gi as f64 * group_w;
        draw_bars(out, gx + 15.0, bar_w(bars), bars, &y_of, chart_bottom);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
            gx + group_w / 2.0,
            chart_bottom + 18.0,
            escape(label)
        );
    }
}

/// Bar labels: small, on a white outline so a reference line behind one does not cross it.
const HALO: &str = r#"font-size="9" stroke="white" stroke-width="3" stroke-linejoin="round" paint-order="stroke""#;

/// Width in pixels of a bar label (font-size 9, sans-serif), generously estimated.
fn label_px(text: &str) -> f64 {
    text.chars().count() as f64 * 5.6 + 4.0
}

/// Whether a label is written vertically: it is wider than its bar.
fn vertical(text: &str, bar_w: f64) -> bool {
    label_px(text) > bar_w - 2.0
}

/// Pixels above the tallest bar its label needs.
fn headroom(bars: &[(String, Option<f64>, String)], bar_w: f64) -> f64 {
    let need = |t: &String| if vertical(t, bar_w) { label_px(t) + 6.0 } else { 16.0 };
    bars.iter().map(|(_, _, t)| need(t)).fold(16.0, f64::max)
}

/// One group's bars from `x`, each `bar_w` wide, with its label above it (vertical when it
/// does not fit the bar's width); a missing value is written in red on the axis.
fn draw_bars(
    out: &mut String,
    x: f64,
    bar_w: f64,
    bars: &[(String, Option<f64>, String)],
    y_of: &dyn Fn(f64) -> f64,
    chart_bottom: f64,
) {
    for (bi, (c, v, text)) in bars.iter().enumerate() {
        let x = x + bi as f64 * bar_w;
        let cx = x + bar_w / 2.0;
        let (top, fill) = match v {
            Some(v) => {
                let y = y_of(*v);
                let _ = writeln!(
                    out,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{c}: {}</title></rect>"#,
                    bar_w - 4.0,
                    chart_bottom - y,
                    color(c),
                    escape(text)
                );
                (y - 4.0, "#222")
            }
            None => (chart_bottom - 6.0, "#b00"),
        };
        let cx = cx - 2.0;
        if vertical(text, bar_w) {
            let _ = writeln!(
                out,
                r#"<text x="{cx:.1}" y="{top:.1}" transform="rotate(-90 {cx:.1} {top:.1})" dy="3" {HALO} fill="{fill}">{}</text>"#,
                escape(text)
            );
        } else {
            let _ = writeln!(
                out,
                r#"<text x="{cx:.1}" y="{top:.1}" text-anchor="middle" {HALO} fill="{fill}">{}</text>"#,
                escape(text)
            );
        }
    }
}

/// One sub-chart of the CPU panel: its label, unit, the floors' values, and the bars.
struct CpuGroup {
    label: String,
    floors: Vec<(&'static str, f64)>,
    bars: Vec<(String, Option<f64>, String)>,
}

/// Proxy CPU per fresh TLS tunnel, fresh plain tunnel, keep-alive request and GiB of bulk, for
/// every contender that is a proxy (direct has no proxy CPU), for the workloads ending in
/// `suffix`.
fn cpu_groups(rows: &[Row], contenders: &[String], suffix: &str) -> Vec<CpuGroup> {
    let wanted = [
        ("fresh-tls", "proxy CPU/req", "fresh TLS tunnel (µs)"),
        ("fresh-plain", "proxy CPU/req", "fresh plain tunnel (µs)"),
        ("keepalive", "proxy CPU/req", "keep-alive request (µs)"),
        ("keepalive-plain", "proxy CPU/req", "keep-alive plain (µs)"),
        ("bulk", "proxy CPU/GiB", "bulk, per GiB (s)"),
    ];
    let mut groups = Vec::new();
    for (w, m, label) in wanted {
        let w = format!("{w}{suffix}");
        let Some(r) = rows.iter().find(|r| r.workload == w && r.metric == m) else {
            continue;
        };
        let bars = contenders
            .iter()
            .filter(|c| *c != "direct")
            .map(|c| (c.clone(), r.value(c), r.value(c).map_or("n/a".into(), cpu_figure)))
            .collect();
        groups.push(CpuGroup {
            label: label.to_owned(),
            floors: ["floor", "relay-c"]
                .into_iter()
                .filter_map(|f| Some((f, r.value(f)?)))
                .collect(),
            bars,
        });
    }
    groups
}

fn cpu_figure(v: f64) -> String {
    match v {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// The CPU panel: one sub-chart per unit of work, each on its own scale (their units differ),
/// with each floor's figure as a dashed line across it in the floor's colour.
fn cpu_panel(out: &mut String, top: f64, title: &str, groups: &[CpuGroup]) {
    let _ = writeln!(
        out,
        r#"<text x="20" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top + 22.0,
        escape(title)
    );
    let (left, right) = (60.0, WIDTH - 20.0);
    let (chart_top, chart_bottom) = (top + 40.0, top + PANEL - 48.0);
    if groups.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{left}" y="{}" fill="#999">not measured</text>"##,
            chart_top + 30.0
        );
        return;
    }
    let group_w = (right - left) / groups.len() as f64;
    for (gi, g) in groups.iter().enumerate() {
        let (x0, x1) = (
            left + gi as f64 * group_w + 10.0,
            left + (gi + 1) as f64 * group_w - 10.0,
        );
        let bar_w = (x1 - x0) / g.bars.len().max(1) as f64;
        let max = g.bars.iter().filter_map(|(_, v, _)| *v).fold(0.0_f64, f64::max);
        let max = if max > 0.0 { max } else { 1.0 };
        let room = headroom(&g.bars, bar_w);
        let y_of = |v: f64| chart_bottom - (v / max) * (chart_bottom - chart_top - room);
        let _ = writeln!(
            out,
            r##"<line x1="{x0:.1}" y1="{chart_bottom}" x2="{x1:.1}" y2="{chart_bottom}" stroke="#333"/>"##
        );
        draw_bars(out, x0 + 2.0, bar_w, &g.bars, &y_of, chart_bottom);
        for &(name, floor) in &g.floors {
            let y = y_of(floor);
            let _ = writeln!(
                out,
                r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="{}" stroke-width="1.2" stroke-dasharray="5 3"/>"##,
                color(name)
            );
        }
        let cx = (x0 + x1) / 2.0;
        let floor = match g.floors.is_empty() {
            true => "floors: n/a".to_owned(),
            false => g
                .floors
                .iter()
                .map(|(n, f)| format!("{n} {}", cpu_figure(*f)))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            out,
            r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#555">{}</text>"##,
            chart_bottom + 18.0,
            escape(&g.label),
            chart_bottom + 32.0,
            escape(&floor)
        );
    }
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
