//! The claim directory: which members keep the hosting claims on a peer or a topic, and
//! the lookups that ask them.
//!
//! Every member could hold every claim (they went to all by gossip, once), but the mesh's
//! broadcasts carry a few hundred items a second: at about 150 NATed peers per member the
//! claims queued faster than they spread, and lookups missed. So a claim goes only to the
//! [`COPIES`] members that rendezvous hashing ranks first for its key (the peer, and each
//! of its topics) among the members up that introduce — every member ranks alike from the
//! same membership, with no coordination — and a member that does not hold a key asks
//! those members (one round trip). A home sends its claims again to a member that ranks
//! into a key's directory (a newcomer) or in place of one that went down, so the directory
//! follows membership at once rather than at the next renewal.
//!
//! No I/O here: the mesh signs and sends what this asks for, over proven paths only.

use introducer_proto::pb;
use libp2p_identity::PeerId;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Members that keep the claims on one key.
pub const COPIES: usize = 3;
/// How long a lookup waits for the directory's answers.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long claims wait for the proof of a path to the member they go to.
const HOLD_CLAIMS: Duration = Duration::from_secs(5);
/// Claims waiting for one member, at most (the oldest go first).
const MAX_QUEUED: usize = 4096;
/// Lookups in flight, at most.
const MAX_LOOKUPS: usize = 4096;

/// What the directory is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Peer(PeerId),
    Topic(Vec<u8>),
}

impl Key {
    fn hash(&self) -> u64 {
        let digest = match self {
            Key::Peer(p) => Sha256::new().chain_update(b"introducer/directory/peer").chain_update(p.to_bytes()),
            Key::Topic(t) => Sha256::new().chain_update(b"introducer/directory/topic").chain_update(t),
        };
        u64::from_le_bytes(digest.finalize()[..8].try_into().expect("sha256 is 32 bytes"))
    }

    pub fn to_pb(&self, last: bool) -> pb::Lookup {
        let key = match self {
            Key::Peer(p) => pb::lookup::Key::PeerId(p.to_bytes().into()),
            Key::Topic(t) => pb::lookup::Key::Topic(t.clone().into()),
        };
        pb::Lookup { key: Some(key), last }
    }

    pub fn from_pb(lookup: &pb::Lookup) -> Option<Key> {
        match lookup.key.as_ref()? {
            pb::lookup::Key::PeerId(p) => PeerId::from_bytes(p).ok().map(Key::Peer),
            pb::lookup::Key::Topic(t) => super::record::topics_ok(&[t]).then(|| Key::Topic(t.to_vec())),
        }
    }

    /// Whether a claim (on `peer`, with `topics`) is one this key asks about.
    pub fn matches(&self, peer: &PeerId, topics: &[Vec<u8>]) -> bool {
        match self {
            Key::Peer(p) => p == peer,
            Key::Topic(t) => topics.contains(t),
        }
    }
}

fn member_hash(peer: &PeerId) -> u64 {
    let digest = Sha256::new().chain_update(b"introducer/directory/member").chain_update(peer.to_bytes()).finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
}

/// A member's rank for a key (higher first): splitmix64 of the two hashes, so that ranking a
/// thousand members for each of a home's peers costs microseconds, not signatures' worth.
fn score(key: u64, member: u64) -> u64 {
    let mut x = (key ^ member).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One key's directory as we rank it: the best members, best first.
#[derive(Debug, Clone)]
struct Ranked {
    key: u64,
    top: Vec<(u64, PeerId)>,
}

impl Ranked {
    fn holds(&self, member: &PeerId) -> bool {
        self.top.iter().any(|(_, m)| m == member)
    }
}

/// A peer we are a home of.
#[derive(Debug, Clone)]
struct Hosted {
    topics: Vec<Vec<u8>>,
    /// When the claim is renewed.
    renew: Instant,
    /// The newest claim, as signed.
    claim: Vec<u8>,
    /// The directories of the peer and of each of its topics.
    ranked: Vec<Ranked>,
}

impl Hosted {
    /// The members its claim goes to.
    fn members(&self) -> BTreeSet<PeerId> {
        self.ranked.iter().flat_map(|r| r.top.iter().map(|(_, m)| *m)).collect()
    }
}

/// A lookup in flight.
#[derive(Debug, Clone)]
struct Pending {
    deadline: Instant,
    /// Members asked that have not answered in full yet.
    asked: BTreeSet<PeerId>,
    /// Those of them not asked yet: no path to them is proven (yet).
    unsent: BTreeSet<PeerId>,
    /// What the answers named: (peer, home) → the claim's issue time.
    found: BTreeMap<(PeerId, PeerId), u64>,
}

/// A lookup that ended: the (peer, home) pairs its answers named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub key: Key,
    pub found: BTreeSet<(PeerId, PeerId)>,
}

