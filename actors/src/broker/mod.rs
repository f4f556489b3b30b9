//! The introducer role: registrations of peers behind NAT, and introductions.
//!
//! A peer registers with a signed record about itself. The first Register from an address
//! only earns a small cookie challenge; the peer must echo the cookie, which proves it
//! receives at that address — so nobody can register a victim's address and have
//! introductions, and later punches, aimed at it. Refreshing the registration doubles as
//! the keepalive of the peer's NAT mapping toward us.
//!
//! On an introduction request the broker sends both peers each other's signed record,
//! the public address it observed for each, and one fresh nonce; the peers then punch.
//! A peer behind a sequential NAT may then show a new mapping ([`pb::NewMapping`]): the
//! other peer gets the introduction again with that address, so it predicts from where
//! the NAT's port counter stands now.
//!
//! What a registration costs the introducer is bounded, not the registrant's choice: a
//! record is refused beyond [`MAX_SIGNED_RECORD`](crate::identity::MAX_SIGNED_RECORD)
//! bytes or [`MAX_PRIVATE_ADDRS`](crate::identity::MAX_PRIVATE_ADDRS) private addresses, it
//! is kept as its encoded bytes, the introductions remembered per peer are a fixed array,
//! and the tables shrink once registrations lapse: under 1 KiB per registered peer
//! ([`Broker::memory_per_registration`]), and about 100 B more per introduction it asked
//! for lately (a nonce-table entry at the table's load).

use crate::bucket::TokenBucket;
use crate::cookie::{introduction_mac, request_mac, topic_mac, Cookies};
use crate::identity::{
    ed25519_peer_id, encoded_ed25519_key, inlined_ed25519_key, record_signer, reread_record, verify_new_mapping,
    verify_record, verify_register_proof, SignatureError, VerifiedRecord,
};
use crate::mesh::directory::Key;
use crate::{network_of, SocketId, Transmit};
use answers::{Answers, Outcome};
use introducer_proto::pb::{self, envelope::Kind, IntroduceErrorReason};
use libp2p_identity::PeerId;
use prost::Message;
use rand::rngs::StdRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

pub mod actor;
mod answers;

#[derive(Debug, Clone)]
pub struct Config {
    /// A registration lapses after this long without a refresh.
    pub registration_ttl: Duration,
    /// Cookies rotate this often; one from the previous period is still accepted.
    pub cookie_period: Duration,
    pub max_registrations: usize,
    /// Registered addresses one IP, and one network (/24, /48), may hold: identities and
    /// ports cost nothing, so one host must not fill the table for everyone.
    pub max_registrations_per_ip: u32,
    pub max_registrations_per_network: u32,
    /// Introductions a peer may ask for per second, sustained, and in a burst: each one
    /// sends its target a datagram and starts a punch toward the requester.
    pub introductions_per_sec: f64,
    pub introduction_burst: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            registration_ttl: Duration::from_secs(60),
            cookie_period: Duration::from_secs(300),
            max_registrations: 100_000,
            max_registrations_per_ip: 64,
            max_registrations_per_network: 256,
            introductions_per_sec: 2.0,
            introduction_burst: 10.0,
        }
    }
}

/// Counts of what the broker did and refused; refused input is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub registered: u64,
    pub refreshed: u64,
    pub challenged: u64,
    pub introduced: u64,
    pub unknown_target: u64,
    pub dropped_bad_signature: u64,
    /// Records over their bounds (size, private addresses), refused before their signature
    /// is checked.
    pub dropped_oversized: u64,
    pub dropped_stale_record: u64,
    pub dropped_unregistered: u64,
    pub dropped_full: u64,
    pub dropped_rate_limited: u64,
    /// Registrations displaced by another identity from the same address.
    pub replaced: u64,
    /// New mappings passed on, and those dropped (unknown introduction, bad signature,
    /// another IP than registered, over the per-introduction budget).
    pub new_mappings: u64,
    pub dropped_new_mapping: u64,
    pub expired: u64,
    /// Broker messages that came before this node served.
    pub dropped_not_serving: u64,
    /// Registrations from a host or network that holds its share already.
    pub dropped_host_full: u64,
    /// Registers whose record was signed, but not their cookie: a copied record.
    pub dropped_no_possession: u64,
    /// Introduction requests without the requester's cookie MAC (spoofed from its address).
    pub dropped_bad_mac: u64,
}

