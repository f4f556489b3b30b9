//! Well-formed datagrams of every kind, built from fuzz input.
//!
//! Arbitrary bytes rarely get past protobuf decoding, let alone a signature check, so the
//! machine targets also send envelopes built field by field: every [`Kind`], with fields
//! mostly in range (addresses of 4 or 16 bytes, 16-byte nonces, PeerIds the node knows)
//! and sometimes not, and signed where the node checks a signature — by the attacker's own
//! keys, which cost nothing, over whatever the input picked.

use arbitrary::{Result, Unstructured};
use introducer_actors::identity::Identity;
use introducer_actors::relay::sign_request;
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::stun::{self, Class, Message};
use libp2p_identity::PeerId;
use prost::bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

/// The attacker's keys: a few, so that signed messages from one identity can repeat.
pub fn attackers() -> &'static [Identity] {
    static KEYS: OnceLock<Vec<Identity>> = OnceLock::new();
    KEYS.get_or_init(|| (666..670).map(Identity::from_seed).collect())
}

/// What the generator knows of the world: the PeerIds worth naming (the node under
/// attack, the peers it knows), and nonces seen on the wire.
#[derive(Debug, Default, Clone)]
pub struct Ctx {
    pub peers: Vec<PeerId>,
    pub nonces: Vec<Vec<u8>>,
}

fn pick<'a, T>(u: &mut Unstructured, items: &'a [T]) -> Result<Option<&'a T>> {
    if items.is_empty() {
        return Ok(None);
    }
    Ok(Some(u.choose(items)?))
}

/// Up to `max` arbitrary bytes.
pub fn bytes(u: &mut Unstructured, max: usize) -> Result<Bytes> {
    let len = u.int_in_range(0..=max)?;
    Ok(u.bytes(len)?.to_vec().into())
}

/// A wire address: usually IPv4 or IPv6 with a 16-bit port, sometimes malformed.
pub fn addr(u: &mut Unstructured) -> Result<pb::Addr> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => pb::Addr { ip: bytes(u, 20)?, port: u.arbitrary()? },
        1..=2 => pb::Addr::from(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(u.arbitrary::<u128>()?)), u.arbitrary()?)),
        _ => pb::Addr::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?)), u.arbitrary()?)),
    })
}

fn opt_addr(u: &mut Unstructured) -> Result<Option<pb::Addr>> {
    Ok(if u.arbitrary()? { Some(addr(u)?) } else { None })
}

fn addrs(u: &mut Unstructured, max: usize) -> Result<Vec<pb::Addr>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| addr(u)).collect()
}

/// An enum field: usually a known value, sometimes any i32 (prost keeps unknown values).
fn enumeration(u: &mut Unstructured, known: i32) -> Result<i32> {
    Ok(if u.ratio(1, 8)? { u.arbitrary()? } else { u.int_in_range(0..=known)? })
}

pub fn nat_report(u: &mut Unstructured) -> Result<pb::NatReport> {
    Ok(pb::NatReport {
        no_nat: u.arbitrary()?,
        mapping: enumeration(u, 3)?,
        filtering: enumeration(u, 3)?,
        allocation: enumeration(u, 3)?,
        allocation_step: u.arbitrary()?,
        public_addr: opt_addr(u)?,
    })
}

pub fn peer_record(u: &mut Unstructured) -> Result<pb::PeerRecord> {
    Ok(pb::PeerRecord {
        peer_id: Bytes::new(),
        private_addrs: addrs(u, 6)?,
        nat: if u.arbitrary()? { Some(nat_report(u)?) } else { None },
        issued_ms: u.arbitrary()?,
    })
}

/// The bytes of a PeerId: one the node knows, an attacker's, or anything.
fn peer_id(u: &mut Unstructured, ctx: &Ctx) -> Result<Bytes> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => bytes(u, 40)?,
        1 => u.choose(attackers())?.peer_id().to_bytes().into(),
        _ => match pick(u, &ctx.peers)? {
            Some(p) => p.to_bytes().into(),
            None => bytes(u, 40)?,
        },
    })
}

