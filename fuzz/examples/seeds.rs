//! Writes the seed corpus, `fuzz/corpus/<target>/`: real datagrams of the common kinds,
//! for the machine targets as steps that deliver them (from a stranger and from an
//! address the target knows) and replay what the fixture said, and a few seeded random
//! inputs for the targets whose input is a stream of choices. Deterministic; run it again
//! when a target's input format changes:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds

use introducer_actors::identity::Identity;
use introducer_actors::probe::server::full_answer_len;
use introducer_actors::relay::sign_request;
use introducer_fuzz::node::Step;
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::stun::{ChangeRequest, Message};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs;
use std::path::Path;

fn envelope(kind: Kind) -> Vec<u8> {
    encode_envelope(&pb::Envelope { kind: Some(kind) })
}

fn stun() -> Vec<(&'static str, Vec<u8>)> {
    let id = [7; 12];
    let addr = "203.0.113.10:40000".parse().expect("an address");
    let origin = "198.51.100.1:3478".parse().expect("an address");
    // As the node's own probe pads its requests: to the full answer's size (header 20,
    // PADDING's header 4, FINGERPRINT 8).
    let pad = full_answer_len(false) - 32;
    vec![
        ("stun-request", Message::binding_request(id).encode()),
        ("stun-request-bare", Message { fingerprint: false, ..Message::binding_request(id) }.encode()),
        ("stun-request-padded", Message { padding: pad, ..Message::binding_request(id) }.encode()),
        (
            "stun-change-request",
            Message {
                change_request: Some(ChangeRequest { change_ip: true, change_port: true }),
                ..Message::binding_request(id)
            }
            .encode(),
        ),
        ("stun-response-port", Message { response_port: Some(4000), ..Message::binding_request(id) }.encode()),
        (
            "stun-success",
            Message {
                mapped_address: Some(addr),
                response_origin: Some(origin),
                other_address: Some("198.51.100.2:3479".parse().expect("an address")),
                ..Message::binding_success(id, addr)
            }
            .encode(),
        ),
        ("stun-error", Message::binding_error(id, 420, "Unknown Attribute").encode()),
    ]
}

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let mallory = Identity::from_seed(666);
    let victim = Identity::from_seed(2).peer_id();
    let record = mallory.sign_record(pb::PeerRecord {
        private_addrs: vec![pb::Addr::from("10.0.0.7:5000".parse::<std::net::SocketAddr>().expect("an address"))],
        issued_ms: 1,
        ..Default::default()
    });
    let nonce = [5; 16];
    vec![
        ("hello", envelope(Kind::Hello(pb::Hello { padding: vec![0; 249].into() }))),
        (
            "register",
            envelope(Kind::Register(pb::Register { record: Some(record.clone()), nonce: 9, ..Default::default() })),
        ),
        (
            "register-cookie",
            envelope(Kind::Register(pb::Register {
                record: Some(record.clone()),
                cookie: 42,
                nonce: 9,
                proof: mallory.register_proof(42, 9).into(),
            })),
        ),
        (
            "introduce-request",
            envelope(Kind::IntroduceRequest(pb::IntroduceRequest {
                target: victim.to_bytes().into(),
                request_id: 1,
                mac: 3,
            })),
        ),
        (
            "introduction",
            envelope(Kind::Introduction(pb::Introduction {
                request_id: 1,
                peer: Some(record),
                peer_public: Some(pb::Addr::from("203.0.113.99:6000".parse::<std::net::SocketAddr>().expect("addr"))),
                nonce: nonce.to_vec().into(),
                initiator: true,
                mac: 4,
                fresh: false,
            })),
        ),
        (
            "punch",
            envelope(Kind::Punch(pb::Punch {
                token: Some(1),
                echo: Some(2),
                handshake: vec![9; 96].into(),
                ..mallory.punch(&nonce, &victim, false)
            })),
        ),
        ("sealed", envelope(Kind::Sealed(pb::Sealed { key: 1, counter: 2, ciphertext: vec![9; 40].into() }))),
        ("relay-request", envelope(Kind::RelayRequest(sign_request(&mallory, &victim, &nonce, 0)))),
        ("relay-send", envelope(Kind::RelaySend(pb::RelayData { circuit: 7, payload: vec![0; 32].into() }))),
        ("new-mapping", envelope(Kind::NewMapping(mallory.new_mapping(&nonce, &victim)))),
    ]
}

