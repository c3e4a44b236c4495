//! The picture: grouped bar charts drawn as plain SVG (no plotting dependency).
//! Throughput relative to direct for each workload, fresh-tls latency, idle memory.

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
        _ => "#777777",
    }
}

/// One group of bars: a label under it, and (contender, bar value, text above the bar).
type Group = (String, Vec<(String, Option<f64>, String)>);

pub(crate) fn render(rows: &[Row], contenders: &[String], caption: &str) -> String {
    let find = |w: &str, m: &str| rows.iter().find(|r| r.workload == w && r.metric == m);
    let mut throughput = Vec::new();
    for (w, m) in [
        ("fresh-tls", "req/s"),
        ("fresh-plain", "req/s"),
        ("keepalive", "req/s"),
        ("bulk", "throughput"),
        ("forward", "req/s"),
    ] {
        let Some(r) = find(w, m) else { continue };
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
        throughput.push((format!("{w} ({})", r.unit), bars));
    }
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
    let mut out = String::new();
    let height = 60.0 + 3.0 * PANEL + 30.0;
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
    legend(
        &mut out,
        contenders,
        WIDTH - 20.0 - 80.0 * contenders.len() as f64,
        12.0,
    );
    panel(
        &mut out,
        60.0,
        "Throughput relative to direct (no proxy) — higher is better; 1.0 = direct",
        &throughput,
        true,
    );
    panel(
        &mut out,
        60.0 + PANEL,
        "fresh-tls latency (ms) — lower is better",
        &latency,
        false,
    );
    panel(
        &mut out,
        60.0 + 2.0 * PANEL,
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
    let max = if max > 0.0 { max * 1.15 } else { 1.0 };
    let y_of = |v: f64| chart_bottom - (v / max) * (chart_bottom - chart_top);
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
    let group_w = (right - left) / groups.len() as f64;
    for (gi, (label, bars)) in groups.iter().enumerate() {
        let gx = left + gi as f64 * group_w;
        let bar_w = (group_w - 30.0) / bars.len().max(1) as f64;
        for (bi, (c, v, text)) in bars.iter().enumerate() {
            let x = gx + 15.0 + bi as f64 * bar_w;
            let cx = x + bar_w / 2.0;
            match v {
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
                    let _ = writeln!(
                        out,
                        r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                        y - 4.0,
                        escape(text)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="9" fill="#b00">{}</text>"##,
                        chart_bottom - 6.0,
                        escape(text)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
            gx + group_w / 2.0,
            chart_bottom + 18.0,
            escape(label)
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