/// An introduction nonce: one seen on the wire, a fresh 16 bytes, or any length.
fn nonce(u: &mut Unstructured, ctx: &Ctx) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => bytes(u, 40)?.to_vec(),
        1 => match pick(u, &ctx.nonces)? {
            Some(n) => n.clone(),
            None => u.bytes(16)?.to_vec(),
        },
        _ => u.bytes(16)?.to_vec(),
    })
}

/// A record signed by an attacker's key (valid, within bounds or not), or one whose
/// fields are anything.
pub fn signed_record(u: &mut Unstructured) -> Result<pb::SignedPeerRecord> {
    if u.ratio(1, 4)? {
        return Ok(pb::SignedPeerRecord {
            public_key: bytes(u, 40)?,
            record: bytes(u, 300)?,
            signature: bytes(u, 64)?,
        });
    }
    let me = u.choose(attackers())?;
    Ok(me.sign_record(peer_record(u)?))
}

/// An envelope kind, any of them, with fields from `u`.
pub fn kind(u: &mut Unstructured, ctx: &Ctx) -> Result<Kind> {
    let me = u.choose(attackers())?;
    Ok(match u.int_in_range(0..=24u8)? {
        0 => Kind::Hello(pb::Hello { padding: bytes(u, 300)? }),
        1 => Kind::ServerInfo(pb::ServerInfo {
            peer_id: peer_id(u, ctx)?,
            listen: addrs(u, 4)?,
            observed: opt_addr(u)?,
            introducer: u.arbitrary()?,
            cookie: u.arbitrary()?,
        }),
        2 => {
            let record = signed_record(u)?;
            let (cookie, nonce) = (u.arbitrary()?, u.arbitrary()?);
            let proof = if u.arbitrary()? { me.register_proof(cookie, nonce).into() } else { bytes(u, 64)? };
            let topics = (0..u.int_in_range(0..=9u8)?).map(|_| bytes(u, 70)).collect::<Result<_>>()?;
            Kind::Register(pb::Register { record: Some(record), cookie, nonce, proof, topics })
        }
        3 => Kind::RegisterChallenge(pb::RegisterChallenge { cookie: u.arbitrary()?, nonce: u.arbitrary()? }),
        4 => Kind::Registered(pb::Registered {
            observed: opt_addr(u)?,
            ttl_secs: u.arbitrary()?,
            nonce: u.arbitrary()?,
            members: (0..u.int_in_range(0..=3u8)?).map(|_| node_record(u).map(Into::into)).collect::<Result<_>>()?,
        }),
        5 => Kind::IntroduceRequest(pb::IntroduceRequest {
            target: peer_id(u, ctx)?,
            request_id: u.arbitrary()?,
            mac: u.arbitrary()?,
        }),
        6 => Kind::Introduction(pb::Introduction {
            request_id: u.arbitrary()?,
            peer: Some(signed_record(u)?),
            peer_public: opt_addr(u)?,
            nonce: nonce(u, ctx)?.into(),
            initiator: u.arbitrary()?,
            mac: u.arbitrary()?,
            fresh: u.arbitrary()?,
        }),
        7 => Kind::IntroduceError(pb::IntroduceError {
            request_id: u.arbitrary()?,
            target: peer_id(u, ctx)?,
            reason: enumeration(u, 4)?,
            message: u.arbitrary()?,
            homes: addrs(u, 4)?,
        }),
        8 => {
            let to = pick(u, &ctx.peers)?.copied().unwrap_or_else(|| me.peer_id());
            let signed = me.punch(&nonce(u, ctx)?, &to, u.arbitrary()?);
            Kind::Punch(pb::Punch {
                ack: u.arbitrary()?,
                token: u.arbitrary()?,
                echo: u.arbitrary()?,
                handshake: bytes(u, 120)?,
                padding: bytes(u, 60)?,
                ..signed
            })
        }
        9 => Kind::Handshake(handshake(u)?),
        10 => Kind::Sealed(sealed(u)?),
        11 => {
            let target = pick(u, &ctx.peers)?.copied().unwrap_or_else(|| me.peer_id());
            let request = sign_request(me, &target, &nonce(u, ctx)?, u.arbitrary()?);
            if u.ratio(1, 4)? {
                Kind::RelayRequest(pb::RelayRequest { target: peer_id(u, ctx)?, signature: bytes(u, 64)?, ..request })
            } else {
                Kind::RelayRequest(request)
            }
        }
        12 => Kind::RelayChallenge(pb::RelayChallenge { cookie: u.arbitrary()?, nonce: nonce(u, ctx)?.into() }),
        13 => Kind::RelayAccepted(pb::RelayAccepted {
            nonce: nonce(u, ctx)?.into(),
            circuit: u.arbitrary()?,
            ready: u.arbitrary()?,
            idle_secs: u.arbitrary()?,
        }),
        14 => Kind::RelayRefused(pb::RelayRefused {
            nonce: nonce(u, ctx)?.into(),
            circuit: u.arbitrary()?,
            reason: enumeration(u, 7)?,
            message: u.arbitrary()?,
        }),
        15 => Kind::RelaySend(relay_data(u)?),
        16 => Kind::RelayDeliver(relay_data(u)?),
        17 => Kind::RelayClose(pb::RelayClose { circuit: u.arbitrary()? }),
        18 => Kind::RelayClosed(pb::RelayClose { circuit: u.arbitrary()? }),
        19 => Kind::Gossip(Box::new(gossip(u, ctx, me)?)),
        20 => Kind::DialBackRequest(pb::DialBackRequest { cookie: u.arbitrary()?, nonce: u.arbitrary()? }),
        21 => Kind::DialBackProbe(pb::DialBackProbe { nonce: u.arbitrary()? }),
        22 => Kind::MembersRequest(pb::MembersRequest {
            cookie: u.arbitrary()?,
            request_id: u.arbitrary()?,
            offset: u.arbitrary()?,
        }),
        23 => Kind::MembersReply(pb::MembersReply {
            request_id: u.arbitrary()?,
            offset: u.arbitrary()?,
            total: u.arbitrary()?,
            members: (0..u.int_in_range(0..=4)?)
                .map(|_| Ok(pb::ListedMember { record: node_record(u)?.into(), state: enumeration(u, 3)? }))
                .collect::<Result<_>>()?,
            last: u.arbitrary()?,
        }),
        _ => {
            let peer = pick(u, &ctx.peers)?.copied().unwrap_or_else(|| me.peer_id());
            let signed = me.new_mapping(&nonce(u, ctx)?, &peer);
            match u.int_in_range(0..=3u8)? {
                0 => Kind::NewMapping(pb::NewMapping { signature: bytes(u, 64)?, ..signed }),
                1 => Kind::NewMapping(pb::NewMapping { peer: peer_id(u, ctx)?, ..signed }),
                _ => Kind::NewMapping(signed),
            }
        }
    })
}

