//! The amplification table: every kind of datagram, from a spoofed source, delivered to a
//! whole node (the introducer of the standard topology, and a peer registered with it),
//! and the bytes the node answers *to that source* with, against the bytes that came in.
//! Nothing may answer an address with more than it sent, except STUN (its answers are
//! capped at 76 bytes for IPv4 and rate-limited; see the README's "Wire").
//!
//! Two spoofed sources each: a stranger, and an address the node knows (for the
//! introducer, a registered peer's; for the peer, its introducer's). The first-order
//! answer is measured: what the node sends back at once. `-- --nocapture` prints the table.

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::relay::sign_request;
use introducer_actors::{Machine, SocketId};
use introducer_node::NodeEvent;
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::stun::Message;
use introducer_sim::node::SimNode;
use introducer_sim::standard::{Standard, NAT_IPS, PEER_PORT};
use introducer_sim::{Link, Place};
use std::net::SocketAddr;
use std::time::Duration;

/// STUN's documented exception: a bare 20-byte request may get the full 76-byte answer.
const STUN_ANSWER_CAP: usize = 76;

fn envelope(kind: Kind) -> Vec<u8> {
    encode_envelope(&pb::Envelope { kind: Some(kind) })
}

/// One datagram of every kind, as an attacker would send it: well-formed, and signed
/// where a signature is asked for (keys cost nothing).
fn datagrams() -> Vec<(&'static str, Vec<u8>)> {
    let mallory = Identity::from_seed(666);
    let victim = Identity::from_seed(2).peer_id();
    let record = mallory.sign_record(pb::PeerRecord { issued_ms: 1, ..Default::default() });
    let relay_data = pb::RelayData { circuit: 7, payload: vec![0; 32].into() };
    vec![
        ("STUN binding request", Message::binding_request([7; 12]).encode()),
        ("Hello (padded)", envelope(Kind::Hello(pb::Hello { padding: vec![0; 249].into() }))),
        ("Hello (bare)", envelope(Kind::Hello(pb::Hello::default()))),
        ("ServerInfo", envelope(Kind::ServerInfo(pb::ServerInfo::default()))),
        (
            "Register (no cookie)",
            envelope(Kind::Register(pb::Register { record: Some(record.clone()), ..Default::default() })),
        ),
        (
            "Register (guessed cookie)",
            envelope(Kind::Register(pb::Register {
                record: Some(record),
                cookie: 42,
                nonce: 1,
                proof: vec![0; 64].into(),
            })),
        ),
        ("RegisterChallenge", envelope(Kind::RegisterChallenge(pb::RegisterChallenge { cookie: 1, nonce: 2 }))),
        ("Registered", envelope(Kind::Registered(pb::Registered::default()))),
        (
            "IntroduceRequest",
            envelope(Kind::IntroduceRequest(pb::IntroduceRequest {
                target: victim.to_bytes().into(),
                request_id: 1,
                mac: 3,
            })),
        ),
        ("Introduction", envelope(Kind::Introduction(pb::Introduction::default()))),
        ("IntroduceError", envelope(Kind::IntroduceError(pb::IntroduceError::default()))),
        (
            "Punch",
            envelope(Kind::Punch(pb::Punch {
                token: Some(1),
                echo: Some(2),
                ..mallory.punch(&[5; 16], &victim, false)
            })),
        ),
        (
            "Punch (with handshake)",
            envelope(Kind::Punch(pb::Punch {
                token: Some(1),
                echo: Some(2),
                handshake: vec![9; 96].into(),
                ..mallory.punch(&[5; 16], &victim, false)
            })),
        ),
        (
            "Handshake",
            envelope(Kind::Handshake(pb::Handshake { message: vec![9; 96].into(), answer: false, under: 0 })),
        ),
        (
            "Handshake answer",
            envelope(Kind::Handshake(pb::Handshake { message: vec![9; 48].into(), answer: true, under: 0 })),
        ),
        ("Sealed", envelope(Kind::Sealed(pb::Sealed { key: 1, counter: 2, ciphertext: vec![9; 40].into() }))),
        ("RelayRequest", envelope(Kind::RelayRequest(sign_request(&mallory, &victim, &[5; 16], 0)))),
        ("RelayRequest (guessed cookie)", envelope(Kind::RelayRequest(sign_request(&mallory, &victim, &[5; 16], 42)))),
        ("RelayChallenge", envelope(Kind::RelayChallenge(pb::RelayChallenge::default()))),
        ("RelayAccepted", envelope(Kind::RelayAccepted(pb::RelayAccepted::default()))),
        ("RelayRefused", envelope(Kind::RelayRefused(pb::RelayRefused::default()))),
        ("RelaySend", envelope(Kind::RelaySend(relay_data.clone()))),
        ("RelayDeliver", envelope(Kind::RelayDeliver(relay_data))),
        ("RelayClose", envelope(Kind::RelayClose(pb::RelayClose { circuit: 7 }))),
        ("RelayClosed", envelope(Kind::RelayClosed(pb::RelayClose { circuit: 7 }))),
        ("NewMapping", envelope(Kind::NewMapping(mallory.new_mapping(&[5; 16], &victim)))),
    ]
}

#[test]
fn nothing_answers_a_spoofed_source_with_more_bytes_than_it_sent() {
    let mut standard = Standard::new(1, Link::INTERNET_DEFAULT, false);
    let introducer = standard.introducers[0];
    let introducer_addr = standard.introducer_addrs()[0];
    let peer = standard.peer(2);
    let nat = standard.sim.add_nat(NatBehavior::PORT_RESTRICTED, NAT_IPS[0], None);
    let peer = peer.spawn(&mut standard.sim, Place::Behind(nat), PEER_PORT);
    assert!(standard.run_until_registered(&[peer], Duration::from_secs(10)));
    let registered = standard.sim.machine_ref::<SimNode>(peer).events().iter().find_map(|(_, e)| match e {
        NodeEvent::Registered { observed, .. } => Some(*observed),
        _ => None,
    });
    let peer_public = registered.expect("registered");
    let stranger: SocketAddr = "192.0.2.99:40000".parse().unwrap();

    let mut rows = Vec::new();
    for (node, host, known) in [
        ("introducer", introducer, ("a registered peer", peer_public)),
        ("peer", peer, ("its introducer", introducer_addr)),
    ] {
        for (kind, datagram) in datagrams() {
            for (from, src) in [("a stranger", stranger), known] {
                let now = standard.sim.now();
                let machine = standard.sim.machine::<SimNode>(host);
                machine.handle_datagram(now, SocketId::PRIMARY, src, &datagram);
                let out: usize = std::iter::from_fn(|| machine.poll_transmit())
                    .filter(|t| t.dst == src)
                    .map(|t| t.payload.len())
                    .sum();
                rows.push((node, kind, from, datagram.len(), out));
            }
        }
    }
    println!("{:<11} {:<30} {:<18} {:>5} {:>5} {:>6}", "node", "datagram", "spoofed from", "in B", "out B", "ratio");
    for (node, kind, from, sent, out) in &rows {
        println!("{node:<11} {kind:<30} {from:<18} {sent:>5} {out:>5} {:>6.2}", *out as f64 / *sent as f64);
    }
    for (node, kind, from, sent, out) in rows {
        let cap = if kind.starts_with("STUN") { STUN_ANSWER_CAP } else { sent };
        assert!(out <= cap, "{node} answered {kind} from {from} with {out} B for {sent} B");
    }
}
