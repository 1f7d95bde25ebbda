//! The opening handshake (RFC 6455 section 4.2), server side, for MQTT: an HTTP/1.1 GET
//! with `Upgrade: websocket` on the configured path, offering the subprotocol `mqtt` (MQTT
//! 3.1.1 and 5.0 section 6) or `mqttv3.1` (which MQTT.js offers for MQTT 3.1).
//!
//! [`parse`] reads the request from the front of the bytes received so far and answers with
//! the response to send: `101 Switching Protocols` with the accept key and the selected
//! subprotocol, or the HTTP error to refuse with (the connection then ends).

use base64::Engine;
use sha1::{Digest, Sha1};

/// A request head larger than this is refused (431) before it is complete.
pub const MAX_REQUEST: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;
/// Appended to the client's key before hashing (RFC 6455 section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The subprotocols berth speaks, in the order it prefers them.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A handshake the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `101` response to send.
    pub response: Vec<u8>,
    pub subprotocol: &'static str,
    /// Bytes of the input the request took; what follows is WebSocket frames.
    pub consumed: usize,
}

/// A handshake the server refuses, with the HTTP response that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket handshake refused: {status} {reason}")]
pub struct Refused {
    pub status: u16,
    pub reason: &'static str,
    pub response: Vec<u8>,
}

/// The key a `Sec-WebSocket-Key` is answered with in `Sec-WebSocket-Accept`.
pub fn accept_key(key: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

/// Reads the upgrade request at the front of `input`: `Ok(None)` while its head is
/// incomplete (and within [`MAX_REQUEST`]), else the response to send.
pub fn parse(input: &[u8], path: &str) -> Result<Option<Accepted>, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_REQUEST => n,
        Ok(httparse::Status::Partial) if input.len() <= MAX_REQUEST => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "Request Header Fields Too Large", ""))
        }
        Err(_) => return Err(refuse(400, "Bad Request", "")),
    };
    if request.method != Some("GET") || request.version != Some(1) {
        return Err(refuse(400, "Bad Request", ""));
    }
    let target = request.path.unwrap_or("");
    let asked = target.split(['?', '#']).next().unwrap_or("");
    if asked != path {
        return Err(refuse(404, "Not Found", ""));
    }
    let header = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let tokens = |name: &'static str| {
        header(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let upgrade = tokens("upgrade").any(|t| t.eq_ignore_ascii_case("websocket"));
    let connection = tokens("connection").any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !upgrade || !connection {
        return Err(refuse(400, "Bad Request", ""));
    }
    if !tokens("sec-websocket-version").any(|t| t == "13") {
        return Err(refuse(
            426,
            "Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
        ));
    }
    let key = header("sec-websocket-key").next().map(str::trim);
    let key_ok = key.is_some_and(|k| {
        base64::engine::general_purpose::STANDARD
            .decode(k)
            .is_ok_and(|raw| raw.len() == 16)
    });
    let (Some(key), true) = (key, key_ok) else {
        return Err(refuse(400, "Bad Request", ""));
    };
    let offered: Vec<&str> = tokens("sec-websocket-protocol").collect();
    let Some(subprotocol) = SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
    else {
        // [MQTT-6.0.0-3] the client must offer `mqtt`; EMQX refuses one that offers none too.
        return Err(refuse(400, "Bad Request", ""));
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n",
        accept_key(key)
    );
    Ok(Some(Accepted {
        response: response.into_bytes(),
        subprotocol,
        consumed,
    }))
}

fn refuse(status: u16, reason: &'static str, extra: &str) -> Refused {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    Refused {
        status,
        reason,
        response: response.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

    fn status(request: &str) -> u16 {
        match parse(request.as_bytes(), "/mqtt") {
            Ok(Some(_)) => 101,
            Ok(None) => 0,
            Err(refused) => refused.status,
        }
    }

    #[test]
    fn the_rfc_example_key_is_answered_with_its_accept_key() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_good_request_selects_mqtt_and_says_where_the_frames_begin() {
        let mut input = GOOD.as_bytes().to_vec();
        input.extend_from_slice(&[0x82, 0x80]);
        let accepted = parse(&input, "/mqtt").unwrap().unwrap();
        assert_eq!(accepted.consumed, GOOD.len());
        assert_eq!(accepted.subprotocol, "mqtt");
        let text = String::from_utf8(accepted.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    }

    #[test]
    fn mqttv3_1_is_taken_when_mqtt_is_not_offered() {
        let request = GOOD.replace("Protocol: mqtt", "Protocol: wamp, mqttv3.1");
        let accepted = parse(request.as_bytes(), "/mqtt").unwrap().unwrap();
        assert_eq!(accepted.subprotocol, "mqttv3.1");
        let both = GOOD.replace("Protocol: mqtt", "Protocol: mqttv3.1, mqtt");
        let accepted = parse(both.as_bytes(), "/mqtt").unwrap().unwrap();
        assert_eq!(accepted.subprotocol, "mqtt");
    }

    #[test]
    fn refusals_carry_their_status() {
        assert_eq!(status(GOOD), 101);
        assert_eq!(status(&GOOD.replace("/mqtt", "/other")), 404);
        assert_eq!(status(&GOOD.replace("/mqtt", "/mqtt?x=1")), 101);
        assert_eq!(
            status(&GOOD.replace("Sec-WebSocket-Protocol: mqtt\r\n", "")),
            400
        );
        assert_eq!(
            status(&GOOD.replace("Protocol: mqtt", "Protocol: wamp")),
            400
        );
        assert_eq!(status(&GOOD.replace("Upgrade: websocket\r\n", "")), 400);
        assert_eq!(
            status(&GOOD.replace("keep-alive, Upgrade", "keep-alive")),
            400
        );
        assert_eq!(status(&GOOD.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(
            status(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")),
            400
        );
        assert_eq!(status(&GOOD.replace("GET", "POST")), 400);
        assert_eq!(status(&GOOD.replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(status("GARBAGE\0\r\n\r\n"), 400);
    }

    #[test]
    fn an_incomplete_head_waits_until_it_is_too_large() {
        assert_eq!(status(&GOOD[..GOOD.len() - 2]), 0);
        let long = format!(
            "GET /mqtt HTTP/1.1\r\nX-Pad: {}\r\n",
            "a".repeat(MAX_REQUEST)
        );
        assert_eq!(status(&long), 431);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(status(&format!("GET /mqtt HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn a_refusal_is_a_whole_http_response() {
        let refused = parse(GOOD.replace("/mqtt", "/x").as_bytes(), "/mqtt").unwrap_err();
        let text = String::from_utf8(refused.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n") && text.ends_with("\r\n\r\n"));
    }
}
