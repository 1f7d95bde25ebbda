//! One client over either rumqttc API: [`Client`] connects, subscribes, publishes and
//! disconnects the same way in MQTT 3.1.1 (`rumqttc::AsyncClient`) and 5.0
//! (`rumqttc::v5::AsyncClient`), and reports what its event loop sees as one [`Ev`].

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::common::Broker;

pub const STEP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

pub fn msg(topic: &str, payload: &str, qos: u8, retain: bool) -> Msg {
    Msg {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        qos,
        retain,
    }
}

/// What either event loop reports, in one vocabulary.
#[derive(Debug)]
pub enum Ev {
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
pub struct Opts {
    pub clean: bool,
    pub expiry: Option<u32>,
    pub will: Option<(String, String)>,
}

pub fn clean() -> Opts {
    Opts {
        clean: true,
        ..Opts::default()
    }
}

pub fn persistent(expiry: u32) -> Opts {
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

pub struct Client {
    id: String,
    handle: Handle,
    pub events: mpsc::UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
    pub session_present: bool,
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
    pub async fn open(
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
    pub async fn next(&mut self, what: &str) -> Ev {
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

    pub async fn subscribe(&mut self, subs: &[(&str, u8)]) {
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
    pub async fn publish(&mut self, topic: &str, payloads: &[&str], qos: u8, retain: bool) {
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
    pub async fn expect(&mut self, n: usize) -> Vec<Msg> {
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
    pub async fn disconnect(mut self) {
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
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits until the broker ends this connection: Some(reason) for a 5.0 DISCONNECT, None
    /// when the connection just closed (3.1.1; or rumqttc 0.24 failing to decode it).
    pub async fn wait_taken_over(&mut self) -> Option<u8> {
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
