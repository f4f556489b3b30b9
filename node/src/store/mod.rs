//! What a node keeps across restarts: the table it learns — members (public nodes), peers'
//! attachment records, topic records — and its last NAT report per network.
//!
//! The store is a cache, never the truth: every record in it is signed by its author or
//! re-learnt from the network, so a store that is lost, stale, half-written by a `kill -9`
//! or corrupt costs a slower start, never a wrong one. A store that does not open is moved
//! aside and rebuilt empty ([`SledStore::open_or_rebuild`]); a record that does not decode
//! is skipped, counted and removed ([`Store::load`]).
//!
//! The core ([`crate::core::NodeCore`]) does no I/O: it is handed a [`Stored`] snapshot at
//! start and asks for writes with [`StoreOp`]s, which its driver applies in order — the
//! binary to a [`SledStore`] under `--data-dir`, the simulator to a [`MemStore`].
//!
//! Backends provide five raw operations on named trees ([`Tree`]); the typed operations
//! and their encoding are written once, here, so the simulator's store reads and writes
//! exactly the bytes the binary's does.

mod codec;
pub mod mem;
pub mod sled;

pub use self::mem::MemStore;
pub use self::sled::SledStore;

use introducer_actors::nat::NatReport;
use libp2p_identity::PeerId;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The version of the layout below; a store of another version is moved aside and rebuilt.
pub const FORMAT: u32 = 1;

/// At most this many stored members are asked when a node rejoins without `--bootstrap`
/// (the most recently seen first): enough to survive most of them being down, few enough
/// that first contact stays a handful of datagrams.
pub const REJOIN_SEEDS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open { path: PathBuf, source: ::sled::Error },
    #[error("the store {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("cannot open the store {path}: {reason}")]
    Denied { path: PathBuf, reason: String },
    #[error("the store {path} has format {found}; this node reads format {FORMAT}")]
    Format { path: PathBuf, found: String },
    #[error("the store {path} opened empty: sled recovered nothing from its log")]
    Lost { path: PathBuf },
    #[error("the store {path} could not be read: sled panicked")]
    Panicked { path: PathBuf },
    #[error("cannot move the store {from} aside to {to}: {source}")]
    MoveAside { from: PathBuf, to: PathBuf, source: std::io::Error },
    #[error("store: {0}")]
    Sled(#[from] ::sled::Error),
    #[error("topic of {0} bytes: the store keys topics of at most 65535")]
    TopicTooLong(usize),
}

/// The trees of a store, one per kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tree {
    /// PeerId bytes → [`Member`].
    Members,
    /// PeerId bytes → [`Expiring`] (a signed attachment record).
    Attachments,
    /// topic length (u16, big-endian) ‖ topic ‖ PeerId bytes → [`Expiring`] (a signed
    /// topic record); the length prefix makes one topic's records one key range.
    Topics,
    /// [`Network`] → [`MeasuredNat`].
    Nat,
    /// The store's format, and facts about this node itself.
    Meta,
}

impl Tree {
    pub const ALL: [Tree; 5] = [Tree::Members, Tree::Attachments, Tree::Topics, Tree::Nat, Tree::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Members => "members",
            Tree::Attachments => "attachments",
            Tree::Topics => "topics",
            Tree::Nat => "nat",
            Tree::Meta => "meta",
        }
    }
}

/// A public node this node has met: where to find it again, and its signed node record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub peer_id: PeerId,
    /// Where it answered first contact: the address a restart rejoins through.
    pub addr: SocketAddr,
    /// The addresses it said it listens on (may include wildcard addresses: not dialled).
    pub listen: Vec<SocketAddr>,
    pub introducer: bool,
    /// Its signed node record as the mesh gossips it: opaque here (whoever reads it checks
    /// the signature); empty for a member known from first contact only.
    pub record: Vec<u8>,
    /// Unix milliseconds it last answered us.
    pub seen_ms: u64,
}

/// A signed record that lapses (an attachment or a topic record): opaque here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub record: Vec<u8>,
    /// Unix milliseconds after which the record is dropped ([`Store::prune`]).
    pub expires_ms: u64,
}

