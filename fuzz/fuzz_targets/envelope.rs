//! Envelopes built field by field from the input, to reach what arbitrary bytes rarely
//! do: every kind, with signed records, proofs and requests inside.
//!
//! - every envelope encodes and decodes to itself, and the socket routes it by its kind;
//! - a record an attacker's key signed is refused only for its bounds (size, private
//!   addresses, malformed addresses), and with any one byte changed it is refused;
//! - the verifiers of what is inside (punch proofs, new mappings, addresses) take
//!   whatever the envelope carries without panicking.
#![no_main]

use arbitrary::{Result, Unstructured};
use introducer_actors::identity::{self, SignatureError};
use introducer_actors::socket::{classify, route_of};
use introducer_fuzz::gen::{self, attackers, Ctx};
use introducer_proto::frame::{self, FRAME_BYTE};
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::MAX_DATAGRAM;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fn envelope(u: &mut Unstructured, ctx: &Ctx) -> Result<()> {
    let kind = gen::kind(u, ctx)?;
    let envelope = pb::Envelope { kind: Some(kind.clone()) };
    let bytes = frame::encode_envelope(&envelope);
    assert_eq!(bytes[0], FRAME_BYTE);
    assert_eq!(frame::decode_envelope(&bytes[1..]).as_ref(), Ok(&envelope));
    if bytes.len() <= MAX_DATAGRAM {
        let (route, _) = classify(bytes).expect("a well-formed envelope is routed");
        assert_eq!(route, route_of(&kind));
    }
    match &kind {
        Kind::Register(r) => {
            let signed = r.record.as_ref().expect("the generator sets it");
            let verified = identity::verify_record(signed);
            if let Ok(v) = &verified {
                assert_eq!(identity::record_signer(signed), Ok(v.peer_id));
            }
            let _ = identity::verify_register_proof(signed, r.cookie, r.nonce, &r.proof);
        }
        Kind::Introduction(i) => {
            let _ = i.peer.as_ref().map(identity::verify_record);
            let _ = i.peer_public.as_ref().map(SocketAddr::try_from);
        }
        Kind::Punch(p) => {
            for from in ctx.peers.iter().chain(&[attackers()[0].peer_id()]) {
                for me in &ctx.peers {
                    let _ = identity::verify_punch(p, from, me, &p.nonce);
                }
            }
        }
        Kind::NewMapping(m) => {
            if let Ok(peer) = identity::verify_new_mapping(m) {
                assert!(attackers().iter().any(|a| a.peer_id() == peer), "only the attackers' keys sign here");
            }
        }
        Kind::ServerInfo(s) => {
            let _ = s.listen.iter().chain(&s.observed).map(SocketAddr::try_from).count();
        }
        _ => {}
    }
    Ok(())
}

/// A record signed by an attacker: accepted unless out of bounds, and refused once any
/// byte of its key, content or signature changes.
fn record(u: &mut Unstructured) -> Result<()> {
    let me = u.choose(attackers())?;
    let signed = me.sign_record(gen::peer_record(u)?);
    match identity::verify_record(&signed) {
        Ok(v) => assert_eq!(v.peer_id, me.peer_id()),
        Err(SignatureError::Oversized | SignatureError::Malformed) => {}
        Err(e) => panic!("a record {} signed itself is refused: {e}", me.peer_id()),
    }
    let mut tampered = signed.clone();
    let field = match u.int_in_range(0..=2u8)? {
        0 => &mut tampered.public_key,
        1 => &mut tampered.record,
        _ => &mut tampered.signature,
    };
    let mut bytes = field.to_vec();
    if bytes.is_empty() {
        return Ok(());
    }
    let at = u.choose_index(bytes.len())?;
    bytes[at] ^= u.int_in_range(1..=255)?;
    *field = bytes.into();
    assert!(identity::verify_record(&tampered).is_err(), "a tampered record verifies: {tampered:?}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let ctx = Ctx { peers: attackers().iter().skip(2).map(|a| a.peer_id()).collect(), nonces: vec![vec![5; 16]] };
    let mut u = Unstructured::new(data);
    let _ = match u.arbitrary::<bool>() {
        Ok(true) => record(&mut u),
        _ => envelope(&mut u, &ctx),
    };
});
