//! What the WebSocket transport adds to a read: its frame decoder (`websocket::frame::Reader`)
//! unmasking 16 KiB of client frames, each holding one 100-byte MQTT packet (the size of a
//! QoS 1 PUBLISH with a 64-byte payload), or one 16 KiB frame, against a plain copy of the
//! same bytes (what a read costs without WebSocket).
//!
//! Run: `cargo bench --bench websocket -- --warm-up-time 1 --measurement-time 3`.

use berth::websocket::frame::{put_header, unmask, Reader};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Client frames (masked) of `size` payload bytes each, about 16 KiB in all.
fn frames(size: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    while out.len() < 16 * 1024 {
        let start = out.len();
        put_header(&mut out, 0x2, size);
        out[start + 1] |= 0x80;
        out.extend_from_slice(&[1, 2, 3, 4]);
        let mut payload = vec![0x42; size];
        unmask(&mut payload, [1, 2, 3, 4], 0);
        out.extend_from_slice(&payload);
    }
    out.to_vec()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("websocket_read_16k");
    for (name, size) in [("100_byte_frames", 100), ("one_16k_frame", 16 * 1024)] {
        let input = frames(size);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |mut buf| {
                    let mut reader = Reader::new(1 << 20);
                    let mut out = vec![0u8; 16 * 1024];
                    let mut total = 0;
                    while let Ok(Some(event)) = reader.next(&mut buf, &mut out[total..]) {
                        if let berth::websocket::Event::Data(n) = event {
                            total += n;
                        }
                    }
                    black_box(total)
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("{name}_plain_copy"), |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| {
                    let mut out = vec![0u8; 16 * 1024 + 1024];
                    out[..buf.len()].copy_from_slice(&buf);
                    black_box(out)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
