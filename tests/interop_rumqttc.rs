//! The interop scenarios of `tests/interop/scenarios.txt` with rumqttc 0.24: MQTT 3.1.1
//! through `rumqttc::AsyncClient`, 5.0 through `rumqttc::v5::AsyncClient`. Each scenario is
//! written once against [`Client`], which hides which of the two APIs is underneath, and
//! runs in both versions (`v311::<scenario>`, `v5::<scenario>`).
//!
//! As in the Python and MQTT.js drivers, publishers and subscribers get client ids owned by
//! different cores of a two-core broker, so every delivery crosses cores.
//!
//! Known limit: rumqttc 0.24 cannot parse a 5.0 DISCONNECT of remaining length 1
//! (`E0 01 8E`), so in `takeover` a v5 connection may end in a decode error instead of
//! showing reason 0x8E; the scenario accepts either (the raw-bytes test in
//! tests/python/test_takeover.py checks the reason code itself).

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::{id_owned_by, Broker};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const STEP: Duration = Duration::from_secs(10);
const CORES: usize = 2;
/// For `expiry`: the broker's cap on Session Expiry, which is also how long a 3.1.1 Clean
/// Session 0 session outlives its connection.
const EXPIRY_SECS: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V311,
    V5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
}

fn msg(topic: &str, payload: &str, qos: u8, retain: bool) -> Msg {
    Msg {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        qos,
        retain,
    }
}

/// What either event loop reports, in one vocabulary.
#[derive(Debug)]
enum Ev {
    ConnAck {
        present: bool,
        accepted: bool,
    },
    SubAck(Vec<Option<u8>>),
    Msg(Msg),
    /// PUBACK or PUBCOMP for one of our PUBLISHes; `ok`: a success reason code.
    Acked {
        ok: bool,
    },
    /// A PUBLISH went out (how QoS 0 publishing is known to be done).
    Sent,
    DisconnectSent,
    /// The server's DISCONNECT (5.0) and its reason code.
    Disconnect(u8),
    /// The event loop failed (connection closed, undecodable packet); it is not polled again,
    /// so rumqttc never reconnects on its own.
    Closed(String),
}

#[derive(Default)]
struct Opts {
    clean: bool,
    expiry: Option<u32>,
    will: Option<(String, String)>,
}

fn clean() -> Opts {
    Opts {
        clean: true,
        ..Opts::default()
    }
}

fn persistent(expiry: u32) -> Opts {
    Opts {
        clean: false,
        expiry: Some(expiry),
        will: None,
    }
}

enum Handle {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

struct Client {
    id: String,
    handle: Handle,
    events: mpsc::UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
    session_present: bool,
    inbox: VecDeque<Msg>,
}

fn qos311(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn spawn_v311(
    options: rumqttc::MqttOptions,
) -> (Handle, mpsc::UnboundedReceiver<Ev>, JoinHandle<()>) {
    use rumqttc::{ConnectReturnCode, Event, Outgoing, Packet, SubscribeReasonCode};
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ev = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => Ev::ConnAck {
                    present: a.session_present,
                    accepted: a.code == ConnectReturnCode::Success,
                },
                Ok(Event::Incoming(Packet::SubAck(s))) => Ev::SubAck(
                    s.return_codes
                        .iter()
                        .map(|c| match c {
                            SubscribeReasonCode::Success(q) => Some(*q as u8),
                            SubscribeReasonCode::Failure => None,
                        })
                        .collect(),
                ),
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Msg(Msg {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    retain: p.retain,
                }),
                Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                    Ev::Acked { ok: true }
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) => Ev::Sent,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => Ev::DisconnectSent,
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Ev::Closed(e.to_string()));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    (Handle::V311(client), rx, task)
}

fn spawn_v5(
    options: rumqttc::v5::MqttOptions,
) -> (Handle, mpsc::UnboundedReceiver<Ev>, JoinHandle<()>) {
    use rumqttc::v5::mqttbytes::v5::{
        ConnectReturnCode, Packet, PubAckReason, PubCompReason, SubscribeReasonCode,
    };
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ev = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => Ev::ConnAck {
                    present: a.session_present,
                    accepted: a.code == ConnectReturnCode::Success,
                },
                Ok(Event::Incoming(Packet::SubAck(s))) => Ev::SubAck(
                    s.return_codes
                        .iter()
                        .map(|c| match c {
                            SubscribeReasonCode::Success(q) => Some(*q as u8),
                            _ => None,
                        })
                        .collect(),
                ),
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Msg(Msg {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    retain: p.retain,
                }),
                Ok(Event::Incoming(Packet::PubAck(a))) => Ev::Acked {
                    ok: a.reason == PubAckReason::Success,
                },
                Ok(Event::Incoming(Packet::PubComp(a))) => Ev::Acked {
                    ok: a.reason == PubCompReason::Success,
                },
                Ok(Event::Incoming(Packet::Disconnect(d))) => Ev::Disconnect(d.reason_code as u8),
                Ok(Event::Outgoing(Outgoing::Publish(_))) => Ev::Sent,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => Ev::DisconnectSent,
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Ev::Closed(e.to_string()));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    (Handle::V5(client), rx, task)
}

