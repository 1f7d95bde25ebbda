//! The scenarios about a session outliving its connection: the will of a connection that
//! ends without DISCONNECT, resuming queued messages, expiry, and takeover by a new
//! connection with the same client id.

use std::time::Duration;

use tokio::time::sleep;

use crate::client::{clean, msg, persistent, Client, Msg, Opts, Version};
use crate::{assert_in_order, ids, publish, start, topic, visit};

/// For `expiry`: the broker's cap on Session Expiry, which is also how long a 3.1.1 Clean
/// Session 0 session outlives its connection.
const EXPIRY_SECS: u32 = 1;

pub async fn will(v: Version) {
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

pub async fn resume(v: Version) {
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

pub async fn expiry(v: Version) {
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

pub async fn takeover(v: Version) {
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