/// What the node tells its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Take registrations and introduction requests from now on.
    Serve,
    /// Where the homes of a peer registered elsewhere answer (from the mesh): a request
    /// for it is answered with them. Empty: none any more.
    Homes { peer: PeerId, homes: Vec<SocketAddr> },
    /// Other members that introduce (their signed node records): a new registrant hears of
    /// a few, as further homes.
    Members(Vec<(PeerId, Vec<u8>)>),
    /// Who is on a topic now (from the mesh): a registered peer asking hears it.
    Topic { topic: Vec<u8>, peers: Vec<PeerId> },
    /// This node's own signed record (a public one): a registered peer that asks for us
    /// is introduced to us, so a public node is reached by its PeerId like any peer.
    Me(pb::SignedPeerRecord),
}

/// Members of a topic named in one answer, at most.
const MAX_TOPIC_ANSWER: usize = 64;
/// Topics whose members we keep, at most.
const MAX_TOPICS_KEPT: usize = 1 << 16;

/// Members offered to a new registrant as further homes: two to make three, and spares
/// for when one fails (every member ranks them alike for a peer, so spares must come now).
const SUGGESTED_HOMES: usize = 4;

/// Peers registered elsewhere whose homes we keep, at most (a lookup past it finds none).
const MAX_ELSEWHERE: usize = 1 << 16;

/// A request waiting for a lookup: the socket and address it came on, and itself.
type Held = (SocketId, SocketAddr, Kind);
/// Homes named in one answer.
const MAX_HOMES: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Registered {
        peer: PeerId,
        addr: SocketAddr,
    },
    /// A peer registered anew here, or its topics changed: what we host it with.
    Topics {
        peer: PeerId,
        topics: Vec<Vec<u8>>,
    },
    /// Two peers were introduced (`repeat`: again, as a request is repeated until its
    /// punch settles).
    Introduced {
        requester: PeerId,
        target: PeerId,
        nonce: [u8; 16],
        repeat: bool,
    },
    /// A registered peer asked for us: punch toward it (its side of the introduction
    /// went out, naming us). Repeated with the request, with the same nonce.
    IntroducedToUs {
        request_id: u64,
        peer: Box<VerifiedRecord>,
        /// Where it registered from.
        public: SocketAddr,
        nonce: [u8; 16],
    },
    /// Ask the mesh's directory (a peer registered elsewhere, or a topic): requests for
    /// it wait for [`Command::Homes`] or [`Command::Topic`].
    Lookup(Key),
    Expired {
        peer: PeerId,
    },
}

/// A registered peer's name in the tables: its ed25519 key. A [`PeerId`] (an identity
/// multihash of the protobuf-encoded key) takes 80 bytes in memory, room for any
/// multihash; the tables hold a name per registration, address and remembered
/// introduction, so they hold the 32 bytes that vary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerKey([u8; 32]);

impl PeerKey {
    /// None for a PeerId of another kind of key: no such peer can register here.
    fn of(peer: &PeerId) -> Option<PeerKey> {
        Self::of_bytes(&peer.to_bytes())
    }

    fn of_bytes(peer_id: &[u8]) -> Option<PeerKey> {
        inlined_ed25519_key(peer_id).map(PeerKey)
    }

    /// The signer a signed message names by its public key (not verified).
    fn claimed(public_key: &[u8]) -> Option<PeerKey> {
        encoded_ed25519_key(public_key).map(PeerKey)
    }

    fn peer_id(&self) -> PeerId {
        ed25519_peer_id(&self.0)
    }
}

#[derive(Debug)]
struct Registration {
    addr: SocketAddr,
    socket: SocketId,
    /// The encoded signed record, passed on in introductions as it came (its signature
    /// covers the record's bytes, which stay as signed); at most `MAX_SIGNED_RECORD` bytes.
    /// Kept encoded, as decoded it would take several allocations.
    signed: Box<[u8]>,
    /// The record's signing time: a newer record replaces an older one.
    issued_ms: u64,
    expires: Instant,
    /// The cookie it proved its address with: the key of the introductions it receives.
    cookie: u64,
    /// Introduction (and topic) requests it may still make.
    introductions: TokenBucket,
    /// The topics it is on.
    topics: Vec<Vec<u8>>,
    /// The last introductions this peer asked for. A repeat gets the same nonce, so the
    /// target's copy can be lost without orphaning the punch.
    recent: Recents,
}