/// The network a NAT report was measured on: the node's LAN address and the public IP the
/// first server saw. The LAN address alone is ambiguous (every other home is on
/// 192.168.1.x), the public IP alone too (one CGNAT address fronts many networks, and a
/// node on the CGNAT's inside has another NAT in front of it than one on a public LAN);
/// both are known after one round trip of first contact, before any probing, which is
/// when a cold start wants the report. Ports are left out: they change with every socket
/// and mapping. A dynamic public IP that changes only costs a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Network {
    pub lan: IpAddr,
    pub public: IpAddr,
}

/// A NAT report and when it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredNat {
    pub report: NatReport,
    pub measured_ms: u64,
}

/// Everything a store holds, as loaded at a node's start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub members: BTreeMap<PeerId, Member>,
    pub attachments: BTreeMap<PeerId, Expiring>,
    pub topics: BTreeMap<(String, PeerId), Expiring>,
    pub nat: BTreeMap<Network, MeasuredNat>,
    /// When this node last took the introducer role (Unix milliseconds): a public node
    /// whose stored members are all down serves on its own rather than exit.
    pub served_ms: Option<u64>,
    /// Records that did not decode when loaded: skipped (and removed from the store).
    pub skipped: u64,
}

impl Stored {
    /// The addresses a node restarted without `--bootstrap` asks: the members that answered
    /// most recently first, at most [`REJOIN_SEEDS`].
    pub fn rejoin_seeds(&self) -> Vec<SocketAddr> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by(|a, b| b.seen_ms.cmp(&a.seen_ms).then(a.peer_id.cmp(&b.peer_id)));
        let mut seeds = Vec::new();
        for m in members {
            if !seeds.contains(&m.addr) && seeds.len() < REJOIN_SEEDS {
                seeds.push(m.addr);
            }
        }
        seeds
    }

    /// Drops the attachments and topic records expired at `now_ms`; returns how many.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.attachments.len() + self.topics.len();
        self.attachments.retain(|_, e| e.expires_ms > now_ms);
        self.topics.retain(|_, e| e.expires_ms > now_ms);
        before - self.attachments.len() - self.topics.len()
    }
}

/// A write the core asks its driver for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    PutMember(Member),
    RemoveMember(PeerId),
    PutAttachment(PeerId, Expiring),
    RemoveAttachment(PeerId),
    PutTopic(String, PeerId, Expiring),
    RemoveTopic(String, PeerId),
    PutNat(Network, MeasuredNat),
    /// This node took the introducer role at this Unix millisecond.
    Served(u64),
    /// Drop what expired at this Unix millisecond.
    Prune(u64),
    /// Make everything before durable: comes before anything that must survive a crash is
    /// acknowledged.
    Flush,
}

