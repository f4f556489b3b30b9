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

use crate::cookie::{introduction_mac, Cookies};
use crate::identity::{verify_record, VerifiedRecord};
use crate::{SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind, IntroduceErrorReason};
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
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
    pub expired: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Registered { peer: PeerId, addr: SocketAddr },
    Introduced { requester: PeerId, target: PeerId },
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
    /// Token bucket for introduction requests.
    tokens: f64,
    refilled: Instant,
    /// The last introductions this peer asked for: (request id, target, nonce). A repeat
    /// gets the same nonce, so the target's copy can be lost without orphaning the punch.
    recent: VecDeque<(u64, PeerId, [u8; 16])>,
}

/// Introductions remembered per requester for repeats.
const RECENT_INTRODUCTIONS: usize = 4;

pub struct Broker {
    config: Config,
    cookies: Cookies,
    rng: StdRng,
    by_peer: HashMap<PeerId, Registration>,
    by_addr: HashMap<SocketAddr, PeerId>,
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
            cookies: Cookies::new(b"introducer/register", &mut rng, now, config.cookie_period),
            config,
            rng,
            by_peer: HashMap::new(),
            by_addr: HashMap::new(),
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

    /// Handles a broker-bound message; other kinds are not the broker's and are ignored.
    pub fn handle(&mut self, now: Instant, socket: SocketId, src: SocketAddr, kind: Kind) {
        match kind {
            Kind::Register(register) => self.on_register(now, socket, src, register),
            Kind::IntroduceRequest(request) => self.on_introduce(now, src, socket, request),
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
        let (tokens, refilled, recent) = match self.by_peer.get_mut(&peer) {
            Some(r) => (r.tokens, r.refilled, std::mem::take(&mut r.recent)),
            None => (self.config.introduction_burst, now, VecDeque::new()),
        };
        let cookie = register.cookie;
        let registration = Registration { addr: src, socket, record, cookie, expires, tokens, refilled, recent };
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
        let (rate, burst) = (self.config.introductions_per_sec, self.config.introduction_burst);
        let reg = self.by_peer.get_mut(&requester).expect("by_addr and by_peer agree");
        reg.tokens = (reg.tokens + now.saturating_duration_since(reg.refilled).as_secs_f64() * rate).min(burst);
        reg.refilled = now;
        if reg.tokens < 1.0 {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        reg.tokens -= 1.0;
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
        let repeat = self.by_peer[&requester].recent.iter().find(|(id, t, _)| *id == request_id && *t == target);
        let nonce: [u8; 16] = match repeat {
            Some(&(_, _, nonce)) => nonce,
            None => {
                let nonce = self.rng.gen();
                let recent = &mut self.by_peer.get_mut(&requester).expect("registered").recent;
                if recent.len() == RECENT_INTRODUCTIONS {
                    recent.pop_front();
                }
                recent.push_back((request_id, target, nonce));
                nonce
            }
        };
        let target_reg = &self.by_peer[&target];
        let requester_reg = &self.by_peer[&requester];
        let mut to_requester = pb::Introduction {
            request_id,
            peer: Some(target_reg.record.signed.clone()),
            peer_public: Some(target_reg.addr.into()),
            nonce: nonce.to_vec().into(),
            initiator: true,
            mac: 0,
        };
        let mut to_target = pb::Introduction {
            request_id,
            peer: Some(requester_reg.record.signed.clone()),
            peer_public: Some(requester_reg.addr.into()),
            nonce: nonce.to_vec().into(),
            initiator: false,
            mac: 0,
        };
        to_requester.mac = introduction_mac(requester_reg.cookie, &to_requester);
        to_target.mac = introduction_mac(target_reg.cookie, &to_target);
        let (target_socket, target_addr) = (target_reg.socket, target_reg.addr);
        self.send(socket, src, Kind::Introduction(to_requester));
        self.send(target_socket, target_addr, Kind::Introduction(to_target));
        self.stats.introduced += 1;
        self.events.push_back(Event::Introduced { requester, target });
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
