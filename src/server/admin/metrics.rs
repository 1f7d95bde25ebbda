//! `GET /metrics`: the cores' figures in the Prometheus text exposition format (version
//! 0.0.4), written by the `prometheus-client` crate's encoder, one series per core (label
//! `core`). The figures are gathered when scraped: each core answers with a copy of its
//! plain per-core cells and histograms ([`CoreMetrics`]), so nothing on the cores' paths is
//! shared or atomic; a [`Collector`] over those copies is encoded once and dropped.
//!
//! Names follow Prometheus' conventions: the `berth_` prefix, base units (seconds, bytes),
//! `_total` on counters (added by the encoder). Figures of one kind that differ by cause
//! are one family with a `reason` label (`berth_messages_dropped_total`,
//! `berth_connections_refused_total`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::api::ask;
use super::cores::{Answer, Question};
use super::Admin;
use crate::broker::{CoreStats, Stat};
use crate::histogram::Histogram;
use crate::server::io_stats::Refusals;

/// What one core answers a scrape with.
#[derive(Debug, Clone)]
pub struct CoreMetrics {
    pub stats: CoreStats,
    /// Payload bytes of the messages the core holds for sessions.
    pub stored_bytes: u64,
    pub refusals: Refusals,
    /// `None`: the core's log is never msynced (`fsync = "never"`).
    pub fsync: Option<Histogram>,
    pub checkpoints: Histogram,
}

/// A family: its name (counters without `_total`), type and help.
struct Family {
    name: &'static str,
    kind: MetricType,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: MetricType::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: MetricType::Gauge,
        help,
    }
}

const DROPPED: Family = counter(
    "berth_messages_dropped",
    "Messages or deliveries lost, by reason: queue_full (max_queued_messages/bytes), \
     outbox_full_slow_subscriber and outbox_full_overload (QoS 0 at a full outbox), \
     too_large (over the client's Maximum Packet Size), no_share_member, expired (Message \
     Expiry Interval), no_subscribers, acl (a PUBLISH refused or a delivery denied), \
     disk_full (the log could not take it).",
);
const REFUSED: Family = counter(
    "berth_connections_refused",
    "Connections and CONNECTs refused, by CONNACK reason code (code, none when closed at \
     accept) and reason (the limit, or the code's name).",
);
const LIMITED: Family = counter(
    "berth_messages_limited",
    "PUBLISH packets refused by a limit, by reason.",
);
const SESSIONS: Family = gauge("berth_sessions", "Sessions by state.");

