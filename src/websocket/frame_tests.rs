//! Table tests and property tests of the frame codec.

use super::*;
use proptest::prelude::*;

/// A client frame: masked with `key`.
fn client_frame(fin: bool, op: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_header(&mut out, op, payload.len());
    if !fin {
        out[0] &= 0x7F;
    }
    out[1] |= 0x80;
    out.extend_from_slice(&key);
    let mut masked = payload.to_vec();
    unmask(&mut masked, key, 0);
    out.extend_from_slice(&masked);
    out.to_vec()
}

/// Feeds `input` to a reader `chunk` bytes at a time: the data and the events it yields.
fn read_all(
    reader: &mut Reader,
    input: &[u8],
    chunk: usize,
) -> Result<(Vec<u8>, Vec<Event>), FrameError> {
    let mut buf = BytesMut::new();
    let (mut data, mut events) = (Vec::new(), Vec::new());
    let mut out = [0u8; 7];
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(event) = reader.next(&mut buf, &mut out)? {
            match event {
                Event::Data(n) => data.extend_from_slice(&out[..n]),
                other => events.push(other),
            }
        }
    }
    Ok((data, events))
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

#[test]
fn headers_of_each_length_form_round_trip() {
    for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
        let mut out = BytesMut::new();
        put_header(&mut out, opcode::BINARY, len);
        let (header, size) = parse_header(&out).unwrap().unwrap();
        assert_eq!(
            (header.len, header.mask, header.fin, size),
            (len as u64, None, true, out.len())
        );
        for cut in 0..out.len() {
            assert_eq!(parse_header(&out[..cut]), Ok(None), "len {len} cut {cut}");
        }
    }
}

#[test]
fn the_rfc_masked_hello_unmasks() {
    // RFC 6455 section 5.7: a masked text "Hello" (read here as payload).
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (header, size) = parse_header(&frame).unwrap().unwrap();
    let mut payload = frame[size..].to_vec();
    unmask(&mut payload, header.mask.unwrap(), 0);
    assert_eq!(&payload, b"Hello");
    assert_eq!(
        read_all(&mut Reader::new(100), &frame, 64),
        Err(FrameError::Text)
    );
}

#[test]
fn bad_frames_name_their_close_code() {
    let cases: [(Vec<u8>, FrameError, u16); 7] = [
        (vec![0x82, 0x01, b'x'], FrameError::Unmasked, 1002),
        (vec![0xC2, 0x80, 0, 0, 0, 0], FrameError::Reserved, 1002),
        (
            vec![0x83, 0x80, 0, 0, 0, 0],
            FrameError::UnknownOpcode(3),
            1002,
        ),
        (
            client_frame(false, opcode::PING, KEY, b""),
            FrameError::BadControlFrame,
            1002,
        ),
        (
            client_frame(true, opcode::CONTINUATION, KEY, b"x"),
            FrameError::UnexpectedContinuation,
            1002,
        ),
        (
            client_frame(true, opcode::TEXT, KEY, b"x"),
            FrameError::Text,
            1003,
        ),
        (
            [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].to_vec(),
            FrameError::BadLength,
            1002,
        ),
    ];
    for (input, error, code) in cases {
        assert_eq!(
            read_all(&mut Reader::new(1 << 20), &input, 100),
            Err(error.clone())
        );
        assert_eq!(error.close_code(), code);
    }
    let mut two = client_frame(false, opcode::BINARY, KEY, b"a");
    two.extend(client_frame(true, opcode::BINARY, KEY, b"b"));
    assert_eq!(
        read_all(&mut Reader::new(100), &two, 100),
        Err(FrameError::UnfinishedMessage)
    );
}

#[test]
fn a_frame_announcing_2_pow_62_bytes_is_too_big_before_any_payload() {
    let mut input = vec![0x82, 0xFF];
    input.extend_from_slice(&(1u64 << 62).to_be_bytes());
    input.extend_from_slice(&KEY);
    let err = read_all(&mut Reader::new(1 << 20), &input, 100).unwrap_err();
    assert_eq!(err.close_code(), close_code::TOO_BIG);
}