impl Client {
    /// Connects, waits for CONNACK, makes the subscriptions and checks what was granted.
    async fn open(
        v: Version,
        broker: &Broker,
        id: &str,
        subs: &[(&str, u8)],
        opts: Opts,
    ) -> Client {
        let (handle, events, task) = match v {
            Version::V311 => {
                let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port());
                o.set_clean_session(opts.clean)
                    .set_keep_alive(Duration::from_secs(30));
                if let Some((topic, payload)) = &opts.will {
                    o.set_last_will(rumqttc::LastWill::new(
                        topic,
                        payload.as_bytes().to_vec(),
                        qos311(1),
                        false,
                    ));
                }
                spawn_v311(o)
            }
            Version::V5 => {
                use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill};
                let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", broker.port());
                o.set_clean_start(opts.clean)
                    .set_keep_alive(Duration::from_secs(30));
                let mut props = ConnectProperties::new();
                props.session_expiry_interval = opts.expiry;
                o.set_connect_properties(props);
                if let Some((topic, payload)) = &opts.will {
                    o.set_last_will(LastWill::new(
                        topic.as_str(),
                        payload.as_bytes().to_vec(),
                        qos5(1),
                        false,
                        None,
                    ));
                }
                spawn_v5(o)
            }
        };
        let mut client = Client {
            id: id.into(),
            handle,
            events,
            task,
            session_present: false,
            inbox: VecDeque::new(),
        };
        match client.next("CONNACK").await {
            Ev::ConnAck { present, accepted } => {
                assert!(accepted, "{id}: CONNACK refused");
                client.session_present = present;
            }
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        }
        if !subs.is_empty() {
            client.subscribe(subs).await;
        }
        client
    }

    /// The next event that is not a message (messages go to the inbox).
    async fn next(&mut self, what: &str) -> Ev {
        loop {
            let ev = timeout(STEP, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: no {what} within {STEP:?}", self.id))
                .unwrap_or_else(|| panic!("{}: event loop gone waiting for {what}", self.id));
            match ev {
                Ev::Msg(m) => self.inbox.push_back(m),
                other => return other,
            }
        }
    }

    async fn subscribe(&mut self, subs: &[(&str, u8)]) {
        match &self.handle {
            Handle::V311(c) => c
                .subscribe_many(
                    subs.iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.to_string(), qos311(*q))),
                )
                .await
                .expect("queue SUBSCRIBE"),
            Handle::V5(c) => c
                .subscribe_many(
                    subs.iter().map(|(f, q)| {
                        rumqttc::v5::mqttbytes::v5::Filter::new(f.to_string(), qos5(*q))
                    }),
                )
                .await
                .expect("queue SUBSCRIBE"),
        }
        loop {
            match self.next("SUBACK").await {
                Ev::SubAck(granted) => {
                    let wanted: Vec<_> = subs.iter().map(|(_, q)| Some(*q)).collect();
                    assert_eq!(granted, wanted, "{}: granted QoS", self.id);
                    return;
                }
                Ev::Sent | Ev::Acked { .. } => {}
                other => panic!("{}: expected SUBACK, got {other:?}", self.id),
            }
        }
    }

    /// Publishes each payload, then waits until all are sent (QoS 0) or completely
    /// acknowledged with success (PUBACK for QoS 1, PUBCOMP for QoS 2).
    async fn publish(&mut self, topic: &str, payloads: &[&str], qos: u8, retain: bool) {
        for payload in payloads {
            let payload = payload.as_bytes().to_vec();
            match &self.handle {
                Handle::V311(c) => c
                    .publish(topic, qos311(qos), retain, payload)
                    .await
                    .map_err(|e| e.to_string()),
                Handle::V5(c) => c
                    .publish(topic, qos5(qos), retain, payload)
                    .await
                    .map_err(|e| e.to_string()),
            }
            .expect("queue PUBLISH");
        }
        let (mut sent, mut acked) = (0, 0);
        while (if qos == 0 { sent } else { acked }) < payloads.len() {
            match self.next("publish acknowledgements").await {
                Ev::Sent => sent += 1,
                Ev::Acked { ok } => {
                    assert!(ok, "{}: a PUBLISH acknowledged with an error", self.id);
                    acked += 1;
                }
                other => panic!("{}: while publishing: {other:?}", self.id),
            }
        }
    }

    /// Exactly the next `n` messages, in arrival order.
    async fn expect(&mut self, n: usize) -> Vec<Msg> {
        let deadline = Instant::now() + STEP;
        while self.inbox.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.events.recv()).await {
                Ok(Some(Ev::Msg(m))) => self.inbox.push_back(m),
                Ok(Some(Ev::Sent | Ev::Acked { .. })) => {}
                Ok(other) => panic!("{}: waiting for messages: {other:?}", self.id),
                Err(_) => panic!(
                    "{}: {} of {n} messages arrived: {:?}",
                    self.id,
                    self.inbox.len(),
                    self.inbox
                ),
            }
        }
        assert_eq!(
            self.inbox.len(),
            n,
            "{}: more messages than expected: {:?}",
            self.id,
            self.inbox
        );
        self.inbox.drain(..).collect()
    }

    /// Normal DISCONNECT; waits until the broker has closed the connection.
    async fn disconnect(mut self) {
        match &self.handle {
            Handle::V311(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Handle::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        }
        .expect("queue DISCONNECT");
        loop {
            match self.next("DISCONNECT to go out").await {
                Ev::DisconnectSent => break,
                Ev::Sent | Ev::Acked { .. } => {}
                other => panic!("{}: while disconnecting: {other:?}", self.id),
            }
        }
        // The broker closes the connection after DISCONNECT: the event loop ends.
        let _ = timeout(STEP, &mut self.task).await;
    }

    /// The connection ends without DISCONNECT: the event loop (and its socket) is dropped.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits until the broker ends this connection: Some(reason) for a 5.0 DISCONNECT, None
    /// when the connection just closed (3.1.1; or rumqttc 0.24 failing to decode it).
    async fn wait_taken_over(&mut self) -> Option<u8> {
        match self.next("the connection to be taken over").await {
            Ev::Disconnect(reason) => Some(reason),
            Ev::Closed(error) => {
                eprintln!("{}: connection ended: {error}", self.id);
                None
            }
            other => panic!("{}: expected the connection to end, got {other:?}", self.id),
        }
    }
}