#[derive(Debug)]
pub struct Directory {
    me: PeerId,
    /// Members up that introduce (us included, once we serve), with their hashes.
    members: BTreeMap<PeerId, u64>,
    hosted: BTreeMap<PeerId, Hosted>,
    /// No hosted claim is due for renewal before this (it may be earlier than any is: a
    /// withdrawn claim's time stays until the next renewals). Kept so that `poll_timeout`,
    /// asked after every datagram, does not walk every hosted peer: an introducer hosts
    /// tens of thousands.
    next_renew: Option<Instant>,
    lookups: BTreeMap<Key, Pending>,
    /// Claims to send to each member, and since when the oldest waits.
    outbox: BTreeMap<PeerId, (Instant, Vec<Vec<u8>>)>,
    /// Claims dropped for want of a proven path in time.
    pub dropped_unsent: u64,
}

impl Directory {
    pub fn new(me: PeerId) -> Directory {
        Directory {
            me,
            members: BTreeMap::new(),
            hosted: BTreeMap::new(),
            next_renew: None,
            lookups: BTreeMap::new(),
            outbox: BTreeMap::new(),
            dropped_unsent: 0,
        }
    }

    /// The members ranked first for `key`, best first.
    fn rank(&self, key: u64) -> Vec<(u64, PeerId)> {
        let mut top: Vec<(u64, PeerId)> = Vec::with_capacity(COPIES + 1);
        for (member, hash) in &self.members {
            let s = score(key, *hash);
            if top.len() < COPIES || s > top[COPIES - 1].0 {
                let at = top.partition_point(|&(t, _)| t > s);
                top.insert(at, (s, *member));
                top.truncate(COPIES);
            }
        }
        top
    }

    /// The members that keep `key`'s claims, best first.
    pub fn directory(&self, key: &Key) -> Vec<PeerId> {
        self.rank(key.hash()).into_iter().map(|(_, m)| m).collect()
    }

    /// A member that introduces is up (or we serve): it ranks for every key, and gets the
    /// claims of ours it now keeps.
    pub fn add_member(&mut self, now: Instant, peer: PeerId) {
        let hash = member_hash(&peer);
        if self.members.insert(peer, hash).is_some() {
            return;
        }
        let mut sends = Vec::new();
        for hosted in self.hosted.values_mut() {
            let before = hosted.members();
            for ranked in &mut hosted.ranked {
                let s = score(ranked.key, hash);
                if ranked.top.len() < COPIES || s > ranked.top[ranked.top.len() - 1].0 {
                    let at = ranked.top.partition_point(|&(t, _)| t > s);
                    ranked.top.insert(at, (s, peer));
                    ranked.top.truncate(COPIES);
                }
            }
            if !before.contains(&peer) && hosted.members().contains(&peer) {
                sends.push(hosted.claim.clone());
            }
        }
        for claim in sends {
            self.queue(now, peer, claim);
        }
    }

    /// A member is down or no longer introduces: the next ranked member in each directory
    /// it was in gets our claims.
    pub fn remove_member(&mut self, now: Instant, peer: &PeerId) {
        if self.members.remove(peer).is_none() {
            return;
        }
        self.outbox.remove(peer);
        let mut sends = Vec::new();
        let keys: Vec<PeerId> =
            self.hosted.iter().filter(|(_, h)| h.ranked.iter().any(|r| r.holds(peer))).map(|(p, _)| *p).collect();
        for hosted_peer in keys {
            let mut hosted = self.hosted.remove(&hosted_peer).expect("listed");
            let before = hosted.members();
            for ranked in hosted.ranked.iter_mut().filter(|r| r.holds(peer)) {
                ranked.top = self.rank(ranked.key);
            }
            sends.extend(hosted.members().difference(&before).map(|m| (*m, hosted.claim.clone())));
            self.hosted.insert(hosted_peer, hosted);
        }
        for (member, claim) in sends {
            self.queue(now, member, claim);
        }
    }

    /// We host `peer` with a new claim: it goes to the directories of the peer and its
    /// topics (and, when the topics changed, to the ones it was in before, to replace it).
    pub fn host(&mut self, now: Instant, peer: PeerId, topics: Vec<Vec<u8>>, claim: Vec<u8>, renew: Instant) {
        let keys = std::iter::once(Key::Peer(peer)).chain(topics.iter().cloned().map(Key::Topic));
        let ranked: Vec<Ranked> = keys.map(|k| k.hash()).map(|key| Ranked { key, top: self.rank(key) }).collect();
        let hosted = Hosted { topics, renew, claim: claim.clone(), ranked };
        self.next_renew = Some(self.next_renew.map_or(renew, |t| t.min(renew)));
        let mut to = hosted.members();
        if let Some(old) = self.hosted.insert(peer, hosted) {
            to.extend(old.members());
        }
        for member in to {
            self.queue(now, member, claim.clone());
        }
    }

    /// Our claim on `peer` is withdrawn (`claim`): every member that kept it hears so.
    pub fn unhost(&mut self, now: Instant, peer: &PeerId, claim: Vec<u8>) {
        if let Some(old) = self.hosted.remove(peer) {
            for member in old.members() {
                self.queue(now, member, claim.clone());
            }
        }
    }

    pub fn hosts(&self, peer: &PeerId) -> Option<&[Vec<u8>]> {
        self.hosted.get(peer).map(|h| h.topics.as_slice())
    }

