//! The admin API's routes that change or look into one session, publish, and run-time
//! settings (`api.rs` has the listing, kick and delete routes):
//!
//! - `GET /api/v1/clients/{id}/subscriptions`; `POST /api/v1/clients/{id}/subscriptions`
//!   (`{"topic": filter, "qos": 0..2, "nl", "rap", "rh", "identifier"}`) and
//!   `DELETE /api/v1/clients/{id}/subscriptions/{filter}` (percent-encoded), on a session
//!   online or offline, as its own SUBSCRIBE and UNSUBSCRIBE would;
//! - `GET /api/v1/clients/{id}/queue?limit=&cursor=`: the messages it holds, in flight
//!   then queued, in the order they arrived;
//! - `POST /api/v1/publish` (`{"topic", "payload", "payload_encoding": "plain|base64",
//!   "qos", "retain"}`), on core 0 as client `$admin`; a QoS 1/2 one is answered once durable;
//! - `GET /api/v1/settings`, `PUT /api/v1/settings` (any of `config::Settings::KEYS`): put
//!   in force on every core and kept in the data directory's `settings.json`.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::api::{ask, owner, Outcome, DEFAULT_LIMIT, MAX_LIMIT};
use super::changes::NotPublished;
use super::cores::{Answer, Question};
use super::Admin;
use crate::broker::HeldMessage;
use crate::config::settings;
use crate::protocol::{Properties, Publish, QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use crate::session::Subscription;
use crate::topic::{ParsedFilter, TopicName};

/// The largest request body taken (a message to publish, a subscription, settings).
const MAX_BODY: usize = 1 << 20;

type Failure = (StatusCode, String);

/// Answers the request if it is one of these routes; gives it back otherwise.
pub async fn route(
    admin: &Admin,
    segments: &[&str],
    params: &HashMap<String, String>,
    request: Request<Incoming>,
) -> Result<Outcome, Request<Incoming>> {
    let method = request.method().clone();
    Ok(match (&method, segments) {
        (&Method::GET, ["api", "v1", "clients", id, "subscriptions"]) => {
            subscriptions(admin, id).await
        }
        (&Method::POST, ["api", "v1", "clients", id, "subscriptions"]) => {
            match body(request).await {
                Ok(body) => subscribe(admin, id, &body).await,
                Err(failure) => Err(failure),
            }
        }
        (&Method::DELETE, ["api", "v1", "clients", id, "subscriptions", filter @ ..])
            if !filter.is_empty() =>
        {
            unsubscribe(admin, id, &filter.join("/")).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "queue"]) => queue(admin, id, params).await,
        (&Method::POST, ["api", "v1", "publish"]) => match body(request).await {
            Ok(body) => publish(admin, &body).await,
            Err(failure) => Err(failure),
        },
        (&Method::GET, ["api", "v1", "settings"]) => Ok(admin.settings.borrow().0.to_json()),
        (&Method::PUT, ["api", "v1", "settings"]) => match body(request).await {
            Ok(body) => put_settings(admin, &body).await,
            Err(failure) => Err(failure),
        },
        _ => return Err(request),
    })
}

/// The request's body as JSON.
async fn body(request: Request<Incoming>) -> Result<Value, Failure> {
    let collected = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            let why = format!("cannot read the body (at most {MAX_BODY} bytes): {e}");
            (StatusCode::PAYLOAD_TOO_LARGE, why)
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}

fn bad(key: &str, why: &str) -> Failure {
    (StatusCode::BAD_REQUEST, format!("{key}: {why}"))
}

fn no_session(id: &str) -> Failure {
    let why = format!("no session for client id {id:?}");
    (StatusCode::NOT_FOUND, why)
}

fn qos_of(body: &Value, key: &str) -> Result<QoS, Failure> {
    match body.get(key) {
        None => Ok(QoS::AtMostOnce),
        Some(v) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .and_then(QoS::from_u8)
            .ok_or_else(|| bad(key, "0, 1 or 2")),
    }
}

