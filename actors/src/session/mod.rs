//! A connected peer: datagrams in and out over the punched path, round-trip pings, and
//! keepalives that hold both NATs' mappings open.
//!
//! Only datagrams from addresses the peer proved itself over are taken; anything else is
//! dropped and counted. When several paths were proven (a LAN and a hairpin path, say),
//! the side that asked for the introduction controls which one carries the session: the
//! other side answers over whichever proven path the controlling side last used. End-to-end
//! encryption comes with the relay work; until then the proven path is the only
//! authentication of data.

use crate::punch::{Path, Strategy};
use crate::{SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::MAX_DATAGRAM;
use libp2p_identity::PeerId;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub mod actor;
pub mod seal;

use seal::{OpenError, Seal, Sealed};

#[derive(Debug, Clone)]
pub struct Config {
    /// Send something at least this often; must stay inside the NAT mapping lifetime.
    pub keepalive: Duration,
    /// Declare the peer gone after this long without hearing from it.
    pub idle_timeout: Duration,
    /// Pings awaiting a pong, at most; older ones are forgotten.
    pub max_pings_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { keepalive: Duration::from_secs(10), idle_timeout: Duration::from_secs(35), max_pings_in_flight: 64 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Pong {
        seq: u64,
        rtt: Duration,
    },
    Data(Vec<u8>),
    Closed {
        reason: Closed,
    },
    /// A relayed session is up: the relay carries the circuit.
    Relayed {
        relay: SocketAddr,
    },
    /// The relay refused or dropped the circuit before it carried anything.
    RelayFailed {
        error: RelayError,
    },
    /// A ping or datagram the user gave could not be sent.
    NotSent {
        error: SendError,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    #[error("no traffic from the peer for {0:?}")]
    Idle(Duration),
    #[error("relay circuit closed: {0}")]
    Circuit(crate::relay::client::CircuitClosed),
}

/// Why a relay did not carry a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the relay refused: {}", crate::relay::reason_text(*.0))]
    Refused(introducer_proto::pb::RelayRefusedReason),
    #[error("{0}")]
    Closed(crate::relay::client::CircuitClosed),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub dropped_wrong_source: u64,
    pub dropped_unsolicited_pong: u64,
    /// Data that did not authenticate, or came again.
    pub dropped_forged: u64,
    pub dropped_replayed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("datagram of {0} bytes exceeds the payload limit ({MAX} bytes, less through a relay)")]
    TooLarge(usize),
    #[error("session is closed")]
    Closed,
}

/// What a punch proved, and what a session opens over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenPath {
    pub peer: PeerId,
    /// Our socket the path runs from.
    pub socket: SocketId,
    /// Where to send.
    pub remote: SocketAddr,
    /// Every address the peer proved itself over (traffic is taken from any of them).
    pub proven: Vec<SocketAddr>,
    /// The side that asked for the introduction picks the path; the other follows it.
    pub controlling: bool,
    pub path: Path,
    pub strategy: Strategy,
}

/// The sequence number of keepalive pings: their pongs are nobody's business.
const KEEPALIVE_SEQ: u64 = u64::MAX;

/// Largest payload over a path: a relay wraps it, which costs room.
fn max_payload(path: Path) -> usize {
    if path == Path::Relayed {
        MAX - crate::relay::client::OVERHEAD
    } else {
        MAX
    }
}

/// Payload bytes that fit one datagram after framing and sealing.
pub const MAX: usize = MAX_DATAGRAM - 16 - seal::OVERHEAD;