/// A two-core broker with small log segments: they are allocated whole, two per core, and
/// the default 64 MiB ones would put a quarter GiB on disk per test.
fn start(extra: &[&str]) -> Broker {
    let mut args = vec!["--segment-size", "1048576"];
    args.extend_from_slice(extra);
    Broker::start_with(CORES, &args)
}

/// Connects, publishes, waits for every acknowledgement, disconnects.
async fn publish(
    v: Version,
    b: &Broker,
    id: &str,
    topic: &str,
    payloads: &[&str],
    qos: u8,
    retain: bool,
) {
    let mut c = Client::open(v, b, id, &[], clean()).await;
    c.publish(topic, payloads, qos, retain).await;
    c.disconnect().await;
}

/// Connects, subscribes, disconnects normally at once; returns Session Present.
async fn visit(v: Version, b: &Broker, id: &str, subs: &[(&str, u8)], opts: Opts) -> bool {
    let c = Client::open(v, b, id, subs, opts).await;
    let present = c.session_present;
    c.disconnect().await;
    present
}

/// (publisher, subscriber, spare): the publisher on core 0, the others on core 1.
fn ids(v: Version, scenario: &str) -> (String, String, String) {
    let tag = format!("rumqttc-{v:?}-{scenario}");
    (
        id_owned_by(0, CORES, &format!("{tag}-pub")),
        id_owned_by(1, CORES, &format!("{tag}-sub")),
        id_owned_by(1, CORES, &format!("{tag}-spare")),
    )
}

fn topic(v: Version, scenario: &str, leaf: &str) -> String {
    format!("interop/rumqttc-{v:?}/{scenario}/{leaf}")
}

