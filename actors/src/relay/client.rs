//! One peer's side of one relay circuit.
//!
//! Asks the relay for the circuit of an introduction (retransmitting, answering the cookie
//! challenge), waits until the other peer has asked too, then wraps outgoing session
//! datagrams as `RelaySend` and unwraps `RelayDeliver`. The signed request, re-sent, is
//! the circuit's keepalive (and refreshes our NAT mapping toward the relay); its answer
//! tells us the relay is still there.
//!
//! Only frames from the relay's address that name our nonce or circuit are taken: an
//! off-path attacker knows the relay's address but not the nonce or the 64-bit circuit id.

use super::sign_request;
use crate::backoff::Backoff;
use crate::identity::Identity;
use crate::{SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind, RelayRefusedReason};
use introducer_proto::MAX_DATAGRAM;
use libp2p_identity::PeerId;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Framing a payload costs in a `RelaySend`: marker byte, envelope field tag and length,
/// circuit id, payload tag and length (with room to spare).
pub const OVERHEAD: usize = 24;
/// Largest payload one relayed datagram carries.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// First retransmission of an unanswered request; doubles up to `max_retransmit`.
    pub retransmit: Duration,
    pub max_retransmit: Duration,
    /// While the relay holds the circuit for the other peer, re-ask this often (so a lost
    /// "ready" costs this much, not the circuit).
    pub pending_resend: Duration,
    /// Give up when the circuit is not ready this long after asking.
    pub setup_timeout: Duration,
    /// Re-send the request this often once ready: the circuit's keepalive and our NAT
    /// mapping's toward the relay; must stay inside both the relay's idle timeout and the
    /// mapping lifetime.
    pub keepalive: Duration,
    /// Declare the circuit dead after hearing nothing from the relay this long.
    pub dead_after: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            retransmit: Duration::from_millis(250),
            max_retransmit: Duration::from_secs(2),
            pending_resend: Duration::from_secs(1),
            setup_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(15),
            dead_after: Duration::from_secs(50),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Both peers asked; data flows.
    Ready { circuit: u64 },
    /// A datagram from the other peer.
    Data(Vec<u8>),
    /// The relay will not carry this circuit (terminal).
    Refused { reason: RelayRefusedReason, message: String },
    /// The relay dropped some of our data over its rate limit (the circuit stays).
    Throttled,
    /// The circuit is gone (terminal).
    Closed { reason: CircuitClosed },
}

/// Why a circuit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CircuitClosed {
    #[error("the relay did not answer")]
    NoAnswer,
    #[error("the other peer did not ask the relay for the circuit")]
    PeerAbsent,
    #[error("the relay stopped answering")]
    Silent,
    #[error("the relay closed the circuit")]
    ByRelay,
    #[error("closed")]
    ByUs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Asking; no answer yet.
    Requesting,
    /// The relay holds the circuit; the other peer has not asked yet.
    Waiting,
    Ready,
    Refused,
    Closed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests_sent: u64,
    pub challenges: u64,
    pub datagrams_out: u64,
    pub datagrams_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub throttled: u64,
    /// Frames not from the relay, or naming another nonce or circuit.
    pub dropped_foreign: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("relay circuit is not ready")]
    NotReady,
    #[error("datagram of {0} bytes exceeds the {MAX_PAYLOAD} byte relayed payload limit")]
    TooLarge(usize),
    #[error("relay circuit is closed")]
    Closed,
}

