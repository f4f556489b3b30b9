//! Hole punching: one [`Attempt`] per introduction.
//!
//! Both peers learn from the introducer where the other was seen, what NAT it reported
//! and a shared nonce. [`plan`] picks the candidate addresses and who sends first; the
//! attempt then sends signed punch proofs to every candidate on a steady pace. A proof
//! that arrives is answered with an acknowledging proof; a path counts as connected only
//! when an *acknowledging* proof arrives over it, i.e. when both sides have shown their
//! PeerId over that very path. After connecting the attempt lingers to acknowledge the
//! peer's late proofs (it may not have our acknowledgement yet), then ends.

use crate::identity::{verify_punch, Identity};
use crate::nat::{NatReport, NatType};
use crate::{SocketId, Transmit};
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind};
use libp2p_identity::PeerId;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub mod actor;
pub mod plan;

pub use plan::{plan, Candidate, Path, Plan, Strategy, Unpunchable};

#[derive(Debug, Clone)]
pub struct Config {
    /// Pause between rounds of proofs to every candidate.
    pub interval: Duration,
    /// Give up this long after the introduction.
    pub timeout: Duration,
    /// How long a side that should not send first waits before sending anyway.
    pub responder_delay: Duration,
    /// How long a connected attempt keeps acknowledging the peer's proofs.
    pub linger: Duration,
    /// Acknowledgements per attempt, at most: a replayed proof cannot make us a reflector.
    pub max_acks: u32,
    /// Addresses learned from proofs arriving from elsewhere than planned (peer-reflexive).
    pub max_candidates: usize,
    /// Attempts under way at once, at most: each sends up to `timeout / interval` rounds.
    pub max_attempts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(10),
            responder_delay: Duration::from_secs(1),
            linger: Duration::from_secs(10),
            max_acks: 256,
            max_candidates: 8,
            max_attempts: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connected { peer: PeerId, remote: SocketAddr, path: Path, strategy: Strategy, probes: u32, elapsed: Duration },
    Failed { peer: PeerId, reason: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub probes: u32,
    pub acks: u32,
    pub dropped_bad_proof: u32,
    pub dropped_over_ack_limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Punching,
    Connected { until: Instant },
    Done,
}

pub struct Attempt {
    config: Config,
    peer: PeerId,
    me: PeerId,
    nonce: Vec<u8>,
    socket: SocketId,
    plan: Plan,
    /// Encoded proofs, signed once: the probe and the acknowledgement.
    probe: Vec<u8>,
    ack: Vec<u8>,
    started: Instant,
    next_send: Instant,
    state: State,
    stats: Stats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Attempt {
    pub fn new(config: Config, me: &Identity, peer: PeerId, nonce: Vec<u8>, socket: SocketId, plan: Plan, now: Instant) -> Self {
        tracing::debug!(%peer, ?plan, "punching");
        let proof = |ack| encode_envelope(&pb::Envelope { kind: Some(Kind::Punch(me.punch(&nonce, &peer, ack))) });
        let next_send = if plan.send_first { now } else { now + config.responder_delay };
        Attempt {
            probe: proof(false),
            ack: proof(true),
            config,
            peer,
            me: me.peer_id(),
            nonce,
            socket,
            plan,
            started: now,
            next_send,
            state: State::Punching,
            stats: Stats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// True once the attempt has nothing more to do and can be dropped.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A punch proof arrived from `src`. Proofs that do not verify are dropped and counted.
    pub fn handle_punch(&mut self, now: Instant, src: SocketAddr, punch: &pb::Punch) {
        if self.state == State::Done {
            return;
        }
        if verify_punch(punch, &self.peer, &self.me, &self.nonce).is_err() {
            self.stats.dropped_bad_proof += 1;
            tracing::debug!(peer = %self.peer, %src, "dropped punch proof that does not verify");
            return;
        }
        tracing::debug!(peer = %self.peer, %src, ack = punch.ack, state = ?self.state, "punch proof");
        if !punch.ack {
            if self.stats.acks >= self.config.max_acks {
                self.stats.dropped_over_ack_limit += 1;
            } else {
                self.stats.acks += 1;
                self.transmits.push_back(Transmit { socket: self.socket, dst: src, payload: self.ack.clone() });
            }
            // The peer reached us from here: aim there too (its NAT may have picked a
            // port nobody observed).
            if !self.plan.candidates.iter().any(|c| c.addr == src) && self.plan.candidates.len() < self.config.max_candidates {
                self.plan.candidates.push(Candidate { addr: src, path: Path::Direct });
            }
            // A responder need not wait any longer: the peer's NAT is open toward us.
            if self.state == State::Punching && self.next_send > now {
                self.next_send = now;
            }
            return;
        }
        if self.state == State::Punching {
            let path = self.plan.candidates.iter().find(|c| c.addr == src).map_or(Path::Direct, |c| c.path);
            self.state = State::Connected { until: now + self.config.linger };
            self.events.push_back(Event::Connected {
                peer: self.peer,
                remote: src,
                path,
                strategy: self.plan.strategy,
                probes: self.stats.probes,
                elapsed: now - self.started,
            });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Punching if now >= self.started + self.config.timeout => {
                self.state = State::Done;
                let reason = format!(
                    "no authenticated answer from {} over {} candidate address(es) within {:?} ({} probes)",
                    self.peer,
                    self.plan.candidates.len(),
                    self.config.timeout,
                    self.stats.probes
                );
                self.events.push_back(Event::Failed { peer: self.peer, reason });
            }
            State::Punching if now >= self.next_send => {
                for candidate in &self.plan.candidates {
                    self.transmits.push_back(Transmit { socket: self.socket, dst: candidate.addr, payload: self.probe.clone() });
                }
                self.stats.probes += self.plan.candidates.len() as u32;
                self.next_send = now + self.config.interval;
            }
            State::Connected { until } if now >= until => self.state = State::Done,
            _ => {}
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Punching => Some(self.next_send.min(self.started + self.config.timeout)),
            State::Connected { until } => Some(until),
            State::Done => None,
        }
    }
}

/// Whether a report says the node can be reached unsolicited.
fn is_public(report: &NatReport) -> bool {
    report.nat_type() == NatType::Public
}

#[cfg(test)]
mod tests;
