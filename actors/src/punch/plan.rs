//! Which addresses to try and who sends first, from both sides' NAT reports: the strategy
//! table ([`strategy`]) and the plan of an attempt that follows it ([`plan`]).
//!
//! Mapping decides what can be punched, filtering who must send first. Two hard mappings
//! are punched only when both allocate in sequence (each predicts the other, see
//! [`Walk::Both`]); any other hard pair is refused at once, so the relay carries it rather
//! than a punch tried in vain.

use crate::nat::{Allocation, NatReport, NatType};
use std::net::{IpAddr, SocketAddr};

/// How the winning path runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Across the internet (possibly through NATs).
    Direct,
    /// Over the peers' shared private network.
    Local,
    /// Through a public node's relay.
    Relayed,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Local => "local",
            Path::Relayed => "relayed",
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
    /// One hard side: it opens a pool of mappings, the easy side sprays random ports.
    Birthday,
    /// The hard side allocates ports in sequence: its pool lands just past the port the
    /// introducer saw, and the easy side aims there before spraying at random. Two
    /// sequential sides both aim at each other's next ports.
    Predict,
    /// No direct path: through the introducer's relay.
    Relay,
}

impl Strategy {
    /// The path a connection made this way takes.
    pub fn path(self) -> Path {
        match self {
            Strategy::Local => Path::Local,
            Strategy::Relay => Path::Relayed,
            _ => Path::Direct,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::SimultaneousOpen => "simultaneous-open",
            Strategy::Local => "local",
            Strategy::Birthday => "birthday",
            Strategy::Predict => "predict",
            Strategy::Relay => "relay",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub path: Path,
}

/// This side's part in a birthday punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Birthday {
    /// We are the hard side: every pool socket sends to the easy side's public address.
    /// `paced` when the easy side's NAT filters by address only: once the easy side has
    /// sent to our IP, every pool proof gets through to its one socket, so the pool sends
    /// a few at a time ([`super::Config::pool_burst`]) rather than a burst that overflows
    /// the peer's receive buffer and takes the first datagrams after it with it. Other
    /// filtering lets only the sprayed mapping through: the whole pool opens at once.
    Pool { target: SocketAddr, paced: bool },
    /// We are the easy side: spray ports of the hard side's public IP — first where a
    /// sequential allocator must have put its pool, then at random.
    Spray { ip: IpAddr, predict: Option<Prediction> },
}

/// Where a sequential allocator hands out its next ports: after `last`, `step` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prediction {
    pub last: u16,
    pub step: i32,
    pub walk: Walk,
}

impl Prediction {
    /// The port `k` allocations after `last`, wrapping within 1024..=65535 as allocators do.
    pub fn port(&self, k: i64) -> u16 {
        let port = 1024 + (i64::from(self.last) - 1024 + i64::from(self.step) * k).rem_euclid(65536 - 1024);
        u16::try_from(port).expect("in 1024..=65535 by construction")
    }
}

/// How the guesses walk the peer's next ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// The peer opens a block of consecutive mappings (its pool): a guess every half
    /// block finds it, whoever else took ports since; random guesses follow.
    Pool,
    /// Both sides allocate in sequence, so each guess also opens a mapping of our own.
    /// The initiator guesses every next port of the peer, the other side every second
    /// one. Say the initiator's *i*-th guess leaves from its allocation *i + a* and the
    /// other's *j*-th from *j + b* (*a*, *b*: ports taken since the introducer saw each).
    /// The two guesses meet when *i = j + b* and *2j = i + a*, i.e. at *j = a + b*:
    /// whatever *a* and *b* are, and even when others' allocations move them on the way,
    /// *a + b − j* falls one step per guess and so passes zero exactly. Guesses go in
    /// passes of doubling length, each resending the last one's: the meeting pair is
    /// retried (same mappings, nothing new allocated) in case a datagram was lost.
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub strategy: Strategy,
    pub candidates: Vec<Candidate>,
    /// False for a public node facing a NATed one: its early packets would only hit a
    /// closed NAT (and on Linux can make the NAT re-map the peer), so it waits for the
    /// peer's first proof.
    pub send_first: bool,
    pub birthday: Option<Birthday>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unpunchable {
    /// The two NATs, by how they allocate ports (`None`: probing could not tell).
    #[error(
        "both sides are behind hard NATs (destination-dependent or unknown mapping; ports allocated {} here, {} there), \
         not both sequential: only a relay connects them",
        allocation_str(*ours), allocation_str(*theirs)
    )]
    BothHard { ours: Option<Allocation>, theirs: Option<Allocation> },
    #[error("this node is behind a hard NAT but its birthday socket pool is not ready")]
    NoPool,
    #[error("too many punch attempts under way ({0}); try again shortly")]
    Busy(usize),
    #[error("the peer's id carries no key to make session keys with")]
    NoKey,
}

