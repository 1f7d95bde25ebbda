//! The admin API's routes (`/api/v1`, JSON) and `/metrics`.
//!
//! - `GET /api/v1/clients` with `conn_state=connected|disconnected`, `like_clientid`,
//!   `username`, `min_queue_len`, `limit` (default 100, at most 10,000) and `cursor` (opaque:
//!   the core and the last client id of the page before; pages walk the cores in turn);
//! - `GET /api/v1/clients/{id}`; `POST /api/v1/clients/{id}/kick?will=publish|skip`
//!   (disconnect, keep the session); `DELETE /api/v1/clients/{id}` (discard the session,
//!   disconnecting its client first); `DELETE /api/v1/clients?conn_state=disconnected&...`
//!   (every offline session the filters take);
//! - `GET /api/v1/stats` (the `$SYS` figures per core and summed); `GET /metrics`;
//! - a session's subscriptions and queue, `/publish` and `/settings`: `sessions_api`.
//! - `GET /` and `/dashboard/...`: the dashboard page (`dashboard.rs`).
//!
//! Every request needs an API key (HTTP Basic) unless the API runs without keys. A request
//! that changes something (any method but GET and HEAD) from a page of another origin is
//! refused with 403 (`cross_site`): a browser sends cached Basic credentials along with a
//! form another site posts, so the key alone does not stop cross-site request forgery.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::cores::{Answer, Ask, Client, Question};
use super::{metrics, Admin};
use crate::broker::{SessionQuery, Stat};
use crate::ownership::owner_of;
use crate::protocol::ProtocolVersion;

pub(super) const DEFAULT_LIMIT: usize = 100;
pub(super) const MAX_LIMIT: usize = 10_000;

type Reply = Response<Full<Bytes>>;

pub async fn handle(admin: &Admin, request: Request<Incoming>) -> Reply {
    if cross_site(&request) {
        return error(
            StatusCode::FORBIDDEN,
            "a request that changes something must come from the admin listener's own pages",
        );
    }
    if let Some(keys) = &admin.keys {
        let authorization = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !keys.admits(authorization) {
            let mut reply = error(StatusCode::UNAUTHORIZED, "an API key is required");
            reply.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"berth\""),
            );
            return reply;
        }
    }
    let path = request.uri().path().to_string();
    let params = query_params(request.uri().query().unwrap_or(""));
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let request = match super::sessions_api::route(admin, &segments, &params, request).await {
        Ok(result) => return outcome_reply(result),
        Err(request) => request,
    };
    let result = match (request.method(), segments.as_slice()) {
        (&Method::GET, ["metrics"]) => return metrics::reply(admin).await,
        (&Method::GET, [""] | ["dashboard", ..]) => return super::dashboard::reply(&segments),
        (&Method::GET, ["api", "v1", "stats"]) => stats(admin).await,
        (&Method::GET, ["api", "v1", "clients"]) => list(admin, &params).await,
        (&Method::DELETE, ["api", "v1", "clients"]) => delete_offline(admin, &params).await,
        (&Method::GET, ["api", "v1", "clients", id]) => get(admin, id).await,
        (&Method::DELETE, ["api", "v1", "clients", id]) => delete(admin, id).await,
        (&Method::POST, ["api", "v1", "clients", id, "kick"]) => kick(admin, id, &params).await,
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no route for {} {path}", request.method()),
        )),
    };
    outcome_reply(result)
}

/// Whether `request` changes something and a browser says it comes from a page of another
/// origin: an `Origin` header whose host and port are not the `Host` the request was sent to
/// (`null` included), or `Sec-Fetch-Site: cross-site`. Clients that are not browsers (curl,
/// scripts) send neither header and pass.
fn cross_site<B>(request: &Request<B>) -> bool {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return false;
    }
    let header = |name| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
    };
    if header(hyper::header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return true;
    }
    let Some(origin) = header(hyper::header::ORIGIN) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match (authority, header(hyper::header::HOST)) {
        (Some(authority), Some(host)) => !authority.eq_ignore_ascii_case(host),
        _ => true,
    }
}

fn outcome_reply(result: Outcome) -> Reply {
    match result {
        Ok(value) => json_reply(StatusCode::OK, &value),
        Err((status, why)) => error(status, &why),
    }
}

pub(super) type Outcome = Result<Value, (StatusCode, String)>;

pub(super) async fn ask(
    admin: &Admin,
    core: usize,
    question: Question,
) -> Result<Answer, (StatusCode, String)> {
    let (reply, answer) = flume::bounded(1);
    let unavailable = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("core {core} is not answering"),
        )
    };
    let sender = admin.cores.get(core).ok_or_else(unavailable)?;
    sender
        .send_async(Ask { question, reply })
        .await
        .map_err(|_| unavailable())?;
    answer.recv_async().await.map_err(|_| unavailable())
}

