//! The relay role: circuits between pairs of peers, forwarding with limits.
//!
//! A circuit is named by an introduction nonce and its two peers. It is *pending* while
//! one peer has asked for it and *ready* once both have, each from an address it proved
//! with a cookie and with a request signed by its key. Only ready circuits forward, and
//! only from a side's proven address to the other side's: the relay never sends to an
//! address that did not ask, and answers an unproven address only with a challenge
//! smaller than what arrived. A circuit is only created for an introduction this node
//! made ([`Relay::authorize`]), between the two peers it introduced: keys cost nothing to
//! make, so circuits for made-up pairs would let one host take every slot.

use super::{reason_text, requester_key, verify_request, wire, MAX_NONCE, MIN_NONCE};
use crate::bucket::TokenBucket;
use crate::cookie::Cookies;
use crate::socket::Fast;
use crate::{network_of, SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind, RelayRefusedReason};
use introducer_proto::MAX_DATAGRAM;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Limits of a relay. Rates apply to each direction of each circuit separately, so a
/// flood from one side does not eat the other side's budget.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Circuits carried at once, pending ones included.
    pub max_circuits: usize,
    /// Circuits waiting for their second side, at most (they cost memory and prove less).
    pub max_pending: usize,
    /// Circuits one peer may be a side of.
    pub max_circuits_per_peer: usize,
    /// Circuit sides one IP, and one network (/24, /48), may hold: identities cost nothing,
    /// so one host minting peers must not take every circuit.
    pub max_circuits_per_ip: usize,
    pub max_circuits_per_network: usize,
    /// Forwarded payload bytes per second per direction, sustained, and the burst.
    pub bytes_per_sec: f64,
    pub bytes_burst: f64,
    /// Forwarded datagrams per second per direction, sustained, and the burst.
    pub packets_per_sec: f64,
    pub packets_burst: f64,
    /// Forwarded payload bytes per second over all circuits together, and the burst: what
    /// the relay's operator gives away in total.
    pub total_bytes_per_sec: f64,
    pub total_bytes_burst: f64,
    /// A ready circuit closes when either side has sent nothing (data or request) this long.
    pub idle_timeout: Duration,
    /// A pending circuit closes when its second side has not asked within this long.
    pub pending_timeout: Duration,
    /// Cookies rotate this often; one from the previous period is still accepted.
    pub cookie_period: Duration,
    /// At most one rate-limit refusal per direction of a circuit this often.
    pub refusal_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_circuits: 256,
            max_pending: 64,
            max_circuits_per_peer: 8,
            max_circuits_per_ip: 8,
            max_circuits_per_network: 32,
            bytes_per_sec: 256.0 * 1024.0,
            bytes_burst: 64.0 * 1024.0,
            packets_per_sec: 500.0,
            packets_burst: 100.0,
            total_bytes_per_sec: 4.0 * 1024.0 * 1024.0,
            total_bytes_burst: 256.0 * 1024.0,
            idle_timeout: Duration::from_secs(60),
            pending_timeout: Duration::from_secs(30),
            cookie_period: Duration::from_secs(300),
            refusal_interval: Duration::from_secs(1),
        }
    }
}