/// An introduction, remembered for repeats and new mappings.
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    request_id: u64,
    target: PeerKey,
    nonce: [u8; 16],
    /// The ports of new mappings shown for it, by the requester and by the target:
    /// introduced in place of the registered ports from then on. Only the port, as a new
    /// mapping is passed on only from the IP its peer registered from.
    moved: [Option<NonZeroU16>; 2],
    /// New mappings it may still pass on.
    moves_left: u8,
}

/// Introductions remembered per requester for repeats.
const RECENT_INTRODUCTIONS: usize = 4;
/// New mappings passed on per introduction, at most: each sends a peer one datagram.
const MOVES_PER_INTRODUCTION: u8 = 4;

/// The last [`RECENT_INTRODUCTIONS`] introductions a peer asked for, oldest first: a fixed
/// array in the registration, so a busy peer costs no more than an idle one.
#[derive(Debug, Default)]
struct Recents {
    list: [Recent; RECENT_INTRODUCTIONS],
    len: u8,
}

impl Recents {
    fn iter(&self) -> impl Iterator<Item = &Recent> {
        self.list[..self.len as usize].iter()
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Recent> {
        self.list[..self.len as usize].iter_mut()
    }

    /// Remembers an introduction, forgetting the oldest when full.
    fn push(&mut self, recent: Recent) {
        if self.len as usize == RECENT_INTRODUCTIONS {
            self.list.rotate_left(1);
            self.list[RECENT_INTRODUCTIONS - 1] = recent;
        } else {
            self.list[self.len as usize] = recent;
            self.len += 1;
        }
    }
}

/// How many registered addresses each IP and each network holds.
#[derive(Debug, Default)]
struct Hosts {
    per_ip: HashMap<IpAddr, u32>,
    per_network: HashMap<IpAddr, u32>,
}

impl Hosts {
    fn full(&self, ip: IpAddr, config: &Config) -> bool {
        let count = |map: &HashMap<IpAddr, u32>, key| map.get(&key).copied().unwrap_or(0);
        count(&self.per_ip, ip) >= config.max_registrations_per_ip
            || count(&self.per_network, network_of(ip)) >= config.max_registrations_per_network
    }

    fn add(&mut self, ip: IpAddr) {
        *self.per_ip.entry(ip).or_default() += 1;
        *self.per_network.entry(network_of(ip)).or_default() += 1;
    }