/// A signed node record of an attacker's (encoded), sometimes tampered with.
fn node_record(u: &mut Unstructured) -> Result<Vec<u8>> {
    let me = u.choose(attackers())?;
    let record = pb::NodeRecord {
        generation: u.arbitrary()?,
        issued_ms: u.arbitrary()?,
        addrs: addrs(u, 5)?,
        introducer: u.arbitrary()?,
        relay: u.arbitrary()?,
        relay_capacity: u.arbitrary()?,
        relay_load: u.arbitrary()?,
        ..Default::default()
    };
    let mut signed = prost::Message::encode_to_vec(&me.sign_node_record(record));
    if u.ratio(1, 4)? && !signed.is_empty() {
        let i = u.choose_index(signed.len())?;
        signed[i] ^= 1;
    }
    Ok(signed)
}

/// A mesh datagram signed by an attacker for a member: a SWIM payload of junk, records,
/// a dial-back request, or nothing; its token and echo guessed.
fn gossip(u: &mut Unstructured, ctx: &Ctx, me: &Identity) -> Result<pb::Gossip> {
    let to = pick(u, &ctx.peers)?.copied().unwrap_or_else(|| me.peer_id());
    let content = pb::Gossip {
        payload: bytes(u, 200)?,
        records: (0..u.int_in_range(0..=3u8)?).map(|_| node_record(u).map(Into::into)).collect::<Result<_>>()?,
        dial_back: if u.arbitrary()? { Some(pb::DialBack { addr: opt_addr(u)?, nonce: u.arbitrary()? }) } else { None },
        ..Default::default()
    };
    let signed = me.sign_gossip(&to, u.arbitrary()?, content);
    Ok(pb::Gossip { token: u.arbitrary()?, echo: u.arbitrary()?, ..signed })
}

