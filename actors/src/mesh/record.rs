//! Node records: what each public node says about itself (addresses, roles, relay load),
//! signed by it and spread by foca as custom broadcasts; and the hosting claims this member
//! keeps (as a home, or for the directory: see [`super::directory`]). The table keeps one per member:
//! a newer generation, or a newer record of the same generation, replaces the older;
//! records older than their lifetime go; unsigned, oversized, future-dated or expired ones
//! are dropped and counted. Addresses come only from here (signed by their owner) or from
//! first contact, never from what one member says about another.

use super::{MemberId, Stats};
use crate::identity::{verify_hosting, verify_node_record, SignatureError};
use foca::{BroadcastHandler, Invalidates};
use introducer_proto::pb;
use libp2p_identity::PeerId;
use prost::Message;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

/// Addresses a record may list (two IPs × two ports of an RFC 5780 server).
pub const MAX_ADDRS: usize = 4;
/// The largest encoded signed record accepted: four IPv6 addresses and every field at its
/// largest come to about 270 bytes.
pub const MAX_SIGNED_NODE_RECORD: usize = 320;

/// A verified node record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub peer: PeerId,
    pub generation: u64,
    pub issued_ms: u64,
    pub addrs: Vec<SocketAddr>,
    pub introducer: bool,
    pub relay: bool,
    pub relay_capacity: u32,
    pub relay_load: u32,
    /// The bytes as signed, to pass on unchanged (and to store).
    pub signed: Vec<u8>,
}

impl NodeRecord {
    fn newer_than(&self, other: &NodeRecord) -> bool {
        (self.generation, self.issued_ms) > (other.generation, other.issued_ms)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record exceeds its bounds")]
    Oversized,
    #[error("record does not decode")]
    Malformed,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("record issued in the future")]
    Future,
    #[error("record expired")]
    Expired,
}

/// Decodes and checks a signed record (bounds first: they are cheap, a signature is not)
/// against `now_ms` and the records' lifetime.
pub fn verify(bytes: &[u8], now_ms: u64, max_skew_ms: u64, ttl_ms: u64) -> Result<NodeRecord, RecordError> {
    if bytes.len() > MAX_SIGNED_NODE_RECORD {
        return Err(RecordError::Oversized);
    }
    let signed = pb::SignedNodeRecord::decode(bytes).map_err(|_| RecordError::Malformed)?;
    let (peer, r) = verify_node_record(&signed)?;
    if r.addrs.len() > MAX_ADDRS {
        return Err(RecordError::Oversized);
    }
    let addrs = r.addrs.iter().map(SocketAddr::try_from).collect::<Result<Vec<_>, _>>();
    let addrs = addrs.map_err(|_| RecordError::Malformed)?;
    if r.issued_ms > now_ms + max_skew_ms {
        return Err(RecordError::Future);
    }
    if r.issued_ms + ttl_ms < now_ms {
        return Err(RecordError::Expired);
    }
    Ok(NodeRecord {
        peer,
        generation: r.generation,
        issued_ms: r.issued_ms,
        addrs,
        introducer: r.introducer,
        relay: r.relay,
        relay_capacity: r.relay_capacity,
        relay_load: r.relay_load,
        signed: bytes.to_vec(),
    })
}

/// The largest encoded signed hosting claim accepted: about 170 bytes, and 8 topics of at
/// most 64 bytes.
pub const MAX_SIGNED_HOSTING: usize = 720;
/// Topics one registration may be on, and the longest topic.
pub const MAX_TOPICS: usize = 8;
pub const MAX_TOPIC_LEN: usize = 64;
/// The longest a hosting claim may run before its home renews it.
pub const MAX_HOSTING_MS: u64 = 10 * 60 * 1000;

/// How long a home declared down is remembered: longer than any claim runs.
pub const DOWN_HOME_MEMORY_MS: u64 = 10 * 60_000;

/// A peer's homes as their claims say.
pub type Homes = BTreeMap<PeerId, Held>;

/// A claim as a table holds it: when issued and when it lapses (Unix ms), and its bytes as
/// signed, to hand to a member that looks the peer up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub issued_ms: u64,
    pub expires_ms: u64,
    pub signed: Vec<u8>,
}

/// A checked hosting claim: `home` holds a live registration of `peer` (until
/// `expires_ms`; a claim with `expires_ms == issued_ms` withdraws the home's earlier ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub home: PeerId,
    pub peer: PeerId,
    pub issued_ms: u64,
    pub expires_ms: u64,
    pub topics: Vec<Vec<u8>>,
    pub signed: Vec<u8>,
}

/// Whether topics are within bounds: how many, how long.
pub fn topics_ok<T: AsRef<[u8]>>(topics: &[T]) -> bool {
    topics.len() <= MAX_TOPICS && topics.iter().all(|t| (1..=MAX_TOPIC_LEN).contains(&t.as_ref().len()))
}