    fn remove(&mut self, ip: IpAddr) {
        for (map, key) in [(&mut self.per_ip, ip), (&mut self.per_network, network_of(ip))] {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

/// This node, as the target of an introduction.
struct Me {
    peer: PeerId,
    record: pb::SignedPeerRecord,
    /// What the nonces of introductions to us are derived from: a repeated request gets
    /// the same nonce with nothing remembered, and nobody can tell the next one.
    nonce_key: [u8; 32],
}

pub struct Broker {
    config: Config,
    /// Off until the node serves: until then it registers and introduces nobody.
    serving: bool,
    cookies: Cookies,
    rng: StdRng,
    /// Boxed, so that a table's spare capacity costs a pointer per slot, not a
    /// registration. Expiry sweeps sort what they report, so it comes in the same order on
    /// every run.
    by_peer: HashMap<PeerKey, Box<Registration>>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    /// Registered addresses per host and per network (kept with `by_addr`).
    hosts: Hosts,
    /// Expiry is checked in sweeps (every quarter TTL), not per registration, so that
    /// `poll_timeout` stays O(1) with many registrations.
    next_sweep: Option<Instant>,
    /// The homes of peers registered with other members, as the mesh says.
    elsewhere: Answers<PeerKey, Vec<SocketAddr>, Held>,
    /// Other members that introduce, with their signed records, to suggest as homes.
    members: Vec<(PeerId, Vec<u8>)>,
    /// Who is on each topic, as the mesh says.
    topic_members: Answers<Vec<u8>, Vec<PeerId>, Held>,
    /// This node as a target of introductions ([`Command::Me`]).
    me: Option<Me>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Broker {
    pub fn new(config: Config, now: Instant, mut rng: StdRng) -> Self {
        Broker {
            serving: true,
            cookies: Cookies::new(b"introducer/register", &mut rng, now, config.cookie_period),
            config,
            rng,
            by_peer: HashMap::new(),
            by_addr: HashMap::new(),
            hosts: Hosts::default(),
            elsewhere: Answers::new(MAX_ELSEWHERE),
            members: Vec::new(),
            topic_members: Answers::new(MAX_TOPICS_KEPT),
            me: None,
            next_sweep: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn registrations(&self) -> usize {
        self.by_peer.len()
    }

    /// The bytes the registrations hold: every table at its capacity (the spare slots
    /// included), the boxed registrations and their records. Computed from the structures
    /// as they are, so it shows what they cost and that they shrink when entries go; the
    /// allocator's own overhead per allocation is not counted.
    pub fn registration_memory(&self) -> usize {
        let records: usize = self.by_peer.values().map(|r| size_of::<Registration>() + r.signed.len()).sum();
        let hosts = table_bytes(&self.hosts.per_ip) + table_bytes(&self.hosts.per_network);
        table_bytes(&self.by_peer) + table_bytes(&self.by_addr) + hosts + records
    }

    /// [`registration_memory`](Self::registration_memory) per registered peer (all of it
    /// when none is registered).
    pub fn memory_per_registration(&self) -> usize {
        self.registration_memory() / self.by_peer.len().max(1)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A broker that takes nothing until [`Command::Serve`]: a node has one from the start
    /// and serves once it knows it is reachable.
    pub fn idle(config: Config, now: Instant, rng: StdRng) -> Self {
        Broker { serving: false, ..Broker::new(config, now, rng) }
    }

    pub fn is_serving(&self) -> bool {
        self.serving
    }

    /// Handles a broker-bound message; other kinds are not the broker's and are ignored.
    pub fn handle(&mut self, now: Instant, socket: SocketId, src: SocketAddr, kind: Kind) {
        if !self.serving {
            self.stats.dropped_not_serving += 1;
            return;
        }
        match kind {
            Kind::Register(register) => self.on_register(now, socket, src, register),
            Kind::IntroduceRequest(request) => self.on_introduce(now, src, socket, request, false),
            Kind::NewMapping(m) => self.on_new_mapping(src, &m),
            Kind::TopicRequest(request) => self.on_topic_request(now, socket, src, request, false),
            _ => {}
        }
    }

    fn on_register(&mut self, now: Instant, socket: SocketId, src: SocketAddr, register: pb::Register) {
        // Cheap checks first (bounds, key, cookie: hashes), the signature last: a flood of
        // spoofed Registers costs a hash each and earns a challenge smaller than itself.
        let Some(signed) = register.record.as_ref() else {
            self.stats.dropped_bad_signature += 1;
            return;
        };
        let claimed = match record_signer(signed) {
            Ok(peer_id) => peer_id,
            Err(SignatureError::Oversized) => {
                self.stats.dropped_oversized += 1;
                return;
            }
            Err(_) => {
                self.stats.dropped_bad_signature += 1;
                return;
            }
        };
        if !self.cookies.check(now, src, &claimed, register.cookie) {
            self.stats.challenged += 1;
            let cookie = self.cookies.mint(now, src, &claimed);
            let nonce = register.nonce;
            self.send(socket, src, Kind::RegisterChallenge(pb::RegisterChallenge { cookie, nonce }));
            return;
        }
        let (record, key) = match verify_record(signed).map(|r| (PeerKey::of(&r.peer_id), r)) {
            Ok((Some(key), record)) => (record, key),
            _ => {
                self.stats.dropped_bad_signature += 1;
                return;
            }
        };
        // A signed record proves who wrote it, not who sends it: anybody introduced to the
        // peer holds a copy. The key's signature over this cookie proves its owner is here.
        if !verify_register_proof(signed, register.cookie, register.nonce, &register.proof) {
            self.stats.dropped_no_possession += 1;
            return;
        }
        let (peer, issued_ms) = (record.peer_id, record.record.issued_ms);
        if !crate::mesh::record::topics_ok(&register.topics) {
            self.stats.dropped_oversized += 1;
            return;
        }
        let topics: Vec<Vec<u8>> = register.topics.iter().map(|t| t.to_vec()).collect();
        // A new address takes a share of its host's and its network's.
        if !self.by_addr.contains_key(&src) && self.hosts.full(src.ip(), &self.config) {
            self.stats.dropped_host_full += 1;
            return;
        }
        match self.by_peer.get(&key) {
            Some(old) if old.issued_ms > issued_ms => {
                self.stats.dropped_stale_record += 1;
                return;
            }
            None if self.by_peer.len() >= self.config.max_registrations => {
                self.stats.dropped_full += 1;
                return;
            }
            Some(old) if old.addr == src => self.stats.refreshed += 1,
            _ => {
                self.stats.registered += 1;
                self.events.push_back(Event::Registered { peer, addr: src });
            }
        }
        let new = self.by_peer.get(&key).is_none_or(|r| r.addr != src);
        if new || self.by_peer.get(&key).is_some_and(|r| r.topics != topics) {
            self.events.push_back(Event::Topics { peer, topics: topics.clone() });
        }
        // One registration per address: a host cannot fill the table by minting identities.
        if let Some(other) = self.by_addr.get(&src).copied().filter(|p| *p != key) {
            self.by_peer.remove(&other);
            self.stats.replaced += 1;
        }
        let expires = now + self.config.registration_ttl;
        let signed = record.signed.encode_to_vec().into_boxed_slice();
        let cookie = register.cookie;
        match self.by_peer.get_mut(&key) {
            Some(r) => {
                if r.addr != src && self.by_addr.remove(&r.addr).is_some() {
                    self.hosts.remove(r.addr.ip());
                }
                (r.addr, r.socket, r.signed, r.issued_ms, r.expires, r.cookie, r.topics) =
                    (src, socket, signed, issued_ms, expires, cookie, topics);
            }
            None => {
                let (rate, burst) = (self.config.introductions_per_sec, self.config.introduction_burst);
                let introductions = TokenBucket::full(rate, burst, now);
                let recent = Recents::default();
                let registration = Registration {
                    addr: src,
                    socket,
                    signed,
                    issued_ms,
                    expires,
                    cookie,
                    introductions,
                    recent,
                    topics,
                };
                self.by_peer.insert(key, Box::new(registration));
            }
        }
        if self.by_addr.insert(src, key).is_none() {
            self.hosts.add(src.ip());
        }
        self.next_sweep.get_or_insert(now + self.config.registration_ttl / 4);
        let ttl_secs = self.config.registration_ttl.as_secs() as u32;
        let members = if new { self.suggest(&peer) } else { Vec::new() };
        let registered = pb::Registered { observed: Some(src.into()), ttl_secs, nonce: register.nonce, members };
        self.send(socket, src, Kind::Registered(registered));
    }

    /// An introduction request; `paid` when it waited for a lookup (its budget was taken).
    fn on_introduce(
        &mut self,
        now: Instant,
        src: SocketAddr,
        socket: SocketId,
        request: pb::IntroduceRequest,
        paid: bool,
    ) {
        let request_id = request.request_id;
        let Some(requester) = self.by_addr.get(&src).copied() else {
            // Unproven address: even a short error would be more than a bare request.
            self.stats.dropped_unregistered += 1;
            return;
        };
        let reg = self.by_peer.get_mut(&requester).expect("by_addr and by_peer agree");
        // From the requester's address is not from the requester: only it knows its cookie.
        if request.mac != request_mac(reg.cookie, &request) {
            self.stats.dropped_bad_mac += 1;
            return;
        }
        if !paid && !reg.introductions.try_take(now, 1.0) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        let target_id = PeerId::from_bytes(&request.target).ok();
        if target_id.is_some() && target_id == self.me.as_ref().map(|me| me.peer) {
            return self.introduce_me(requester, request_id);
        }
        let target = target_id.as_ref().and_then(PeerKey::of).filter(|t| self.by_peer.contains_key(t));
        let Some(target) = target else {
            // Registered with other members: the requester asks one of its homes (the home
            // that holds the peer's pinhole introduces, with everything a registration proves).
            // Where they are, the directory says: the request waits for its answer.
            let homes = match target_id.as_ref().and_then(|t| Some((*t, PeerKey::of(t)?))) {
                Some((t, key)) => {
                    let held = (socket, src, Kind::IntroduceRequest(request.clone()));
                    match self.elsewhere.request(now, &key, held) {
                        Outcome::Known(homes, again) => {
                            if again {
                                self.events.push_back(Event::Lookup(Key::Peer(t)));
                            }
                            Some(homes).filter(|h| !h.is_empty())
                        }
                        Outcome::Ask => {
                            self.events.push_back(Event::Lookup(Key::Peer(t)));
                            return;
                        }
                        Outcome::Wait => return,
                    }
                }
                None => None,
            };
            self.stats.unknown_target += 1;
            let (reason, message, homes) = match (target_id, homes) {
                (Some(t), Some(homes)) => {
                    let message = format!("{t} is registered with other members");
                    let homes = homes.iter().map(|&h| h.into()).collect();
                    (IntroduceErrorReason::TargetElsewhere, message, homes)
                }
                (Some(t), None) => {
                    (IntroduceErrorReason::TargetNotRegistered, format!("{t} is not registered here"), vec![])
                }
                (None, _) => (IntroduceErrorReason::BadRequest, "target is not a valid PeerId".to_owned(), vec![]),
            };
            let error =
                pb::IntroduceError { request_id, target: request.target, reason: reason as i32, message, homes };
            self.send(socket, src, Kind::IntroduceError(error));
            return;
        };
        let repeat = self.by_peer[&requester].recent.iter().find(|r| r.request_id == request_id && r.target == target);
        let repeat = repeat.copied();
        let recent = match repeat {
            Some(recent) => recent,
            None => {
                let nonce = self.rng.gen();
                let recent = Recent { request_id, target, nonce, moved: [None; 2], moves_left: MOVES_PER_INTRODUCTION };
                self.by_peer.get_mut(&requester).expect("registered").recent.push(recent);
                recent
            }
        };
        self.introduce(requester, &recent, true);
        self.introduce(requester, &recent, false);
        self.stats.introduced += 1;
        let (requester, target) = (requester.peer_id(), target.peer_id());
        self.events.push_back(Event::Introduced { requester, target, nonce: recent.nonce, repeat: repeat.is_some() });
    }

    /// A registered peer asked for us: it hears of us, "here" (an unspecified address:
    /// where it reached us, which only it knows when we listen on every interface), and we
    /// punch toward it.
    fn introduce_me(&mut self, requester: PeerKey, request_id: u64) {
        let (Some(me), Some(reg)) = (&self.me, self.by_peer.get(&requester)) else { return };
        let digest = Sha256::new()
            .chain_update(me.nonce_key)
            .chain_update(requester.0)
            .chain_update(request_id.to_le_bytes())
            .finalize();
        let nonce: [u8; 16] = digest[..16].try_into().expect("sha256 is 32 bytes");
        let here = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut introduction = pb::Introduction {
            request_id,
            peer: Some(me.record.clone()),
            peer_public: Some(here.into()),
            nonce: nonce.to_vec().into(),
            initiator: true,
            mac: 0,
            fresh: false,
        };
        introduction.mac = introduction_mac(reg.cookie, &introduction);
        let (socket, addr) = (reg.socket, reg.addr);
        let peer = pb::SignedPeerRecord::decode(&reg.signed[..]).ok().as_ref().and_then(reread_record);
        let Some(peer) = peer else { return };
        self.send(socket, addr, Kind::Introduction(introduction));
        self.stats.introduced += 1;
        self.events.push_back(Event::IntroducedToUs { request_id, peer: Box::new(peer), public: addr, nonce });
    }

    /// This node's own record, for the peers that ask for it.
    pub fn set_me(&mut self, record: pb::SignedPeerRecord) {
        let Ok(verified) = verify_record(&record) else { return };
        let nonce_key = match &self.me {
            Some(me) => me.nonce_key,
            None => self.rng.gen(),
        };
        self.me = Some(Me { peer: verified.peer_id, record, nonce_key });
    }

    /// Sends one side of an introduction: to the requester (`initiator`) or to the target,
    /// naming the other side at its newest mapping.
    fn introduce(&mut self, requester: PeerKey, recent: &Recent, initiator: bool) {
        let (to, about, moved) = match initiator {
            true => (requester, recent.target, recent.moved[1]),
            false => (recent.target, requester, recent.moved[0]),
        };
        let (to, about) = (&self.by_peer[&to], &self.by_peer[&about]);
        let peer = pb::SignedPeerRecord::decode(&about.signed[..]).expect("encoded at registration");
        let peer_public = moved.map_or(about.addr, |port| SocketAddr::new(about.addr.ip(), port.get()));
        let mut introduction = pb::Introduction {
            request_id: recent.request_id,
            peer: Some(peer),
            peer_public: Some(peer_public.into()),
            nonce: recent.nonce.to_vec().into(),
            initiator,
            mac: 0,
            fresh: moved.is_some(),
        };
        introduction.mac = introduction_mac(to.cookie, &introduction);
        let (socket, addr) = (to.socket, to.addr);
        self.send(socket, addr, Kind::Introduction(introduction));
    }

    /// A peer showed a new mapping for an introduction: the other side hears of it. Only
    /// from the IP the peer registered from (it moves a peer within its own NAT's ports,
    /// nowhere else), and a few times per introduction.
    fn on_new_mapping(&mut self, src: SocketAddr, m: &pb::NewMapping) {
        // Cheap checks first: a signature is verified only for a live introduction, from the
        // IP one of its two peers registered from.
        // The introduction is among the recent ones of whichever of the two asked for it.
        let nonce: Option<[u8; 16]> = m.nonce[..].try_into().ok();
        let found = [PeerKey::of_bytes(&m.peer), PeerKey::claimed(&m.public_key)].into_iter().flatten().find_map(|p| {
            let recent = self.by_peer.get(&p)?.recent.iter().find(|r| Some(r.nonce) == nonce)?;
            Some((p, *recent))
        });
        let Some((requester, mut recent)) = found else {
            self.stats.dropped_new_mapping += 1;
            return;
        };
        let ip = |peer: &PeerKey| self.by_peer.get(peer).map(|r| r.addr.ip());
        let from_a_side = [requester, recent.target].iter().any(|p| ip(p) == Some(src.ip()));
        let worth_checking = recent.moves_left > 0 && ip(&recent.target).is_some() && from_a_side;
        let signer = worth_checking.then(|| verify_new_mapping(m).ok()).flatten();
        let side = signer.as_ref().and_then(PeerKey::of).and_then(|signer| {
            let side = [requester, recent.target].iter().position(|p| *p == signer)?;
            (ip(&signer) == Some(src.ip())).then_some(side)
        });
        let Some(side) = side else {
            self.stats.dropped_new_mapping += 1;
            return;
        };
        recent.moves_left -= 1;
        recent.moved[side] = NonZeroU16::new(src.port());
        let list = &mut self.by_peer.get_mut(&requester).expect("checked above").recent;
        list.iter_mut().filter(|r| r.nonce == recent.nonce).for_each(|r| *r = recent);
        self.introduce(requester, &recent, side == 1);
        self.stats.new_mappings += 1;
    }

    /// A registered peer asks who is on a topic: answered from what the mesh says, MAC'd
    /// with its cookie like an introduction request and paid from the same budget.
    fn on_topic_request(
        &mut self,
        now: Instant,
        socket: SocketId,
        src: SocketAddr,
        request: pb::TopicRequest,
        paid: bool,
    ) {
        let Some(requester) = self.by_addr.get(&src).copied() else {
            self.stats.dropped_unregistered += 1;
            return;
        };
        let reg = self.by_peer.get_mut(&requester).expect("by_addr and by_peer agree");
        if request.mac != topic_mac(reg.cookie, &request) {
            self.stats.dropped_bad_mac += 1;
            return;
        }
        if !paid && !reg.introductions.try_take(now, 1.0) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        let me = requester.peer_id();
        let topic = request.topic.to_vec();
        let held = (socket, src, Kind::TopicRequest(request.clone()));
        let members = match self.topic_members.request(now, &topic, held) {
            Outcome::Known(members, again) => {
                if again {
                    self.events.push_back(Event::Lookup(Key::Topic(topic)));
                }
                members
            }
            Outcome::Ask => {
                self.events.push_back(Event::Lookup(Key::Topic(topic)));
                return;
            }
            Outcome::Wait => return,
        };
        let peers = members.iter().filter(|p| **p != me).take(MAX_TOPIC_ANSWER).map(|p| p.to_bytes().into()).collect();
        let answer = pb::TopicMembers { request_id: request.request_id, topic: request.topic, peers };
        self.send(socket, src, Kind::TopicMembers(answer));
    }

    /// The mesh's word on who is on a topic: requests that waited for it are answered.
    pub fn set_topic(&mut self, now: Instant, topic: Vec<u8>, peers: Vec<PeerId>) {
        let woken = self.topic_members.answer(now, topic, peers);
        self.wake(now, woken);
    }

    /// Requests that waited for a lookup, handled again now that it is answered.
    fn wake(&mut self, now: Instant, woken: Vec<Held>) {
        for (socket, src, kind) in woken {
            match kind {
                Kind::IntroduceRequest(request) => self.on_introduce(now, src, socket, request, true),
                Kind::TopicRequest(request) => self.on_topic_request(now, socket, src, request, true),
                _ => {}
            }
        }
    }

    /// A few other members for `peer` to add as homes: the ones rendezvous hashing ranks
    /// first for it, so registrants spread over the mesh and each gets the same answer.
    fn suggest(&self, peer: &PeerId) -> Vec<bytes::Bytes> {
        let rank = |member: &PeerId| {
            let digest = Sha256::new().chain_update(peer.to_bytes()).chain_update(member.to_bytes()).finalize();
            u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
        };
        let mut ranked: Vec<&(PeerId, Vec<u8>)> = self.members.iter().filter(|(m, _)| m != peer).collect();
        ranked.sort_by_key(|(m, _)| rank(m));
        ranked.into_iter().take(SUGGESTED_HOMES).map(|(_, record)| record.clone().into()).collect()
    }

    pub fn set_members(&mut self, mut members: Vec<(PeerId, Vec<u8>)>) {
        members.truncate(64);
        self.members = members;
    }

    /// The mesh's word on where a peer registered elsewhere can be found: requests that
    /// waited for it are answered.
    pub fn set_homes(&mut self, now: Instant, peer: &PeerId, mut homes: Vec<SocketAddr>) {
        let Some(key) = PeerKey::of(peer) else { return };
        homes.truncate(MAX_HOMES);
        let woken = self.elsewhere.answer(now, key, homes);
        self.wake(now, woken);
    }

    fn send(&mut self, socket: SocketId, dst: SocketAddr, kind: Kind) {
        self.transmits.push_back(Transmit::envelope(socket, dst, kind));
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let woken = self.elsewhere.sweep(now);
        self.wake(now, woken);
        let woken = self.topic_members.sweep(now);
        self.wake(now, woken);
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        let mut expired: Vec<PeerKey> =
            self.by_peer.iter().filter(|(_, r)| r.expires <= now).map(|(p, _)| *p).collect();
        expired.sort_unstable();
        for peer in expired {
            if let Some(reg) = self.by_peer.remove(&peer) {
                if self.by_addr.remove(&reg.addr).is_some() {
                    self.hosts.remove(reg.addr.ip());
                }
            }
            self.stats.expired += 1;
            self.events.push_back(Event::Expired { peer: peer.peer_id() });
        }
        // Memory goes back once entries go: a flood of registrations that lapsed leaves no
        // tables sized for it.
        shrink(&mut self.by_peer);
        shrink(&mut self.by_addr);
        shrink(&mut self.hosts.per_ip);
        shrink(&mut self.hosts.per_network);
        if self.events.is_empty() {
            self.events.shrink_to_fit();
        }
        if self.transmits.is_empty() {
            self.transmits.shrink_to_fit();
        }
        self.next_sweep = (!self.by_peer.is_empty()).then(|| now + self.config.registration_ttl / 4);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_sweep, self.elsewhere.poll_timeout(), self.topic_members.poll_timeout()].into_iter().flatten().min()
    }
}

/// The bytes a table's buckets take at its capacity, as std's `HashMap` (hashbrown) lays
/// them out: a power-of-two number of buckets, filled to 7/8 at most (a bucket per
/// capacity below 8), each an entry and a control byte, and a group of control bytes more.
fn table_bytes<K, V>(map: &HashMap<K, V>) -> usize {
    let capacity = map.capacity();
    let buckets = match capacity {
        0 => return 0,
        1..8 => capacity + 1,
        _ => (capacity * 8 / 7).next_power_of_two(),
    };
    buckets * (size_of::<(K, V)>() + 1) + 16
}

/// Lets a table go of its memory once it holds under a quarter of what it could: never
/// right after it grew, so growing and shrinking do not alternate.
fn shrink<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
