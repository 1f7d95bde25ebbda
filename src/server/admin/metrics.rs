//! `GET /metrics`: the cores' figures in the Prometheus text exposition format (version
//! 0.0.4), one series per core (label `core`), gathered when scraped: the cores count in
//! plain per-core cells, no atomics on their paths. Names follow Prometheus' conventions:
//! the `berth_` prefix, base units, `_total` on counters.

use std::fmt::Write as _;

use crate::broker::Stat;

/// A figure's family name, type and help line, and the `reason` label that tells it from
/// the other figures of its family.
fn describe(
    stat: Stat,
) -> (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
) {
    use Stat::*;
    let (name, kind, help) = match stat {
        RefusedMaxConnections
        | RefusedConnectionRate
        | RefusedClientIdLength
        | RefusedBanned
        | RefusedFlapping
        | RefusedOtherNode => {
            let reason = match stat {
                RefusedMaxConnections => "max_connections",
                RefusedConnectionRate => "connection_rate",
                RefusedClientIdLength => "client_id_length",
                RefusedBanned => "banned",
                RefusedOtherNode => "other_node",
                _ => "flapping",
            };
            let help = "Connections or CONNECTs refused by a limit, by reason.";
            return (
                "berth_connections_refused_total",
                "counter",
                help,
                Some(reason),
            );
        }
        PublishRateLimited | PublishTooDeep => {
            let reason = match stat {
                PublishRateLimited => "rate_limited",
                _ => "too_many_levels",
            };
            let help = "PUBLISH packets refused by a limit, by reason.";
            return (
                "berth_messages_limited_total",
                "counter",
                help,
                Some(reason),
            );
        }
        FlappingBans => (
            "berth_flapping_bans_total",
            "counter",
            "Client ids flapping detection banned.",
        ),
        DroppedSlowSubscriber | DroppedOverload => {
            let reason = match stat {
                DroppedSlowSubscriber => "slow_subscriber",
                _ => "overload",
            };
            let help = "QoS 0 dropped at a full outbox, by whether the core kept up (a \
                        subscriber slower than its peers) or was behind (overload).";
            return ("berth_outbox_dropped_total", "counter", help, Some(reason));
        }
        AclRefused => (
            "berth_acl_refused_total",
            "counter",
            "SUBSCRIBE filters and PUBLISH packets the ACL refused.",
        ),
        AclDenied => (
            "berth_acl_deliveries_denied_total",
            "counter",
            "Deliveries the ACL refused (the recipient may not read the topic).",
        ),
        SubscriptionsTooDeep => (
            "berth_subscriptions_too_deep_total",
            "counter",
            "SUBSCRIBE filters with more than max_topic_levels levels.",
        ),
        ClientsConnected => ("berth_connections", "gauge", "Clients connected."),
        ClientsDisconnected => (
            "berth_sessions_offline",
            "gauge",
            "Persistent sessions whose client is away.",
        ),
        Subscriptions => ("berth_subscriptions", "gauge", "Subscriptions held."),
        RetainedMessages => (
            "berth_retained_messages",
            "gauge",
            "Retained messages (every core holds all of them).",
        ),
        MessagesReceived => (
            "berth_packets_received_total",
            "counter",
            "MQTT control packets received from clients.",
        ),
        MessagesSent => (
            "berth_packets_sent_total",
            "counter",
            "MQTT control packets written to clients.",
        ),
        PublishReceived => (
            "berth_messages_received_total",
            "counter",
            "PUBLISH packets received from clients.",
        ),
        PublishSent => (
            "berth_messages_sent_total",
            "counter",
            "PUBLISH packets written to clients.",
        ),
        PublishDropped => (
            "berth_messages_dropped_total",
            "counter",
            "Messages dropped: a full queue or outbox, or a packet over a client's maximum.",
        ),
        PublishRefused => (
            "berth_messages_refused_total",
            "counter",
            "QoS 1/2 PUBLISH packets refused because the store could not take them.",
        ),
        BytesReceived => (
            "berth_received_bytes_total",
            "counter",
            "Bytes read from clients.",
        ),
        BytesSent => (
            "berth_sent_bytes_total",
            "counter",
            "Bytes written to clients.",
        ),
        StoreBytes => (
            "berth_log_disk_bytes",
            "gauge",
            "Bytes of log segments on disk.",
        ),
        StoreMessages => (
            "berth_stored_messages",
            "gauge",
            "Messages held for sessions (each stored once per core).",
        ),
        StoreQueued => (
            "berth_queued_messages",
            "gauge",
            "Messages waiting in session queues or windows, one per session.",
        ),
        StoreErrors => (
            "berth_log_errors_total",
            "counter",
            "Records the log could not take (disk full, I/O error).",
        ),
        SubscriptionsRefused => (
            "berth_subscriptions_refused_total",
            "counter",
            "SUBSCRIBE filters refused with Quota exceeded (max_subscriptions).",
        ),
    };
    (name, kind, help, None)
}

/// The exposition of every core's figures (`per_core[i]` is core i's).
pub fn render(per_core: &[Vec<(Stat, u64)>], uptime_secs: u64) -> String {
    let mut out = String::new();
    let mut families: Vec<&str> = Vec::new();
    for stat in Stat::ALL {
        let (family, kind, help, _) = describe(stat);
        if families.contains(&family) {
            continue;
        }
        families.push(family);
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for member in Stat::ALL.into_iter().filter(|&s| describe(s).0 == family) {
            let reason = describe(member).3;
            let label = reason.map_or(String::new(), |r| format!(",reason=\"{r}\""));
            for (core, figures) in per_core.iter().enumerate() {
                if let Some((_, value)) = figures.iter().find(|(s, _)| *s == member) {
                    let _ = writeln!(out, "{family}{{core=\"{core}\"{label}}} {value}");
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP berth_uptime_seconds Seconds since the broker started.\n\
         # TYPE berth_uptime_seconds gauge\nberth_uptime_seconds {uptime_secs}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_has_one_family_with_a_series_per_core() {
        let core = |n| Stat::ALL.iter().map(|&s| (s, n)).collect::<Vec<_>>();
        let text = render(&[core(1), core(2)], 5);
        for stat in Stat::ALL {
            let (name, kind, _, reason) = describe(stat);
            assert!(name.starts_with("berth_"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            let families = text.matches(&format!("# TYPE {name} ")).count();
            assert_eq!(families, 1, "{name}");
            let label = reason.map_or(String::new(), |r| format!(",reason=\"{r}\""));
            let series = format!("{name}{{core=\"1\"{label}}} 2\n");
            assert!(text.contains(&series), "{series}");
        }
        assert!(text.ends_with("berth_uptime_seconds 5\n"));
    }
}
