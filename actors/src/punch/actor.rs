//! The punch actor: one [`Attempt`] per introduction, found by its nonce.

use super::{plan, strategy, Attempt, Birthday, Config, Event, Unpunchable, Walk};
use crate::driver::{MachineActor, Protocol};
use crate::identity::Identity;
use crate::nat::NatReport;
use crate::registration::Introduced;
use crate::session::noise::Handshake;
use crate::socket::{Inbound, Payload};
use crate::{SocketId, Transmit};
use introducer_proto::pb::envelope::Kind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

pub type PunchActor = MachineActor<Attempts>;

/// What the node tells its punch role.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Punch toward an introduced peer (or relay it: a refusal comes back as
    /// [`Event::Refused`]). `nat` is ours.
    Start { nat: NatReport, introduced: Box<Introduced> },
    /// The birthday pool is bound: these sockets.
    Pool(Vec<SocketId>),
}

/// Where the birthday pool's sockets live in the node's socket numbering (clear of the
/// primary, the RFC 5780 alternates and the probe's sockets).
pub fn pool_socket(i: u16) -> SocketId {
    SocketId(1000 + i)
}

/// Every attempt under way (and lingering after success).
pub struct Attempts {
    config: Config,
    me: Identity,
    /// Birthday sockets, bound once this node knows it is behind a hard NAT.
    pool: Vec<SocketId>,
    /// Keys every attempt's path tokens.
    secret: [u8; 32],
    /// Draws the handshakes' ephemeral keys.
    rng: StdRng,
    by_nonce: BTreeMap<Vec<u8>, Attempt>,
    /// The pool socket the next new mapping is shown from.
    next_new_mapping: usize,
    /// Introductions waiting for the pool to be bound.
    waiting_for_pool: Vec<(NatReport, Introduced)>,
    /// When an attempt last used the pool (or it was bound).
    pool_used: Option<Instant>,
    events: VecDeque<Event>,
    /// Proofs for no attempt of ours.
    pub dropped_unknown_nonce: u64,
}

impl Attempts {
    /// `rng` draws the key of the path tokens and the handshakes' ephemeral keys: from the
    /// OS on a real node (seeded on the simulator).
    pub fn new(config: Config, me: Identity, mut rng: StdRng) -> Self {
        Attempts {
            config,
            me,
            pool: Vec::new(),
            secret: rng.gen(),
            rng,
            by_nonce: BTreeMap::new(),
            next_new_mapping: 0,
            waiting_for_pool: Vec::new(),
            pool_used: None,
            events: VecDeque::new(),
            dropped_unknown_nonce: 0,
        }
    }

    /// The sockets the driver bound for birthday punching (kept for later attempts until
    /// idle); introductions that waited for them start now.
    pub fn set_pool(&mut self, now: Instant, pool: Vec<SocketId>) {
        (self.pool, self.pool_used) = (pool, Some(now));
        for (mine, introduced) in std::mem::take(&mut self.waiting_for_pool) {
            self.start_or_refuse(now, &mine, introduced);
        }
    }

    /// Whether a live attempt sends from the pool (then it is in use, not idle).
    fn pool_in_use(&self) -> bool {
        self.by_nonce.values().any(Attempt::uses_pool)
    }

    /// When an open pool nobody uses is closed.
    fn idle_deadline(&self) -> Option<Instant> {
        let used = self.pool_used.filter(|_| !self.pool.is_empty() && !self.pool_in_use())?;
        Some(used + self.config.pool_idle)
    }

    /// Starts punching toward an introduced peer, or says why not.
    fn start_or_refuse(&mut self, now: Instant, mine: &NatReport, introduced: Introduced) {
        let (peer, initiator) = (introduced.peer.peer_id, introduced.initiator);
        if let Err(why) = self.start(now, mine, introduced) {
            self.events.push_back(Event::Refused { peer, initiator, why });
        }
    }

