//! Black box: rumqttc (MQTT 3.1.1 and 5.0), a client we did not write, against the real broker
//! on an ephemeral port. Connect, keep-alive pings, clean disconnect, ownership, takeover.

// The error type is rumqttc's (`ConnectionError`), not ours to shrink.
#![allow(clippy::result_large_err)]

mod common;

use std::time::Duration;

use common::{id_owned_by, owner_core, Broker};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(10);

mod v311 {
    use super::*;
    use rumqttc::{
        AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet,
    };

    pub async fn next(
        eventloop: &mut EventLoop,
        what: &str,
    ) -> Result<Event, rumqttc::ConnectionError> {
        timeout(STEP, eventloop.poll()).await.unwrap_or_else(|_| {
            panic!("rumqttc 3.1.1: no event within {STEP:?} waiting for {what}")
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_ping_disconnect() {
        let broker = Broker::start(2);
        let mut options = MqttOptions::new("rumqttc-v311", "127.0.0.1", broker.port());
        options
            .set_keep_alive(Duration::from_secs(1))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 10);

        match next(&mut eventloop, "CONNACK").await.expect("connect") {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                assert!(
                    !ack.session_present,
                    "[MQTT-3.2.2-1] clean session must not be present"
                );
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }

        // Keep alive 1 s: rumqttc sends PINGREQ after a second idle; wait for two answers.
        let (mut sent, mut answered) = (0, 0);
        while answered < 2 {
            match next(&mut eventloop, "PINGRESP")
                .await
                .expect("connection stays up while pinging")
            {
                Event::Outgoing(Outgoing::PingReq) => sent += 1,
                Event::Incoming(Packet::PingResp) => answered += 1,
                other => panic!("unexpected event while idle: {other:?}"),
            }
        }
        assert_eq!(sent, answered, "one PINGRESP per PINGREQ");

        client.disconnect().await.expect("queue DISCONNECT");
        loop {
            match next(&mut eventloop, "DISCONNECT to go out")
                .await
                .expect("send DISCONNECT")
            {
                Event::Outgoing(Outgoing::Disconnect) => break,
                Event::Outgoing(Outgoing::PingReq) | Event::Incoming(Packet::PingResp) => {}
                other => panic!("unexpected event while disconnecting: {other:?}"),
            }
        }
        broker.assert_clean_shutdown();
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectReturnCode, DisconnectReasonCode, Packet, PublishProperties,
    };
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
    use rumqttc::Outgoing;

    pub async fn next(
        eventloop: &mut EventLoop,
        what: &str,
    ) -> Result<Event, rumqttc::v5::ConnectionError> {
        timeout(STEP, eventloop.poll())
            .await
            .unwrap_or_else(|_| panic!("rumqttc 5.0: no event within {STEP:?} waiting for {what}"))
    }

    async fn connect(
        broker: &Broker,
        client_id: &str,
        keep_alive: u64,
    ) -> (AsyncClient, EventLoop, ConnAck) {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port());
        options
            .set_keep_alive(Duration::from_secs(keep_alive))
            .set_clean_start(true);
        connect_with(options).await
    }

    async fn connect_with(options: MqttOptions) -> (AsyncClient, EventLoop, ConnAck) {
        let client_id = options.client_id();
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        match next(&mut eventloop, "CONNACK").await.expect("connect") {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnectReturnCode::Success, "{client_id}: {ack:?}");
                (client, eventloop, ack)
            }
            other => panic!("{client_id}: expected CONNACK, got {other:?}"),
        }
    }

    /// The connection must end with a server DISCONNECT carrying `expected`. rumqttc 0.24
    /// reports a server DISCONNECT as an error; it parses only the form with a Property
    /// Length (`E0 02 <reason> 00`), which is the form berth sends.
    fn expect_server_disconnect(
        result: Result<Event, ConnectionError>,
        expected: DisconnectReasonCode,
    ) {
        match result {
            Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
                assert_eq!(reason_code, expected)
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => assert_eq!(d.reason_code, expected),
            other => panic!("expected the broker to end the connection with DISCONNECT {expected:?}, got {other:?}"),
        }
    }

    fn user_property<'a>(ack: &'a ConnAck, key: &str) -> Option<&'a str> {
        let props = ack.properties.as_ref()?;
        props
            .user_properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_ping_disconnect() {
        let broker = Broker::start_with(2, &["--connack-debug-properties"]);
        let id = "rumqttc-v5";
        // rumqttc 5.0 refuses keep alives under 5 s, so this test waits ~5 s for its ping.
        let (client, mut eventloop, ack) = connect(&broker, id, 5).await;
        assert!(
            !ack.session_present,
            "[MQTT-3.2.2-2] clean start must not be present"
        );
        let props = ack.properties.as_ref().expect("CONNACK properties");
        assert!(
            props.receive_max.is_some_and(|n| n > 0),
            "Receive Maximum: {props:?}"
        );
        assert!(
            props.topic_alias_max.is_some(),
            "Topic Alias Maximum: {props:?}"
        );
        assert_eq!(
            user_property(&ack, "berth-shard"),
            Some(owner_core(id, 2).to_string().as_str()),
            "{props:?}"
        );

        loop {
            match next(&mut eventloop, "PINGRESP")
                .await
                .expect("connection stays up while pinging")
            {
                Event::Incoming(Packet::PingResp(_)) => break,
                Event::Outgoing(Outgoing::PingReq) => {}
                other => panic!("unexpected event while idle: {other:?}"),
            }
        }

        client.disconnect().await.expect("queue DISCONNECT");
        loop {
            match next(&mut eventloop, "DISCONNECT to go out")
                .await
                .expect("send DISCONNECT")
            {
                Event::Outgoing(Outgoing::Disconnect) => break,
                Event::Outgoing(Outgoing::PingReq) | Event::Incoming(Packet::PingResp(_)) => {}
                other => panic!("unexpected event while disconnecting: {other:?}"),
            }
        }
        broker.assert_clean_shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connack_names_owner_core() {
        let broker = Broker::start_with(2, &["--connack-debug-properties"]);
        let mut accepted_on = [0usize; 2];
        for n in 0..24 {
            let id = format!("rumqttc-owner-{n}");
            let (client, mut eventloop, ack) = connect(&broker, &id, 30).await;
            let owner = owner_core(&id, 2).to_string();
            assert_eq!(
                user_property(&ack, "berth-shard"),
                Some(owner.as_str()),
                "{id}: {ack:?}"
            );
            match user_property(&ack, "berth-accepted-on") {
                Some("0") => accepted_on[0] += 1,
                Some("1") => accepted_on[1] += 1,
                other => panic!("{id}: berth-accepted-on {other:?}"),
            }
            client.disconnect().await.expect("queue DISCONNECT");
            while !matches!(
                next(&mut eventloop, "DISCONNECT").await,
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
            ) {}
        }
        assert!(
            accepted_on.iter().all(|&n| n > 0),
            "both cores should accept connections: {accepted_on:?}"
        );
        broker.assert_clean_shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn takeover_disconnects_first_with_0x8e() {
        let broker = Broker::start(2);
        let (_first_client, mut first, _) = connect(&broker, "rumqttc-takeover", 30).await;
        let (_second_client, mut second, _) = connect(&broker, "rumqttc-takeover", 5).await;
        // [MQTT-3.1.4-3]; the exact bytes are checked in tests/python/test_takeover.py.
        expect_server_disconnect(
            next(&mut first, "DISCONNECT 0x8E").await,
            DisconnectReasonCode::SessionTakenOver,
        );
        // The new session keeps working: its keep-alive ping is answered.
        loop {
            match next(&mut second, "PINGRESP on the new session")
                .await
                .expect("new session stays up")
            {
                Event::Incoming(Packet::PingResp(_)) => break,
                Event::Outgoing(Outgoing::PingReq) => {}
                other => panic!("new session: unexpected event {other:?}"),
            }
        }
        broker.assert_clean_shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_sends_server_shutting_down() {
        let broker = Broker::start(2);
        let (_client, mut eventloop, _) = connect(&broker, "rumqttc-shutdown", 30).await;
        let stopping = tokio::task::spawn_blocking(move || broker.assert_clean_shutdown());
        expect_server_disconnect(
            next(&mut eventloop, "DISCONNECT 0x8B").await,
            DisconnectReasonCode::ServerShuttingDown,
        );
        stopping.await.expect("clean shutdown");
    }

    /// Topic aliases both ways with a client we did not write, publisher and subscriber on
    /// different cores: rumqttc sets an alias and then publishes by alias alone (the broker
    /// resolves it), and the subscriber, which allows 4 aliases, gets the broker's aliases
    /// and resolves them itself (the raw bytes are checked in tests/python/test_mqtt5.py).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topic_aliases_both_ways() {
        let broker = Broker::start(2);
        let sub_id = id_owned_by(1, 2, "rumqttc-alias-sub");
        let mut options = MqttOptions::new(&sub_id, "127.0.0.1", broker.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_topic_alias_max(Some(4));
        let (sub, mut sub_loop, _) = connect_with(options).await;
        sub.subscribe("rq/alias/+", QoS::AtLeastOnce)
            .await
            .expect("queue SUBSCRIBE");
        loop {
            match next(&mut sub_loop, "SUBACK").await.expect("subscribe") {
                Event::Incoming(Packet::SubAck(_)) => break,
                Event::Outgoing(_) => {}
                other => panic!("subscriber: unexpected {other:?}"),
            }
        }

        let pub_id = id_owned_by(0, 2, "rumqttc-alias-pub");
        let (publisher, mut pub_loop, ack) = connect(&broker, &pub_id, 30).await;
        let told = ack.properties.as_ref().and_then(|p| p.topic_alias_max);
        assert_eq!(told, Some(10), "default Topic Alias Maximum: {ack:?}");
        let alias = |n| PublishProperties {
            topic_alias: Some(n),
            ..PublishProperties::default()
        };
        let sends = [
            ("rq/alias/a", Some(1), "1"),
            ("", Some(1), "2"),
            ("rq/alias/b", None, "3"),
            ("", Some(1), "4"),
        ];
        for (topic, n, payload) in sends {
            match n {
                Some(n) => publisher
                    .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, alias(n))
                    .await
                    .expect("queue PUBLISH"),
                None => publisher
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("queue PUBLISH"),
            }
        }
        let publishing = tokio::spawn(async move {
            let mut acked = 0;
            while acked < 4 {
                match next(&mut pub_loop, "PUBACK")
                    .await
                    .expect("publisher stays up")
                {
                    Event::Incoming(Packet::PubAck(a)) => {
                        assert_eq!(a.reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
                        acked += 1;
                    }
                    Event::Outgoing(_) => {}
                    other => panic!("publisher: unexpected {other:?}"),
                }
            }
            (publisher, pub_loop)
        });

        let mut got = Vec::new();
        while got.len() < 4 {
            match next(&mut sub_loop, "PUBLISH")
                .await
                .expect("subscriber stays up")
            {
                Event::Incoming(Packet::Publish(p)) => got.push((
                    String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic"),
                    p.properties.as_ref().and_then(|props| props.topic_alias),
                    String::from_utf8(p.payload.to_vec()).expect("UTF-8 payload"),
                )),
                Event::Outgoing(_) => {}
                other => panic!("subscriber: unexpected {other:?}"),
            }
        }
        let expected = [
            ("rq/alias/a", Some(1), "1"),
            ("rq/alias/a", Some(1), "2"),
            ("rq/alias/b", Some(2), "3"),
            ("rq/alias/a", Some(1), "4"),
        ]
        .map(|(t, a, p)| (t.to_string(), a, p.to_string()));
        assert_eq!(got, expected);
        let _still_connected = publishing.await.expect("publisher task");
        broker.assert_clean_shutdown();
    }
}