pub struct Session {
    config: Config,
    peer: PeerId,
    socket: SocketId,
    remote: SocketAddr,
    /// Addresses the peer proved itself over (the remote among them).
    proven: Vec<SocketAddr>,
    controlling: bool,
    path: Path,
    strategy: Strategy,
    last_rx: Instant,
    last_tx: Instant,
    next_seq: u64,
    pings: HashMap<u64, Instant>,
    closed: bool,
    /// Largest payload `send_data` takes (less through a relay, which wraps it).
    max_payload: usize,
    /// Data is sealed with it and opened with it: the peer's keys, our epoch.
    seal: Seal,
    stats: Stats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Session {
    pub fn set_keepalive(&mut self, keepalive: Duration) {
        self.config.keepalive = keepalive;
    }

    /// A session over `opened`; `seal` holds the keys shared with the peer.
    pub fn new(config: Config, opened: ProvenPath, seal: Seal, now: Instant) -> Self {
        let ProvenPath { peer, socket, remote, mut proven, controlling, path, strategy } = opened;
        tracing::debug!(%peer, %remote, ?proven, controlling, ?path, "session open");
        if !proven.contains(&remote) {
            proven.push(remote);
        }
        Session {
            config,
            peer,
            socket,
            remote,
            proven,
            controlling,
            path,
            strategy,
            last_rx: now,
            last_tx: now,
            next_seq: 0,
            pings: HashMap::new(),
            closed: false,
            max_payload: max_payload(path),
            seal,
            stats: Stats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
    /// Every address the peer proved itself over.
    pub fn proven(&self) -> &[SocketAddr] {
        &self.proven
    }
    /// Moves the session onto a newly proven path (a relayed session upgraded to direct),
    /// keeping everything in flight: sequence numbers, pings awaiting pongs, counters. The
    /// old path stays accepted, so what is still on its way along it arrives.
    pub fn move_to(&mut self, opened: ProvenPath) {
        let ProvenPath { socket, remote, proven, controlling, path, strategy, .. } = opened;
        tracing::debug!(peer = %self.peer, from = %self.remote, to = %remote, ?path, "session moves");
        for addr in proven.into_iter().chain([remote]) {
            self.add_path(addr);
        }
        self.socket = socket;
        self.remote = remote;
        self.controlling = controlling;
        self.path = path;
        self.strategy = strategy;
        self.max_payload = max_payload(path);
    }

    /// Takes traffic from one more address the peer proved itself over.
    pub fn add_path(&mut self, addr: SocketAddr) {
        if !self.proven.contains(&addr) {
            self.proven.push(addr);
        }
    }
    pub fn path(&self) -> Path {
        self.path
    }
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Ends the session (its relay circuit closed, say), reporting why.
    pub fn close(&mut self, reason: Closed) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(Event::Closed { reason });
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn send(&mut self, now: Instant, kind: Kind) {
        self.last_tx = now;
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit::envelope(self.socket, self.remote, kind));
    }

    /// Sends a ping; its pong comes back as [`Event::Pong`] with this sequence number.
    pub fn ping(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.pings.len() >= self.config.max_pings_in_flight {
            let oldest = *self.pings.keys().min().expect("map is full");
            self.pings.remove(&oldest);
        }
        self.pings.insert(seq, now);
        self.send(now, Kind::Ping(pb::Ping { seq }));
        seq
    }

    pub fn send_data(&mut self, now: Instant, payload: &[u8]) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if payload.len() > self.max_payload {
            return Err(SendError::TooLarge(payload.len()));
        }
        let Sealed { epoch, counter, bytes } = self.seal.seal(payload);
        self.send(now, Kind::Data(pb::Data { payload: bytes.into(), epoch, counter }));
        Ok(())
    }

    /// Handles session traffic from `src`.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, kind: Kind) {
        if !self.proven.contains(&src) || self.closed {
            self.stats.dropped_wrong_source += 1;
            return;
        }
        if !self.controlling && src != self.remote {
            tracing::debug!(peer = %self.peer, from = %self.remote, to = %src, "following the controlling side's path");
            self.remote = src;
        }
        self.last_rx = now;
        self.stats.datagrams_in += 1;
        match kind {
            Kind::Ping(ping) => self.send(now, Kind::Pong(pb::Pong { seq: ping.seq })),
            Kind::Pong(pong) => match self.pings.remove(&pong.seq) {
                Some(sent) => self.events.push_back(Event::Pong { seq: pong.seq, rtt: now - sent }),
                None if pong.seq == KEEPALIVE_SEQ => {}
                None => self.stats.dropped_unsolicited_pong += 1,
            },
            Kind::Data(data) => {
                let sealed = Sealed { epoch: data.epoch, counter: data.counter, bytes: data.payload.to_vec() };
                match self.seal.open(&sealed) {
                    Ok(payload) => self.events.push_back(Event::Data(payload)),
                    Err(OpenError::Forged) => self.stats.dropped_forged += 1,
                    Err(OpenError::Replayed) => self.stats.dropped_replayed += 1,
                }
            }
            _ => {}
        }
    }

