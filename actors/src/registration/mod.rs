//! The peer's side of the introducer protocol: register (answering the cookie challenge),
//! refresh often enough to keep the NAT mapping toward the introducer alive, ask for
//! introductions, and check what comes back before anyone punches on its strength.

use crate::backoff::Backoff;
use crate::cookie::{introduction_mac, request_mac, topic_mac};
use crate::identity::{verify_node_record, verify_record, Identity, VerifiedRecord};
use crate::{SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind, IntroduceErrorReason};
use libp2p_identity::PeerId;
use prost::Message;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub mod actor;

#[derive(Debug, Clone)]
pub struct Config {
    /// Refresh interval once registered; must stay inside the NAT's mapping lifetime.
    pub keepalive: Duration,
    /// First retransmission delay; doubles per try.
    pub retransmit: Duration,
    /// Tries before the introducer is declared unreachable.
    pub max_tries: u32,
    /// How long an introduction request may stay unanswered (across retransmissions).
    pub introduce_timeout: Duration,
    /// Once introduced, the request is repeated this often until the punch settles: the
    /// introducer answers a repeat with the same nonce, so a copy lost on its way to the
    /// peer is made good.
    pub reask: Duration,
    /// ...for at most this long (the punch's own give-up).
    pub reask_for: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keepalive: Duration::from_secs(15),
            retransmit: Duration::from_millis(250),
            max_tries: 5,
            introduce_timeout: Duration::from_secs(3),
            reask: Duration::from_millis(500),
            reask_for: Duration::from_secs(10),
        }
    }
}

/// A peer the introducer put us in touch with, its claims verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Introduced {
    pub request_id: u64,
    pub peer: VerifiedRecord,
    /// Where the introducer saw the peer: where it registered from, or a new mapping it
    /// showed for this introduction (`fresh`).
    pub peer_public: SocketAddr,
    pub fresh: bool,
    /// The introducer that introduced us.
    pub introducer: SocketAddr,
    pub nonce: Vec<u8>,
    pub initiator: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// First registration, or the introducer now sees us at a new address (our NAT
    /// changed the mapping).
    Registered {
        observed: SocketAddr,
    },
    /// No answer after every retransmission.
    Unreachable,
    /// The introducer named other members (their signed records checked) that introduce:
    /// further homes.
    Suggested(Vec<SocketAddr>),
    /// Who is on a topic, as the introducer knows from the mesh.
    TopicMembers {
        topic: Vec<u8>,
        peers: Vec<PeerId>,
    },
    Introduced(Box<Introduced>),
    IntroduceFailed {
        target: PeerId,
        error: IntroduceError,
    },
}

/// Why an introducer did not introduce us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntroduceError {
    #[error("peer {target} is not registered with introducer {introducer}")]
    TargetNotRegistered { target: PeerId, introducer: SocketAddr },
    #[error("introducer {introducer} does not know us (registration lapsed)")]
    RequesterNotRegistered { introducer: SocketAddr },
    /// Any other refusal, with the introducer's words.
    #[error("introducer {introducer} refused the request: {message}")]
    Refused { introducer: SocketAddr, message: String },
    #[error("introducer {introducer} did not answer the introduction request")]
    NoAnswer { introducer: SocketAddr },
    /// The target is registered with other members of the mesh (its homes).
    #[error("peer {target} is registered with {homes:?}, not with introducer {introducer}")]
    Elsewhere { target: PeerId, introducer: SocketAddr, homes: Vec<SocketAddr> },
}

/// Settled request ids remembered.
const SETTLED_KEPT: usize = 16;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub dropped_foreign: u64,
    pub dropped_bad_introduction: u64,
    /// Challenges and Registered answers that echo no Register of ours.
    pub dropped_unanswered: u64,
}

#[derive(Debug)]
struct Pending {
    target: PeerId,
    sent: Instant,
    deadline: Instant,
    /// The introduction arrived; the request now repeats until settled.
    introduced: bool,
}

impl Pending {
    fn resend_at(&self, config: &Config) -> Instant {
        self.sent + if self.introduced { config.reask } else { config.retransmit * 2 }
    }
}

