//! The registration actor: one [`Registration`] per introducer, keyed by its address.

use super::{Config, Event, Registration};
use crate::driver::{MachineActor, Protocol};
use crate::identity::Identity;
use crate::socket::{Inbound, Payload};
use crate::{SocketId, Transmit};
use introducer_proto::pb;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub type RegistrationActor = MachineActor<Registrations>;

/// What the node tells its registrations.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Register this record with each introducer (and keep it registered).
    Register { introducers: Vec<SocketAddr>, record: pb::SignedPeerRecord },
    /// Register this record instead, with every introducer, at once (what we said about
    /// ourselves changed: our NAT is classified).
    Record(pb::SignedPeerRecord),
    /// Ask an introducer we are registered with to introduce us to this peer.
    Introduce(PeerId),
    /// Ask this introducer (a home of the peer we registered with for it).
    IntroduceVia(PeerId, SocketAddr),
    /// The punch with this peer is over: stop re-asking its introduction.
    Settle(PeerId),
    /// Refresh every registration this often, at most.
    Keepalive(Duration),
    /// The topics we are on (every registration, current and future, says so).
    Topics(Vec<Vec<u8>>),
    /// Ask an introducer we are registered with who is on this topic.
    LookupTopic(Vec<u8>),
    /// Register again with every introducer now (after a sleep: our mappings may be new).
    Refresh,
}

/// Every introducer this node registers with.
pub struct Registrations {
    config: Config,
    /// Ours: it signs each registration's proof of possession.
    identity: Identity,
    /// Each registration's request ids and nonces come from here.
    rng: StdRng,
    by_introducer: BTreeMap<SocketAddr, Registration>,
    topics: Vec<Vec<u8>>,
}

impl Registrations {
    /// `rng`: from the OS on a real node (seeded on the simulator).
    pub fn new(config: Config, identity: Identity, rng: StdRng) -> Self {
        Registrations { config, identity, rng, by_introducer: BTreeMap::new(), topics: Vec::new() }
    }

    pub fn add(&mut self, now: Instant, introducer: SocketAddr, record: pb::SignedPeerRecord) {
        let (config, identity, rng) = (self.config.clone(), self.identity.clone(), &mut self.rng);
        let topics = &self.topics;
        self.by_introducer.entry(introducer).or_insert_with(|| {
            let rng = StdRng::from_rng(rng).expect("StdRng never fails");
            let mut registration =
                Registration::new(config, introducer, SocketId::PRIMARY, (identity, record), now, rng);
            registration.set_topics(now, topics.clone());
            registration
        });
    }

    /// Every registration, current and future, refreshes this often.
    pub fn set_keepalive(&mut self, now: Instant, keepalive: Duration) {
        self.config.keepalive = keepalive;
        self.by_introducer.values_mut().for_each(|r| r.set_keepalive(now, keepalive));
    }

    pub fn set_record(&mut self, record: pb::SignedPeerRecord) {
        self.by_introducer.values_mut().for_each(|r| r.set_record(record.clone()));
    }

    /// Every registration registers `record` from now on, and refreshes with it now.
    pub fn update_record(&mut self, now: Instant, record: pb::SignedPeerRecord) {
        self.by_introducer.values_mut().for_each(|r| r.update_record(now, record.clone()));
    }

    /// Asks an introducer we are registered with; `None` if there is none.
    pub fn introduce(&mut self, now: Instant, target: PeerId) -> Option<SocketAddr> {
        // One that answered our last refresh first: a dead introducer stops answering.
        let live = self.by_introducer.values().position(|r| r.observed().is_some() && r.answering());
        let any = || self.by_introducer.values().position(|r| r.observed().is_some());
        let index = live.or_else(any)?;
        let registration = self.by_introducer.values_mut().nth(index)?;
        registration.introduce(now, target);
        Some(registration.introducer())
    }

    /// The punch with `peer` is over: no introducer needs to repeat its introduction.
    pub fn settle(&mut self, peer: &PeerId) {
        self.by_introducer.values_mut().for_each(|r| r.settle(peer));
    }

    pub fn get(&self, introducer: &SocketAddr) -> Option<&Registration> {
        self.by_introducer.get(introducer)
    }
}

impl Protocol for Registrations {
    type Event = (SocketAddr, Event);
    type Command = Command;
    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Register { introducers, record } => {
                for introducer in introducers {
                    self.add(now, introducer, record.clone());
                }
            }
            Command::Record(record) => self.update_record(now, record),
            Command::Introduce(peer) => {
                self.introduce(now, peer);
            }
            Command::IntroduceVia(peer, introducer) => {
                if let Some(r) = self.by_introducer.get_mut(&introducer).filter(|r| r.observed().is_some()) {
                    r.introduce(now, peer);
                }
            }
            Command::Settle(peer) => self.settle(&peer),
            Command::Keepalive(keepalive) => self.set_keepalive(now, keepalive),
            Command::Topics(topics) => {
                self.topics = topics.clone();
                self.by_introducer.values_mut().for_each(|r| r.set_topics(now, topics.clone()));
            }
            Command::Refresh => self.by_introducer.values_mut().for_each(|r| r.refresh(now)),
            Command::LookupTopic(topic) => {
                if let Some(r) = self.by_introducer.values_mut().find(|r| r.observed().is_some()) {
                    r.lookup_topic(topic);
                }
            }
        }
    }
    fn handle_inbound(&mut self, inbound: Inbound) {
        if let (Payload::Envelope(kind), Some(r)) = (inbound.payload, self.by_introducer.get_mut(&inbound.src)) {
            r.handle(inbound.now, inbound.src, kind);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        for r in self.by_introducer.values_mut().filter(|r| r.poll_timeout().is_some_and(|t| t <= now)) {
            r.handle_timeout(now);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.by_introducer.values_mut().find_map(Registration::poll_transmit)
    }
    fn poll_event(&mut self) -> Option<(SocketAddr, Event)> {
        self.by_introducer.iter_mut().find_map(|(a, r)| r.poll_event().map(|e| (*a, e)))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.by_introducer.values().filter_map(Registration::poll_timeout).min()
    }
}