/// Every message once, and in order within each QoS.
fn assert_in_order(got: &[Msg], expected: &[Msg]) {
    let key = |m: &Msg| format!("{m:?}");
    let mut a: Vec<_> = got.iter().map(key).collect();
    let mut b: Vec<_> = expected.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "every message once");
    for qos in 0..=2 {
        let of = |list: &[Msg]| {
            list.iter()
                .filter(|m| m.qos == qos)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(of(got), of(expected), "QoS {qos} messages in order");
    }
}

// --- the scenarios ---------------------------------------------------------------------------

async fn connect(v: Version) {
    let b = start(&[]);
    let (_, sub, _) = ids(v, "connect");
    assert!(!visit(v, &b, &sub, &[], clean()).await);
    assert!(!visit(v, &b, &sub, &[], persistent(300)).await);
    assert!(visit(v, &b, &sub, &[], persistent(300)).await);
    assert!(!visit(v, &b, &sub, &[], clean()).await);
    b.assert_clean_shutdown();
}

async fn qos_round_trip(v: Version, qos: u8) {
    let b = start(&[]);
    let name = format!("qos{qos}");
    let (pub_id, sub, _) = ids(v, &name);
    let t = topic(v, &name, "t");
    let mut s = Client::open(v, &b, &sub, &[(&t, qos)], clean()).await;
    publish(v, &b, &pub_id, &t, &["m0", "m1", "m2"], qos, false).await;
    let expected: Vec<_> = ["m0", "m1", "m2"]
        .iter()
        .map(|p| msg(&t, p, qos, false))
        .collect();
    assert_eq!(s.expect(3).await, expected);
    s.disconnect().await;
    b.assert_clean_shutdown();
}

async fn qos0(v: Version) {
    qos_round_trip(v, 0).await
}

async fn qos1(v: Version) {
    qos_round_trip(v, 1).await
}

async fn qos2(v: Version) {
    qos_round_trip(v, 2).await
}

async fn retained(v: Version) {
    let b = start(&[]);
    let (pub_id, sub, spare) = ids(v, "retained");
    let (t, marker) = (topic(v, "retained", "t"), topic(v, "retained", "marker"));
    publish(v, &b, &pub_id, &t, &["kept"], 1, true).await;
    let mut s = Client::open(v, &b, &sub, &[(&t, 1)], clean()).await;
    assert_eq!(s.expect(1).await, [msg(&t, "kept", 1, true)]);
    publish(v, &b, &pub_id, &t, &[""], 1, true).await;
    assert_eq!(s.expect(1).await, [msg(&t, "", 1, false)]);
    s.disconnect().await;
    let mut late = Client::open(v, &b, &spare, &[(&t, 1), (&marker, 1)], clean()).await;
    publish(v, &b, &pub_id, &marker, &["after"], 1, false).await;
    assert_eq!(
        late.expect(1).await,
        [msg(&marker, "after", 1, false)],
        "a cleared retained message was sent"
    );
    late.disconnect().await;
    b.assert_clean_shutdown();
}

async fn will(v: Version) {
    let b = start(&[]);
    let (pub_id, sub, spare) = ids(v, "will");
    let t = topic(v, "will", "t");
    let with_will = |payload: &str| Opts {
        clean: true,
        expiry: None,
        will: Some((t.clone(), payload.into())),
    };
    let mut watcher = Client::open(v, &b, &sub, &[(&t, 1)], clean()).await;
    Client::open(v, &b, &pub_id, &[], with_will("gone"))
        .await
        .kill()
        .await;
    assert_eq!(watcher.expect(1).await, [msg(&t, "gone", 1, false)]);
    visit(v, &b, &spare, &[], with_will("must not appear")).await;
    publish(v, &b, &pub_id, &t, &["marker"], 1, false).await;
    assert_eq!(
        watcher.expect(1).await,
        [msg(&t, "marker", 1, false)],
        "the will followed a normal DISCONNECT"
    );
    watcher.disconnect().await;
    b.assert_clean_shutdown();
}

async fn resume(v: Version) {
    let b = start(&[]);
    let (pub_id, sub, _) = ids(v, "resume");
    let t = topic(v, "resume", "queued");
    visit(v, &b, &sub, &[(&t, 2)], persistent(300)).await;
    let sent: Vec<Msg> = (0..6u8)
        .map(|i| msg(&t, &format!("q{i}"), 1 + i % 2, false))
        .collect();
    for m in &sent {
        let payload = String::from_utf8(m.payload.clone()).expect("text");
        publish(v, &b, &pub_id, &t, &[&payload], m.qos, false).await;
    }
    let mut back = Client::open(v, &b, &sub, &[], persistent(300)).await;
    assert!(back.session_present, "Session Present on resume");
    assert_in_order(&back.expect(sent.len()).await, &sent);
    back.disconnect().await;
    b.assert_clean_shutdown();
}

