//! Listing a mesh's members for someone outside it (`introducer peers`): a member answers a
//! cookie-proven [`pb::MembersRequest`] with the signed node records it holds, each with the
//! member's state as it sees it; the asker checks every signature ([`check_reply`]).
//!
//! What bounds it: the request is acted on only with the cookie the member's `ServerInfo`
//! gave that very source address (first contact checks it, and a budget of requests per
//! source IP), so the answer, larger than the question, goes only where someone asked from
//! and receives. One request earns at most [`MAX_REPLIES`] datagrams, each within
//! [`MAX_DATAGRAM`]; the asker pages through longer lists (`offset`). A member of 4,096
//! records (the most it keeps) lists them in 86 requests of one-address records, 171 at most.

use super::record::{self, NodeRecord, RecordError};
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind, member_update};
use introducer_proto::MAX_DATAGRAM;
use libp2p_identity::PeerId;
use std::collections::BTreeMap;

/// Datagrams one request is answered with, at most.
pub const MAX_REPLIES: usize = 8;
/// Members a listing may claim to have (the mesh keeps at most 4,096 records, and itself).
pub const MAX_LISTED: u32 = 8192;

/// A member's state as SWIM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberState {
    Alive,
    /// It did not answer a probe lately; it is treated as alive until declared down.
    Suspect,
    /// Declared down; forgotten after a few minutes.
    Down,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }
}

impl From<foca::State> for MemberState {
    fn from(state: foca::State) -> Self {
        match state {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down => MemberState::Down,
        }
    }
}

impl From<MemberState> for member_update::State {
    fn from(state: MemberState) -> Self {
        match state {
            MemberState::Alive => member_update::State::Alive,
            MemberState::Suspect => member_update::State::Suspect,
            MemberState::Down => member_update::State::Down,
        }
    }
}

/// One member as a listing carries it: its signed record, as its member signed it (borrowed
/// from the table while a reply is made: only what goes out is copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<B = Vec<u8>> {
    pub state: MemberState,
    pub signed: B,
}

/// The replies to a request for the list from `offset` on: as many members as fit, one
/// datagram after another, [`MAX_REPLIES`] datagrams at most. An `offset` past the end gets
/// one reply with no members (the asker learns the list is shorter than it thought).
pub fn replies<B: AsRef<[u8]>>(list: &[Entry<B>], request_id: u64, offset: u32) -> Vec<pb::MembersReply> {
    let total = list.len().min(MAX_LISTED as usize) as u32;
    let mut replies = Vec::new();
    let mut next = offset.min(total);
    let framed = |reply: &pb::MembersReply| {
        encode_envelope(&pb::Envelope { kind: Some(Kind::MembersReply(reply.clone())) }).len()
    };
    while replies.len() < MAX_REPLIES {
        let mut reply = pb::MembersReply { request_id, offset: next, total, members: Vec::new(), last: false };
        while next < total {
            let entry = &list[next as usize];
            let state: member_update::State = entry.state.into();
            let record = entry.signed.as_ref().to_vec().into();
            reply.members.push(pb::ListedMember { record, state: state.into() });
            // Sizes are summed, not guessed: a record may be up to 320 bytes.
            if framed(&reply) > MAX_DATAGRAM {
                reply.members.pop();
                break;
            }
            next += 1;
        }
        let empty = reply.members.is_empty();
        if !empty || replies.is_empty() {
            replies.push(reply);
        }
        if next >= total || empty {
            break;
        }
    }
    if let Some(last) = replies.last_mut() {
        last.last = true;
    }
    replies
}

/// A member as the asker takes it from a reply: its record, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub record: NodeRecord,
    pub state: MemberState,
}

/// What a reply holds once checked: each member at its index, `None` for one whose record
/// did not verify (so it is not asked for again).
pub type Checked = BTreeMap<u32, Option<Listed>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("a listing of {0} members is longer than any mesh keeps")]
    TooLong(u32),
    #[error("the reply's members run past its total")]
    PastTotal,
}

/// Checks a reply's bounds and every record in it (signature, bounds, freshness against
/// `now_ms` with `max_skew_ms` either way and records living `ttl_ms`). Records that do not
/// verify are kept as `None`, with why, so the caller can count them.
pub fn check_reply(
    reply: &pb::MembersReply,
    now_ms: u64,
    max_skew_ms: u64,
    ttl_ms: u64,
) -> Result<(Checked, Vec<RecordError>), ReplyError> {
    if reply.total > MAX_LISTED {
        return Err(ReplyError::TooLong(reply.total));
    }
    if u64::from(reply.offset) + reply.members.len() as u64 > u64::from(reply.total) {
        return Err(ReplyError::PastTotal);
    }
    let (mut checked, mut bad) = (Checked::new(), Vec::new());
    for (i, member) in reply.members.iter().enumerate() {
        let state = match member_update::State::try_from(member.state) {
            Ok(member_update::State::Alive) => MemberState::Alive,
            Ok(member_update::State::Suspect) => MemberState::Suspect,
            Ok(member_update::State::Down) => MemberState::Down,
            Err(_) => MemberState::Suspect,
        };
        let listed = match record::verify(&member.record, now_ms, max_skew_ms, ttl_ms) {
            Ok(record) => Some(Listed { record, state }),
            Err(e) => {
                bad.push(e);
                None
            }
        };
        checked.insert(reply.offset + i as u32, listed);
    }
    Ok((checked, bad))
}

/// The members of a checked listing, one per PeerId (the newest record where a peer was
/// listed twice, as may happen when the list changed between two pages).
pub fn by_peer(checked: &Checked) -> BTreeMap<PeerId, Listed> {
    let mut members: BTreeMap<PeerId, Listed> = BTreeMap::new();
    for listed in checked.values().flatten() {
        let newer = |old: &Listed| {
            (listed.record.generation, listed.record.issued_ms) > (old.record.generation, old.record.issued_ms)
        };
        if members.get(&listed.record.peer).is_none_or(newer) {
            members.insert(listed.record.peer, listed.clone());
        }
    }
    members
}