pub(super) fn owner(admin: &Admin, client_id: &str) -> usize {
    owner_of(client_id, admin.cores.len()).0
}

fn session_query(params: &HashMap<String, String>) -> Result<SessionQuery, (StatusCode, String)> {
    let bad = |key: &str, why: &str| (StatusCode::BAD_REQUEST, format!("parameter {key}: {why}"));
    let connected = match params.get("conn_state").map(String::as_str) {
        None => None,
        Some("connected") => Some(true),
        Some("disconnected") => Some(false),
        Some(_) => return Err(bad("conn_state", "connected or disconnected")),
    };
    let min_queue_len = match params.get("min_queue_len") {
        None => 0,
        Some(v) => v.parse().map_err(|_| bad("min_queue_len", "a number"))?,
    };
    Ok(SessionQuery {
        connected,
        like_client_id: params.get("like_clientid").cloned(),
        username: params.get("username").cloned(),
        min_queue_len,
    })
}

async fn list(admin: &Admin, params: &HashMap<String, String>) -> Outcome {
    let query = session_query(params)?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                let why = format!("parameter limit: a number from 1 to {MAX_LIMIT}");
                return Err((StatusCode::BAD_REQUEST, why));
            }
        },
    };
    let (mut core, mut after) = match params.get("cursor") {
        None => (0, None),
        Some(cursor) => parse_cursor(cursor).ok_or((
            StatusCode::BAD_REQUEST,
            "parameter cursor: not a cursor".to_string(),
        ))?,
    };
    let mut page = Vec::new();
    let mut next = None;
    while core < admin.cores.len() && page.len() < limit {
        let question = Question::List {
            query: query.clone(),
            after: after.take(),
            limit: limit - page.len(),
        };
        let Answer::Clients { clients, more } = ask(admin, core, question).await? else {
            unreachable!("a List is answered with Clients");
        };
        page.extend(clients);
        if more {
            let last = page.last().map(|c| c.session.client_id.to_string());
            next = last.map(|id| cursor_of(core, &id));
            break;
        }
        core += 1;
        if page.len() == limit && core < admin.cores.len() {
            next = Some(format!("{core}."));
        }
    }
    let data: Vec<Value> = page.iter().map(|c| client_json(admin, c)).collect();
    Ok(json!({ "data": data, "meta": { "count": data.len(), "limit": limit, "cursor": next } }))
}

async fn get(admin: &Admin, id: &str) -> Outcome {
    let question = Question::Get {
        client_id: id.to_string(),
    };
    match ask(admin, owner(admin, id), question).await? {
        Answer::Client(Some(client)) => Ok(client_json(admin, &client)),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no session for client id {id:?}"),
        )),
    }
}

async fn kick(admin: &Admin, id: &str, params: &HashMap<String, String>) -> Outcome {
    let publish_will = match params.get("will").map(String::as_str) {
        None | Some("publish") => true,
        Some("skip") => false,
        Some(_) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "parameter will: publish or skip".into(),
            ))
        }
    };
    let question = Question::Kick {
        client_id: id.to_string(),
        publish_will,
    };
    match ask(admin, owner(admin, id), question).await? {
        Answer::Done(true) => Ok(json!({ "clientid": id, "kicked": true })),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("client {id:?} is not connected"),
        )),
    }
}

async fn delete(admin: &Admin, id: &str) -> Outcome {
    let question = Question::Delete {
        client_id: id.to_string(),
    };
    match ask(admin, owner(admin, id), question).await? {
        Answer::Done(true) => Ok(json!({ "clientid": id, "deleted": true })),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no session for client id {id:?}"),
        )),
    }
}

async fn delete_offline(admin: &Admin, params: &HashMap<String, String>) -> Outcome {
    let query = session_query(params)?;
    if query.connected != Some(false) {
        let why = "a bulk delete takes disconnected sessions only: give conn_state=disconnected";
        return Err((StatusCode::BAD_REQUEST, why.into()));
    }
    let mut deleted = 0;
    for core in 0..admin.cores.len() {
        let question = Question::DeleteOffline {
            query: query.clone(),
        };
        if let Answer::Deleted(n) = ask(admin, core, question).await? {
            deleted += n;
        }
    }
    Ok(json!({ "deleted": deleted }))
}

async fn core_stats(admin: &Admin) -> Result<Vec<Vec<(Stat, u64)>>, (StatusCode, String)> {
    let mut per_core = Vec::with_capacity(admin.cores.len());
    for core in 0..admin.cores.len() {
        if let Answer::Stats(figures) = ask(admin, core, Question::Stats).await? {
            per_core.push(figures);
        }
    }
    Ok(per_core)
}

