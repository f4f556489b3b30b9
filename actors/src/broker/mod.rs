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

use crate::bucket::TokenBucket;
use crate::cookie::{introduction_mac, Cookies};
use crate::identity::{verify_new_mapping, verify_record, VerifiedRecord};
use crate::{SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind, IntroduceErrorReason};
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub mod actor;

#[derive(Debug, Clone)]
pub struct Config {
    /// A registration lapses after this long without a refresh.
    pub registration_ttl: Duration,
    /// Cookies rotate this often; one from the previous period is still accepted.
    pub cookie_period: Duration,
    pub max_registrations: usize,
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
}

/// What the node tells its broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Take registrations and introduction requests from now on.
    Serve,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Registered { peer: PeerId, addr: SocketAddr },
    Introduced { requester: PeerId, target: PeerId, nonce: [u8; 16] },
    Expired { peer: PeerId },
}

#[derive(Debug)]
struct Registration {
    addr: SocketAddr,
    socket: SocketId,
    record: VerifiedRecord,
    expires: Instant,
    /// The cookie it proved its address with: the key of the introductions it receives.
    cookie: u64,
    /// Introduction requests it may still make.
    introductions: TokenBucket,
    /// The last introductions this peer asked for. A repeat gets the same nonce, so the
    /// target's copy can be lost without orphaning the punch.
    recent: VecDeque<Recent>,
}

/// An introduction, remembered for repeats and new mappings.
#[derive(Debug, Clone, Copy)]
struct Recent {
    request_id: u64,
    target: PeerId,
    nonce: [u8; 16],
    /// New mappings shown for it, by the requester and by the target: introduced in place
    /// of the registered addresses from then on.
    moved: [Option<SocketAddr>; 2],
    /// New mappings it may still pass on.
    moves_left: u8,
}

/// Introductions remembered per requester for repeats.
const RECENT_INTRODUCTIONS: usize = 4;
/// New mappings passed on per introduction, at most: each sends a peer one datagram.
const MOVES_PER_INTRODUCTION: u8 = 4;

