//! The bytes of a store: keys, and values as protobuf messages (prost, like the wire), so
//! a field added later is read as its default by an older node and ignored by a newer one.
//! Decoders return `None` for anything that is not a well-formed record: the loader skips
//! and counts it.

use super::{Expiring, MeasuredNat, Member, Network, StoreError};
use introducer_actors::nat::NatReport;
use introducer_proto::pb;
use libp2p_identity::PeerId;
use prost::Message;
use std::net::{IpAddr, SocketAddr};

/// Meta keys.
pub const FORMAT: &[u8] = b"format";
pub const SERVED: &[u8] = b"served_ms";

#[derive(Clone, PartialEq, prost::Message)]
struct MemberValue {
    #[prost(message, optional, tag = "1")]
    addr: Option<pb::Addr>,
    #[prost(message, repeated, tag = "2")]
    listen: Vec<pb::Addr>,
    #[prost(bool, tag = "3")]
    introducer: bool,
    #[prost(bytes = "vec", tag = "4")]
    record: Vec<u8>,
    #[prost(uint64, tag = "5")]
    seen_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExpiringValue {
    #[prost(bytes = "vec", tag = "1")]
    record: Vec<u8>,
    #[prost(uint64, tag = "2")]
    expires_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NatValue {
    #[prost(message, optional, tag = "1")]
    report: Option<pb::NatReport>,
    #[prost(uint64, tag = "2")]
    measured_ms: u64,
}

pub fn peer(key: &[u8]) -> Option<PeerId> {
    PeerId::from_bytes(key).ok()
}

pub fn encode_member(m: &Member) -> Vec<u8> {
    MemberValue {
        addr: Some(m.addr.into()),
        listen: m.listen.iter().map(|&a| a.into()).collect(),
        introducer: m.introducer,
        record: m.record.clone(),
        seen_ms: m.seen_ms,
    }
    .encode_to_vec()
}

pub fn member(key: &[u8], value: &[u8]) -> Option<Member> {
    let v = MemberValue::decode(value).ok()?;
    Some(Member {
        peer_id: peer(key)?,
        addr: SocketAddr::try_from(v.addr.as_ref()?).ok()?,
        listen: v.listen.iter().map(SocketAddr::try_from).collect::<Result<_, _>>().ok()?,
        introducer: v.introducer,
        record: v.record,
        seen_ms: v.seen_ms,
    })
}

pub fn encode_expiring(e: &Expiring) -> Vec<u8> {
    ExpiringValue { record: e.record.clone(), expires_ms: e.expires_ms }.encode_to_vec()
}

pub fn expiring(value: &[u8]) -> Option<Expiring> {
    let v = ExpiringValue::decode(value).ok()?;
    Some(Expiring { record: v.record, expires_ms: v.expires_ms })
}

/// Topic records of one topic share this prefix: the topic's length, then the topic.
pub fn topic_prefix(topic: &str) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(topic.len()).map_err(|_| StoreError::TopicTooLong(topic.len()))?;
    Ok([&len.to_be_bytes()[..], topic.as_bytes()].concat())
}

pub fn encode_topic_key(topic: &str, peer: &PeerId) -> Result<Vec<u8>, StoreError> {
    Ok([topic_prefix(topic)?, peer.to_bytes()].concat())
}

pub fn topic_key(key: &[u8]) -> Option<(String, PeerId)> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let (topic, peer_id) = rest.split_at_checked(u16::from_be_bytes(*len) as usize)?;
    Some((String::from_utf8(topic.to_vec()).ok()?, peer(peer_id)?))
}

/// `LAN-IP/PUBLIC-IP`: readable in a dump of the store, and unambiguous (no IP has a `/`).
pub fn encode_network(n: &Network) -> Vec<u8> {
    format!("{}/{}", n.lan, n.public).into_bytes()
}

pub fn network(key: &[u8]) -> Option<Network> {
    let (lan, public) = std::str::from_utf8(key).ok()?.split_once('/')?;
    Some(Network { lan: lan.parse::<IpAddr>().ok()?, public: public.parse::<IpAddr>().ok()? })
}

pub fn encode_measured_nat(n: &MeasuredNat) -> Vec<u8> {
    NatValue { report: Some((&n.report).into()), measured_ms: n.measured_ms }.encode_to_vec()
}

pub fn measured_nat(value: &[u8]) -> Option<MeasuredNat> {
    let v = NatValue::decode(value).ok()?;
    Some(MeasuredNat { report: NatReport::try_from(v.report.as_ref()?).ok()?, measured_ms: v.measured_ms })
}

pub fn u64_value(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}