/// A figure's family and the label that tells it from the others in it; `None`: not
/// exported on its own (a total the reasons make up, or counted with its reason code).
fn describe(stat: Stat) -> Option<(Family, Option<(&'static str, &'static str)>)> {
    use Stat::*;
    let reason = |family: Family, why: &'static str| Some((family, Some(("reason", why))));
    let plain = |family: Family| Some((family, None));
    match stat {
        // `publish/messages/dropped` is a sum of some of the reasons below.
        PublishDropped => None,
        // Refused with a CONNACK: in the refusals, by code and reason.
        RefusedClientIdLength | RefusedBanned | RefusedFlapping | RefusedOtherNode => None,
        DroppedQueueFull => reason(DROPPED, "queue_full"),
        DroppedSlowSubscriber => reason(DROPPED, "outbox_full_slow_subscriber"),
        DroppedOverload => reason(DROPPED, "outbox_full_overload"),
        DroppedTooLarge => reason(DROPPED, "too_large"),
        DroppedNoShareMember => reason(DROPPED, "no_share_member"),
        DroppedExpired => reason(DROPPED, "expired"),
        DroppedNoSubscribers => reason(DROPPED, "no_subscribers"),
        DroppedAcl => reason(DROPPED, "acl"),
        DroppedDiskFull => reason(DROPPED, "disk_full"),
        RefusedMaxConnections => Some((REFUSED, Some(("reason", "max_connections")))),
        RefusedConnectionRate => Some((REFUSED, Some(("reason", "connection_rate")))),
        PublishRateLimited => reason(LIMITED, "rate_limited"),
        PublishTooDeep => reason(LIMITED, "too_many_levels"),
        FlappingBans => plain(counter(
            "berth_flapping_bans",
            "Client ids flapping detection banned.",
        )),
        AclRefused => plain(counter(
            "berth_acl_refused",
            "SUBSCRIBE filters and PUBLISH packets the ACL refused.",
        )),
        AclDenied => plain(counter(
            "berth_acl_deliveries_denied",
            "Deliveries the ACL refused (the recipient may not read the topic).",
        )),
        SubscriptionsTooDeep => plain(counter(
            "berth_subscriptions_too_deep",
            "SUBSCRIBE filters with more than max_topic_levels levels.",
        )),
        ClientsConnected => plain(gauge("berth_connections", "Clients connected.")),
        ClientsDisconnected => plain(gauge(
            "berth_sessions_offline",
            "Persistent sessions whose client is away.",
        )),
        ClientsExpired => plain(counter(
            "berth_sessions_expired",
            "Offline sessions ended because their expiry interval passed.",
        )),
        Subscriptions => plain(gauge("berth_subscriptions", "Subscriptions held.")),
        RetainedMessages => plain(gauge(
            "berth_retained_messages",
            "Retained messages (every core holds all of them).",
        )),
        MessagesReceived => plain(counter(
            "berth_packets_received",
            "MQTT control packets received from clients.",
        )),
        MessagesSent => plain(counter(
            "berth_packets_sent",
            "MQTT control packets written to clients.",
        )),
        PublishReceived => plain(counter(
            "berth_messages_received",
            "PUBLISH packets received from clients.",
        )),
        PublishSent => plain(counter(
            "berth_messages_sent",
            "PUBLISH packets written to clients.",
        )),
        PublishRefused => plain(counter(
            "berth_messages_refused",
            "QoS 1/2 PUBLISH packets refused because the store could not take them.",
        )),
        BytesReceived => plain(counter("berth_received_bytes", "Bytes read from clients.")),
        BytesSent => plain(counter("berth_sent_bytes", "Bytes written to clients.")),
        StoreBytes => plain(gauge(
            "berth_log_disk_bytes",
            "Bytes of log segments on disk.",
        )),
        StoreMessages => plain(gauge(
            "berth_stored_messages",
            "Messages held for sessions (each stored once per core).",
        )),
        StoreQueued => plain(gauge(
            "berth_queued_messages",
            "Messages waiting in session queues or windows, one per session.",
        )),
        StoreErrors => plain(counter(
            "berth_log_errors",
            "Records the log could not take (disk full, I/O error).",
        )),
        SubscriptionsRefused => plain(counter(
            "berth_subscriptions_refused",
            "SUBSCRIBE filters refused with Quota exceeded (max_subscriptions).",
        )),
        SocketsAccepted => plain(counter("berth_sockets_accepted", "Connections accepted.")),
        Connects => plain(counter(
            "berth_connects_received",
            "CONNECT packets received.",
        )),
    }
}

/// One scrape: every core's copy, encoded by [`Collector::encode`].
#[derive(Debug)]
struct Scrape {
    cores: Vec<CoreMetrics>,
    uptime_secs: u64,
}

/// A histogram made elsewhere, as the encoder wants it.
struct Buckets<'a>(&'a Histogram);

impl EncodeMetric for Buckets<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0;
        encoder.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &h.buckets(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `Bad User Name or Password` -> `bad_user_name_or_password`.
fn snake(why: &str) -> String {
    let mut out = String::with_capacity(why.len());
    for c in why.chars() {
        match c {
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            _ if out.ends_with('_') || out.is_empty() => {}
            _ => out.push('_'),
        }
    }
    out.trim_end_matches('_').to_string()
}

fn value(encoder: MetricEncoder, kind: MetricType, v: u64) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(encoder),
        _ => ConstGauge::new(v).encode(encoder),
    }
}