/// Counts of what the relay did, refused and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub challenged: u64,
    /// Circuits created by a first side (pending).
    pub circuits_opened: u64,
    /// Circuits whose second side joined.
    pub circuits_ready: u64,
    pub circuits_closed: u64,
    pub circuits_expired: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub refused_full: u64,
    pub refused_pending: u64,
    pub refused_peer_limit: u64,
    /// Circuits refused because the requester's host or network holds its share.
    pub refused_host_limit: u64,
    pub refused_bad_request: u64,
    /// Circuits asked for an introduction this relay did not make.
    pub refused_not_introduced: u64,
    /// Rate-limit refusals actually sent (paced by `refusal_interval`).
    pub refusals_rate_limited: u64,
    /// Data over a direction's limits.
    pub dropped_rate_limited: u64,
    /// Data over the relay-wide byte budget.
    pub dropped_relay_busy: u64,
    pub dropped_malformed: u64,
    pub dropped_bad_signature: u64,
    pub dropped_unknown_circuit: u64,
    /// Data or close from an address that is no side of the circuit (a third party, a
    /// spoofed source).
    pub dropped_wrong_source: u64,
    /// Data over a circuit whose second side has not asked yet.
    pub dropped_not_ready: u64,
    /// Relay frames that came before this node served.
    pub dropped_not_serving: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A side closed it.
    ByPeer(PeerId),
    /// A side of a ready circuit went silent for `idle_timeout`.
    Idle,
    /// The second side never asked within `pending_timeout`.
    PendingTimeout,
}

/// What the node tells its relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Carry circuits from now on.
    Serve,
    /// This node introduced `peers` with `nonce`: their circuit may be created.
    Authorize { nonce: [u8; 16], peers: [PeerId; 2] },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ready { circuit: u64, peers: [PeerId; 2] },
    Closed { circuit: u64, peers: [PeerId; 2], reason: CloseReason },
    Refused { peer: PeerId, reason: RelayRefusedReason },
}

#[derive(Debug)]
struct Side {
    addr: SocketAddr,
    socket: SocketId,
    last_seen: Instant,
    packets: TokenBucket,
    bytes: TokenBucket,
    last_refusal: Option<Instant>,
}

#[derive(Debug)]
struct Circuit {
    nonce: Box<[u8]>,
    /// peers[0] asked first.
    peers: [PeerId; 2],
    sides: [Option<Side>; 2],
    created: Instant,
}

impl Circuit {
    fn ready(&self) -> bool {
        self.sides.iter().all(Option::is_some)
    }

    fn side_at(&self, src: SocketAddr) -> Option<usize> {
        (0..2).find(|&i| self.sides[i].as_ref().is_some_and(|s| s.addr == src))
    }
}

type CircuitKey = (Box<[u8]>, PeerId, PeerId);

/// Introductions remembered for circuits, at most (the broker makes a few per second per
/// peer; these last two pending timeouts).
const MAX_INTRODUCED: usize = 16_384;

fn circuit_key(nonce: &[u8], a: PeerId, b: PeerId) -> CircuitKey {
    let (lo, hi) = if a.to_bytes() <= b.to_bytes() { (a, b) } else { (b, a) };
    (nonce.into(), lo, hi)
}