    /// Starts punching toward an introduced peer, if this node's strategies can.
    pub fn start(&mut self, now: Instant, mine: &NatReport, introduced: Introduced) -> Result<(), Unpunchable> {
        // The introducer repeats an introduction until the punch settles: same nonce, same
        // attempt; a repeat may carry a new mapping the peer showed.
        if let Some(attempt) = self.by_nonce.get_mut(&introduced.nonce) {
            if introduced.fresh {
                attempt.peer_moved(now, introduced.peer_public);
            }
            return Ok(());
        }
        if self.by_nonce.len() >= self.config.max_attempts {
            // An attempt lingering after success only acknowledges late proofs: it gives its
            // slot up to a new introduction.
            let lingering = self.by_nonce.iter().find(|(_, a)| !a.is_punching()).map(|(n, _)| n.clone());
            match lingering {
                Some(nonce) => drop(self.by_nonce.remove(&nonce)),
                None => return Err(Unpunchable::Busy(self.by_nonce.len())),
            }
        }
        // Shares count the attempts still punching: a host whose peers connected (and
        // linger) is not held back.
        let ip = introduced.peer_public.ip();
        let punching = || self.by_nonce.values().filter(|a| a.is_punching());
        let from_ip = punching().filter(|a| a.peer_ip == ip).count();
        let from_network = punching().filter(|a| crate::network_of(a.peer_ip) == crate::network_of(ip)).count();
        if from_ip >= self.config.max_attempts_per_ip || from_network >= self.config.max_attempts_per_network {
            return Err(Unpunchable::Busy(from_ip.max(from_network)));
        }
        let peer_nat = introduced.peer.record.nat.as_ref().and_then(|n| NatReport::try_from(n).ok());
        // A peer that could not probe has an unknown mapping, so it is taken as hard, at
        // the address the introducer saw.
        let peer_nat = peer_nat.unwrap_or(NatReport {
            public_addr: introduced.peer_public,
            no_nat: false,
            mapping: None,
            filtering: None,
            allocation: None,
        });
        let private: Vec<SocketAddr> =
            introduced.peer.record.private_addrs.iter().filter_map(|a| a.try_into().ok()).collect();
        let same_ip = mine.public_addr.ip() == introduced.peer_public.ip();
        let started = Event::Started {
            peer: introduced.peer.peer_id,
            initiator: introduced.initiator,
            strategy: strategy(mine, &peer_nat, same_ip),
            ours: *mine,
            theirs: peer_nat,
        };
        let plan = match plan(mine, &peer_nat, introduced.peer_public, &private) {
            Ok(plan) => plan,
            Err(why) => {
                // What the plan would have been explains the refusal.
                self.events.push_back(started);
                return Err(why);
            }
        };
        // The hard side sends from its pool; a walk of both sides shows its new mapping from it.
        let walks_both =
            matches!(plan.birthday, Some(Birthday::Spray { predict: Some(p), .. }) if p.walk == Walk::Both);
        let needs_pool = walks_both || matches!(plan.birthday, Some(Birthday::Pool { .. }));
        if needs_pool && self.pool.is_empty() {
            if self.waiting_for_pool.iter().any(|(_, w)| w.nonce == introduced.nonce) {
                return Ok(());
            }
            if self.waiting_for_pool.len() >= self.config.max_attempts {
                return Err(Unpunchable::NoPool);
            }
            if self.waiting_for_pool.is_empty() {
                self.events.push_back(Event::NeedPool);
            }
            self.waiting_for_pool.push((*mine, introduced));
            return Ok(());
        }
        if matches!(plan.birthday, Some(Birthday::Spray { .. })) {
            let spraying = self.by_nonce.values().filter(|a| a.is_spraying()).count();
            if spraying >= self.config.max_spraying {
                return Err(Unpunchable::Busy(spraying));
            }
        }
        let (peer, nonce) = (introduced.peer.peer_id, introduced.nonce.clone());
        let ephemeral = StdRng::from_rng(&mut self.rng).expect("StdRng never fails");
        let handshake = Handshake::punch(&self.me, &peer, &nonce, introduced.initiator, ephemeral)
            .map_err(|_| Unpunchable::NoKey)?;
        let mut attempt = Attempt::new(
            self.config.clone(),
            &self.me,
            peer,
            nonce,
            introduced.initiator,
            plan,
            &self.pool,
            &self.secret,
            handshake,
            now,
        );
        if walks_both {
            // From a pool socket not used for this lately: the pool is far larger than the
            // attempts a NAT mapping outlives.
            if let Some(&socket) = self.pool.get(self.next_new_mapping % self.pool.len().max(1)) {
                self.next_new_mapping += 1;
                attempt.show_new_mapping(&self.me, socket, introduced.introducer);
            }
            if introduced.fresh {
                attempt.peer_moved(now, introduced.peer_public);
            }
        }
        attempt.peer_ip = ip;
        self.by_nonce.insert(introduced.nonce, attempt);
        self.events.push_back(started);
        Ok(())
    }
}

impl Protocol for Attempts {
    type Event = Event;
    type Command = Command;
    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Start { nat, introduced } => self.start_or_refuse(now, &nat, *introduced),
            Command::Pool(sockets) => self.set_pool(now, sockets),
        }
    }
    fn handle_inbound(&mut self, inbound: Inbound) {
        let Payload::Envelope(Kind::Punch(punch)) = inbound.payload else { return };
        match self.by_nonce.get_mut(&punch.nonce[..]) {
            Some(attempt) => attempt.handle_punch(inbound.now, inbound.socket, inbound.src, &punch),
            None => {
                self.dropped_unknown_nonce += 1;
                tracing::debug!(src = %inbound.src, "dropped punch proof for no attempt");
            }
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.pool_in_use() {
            self.pool_used = Some(now);
        }
        for attempt in self.by_nonce.values_mut().filter(|a| a.poll_timeout().is_some_and(|t| t <= now)) {
            attempt.handle_timeout(now);
        }
        if self.idle_deadline().is_some_and(|t| now >= t) {
            tracing::debug!(sockets = self.pool.len(), "birthday pool idle: closing it");
            self.pool.clear();
            self.events.push_back(Event::PoolIdle);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.by_nonce.values_mut().find_map(Attempt::poll_transmit)
    }
    fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        let event = self.by_nonce.values_mut().find_map(Attempt::poll_event);
        if event.is_none() {
            self.by_nonce.retain(|_, a| !a.is_done());
        }
        event
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.by_nonce.values().filter_map(Attempt::poll_timeout).chain(self.idle_deadline()).min()
    }
}
