//! Wire codec costs: every datagram a node handles passes through one of these, so they
//! bound the packet rate of the socket actor.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use introducer_proto::frame::{decode, encode_envelope};
use introducer_proto::pb::{envelope::Kind, Envelope, Punch, Sealed};
use introducer_proto::stun::{Message, TransactionId};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

const ID: TransactionId = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

/// The answer a public node with two addresses gives (RFC 5780).
fn rfc5780_success(mapped: &str) -> Message {
    Message {
        response_origin: Some("203.0.113.1:3478".parse().unwrap()),
        other_address: Some("203.0.113.2:3479".parse().unwrap()),
        ..Message::binding_success(ID, mapped.parse::<SocketAddr>().unwrap())
    }
}

fn stun(c: &mut Criterion) {
    let mut group = c.benchmark_group("stun");
    let request = Message::binding_request(ID);
    group.bench_function("binding_request/encode", |b| b.iter(|| black_box(&request).encode()));
    let request_bytes = request.encode();
    group.bench_function("binding_request/decode", |b| b.iter(|| Message::decode(black_box(&request_bytes))));
    for (name, mapped) in [("v4", "192.0.2.1:32853"), ("v6", "[2001:db8::1]:32853")] {
        let success = rfc5780_success(mapped);
        let bytes = success.encode();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("binding_success_{name}/encode"), |b| b.iter(|| black_box(&success).encode()));
        group.bench_function(format!("binding_success_{name}/decode"), |b| {
            b.iter(|| Message::decode(black_box(&bytes)))
        });
    }
    group.finish();
}

fn envelope(c: &mut Criterion) {
    let punch = Envelope {
        kind: Some(Kind::Punch(Punch {
            nonce: vec![7; 16].into(),
            public_key: vec![8; 36].into(),
            signature: vec![9; 64].into(),
            ack: Some(false),
            token: Some(0x0123_4567_89ab_cdef),
            echo: Some(0xfedc_ba98_7654_3210),
            handshake: vec![10; 96].into(),
            padding: Default::default(),
        })),
    };
    // Sealed: key id and counter travel with the ciphertext (non-zero, so encoded as on the wire).
    let data = Envelope {
        kind: Some(Kind::Sealed(Sealed { ciphertext: vec![0xAB; 1000].into(), key: 0x1122_3344, counter: 42 })),
    };
    let mut group = c.benchmark_group("envelope");
    for (name, env) in [("punch", punch), ("data_1000", data)] {
        let bytes = encode_envelope(&env);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("{name}/encode"), |b| b.iter(|| encode_envelope(black_box(&env))));
        group.bench_function(format!("{name}/decode"), |b| b.iter(|| decode(black_box(&bytes)).is_ok()));
    }
    group.finish();
}

/// What a session datagram costs: a 1000-byte payload sealed into a whole datagram (session
/// message, AES-256-GCM, envelope) and opened again; and the handshake that makes the keys.
fn seal(c: &mut Criterion) {
    use introducer_actors::identity::Identity;
    use introducer_actors::punch::{Path, Strategy};
    use introducer_actors::session::noise::{Binding, Handshake, Statics};
    use introducer_actors::session::{Config, ProvenPath, Session};
    use introducer_actors::SocketId;
    use rand::SeedableRng;
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = ("192.0.2.1:1".parse().unwrap(), "192.0.2.2:2".parse().unwrap());
    let rng = |seed| rand::rngs::StdRng::seed_from_u64(seed);
    let handshake = |initiator| {
        let (me, peer) = if initiator { (&a, &b) } else { (&b, &a) };
        Handshake::new(initiator, Statics::new(me, &peer.peer_id()).unwrap(), Binding::Punch(&[7; 16]), rng(1))
    };
    let keys = || {
        let (mut i, mut r) = (handshake(true), handshake(false));
        let theirs = r.handle(i.message().unwrap()).unwrap().unwrap();
        (i.handle(r.message().unwrap()).unwrap().unwrap(), theirs)
    };
    let now = std::time::Instant::now();
    let session = |me: &Identity, peer: &Identity, remote, keys| {
        let opened = ProvenPath {
            peer: peer.peer_id(),
            socket: SocketId::PRIMARY,
            remote,
            proven: vec![remote],
            controlling: true,
            path: Path::Direct,
            strategy: Strategy::Direct,
            keys: Some(keys),
        };
        let statics = Statics::new(me, &peer.peer_id()).unwrap();
        Session::new(Config::default(), opened, None, statics, rng(2), now)
    };
    let (ka, kb) = keys();
    let (mut sender, mut receiver) = (session(&a, &b, b_addr, ka), session(&b, &a, a_addr, kb));
    let payload = vec![0xAB; 1000];
    let mut group = c.benchmark_group("seal");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("datagram_1000/seal", |bench| {
        bench.iter(|| {
            sender.send_data(now, black_box(&payload)).unwrap();
            sender.poll_transmit()
        })
    });
    group.bench_function("datagram_1000/open", |bench| {
        bench.iter_batched(
            || {
                sender.send_data(now, &payload).unwrap();
                let datagram = sender.poll_transmit().unwrap().payload;
                match decode(&datagram) {
                    Ok(introducer_proto::frame::Decoded::Envelope(e)) => e.kind.unwrap(),
                    other => panic!("{other:?}"),
                }
            },
            |kind| {
                receiver.handle(now, a_addr, kind);
                receiver.poll_event()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
    c.bench_function("handshake/ik", |bench| bench.iter(keys));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = stun, envelope, seal
}
criterion_main!(benches);