pub struct Relay {
    config: RelayConfig,
    /// Off until the node serves: until then it carries nothing and answers nobody.
    serving: bool,
    cookies: Cookies,
    rng: StdRng,
    /// Ordered, so that expiry sweeps close circuits in the same order on every run.
    circuits: BTreeMap<u64, Circuit>,
    by_key: HashMap<CircuitKey, u64>,
    per_peer: HashMap<PeerId, usize>,
    /// Introductions this node made, for which circuits may be created, and when (oldest
    /// first in `introduced_order`).
    introduced: HashMap<CircuitKey, Instant>,
    introduced_order: VecDeque<(Instant, CircuitKey)>,
    pending: usize,
    total: TokenBucket,
    next_sweep: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Relay {
    pub fn new(mut config: RelayConfig, now: Instant, mut rng: StdRng) -> Self {
        // A byte budget below one datagram would forward nothing at all.
        config.bytes_burst = config.bytes_burst.max(MAX_DATAGRAM as f64);
        config.packets_burst = config.packets_burst.max(1.0);
        config.total_bytes_burst = config.total_bytes_burst.max(MAX_DATAGRAM as f64);
        let total = TokenBucket::full(config.total_bytes_per_sec, config.total_bytes_burst, now);
        Relay {
            serving: true,
            cookies: Cookies::new(b"introducer/relay", &mut rng, now, config.cookie_period),
            config,
            rng,
            circuits: BTreeMap::new(),
            by_key: HashMap::new(),
            per_peer: HashMap::new(),
            introduced: HashMap::new(),
            introduced_order: VecDeque::new(),
            pending: 0,
            total,
            next_sweep: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// A relay that carries nothing until [`Command::Serve`]: a node has one from the start
    /// and serves once it knows it is reachable.
    pub fn idle(config: RelayConfig, now: Instant, rng: StdRng) -> Self {
        Relay { serving: false, ..Relay::new(config, now, rng) }
    }

    /// Carries out what the node says.
    pub fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Serve => self.serving = true,
            Command::Authorize { nonce, peers } => self.authorize(now, &nonce, peers),
        }
    }

    /// This node introduced `peers` with `nonce`: they may ask for its circuit for a while.
    pub fn authorize(&mut self, now: Instant, nonce: &[u8], [a, b]: [PeerId; 2]) {
        let keep = self.config.pending_timeout * 2;
        let old = |at: &Instant| now.saturating_duration_since(*at) > keep;
        while self.introduced_order.front().is_some_and(|(at, _)| old(at)) || self.introduced.len() >= MAX_INTRODUCED {
            let Some((at, key)) = self.introduced_order.pop_front() else { break };
            // Only if not introduced again since (then a later entry stands for it).
            if self.introduced.get(&key) == Some(&at) {
                self.introduced.remove(&key);
            }
        }
        let key = circuit_key(nonce, a, b);
        self.introduced.insert(key.clone(), now);
        self.introduced_order.push_back((now, key));
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Circuits carried, pending ones included.
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }

    /// Circuits waiting for their second side.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// A datagram that was no introducer frame reached the relay (simulator path; the
    /// socket actor drops and counts these itself).
    pub fn count_malformed(&mut self) {
        self.stats.dropped_malformed += 1;
    }

    /// Handles a relay-bound message; other kinds are not the relay's and are ignored.
    pub fn handle(&mut self, now: Instant, socket: SocketId, src: SocketAddr, kind: Kind) {
        if !self.serving {
            self.stats.dropped_not_serving += 1;
            return;
        }
        match kind {
            Kind::RelayRequest(request) => self.on_request(now, socket, src, request),
            Kind::RelaySend(data) => self.on_data(now, src, data),
            Kind::RelayClose(close) => self.on_close(src, close.circuit),
            _ => {}
        }
    }

    fn on_request(&mut self, now: Instant, socket: SocketId, src: SocketAddr, request: pb::RelayRequest) {
        let (Some(key), Ok(target)) = (requester_key(&request), PeerId::from_bytes(&request.target)) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if !(MIN_NONCE..=MAX_NONCE).contains(&request.nonce.len()) {
            self.stats.dropped_malformed += 1;
            return;
        }
        let peer = key.to_peer_id();
        // The cookie is checked before the signature: an unproven address costs a hash,
        // not a signature verification, and earns only a challenge smaller than its request.
        if !self.cookies.check(now, src, &peer, request.cookie) {
            self.stats.challenged += 1;
            let cookie = self.cookies.mint(now, src, &peer);
            let challenge = pb::RelayChallenge { cookie, nonce: request.nonce };
            self.send(socket, src, Kind::RelayChallenge(challenge));
            return;
        }
        if !verify_request(&key, &request) {
            self.stats.dropped_bad_signature += 1;
            return;
        }
        let nonce = request.nonce;
        if target == peer {
            self.stats.refused_bad_request += 1;
            self.refuse(socket, src, peer, &nonce, 0, RelayRefusedReason::BadRequest);
            return;
        }
        match self.by_key.get(&circuit_key(&nonce, peer, target)).copied() {
            Some(id) => self.join(now, socket, src, peer, id),
            None => self.create(now, socket, src, peer, target, &nonce),
        }
    }

    fn new_side(&self, now: Instant, socket: SocketId, src: SocketAddr) -> Side {
        Side {
            addr: src,
            socket,
            last_seen: now,
            packets: TokenBucket::full(self.config.packets_per_sec, self.config.packets_burst, now),
            bytes: TokenBucket::full(self.config.bytes_per_sec, self.config.bytes_burst, now),
            last_refusal: None,
        }
    }

    fn peer_circuits(&self, peer: &PeerId) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Whether `ip`'s host or network holds its share of circuit sides (a scan: circuits
    /// are few, and sides move with NAT rebinding).
    fn host_full(&self, ip: IpAddr) -> bool {
        let sides = || self.circuits.values().flat_map(|c| c.sides.iter().flatten()).map(|s| s.addr.ip());
        sides().filter(|&s| s == ip).count() >= self.config.max_circuits_per_ip
            || sides().filter(|&s| network_of(s) == network_of(ip)).count() >= self.config.max_circuits_per_network
    }

    fn create(&mut self, now: Instant, socket: SocketId, src: SocketAddr, peer: PeerId, target: PeerId, nonce: &[u8]) {
        let key = circuit_key(nonce, peer, target);
        // Only for an introduction made here; then the peer's own limit, the reason it can
        // act on.
        let reason = if !self.introduced.contains_key(&key) {
            self.stats.refused_not_introduced += 1;
            Some(RelayRefusedReason::NotIntroduced)
        } else if self.peer_circuits(&peer) >= self.config.max_circuits_per_peer {
            self.stats.refused_peer_limit += 1;
            Some(RelayRefusedReason::PeerLimit)
        } else if self.host_full(src.ip()) {
            self.stats.refused_host_limit += 1;
            Some(RelayRefusedReason::HostLimit)
        } else if self.circuits.len() >= self.config.max_circuits {
            self.stats.refused_full += 1;
            Some(RelayRefusedReason::RelayFull)
        } else if self.pending >= self.config.max_pending {
            self.stats.refused_pending += 1;
            Some(RelayRefusedReason::TooManyPending)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.refuse(socket, src, peer, nonce, 0, reason);
            return;
        }
        let id = loop {
            let id: u64 = self.rng.gen();
            if id != 0 && !self.circuits.contains_key(&id) {
                break id;
            }
        };
        let side = self.new_side(now, socket, src);
        let circuit = Circuit { nonce: nonce.into(), peers: [peer, target], sides: [Some(side), None], created: now };
        self.circuits.insert(id, circuit);
        self.by_key.insert(circuit_key(nonce, peer, target), id);
        *self.per_peer.entry(peer).or_default() += 1;
        self.pending += 1;
        self.stats.circuits_opened += 1;
        self.next_sweep.get_or_insert(now + self.sweep_every());
        self.accepted(id, socket, src);
    }

    fn join(&mut self, now: Instant, socket: SocketId, src: SocketAddr, peer: PeerId, id: u64) {
        let limit = self.config.max_circuits_per_peer;
        let count = self.peer_circuits(&peer);
        let host_full = self.host_full(src.ip());
        let fresh = self.new_side(now, socket, src);
        let circuit = self.circuits.get_mut(&id).expect("by_key and circuits agree");
        let i = if circuit.peers[0] == peer { 0 } else { 1 };
        let was_ready = circuit.ready();
        match &mut circuit.sides[i] {
            // A refresh (the keepalive), possibly from a new address after a NAT rebinding:
            // the request is signed over a cookie bound to that address.
            Some(side) => {
                side.addr = src;
                side.socket = socket;
                side.last_seen = now;
            }
            None if count >= limit || host_full => {
                let nonce = circuit.nonce.clone();
                let reason = if count >= limit {
                    self.stats.refused_peer_limit += 1;
                    RelayRefusedReason::PeerLimit
                } else {
                    self.stats.refused_host_limit += 1;
                    RelayRefusedReason::HostLimit
                };
                self.refuse(socket, src, peer, &nonce, 0, reason);
                return;
            }
            slot @ None => {
                *slot = Some(fresh);
                *self.per_peer.entry(peer).or_default() += 1;
            }
        }
        let circuit = &self.circuits[&id];
        if circuit.ready() && !was_ready {
            self.pending -= 1;
            self.stats.circuits_ready += 1;
            self.events.push_back(Event::Ready { circuit: id, peers: circuit.peers });
            let sides: Vec<_> = circuit.sides.iter().flatten().map(|s| (s.socket, s.addr)).collect();
            for (socket, addr) in sides {
                self.accepted(id, socket, addr);
            }
        } else {
            self.accepted(id, socket, src);
        }
    }

    fn accepted(&mut self, id: u64, socket: SocketId, dst: SocketAddr) {
        let circuit = &self.circuits[&id];
        let accepted = pb::RelayAccepted {
            nonce: circuit.nonce.to_vec().into(),
            circuit: id,
            ready: circuit.ready(),
            idle_secs: self.config.idle_timeout.as_secs() as u32,
        };
        self.send(socket, dst, Kind::RelayAccepted(accepted));
    }

    /// Sent only to addresses that proved themselves with a cookie.
    fn refuse(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        peer: PeerId,
        nonce: &[u8],
        circuit: u64,
        reason: RelayRefusedReason,
    ) {
        tracing::debug!(%peer, %dst, circuit, ?reason, "relay refused");
        self.events.push_back(Event::Refused { peer, reason });
        let refused = pb::RelayRefused {
            nonce: nonce.to_vec().into(),
            circuit,
            reason: reason as i32,
            message: reason_text(reason).to_owned(),
        };
        self.send(socket, dst, Kind::RelayRefused(refused));
    }

    fn on_data(&mut self, now: Instant, src: SocketAddr, data: pb::RelayData) {
        if let Some((socket, dst)) = self.forward(now, src, data.circuit, data.payload.len()) {
            self.send(socket, dst, Kind::RelayDeliver(data));
        }
    }

    /// A datagram taken on the socket's receive path, before any decoding: a `RelaySend`
    /// in canonical form is decided here and, when it goes on, turned into its
    /// `RelayDeliver` in place — the socket sends the same buffer on. Anything else is left
    /// to the usual path ([`Fast::Pass`]), which decides the same way ([`Relay::handle`]).
    pub fn take_fast(&mut self, now: Instant, src: SocketAddr, datagram: &mut [u8]) -> Fast {
        let Some(frame) = wire::parse_send(datagram).filter(|_| self.serving) else { return Fast::Pass };
        match self.forward(now, src, frame.circuit, frame.payload_len) {
            Some((socket, dst)) => {
                wire::turn_to_deliver(datagram);
                Fast::Send(socket, dst)
            }
            None => Fast::Done,
        }
    }

    /// Whether data on `circuit` from `src` goes on, and where: counted either way, and
    /// answered with a (paced) refusal when over a limit.
    fn forward(&mut self, now: Instant, src: SocketAddr, id: u64, len: usize) -> Option<(SocketId, SocketAddr)> {
        let Some(circuit) = self.circuits.get_mut(&id) else {
            self.stats.dropped_unknown_circuit += 1;
            return None;
        };
        let Some(i) = circuit.side_at(src) else {
            self.stats.dropped_wrong_source += 1;
            return None;
        };
        let Some(to) = circuit.sides[1 - i].as_ref().map(|s| (s.socket, s.addr)) else {
            self.stats.dropped_not_ready += 1;
            return None;
        };
        let config = &self.config;
        let side = circuit.sides[i].as_mut().expect("side_at found it");
        side.last_seen = now;
        // All three are checked before any is charged: data dropped costs no budget.
        let (packets, bytes, total) =
            (side.packets.available(now), side.bytes.available(now), self.total.available(now));
        let size = len as f64;
        let over_direction = packets < 1.0 || bytes < size;
        if over_direction || total < size {
            if over_direction {
                self.stats.dropped_rate_limited += 1;
            } else {
                self.stats.dropped_relay_busy += 1;
            }
            if side.last_refusal.is_none_or(|t| now >= t + config.refusal_interval) {
                side.last_refusal = Some(now);
                let (socket, nonce, peer) = (side.socket, circuit.nonce.clone(), circuit.peers[i]);
                self.stats.refusals_rate_limited += 1;
                self.refuse(socket, src, peer, &nonce, id, RelayRefusedReason::RateLimited);
            }
            return None;
        }
        side.packets.take(1.0);
        side.bytes.take(size);
        self.total.take(size);
        self.stats.forwarded_packets += 1;
        self.stats.forwarded_bytes += len as u64;
        Some(to)
    }

    /// Whether datagrams or events wait to be polled (after [`Relay::take_fast`], whose
    /// refusals its driver must send).
    pub fn has_output(&self) -> bool {
        !self.transmits.is_empty() || !self.events.is_empty()
    }

    fn on_close(&mut self, src: SocketAddr, id: u64) {
        let Some(circuit) = self.circuits.get(&id) else {
            self.stats.dropped_unknown_circuit += 1;
            return;
        };
        let Some(i) = circuit.side_at(src) else {
            self.stats.dropped_wrong_source += 1;
            return;
        };
        let by = circuit.peers[i];
        self.stats.circuits_closed += 1;
        let circuit = self.remove(id, CloseReason::ByPeer(by));
        if let Some(other) = &circuit.sides[1 - i] {
            self.send(other.socket, other.addr, Kind::RelayClosed(pb::RelayClose { circuit: id }));
        }
    }

    fn remove(&mut self, id: u64, reason: CloseReason) -> Circuit {
        let circuit = self.circuits.remove(&id).expect("removing a known circuit");
        self.by_key.remove(&circuit_key(&circuit.nonce, circuit.peers[0], circuit.peers[1]));
        if !circuit.ready() {
            self.pending -= 1;
        }
        for (peer, side) in circuit.peers.iter().zip(&circuit.sides) {
            if side.is_some() {
                if let Some(n) = self.per_peer.get_mut(peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_peer.remove(peer);
                    }
                }
            }
        }
        tracing::debug!(circuit = id, ?reason, "relay circuit closed");
        self.events.push_back(Event::Closed { circuit: id, peers: circuit.peers, reason });
        circuit
    }