/// The records the mesh knows, one per member, shared with foca's broadcast handler.
#[derive(Debug, Default)]
pub struct Table {
    pub records: BTreeMap<PeerId, NodeRecord>,
    /// Who hosts each peer, by the homes' own claims.
    pub hosting: BTreeMap<PeerId, Homes>,
    /// Peers each home claims, so no home's claims can crowd out another's.
    pub hosted_by: BTreeMap<PeerId, usize>,
    /// Homes declared down, and when (Unix ms): their claims still being gossiped are not
    /// taken again — a dead home named for minutes after its members dropped it — until
    /// it is up again or [`DOWN_HOME_MEMORY_MS`] passed.
    pub down_homes: BTreeMap<PeerId, u64>,
    pub max_hosted_per_home: usize,
    /// Peers whose homes changed since the mesh last looked (it reports them).
    pub rehomed: Vec<PeerId>,
    /// Each hosted peer's topics, by its newest claim.
    pub topics: BTreeMap<PeerId, Vec<Vec<u8>>>,
    /// Topics whose members changed since the mesh last looked.
    pub retopiced: Vec<Vec<u8>>,
    /// The clock as the mesh last saw it (Unix ms), for the handler's freshness checks.
    pub now_ms: u64,
    pub max_skew_ms: u64,
    pub ttl_ms: u64,
    /// Most records kept: beyond it, new members' records are dropped (and counted).
    pub max_records: usize,
    /// Records accepted since the mesh last looked (it reports them).
    pub fresh: Vec<PeerId>,
    pub stats: Stats,
}

impl Table {
    /// Takes a broadcast (a node record) if it is valid and news.
    pub fn offer_broadcast(&mut self, bytes: &[u8]) -> Option<RecordKey> {
        let item = pb::Broadcast::decode(bytes).ok().and_then(|b| b.item);
        let Some(pb::broadcast::Item::Record(r)) = item else {
            self.stats.dropped_bad_record += 1;
            return None;
        };
        let r = self.offer(&r.encode_to_vec())?;
        Some(RecordKey { peer: r.peer, version: (r.generation, r.issued_ms) })
    }

    /// Decodes and checks a hosting claim: signed by its home, current, not too long, its
    /// topics within bounds. Counted when not.
    pub fn check_claim(&mut self, bytes: &[u8]) -> Option<Claim> {
        let checked = (bytes.len() <= MAX_SIGNED_HOSTING)
            .then(|| pb::SignedHosting::decode(bytes).ok())
            .flatten()
            .and_then(|signed| verify_hosting(&signed).ok())
            .and_then(|(home, h)| Some((home, PeerId::from_bytes(&h.peer_id).ok()?, h)))
            .filter(|(_, _, h)| {
                h.issued_ms <= self.now_ms + self.max_skew_ms
                    && (h.expires_ms > self.now_ms || h.expires_ms == h.issued_ms)
                    && h.expires_ms.saturating_sub(h.issued_ms) <= MAX_HOSTING_MS
                    && topics_ok(&h.topics)
            });
        let Some((home, peer, h)) = checked else {
            self.stats.dropped_bad_record += 1;
            return None;
        };
        let topics = h.topics.iter().map(|t| t.to_vec()).collect();
        Some(Claim { home, peer, issued_ms: h.issued_ms, expires_ms: h.expires_ms, topics, signed: bytes.to_vec() })
    }

    /// Takes a checked claim if it is newer than the home's last claim for that peer and
    /// within the home's quota; a withdrawal removes the home's claim. Whether it was news.
    pub fn offer_claim(&mut self, claim: Claim) -> bool {
        let Claim { home, peer, issued_ms, expires_ms, topics, signed } = claim;
        if self.down_homes.contains_key(&home) {
            return false;
        }
        let known = self.hosting.get(&peer).and_then(|homes| homes.get(&home)).map(|c| c.issued_ms);
        if known.is_some_and(|issued| issued >= issued_ms) {
            return false;
        }
        if expires_ms == issued_ms {
            // A withdrawal: the registration ended.
            if known.is_some() {
                self.remove_claim(&peer, &home);
            }
            return true;
        }
        if self.topics.get(&peer) != Some(&topics) {
            let old = self.topics.insert(peer, topics.clone()).unwrap_or_default();
            self.retopiced.extend(old.into_iter().chain(topics));
        }
        if known.is_none() {
            let count = self.hosted_by.entry(home).or_default();
            if *count >= self.max_hosted_per_home {
                self.stats.dropped_table_full += 1;
                return false;
            }
            *count += 1;
            self.rehomed.push(peer);
        }
        self.hosting.entry(peer).or_default().insert(home, Held { issued_ms, expires_ms, signed });
        true
    }

    /// The claims we hold on `peer`, newest first (at most `max`).
    pub fn claims_on(&self, peer: &PeerId, max: usize) -> Vec<Vec<u8>> {
        let mut held: Vec<&Held> = self.hosting.get(peer).map(|h| h.values().collect()).unwrap_or_default();
        held.sort_by_key(|c| std::cmp::Reverse(c.issued_ms));
        held.into_iter().take(max).map(|c| c.signed.clone()).collect()
    }