pub struct Registration {
    config: Config,
    introducer: SocketAddr,
    socket: SocketId,
    record: pb::SignedPeerRecord,
    cookie: u64,
    observed: Option<SocketAddr>,
    /// Unanswered Register sends in a row, and the wait after the next one.
    backoff: Backoff,
    next_send: Option<Instant>,
    answered: bool,
    /// Ordered, so that resends and failures go out in the same order on every run.
    pending: BTreeMap<u64, Pending>,
    /// Requests settled lately: repeats of their introduction may still be on the way.
    settled: VecDeque<u64>,
    /// Request ids and Register nonces: unguessable, so that an answer that names them can
    /// only come from someone who saw the request.
    rng: StdRng,
    /// This registration's nonce: the introducer's challenge and Registered echo it.
    nonce: u64,
    /// Signs the proof that we hold our key, for each cookie.
    identity: Identity,
    /// The topics we are on (our homes tell the mesh).
    topics: Vec<Vec<u8>>,
    /// Topic requests awaiting their answer: request id → topic.
    topic_requests: BTreeMap<u64, Vec<u8>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Registration {
    /// `rng` picks request ids and nonces: from the OS on a real node. `identity` signed
    /// `record`.
    pub fn new(
        config: Config,
        introducer: SocketAddr,
        socket: SocketId,
        (identity, record): (Identity, pb::SignedPeerRecord),
        now: Instant,
        mut rng: StdRng,
    ) -> Self {
        Registration {
            nonce: rng.gen(),
            identity,
            backoff: Backoff::new(config.retransmit).give_up_after(config.max_tries),
            config,
            introducer,
            socket,
            record,
            cookie: 0,
            observed: None,
            next_send: Some(now),
            answered: false,
            pending: BTreeMap::new(),
            settled: VecDeque::new(),
            rng,
            topics: Vec::new(),
            topic_requests: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn introducer(&self) -> SocketAddr {
        self.introducer
    }

    /// Whether the introducer answered our last Register (a dead one stops soon after).
    pub fn answering(&self) -> bool {
        self.answered
    }

    /// Our public address as the introducer sees it, once registered.
    pub fn observed(&self) -> Option<SocketAddr> {
        self.observed
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Replaces the record we register (a newer `issued_ms`), sent with the next refresh.
    pub fn set_record(&mut self, record: pb::SignedPeerRecord) {
        self.record = record;
    }

    /// The topics we are on from now on: the introducer hears at once, if we are registered.
    pub fn set_topics(&mut self, now: Instant, topics: Vec<Vec<u8>>) {
        if self.topics != topics {
            self.topics = topics;
            if self.cookie != 0 {
                self.send_register(now);
            }
        }
    }

    /// Registers again now, whatever the schedule.
    pub fn refresh(&mut self, now: Instant) {
        self.send_register(now);
    }

    /// Asks the introducer who is on `topic` (the answer is an [`Event::TopicMembers`]).
    pub fn lookup_topic(&mut self, topic: Vec<u8>) {
        let request_id = self.rng.gen();
        let mut request = pb::TopicRequest { topic: topic.clone().into(), request_id, mac: 0 };
        request.mac = topic_mac(self.cookie, &request);
        // A few outstanding at most: an unanswered request is simply asked again later.
        while self.topic_requests.len() >= 4 {
            self.topic_requests.pop_first();
        }
        self.topic_requests.insert(request_id, topic);
        self.transmits.push_back(Transmit::envelope(self.socket, self.introducer, Kind::TopicRequest(request)));
    }

    /// Replaces the record we register and, if we hold a cookie, registers it at once (a
    /// registration still being challenged carries it from its next Register on): the
    /// introducer introduces us with the new one from then on.
    pub fn update_record(&mut self, now: Instant, record: pb::SignedPeerRecord) {
        self.record = record;
        if self.cookie != 0 {
            self.send_register(now);
        }
    }

    /// Asks the introducer to introduce us to `target`.
    pub fn introduce(&mut self, now: Instant, target: PeerId) -> u64 {
        let request_id = self.rng.gen();
        let deadline = now + self.config.introduce_timeout;
        self.pending.insert(request_id, Pending { target, sent: now, deadline, introduced: false });
        self.send_introduce(request_id, target);
        request_id
    }

    /// The punch with `target` is over: stop repeating its introduction request.
    pub fn settle(&mut self, target: &PeerId) {
        let settled = &mut self.settled;
        self.pending.retain(|id, p| {
            if p.target == *target {
                if settled.len() == SETTLED_KEPT {
                    settled.pop_front();
                }
                settled.push_back(*id);
            }
            p.target != *target
        });
    }

    fn send_introduce(&mut self, request_id: u64, target: PeerId) {
        let mut request = pb::IntroduceRequest { target: target.to_bytes().into(), request_id, mac: 0 };
        request.mac = request_mac(self.cookie, &request);
        self.transmits.push_back(Transmit::envelope(self.socket, self.introducer, Kind::IntroduceRequest(request)));
    }

    fn send_register(&mut self, now: Instant) {
        // Without a cookie the introducer only challenges: no proof to sign yet.
        let proof = if self.cookie == 0 { Vec::new() } else { self.identity.register_proof(self.cookie, self.nonce) };
        let (record, cookie, nonce) = (Some(self.record.clone()), self.cookie, self.nonce);
        let topics = self.topics.iter().map(|t| t.clone().into()).collect();
        let register = pb::Register { record, cookie, nonce, proof: proof.into(), topics };
        self.transmits.push_back(Transmit::envelope(self.socket, self.introducer, Kind::Register(register)));
        self.answered = false;
        self.next_send = Some(self.backoff.next(now));
    }

    /// Handles a message from `src`; only the introducer's are taken.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, kind: Kind) {
        if src != self.introducer {
            self.stats.dropped_foreign += 1;
            return;
        }
        match kind {
            // Not an answer to our Register (spoofed from the introducer's address): it
            // must not replace our cookie nor make us send.
            Kind::RegisterChallenge(pb::RegisterChallenge { nonce, .. })
            | Kind::Registered(pb::Registered { nonce, .. })
                if nonce != self.nonce =>
            {
                self.stats.dropped_unanswered += 1;
            }
            Kind::RegisterChallenge(challenge) => {
                self.cookie = challenge.cookie;
                self.backoff.reset();
                self.send_register(now);
            }
            Kind::Registered(registered) => {
                let Some(observed) = registered.observed.as_ref().and_then(|a| SocketAddr::try_from(a).ok()) else {
                    return;
                };
                let ttl = Duration::from_secs(registered.ttl_secs.into());
                self.answered = true;
                self.backoff.reset();
                // Refreshed by three quarters of its lifetime at the latest: the last quarter
                // (15 s of the default 60) leaves room for every retransmission.
                self.next_send = Some(now + self.config.keepalive.min(ttl * 3 / 4));
                if self.observed != Some(observed) {
                    self.observed = Some(observed);
                    self.events.push_back(Event::Registered { observed });
                }
                let suggested: Vec<SocketAddr> = registered
                    .members
                    .iter()
                    .filter_map(|bytes| pb::SignedNodeRecord::decode(&bytes[..]).ok())
                    .filter_map(|signed| verify_node_record(&signed).ok())
                    .filter(|(_, record)| record.introducer)
                    .filter_map(|(_, record)| record.addrs.first().and_then(|a| SocketAddr::try_from(a).ok()))
                    .take(4)
                    .collect();
                if !suggested.is_empty() {
                    self.events.push_back(Event::Suggested(suggested));
                }
            }
            Kind::Introduction(intro) => self.on_introduction(now, intro),
            Kind::TopicMembers(members) => {
                let Some(topic) = self.topic_requests.remove(&members.request_id) else { return };
                if members.topic[..] != topic[..] {
                    return;
                }
                let peers = members.peers.iter().take(64).filter_map(|p| PeerId::from_bytes(p).ok()).collect();
                self.events.push_back(Event::TopicMembers { topic, peers });
            }
            Kind::IntroduceError(error) => {
                let Some(pending) = self.pending.remove(&error.request_id) else { return };
                let (target, introducer) = (pending.target, self.introducer);
                let error = match error.reason() {
                    IntroduceErrorReason::TargetNotRegistered => {
                        IntroduceError::TargetNotRegistered { target, introducer }
                    }
                    IntroduceErrorReason::RequesterNotRegistered => {
                        IntroduceError::RequesterNotRegistered { introducer }
                    }
                    IntroduceErrorReason::TargetElsewhere => {
                        let homes = error.homes.iter().filter_map(|a| SocketAddr::try_from(a).ok()).take(3).collect();
                        IntroduceError::Elsewhere { target, introducer, homes }
                    }
                    _ => IntroduceError::Refused { introducer, message: error.message },
                };
                self.events.push_back(Event::IntroduceFailed { target, error });
            }
            _ => {}
        }
    }

    /// Refreshes this often from now on (the NAT forgets sooner than thought).
    pub fn set_keepalive(&mut self, now: Instant, keepalive: Duration) {
        self.config.keepalive = keepalive;
        if self.answered {
            self.next_send = self.next_send.map(|t| t.min(now + keepalive));
        }
    }

    fn on_introduction(&mut self, now: Instant, intro: pb::Introduction) {
        // Only the introducer that challenged us knows our cookie: a spoofed introduction
        // cannot aim our punches anywhere.
        if self.cookie == 0 || intro.mac != introduction_mac(self.cookie, &intro) {
            self.stats.dropped_bad_introduction += 1;
            return;
        }
        let peer = intro.peer.as_ref().and_then(|r| verify_record(r).ok());
        // Unspecified: the introducer introduces itself (a public node asked for by its
        // PeerId), which we reach where we registered.
        let peer_public = intro.peer_public.as_ref().and_then(|a| SocketAddr::try_from(a).ok());
        let peer_public = peer_public.map(|a| if a.ip().is_unspecified() { self.introducer } else { a });
        let (Some(peer), Some(peer_public), 16) = (peer, peer_public, intro.nonce.len()) else {
            self.stats.dropped_bad_introduction += 1;
            return;
        };
        if intro.initiator {
            // We asked for it: it must answer one of our requests, about the peer we named.
            match self.pending.get_mut(&intro.request_id) {
                Some(p) if p.target == peer.peer_id => {
                    if !p.introduced {
                        p.introduced = true;
                        p.deadline = now + self.config.reask_for;
                    }
                }
                None if self.settled.contains(&intro.request_id) => return,
                _ => {
                    self.stats.dropped_bad_introduction += 1;
                    return;
                }
            }
        }
        self.events.push_back(Event::Introduced(Box::new(Introduced {
            request_id: intro.request_id,
            peer,
            peer_public,
            nonce: intro.nonce.to_vec(),
            initiator: intro.initiator,
            fresh: intro.fresh,
            introducer: self.introducer,
        })));
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_send.is_some_and(|t| t <= now) {
            if !self.answered && self.backoff.exhausted() {
                // Reported once, then retried slowly for as long as the node runs: an
                // introducer that was down for a while is registered with again.
                if self.observed.take().is_some() || self.backoff.tries() == self.config.max_tries {
                    self.events.push_back(Event::Unreachable);
                }
                self.cookie = 0;
                // The slow retries count as tries too: past `max_tries`, none is reported.
                self.send_register(now);
                self.next_send = Some(now + self.config.keepalive);
            } else {
                if self.answered {
                    self.backoff.reset();
                }
                self.send_register(now);
            }
        }
        let expired: Vec<u64> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            let pending = self.pending.remove(&id).expect("listed above");
            // Once introduced, the punch reports its own outcome.
            if !pending.introduced {
                let error = IntroduceError::NoAnswer { introducer: self.introducer };
                self.events.push_back(Event::IntroduceFailed { target: pending.target, error });
            }
        }
        let config = &self.config;
        let resend: Vec<(u64, PeerId)> = self
            .pending
            .iter_mut()
            .filter(|(_, p)| p.resend_at(config) <= now)
            .map(|(id, p)| {
                p.sent = now;
                (*id, p.target)
            })
            .collect();
        for (id, target) in resend {
            self.send_introduce(id, target);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline.min(p.resend_at(&self.config)));
        self.next_send.into_iter().chain(pending).min()
    }
}

#[cfg(test)]
mod tests;