#[test]
fn fragments_count_towards_one_message_limit() {
    let mut input = client_frame(false, opcode::BINARY, KEY, &[1; 6]);
    input.extend(client_frame(true, opcode::CONTINUATION, KEY, &[2; 5]));
    assert!(matches!(
        read_all(&mut Reader::new(10), &input, 100),
        Err(FrameError::TooBig { size: 11, max: 10 })
    ));
    let (data, _) = read_all(&mut Reader::new(11), &input, 100).unwrap();
    assert_eq!(data, [[1u8; 6].as_slice(), &[2; 5]].concat());
    // The limit is per message: a second message starts from zero.
    let mut twice = client_frame(true, opcode::BINARY, KEY, &[1; 10]);
    twice.extend(client_frame(true, opcode::BINARY, KEY, &[2; 10]));
    assert_eq!(
        read_all(&mut Reader::new(10), &twice, 3).unwrap().0.len(),
        20
    );
}

#[test]
fn control_frames_between_fragments_are_answered() {
    let mut input = client_frame(false, opcode::BINARY, KEY, b"hel");
    input.extend(client_frame(true, opcode::PING, KEY, b"hi"));
    input.extend(client_frame(true, opcode::PONG, KEY, b""));
    input.extend(client_frame(true, opcode::CONTINUATION, KEY, b"lo"));
    let mut close = vec![];
    close.extend(client_frame(
        true,
        opcode::CLOSE,
        KEY,
        &1000u16.to_be_bytes(),
    ));
    input.extend(close);
    let (data, events) = read_all(&mut Reader::new(100), &input, 1).unwrap();
    assert_eq!(data, b"hello");
    assert_eq!(
        events,
        [Event::Ping(b"hi".to_vec()), Event::Close(Some(1000))]
    );
}

#[test]
fn direct_reads_unmask_where_the_buffered_ones_stopped() {
    let frame = client_frame(true, opcode::BINARY, KEY, b"abcdefghij");
    let mut reader = Reader::new(100);
    let mut input = BytesMut::from(&frame[..9]); // header (6) + 3 payload bytes
    let mut out = [0u8; 16];
    assert_eq!(reader.next(&mut input, &mut out), Ok(Some(Event::Data(3))));
    assert_eq!(reader.payload_left(), 7);
    let mut rest = frame[9..].to_vec();
    reader.unmask_direct(&mut rest);
    assert_eq!(&rest, b"defghij");
    assert_eq!(reader.payload_left(), 0);
}

proptest! {
    /// However a message is fragmented, masked and cut into reads, the reader gives its
    /// payload back in order and answers each ping.
    #[test]
    fn any_fragmentation_and_read_size_gives_the_payload_back(
        parts in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..300), any::<[u8; 4]>(), any::<bool>()), 1..8),
        chunk in 1usize..64,
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        let mut pings = 0;
        for (i, (payload, key, ping)) in parts.iter().enumerate() {
            let op = if i == 0 { opcode::BINARY } else { opcode::CONTINUATION };
            input.extend(client_frame(i + 1 == parts.len(), op, *key, payload));
            expected.extend_from_slice(payload);
            if *ping {
                input.extend(client_frame(true, opcode::PING, *key, &payload[..payload.len().min(125)]));
                pings += 1;
            }
        }
        let (data, events) = read_all(&mut Reader::new(1 << 20), &input, chunk).unwrap();
        prop_assert_eq!(data, expected);
        prop_assert_eq!(events.len(), pings);
    }

    /// Unmasking is its own inverse at any offset, and agrees with byte-wise XOR.
    #[test]
    fn unmask_at_any_offset_matches_bytewise_xor(data in proptest::collection::vec(any::<u8>(), 0..64), key in any::<[u8; 4]>(), offset in 0u64..16) {
        let mut fast = data.clone();
        unmask(&mut fast, key, offset);
        let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[((i as u64 + offset) % 4) as usize]).collect();
        prop_assert_eq!(&fast, &slow);
        unmask(&mut fast, key, offset);
        prop_assert_eq!(fast, data);
    }

    /// Arbitrary bytes never panic the reader.
    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200), chunk in 1usize..32) {
        let _ = read_all(&mut Reader::new(1000), &input, chunk);
    }
}