    /// Takes a record if it is valid and newer than what we hold; whether it was taken.
    pub fn offer(&mut self, bytes: &[u8]) -> Option<NodeRecord> {
        let record = match verify(bytes, self.now_ms, self.max_skew_ms, self.ttl_ms) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("node record dropped: {e}");
                self.stats.dropped_bad_record += 1;
                return None;
            }
        };
        match self.records.get(&record.peer) {
            Some(old) if !record.newer_than(old) => return None,
            None if self.records.len() >= self.max_records => {
                self.stats.dropped_table_full += 1;
                return None;
            }
            _ => {}
        }
        self.records.insert(record.peer, record.clone());
        self.fresh.push(record.peer);
        Some(record)
    }

    /// Forgets records past their lifetime (the peers whose records went) and lapsed
    /// hosting claims (their peers are reported rehomed).
    pub fn expire(&mut self) -> Vec<PeerId> {
        let (now, ttl) = (self.now_ms, self.ttl_ms);
        let gone: Vec<PeerId> = self.records.values().filter(|r| r.issued_ms + ttl < now).map(|r| r.peer).collect();
        for peer in &gone {
            self.records.remove(peer);
        }
        self.down_homes.retain(|_, at| *at + DOWN_HOME_MEMORY_MS > now);
        let (hosted_by, rehomed) = (&mut self.hosted_by, &mut self.rehomed);
        self.hosting.retain(|peer, homes| {
            let before = homes.len();
            homes.retain(|home, claim| {
                let live = claim.expires_ms > now;
                if !live {
                    hosted_by.entry(*home).and_modify(|count| *count = count.saturating_sub(1));
                }
                live
            });
            if homes.len() != before {
                rehomed.push(*peer);
            }
            !homes.is_empty()
        });
        self.forget_unhosted_topics();
        gone
    }

    /// Topics of peers no home claims any more go (and their topics are reported).
    fn forget_unhosted_topics(&mut self) {
        let hosting = &self.hosting;
        let retopiced = &mut self.retopiced;
        self.topics.retain(|peer, topics| {
            let hosted = hosting.contains_key(peer);
            if !hosted {
                retopiced.append(topics);
            }
            hosted
        });
    }

    /// Forgets `home`'s claim on `peer` (and the peer's topics once no home claims it).
    fn remove_claim(&mut self, peer: &PeerId, home: &PeerId) {
        let Some(homes) = self.hosting.get_mut(peer) else { return };
        if homes.remove(home).is_none() {
            return;
        }
        self.hosted_by.entry(*home).and_modify(|count| *count = count.saturating_sub(1));
        self.rehomed.push(*peer);
        if homes.is_empty() {
            self.hosting.remove(peer);
            self.retopiced.extend(self.topics.remove(peer).unwrap_or_default());
        }
    }

    /// The peers on `topic`, by their claims.
    pub fn on_topic(&self, topic: &[u8]) -> Vec<PeerId> {
        self.topics.iter().filter(|(_, topics)| topics.iter().any(|t| t == topic)).map(|(p, _)| *p).collect()
    }

    /// A member is down: lookups skip it at once (its claims go; its peers are reported
    /// rehomed), rather than when its claims lapse.
    pub fn drop_home(&mut self, home: &PeerId) {
        if self.down_homes.len() < self.max_records {
            self.down_homes.insert(*home, self.now_ms);
        }
        if self.hosted_by.remove(home).is_none() {
            return;
        }
        let rehomed = &mut self.rehomed;
        self.hosting.retain(|peer, homes| {
            if homes.remove(home).is_some() {
                rehomed.push(*peer);
            }
            !homes.is_empty()
        });
        self.forget_unhosted_topics();
    }

    /// The homes hosting `peer` now.
    pub fn homes(&self, peer: &PeerId) -> Vec<PeerId> {
        self.hosting.get(peer).map(|homes| homes.keys().copied().collect()).unwrap_or_default()
    }
}

/// What a broadcast carries: foca keeps spreading only the newest record per member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    peer: PeerId,
    version: (u64, u64),
}

impl Invalidates for RecordKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.peer == other.peer && self.version >= other.version
    }
}

/// foca's view of the table: it asks whether a broadcast is news worth spreading.
pub struct Records(pub Rc<RefCell<Table>>);

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

impl BroadcastHandler<MemberId> for Records {
    type Key = RecordKey;
    type Error = Never;

    /// Invalid records are dropped and counted here rather than failing the datagram, so
    /// one bad record does not cost the rest of what came with it.
    fn receive_item(&mut self, data: &[u8], _sender: Option<&MemberId>) -> Result<Option<RecordKey>, Never> {
        Ok(self.0.borrow_mut().offer_broadcast(data))
    }
}