    fn sweep_every(&self) -> Duration {
        (self.config.idle_timeout.min(self.config.pending_timeout) / 4).max(Duration::from_millis(100))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        let (idle, pending) = (self.config.idle_timeout, self.config.pending_timeout);
        let expired: Vec<(u64, CloseReason)> = self
            .circuits
            .iter()
            .filter_map(|(&id, c)| {
                if !c.ready() {
                    (c.created + pending <= now).then_some((id, CloseReason::PendingTimeout))
                } else {
                    c.sides.iter().flatten().any(|s| s.last_seen + idle <= now).then_some((id, CloseReason::Idle))
                }
            })
            .collect();
        for (id, reason) in expired {
            self.stats.circuits_expired += 1;
            let circuit = self.remove(id, reason);
            // Tell whoever may still be there; these addresses asked for the circuit.
            for side in circuit.sides.iter().flatten() {
                self.send(side.socket, side.addr, Kind::RelayClosed(pb::RelayClose { circuit: id }));
            }
        }
        self.next_sweep = (!self.circuits.is_empty()).then(|| now + self.sweep_every());
    }

    fn send(&mut self, socket: SocketId, dst: SocketAddr, kind: Kind) {
        self.transmits.push_back(Transmit::envelope(socket, dst, kind));
    }
}