fn flag(body: &Value, key: &str) -> Result<bool, Failure> {
    match body.get(key) {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| bad(key, "true or false")),
    }
}

async fn subscriptions(admin: &Admin, id: &str) -> Outcome {
    let question = Question::Subscriptions {
        client_id: id.to_string(),
    };
    let Answer::Subscriptions(Some(held)) = ask(admin, owner(admin, id), question).await? else {
        return Err(no_session(id));
    };
    let data: Vec<Value> = held
        .iter()
        .map(|(filter, sub)| subscription_json(filter, sub))
        .collect();
    Ok(json!({ "clientid": id, "data": data }))
}

fn subscription_json(filter: &str, sub: &Subscription) -> Value {
    let o = &sub.options;
    json!({
        "topic": filter,
        "qos": o.qos as u8,
        "nl": o.no_local,
        "rap": o.retain_as_published,
        "rh": o.retain_handling as u8,
        "identifier": sub.identifier,
    })
}

async fn subscribe(admin: &Admin, id: &str, body: &Value) -> Outcome {
    let filter = body
        .get("topic")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("topic", "a topic filter is required"))?;
    if filter.len() > usize::from(u16::MAX) {
        return Err(bad("topic", "longer than 65535 bytes (an MQTT string)"));
    }
    if ParsedFilter::parse(filter.to_string()).is_err() {
        return Err(bad("topic", "not a valid topic filter"));
    }
    let retain_handling = match body.get("rh").map(Value::as_u64) {
        None | Some(Some(0)) => RetainHandling::OnSubscribe,
        Some(Some(1)) => RetainHandling::OnNewSubscribe,
        Some(Some(2)) => RetainHandling::Never,
        Some(_) => return Err(bad("rh", "0, 1 or 2 (Retain Handling)")),
    };
    let identifier = match body.get("identifier") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=268_435_455).contains(n))
                .ok_or_else(|| bad("identifier", "1 to 268435455"))? as u32,
        ),
    };
    let no_local = flag(body, "nl")?;
    if no_local && filter.starts_with("$share/") {
        return Err(bad(
            "nl",
            "No Local cannot be set on a shared subscription [MQTT-3.8.3-4]",
        ));
    }
    let subscription = Subscription {
        options: SubscriptionOptions {
            qos: qos_of(body, "qos")?,
            no_local,
            retain_as_published: flag(body, "rap")?,
            retain_handling,
        },
        identifier,
    };
    let question = Question::Subscribe {
        client_id: id.to_string(),
        filter: filter.to_string(),
        subscription,
    };
    match ask(admin, owner(admin, id), question).await? {
        Answer::Reason(Some(code)) if code.0 <= 2 => {
            Ok(json!({ "clientid": id, "topic": filter, "qos": code.0 }))
        }
        Answer::Reason(Some(code)) => {
            let status = match code {
                ReasonCode::NOT_AUTHORIZED => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            let why = format!("subscription refused: reason code 0x{:02X}", code.0);
            Err((status, why))
        }
        _ => Err(no_session(id)),
    }
}

async fn unsubscribe(admin: &Admin, id: &str, filter: &str) -> Outcome {
    let question = Question::Unsubscribe {
        client_id: id.to_string(),
        filter: filter.to_string(),
    };
    match ask(admin, owner(admin, id), question).await? {
        Answer::Reason(Some(ReasonCode::SUCCESS)) => {
            Ok(json!({ "clientid": id, "topic": filter, "unsubscribed": true }))
        }
        Answer::Reason(Some(_)) => Err((
            StatusCode::NOT_FOUND,
            format!("client {id:?} has no subscription {filter:?}"),
        )),
        _ => Err(no_session(id)),
    }
}