fn allocation_str(allocation: Option<Allocation>) -> &'static str {
    allocation.map_or("unknown", Allocation::as_str)
}

/// Private addresses tried per peer, at most.
const MAX_PRIVATE: usize = 4;

/// Addresses that cannot be someone else's on the internet: RFC 1918, shared (CGNAT),
/// link-local, unique-local IPv6.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn sequential(report: &NatReport) -> Option<i32> {
    match report.allocation {
        Some(crate::nat::Allocation::Sequential { step }) if step != 0 => Some(step),
        _ => None,
    }
}

fn admits_anyone(report: &NatReport) -> bool {
    report.filtering == Some(crate::nat::Filtering::EndpointIndependent)
}

/// DESIGN.md's strategy table, the one copy of it: how two NATs, as probed, connect.
/// Mapping decides what can be punched: a public side is simply reached; two
/// endpoint-independent mappings open each other; a hard mapping (destination-dependent,
/// or not known to be endpoint-independent: see `NatReport::nat_type`) facing an easy one
/// is found by the birthday paradox, or predicted where it allocates in sequence — unless
/// the easy side filters nothing, then the hard side just sends; two hard mappings meet
/// only when both allocate in sequence, else the relay carries them.
/// Peers behind one public IP (`same_ip`) try their LAN first. [`plan`] follows it, and
/// so do the simulator's and the real-NAT lab's expectations.
pub fn strategy(me: &NatReport, peer: &NatReport, same_ip: bool) -> Strategy {
    let (mine, theirs) = (me.nat_type(), peer.nat_type());
    if same_ip && !(mine == NatType::Public && theirs == NatType::Public) {
        return Strategy::Local;
    }
    let predicted = |hard: &NatReport| if sequential(hard).is_some() { Strategy::Predict } else { Strategy::Birthday };
    match (mine, theirs) {
        (_, NatType::Public) | (NatType::Public, _) => Strategy::Direct,
        (NatType::Easy, NatType::Easy) => Strategy::SimultaneousOpen,
        (NatType::Hard, NatType::Easy) if admits_anyone(peer) => Strategy::Direct,
        (NatType::Easy, NatType::Hard) if admits_anyone(me) => Strategy::Direct,
        (NatType::Hard, NatType::Easy) => predicted(me),
        (NatType::Easy, NatType::Hard) => predicted(peer),
        (NatType::Hard, NatType::Hard) if sequential(me).is_some() && sequential(peer).is_some() => Strategy::Predict,
        (NatType::Hard, NatType::Hard) => Strategy::Relay,
    }
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
    let plan = |strategy, send_first, birthday| Plan { strategy, candidates: vec![public], send_first, birthday };
    let hard = |r: &NatReport| r.nat_type() == NatType::Hard;
    Ok(match strategy(me, peer, me.public_addr.ip() == peer_public.ip()) {
        Strategy::Relay => return Err(Unpunchable::BothHard { ours: me.allocation, theirs: peer.allocation }),
        Strategy::Local => {
            // Only private addresses, and few: a record could list anyone's address here.
            let mut candidates: Vec<Candidate> = peer_private
                .iter()
                .filter(|a| a.is_ipv4() == peer_public.is_ipv4() && is_private(a.ip()))
                .take(MAX_PRIVATE)
                .map(|&addr| Candidate { addr, path: Path::Local })
                .collect();
            candidates.push(public);
            Plan { strategy: Strategy::Local, candidates, send_first: true, birthday: None }
        }
        // The side anyone can reach waits for the other's first proof: a public node facing
        // a NATed one, an easy side that filters nothing facing a hard one.
        Strategy::Direct => plan(Strategy::Direct, peer.nat_type() == NatType::Public || hard(me), None),
        Strategy::SimultaneousOpen => plan(Strategy::SimultaneousOpen, true, None),
        // Birthday or prediction. The hard side sends from its pool...
        strategy if hard(me) && !hard(peer) => {
            let paced = peer.filtering == Some(crate::nat::Filtering::AddressDependent);
            plan(strategy, true, Some(Birthday::Pool { target: peer_public, paced }))
        }
        // ...the easy side (or either of two sequential sides) aims at the peer's ports.
        strategy => {
            let walk = if hard(me) { Walk::Both } else { Walk::Pool };
            let predict = sequential(peer).map(|step| Prediction { last: peer_public.port(), step, walk });
            plan(strategy, true, Some(Birthday::Spray { ip: peer_public.ip(), predict }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{Filtering, Mapping};

    fn report(addr: &str, mapping: Option<Mapping>, filtering: Filtering, allocation: Allocation) -> NatReport {
        let public_addr = addr.parse().unwrap();
        NatReport { public_addr, no_nat: false, mapping, filtering: Some(filtering), allocation: Some(allocation) }
    }

    const APDF: Filtering = Filtering::AddressAndPortDependent;
    const EIM: Option<Mapping> = Some(Mapping::EndpointIndependent);
    const APDM: Option<Mapping> = Some(Mapping::AddressAndPortDependent);

    /// Issue 9: probing that cannot tell a NAT's mapping (one-IP servers) must not make
    /// it easy: a side with an unknown mapping is planned exactly as a hard one.
    #[test]
    fn an_unknown_mapping_is_planned_as_hard() {
        let (me_at, peer_at) = ("203.0.113.1:1000", "203.0.113.2:2000");
        let peer_public: SocketAddr = peer_at.parse().unwrap();
        let unknown = |at| report(at, None, APDF, Allocation::Random);
        let easy = |at| report(at, EIM, APDF, Allocation::Preserving);
        let hard = |at| report(at, APDM, APDF, Allocation::Random);
        let public = |at: &str| NatReport::public(at.parse().unwrap());

        // Against an easy peer: we open the birthday pool toward it...
        let p = plan(&unknown(me_at), &easy(peer_at), peer_public, &[]).unwrap();
        assert_eq!(p.strategy, Strategy::Birthday);
        assert_eq!(p.birthday, Some(Birthday::Pool { target: peer_public, paced: false }));
        assert!(p.send_first);
        // ...and an easy side sprays at an unknown peer's IP.
        let p = plan(&easy(me_at), &unknown(peer_at), peer_public, &[]).unwrap();
        assert_eq!(p.strategy, Strategy::Birthday);
        assert_eq!(p.birthday, Some(Birthday::Spray { ip: peer_public.ip(), predict: None }));
        // Against a hard peer, or another unknown one: the relay, at once.
        for peer in [hard(peer_at), unknown(peer_at)] {
            let refused = plan(&unknown(me_at), &peer, peer_public, &[]);
            assert_eq!(
                refused,
                Err(Unpunchable::BothHard { ours: Some(Allocation::Random), theirs: Some(Allocation::Random) })
            );
            let refused = plan(&peer, &unknown(me_at), me_at.parse().unwrap(), &[]);
            assert!(matches!(refused, Err(Unpunchable::BothHard { .. })), "{refused:?}");
        }
        // Two sequential allocators predict each other, as two hard ones do.
        let seq = |at| report(at, None, APDF, Allocation::Sequential { step: 1 });
        assert_eq!(strategy(&seq(me_at), &seq(peer_at), false), Strategy::Predict);
        // Against a public peer: direct, and the unknown side sends first.
        let p = plan(&unknown(me_at), &public(peer_at), peer_public, &[]).unwrap();
        assert_eq!((p.strategy, p.send_first), (Strategy::Direct, true));
        let p = plan(&public(me_at), &unknown(peer_at), peer_public, &[]).unwrap();
        assert_eq!((p.strategy, p.send_first), (Strategy::Direct, false));
        // An easy peer that filters nothing is just sent to, the unknown side first.
        let open = report(peer_at, EIM, Filtering::EndpointIndependent, Allocation::Preserving);
        let p = plan(&unknown(me_at), &open, peer_public, &[]).unwrap();
        assert_eq!((p.strategy, p.send_first, p.birthday), (Strategy::Direct, true, None));
    }
}
