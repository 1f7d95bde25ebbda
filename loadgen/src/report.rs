//! What a run measured and how it is shown: latency histograms (hdrhistogram, microseconds),
//! counted errors, the load generator's own CPU use (getrusage) and the broker's (from
//! /proc when its pid is given), a readable summary, `--json`, `--hgrm` percentile files
//! and a `--plot` SVG of the percentile curves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::conn::Failure;

pub type Hist = Histogram<u64>;

/// Microsecond histogram from 1 us to one hour, 3 significant digits.
pub fn hist() -> Hist {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Hist, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

pub fn record_ns(h: &mut Hist, ns: u64) {
    h.saturating_record((ns / 1000).max(1));
}

/// Counted failures by kind, with the first few details kept as examples.
#[derive(Default)]
pub struct Errors {
    counts: Mutex<BTreeMap<String, u64>>,
    examples: Mutex<Vec<String>>,
}

impl Errors {
    pub fn add(&self, kind: &str, n: u64, detail: &str) {
        *self
            .counts
            .lock()
            .expect("errors lock")
            .entry(kind.to_string())
            .or_default() += n;
        let mut ex = self.examples.lock().expect("errors lock");
        let same_kind = ex
            .iter()
            .filter(|e| e.starts_with(&format!("{kind}:")))
            .count();
        if ex.len() < 12 && same_kind < 3 {
            ex.push(format!("{kind}: {detail}"));
        }
    }
    pub fn failure(&self, f: &Failure) {
        self.add(f.kind, 1, &f.detail);
    }
    pub fn total(&self) -> u64 {
        self.counts.lock().expect("errors lock").values().sum()
    }
    pub fn json(&self) -> Value {
        let counts = self.counts.lock().expect("errors lock");
        json!({
            "total": counts.values().sum::<u64>(),
            "by_kind": counts.clone(),
            "examples": self.examples.lock().expect("errors lock").clone(),
        })
    }
}

/// CPU seconds (user, system) this process has used so far.
pub fn own_cpu() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// A broker's CPU seconds (utime + stime) and memory, read from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerSample {
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// Anonymous pages only: VmRSS also counts mapped file pages (berth maps its log).
    pub anon_kib: u64,
    /// Mapped file pages (RssFile), quoted beside the anonymous ones.
    pub file_kib: u64,
    pub hwm_kib: u64,
}