pub struct Broker {
    config: Config,
    /// Off until the node serves: until then it registers and introduces nobody.
    serving: bool,
    cookies: Cookies,
    rng: StdRng,
    /// Ordered, so that expiry sweeps report in the same order on every run.
    by_peer: BTreeMap<PeerId, Registration>,
    by_addr: HashMap<SocketAddr, PeerId>,
    /// The requester of each remembered introduction, by nonce.
    by_nonce: HashMap<[u8; 16], PeerId>,
    /// Expiry is checked in sweeps (every quarter TTL), not per registration, so that
    /// `poll_timeout` stays O(1) with many registrations.
    next_sweep: Option<Instant>,
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
            by_peer: BTreeMap::new(),
            by_addr: HashMap::new(),
            by_nonce: HashMap::new(),
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
            Kind::IntroduceRequest(request) => self.on_introduce(now, src, socket, request),
            Kind::NewMapping(m) => self.on_new_mapping(src, &m),
            _ => {}
        }
    }

    fn on_register(&mut self, now: Instant, socket: SocketId, src: SocketAddr, register: pb::Register) {
        let Some(record) = register.record.as_ref().and_then(|r| verify_record(r).ok()) else {
            self.stats.dropped_bad_signature += 1;
            return;
        };
        if !self.cookies.check(now, src, &record.peer_id, register.cookie) {
            self.stats.challenged += 1;
            let cookie = self.cookies.mint(now, src, &record.peer_id);
            self.send(socket, src, Kind::RegisterChallenge(pb::RegisterChallenge { cookie }));
            return;
        }
        let peer = record.peer_id;
        match self.by_peer.get(&peer) {
            Some(old) if old.record.record.issued_ms > record.record.issued_ms => {
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
        // One registration per address: a host cannot fill the table by minting identities.
        if let Some(other) = self.by_addr.get(&src).copied().filter(|p| *p != peer) {
            self.by_peer.remove(&other);
            self.stats.replaced += 1;
        }
        let expires = now + self.config.registration_ttl;
        let (introductions, recent) = match self.by_peer.get_mut(&peer) {
            Some(r) => (r.introductions, std::mem::take(&mut r.recent)),
            None => {
                let (rate, burst) = (self.config.introductions_per_sec, self.config.introduction_burst);
                (TokenBucket::full(rate, burst, now), VecDeque::new())
            }
        };
        let cookie = register.cookie;
        let registration = Registration { addr: src, socket, record, cookie, expires, introductions, recent };
        if let Some(old) = self.by_peer.insert(peer, registration) {
            if old.addr != src {
                self.by_addr.remove(&old.addr);
            }
        }
        self.by_addr.insert(src, peer);
        self.next_sweep.get_or_insert(now + self.config.registration_ttl / 4);
        let ttl_secs = self.config.registration_ttl.as_secs() as u32;
        self.send(socket, src, Kind::Registered(pb::Registered { observed: Some(src.into()), ttl_secs }));
    }

    fn on_introduce(&mut self, now: Instant, src: SocketAddr, socket: SocketId, request: pb::IntroduceRequest) {
        let request_id = request.request_id;
        let Some(requester) = self.by_addr.get(&src).copied() else {
            // Unproven address: even a short error would be more than a bare request.
            self.stats.dropped_unregistered += 1;
            return;
        };
        let reg = self.by_peer.get_mut(&requester).expect("by_addr and by_peer agree");
        if !reg.introductions.try_take(now, 1.0) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        let target = PeerId::from_bytes(&request.target).ok();
        let Some(target) = target.filter(|t| self.by_peer.contains_key(t)) else {
            self.stats.unknown_target += 1;
            let (reason, message) = match target {
                Some(t) => (IntroduceErrorReason::TargetNotRegistered, format!("{t} is not registered here")),
                None => (IntroduceErrorReason::BadRequest, "target is not a valid PeerId".to_owned()),
            };
            let error = pb::IntroduceError { request_id, target: request.target, reason: reason as i32, message };
            self.send(socket, src, Kind::IntroduceError(error));
            return;
        };
        let repeat = self.by_peer[&requester].recent.iter().find(|r| r.request_id == request_id && r.target == target);
        let recent = match repeat {
            Some(&recent) => recent,
            None => {
                let nonce = self.rng.gen();
                let recent = Recent { request_id, target, nonce, moved: [None; 2], moves_left: MOVES_PER_INTRODUCTION };
                let list = &mut self.by_peer.get_mut(&requester).expect("registered").recent;
                if list.len() == RECENT_INTRODUCTIONS {
                    if let Some(old) = list.pop_front() {
                        self.by_nonce.remove(&old.nonce);
                    }
                }
                list.push_back(recent);
                self.by_nonce.insert(nonce, requester);
                recent
            }
        };
        self.introduce(requester, &recent, true);
        self.introduce(requester, &recent, false);
        self.stats.introduced += 1;
        self.events.push_back(Event::Introduced { requester, target, nonce: recent.nonce });
    }

    /// Sends one side of an introduction: to the requester (`initiator`) or to the target,
    /// naming the other side at its newest mapping.
    fn introduce(&mut self, requester: PeerId, recent: &Recent, initiator: bool) {
        let (to, about, moved) = match initiator {
            true => (requester, recent.target, recent.moved[1]),
            false => (recent.target, requester, recent.moved[0]),
        };
        let (to, about) = (&self.by_peer[&to], &self.by_peer[&about]);
        let mut introduction = pb::Introduction {
            request_id: recent.request_id,
            peer: Some(about.record.signed.clone()),
            peer_public: Some(moved.unwrap_or(about.addr).into()),
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
        let nonce: Option<[u8; 16]> = m.nonce[..].try_into().ok();
        let requester = nonce.and_then(|n| self.by_nonce.get(&n).copied());
        let recent = requester
            .and_then(|p| self.by_peer.get(&p))
            .and_then(|r| r.recent.iter().find(|r| Some(r.nonce) == nonce))
            .copied();
        let (Some(requester), Some(mut recent)) = (requester, recent) else {
            self.stats.dropped_new_mapping += 1;
            return;
        };
        let ip = |peer: &PeerId| self.by_peer.get(peer).map(|r| r.addr.ip());
        let from_a_side = [requester, recent.target].iter().any(|p| ip(p) == Some(src.ip()));
        let worth_checking = recent.moves_left > 0 && ip(&recent.target).is_some() && from_a_side;
        let side = worth_checking.then(|| verify_new_mapping(m).ok()).flatten().and_then(|signer| {
            let side = [requester, recent.target].iter().position(|p| *p == signer)?;
            (ip(&signer) == Some(src.ip())).then_some(side)
        });
        let Some(side) = side else {
            self.stats.dropped_new_mapping += 1;
            return;
        };
        recent.moves_left -= 1;
        recent.moved[side] = Some(src);
        let list = &mut self.by_peer.get_mut(&requester).expect("checked above").recent;
        list.iter_mut().filter(|r| r.nonce == recent.nonce).for_each(|r| *r = recent);
        self.introduce(requester, &recent, side == 1);
        self.stats.new_mappings += 1;
    }

    fn send(&mut self, socket: SocketId, dst: SocketAddr, kind: Kind) {
        self.transmits.push_back(Transmit::envelope(socket, dst, kind));
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        let expired: Vec<PeerId> = self.by_peer.iter().filter(|(_, r)| r.expires <= now).map(|(p, _)| *p).collect();
        for peer in expired {
            if let Some(reg) = self.by_peer.remove(&peer) {
                self.by_addr.remove(&reg.addr);
            }
            self.stats.expired += 1;
            self.events.push_back(Event::Expired { peer });
        }
        let by_peer = &self.by_peer;
        self.by_nonce.retain(|_, requester| by_peer.contains_key(requester));
        self.next_sweep = (!self.by_peer.is_empty()).then(|| now + self.config.registration_ttl / 4);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }
}

#[cfg(test)]
mod tests;
