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
    /// When the public path answers first but LAN candidates exist (peers behind one NAT
    /// that hairpins), how long to wait for a LAN answer, which is the better path.
    pub local_grace: Duration,
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
            local_grace: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Our proof was acknowledged over `remote`. `proven` lists every address the peer
    /// proved itself over so far; the `initiator` (the side that asked for the
    /// introduction) controls which path the session uses, the other side follows.
    Connected {
        peer: PeerId,
        remote: SocketAddr,
        proven: Vec<SocketAddr>,
        initiator: bool,
        path: Path,
        strategy: Strategy,
        probes: u32,
        elapsed: Duration,
    },
    /// After connecting, the peer proved itself over one more address.
    PathProven {
        peer: PeerId,
        addr: SocketAddr,
    },
    Failed {
        peer: PeerId,
        reason: String,
    },
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
    initiator: bool,
    plan: Plan,
    /// Addresses the peer proved itself over, in order of first proof.
    proven: Vec<SocketAddr>,
    /// Encoded proofs, signed once: the probe and the acknowledgement.
    probe: Vec<u8>,
    ack: Vec<u8>,
    started: Instant,
    next_send: Instant,
    /// A public path that answered while LAN candidates were still pending, and until when
    /// to wait for one of those.
    grace: Option<(SocketAddr, Instant)>,
    state: State,
    stats: Stats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Attempt {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        me: &Identity,
        peer: PeerId,
        nonce: Vec<u8>,
        socket: SocketId,
        initiator: bool,
        plan: Plan,
        now: Instant,
    ) -> Self {
        tracing::debug!(%peer, ?plan, initiator, "punching");
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
            initiator,
            plan,
            proven: Vec::new(),
            started: now,
            next_send,
            grace: None,
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
        if !self.proven.contains(&src) && self.proven.len() < self.config.max_candidates {
            self.proven.push(src);
            if matches!(self.state, State::Connected { .. }) {
                self.events.push_back(Event::PathProven { peer: self.peer, addr: src });
            }
        }
        if !punch.ack {
            if self.stats.acks >= self.config.max_acks {
                self.stats.dropped_over_ack_limit += 1;
            } else {
                self.stats.acks += 1;
                self.transmits.push_back(Transmit { socket: self.socket, dst: src, payload: self.ack.clone() });
            }
            // The peer reached us from here: aim there too (its NAT may have picked a
            // port nobody observed).
            if !self.plan.candidates.iter().any(|c| c.addr == src)
                && self.plan.candidates.len() < self.config.max_candidates
            {
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
            let lan_pending = self.plan.candidates.iter().any(|c| c.path == Path::Local);
            match (path, lan_pending) {
                (Path::Direct, true) => {
                    self.grace.get_or_insert((src, now + self.config.local_grace));
                }
                _ => self.connect(now, src, path),
            }
        }
    }

    fn connect(&mut self, now: Instant, remote: SocketAddr, path: Path) {
        self.state = State::Connected { until: now + self.config.linger };
        self.events.push_back(Event::Connected {
            peer: self.peer,
            remote,
            proven: self.proven.clone(),
            initiator: self.initiator,
            path,
            strategy: self.plan.strategy,
            probes: self.stats.probes,
            elapsed: now - self.started,
        });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((remote, until)) = self.grace.filter(|_| self.state == State::Punching) {
            if now >= until {
                return self.connect(now, remote, Path::Direct);
            }
        }
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
                    self.transmits.push_back(Transmit {
                        socket: self.socket,
                        dst: candidate.addr,
                        payload: self.probe.clone(),
                    });
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
            State::Punching => {
                let grace = self.grace.map(|(_, until)| until);
                grace.into_iter().chain([self.next_send, self.started + self.config.timeout]).min()
            }
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