pub struct RelayClient {
    config: ClientConfig,
    identity: Identity,
    socket: SocketId,
    relay: SocketAddr,
    peer: PeerId,
    nonce: Vec<u8>,
    request: pb::RelayRequest,
    circuit: Option<u64>,
    state: State,
    /// Retransmissions while requesting (a state never returned to).
    backoff: Backoff,
    /// The keepalive period: the configured one, or less if the relay's idle timeout asks.
    keepalive: Duration,
    next_send: Option<Instant>,
    /// When asking started (or restarted, after the relay lost the circuit).
    asked: Instant,
    last_rx: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl RelayClient {
    /// Starts asking `relay` for the circuit with `peer` of the introduction `nonce`.
    pub fn new(
        config: ClientConfig,
        identity: Identity,
        socket: SocketId,
        relay: SocketAddr,
        peer: PeerId,
        nonce: &[u8],
        now: Instant,
    ) -> Self {
        let request = sign_request(&identity, &peer, nonce, 0);
        let mut client = RelayClient {
            keepalive: config.keepalive,
            backoff: Backoff::new(config.retransmit).capped(config.max_retransmit),
            config,
            identity,
            socket,
            relay,
            peer,
            nonce: nonce.to_vec(),
            request,
            circuit: None,
            state: State::Requesting,
            next_send: None,
            asked: now,
            last_rx: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        };
        client.ask(now);
        client
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    pub fn circuit(&self) -> Option<u64> {
        self.circuit
    }

    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// The introduction nonce that names the circuit.
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn terminal(&self) -> bool {
        matches!(self.state, State::Refused | State::Closed)
    }

    /// Sends the (signed) request and schedules the next one for the current state.
    fn ask(&mut self, now: Instant) {
        self.transmits.push_back(Transmit::envelope(self.socket, self.relay, Kind::RelayRequest(self.request.clone())));
        self.stats.requests_sent += 1;
        self.next_send = match self.state {
            State::Requesting => Some(self.backoff.next(now)),
            State::Waiting => Some(now + self.config.pending_resend),
            State::Ready => Some(now + self.keepalive),
            State::Refused | State::Closed => return,
        };
    }

    fn finish(&mut self, state: State, event: Event) {
        self.state = state;
        self.next_send = None;
        self.events.push_back(event);
    }

    /// Wraps one datagram for the other peer.
    pub fn send(&mut self, _now: Instant, payload: &[u8]) -> Result<(), SendError> {
        match self.state {
            State::Ready => {}
            State::Requesting | State::Waiting => return Err(SendError::NotReady),
            State::Refused | State::Closed => return Err(SendError::Closed),
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(SendError::TooLarge(payload.len()));
        }
        let circuit = self.circuit.expect("ready circuits have an id");
        let data = pb::RelayData { circuit, payload: payload.to_vec().into() };
        self.transmits.push_back(Transmit::envelope(self.socket, self.relay, Kind::RelaySend(data)));
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += payload.len() as u64;
        Ok(())
    }

    /// Tears the circuit down (telling the relay, which tells the other peer).
    pub fn close(&mut self, _now: Instant) {
        if self.terminal() {
            return;
        }
        if let Some(circuit) = self.circuit {
            let close = pb::RelayClose { circuit };
            self.transmits.push_back(Transmit::envelope(self.socket, self.relay, Kind::RelayClose(close)));
        }
        self.finish(State::Closed, Event::Closed { reason: CircuitClosed::ByUs });
    }

    /// Handles a frame from a relay; other kinds are ignored.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, kind: Kind) {
        if super::to_relay(&kind) != Some(false) {
            return;
        }
        if src != self.relay || self.terminal() {
            self.stats.dropped_foreign += 1;
            return;
        }
        match kind {
            Kind::RelayChallenge(challenge) if challenge.nonce[..] == self.nonce[..] => {
                self.stats.challenges += 1;
                // Re-sign only for a new cookie: a repeated (or spoofed, repeated) challenge
                // costs no signature and no datagram.
                if challenge.cookie != self.request.cookie {
                    self.request = sign_request(&self.identity, &self.peer, &self.nonce, challenge.cookie);
                    self.ask(now);
                }
            }
            Kind::RelayAccepted(accepted) if accepted.nonce[..] == self.nonce[..] && accepted.circuit != 0 => {
                self.last_rx = now;
                let same_circuit = self.circuit == Some(accepted.circuit);
                self.circuit = Some(accepted.circuit);
                if accepted.idle_secs > 0 {
                    // Three keepalives per idle period of the relay, so one lost costs nothing.
                    let idle = Duration::from_secs(accepted.idle_secs.into());
                    self.keepalive = self.config.keepalive.min(idle / 3).max(Duration::from_secs(1));
                }
                match (self.state, accepted.ready) {
                    (State::Ready, true) => {}
                    // A late answer to a request sent before the other peer asked (reordered
                    // on the way): stale news about the very circuit that is ready now.
                    (State::Ready, false) if same_circuit => {}
                    (_, true) => {
                        self.state = State::Ready;
                        self.next_send = Some(now + self.keepalive);
                        self.events.push_back(Event::Ready { circuit: accepted.circuit });
                    }
                    (State::Waiting, false) => {}
                    (previous, false) => {
                        // First answer, or the relay lost the circuit and holds a new one
                        // for the other peer's return: wait for it again.
                        if previous == State::Ready {
                            self.asked = now;
                        }
                        self.state = State::Waiting;
                        self.next_send = Some(now + self.config.pending_resend);
                    }
                }
            }
            Kind::RelayRefused(refused)
                if refused.nonce[..] == self.nonce[..]
                    || (refused.circuit != 0 && Some(refused.circuit) == self.circuit) =>
            {
                let reason = RelayRefusedReason::try_from(refused.reason).unwrap_or(RelayRefusedReason::Unknown);
                if reason == RelayRefusedReason::RateLimited {
                    self.stats.throttled += 1;
                    self.events.push_back(Event::Throttled);
                } else {
                    self.finish(State::Refused, Event::Refused { reason, message: refused.message });
                }
            }
            Kind::RelayDeliver(data) if self.state == State::Ready && Some(data.circuit) == self.circuit => {
                self.last_rx = now;
                self.stats.datagrams_in += 1;
                self.stats.bytes_in += data.payload.len() as u64;
                self.events.push_back(Event::Data(data.payload.to_vec()));
            }
            Kind::RelayClosed(close) if close.circuit != 0 && Some(close.circuit) == self.circuit => {
                self.finish(State::Closed, Event::Closed { reason: CircuitClosed::ByRelay });
            }
            _ => self.stats.dropped_foreign += 1,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Requesting | State::Waiting => Some(self.asked + self.config.setup_timeout),
            State::Ready => Some(self.last_rx + self.config.dead_after),
            State::Refused | State::Closed => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|d| d <= now) {
            let reason = match self.state {
                State::Requesting => CircuitClosed::NoAnswer,
                State::Waiting => CircuitClosed::PeerAbsent,
                _ => CircuitClosed::Silent,
            };
            self.finish(State::Closed, Event::Closed { reason });
            return;
        }
        if self.next_send.is_some_and(|t| t <= now) {
            self.ask(now);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_send, self.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
