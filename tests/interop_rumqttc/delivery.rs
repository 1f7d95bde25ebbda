//! The scenarios about delivery: connect and Session Present, a round trip at each QoS,
//! retained messages, and a shared subscription spread over members on both cores.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::client::{clean, msg, persistent, Client, Ev, Version, STEP};
use crate::common::id_owned_by;
use crate::{ids, publish, start, topic, visit, CORES};

pub async fn connect(v: Version) {
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

pub async fn qos0(v: Version) {
    qos_round_trip(v, 0).await
}

pub async fn qos1(v: Version) {
    qos_round_trip(v, 1).await
}

pub async fn qos2(v: Version) {
    qos_round_trip(v, 2).await
}

pub async fn retained(v: Version) {
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

pub async fn shared(v: Version) {
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
