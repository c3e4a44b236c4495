//! `BENCH_RENDER=FILE`: draw the picture again from a committed results file (its medians),
//! without running the benchmark: `BENCH_RENDER=benches/results/latest.json cargo test
//! --bench load` writes `latest.svg` beside it.

use std::path::Path;

use serde_json::Value;

use crate::report::{self, Row};
use crate::{WORKLOADS, svg};

/// Reads `path`, rebuilds the rows from its `results`, writes the SVG beside it.
pub(crate) fn redraw(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let contenders: Vec<String> = serde_json::from_value(json["contenders"].clone())?;
    let rows = rows(&json["results"], &contenders);
    if rows.is_empty() {
        return Err(format!("{}: no results to draw", path.display()).into());
    }
    let settings = &json["settings"];
    let caption = format!(
        "{}; {} reps of {}s; concurrency {}",
        json["machine"].as_str().unwrap_or("unknown machine"),
        settings["reps"],
        settings["run_secs"],
        settings["concurrency"]
    );
    let out = path.with_extension("svg");
    std::fs::write(&out, svg::render(&rows, &contenders, &caption))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The rows `report::rows` made, from the medians `report::json` wrote.
fn rows(results: &Value, contenders: &[String]) -> Vec<Row> {
    let Some(workloads) = results.as_object() else {
        return Vec::new();
    };
    let mut names: Vec<&String> = workloads.keys().collect();
    // The bench's own order: the fixed workloads, then idle-N and distinct-N by N.
    names.sort_by_key(|w| {
        let fixed = WORKLOADS.iter().position(|x| x == w);
        let n: usize = w.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (fixed.unwrap_or(WORKLOADS.len()), w.starts_with("distinct"), n)
    });
    let mut rows = Vec::new();
    for w in names {
        for (metric, unit, _) in report::metrics(w) {
            let key = format!("{metric} ({unit})").replace(" ()", "");
            let values: Vec<(String, Option<f64>, u64)> = contenders
                .iter()
                .filter_map(|c| {
                    let entry = &results[w.as_str()][c.as_str()];
                    entry.is_object().then(|| {
                        let errors = entry["errors"].as_u64().unwrap_or(0);
                        (c.clone(), entry[key.as_str()].as_f64(), errors)
                    })
                })
                .collect();
            if !values.is_empty() {
                rows.push(Row {
                    workload: w.clone(),
                    metric,
                    unit,
                    values,
                });
            }
        }
    }
    rows
}