    /// Any authenticated sign of life from the peer (a late punch proof) counts as traffic.
    pub fn touch(&mut self, now: Instant) {
        self.last_rx = now;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if now >= self.last_rx + self.config.idle_timeout {
            self.closed = true;
            self.events.push_back(Event::Closed { reason: Closed::Idle(self.config.idle_timeout) });
            return;
        }
        if now >= self.last_tx + self.config.keepalive {
            self.send(now, Kind::Ping(pb::Ping { seq: KEEPALIVE_SEQ }));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.closed).then(|| (self.last_tx + self.config.keepalive).min(self.last_rx + self.config.idle_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use introducer_proto::frame::{self, Decoded};

    fn kind(t: &Transmit) -> Kind {
        match frame::decode(&t.payload).unwrap() {
            Decoded::Envelope(e) => e.kind.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn pair(now: Instant) -> (Session, Session, SocketAddr, SocketAddr) {
        let (a, b): (SocketAddr, SocketAddr) = ("203.0.113.1:1".parse().unwrap(), "198.51.100.2:2".parse().unwrap());
        let s = |me: u64, peer: u64, remote| {
            let peer = Identity::from_seed(peer).peer_id();
            let seal = Seal::new(&Identity::from_seed(me), &peer, me).unwrap();
            let opened = ProvenPath {
                peer,
                socket: SocketId::PRIMARY,
                remote,
                proven: vec![],
                controlling: true,
                path: Path::Direct,
                strategy: Strategy::Direct,
            };
            Session::new(Config::default(), opened, seal, now)
        };
        (s(1, 2, b), s(2, 1, a), a, b)
    }

    #[test]
    fn ping_pong_and_data_flow_and_strangers_are_dropped() {
        let now = Instant::now();
        let (mut a, mut b, a_addr, b_addr) = pair(now);
        let seq = a.ping(now);
        let ping = a.poll_transmit().unwrap();
        b.handle(now, a_addr, kind(&ping));
        let pong = b.poll_transmit().unwrap();
        a.handle(now + Duration::from_millis(30), b_addr, kind(&pong));
        assert_eq!(a.poll_event(), Some(Event::Pong { seq, rtt: Duration::from_millis(30) }));

        a.send_data(now, b"hello").unwrap();
        let data = a.poll_transmit().unwrap();
        assert!(!data.payload.windows(5).any(|w| w == b"hello"), "sealed on the wire");
        b.handle(now, a_addr, kind(&data));
        assert_eq!(b.poll_event(), Some(Event::Data(b"hello".to_vec())));
        // The same datagram again, or one forged, from the right address: dropped, counted.
        b.handle(now, a_addr, kind(&data));
        let forged = pb::Data { payload: b"spoof, 16 bytes of tag".to_vec().into(), epoch: 99, counter: 0 };
        b.handle(now, a_addr, Kind::Data(forged.clone()));
        assert_eq!(b.poll_event(), None);
        assert_eq!((b.stats().dropped_replayed, b.stats().dropped_forged), (1, 1));

        b.handle(now, "192.0.2.9:9".parse().unwrap(), Kind::Data(forged));
        assert_eq!(b.poll_event(), None);
        assert_eq!(b.stats().dropped_wrong_source, 1);
        assert_eq!(a.send_data(now, &[0; MAX + 1]), Err(SendError::TooLarge(MAX + 1)));
    }

    #[test]
    fn the_controlled_side_follows_the_controlling_sides_path() {
        let now = Instant::now();
        let (lan, hairpin): (SocketAddr, SocketAddr) =
            ("10.0.0.3:5000".parse().unwrap(), "203.0.113.10:5001".parse().unwrap());
        let peer = Identity::from_seed(1).peer_id();
        let side = |remote, controlling, path| {
            let opened = ProvenPath {
                peer,
                socket: SocketId::PRIMARY,
                remote,
                proven: vec![lan, hairpin],
                controlling,
                path,
                strategy: Strategy::Local,
            };
            Session::new(Config::default(), opened, Seal::new(&Identity::from_seed(2), &peer, 2).unwrap(), now)
        };
        let mut controlled = side(hairpin, false, Path::Direct);
        controlled.handle(now, lan, Kind::Ping(pb::Ping { seq: 0 }));
        assert_eq!(controlled.poll_transmit().unwrap().dst, lan, "answered over the controlling side's path");
        assert_eq!(controlled.remote(), lan);

        let mut controlling = side(lan, true, Path::Local);
        controlling.handle(now, hairpin, Kind::Ping(pb::Ping { seq: 0 }));
        assert_eq!(controlling.poll_transmit().unwrap().dst, lan, "the controlling side keeps its choice");

        let stranger: SocketAddr = "192.0.2.1:1".parse().unwrap();
        controlled.handle(now, stranger, Kind::Ping(pb::Ping { seq: 1 }));
        assert_eq!(controlled.stats().dropped_wrong_source, 1);
        controlled.add_path(stranger);
        controlled.handle(now, stranger, Kind::Ping(pb::Ping { seq: 1 }));
        assert_eq!(controlled.poll_transmit().unwrap().dst, stranger);
    }

    #[test]
    fn keepalives_hold_the_path_and_silence_closes_it() {
        let now = Instant::now();
        let (mut a, ..) = pair(now);
        let config = Config::default();
        let mut keepalives = 0;
        while let Some(t) = a.poll_timeout() {
            a.handle_timeout(t);
            keepalives += std::iter::from_fn(|| a.poll_transmit()).count();
        }
        assert_eq!(keepalives as u32, (config.idle_timeout.as_secs() / config.keepalive.as_secs()) as u32);
        assert!(matches!(a.poll_event(), Some(Event::Closed { .. })));
        assert!(a.is_closed());
    }
}
