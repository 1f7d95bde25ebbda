//! Tests of the WebSocket transport over real sockets: a detach in the middle of a frame
//! loses nothing, pings are answered between data, writes are binary frames.

use super::*;
use crate::server::transport::{attach, Attached};
use glommio::net::{TcpListener, TcpStream};

const REQUEST: &[u8] =
    b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: mqtt\r\n\r\n";

/// The length of the `101` answer to [`REQUEST`].
const HEAD: usize = 159;

fn client_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut out = BytesMut::new();
    frame::put_header(&mut out, op, payload.len());
    if !fin {
        out[0] &= 0x7F;
    }
    out[1] |= 0x80;
    out.extend_from_slice(&key);
    let mut masked = payload.to_vec();
    frame::unmask(&mut masked, key, 0);
    out.extend_from_slice(&masked);
    out.to_vec()
}

/// Reads from `client` until `want` bytes have come.
async fn read_n(client: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = vec![0; want];
    client.read_exact(&mut got).await.unwrap();
    got
}

#[test]
fn a_hand_off_in_the_middle_of_a_fragmented_message_loses_nothing() {
    glommio::LocalExecutor::default().run(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let accepted = listener.accept().await.unwrap();
        // The request and the first frames arrive together, before the upgrade reads.
        let mut sent = REQUEST.to_vec();
        sent.extend(client_frame(opcode::BINARY, false, b"hello "));
        sent.extend(client_frame(opcode::PING, true, b"p1"));
        client.write_all(&sent).await.unwrap();
        let mut ws = upgrade(accepted, "/mqtt", 1 << 20)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let head = read_n(&mut client, HEAD).await;
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        let mut part = [0u8; 4];
        ws.read_exact(&mut part).await.unwrap();
        assert_eq!(&part, b"hell");

        let (fd, state) = Transport::detach(ws).unwrap();
        let Ok(Attached::WebSocket(mut ws)) = attach(fd, state) else {
            panic!("a WebSocket state attaches as a WebSocket");
        };
        let mut rest = Vec::new();
        client
            .write_all(&client_frame(opcode::CONTINUATION, true, b"world"))
            .await
            .unwrap();
        while rest.len() < 7 {
            let mut buf = [0u8; 64];
            let n = ws.read(&mut buf).await.unwrap();
            rest.extend_from_slice(&buf[..n]);
        }
        assert_eq!(rest, b"o world");
        // The pong left from the read side; the writer has sent nothing yet.
        assert_eq!(read_n(&mut client, 4).await, [0x8A, 2, b'p', b'1']);
        ws.write_all(b"abc").await.unwrap();
        assert_eq!(read_n(&mut client, 5).await, [0x82, 3, b'a', b'b', b'c']);
        // A Close is answered with a Close, and the read side ends.
        client
            .write_all(&client_frame(opcode::CLOSE, true, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(ws.read(&mut buf).await.unwrap(), 0);
        assert_eq!(read_n(&mut client, 4).await, [0x88, 2, 0x03, 0xE8]);
        // Nothing goes out after the Close.
        ws.write_all(b"late").await.unwrap();
        ws.shutdown_write().await.unwrap();
        let mut tail = Vec::new();
        client.read_to_end(&mut tail).await.unwrap();
        assert!(tail.is_empty(), "{tail:?}");
    });
}

#[test]
fn a_text_frame_is_closed_with_1003_and_fails_the_read() {
    glommio::LocalExecutor::default().run(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let accepted = listener.accept().await.unwrap();
        let mut sent = REQUEST.to_vec();
        sent.extend(client_frame(opcode::TEXT, true, b"{}"));
        client.write_all(&sent).await.unwrap();
        let mut ws = upgrade(accepted, "/mqtt", 1 << 20)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let mut buf = [0u8; 8];
        let err = ws.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let _ = read_n(&mut client, HEAD).await;
        assert_eq!(read_n(&mut client, 4).await, [0x88, 2, 0x03, 0xEB]);
    });
}
