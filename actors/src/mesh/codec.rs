//! foca's pieces on our wire: each header and member update one length-delimited
//! protobuf message (foca reads them one after another from a signed [`pb::Gossip`]'s
//! payload). Anything that does not decode, or decodes to numbers out of foca's range, is
//! an error foca hands back, and the mesh counts it.

use super::MemberId;
use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};
use introducer_proto::pb::{self, gossip_header::Kind, member_update};
use libp2p_identity::PeerId;
use prost::Message as _;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("does not fit the buffer")]
    Full,
    #[error("a field is missing or out of range")]
    Invalid,
}

/// Encodes and decodes foca's headers and member updates as protobuf.
#[derive(Debug, Default)]
pub struct Codec;

fn id_to_pb(id: &MemberId) -> pb::MemberId {
    pb::MemberId { peer_id: id.peer.to_bytes().into(), generation: id.generation }
}

fn id_from_pb(id: Option<pb::MemberId>) -> Result<MemberId, CodecError> {
    let id = id.ok_or(CodecError::Invalid)?;
    let peer = PeerId::from_bytes(&id.peer_id).map_err(|_| CodecError::Invalid)?;
    Ok(MemberId { peer, generation: id.generation })
}

fn put(message: &impl prost::Message, mut buf: impl BufMut) -> Result<(), CodecError> {
    // foca asks that a buffer without room is left as it was.
    let len = message.encoded_len();
    if buf.remaining_mut() < len + prost::length_delimiter_len(len) {
        return Err(CodecError::Full);
    }
    message.encode_length_delimited(&mut buf).map_err(|_| CodecError::Full)
}

fn probe(n: u32) -> Result<u8, CodecError> {
    u8::try_from(n).map_err(|_| CodecError::Invalid)
}

impl foca::Codec<MemberId> for Codec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<MemberId>, buf: impl BufMut) -> Result<(), CodecError> {
        let (kind, probe, other) = match &header.message {
            Message::Ping(n) => (Kind::Ping, *n, None),
            Message::Ack(n) => (Kind::Ack, *n, None),
            Message::PingReq { target, probe_number } => (Kind::PingReq, *probe_number, Some(target)),
            Message::IndirectPing { origin, probe_number } => (Kind::IndirectPing, *probe_number, Some(origin)),
            Message::IndirectAck { target, probe_number } => (Kind::IndirectAck, *probe_number, Some(target)),
            Message::ForwardedAck { origin, probe_number } => (Kind::ForwardedAck, *probe_number, Some(origin)),
            Message::Announce => (Kind::Announce, 0, None),
            Message::Feed => (Kind::Feed, 0, None),
            Message::Gossip => (Kind::Gossip, 0, None),
            Message::Broadcast => (Kind::Broadcast, 0, None),
            Message::TurnUndead => (Kind::TurnUndead, 0, None),
        };
        let header = pb::GossipHeader {
            src: Some(id_to_pb(&header.src)),
            src_incarnation: header.src_incarnation.into(),
            dst: Some(id_to_pb(&header.dst)),
            kind: kind.into(),
            probe: probe.into(),
            other: other.map(id_to_pb),
        };
        put(&header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<MemberId>, CodecError> {
        let h = pb::GossipHeader::decode_length_delimited(buf)?;
        let n = probe(h.probe)?;
        let other = || id_from_pb(h.other.clone());
        let message = match Kind::try_from(h.kind).map_err(|_| CodecError::Invalid)? {
            Kind::Ping => Message::Ping(n),
            Kind::Ack => Message::Ack(n),
            Kind::PingReq => Message::PingReq { target: other()?, probe_number: n },
            Kind::IndirectPing => Message::IndirectPing { origin: other()?, probe_number: n },
            Kind::IndirectAck => Message::IndirectAck { target: other()?, probe_number: n },
            Kind::ForwardedAck => Message::ForwardedAck { origin: other()?, probe_number: n },
            Kind::Announce => Message::Announce,
            Kind::Feed => Message::Feed,
            Kind::Gossip => Message::Gossip,
            Kind::Broadcast => Message::Broadcast,
            Kind::TurnUndead => Message::TurnUndead,
            Kind::Unknown => return Err(CodecError::Invalid),
        };
        Ok(Header {
            src: id_from_pb(h.src)?,
            src_incarnation: h.src_incarnation.try_into().map_err(|_| CodecError::Invalid)?,
            dst: id_from_pb(h.dst)?,
            message,
        })
    }

    fn encode_member(&mut self, member: &Member<MemberId>, buf: impl BufMut) -> Result<(), CodecError> {
        let state = match member.state() {
            State::Alive => member_update::State::Alive,
            State::Suspect => member_update::State::Suspect,
            State::Down => member_update::State::Down,
        };
        let update = pb::MemberUpdate {
            id: Some(id_to_pb(member.id())),
            incarnation: member.incarnation().into(),
            state: state.into(),
        };
        put(&update, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<MemberId>, CodecError> {
        let m = pb::MemberUpdate::decode_length_delimited(buf)?;
        let state = match member_update::State::try_from(m.state).map_err(|_| CodecError::Invalid)? {
            member_update::State::Alive => State::Alive,
            member_update::State::Suspect => State::Suspect,
            member_update::State::Down => State::Down,
        };
        let incarnation = m.incarnation.try_into().map_err(|_| CodecError::Invalid)?;
        Ok(Member::new(id_from_pb(m.id)?, incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec as _;

    fn id(seed: u64) -> MemberId {
        MemberId { peer: crate::identity::Identity::from_seed(seed).peer_id(), generation: 7 + seed }
    }

    #[test]
    fn headers_and_members_round_trip_and_junk_is_an_error() {
        let messages = [
            Message::Ping(3),
            Message::Ack(4),
            Message::PingReq { target: id(3), probe_number: 5 },
            Message::IndirectPing { origin: id(3), probe_number: 6 },
            Message::IndirectAck { target: id(3), probe_number: 7 },
            Message::ForwardedAck { origin: id(3), probe_number: 8 },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ];
        for message in messages {
            let header = Header { src: id(1), src_incarnation: 2, dst: id(2), message };
            let mut buf = Vec::new();
            Codec.encode_header(&header, &mut buf).unwrap();
            let member = Member::new(id(4), 9, State::Suspect);
            Codec.encode_member(&member, &mut buf).unwrap();
            let mut read = &buf[..];
            assert_eq!(Codec.decode_header(&mut read).unwrap(), header);
            assert_eq!(Codec.decode_member(&mut read).unwrap(), member);
            assert!(read.is_empty(), "each item reads exactly its own bytes");
        }
        let incarnation_too_big = pb::MemberUpdate { id: Some(id_to_pb(&id(1))), incarnation: 70_000, state: 0 };
        let buf = incarnation_too_big.encode_length_delimited_to_vec();
        assert!(matches!(Codec.decode_member(&buf[..]), Err(CodecError::Invalid)));
        assert!(Codec.decode_header(&[0xff, 0xff, 0xff][..]).is_err());
        let mut small = [0u8; 8];
        let header = Header { src: id(1), src_incarnation: 2, dst: id(2), message: Message::Ping(1) };
        assert!(matches!(Codec.encode_header(&header, &mut small[..]), Err(CodecError::Full)));
    }
}