pub fn broker_sample(pid: u32) -> Option<BrokerSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(BrokerSample {
        cpu_s: (utime + stime) / ticks,
        rss_kib: kib("VmRSS:"),
        anon_kib: kib("RssAnon:"),
        file_kib: kib("RssFile:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// Percentiles of a histogram as JSON, in microseconds, with the whole percentile curve
/// (`percentiles`: [quantile, us] pairs) for `berth-loadgen plot`.
pub fn hist_json(h: &Hist) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "percentiles": []});
    }
    json!({
        "percentiles": crate::plot::quantile_points(h)
            .into_iter()
            .map(|(q, us)| json!([q, us]))
            .collect::<Vec<_>>(),
        "count": h.len(),
        "min_us": h.min(),
        "mean_us": h.mean(),
        "p50_us": h.value_at_quantile(0.5),
        "p90_us": h.value_at_quantile(0.9),
        "p99_us": h.value_at_quantile(0.99),
        "p99_9_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

/// One `key: value` line per number, nested objects indented, floats to 3 decimals.
fn readable(out: &mut String, key: &str, v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(m) => {
            let _ = writeln!(out, "{pad}{key}:");
            for (k, v) in m {
                readable(out, k, v, depth + 1);
            }
        }
        Value::Array(items) if items.iter().all(|i| i.is_object()) => {
            for (n, item) in items.iter().enumerate() {
                readable(out, &format!("{key}[{n}]"), item, depth);
            }
        }
        Value::Number(n) if n.is_f64() => {
            let _ = writeln!(out, "{pad}{key}: {:.3}", n.as_f64().unwrap_or_default());
        }
        other => {
            let _ = writeln!(out, "{pad}{key}: {other}");
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_date(secs / 86_400)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Everything one run reports: named phases with their numbers, named histograms, errors.
pub struct Report {
    pub scenario: &'static str,
    /// Who took part, for titles: "1000 sessions", "100 pairs", "1 -> 1000".
    clients: String,
    qos: Option<u8>,
    /// The figures a reader wants first (rates, the p99 that matters, errors), in order.
    headline: Vec<String>,
    pub started: Instant,
    cpu_at_start: (f64, f64),
    broker_pid: Option<u32>,
    broker_at_start: Option<BrokerSample>,
    pub fields: Map<String, Value>,
    pub hists: Vec<(String, Hist)>,
    pub errors: Arc<Errors>,
}

impl Report {
    pub fn new(scenario: &'static str, args: Value, broker_pid: Option<u32>) -> Report {
        let mut fields = Map::new();
        fields.insert("args".into(), args);
        Report {
            scenario,
            clients: String::new(),
            qos: None,
            headline: Vec::new(),
            started: Instant::now(),
            cpu_at_start: own_cpu(),
            broker_pid,
            broker_at_start: broker_pid.and_then(broker_sample),
            fields,
            hists: Vec::new(),
            errors: Arc::new(Errors::default()),
        }
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.fields.insert(key.to_string(), value);
    }

    pub fn hist(&mut self, name: &str, h: Hist) {
        self.hists.push((name.to_string(), h));
    }

    /// Who took part ("1000 sessions") and at which QoS, for the titles.
    pub fn describe(&mut self, clients: String, qos: Option<u8>) {
        self.clients = clients;
        self.qos = qos;
    }

    /// One figure for the headline, printed before the details in the order given.
    pub fn headline(&mut self, figure: String) {
        self.headline.push(figure);
    }

    /// The named histogram's p`q` in milliseconds, for a headline; None when it is empty.
    pub fn p_ms(&self, name: &str, q: f64) -> Option<f64> {
        self.hists
            .iter()
            .find(|(n, h)| n == name && !h.is_empty())
            .map(|(_, h)| h.value_at_quantile(q) as f64 / 1000.0)
    }

    /// "berth: resume, 1000 sessions, QoS 1, 2026-12-02": what a plot title names.
    fn subject(&self, broker: &str, date: &str) -> String {
        let mut s = format!("{broker}: {}", self.scenario);
        if !self.clients.is_empty() {
            let _ = write!(s, ", {}", self.clients);
        }
        if let Some(q) = self.qos {
            let _ = write!(s, ", QoS {q}");
        }
        let _ = write!(s, ", {date}");
        s
    }

    fn finish_fields(&mut self) {
        let wall = self.started.elapsed().as_secs_f64();
        let (u, s) = own_cpu();
        let (u0, s0) = self.cpu_at_start;
        let cpu = (u - u0) + (s - s0);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        self.set(
            "loadgen_cpu",
            json!({
                "user_s": u - u0, "system_s": s - s0, "total_s": cpu, "wall_s": wall,
                "cores_busy": cpu / wall.max(1e-9), "machine_cores": cores,
            }),
        );
        if let (Some(pid), Some(before)) = (self.broker_pid, self.broker_at_start) {
            if let Some(after) = broker_sample(pid) {
                self.set(
                    "broker",
                    json!({
                        "pid": pid, "cpu_s": after.cpu_s - before.cpu_s,
                        "rss_kib_before": before.rss_kib, "rss_kib_after": after.rss_kib,
                        "anon_rss_kib_before": before.anon_kib, "anon_rss_kib_after": after.anon_kib,
                        "file_rss_kib_before": before.file_kib, "file_rss_kib_after": after.file_kib,
                        "peak_rss_kib": after.hwm_kib,
                    }),
                );
            }
        }
        self.set("errors", self.errors.json());
    }

    /// The text summary: a title line, the headline (the figures asked for first, then the
    /// error count), then every number and the latency table.
    fn summary(&self, broker: &str, date: &str, errors: &Value) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== berth-loadgen {} ==", self.subject(broker, date));
        let mut headline = self.headline.clone();
        headline.push(format!("errors {}", errors["total"]));
        let _ = writeln!(out, "{}", headline.join(", "));
        let _ = writeln!(out, "-- details --");
        for (k, v) in &self.fields {
            if k == "args" || k == "errors" {
                continue;
            }
            readable(&mut out, k, v, 0);
        }
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}   (ms)",
            "latency", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, h) in &self.hists {
            if h.is_empty() {
                let _ = writeln!(out, "{name:<28} {:>9}", 0);
                continue;
            }
            let _ = writeln!(
                out,
                "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
                name,
                h.len(),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max())
            );
        }
        let _ = writeln!(out, "errors: {}", errors["total"]);
        if let Some(kinds) = errors["by_kind"].as_object() {
            for (k, v) in kinds {
                let _ = writeln!(out, "  {k}: {v}");
            }
        }
        if let Some(ex) = errors["examples"].as_array() {
            for e in ex {
                let _ = writeln!(out, "  e.g. {}", e.as_str().unwrap_or_default());
            }
        }
        out
    }

    /// Prints the summary and writes the files asked for.
    pub fn finish(
        mut self,
        broker: &str,
        json_path: Option<&Path>,
        hgrm_dir: Option<&Path>,
        plot: Option<&Path>,
    ) -> anyhow::Result<u64> {
        self.finish_fields();
        let date = utc_date();
        let errors = self.errors.json();
        print!("{}", self.summary(broker, &date, &errors));

        let mut doc = Map::new();
        doc.insert("scenario".into(), json!(self.scenario));
        doc.insert(
            "run".into(),
            json!({
                "broker": broker, "scenario": self.scenario, "clients": self.clients,
                "qos": self.qos, "date": date, "headline": self.headline,
            }),
        );
        doc.extend(self.fields.clone());
        let lat: Map<String, Value> = self
            .hists
            .iter()
            .map(|(n, h)| (n.clone(), hist_json(h)))
            .collect();
        doc.insert("latency".into(), Value::Object(lat));
        if let Some(path) = json_path {
            let text = serde_json::to_string_pretty(&Value::Object(doc))?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(dir) = hgrm_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, h) in &self.hists {
                let path = dir.join(format!("{}-{name}.hgrm", self.scenario));
                std::fs::write(&path, crate::plot::hgrm(h))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        if let Some(path) = plot {
            let title = format!("{}: latency by percentile", self.subject(broker, &date));
            let curves: Vec<_> = self
                .hists
                .iter()
                .map(|(name, h)| crate::plot::Curve::from_hist(name, h))
                .collect();
            std::fs::write(path, crate::plot::svg(&title, &curves))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(self.errors.total())
    }
}

/// Progress of a long phase on stderr: a bar redrawn in place when stderr is a terminal,
/// else (a log file, CI) one line every `PROGRESS_EVERY`.
pub struct Progress {
    pub done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let terminal = std::io::stderr().is_terminal();
        let (d, s, label) = (done.clone(), stop.clone(), label.to_string());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut last_line = start;
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let n = d.load(Ordering::Relaxed);
                let elapsed = start.elapsed().as_secs_f64();
                if terminal {
                    let width = 30;
                    let filled = (n * width / total.max(1)).min(width) as usize;
                    eprint!(
                        "\r{label:<10} [{}{}] {n}/{total} {elapsed:.1}s ",
                        "#".repeat(filled),
                        ".".repeat(width as usize - filled),
                    );
                } else if last_line.elapsed() >= PROGRESS_EVERY {
                    last_line = Instant::now();
                    eprintln!("{}", progress_line(&label, n, total, elapsed));
                }
            }
            if terminal {
                eprintln!();
            }
        });
        Progress {
            done,
            stop,
            thread: Some(thread),
        }
    }

    pub fn tick(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line of progress for a log: "connect: 250/1000 (25%), 5 s, 50/s".
fn progress_line(label: &str, done: u64, total: u64, elapsed_s: f64) -> String {
    format!(
        "{label}: {done}/{total} ({:.0}%), {elapsed_s:.0} s, {:.0}/s",
        done as f64 * 100.0 / total.max(1) as f64,
        done as f64 / elapsed_s.max(1e-9)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_789), "2026-12-02");
    }

    #[test]
    fn progress_lines_for_a_log() {
        assert_eq!(
            progress_line("connect", 250, 1000, 5.0),
            "connect: 250/1000 (25%), 5 s, 50/s"
        );
    }

    #[test]
    fn headline_comes_before_the_details_and_the_json_names_the_run() {
        let dir = std::env::temp_dir().join(format!("lg-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.json");
        let mut r = Report::new("throughput", json!([]), None);
        r.describe("2 pairs".into(), Some(1));
        r.headline("msgs/s out 10".into());
        let mut h = hist();
        for us in 1..=100u64 {
            h.record(us * 1000).unwrap();
        }
        r.hist("end_to_end", h);
        r.errors.add("closed", 2, "by the broker");
        let text = r.summary("mosquitto", "2026-12-02", &r.errors.json());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "== berth-loadgen mosquitto: throughput, 2 pairs, QoS 1, 2026-12-02 =="
        );
        assert_eq!(lines[1], "msgs/s out 10, errors 2");
        assert_eq!(lines[2], "-- details --");
        assert!(text.find("end_to_end").unwrap() > text.find("-- details --").unwrap());
        r.finish("mosquitto", Some(&path), None, None).unwrap();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["run"]["broker"], "mosquitto");
        assert_eq!(doc["run"]["clients"], "2 pairs");
        assert_eq!(doc["run"]["qos"], 1);
        assert_eq!(doc["latency"]["end_to_end"]["count"], 100);
        assert!(!doc["latency"]["end_to_end"]["percentiles"]
            .as_array()
            .unwrap()
            .is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