/// A session handshake message: usually of a Noise IK message's length, forged.
pub fn handshake(u: &mut Unstructured) -> Result<pb::Handshake> {
    use introducer_actors::session::noise::{ANSWER_LEN, INITIATION_LEN};
    let len = match u.int_in_range(0..=3u8)? {
        0 => INITIATION_LEN,
        1 => ANSWER_LEN,
        _ => u.int_in_range(0..=200)?,
    };
    Ok(pb::Handshake { message: u.bytes(len)?.to_vec().into(), answer: u.arbitrary()?, under: u.arbitrary()? })
}

/// A sealed session datagram that does not open (nobody but the peers holds the keys).
pub fn sealed(u: &mut Unstructured) -> Result<pb::Sealed> {
    Ok(pb::Sealed { key: u.arbitrary()?, counter: u.arbitrary()?, ciphertext: bytes(u, 200)? })
}

fn relay_data(u: &mut Unstructured) -> Result<pb::RelayData> {
    Ok(pb::RelayData { circuit: u.arbitrary()?, payload: bytes(u, 300)? })
}

/// A STUN message with fields from `u`, mostly a Binding request, encoded.
pub fn stun_message(u: &mut Unstructured) -> Result<Message> {
    let class =
        *u.choose(&[Class::Request, Class::Request, Class::Request, Class::Indication, Class::SuccessResponse])?;
    let method = if u.ratio(7, 8)? { stun::BINDING } else { u.int_in_range(0..=0xFFF)? };
    let mut m = Message::new(class, method, u.arbitrary()?);
    let address = |u: &mut Unstructured| -> Result<Option<SocketAddr>> {
        Ok(match u.int_in_range(0..=5u8)? {
            0 => Some(SocketAddr::new(IpAddr::V4(u.arbitrary::<u32>()?.into()), u.arbitrary()?)),
            1 => Some(SocketAddr::new(IpAddr::V6(u.arbitrary::<u128>()?.into()), u.arbitrary()?)),
            _ => None,
        })
    };
    m.xor_mapped_address = address(u)?;
    m.mapped_address = address(u)?;
    m.response_origin = address(u)?;
    m.other_address = address(u)?;
    if u.arbitrary()? {
        m.change_request = Some(stun::ChangeRequest { change_ip: u.arbitrary()?, change_port: u.arbitrary()? });
    }
    if u.ratio(1, 4)? {
        m.response_port = Some(u.arbitrary()?);
    }
    if u.ratio(1, 3)? {
        m.padding = u.int_in_range(0..=300)?;
    }
    if u.ratio(1, 8)? {
        m.software = Some(u.arbitrary()?);
    }
    if u.ratio(1, 8)? {
        m.error_code = Some((u.int_in_range(300..=699)?, u.arbitrary()?));
    }
    m.fingerprint = u.arbitrary()?;
    Ok(m)
}

/// One datagram an attacker sends: raw bytes, a STUN message, or an envelope of any kind.
pub fn datagram(u: &mut Unstructured, ctx: &Ctx) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => bytes(u, 1300)?.to_vec(),
        1 => stun_message(u)?.encode(),
        _ => encode_envelope(&pb::Envelope { kind: Some(kind(u, ctx)?) }),
    })
}
