//! Which addresses to try and who sends first, from both sides' NAT reports.
//!
//! Mapping decides what can be punched, filtering who must send first (DESIGN.md's
//! strategy table). This strategies cover every pair where one side is public or
//! both map endpoint-independently, plus peers behind the same public IP; a hard
//! (destination-dependent) mapping facing anything but a public node is reported as
//! not reachable yet rather than tried in vain.

use super::is_public;
use crate::nat::{NatReport, NatType};
use std::net::SocketAddr;

/// How the winning path runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Across the internet (possibly through NATs).
    Direct,
    /// Over the peers' shared private network.
    Local,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One side is public: the other just sends to it.
    Direct,
    /// Both map endpoint-independently: both send at once, each opening its own NAT.
    SimultaneousOpen,
    /// Same public IP: try the private addresses (hairpinning may be off).
    Local,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::SimultaneousOpen => "simultaneous-open",
            Strategy::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub path: Path,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub strategy: Strategy,
    pub candidates: Vec<Candidate>,
    /// False for a public node facing a NATed one: its early packets would only hit a
    /// closed NAT (and on Linux can make the NAT re-map the peer), so it waits for the
    /// peer's first proof.
    pub send_first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unpunchable {
    #[error(
        "{who} behind a hard NAT (mapping: address-and-port-dependent or address-dependent) and the other side is not public; \
         hard-NAT traversal (port prediction, birthday spraying, relay) is not available yet"
    )]
    HardNat { who: &'static str },
    #[error("too many punch attempts under way ({0}); try again shortly")]
    Busy(usize),
}

/// Plans an attempt. `peer_public` is where the introducer saw the peer (trusted over
/// the peer's own report); `peer_private` are the peer's signed LAN addresses.
pub fn plan(
    me: &NatReport,
    peer: &NatReport,
    peer_public: SocketAddr,
    peer_private: &[SocketAddr],
) -> Result<Plan, Unpunchable> {
    let public = Candidate { addr: peer_public, path: Path::Direct };
    if me.public_addr.ip() == peer_public.ip() && !(is_public(me) && is_public(peer)) {
        let mut candidates: Vec<Candidate> = peer_private
            .iter()
            .filter(|a| a.is_ipv4() == peer_public.is_ipv4())
            .map(|&addr| Candidate { addr, path: Path::Local })
            .collect();
        candidates.push(public);
        return Ok(Plan { strategy: Strategy::Local, candidates, send_first: true });
    }
    let (mine, theirs) = (me.nat_type(), peer.nat_type());
    let (strategy, send_first) = match (mine, theirs) {
        (_, NatType::Public) => (Strategy::Direct, true),
        (NatType::Public, _) => (Strategy::Direct, false),
        (NatType::Easy, NatType::Easy) => (Strategy::SimultaneousOpen, true),
        (NatType::Hard, _) => return Err(Unpunchable::HardNat { who: "this node is" }),
        (_, NatType::Hard) => return Err(Unpunchable::HardNat { who: "the peer is" }),
    };
    Ok(Plan { strategy, candidates: vec![public], send_first })
}