    /// The hosted peers whose claims are due for renewal, with their topics (the caller
    /// hosts them again, with their next renewal).
    pub fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Vec<u8>>)> {
        if self.next_renew.is_none_or(|t| now < t) {
            return Vec::new();
        }
        self.next_renew = self.hosted.values().map(|h| h.renew).filter(|t| *t > now).min();
        self.hosted.iter().filter(|(_, h)| now >= h.renew).map(|(p, h)| (*p, h.topics.clone())).collect()
    }

    fn queue(&mut self, now: Instant, member: PeerId, claim: Vec<u8>) {
        if member == self.me {
            return;
        }
        let (_, claims) = self.outbox.entry(member).or_insert_with(|| (now, Vec::new()));
        if claims.len() >= MAX_QUEUED {
            claims.remove(0);
            self.dropped_unsent += 1;
        }
        claims.push(claim);
    }

    /// Members with claims waiting for them.
    pub fn waiting(&self) -> Vec<PeerId> {
        self.outbox.keys().copied().collect()
    }

    /// The claims waiting for `member`, taken to be sent.
    pub fn take(&mut self, member: &PeerId) -> Vec<Vec<u8>> {
        self.outbox.remove(member).map(|(_, c)| c).unwrap_or_default()
    }

    /// Starts looking `key` up, unless a lookup of it is in flight: the members that keep
    /// it are to be asked ([`Directory::to_ask`]). With none but us, it is done at once
    /// (see [`Directory::finish`]).
    pub fn lookup(&mut self, now: Instant, key: Key) {
        if self.lookups.contains_key(&key) {
            return;
        }
        let me = self.me;
        let mut asked: BTreeSet<PeerId> = self.directory(&key).into_iter().filter(|m| *m != me).collect();
        if self.lookups.len() >= MAX_LOOKUPS {
            asked.clear();
        }
        let deadline = if asked.is_empty() { now } else { now + LOOKUP_TIMEOUT };
        let pending = Pending { deadline, unsent: asked.clone(), asked, found: BTreeMap::new() };
        self.lookups.insert(key, pending);
    }

    /// Lookups to send now: to the members asked that `reachable` says we can send to.
    pub fn to_ask(&mut self, reachable: impl Fn(&PeerId) -> bool) -> Vec<(Key, PeerId)> {
        let mut sends = Vec::new();
        for (key, pending) in &mut self.lookups {
            let now_reachable: Vec<PeerId> = pending.unsent.iter().filter(|m| reachable(m)).copied().collect();
            for member in now_reachable {
                pending.unsent.remove(&member);
                sends.push((key.clone(), member));
            }
        }
        sends
    }

    /// Members asked whose path is not proven yet, to knock at.
    pub fn unreached(&self) -> BTreeSet<PeerId> {
        self.lookups.values().flat_map(|p| p.unsent.iter().copied()).collect()
    }

    /// Whether `from`'s answer on `key` is awaited.
    pub fn awaits(&self, key: &Key, from: &PeerId) -> bool {
        self.lookups.get(key).is_some_and(|p| p.asked.contains(from))
    }

    /// The issue time of what the answers named for (peer, home) so far: a claim no newer
    /// need not be verified again.
    pub fn known(&self, key: &Key, peer: &PeerId, home: &PeerId) -> Option<u64> {
        self.lookups.get(key)?.found.get(&(*peer, *home)).copied()
    }

    /// A checked claim from an awaited answer.
    pub fn found(&mut self, key: &Key, peer: PeerId, home: PeerId, issued_ms: u64) {
        if let Some(pending) = self.lookups.get_mut(key) {
            let issued = pending.found.entry((peer, home)).or_default();
            *issued = (*issued).max(issued_ms);
        }
    }

    /// `from` answered `key` in full.
    pub fn answered(&mut self, key: &Key, from: &PeerId) {
        if let Some(pending) = self.lookups.get_mut(key) {
            pending.asked.remove(from);
        }
    }

    /// The lookups answered in full or out of time.
    pub fn finish(&mut self, now: Instant) -> Vec<Done> {
        let done: Vec<Key> = self
            .lookups
            .iter()
            .filter(|(_, p)| p.asked.is_empty() || now >= p.deadline)
            .map(|(k, _)| k.clone())
            .collect();
        done.into_iter()
            .map(|key| {
                let pending = self.lookups.remove(&key).expect("listed");
                Done { key, found: pending.found.into_keys().collect() }
            })
            .collect()
    }

    /// Claims that waited too long for a path are dropped (and counted).
    pub fn expire(&mut self, now: Instant) {
        let before: usize = self.outbox.values().map(|(_, c)| c.len()).sum();
        self.outbox.retain(|_, (since, _)| now < *since + HOLD_CLAIMS);
        let after: usize = self.outbox.values().map(|(_, c)| c.len()).sum();
        self.dropped_unsent += (before - after) as u64;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let lookup = self.lookups.values().map(|p| p.deadline).min();
        let held = self.outbox.values().map(|(since, _)| *since + HOLD_CLAIMS).min();
        [self.next_renew, lookup, held].into_iter().flatten().min()
    }
}
