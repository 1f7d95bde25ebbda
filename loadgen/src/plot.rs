//! Latency histograms as files: HdrHistogram's percentile-distribution text (the `.hgrm`
//! format HdrHistogram's plotter reads, values in milliseconds) and a small hand-written SVG
//! with one percentile curve per histogram on the usual log "1/(1-percentile)" axis.
//!
//! The SVG draws every curve on one scale: round latency ticks (1, 2 or 5 times a power of
//! ten), an x axis that ends at the percentile the largest sample count supports (with n
//! samples, 1 - 1/n: 99.9% for 1,000), each curve cut at its own count, and a legend note
//! for curves that coincide (which would otherwise hide one another).

use std::fmt::Write as _;

use crate::report::Hist;

/// The percentile distribution, values in milliseconds (the histogram holds microseconds).
pub fn hgrm(h: &Hist) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:>12.3} {q:>14.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// A percentile curve: `points` are (quantile, latency ms), quantiles rising.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub count: u64,
    pub points: Vec<(f64, f64)>,
}

/// The (quantile, microseconds) points of a histogram's percentile curve, 5 per halving of
/// the distance to 100%, as HdrHistogram's own percentile output.
pub fn quantile_points(h: &Hist) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .collect()
}

impl Curve {
    pub fn from_hist(label: &str, h: &Hist) -> Curve {
        Curve::from_points(label, h.len(), quantile_points(h))
    }

    /// From a histogram as `--json` writes it (`report::hist_json`); None if it has no curve.
    pub fn from_json(label: &str, v: &serde_json::Value) -> Option<Curve> {
        let count = v.get("count")?.as_u64()?;
        let points = v
            .get("percentiles")?
            .as_array()?
            .iter()
            .map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_u64()?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Curve::from_points(label, count, points))
    }

    fn from_points(label: &str, count: u64, points: Vec<(f64, u64)>) -> Curve {
        Curve {
            label: label.to_string(),
            count,
            points: points
                .into_iter()
                .map(|(q, us)| (q, us as f64 / 1000.0))
                .collect(),
        }
    }

    /// The latency at quantile `q` (the first point at or past it).
    fn at(&self, q: f64) -> f64 {
        self.points
            .iter()
            .find(|(pq, _)| *pq >= q)
            .or(self.points.last())
            .map_or(0.0, |(_, ms)| *ms)
    }
}

/// How far right the x axis goes, in nines (log10 of 1/(1-q)): the percentile `count`
/// samples support, 1 - 1/count, and at least 90% so an axis is drawn.
pub fn max_nines(count: u64) -> f64 {
    (count.max(1) as f64).log10().max(1.0)
}

/// A round step for about `ticks` intervals up to `max`: 1, 2 or 5 times a power of ten.
pub fn tick_step(max: f64, ticks: usize) -> f64 {
    let raw = (max / ticks.max(1) as f64).max(1e-9);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// Tick values from 0 through the first multiple of the step at or above `max`.
pub fn ticks(max: f64, ticks: usize) -> Vec<f64> {
    let step = tick_step(max, ticks);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A tick label without trailing zeros: 0, 0.5, 2, 250, 1000.
fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A percentile label for a number of nines: 0%, 90%, 99%, 99.9%, ...
fn percentile_label(nines: usize) -> String {
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat(n - 2)),
    }
}

/// The points of `c` the sample count supports: those below 1 - 1/count, then the largest
/// value placed at 1 - 1/count.
pub fn supported_points(c: &Curve) -> Vec<(f64, f64)> {
    let limit = 1.0 - 1.0 / c.count.max(1) as f64;
    let mut points: Vec<(f64, f64)> = c
        .points
        .iter()
        .copied()
        .filter(|(q, _)| *q < limit)
        .collect();
    if let Some(&(_, max)) = c.points.last() {
        points.push((limit, max));
    }
    points
}