impl Scrape {
    fn stat_family(
        &self,
        encoder: &mut DescriptorEncoder,
        family: &Family,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
        for stat in Stat::ALL {
            let Some((of, label)) = describe(stat) else {
                continue;
            };
            if of.name != family.name {
                continue;
            }
            for (core, figures) in self.cores.iter().enumerate() {
                let mut labels = vec![("core", core.to_string())];
                if family.name == REFUSED.name {
                    labels.push(("code", "none".to_string()));
                }
                labels.extend(label.map(|(k, v)| (k, v.to_string())));
                let v = figures.stats.get(stat);
                value(metric.encode_family(&labels)?, family.kind, v)?;
            }
        }
        if family.name == REFUSED.name {
            for (core, figures) in self.cores.iter().enumerate() {
                for (refused, count) in &figures.refusals {
                    let code = refused
                        .code
                        .map_or("none".into(), |c| format!("0x{:02X}", c.0));
                    let labels = [
                        ("core", core.to_string()),
                        ("code", code),
                        ("reason", snake(refused.why)),
                    ];
                    value(metric.encode_family(&labels)?, family.kind, *count)?;
                }
            }
        }
        Ok(())
    }

    fn histogram(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        of: impl Fn(&CoreMetrics) -> Option<&Histogram>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (core, figures) in self.cores.iter().enumerate() {
            if let Some(h) = of(figures) {
                let labels = [("core", core.to_string())];
                Buckets(h).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut done: Vec<&str> = Vec::new();
        for stat in Stat::ALL {
            let Some((family, _)) = describe(stat) else {
                continue;
            };
            if !done.contains(&family.name) {
                done.push(family.name);
                self.stat_family(&mut encoder, &family)?;
            }
        }
        let mut metric =
            encoder.encode_descriptor(SESSIONS.name, SESSIONS.help, None, SESSIONS.kind)?;
        for (core, figures) in self.cores.iter().enumerate() {
            for (state, stat) in [
                ("connected", Stat::ClientsConnected),
                ("disconnected", Stat::ClientsDisconnected),
            ] {
                let labels = [("core", core.to_string()), ("state", state.to_string())];
                let v = figures.stats.get(stat);
                ConstGauge::new(v).encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "berth_stored_message_bytes",
            "Payload bytes of the messages held for sessions (each stored once per core).",
            None,
            MetricType::Gauge,
        )?;
        for (core, figures) in self.cores.iter().enumerate() {
            let labels = [("core", core.to_string())];
            ConstGauge::new(figures.stored_bytes).encode(metric.encode_family(&labels)?)?;
        }
        self.histogram(
            &mut encoder,
            "berth_log_fsync_seconds",
            "How long each round of the log's msync took (not under fsync = never).",
            |c| c.fsync.as_ref(),
        )?;
        self.histogram(
            &mut encoder,
            "berth_checkpoint_duration_seconds",
            "How long each completed log checkpoint took, start to END.",
            |c| Some(&c.checkpoints),
        )?;
        let metric = encoder.encode_descriptor(
            "berth_uptime_seconds",
            "Seconds since the broker started.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.uptime_secs).encode(metric)
    }
}

/// Asks every core for its figures and answers with their exposition.
pub async fn reply(admin: &Admin) -> Response<Full<Bytes>> {
    let mut cores = Vec::with_capacity(admin.cores.len());
    for core in 0..admin.cores.len() {
        match ask(admin, core, Question::Metrics).await {
            Ok(Answer::Metrics(figures)) => cores.push(*figures),
            Ok(_) => {}
            Err((status, why)) => {
                let mut reply = Response::new(Full::new(Bytes::from(why)));
                *reply.status_mut() = status;
                return reply;
            }
        }
    }
    let text = render(cores, admin.started.elapsed().as_secs());
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    reply.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    reply
}

/// The exposition of every core's figures (`cores[i]` is core i's).
pub fn render(cores: Vec<CoreMetrics>, uptime_secs: u64) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { cores, uptime_secs }));
    let mut out = String::new();
    // Writing to a String fails only if a value's own formatting does, which ours never
    // do; a partial page would still parse up to there.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