async fn queue(admin: &Admin, id: &str, params: &HashMap<String, String>) -> Outcome {
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(
                    "parameter limit",
                    &format!("a number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let after = match params.get("cursor") {
        None => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| bad("parameter cursor", "not a cursor"))?,
        ),
    };
    let question = Question::Held {
        client_id: id.to_string(),
        after,
        limit,
    };
    let Answer::Held(Some((held, more))) = ask(admin, owner(admin, id), question).await? else {
        return Err(no_session(id));
    };
    let cursor = more
        .then(|| held.last().map(|m| m.seq.to_string()))
        .flatten();
    let data: Vec<Value> = held.iter().map(held_json).collect();
    Ok(json!({
        "clientid": id,
        "data": data,
        "meta": { "count": data.len(), "limit": limit, "cursor": cursor },
    }))
}

fn held_json(held: &HeldMessage) -> Value {
    let message = held.message.as_deref();
    let payload = message.map(|m| &m.payload[..]);
    json!({
        "seq": held.seq,
        "state": if held.in_flight.is_some() { "in_flight" } else { "queued" },
        "packet_id": held.in_flight.map(|(id, _)| id.get()),
        "pubrel_sent": held.in_flight.map(|(_, released)| released),
        "qos": held.qos as u8,
        "retain": held.retain,
        "topic": message.map(|m| m.topic.to_string()),
        "publisher": message.map(|m| m.publisher.to_string()),
        "payload_size": payload.map(<[u8]>::len),
        "payload": payload.and_then(|p| std::str::from_utf8(p).ok()),
        "payload_base64": payload.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
    })
}

async fn publish(admin: &Admin, body: &Value) -> Outcome {
    let topic = body
        .get("topic")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("topic", "a topic name is required"))?;
    if topic.starts_with('$') {
        return Err(bad("topic", "topics starting with $ are the broker's"));
    }
    let topic = TopicName::new(topic.to_string())
        .map_err(|e| bad("topic", &format!("not a valid topic name: {e}")))?;
    let text = match body.get("payload") {
        None => "",
        Some(v) => v.as_str().ok_or_else(|| bad("payload", "a string"))?,
    };
    let payload = match body.get("payload_encoding").map(Value::as_str) {
        None | Some(Some("plain")) => Bytes::copy_from_slice(text.as_bytes()),
        Some(Some("base64")) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| bad("payload", &format!("not base64: {e}")))?,
        Some(_) => return Err(bad("payload_encoding", "plain or base64")),
    };
    let qos = qos_of(body, "qos")?;
    let retain = flag(body, "retain")?;
    let publish = Publish {
        dup: false,
        qos,
        retain,
        topic: topic.as_str().into(),
        packet_id: None,
        properties: Properties::default(),
        payload,
    };
    match ask(admin, 0, Question::Publish(publish)).await? {
        Answer::Published(Ok(())) => Ok(json!({
            "topic": topic.as_str(), "qos": qos as u8, "retain": retain, "published": true,
        })),
        Answer::Published(Err(why)) => {
            let why = match why {
                NotPublished::StoreClosed => "the store takes no new QoS 1/2 messages now",
                NotPublished::StoreRefused => "a core could not store the message (disk full)",
            };
            Err((StatusCode::SERVICE_UNAVAILABLE, why.into()))
        }
        _ => unreachable!("a Publish is answered with Published"),
    }
}

/// Checks the change whole, keeps it in the data directory, then puts it in force on
/// every core: a change that is refused or cannot be kept changes nothing.
async fn put_settings(admin: &Admin, body: &Value) -> Outcome {
    let (current, mut changed) = admin.settings.borrow().clone();
    let next = current
        .changed(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    if let Value::Object(changes) = body {
        changed.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    settings::save(&admin.data_dir, &changed).map_err(|e| {
        let why = format!("cannot keep the settings in the data directory: {e}");
        (StatusCode::INTERNAL_SERVER_ERROR, why)
    })?;
    *admin.settings.borrow_mut() = (next, changed);
    for core in 0..admin.cores.len() {
        ask(admin, core, Question::Settings(next)).await?;
    }
    Ok(next.to_json())
}