async fn expiry(v: Version) {
    let b = start(&["--max-session-expiry", &EXPIRY_SECS.to_string()]);
    let (pub_id, sub, _) = ids(v, "expiry");
    let (t, marker) = (topic(v, "expiry", "t"), topic(v, "expiry", "marker"));
    visit(v, &b, &sub, &[(&t, 1)], persistent(EXPIRY_SECS)).await;
    publish(v, &b, &pub_id, &t, &["queued"], 1, false).await;
    // The expiry must really pass: this waits for time, not for an event.
    sleep(Duration::from_millis(u64::from(EXPIRY_SECS) * 1000 + 1500)).await;
    let mut back = Client::open(v, &b, &sub, &[(&marker, 1)], persistent(EXPIRY_SECS)).await;
    assert!(!back.session_present, "Session Present after expiry");
    publish(v, &b, &pub_id, &marker, &["marker"], 1, false).await;
    assert_eq!(
        back.expect(1).await,
        [msg(&marker, "marker", 1, false)],
        "a message of the expired session came"
    );
    back.disconnect().await;
    b.assert_clean_shutdown();
}

async fn takeover(v: Version) {
    let b = start(&[]);
    let (pub_id, sub, _) = ids(v, "takeover");
    let t = topic(v, "takeover", "t");
    let mut first = Client::open(v, &b, &sub, &[(&t, 1)], persistent(300)).await;
    let mut second = Client::open(v, &b, &sub, &[], persistent(300)).await;
    assert!(second.session_present, "Session Present on takeover");
    let reason = first.wait_taken_over().await;
    match v {
        Version::V311 => assert_eq!(reason, None),
        // rumqttc 0.24 may fail to decode the 3-byte DISCONNECT: see the module docs.
        Version::V5 => assert!(matches!(reason, None | Some(0x8E)), "reason {reason:?}"),
    }
    publish(v, &b, &pub_id, &t, &["to the new connection"], 1, false).await;
    assert_eq!(
        second.expect(1).await,
        [msg(&t, "to the new connection", 1, false)]
    );
    second.disconnect().await;
    b.assert_clean_shutdown();
}

async fn shared(v: Version) {
    let b = start(&[]);
    let (pub_id, _, _) = ids(v, "shared");
    let t = topic(v, "shared", "work");
    let filter = format!("$share/g/{t}");
    let mut members = Vec::new();
    for core in 0..CORES {
        let id = id_owned_by(core, CORES, &format!("rumqttc-{v:?}-shared-member{core}"));
        members.push(Client::open(v, &b, &id, &[(&filter, 1)], clean()).await);
    }
    let payloads: Vec<String> = (0..20).map(|i| format!("job{i}")).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    publish(v, &b, &pub_id, &t, &refs, 1, false).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + STEP;
    while got.len() < payloads.len() && Instant::now() < deadline {
        for m in &mut members {
            while let Ok(ev) = m.events.try_recv() {
                if let Ev::Msg(message) = ev {
                    got.push(message);
                }
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(200)).await; // room for a duplicate to show up
    for m in &mut members {
        while let Ok(ev) = m.events.try_recv() {
            if let Ev::Msg(message) = ev {
                got.push(message);
            }
        }
    }
    let mut jobs: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    jobs.sort();
    let mut expected = payloads.clone();
    expected.sort();
    assert_eq!(jobs, expected, "each job exactly once");
    assert!(got.iter().all(|m| m.topic == t && m.qos == 1), "{got:?}");
    for m in members {
        m.disconnect().await;
    }
    b.assert_clean_shutdown();
}

/// One test per scenario and version, and the list of names they cover.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const IMPLEMENTED: &[&str] = &[$(stringify!($name)),*];
        mod v311 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Version::V311).await
                }
            )*
        }
        mod v5 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Version::V5).await
                }
            )*
        }
    };
}

scenarios!(connect, qos0, qos1, qos2, retained, will, resume, expiry, takeover, shared);

#[test]
fn every_listed_scenario_is_implemented() {
    let list = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/scenarios.txt"
    ))
    .expect("tests/interop/scenarios.txt");
    let names: Vec<&str> = list
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, IMPLEMENTED);
}