async fn stats(admin: &Admin) -> Outcome {
    let per_core = core_stats(admin).await?;
    let name = |stat: Stat| stat.topic().trim_start_matches("$SYS/broker/").to_string();
    let cores: Vec<Value> = per_core
        .iter()
        .map(|figures| {
            let map: serde_json::Map<String, Value> =
                figures.iter().map(|&(s, v)| (name(s), v.into())).collect();
            Value::Object(map)
        })
        .collect();
    let mut total = serde_json::Map::new();
    for stat in Stat::ALL {
        let values = per_core
            .iter()
            .filter_map(|f| f.iter().find(|(s, _)| *s == stat).map(|&(_, v)| v));
        let value: u64 = match stat.combine() {
            crate::broker::Combine::Sum => values.sum(),
            crate::broker::Combine::Replicated => values.take(1).sum(),
        };
        total.insert(name(stat), value.into());
    }
    let uptime = admin.started.elapsed().as_secs();
    Ok(json!({ "uptime_secs": uptime, "cores": cores, "total": total }))
}

fn client_json(admin: &Admin, client: &Client) -> Value {
    let s = &client.session;
    let connection = client.connection.as_ref().filter(|_| s.connected);
    json!({
        "clientid": s.client_id.to_string(),
        "username": s.username,
        "connected": s.connected,
        "persistent": s.persistent,
        "owner_core": client.core,
        "protocol": connection.map(|c| match c.protocol {
            ProtocolVersion::V5 => "5.0",
            ProtocolVersion::V3_1_1 => "3.1.1",
            _ => "3.1",
        }),
        "peer": connection.map(|c| c.peer.to_string()),
        "connected_at": connection.map(|c| c.connected_at_ms),
        "disconnected_at": s.disconnected_at_ms,
        "session_expiry_interval": s.expiry_secs,
        "expires_at": s.expires_at_ms,
        "mqueue_len": s.queued,
        "mqueue_max": admin.settings.borrow().0.max_queued_messages,
        "mqueue_dropped": s.dropped,
        "inflight_cnt": s.in_flight,
        "subscriptions_cnt": s.subscriptions,
    })
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(value.to_string())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    reply
}

fn error(status: StatusCode, why: &str) -> Reply {
    json_reply(status, &json!({ "error": why }))
}

/// `{core}.{hex of the last client id}`; `{core}.` starts that core from its first.
fn cursor_of(core: usize, last: &str) -> String {
    let hex: String = last.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{core}.{hex}")
}

fn parse_cursor(cursor: &str) -> Option<(usize, Option<String>)> {
    let (core, hex) = cursor.split_once('.')?;
    let core = core.parse().ok()?;
    if hex.is_empty() {
        return Some((core, None));
    }
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some((core, Some(String::from_utf8(bytes?).ok()?)))
}

fn query_params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(key),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

/// `%XX` escapes decoded; a malformed escape stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_its_core_and_last_id() {
        assert_eq!(
            parse_cursor(&cursor_of(1, "dev/é 7")),
            Some((1, Some("dev/é 7".into())))
        );
        assert_eq!(parse_cursor("2."), Some((2, None)));
        assert_eq!(parse_cursor("x.00"), None);
        assert_eq!(parse_cursor("1.0"), None);
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        let params = query_params("like_clientid=a%2Fb+c&limit=5&bad=%zz");
        assert_eq!(params["like_clientid"], "a/b c");
        assert_eq!(params["limit"], "5");
        assert_eq!(params["bad"], "%zz");
    }

    fn request(method: Method, headers: &[(&'static str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/api/v1/clients/x/kick");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_change_from_another_origin_is_cross_site() {
        let host = ("host", "127.0.0.1:18083");
        for (headers, cross) in [
            (vec![host], false),
            (vec![host, ("origin", "http://127.0.0.1:18083")], false),
            (vec![host, ("origin", "https://127.0.0.1:18083")], false),
            (vec![host, ("origin", "http://evil.example")], true),
            (vec![host, ("origin", "http://127.0.0.1:18084")], true),
            (vec![host, ("origin", "null")], true),
            (vec![("origin", "http://127.0.0.1:18083")], true),
            (vec![host, ("sec-fetch-site", "cross-site")], true),
            (vec![host, ("sec-fetch-site", "same-origin")], false),
        ] {
            assert_eq!(
                cross_site(&request(Method::POST, &headers)),
                cross,
                "{headers:?}"
            );
            assert_eq!(
                cross_site(&request(Method::DELETE, &headers)),
                cross,
                "{headers:?}"
            );
            assert!(!cross_site(&request(Method::GET, &headers)), "{headers:?}");
        }
    }
}