/// Replaces `dir`'s files with `seeds`.
fn write(dir: &Path, seeds: &[(String, Vec<u8>)]) {
    if dir.exists() {
        fs::remove_dir_all(dir).expect("remove the old seeds");
    }
    fs::create_dir_all(dir).expect("create the corpus directory");
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

fn random(rng: &mut StdRng, prefix: &str, sizes: &[usize]) -> Vec<(String, Vec<u8>)> {
    sizes.iter().enumerate().map(|(i, &n)| (format!("{prefix}-{i}"), (0..n).map(|_| rng.gen()).collect())).collect()
}

fn steps(steps: &[Step]) -> Vec<u8> {
    let mut out = Vec::new();
    steps.iter().for_each(|s| s.write(&mut out));
    out
}

/// The machine targets' seeds: each datagram from a stranger (source 0) and from the first
/// address the target knows (source 5, after the five attacker addresses), the attacker
/// registering and asking for an introduction, replays of what the fixture sent, and
/// generated envelopes with time passing in between.
fn machine(rng: &mut StdRng, datagrams: &[(&str, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let raw = |source, payload| Step { what: 0, source, wait: 0, socket: 0, payload };
    let mut seeds: Vec<(String, Vec<u8>)> = datagrams
        .iter()
        .flat_map(|(name, d)| {
            [(format!("{name}-stranger"), steps(&[raw(0, d)])), (format!("{name}-known"), steps(&[raw(5, d)]))]
        })
        .collect();
    // The attacker registers at its own address (the challenge answered with the cookie),
    // asks to be introduced to the fixture's peer, and lets the punch run.
    let register = &datagrams.iter().find(|(n, _)| *n == "register").expect("a Register seed").1;
    let answer = |wait| Step { what: 4, source: 0, wait, socket: 0, payload: &[1] };
    seeds.push(("register-and-introduce".into(), steps(&[raw(0, register), answer(1), answer(1), answer(150)])));
    let replays: Vec<[u8; 3]> = (0..16).map(|i| [i, 0, 0]).collect();
    let replay: Vec<Step> =
        replays.iter().map(|r| Step { what: 1, source: r[0] % 8, wait: 1, socket: r[0], payload: r }).collect();
    seeds.push(("replays".into(), steps(&replay)));
    let inputs: Vec<Vec<u8>> = (0..12).map(|_| (0..48).map(|_| rng.gen()).collect()).collect();
    let generated: Vec<Step> = inputs
        .iter()
        .enumerate()
        .map(|(i, p)| Step { what: 2, source: i as u8, wait: [0, 50, 120, 210][i % 4], socket: i as u8, payload: p })
        .collect();
    seeds.push(("generated".into(), steps(&generated)));
    seeds
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut rng = StdRng::seed_from_u64(8);
    let (stun, frames) = (stun(), frames());
    let all: Vec<(&str, Vec<u8>)> = stun.iter().chain(&frames).cloned().collect();
    let named = |d: &[(&str, Vec<u8>)]| d.iter().map(|(n, b)| (n.to_string(), b.clone())).collect::<Vec<_>>();
    write(&root.join("frame"), &named(&all));
    write(&root.join("stun"), &named(&stun));
    write(&root.join("envelope"), &random(&mut rng, "input", &[32, 64, 128, 256, 512]));
    write(&root.join("session"), &random(&mut rng, "input", &[64, 128, 256, 512, 1024]));
    let common: Vec<(&str, Vec<u8>)> = all
        .iter()
        .filter(|(n, _)| ["stun-request", "hello", "register", "punch", "relay-request"].contains(n))
        .cloned()
        .collect();
    for target in ["introducer", "peer"] {
        write(&root.join(target), &machine(&mut rng, &common));
    }
}