/// A node's store: five raw operations on [`Tree`]s that each backend provides, and the
/// typed operations, written once on top of them.
pub trait Store: Send {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn insert(&mut self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError>;
    fn remove(&mut self, tree: Tree, key: &[u8]) -> Result<(), StoreError>;
    /// The entries whose key starts with `prefix`, in key order.
    #[allow(clippy::type_complexity)]
    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Makes every write so far durable (on disk, for a disk store).
    fn flush(&mut self) -> Result<(), StoreError>;

    /// Everything stored. Records that do not decode are skipped, counted in
    /// [`Stored::skipped`] and removed: the store is a cache, and the network has them.
    fn load(&mut self) -> Result<Stored, StoreError> {
        let mut stored = Stored::default();
        let mut bad = Vec::new();
        for tree in [Tree::Members, Tree::Attachments, Tree::Topics, Tree::Nat] {
            for (key, value) in self.scan(tree, &[])? {
                let ok = match tree {
                    Tree::Members => codec::member(&key, &value).map(|m| stored.members.insert(m.peer_id, m)).is_some(),
                    Tree::Attachments => codec::peer(&key)
                        .zip(codec::expiring(&value))
                        .map(|(p, e)| stored.attachments.insert(p, e))
                        .is_some(),
                    Tree::Topics => codec::topic_key(&key)
                        .zip(codec::expiring(&value))
                        .map(|(k, e)| stored.topics.insert(k, e))
                        .is_some(),
                    Tree::Nat => codec::network(&key)
                        .zip(codec::measured_nat(&value))
                        .map(|(n, r)| stored.nat.insert(n, r))
                        .is_some(),
                    Tree::Meta => true,
                };
                if !ok {
                    bad.push((tree, key));
                }
            }
        }
        stored.served_ms = match self.get(Tree::Meta, codec::SERVED)? {
            None => None,
            Some(value) => match codec::u64_value(&value) {
                Some(ms) => Some(ms),
                None => {
                    bad.push((Tree::Meta, codec::SERVED.to_vec()));
                    None
                }
            },
        };
        stored.skipped = bad.len() as u64;
        for (tree, key) in bad {
            self.remove(tree, &key)?;
        }
        Ok(stored)
    }

    fn member(&self, peer: &PeerId) -> Result<Option<Member>, StoreError> {
        let key = peer.to_bytes();
        Ok(self.get(Tree::Members, &key)?.and_then(|v| codec::member(&key, &v)))
    }

    fn put_member(&mut self, member: &Member) -> Result<(), StoreError> {
        self.insert(Tree::Members, &member.peer_id.to_bytes(), codec::encode_member(member))
    }

    fn remove_member(&mut self, peer: &PeerId) -> Result<(), StoreError> {
        self.remove(Tree::Members, &peer.to_bytes())
    }

    fn put_attachment(&mut self, peer: &PeerId, attachment: &Expiring) -> Result<(), StoreError> {
        self.insert(Tree::Attachments, &peer.to_bytes(), codec::encode_expiring(attachment))
    }

    fn remove_attachment(&mut self, peer: &PeerId) -> Result<(), StoreError> {
        self.remove(Tree::Attachments, &peer.to_bytes())
    }

    /// The records of one topic, by peer.
    fn topic(&self, topic: &str) -> Result<BTreeMap<PeerId, Expiring>, StoreError> {
        let prefix = codec::topic_prefix(topic)?;
        let records = self.scan(Tree::Topics, &prefix)?.into_iter();
        Ok(records.filter_map(|(k, v)| Some((codec::topic_key(&k)?.1, codec::expiring(&v)?))).collect())
    }

    fn put_topic(&mut self, topic: &str, peer: &PeerId, record: &Expiring) -> Result<(), StoreError> {
        self.insert(Tree::Topics, &codec::encode_topic_key(topic, peer)?, codec::encode_expiring(record))
    }

    fn remove_topic(&mut self, topic: &str, peer: &PeerId) -> Result<(), StoreError> {
        self.remove(Tree::Topics, &codec::encode_topic_key(topic, peer)?)
    }

    /// The NAT report last measured on `network`.
    fn nat(&self, network: &Network) -> Result<Option<MeasuredNat>, StoreError> {
        Ok(self.get(Tree::Nat, &codec::encode_network(network))?.and_then(|v| codec::measured_nat(&v)))
    }

    fn put_nat(&mut self, network: &Network, nat: &MeasuredNat) -> Result<(), StoreError> {
        self.insert(Tree::Nat, &codec::encode_network(network), codec::encode_measured_nat(nat))
    }

    fn set_served(&mut self, at_ms: u64) -> Result<(), StoreError> {
        self.insert(Tree::Meta, codec::SERVED, at_ms.to_be_bytes().to_vec())
    }

    /// Removes the attachments and topic records expired at `now_ms` (and any that no
    /// longer decode); returns how many.
    fn prune(&mut self, now_ms: u64) -> Result<usize, StoreError> {
        let mut gone = 0;
        for tree in [Tree::Attachments, Tree::Topics] {
            for (key, value) in self.scan(tree, &[])? {
                if codec::expiring(&value).is_none_or(|e| e.expires_ms <= now_ms) {
                    self.remove(tree, &key)?;
                    gone += 1;
                }
            }
        }
        Ok(gone)
    }

    /// Applies one of the core's writes.
    fn apply(&mut self, op: StoreOp) -> Result<(), StoreError> {
        match op {
            StoreOp::PutMember(member) => self.put_member(&member),
            StoreOp::RemoveMember(peer) => self.remove_member(&peer),
            StoreOp::PutAttachment(peer, attachment) => self.put_attachment(&peer, &attachment),
            StoreOp::RemoveAttachment(peer) => self.remove_attachment(&peer),
            StoreOp::PutTopic(topic, peer, record) => self.put_topic(&topic, &peer, &record),
            StoreOp::RemoveTopic(topic, peer) => self.remove_topic(&topic, &peer),
            StoreOp::PutNat(network, nat) => self.put_nat(&network, &nat),
            StoreOp::Served(at_ms) => self.set_served(at_ms),
            StoreOp::Prune(now_ms) => self.prune(now_ms).map(drop),
            StoreOp::Flush => self.flush(),
        }
    }
}

#[cfg(test)]
mod tests;
