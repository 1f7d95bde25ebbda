//! Tests of the `/metrics` exposition: every figure in exactly one family, labels as
//! documented, histograms cumulative, and the page in the shape Prometheus' text format
//! wants (the Python parser reads it in `tests/python/test_metrics.py`).

use std::time::Duration;

use super::*;
use crate::histogram::{CHECKPOINT_SECONDS, FSYNC_SECONDS};
use crate::protocol::ReasonCode;
use crate::server::io_stats::Refused;

fn core(n: u64) -> CoreMetrics {
    let mut stats = CoreStats::default();
    for stat in Stat::ALL {
        stats.set(stat, n);
    }
    let mut fsync = Histogram::new(FSYNC_SECONDS);
    fsync.observe(Duration::from_millis(12));
    fsync.observe(Duration::from_millis(30));
    let mut checkpoints = Histogram::new(CHECKPOINT_SECONDS);
    checkpoints.observe(Duration::from_secs(2));
    CoreMetrics {
        stats,
        stored_bytes: 100 * n,
        refusals: vec![(
            Refused {
                code: Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
                why: ReasonCode::BAD_USER_NAME_OR_PASSWORD.description(),
            },
            n,
        )],
        fsync: (n > 1).then_some(fsync),
        checkpoints,
    }
}

fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn every_figure_is_in_one_family_with_a_series_per_core() {
    let text = render(vec![core(1), core(2)], 5);
    for stat in Stat::ALL {
        let Some((family, label)) = describe(stat) else {
            continue;
        };
        assert!(family.name.starts_with("berth_"), "{}", family.name);
        let name = match family.kind {
            MetricType::Counter => format!("{}_total", family.name),
            _ => family.name.to_string(),
        };
        assert_eq!(
            text.matches(&format!("# TYPE {name} ")).count(),
            1,
            "{name}"
        );
        let label = label.map_or(String::new(), |(k, v)| format!(",{k}=\"{v}\""));
        let code = if family.name == REFUSED.name {
            ",code=\"none\""
        } else {
            ""
        };
        let series = format!("{name}{{core=\"1\"{code}{label}}} 2\n");
        assert!(text.contains(&series), "{series} in\n{text}");
    }
    assert!(text.ends_with("berth_uptime_seconds 5\n"), "{text}");
}

#[test]
fn drops_are_one_family_by_reason() {
    let text = render(vec![core(3)], 0);
    let reasons: Vec<&str> = lines_of(&text, "berth_messages_dropped_total{")
        .iter()
        .filter_map(|l| l.split("reason=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        reasons,
        [
            "outbox_full_slow_subscriber",
            "outbox_full_overload",
            "queue_full",
            "disk_full",
            "too_large",
            "no_share_member",
            "expired",
            "no_subscribers",
            "acl"
        ]
    );
    assert!(!text.contains("berth_outbox_dropped"));
}

#[test]
fn refusals_carry_their_reason_code_and_name() {
    let text = render(vec![core(1), core(4)], 0);
    assert!(text.contains(
        "berth_connections_refused_total{core=\"1\",code=\"0x86\",reason=\"bad_user_name_or_password\"} 4\n"
    ), "{text}");
    assert!(text.contains(
        "berth_connections_refused_total{core=\"0\",code=\"none\",reason=\"max_connections\"} 1\n"
    ));
    assert_eq!(snake("malformed CONNECT"), "malformed_connect");
    assert_eq!(snake("Not authorized"), "not_authorized");
}

#[test]
fn histograms_are_cumulative_per_core_and_absent_without_msync() {
    let text = render(vec![core(1), core(2)], 0);
    assert!(text.contains("# TYPE berth_log_fsync_seconds histogram\n"));
    // Core 0 has no msync (fsync = never): no series; core 1 observed 12 ms and 30 ms.
    assert!(!text.contains("berth_log_fsync_seconds_count{core=\"0\"}"));
    assert!(text.contains("berth_log_fsync_seconds_bucket{core=\"1\",le=\"0.01\"} 0\n"));
    assert!(text.contains("berth_log_fsync_seconds_bucket{core=\"1\",le=\"0.025\"} 1\n"));
    assert!(text.contains("berth_log_fsync_seconds_bucket{core=\"1\",le=\"0.05\"} 2\n"));
    assert!(text.contains("berth_log_fsync_seconds_bucket{core=\"1\",le=\"+Inf\"} 2\n"));
    assert!(text.contains("berth_log_fsync_seconds_count{core=\"1\"} 2\n"));
    assert!(text.contains("berth_checkpoint_duration_seconds_count{core=\"0\"} 1\n"));
    assert!(text.contains("berth_checkpoint_duration_seconds_sum{core=\"0\"} 2"));
}

#[test]
fn samples_of_a_family_are_contiguous_and_typed_once() {
    // Prometheus' text format wants one TYPE line per family, before its samples, and
    // the samples of a family together.
    let text = render(vec![core(1), core(2)], 0);
    let mut seen: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default().to_string();
            assert!(!seen.contains(&name), "{name} typed twice");
            seen.push(name.clone());
            current = name;
        } else if !line.starts_with('#') {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            let base = sample
                .strip_suffix("_bucket")
                .or_else(|| sample.strip_suffix("_sum"))
                .or_else(|| sample.strip_suffix("_count"))
                .filter(|base| *base == current)
                .unwrap_or(sample);
            assert_eq!(base, current, "{line}");
        }
    }
    assert!(seen.contains(&"berth_sessions".to_string()));
}
