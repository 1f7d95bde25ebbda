//! The client's WebSocket codec against berth's server side: the handshake each way, masked
//! frames of every length form through the server's `Reader`, server frames split anywhere,
//! control frames, and [`WsStream`] over an in-memory pipe.

use super::*;
use berth::websocket::frame::{put_close, put_frame, put_header};
use berth::websocket::{handshake, Reader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn the_request_passes_the_servers_handshake_and_its_answer_passes_ours() {
    let key = Keys::new(7).handshake_key();
    let req = request("127.0.0.1:8083", "/mqtt", &key);
    let accepted = handshake::parse(req.as_bytes(), "/mqtt")
        .expect("accepted")
        .expect("complete");
    assert_eq!(accepted.subprotocol, "mqtt");
    assert_eq!(accepted.consumed, req.len());
    let mut answer = accepted.response.clone();
    answer.extend_from_slice(b"\x82\x02ab");
    assert_eq!(response(&answer, &key), Ok(Some(accepted.response.len())));
    // Incomplete heads wait for more; another key's answer is refused.
    assert_eq!(response(&accepted.response[..20], &key), Ok(None));
    let other = Keys::new(8).handshake_key();
    assert!(response(&accepted.response, &other)
        .unwrap_err()
        .contains("Accept"));
}

#[test]
fn refusals_and_a_missing_subprotocol_fail_the_handshake() {
    let refused = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    assert!(response(refused, "k").unwrap_err().contains("400"));
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let no_protocol = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    assert!(response(no_protocol.as_bytes(), key)
        .unwrap_err()
        .contains("subprotocol"));
    assert!(response(&[b'x'; MAX_RESPONSE + 1], key).is_err());
}

#[test]
fn handshake_keys_are_16_bytes_and_differ() {
    let mut keys = Keys::new(0);
    let (a, b) = (keys.handshake_key(), keys.handshake_key());
    assert_ne!(a, b);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&a)
        .expect("base64");
    assert_eq!(raw.len(), 16);
}

#[test]
fn masked_frames_of_every_length_form_read_back_through_the_servers_reader() {
    let mut keys = Keys::new(42);
    for len in [0usize, 1, 125, 126, 0xFFFF, 0x10000, 70_001] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut wire = BytesMut::new();
        put_masked_frame(&mut wire, opcode::BINARY, &payload, keys.mask());
        let (header, size) = parse_header(&wire).expect("valid").expect("whole");
        assert!(header.fin && header.mask.is_some(), "len {len}");
        assert_eq!((header.len, wire.len()), (len as u64, size + len));
        let mut reader = Reader::new(1 << 20);
        let mut out = vec![0u8; len + 1];
        let mut got = Vec::new();
        while let Some(event) = reader.next(&mut wire, &mut out).expect("accepted") {
            match event {
                berth::websocket::Event::Data(n) => got.extend_from_slice(&out[..n]),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, payload, "len {len}");
    }
}

#[test]
fn server_frames_split_anywhere_give_the_same_payload() {
    let mut wire = BytesMut::new();
    put_frame(&mut wire, opcode::PONG, b"ignored");
    put_header(&mut wire, opcode::BINARY, 3);
    wire.put_slice(b"abc");
    put_frame(&mut wire, opcode::BINARY, &[9u8; 300]);
    // A message in two frames: FIN clear, then a continuation.
    wire.put_u8(opcode::BINARY);
    wire.put_u8(2);
    wire.put_slice(b"de");
    put_frame(&mut wire, opcode::CONTINUATION, b"f");
    let mut expected = b"abc".to_vec();
    expected.extend_from_slice(&[9u8; 300]);
    expected.extend_from_slice(b"def");
    for step in [1usize, 2, 5, 64, wire.len()] {
        let mut reader = FrameReader::default();
        let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
        for chunk in wire.chunks(step) {
            input.extend_from_slice(chunk);
            while let Some(event) = reader.next(&mut input, &mut out).expect("valid") {
                assert!(matches!(event, Event::Data(_)), "step {step}: {event:?}");
            }
        }
        assert_eq!(&out[..], &expected[..], "step {step}");
        assert!(input.is_empty());
    }
}

#[test]
fn pings_closes_masked_and_text_frames() {
    let (mut reader, mut out) = (FrameReader::default(), BytesMut::new());
    let mut input = BytesMut::new();
    put_frame(&mut input, opcode::PING, b"hi");
    put_close(&mut input, 1000);
    assert_eq!(
        reader.next(&mut input, &mut out),
        Ok(Some(Event::Ping(b"hi".to_vec())))
    );
    assert_eq!(reader.next(&mut input, &mut out), Ok(Some(Event::Close)));
    let mut masked = BytesMut::new();
    put_masked_frame(&mut masked, opcode::BINARY, b"x", [1, 2, 3, 4]);
    assert!(reader
        .next(&mut masked, &mut out)
        .unwrap_err()
        .contains("masked"));
    let mut text = BytesMut::new();
    put_frame(&mut text, opcode::TEXT, b"{}");
    assert!(FrameReader::default()
        .next(&mut text, &mut out)
        .unwrap_err()
        .contains("text"));
}

#[tokio::test]
async fn a_stream_writes_one_masked_frame_per_write_and_answers_pings() {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let mut leftover = BytesMut::new();
    put_frame(&mut leftover, opcode::BINARY, b"early");
    let mut ws = WsStream::new(client, &leftover, Keys::new(3));
    ws.write_all(b"hello mqtt").await.expect("write");
    ws.flush().await.expect("flush");
    let mut wire = BytesMut::zeroed(64);
    let n = server.read(&mut wire).await.expect("read");
    wire.truncate(n);
    let (mut reader, mut out) = (Reader::new(1024), [0u8; 64]);
    assert_eq!(
        reader.next(&mut wire, &mut out),
        Ok(Some(berth::websocket::Event::Data(10)))
    );
    assert_eq!(&out[..10], b"hello mqtt");
    assert!(wire.is_empty(), "one frame for one write");

    let mut got = [0u8; 5];
    ws.read_exact(&mut got).await.expect("leftover payload");
    assert_eq!(&got, b"early");
    let mut frames = BytesMut::new();
    put_frame(&mut frames, opcode::PING, b"p");
    put_frame(&mut frames, opcode::BINARY, b"more");
    put_close(&mut frames, 1000);
    server.write_all(&frames).await.expect("server write");
    let mut rest = Vec::new();
    ws.read_to_end(&mut rest).await.expect("read to the close");
    assert_eq!(rest, b"more");
    let mut pong = BytesMut::zeroed(64);
    let n = server.read(&mut pong).await.expect("pong");
    pong.truncate(n);
    let (header, _) = parse_header(&pong).expect("valid").expect("whole");
    assert_eq!((header.opcode, header.len), (opcode::PONG, 1));
    assert!(header.mask.is_some());
}
