//! The datagrams of the amplification table: one of every kind, as a spoofer would send
//! it. Shared by the simulator's table (`sim/tests/amplification.rs`) and the real-NAT one
//! (`node/tests/netns_amplification.rs`), so the two cannot drift apart when a kind is
//! added.

use introducer_actors::identity::Identity;
use introducer_actors::relay::sign_request;
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::stun::Message;
use libp2p_identity::PeerId;

/// STUN's documented exception (README, "Wire"): a bare 20-byte request may get the full
/// 76-byte answer; every other kind gets no more bytes than it carried.
pub const STUN_ANSWER_CAP: usize = 76;

/// The most a node may send an unproven source for a datagram of `kind` carrying `sent`
/// bytes.
pub fn answer_cap(kind: &str, sent: usize) -> usize {
    if kind.starts_with("STUN") {
        STUN_ANSWER_CAP
    } else {
        sent
    }
}

fn envelope(kind: Kind) -> Vec<u8> {
    encode_envelope(&pb::Envelope { kind: Some(kind) })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One datagram of every kind, as an attacker would send it: well-formed, and signed
/// where a signature is asked for (keys cost nothing). `victim` is the peer the datagrams
/// name (an introduction's target, a punch's recipient, a circuit's other side): a real
/// one gets a datagram further into the node than a made-up one would.
pub fn datagrams(victim: &PeerId) -> Vec<(&'static str, Vec<u8>)> {
    let mallory = Identity::from_seed(666);
    let victim = *victim;
    let record = mallory.sign_record(pb::PeerRecord { issued_ms: 1, ..Default::default() });
    let relay_data = pb::RelayData { circuit: 7, payload: vec![0; 32].into() };
    vec![
        ("STUN binding request", Message::binding_request([7; 12]).encode()),
        // What standard clients send: no FINGERPRINT, 20 bytes, so the answer weighs most.
        ("STUN binding request (bare)", Message { fingerprint: false, ..Message::binding_request([7; 12]) }.encode()),
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
                topics: vec![],
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
        (
            "Gossip (bare)",
            envelope(Kind::Gossip(Box::new(pb::Gossip {
                token: Some(1),
                echo: Some(2),
                ..mallory.sign_gossip(&victim, unix_ms(), pb::Gossip::default())
            }))),
        ),
        (
            "Gossip (dial-back)",
            envelope(Kind::Gossip(Box::new(pb::Gossip {
                token: Some(1),
                echo: Some(2),
                ..mallory.sign_gossip(
                    &victim,
                    unix_ms(),
                    pb::Gossip {
                        dial_back: Some(pb::DialBack {
                            addr: Some(std::net::SocketAddr::from(([192, 0, 2, 1], 53)).into()),
                            nonce: 1,
                        }),
                        ..Default::default()
                    },
                )
            }))),
        ),
        (
            "DialBackRequest (guessed cookie)",
            envelope(Kind::DialBackRequest(pb::DialBackRequest { cookie: 42, nonce: 1 })),
        ),
        ("DialBackProbe", envelope(Kind::DialBackProbe(pb::DialBackProbe { nonce: 1 }))),
        (
            "TopicRequest",
            envelope(Kind::TopicRequest(pb::TopicRequest { topic: b"chat".to_vec().into(), request_id: 1, mac: 3 })),
        ),
        ("TopicMembers", envelope(Kind::TopicMembers(pb::TopicMembers::default()))),
        // A listing is answered only to an address that echoes its ServerInfo cookie.
        (
            "MembersRequest (no cookie)",
            envelope(Kind::MembersRequest(pb::MembersRequest { cookie: 0, request_id: 1, offset: 0 })),
        ),
        (
            "MembersRequest (guessed cookie)",
            envelope(Kind::MembersRequest(pb::MembersRequest { cookie: 42, request_id: 1, offset: 0 })),
        ),
        (
            "MembersReply",
            envelope(Kind::MembersReply(pb::MembersReply {
                request_id: 1,
                offset: 0,
                total: 1,
                members: vec![],
                last: true,
            })),
        ),
    ]
}
