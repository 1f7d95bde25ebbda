//! Throughput of the wire codec on the packets a broker handles most: a QoS 1 PUBLISH with a
//! 64-byte payload (3.1.1, and 5.0 with a few properties), a CONNECT, and a batch of ten
//! mixed packets decoded from one buffer as a read from a socket would deliver them.
//!
//! Run: `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`.

use berth::protocol::{
    decode, encode, Ack, Connect, LastWill, Packet, PacketId, Properties, PropertyValues,
    ProtocolVersion, Publish, QoS, ReasonCode,
};
use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn publish(version: ProtocolVersion) -> Packet {
    let properties = if version.is_v5() {
        PropertyValues {
            message_expiry_interval: Some(3600),
            content_type: Some("application/json".into()),
            user_properties: vec![("trace".into(), "4bf92f3577b34da6".into())],
            ..PropertyValues::default()
        }
        .into()
    } else {
        Properties::default()
    };
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sensors/building-7/floor-3/temperature".into(),
        packet_id: PacketId::new(4242),
        properties,
        payload: Bytes::from(vec![b'x'; 64]),
    })
}

fn connect() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 60,
        client_id: "device-0001-7f3a9c".into(),
        will: Some(LastWill {
            topic: "devices/device-0001/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PropertyValues {
                will_delay_interval: Some(10),
                ..PropertyValues::default()
            }
            .into(),
        }),
        username: Some("device-0001".into()),
        password: Some(Bytes::from_static(b"a-long-enough-secret-token")),
        properties: PropertyValues {
            session_expiry_interval: Some(86_400),
            receive_maximum: Some(100),
            maximum_packet_size: Some(1 << 20),
            ..PropertyValues::default()
        }
        .into(),
    }))
}

/// Ten packets as they might arrive on one subscriber connection.
fn batch() -> Vec<Packet> {
    let ack = |id| {
        Packet::PubAck(Ack {
            packet_id: PacketId::new(id).unwrap(),
            reason_code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        })
    };
    let mut packets = Vec::new();
    for i in 1..=4 {
        packets.push(publish(ProtocolVersion::V5));
        packets.push(ack(i));
    }
    packets.push(Packet::PingReq);
    packets.push(publish(ProtocolVersion::V5));
    packets
}

fn encoded(packets: &[Packet], version: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    for packet in packets {
        encode(packet, version, &mut buf).expect("encodable");
    }
    buf.freeze()
}

fn bench_one(c: &mut Criterion, name: &str, packet: Packet, version: ProtocolVersion) {
    let bytes = encoded(std::slice::from_ref(&packet), version);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&bytes[..]),
            |mut buf| {
                decode(black_box(&mut buf), version, u32::MAX)
                    .expect("valid")
                    .expect("whole")
            },
            BatchSize::SmallInput,
        )
    });
    let mut buf = BytesMut::with_capacity(1024);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&packet), version, &mut buf).expect("encodable");
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_one(
        c,
        "publish_qos1_v311",
        publish(ProtocolVersion::V3_1_1),
        ProtocolVersion::V3_1_1,
    );
    bench_one(
        c,
        "publish_qos1_v5",
        publish(ProtocolVersion::V5),
        ProtocolVersion::V5,
    );
    bench_one(c, "connect_v5", connect(), ProtocolVersion::V5);

    let packets = batch();
    let bytes = encoded(&packets, ProtocolVersion::V5);
    let mut group = c.benchmark_group("batch_10_v5");
    group.throughput(Throughput::Elements(packets.len() as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&bytes[..]),
            |mut buf| {
                let mut n = 0;
                while let Some(packet) =
                    decode(&mut buf, ProtocolVersion::V5, u32::MAX).expect("valid")
                {
                    black_box(packet);
                    n += 1;
                }
                assert_eq!(n, 10);
            },
            BatchSize::SmallInput,
        )
    });
    let mut buf = BytesMut::with_capacity(2048);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            for packet in &packets {
                encode(black_box(packet), ProtocolVersion::V5, &mut buf).expect("encodable");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