/// Groups of curves (by index) that coincide: within 1% (or 1 us) of one another at every
/// point of the first curve up to the smaller count's cut-off.
pub fn coinciding(curves: &[Curve]) -> Vec<Vec<usize>> {
    let same = |a: &Curve, b: &Curve| {
        let limit = 1.0 - 1.0 / a.count.min(b.count).max(1) as f64;
        a.points
            .iter()
            .chain(b.points.iter())
            .filter(|(q, _)| *q <= limit)
            .all(|(q, _)| {
                let (x, y) = (a.at(*q), b.at(*q));
                (x - y).abs() <= (0.01 * x.max(y)).max(0.001)
            })
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, c) in curves.iter().enumerate() {
        if c.points.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|g| same(&curves[g[0]], c)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups.retain(|g| g.len() > 1);
    groups
}

const W: f64 = 920.0;
const H: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 280.0;
/// Characters of a legend line at 12 px before it wraps, to stay inside the picture.
const LEGEND_CHARS: usize = 36;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// An SVG of latency (ms, linear) against percentile (log scale of 1/(1-p)), every curve on
/// one scale. `title` may hold a second line after a newline.
pub fn svg(title: &str, curves: &[Curve]) -> String {
    let drawn: Vec<&Curve> = curves.iter().filter(|c| !c.points.is_empty()).collect();
    let count = drawn.iter().map(|c| c.count).max().unwrap_or(1);
    let nines = max_nines(count);
    let max_ms = drawn
        .iter()
        .flat_map(|c| c.points.iter().map(|(_, ms)| *ms))
        .fold(0.0, f64::max)
        .max(0.001);
    let y_ticks = ticks(max_ms, 5);
    let y_max = *y_ticks.last().unwrap_or(&max_ms);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |q: f64| LEFT + plot_w * ((1.0 / (1.0 - q).max(1e-12)).log10() / nines).min(1.0);
    let y = |ms: f64| TOP + plot_h * (1.0 - ms / y_max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    for (i, line) in title.lines().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="{}">{}</text>"#,
            W / 2.0,
            20.0 + 18.0 * i as f64,
            if i == 0 { 15 } else { 12 },
            escape(line)
        );
    }
    for n in 0..=nines.floor() as usize {
        let px = LEFT + plot_w * n as f64 / nines;
        let _ = writeln!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 18.0,
            percentile_label(n)
        );
    }
    for v in &y_ticks {
        let py = y(*v);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            tick_label(*v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile (axis ends at 1 - 1/{count} samples)</text>"#,
        LEFT + plot_w / 2.0,
        H - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (ms)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let mut legend_y = TOP;
    for (i, c) in curves.iter().enumerate() {
        if c.points.is_empty() {
            continue;
        }
        let colour = COLOURS[i % COLOURS.len()];
        let mut points = String::new();
        for (q, ms) in supported_points(c) {
            let _ = write!(points, "{:.1},{:.1} ", x(q), y(ms));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>"#
        );
        legend_y += 16.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"3\"/>",
            W - RIGHT + 10.0,
            W - RIGHT + 30.0,
        );
        let label = format!("{} (n={})", c.label, c.count);
        for (k, line) in wrap(&label, LEGEND_CHARS).iter().enumerate() {
            if k > 0 {
                legend_y += 14.0;
            }
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                W - RIGHT + 35.0,
                legend_y + 4.0,
                escape(line)
            );
        }
    }
    for group in coinciding(curves) {
        legend_y += 8.0;
        let names: Vec<&str> = group.iter().map(|&i| curves[i].label.as_str()).collect();
        let note = format!("{} coincide (within 1%)", names.join(" = "));
        for line in wrap(&note, LEGEND_CHARS + 4) {
            legend_y += 14.0;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{legend_y}" font-style="italic">{}</text>"#,
                W - RIGHT + 10.0,
                escape(&line)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Splits `text` at spaces into lines of at most `width` characters (a longer word stays
/// whole on its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{hist, hist_json};

    fn uniform(n: u64, scale_us: u64) -> Hist {
        let mut h = hist();
        for i in 1..=n {
            h.record(i * scale_us).unwrap();
        }
        h
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(7.3, 5), 2.0);
        assert_eq!(tick_step(1234.0, 5), 500.0);
        assert_eq!(tick_step(0.9, 5), 0.2);
        assert_eq!(tick_step(10.0, 5), 2.0);
        assert_eq!(ticks(7.3, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(tick_label(0.2 * 3.0), "0.6");
        assert_eq!(tick_label(1000.0), "1000");
    }

    #[test]
    fn axis_and_curves_stop_where_the_sample_count_does() {
        assert_eq!(max_nines(1000), 3.0);
        assert_eq!(max_nines(5), 1.0); // an axis to 90% is drawn at least
        let c = Curve::from_hist("x", &uniform(1000, 10));
        let points = supported_points(&c);
        let limit = 1.0 - 1.0 / 1000.0;
        assert!(points.iter().all(|(q, _)| *q <= limit));
        assert_eq!(points.last().unwrap(), &(limit, c.points.last().unwrap().1));
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(1), "90%");
        let svg = svg("t", &[c]);
        assert!(
            svg.contains(">99.9%<") && !svg.contains(">99.99%<"),
            "{svg}"
        );
    }

    #[test]
    fn json_round_trip_gives_the_same_curve() {
        let h = uniform(500, 37);
        let from_json = Curve::from_json("b", &hist_json(&h)).unwrap();
        assert_eq!(from_json, Curve::from_hist("b", &h));
        assert_eq!(from_json.count, 500);
        assert!(Curve::from_json("b", &serde_json::json!({"count": 3})).is_none());
    }

    #[test]
    fn coinciding_curves_are_grouped_and_said_to_coincide() {
        let a = Curve::from_hist("a", &uniform(1000, 10));
        let b = Curve::from_hist("b", &uniform(1000, 10));
        let c = Curve::from_hist("c", &uniform(1000, 20));
        assert_eq!(
            coinciding(&[a.clone(), b.clone(), c.clone()]),
            vec![vec![0, 1]]
        );
        assert!(coinciding(&[a.clone(), c.clone()]).is_empty());
        let svg = svg("t", &[a, b, c]);
        assert!(svg.contains("a = b coincide"), "{svg}");
    }

    #[test]
    fn legend_lines_wrap_at_spaces() {
        assert_eq!(
            wrap("storm_connack = first_message = resume coincide", 20),
            vec!["storm_connack =", "first_message =", "resume coincide"]
        );
        assert_eq!(wrap("short", 20), vec!["short"]);
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            vec!["averyveryverylongword", "x"]
        );
    }
}
