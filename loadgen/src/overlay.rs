//! `berth-loadgen plot A.json B.json ...`: the latency curves of several saved runs (one
//! broker each, typically the same scenario) drawn in one SVG on one scale, so that two
//! brokers are compared by eye without two axes to reconcile.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::plot::{svg, Curve};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON files written by a run's --json (each names its broker with --broker-name).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Which latency to draw (default: the scenario's headline one: resume for resume,
    /// end_to_end for throughput, connack for connect).
    #[arg(long)]
    pub latency: Option<String>,
}

/// A run's headline latency.
fn default_latency(scenario: &str) -> &'static str {
    match scenario {
        "resume" => "resume",
        "connect" => "connack",
        _ => "end_to_end",
    }
}

/// One run as the plot needs it: its curve and what its title line says.
struct Run {
    curve: Curve,
    scenario: String,
    clients: String,
    qos: Option<u64>,
    date: String,
}

fn load(path: &PathBuf, latency: Option<&str>) -> anyhow::Result<Run> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let run = &doc["run"];
    let scenario = doc["scenario"].as_str().unwrap_or("?").to_string();
    let name = latency.unwrap_or(default_latency(&scenario));
    let broker = run["broker"].as_str().unwrap_or("broker");
    let curve = Curve::from_json(broker, &doc["latency"][name]).with_context(|| {
        format!(
            "{} has no {name} latency curve (written by an older berth-loadgen, or another scenario)",
            path.display()
        )
    })?;
    Ok(Run {
        curve,
        scenario,
        clients: run["clients"].as_str().unwrap_or_default().to_string(),
        qos: run["qos"].as_u64(),
        date: run["date"].as_str().unwrap_or_default().to_string(),
    })
}

/// The distinct values, in order of first appearance, joined with " / ".
fn distinct(values: impl Iterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for v in values.filter(|v| !v.is_empty()) {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(" / ")
}

/// The SVG of the runs in the files.
pub fn overlay(args: &Args) -> anyhow::Result<String> {
    let runs = args
        .runs
        .iter()
        .map(|p| load(p, args.latency.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut curves: Vec<Curve> = runs.iter().map(|r| r.curve.clone()).collect();
    // Two runs of one broker: tell them apart by file name.
    let labels: Vec<String> = curves.iter().map(|c| c.label.clone()).collect();
    for i in 0..curves.len() {
        if labels.iter().filter(|l| **l == labels[i]).count() > 1 {
            let stem = args.runs[i]
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
            curves[i].label = format!("{} ({})", curves[i].label, stem.unwrap_or_default());
        }
    }
    let latency = args
        .latency
        .clone()
        .unwrap_or_else(|| default_latency(&runs[0].scenario).to_string());
    let brokers: Vec<&str> = curves.iter().map(|c| c.label.as_str()).collect();
    let title = format!(
        "{latency} latency by percentile: {}\n{}, {}, QoS {}, {}",
        brokers.join(" vs "),
        distinct(runs.iter().map(|r| r.scenario.clone())),
        distinct(runs.iter().map(|r| r.clients.clone())),
        distinct(
            runs.iter()
                .map(|r| r.qos.map_or(String::new(), |q| q.to_string()))
        ),
        distinct(runs.iter().map(|r| r.date.clone())),
    );
    Ok(svg(&title, &curves))
}

pub fn run(args: &Args) -> anyhow::Result<u64> {
    let text = overlay(args)?;
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{hist, hist_json};

    fn run_file(dir: &std::path::Path, broker: &str, scale_us: u64) -> PathBuf {
        let mut h = hist();
        for i in 1..=2000u64 {
            h.record(i * scale_us).unwrap();
        }
        let doc = serde_json::json!({
            "scenario": "resume",
            "run": {"broker": broker, "scenario": "resume", "clients": "2000 sessions",
                    "qos": 1, "date": "2026-12-02"},
            "latency": {"resume": hist_json(&h)},
        });
        let path = dir.join(format!("{broker}.json"));
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    #[test]
    fn overlay_draws_every_broker_on_one_axis() {
        let dir = std::env::temp_dir().join(format!("lg-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = Args {
            runs: vec![
                run_file(&dir, "berth", 10),
                run_file(&dir, "mosquitto", 300),
            ],
            out: dir.join("o.svg"),
            latency: None,
        };
        let svg = overlay(&args).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.contains("berth (n=2000)") && svg.contains("mosquitto (n=2000)"));
        assert!(svg.contains("resume latency by percentile: berth vs mosquitto"));
        assert!(svg.contains("resume, 2000 sessions, QoS 1, 2026-12-02"));
        // One scale: one pair of axis titles, two curves, and y ticks up to mosquitto's
        // slowest (600 ms), which berth's curve (at most 20 ms) shares.
        assert_eq!(svg.matches("latency (ms)</text>").count(), 1);
        assert_eq!(svg.matches(">percentile (").count(), 1);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">600<"), "{svg}");
        assert!(!svg.contains("coincide"));
    }

    #[test]
    fn runs_of_one_broker_are_told_apart_by_file_name() {
        let dir = std::env::temp_dir().join(format!("lg-overlay-same-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("b")).unwrap();
        let first = run_file(&dir, "berth", 10);
        let second = run_file(&dir.join("b"), "berth", 20);
        let renamed = dir.join("b").join("later.json");
        std::fs::rename(&second, &renamed).unwrap();
        let args = Args {
            runs: vec![first, renamed],
            out: dir.join("o.svg"),
            latency: None,
        };
        let svg = overlay(&args).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.contains("berth (berth) (n=2000)"), "{svg}");
        assert!(svg.contains("berth (later) (n=2000)"), "{svg}");
    }

    #[test]
    fn a_file_without_the_curve_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("lg-overlay-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.json");
        std::fs::write(
            &path,
            r#"{"scenario": "resume", "latency": {"resume": {"count": 1}}}"#,
        )
        .unwrap();
        let args = Args {
            runs: vec![path],
            out: dir.join("o.svg"),
            latency: None,
        };
        let err = format!("{:#}", overlay(&args).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("old.json has no resume latency curve"),
            "{err}"
        );
    }
}
