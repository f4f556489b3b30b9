//! A connected peer: datagrams in and out over the punched path, round-trip pings, and
//! keepalives that hold both NATs' mappings open.
//!
//! Everything a session sends is sealed under keys only the two peers hold ([`noise`]):
//! the punch carries the handshake that makes the first keys, a relayed session runs it
//! over the circuit, and the controlling side makes new keys every
//! [`Config::rekey_after`]. Only what opens counts as the peer's: it alone keeps the session
//! alive or moves its path. Datagrams are taken only from addresses the peer proved itself
//! over; anything else is dropped and counted. When several paths were proven (a LAN and a
//! hairpin path, say), the side that asked for the introduction controls which one carries
//! the session: the other side answers over whichever proven path the controlling side
//! last used.

use crate::punch::{Path, Strategy};
use crate::{SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind, session_message::Kind as Inner};
use introducer_proto::MAX_DATAGRAM;
use libp2p_identity::PeerId;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub mod actor;
pub mod noise;

use noise::{Binding, Handshake, Keyring, Keys, NoiseError, OpenError, Statics};

#[derive(Debug, Clone)]
pub struct Config {
    /// Send something at least this often; must stay inside the NAT mapping lifetime.
    pub keepalive: Duration,
    /// Call the peer inactive after this long without hearing from it (keepalives missed:
    /// its path may have died, so the node punches anew), gone after `idle_timeout`.
    pub inactive_after: Duration,
    /// Declare the peer gone after this long without hearing from it.
    pub idle_timeout: Duration,
    /// Pings awaiting a pong, at most; older ones are forgotten.
    pub max_pings_in_flight: usize,
    /// The controlling side makes new keys this often (the other side too, if it waited
    /// half as long again): keys that are gone open nothing recorded earlier.
    pub rekey_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keepalive: Duration::from_secs(10),
            inactive_after: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(35),
            max_pings_in_flight: 64,
            rekey_after: Duration::from_secs(120),
        }
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
    /// Nothing authentic from the peer for `inactive_after` (`false`), or again something
    /// after that (`true`).
    Active(bool),
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
    #[error("the peer closed the session")]
    ByPeer,
    #[error("closed by us")]
    ByUs,
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
    /// Datagrams that authenticated.
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub dropped_wrong_source: u64,
    pub dropped_unsolicited_pong: u64,
    /// Sealed datagrams that did not authenticate, or named keys the session does not hold.
    pub dropped_forged: u64,
    pub dropped_replayed: u64,
    /// Handshake messages that did not authenticate or came out of turn.
    pub dropped_bad_handshake: u64,
    /// Key sets made (the first included).
    pub handshakes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("datagram of {0} bytes exceeds the payload limit ({MAX} bytes, less through a relay)")]
    TooLarge(usize),
    #[error("session is closed")]
    Closed,
    #[error("the session's keys are not agreed yet and {0} datagrams already wait for them")]
    NoKeys(usize),
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
    /// The keys the punch's handshake made (none over a relay: the session makes them).
    pub keys: Option<Keys>,
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

/// Bytes a sealed datagram adds to its payload: the frame byte, the envelope's field (tag,
/// two length bytes), the key id and counter fields, the ciphertext field, the AEAD tag,
/// and the data field inside.
pub const OVERHEAD: usize = 1 + 3 + 5 + 9 + 3 + noise::TAG_LEN + 3;

/// Payload bytes that fit one datagram after framing and sealing.
pub const MAX: usize = MAX_DATAGRAM - OVERHEAD;

/// Datagrams a session holds while its first keys are agreed, at most.
const MAX_WAITING: usize = 16;
/// How long keys that were replaced still open what was sealed with them.
const KEY_GRACE: Duration = Duration::from_secs(10);
/// A handshake's message is sent again after this, then twice as long, up to `MAX_RESEND`.
const FIRST_RESEND: Duration = Duration::from_millis(250);
const MAX_RESEND: Duration = Duration::from_secs(8);

/// A handshake this side started: the first over a relay circuit, or a rekey (bound to the
/// key set it was asked under).
struct Ours {
    handshake: Handshake,
    rekey: Option<u32>,
    next: Instant,
    wait: Duration,
}

pub struct Session {
    config: Config,
    peer: PeerId,
    socket: SocketId,
    remote: SocketAddr,
    /// Addresses the peer proved itself over (the remote among them).
    proven: Vec<SocketAddr>,
    /// The relay, for a session that began relayed.
    relay: Option<SocketAddr>,
    controlling: bool,
    path: Path,
    strategy: Strategy,
    last_rx: Instant,
    last_tx: Instant,
    pings: BTreeMap<u64, Instant>,
    closed: bool,
    /// Nothing authentic came for `inactive_after` (reported once, until something does).
    inactive: bool,
    /// Largest payload `send_data` takes (less through a relay, which wraps it).
    max_payload: usize,
    keys: Keyring,
    statics: Statics,
    /// Draws the ephemeral keys of rekeys (from the OS on a real node).
    rng: StdRng,
    ours: Option<Ours>,
    /// The handshake we answer (or wait to): copies of its initiation get the same answer.
    theirs: Option<Handshake>,
    /// What the user sent before the first keys were agreed.
    waiting: VecDeque<Inner>,
    stats: Stats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Session {
    pub fn set_keepalive(&mut self, keepalive: Duration) {
        self.config.keepalive = keepalive;
    }

    /// A session over `opened`, sealed with the keys its punch made. Without them (a relay
    /// circuit), `handshake` makes them over the path: the controlling side initiates.
    pub fn new(
        config: Config,
        opened: ProvenPath,
        handshake: Option<Handshake>,
        statics: Statics,
        rng: StdRng,
        now: Instant,
    ) -> Self {
        let ProvenPath { peer, socket, remote, mut proven, controlling, path, strategy, keys } = opened;
        tracing::debug!(%peer, %remote, ?proven, controlling, ?path, "session open");
        if !proven.contains(&remote) {
            proven.push(remote);
        }
        let mut session = Session {
            config,
            peer,
            socket,
            remote,
            proven,
            relay: (path == Path::Relayed).then_some(remote),
            controlling,
            path,
            strategy,
            last_rx: now,
            last_tx: now,
            pings: BTreeMap::new(),
            closed: false,
            inactive: false,
            max_payload: max_payload(path),
            keys: Keyring::default(),
            statics,
            rng,
            ours: None,
            theirs: None,
            waiting: VecDeque::new(),
            stats: Stats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        if let Some(keys) = keys {
            session.install(&keys, now);
        }
        match handshake {
            Some(h) if h.message().is_some() => {
                session.ours = Some(Ours { handshake: h, rekey: None, next: now, wait: FIRST_RESEND });
                session.resend(now);
            }
            other => session.theirs = other,
        }
        session
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
    /// keeping everything in flight: sequence numbers, pings awaiting pongs, counters, and
    /// the keys it holds, next to those the new path's punch made. The old path stays
    /// accepted, so what is still on its way along it arrives.
    pub fn move_to(&mut self, now: Instant, opened: ProvenPath) {
        let ProvenPath { socket, remote, proven, controlling, path, strategy, keys, .. } = opened;
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
        if let Some(keys) = keys {
            self.install(&keys, now);
        }
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

    /// Ends the session telling the peer, whose side then closes at once rather than after
    /// the idle timeout (a topic member that exits is seen to leave at once).
    pub fn goodbye(&mut self, now: Instant) {
        if !self.closed {
            let _ = self.send(now, Inner::Close(pb::Close {}));
            self.close(Closed::ByUs);
        }
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

    fn install(&mut self, keys: &Keys, now: Instant) {
        self.keys.install(keys, now);
        self.stats.handshakes += 1;
        for inner in std::mem::take(&mut self.waiting) {
            let _ = self.send(now, inner); // keys are held: it goes
        }
    }

    fn transmit(&mut self, now: Instant, kind: Kind) {
        self.last_tx = now;
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit::envelope(self.socket, self.remote, kind));
    }

    /// Seals and sends; before there are keys, what the user sent waits for them.
    fn send(&mut self, now: Instant, inner: Inner) -> Result<(), SendError> {
        if self.keys.is_empty() {
            if self.waiting.len() >= MAX_WAITING {
                return Err(SendError::NoKeys(self.waiting.len()));
            }
            self.waiting.push_back(inner);
            return Ok(());
        }
        let plaintext = pb::SessionMessage { kind: Some(inner) }.encode_to_vec();
        let sealed = self.keys.seal(&plaintext).expect("a key set is held");
        self.transmit(now, Kind::Sealed(sealed));
        Ok(())
    }

    /// Sends ping `seq`; its pong comes back as [`Event::Pong`] with it. The user numbers
    /// its pings: they outlive a session (a peer that reconnects keeps being pinged on);
    /// `u64::MAX` is the keepalives'.
    pub fn ping(&mut self, now: Instant, seq: u64) -> Result<(), SendError> {
        self.send(now, Inner::Ping(pb::Ping { seq }))?;
        if self.pings.len() >= self.config.max_pings_in_flight {
            self.pings.pop_first();
        }
        self.pings.insert(seq, now);
        Ok(())
    }

    pub fn send_data(&mut self, now: Instant, payload: &[u8]) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if payload.len() > self.max_payload {
            return Err(SendError::TooLarge(payload.len()));
        }
        self.send(now, Inner::Data(payload.to_vec().into()))
    }

    /// Handles session traffic from `src`, on the session's own socket.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, kind: Kind) {
        self.handle_on(now, self.socket, src, kind)
    }

    /// Handles session traffic from `src` that arrived on `socket` (after a birthday punch
    /// the controlling side may use a path that ends at another of our pool sockets: the
    /// controlled side then answers from that one).
    pub fn handle_on(&mut self, now: Instant, socket: SocketId, src: SocketAddr, kind: Kind) {
        if !self.proven.contains(&src) || self.closed {
            self.stats.dropped_wrong_source += 1;
            return;
        }
        match kind {
            Kind::Sealed(sealed) => match self.keys.open(now, &sealed) {
                Ok(plaintext) => match pb::SessionMessage::decode(plaintext.as_slice()).ok().and_then(|m| m.kind) {
                    Some(inner) => {
                        self.authenticated(now, socket, src);
                        self.handle_inner(now, src, inner);
                    }
                    None => self.stats.dropped_forged += 1,
                },
                Err(OpenError::Replayed) => self.stats.dropped_replayed += 1,
                Err(OpenError::Forged | OpenError::UnknownKey) => self.stats.dropped_forged += 1,
            },
            Kind::Handshake(h) => self.handle_handshake(now, socket, src, false, h),
            _ => {}
        }
    }

    /// Something from `src` authenticated: the peer is alive, and the controlled side
    /// follows the path the controlling side uses.
    fn authenticated(&mut self, now: Instant, socket: SocketId, src: SocketAddr) {
        // What a retiring relay circuit still delivers after an upgrade steers nothing: the
        // session's datagrams no longer go through it.
        let same_kind = (Some(src) == self.relay) == (self.path == Path::Relayed);
        if !self.controlling && (src, socket) != (self.remote, self.socket) && same_kind {
            tracing::debug!(peer = %self.peer, from = %self.remote, to = %src, ?socket, "following the controlling side's path");
            (self.remote, self.socket) = (src, socket);
        }
        self.last_rx = now;
        self.stats.datagrams_in += 1;
        if std::mem::replace(&mut self.inactive, false) {
            self.events.push_back(Event::Active(true));
        }
    }

    fn handle_inner(&mut self, now: Instant, src: SocketAddr, inner: Inner) {
        match inner {
            Inner::Ping(ping) => {
                let _ = self.send(now, Inner::Pong(pb::Pong { seq: ping.seq }));
            }
            Inner::Pong(pong) => match self.pings.remove(&pong.seq) {
                Some(sent) => self.events.push_back(Event::Pong { seq: pong.seq, rtt: now - sent }),
                None if pong.seq == KEEPALIVE_SEQ => {}
                None => self.stats.dropped_unsolicited_pong += 1,
            },
            Inner::Data(data) => self.events.push_back(Event::Data(data.to_vec())),
            Inner::Rekey(h) => self.handle_handshake(now, self.socket, src, true, h),
            Inner::Close(_) => self.close(Closed::ByPeer),
        }
    }

    /// A handshake message: in the clear (the first handshake, over a relay circuit) or
    /// `sealed` under the current keys (a rekey).
    fn handle_handshake(&mut self, now: Instant, socket: SocketId, src: SocketAddr, sealed: bool, h: pb::Handshake) {
        let made = if h.answer {
            match self.ours.as_mut().filter(|o| o.rekey.is_some() == sealed) {
                Some(ours) => ours.handshake.handle(&h.message),
                None => Err(NoiseError::Unexpected),
            }
        } else {
            // A rekey the peer asks for: a new handshake, unless a copy of the one answered last.
            if sealed && !self.theirs.as_ref().is_some_and(|t| t.answers(&h.message)) {
                let rng = self.child_rng();
                self.theirs = Some(Handshake::respond(self.statics.clone(), Binding::Rekey(h.under), rng));
            }
            match self.theirs.as_mut() {
                Some(theirs) => theirs.handle(&h.message),
                None => Err(NoiseError::Unexpected),
            }
        };
        let made = match made {
            Ok(made) => made,
            Err(e) => {
                self.stats.dropped_bad_handshake += 1;
                return tracing::debug!(peer = %self.peer, %src, "handshake message dropped: {e}");
            }
        };
        // The answer goes ahead of anything the new keys release.
        if let Some(answer) = self.theirs.as_ref().and_then(Handshake::message).filter(|_| !h.answer) {
            let answer = pb::Handshake { message: answer.to_vec().into(), answer: true, under: h.under };
            if sealed {
                let _ = self.send(now, Inner::Rekey(answer));
            } else {
                self.transmit(now, Kind::Handshake(answer));
            }
        }
        if let Some(keys) = made {
            if !sealed {
                self.authenticated(now, socket, src);
            }
            if h.answer {
                self.ours = None;
            }
            self.install(&keys, now);
        }
    }

    /// Starts a rekey when it is due: the controlling side after `rekey_after`, the other
    /// after half as long again (should the controlling side not).
    fn rekey_due(&self) -> Option<Instant> {
        let (_, created) = self.keys.newest()?;
        let after = if self.controlling { self.config.rekey_after } else { self.config.rekey_after * 3 / 2 };
        self.ours.is_none().then_some(created + after)
    }

    fn start_rekey(&mut self, now: Instant) {
        let Some((id, _)) = self.keys.newest() else { return };
        let rng = self.child_rng();
        let handshake = Handshake::initiate(self.statics.clone(), Binding::Rekey(id), rng);
        self.ours = Some(Ours { handshake, rekey: Some(id), next: now, wait: FIRST_RESEND });
        self.resend(now);
    }

    /// A generator for one handshake's ephemeral key.
    fn child_rng(&mut self) -> StdRng {
        StdRng::from_rng(&mut self.rng).expect("StdRng never fails")
    }

    /// Our handshake's message (again), and when the next copy goes.
    fn resend(&mut self, now: Instant) {
        let Some(ours) = self.ours.as_mut() else { return };
        let Some(message) = ours.handshake.message().map(<[u8]>::to_vec) else { return };
        ours.next = now + ours.wait;
        ours.wait = (ours.wait * 2).min(MAX_RESEND);
        let h = pb::Handshake { message: message.into(), answer: false, under: ours.rekey.unwrap_or_default() };
        match ours.rekey {
            Some(_) => drop(self.send(now, Inner::Rekey(h))),
            None => self.transmit(now, Kind::Handshake(h)),
        }
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
        if !self.inactive && now >= self.last_rx + self.config.inactive_after {
            self.inactive = true;
            self.events.push_back(Event::Active(false));
        }
        self.keys.expire(now, KEY_GRACE);
        if self.ours.as_ref().is_some_and(|o| now >= o.next) {
            self.resend(now);
        }
        if self.rekey_due().is_some_and(|t| now >= t) {
            self.start_rekey(now);
        }
        if now >= self.last_tx + self.config.keepalive && !self.keys.is_empty() {
            let _ = self.send(now, Inner::Ping(pb::Ping { seq: KEEPALIVE_SEQ }));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let keepalive = (!self.keys.is_empty()).then_some(self.last_tx + self.config.keepalive);
        let resend = self.ours.as_ref().map(|o| o.next);
        let idle = self.last_rx + self.config.idle_timeout;
        let inactive = (!self.inactive).then_some(self.last_rx + self.config.inactive_after);
        [keepalive, resend, self.rekey_due(), self.keys.expiry(KEY_GRACE), Some(idle), inactive]
            .into_iter()
            .flatten()
            .min()
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

    const A: &str = "203.0.113.1:1";
    const B: &str = "198.51.100.2:2";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Seed `me`'s session with seed `peer`, at `remote`, holding `keys` (or making them
    /// over the path when none).
    fn session(me: u64, peer: u64, remote: &str, keys: Option<Keys>, controlling: bool, now: Instant) -> Session {
        let peer = Identity::from_seed(peer).peer_id();
        let statics = Statics::new(&Identity::from_seed(me), &peer).unwrap();
        let handshake = keys.is_none().then(|| {
            let binding = Binding::Relay(&[3; 16]);
            Handshake::new(controlling, statics.clone(), binding, StdRng::seed_from_u64(me))
        });
        let opened = ProvenPath {
            peer,
            socket: SocketId::PRIMARY,
            remote: addr(remote),
            proven: vec![],
            controlling,
            path: if keys.is_some() { Path::Direct } else { Path::Relayed },
            strategy: Strategy::Direct,
            keys,
        };
        Session::new(Config::default(), opened, handshake, statics, StdRng::seed_from_u64(me + 100), now)
    }

    /// A (seed 1, controlling) and B (seed 2) with the keys a punch made.
    fn pair(now: Instant) -> (Session, Session) {
        let (ka, kb) = noise::test_keys(1, 2, Binding::Punch(&[1; 16]), 1);
        (session(1, 2, B, Some(ka), true, now), session(2, 1, A, Some(kb), false, now))
    }

    /// Delivers everything each side sent to the other, until both are quiet; the datagrams.
    fn exchange(a: &mut Session, b: &mut Session, now: Instant) -> Vec<Transmit> {
        let mut all = Vec::new();
        loop {
            let from_a: Vec<Transmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
            let from_b: Vec<Transmit> = std::iter::from_fn(|| b.poll_transmit()).collect();
            if from_a.is_empty() && from_b.is_empty() {
                return all;
            }
            from_a.iter().for_each(|t| b.handle(now, addr(A), kind(t)));
            from_b.iter().for_each(|t| a.handle(now, addr(B), kind(t)));
            all.extend(from_a.into_iter().chain(from_b));
        }
    }

    fn sealed(t: &Transmit) -> pb::Sealed {
        match kind(t) {
            Kind::Sealed(s) => s,
            other => panic!("not sealed: {other:?}"),
        }
    }

    #[test]
    fn pings_pongs_and_data_go_sealed_and_what_does_not_open_is_dropped() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let seq = 7;
        a.ping(now, seq).unwrap();
        let ping = a.poll_transmit().unwrap();
        b.handle(now, addr(A), kind(&ping));
        let pong = b.poll_transmit().unwrap();
        a.handle(now + Duration::from_millis(30), addr(B), kind(&pong));
        assert_eq!(a.poll_event(), Some(Event::Pong { seq, rtt: Duration::from_millis(30) }));

        a.send_data(now, b"hello").unwrap();
        let data = a.poll_transmit().unwrap();
        assert!(!data.payload.windows(5).any(|w| w == b"hello"), "sealed on the wire");
        b.handle(now, addr(A), kind(&data));
        assert_eq!(b.poll_event(), Some(Event::Data(b"hello".to_vec())));
        // The same datagram again, or one forged, from the right address: dropped, counted.
        b.handle(now, addr(A), kind(&data));
        let forged = pb::Sealed { ciphertext: vec![7; 40].into(), counter: 999, ..sealed(&data) };
        b.handle(now, addr(A), Kind::Sealed(forged.clone()));
        assert_eq!(b.poll_event(), None);
        assert_eq!((b.stats().dropped_replayed, b.stats().dropped_forged), (1, 1));
        assert_eq!(b.poll_transmit(), None, "nothing answers what does not open");

        b.handle(now, addr("192.0.2.9:9"), Kind::Sealed(forged));
        assert_eq!(b.stats().dropped_wrong_source, 1);
        assert_eq!(a.send_data(now, &[0; MAX + 1]), Err(SendError::TooLarge(MAX + 1)));
        // The largest payload still makes a datagram that fits.
        a.send_data(now, &[0xff; MAX]).unwrap();
        assert!(a.poll_transmit().unwrap().payload.len() <= MAX_DATAGRAM);
    }

    /// Before: sealing keys came from the static identities, so a datagram recorded in one
    /// session opened in the next, and one injected datagram from an old epoch moved the
    /// receiver off the current one.
    #[test]
    fn nothing_recorded_from_an_earlier_session_opens_or_disturbs_the_next() {
        let now = Instant::now();
        let (mut old_a, _) = pair(now);
        old_a.send_data(now, b"recorded").unwrap();
        let recorded = old_a.poll_transmit().unwrap();
        // The same two peers, introduced again: a new handshake, new ephemeral keys.
        let (ka, kb) = noise::test_keys(1, 2, Binding::Punch(&[2; 16]), 5);
        let (mut a, mut b) = (session(1, 2, B, Some(ka), true, now), session(2, 1, A, Some(kb), false, now));
        b.handle(now, addr(A), kind(&recorded));
        assert_eq!(b.poll_event(), None);
        assert_eq!(b.stats().dropped_forged, 1);
        a.send_data(now, b"current").unwrap();
        exchange(&mut a, &mut b, now);
        assert_eq!(b.poll_event(), Some(Event::Data(b"current".to_vec())), "the current keys still open");
    }

    /// Before: pings from a proven address reset the idle timer and moved the controlled
    /// side's path, authenticated or not.
    #[test]
    fn only_what_authenticates_keeps_a_session_alive_or_moves_its_path() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let (lan, stranger) = (addr("10.0.0.3:5000"), addr("192.0.2.1:1"));
        b.add_path(lan);
        // A forgery from the other proven address moves nothing, and answers nothing.
        a.ping(now, 0).unwrap();
        let forged = pb::Sealed { ciphertext: vec![1; 30].into(), ..sealed(&a.poll_transmit().unwrap()) };
        b.handle(now, lan, Kind::Sealed(forged.clone()));
        assert_eq!((b.remote(), b.poll_transmit()), (addr(A), None));
        // The real thing from there moves the controlled side onto it, and onto the socket
        // it arrived on (another of a birthday pool's, say)...
        a.ping(now, 0).unwrap();
        b.handle_on(now, SocketId(1003), lan, kind(&a.poll_transmit().unwrap()));
        let pong = b.poll_transmit().unwrap();
        assert_eq!((pong.dst, pong.socket), (lan, SocketId(1003)), "answered over the controlling side's path");
        // ...but not the controlling side.
        b.ping(now, 0).unwrap();
        a.add_path(stranger);
        a.handle(now, stranger, kind(&b.poll_transmit().unwrap()));
        a.ping(now, 0).unwrap();
        assert_eq!(a.poll_transmit().unwrap().dst, addr(B), "the controlling side keeps its choice");
        // Forgeries every second from a proven address do not hold the session open.
        let idle = Config::default().idle_timeout;
        let mut t = now;
        while let Some(next) = b.poll_timeout() {
            t = next;
            b.handle_timeout(t);
            b.handle(t, lan, Kind::Sealed(forged.clone()));
            while b.poll_transmit().is_some() {}
        }
        assert_eq!(b.poll_event(), Some(Event::Active(false)), "forgeries do not keep it active either");
        assert!(matches!(b.poll_event(), Some(Event::Closed { reason: Closed::Idle(_) })));
        assert_eq!(t, now + idle, "closed when the last authentic datagram was idle_timeout ago");
    }

    /// Found with the handshake, which delays a relayed session's first ping: a ping the
    /// retiring circuit delivered after the upgrade moved the controlled side back onto
    /// the relay's address, where its pong went unwrapped and was lost.
    #[test]
    fn what_a_retiring_circuit_delivers_does_not_steer_an_upgraded_session() {
        let now = Instant::now();
        let relay = addr("198.51.100.1:3478");
        let (ka, kb) = noise::test_keys(1, 2, Binding::Relay(&[3; 16]), 1);
        let opened = |remote, path, keys| ProvenPath {
            peer: Identity::from_seed(1).peer_id(),
            socket: SocketId::PRIMARY,
            remote,
            proven: vec![],
            controlling: false,
            path,
            strategy: Strategy::Relay,
            keys: Some(keys),
        };
        let statics = Statics::new(&Identity::from_seed(2), &Identity::from_seed(1).peer_id()).unwrap();
        let rng = StdRng::seed_from_u64(2);
        let mut b = Session::new(Config::default(), opened(relay, Path::Relayed, kb), None, statics, rng, now);
        b.move_to(now, opened(addr(A), Path::Direct, noise::test_keys(1, 2, Binding::Punch(&[3; 16]), 7).1));
        // Sealed by the peer before its own upgrade, under the circuit's keys; delivered now.
        let mut theirs = Keyring::default();
        theirs.install(&ka, now);
        let ping = pb::SessionMessage { kind: Some(Inner::Ping(pb::Ping { seq: 0 })) }.encode_to_vec();
        b.handle(now, relay, Kind::Sealed(theirs.seal(&ping).unwrap()));
        assert_eq!(b.poll_transmit().unwrap().dst, addr(A), "the pong goes over the direct path");
        assert_eq!(b.remote(), addr(A));
    }

    /// A goodbye closes both sides at once; the same Close unsealed (forged) closes nothing.
    #[test]
    fn a_goodbye_closes_the_peer_at_once_and_a_forged_one_does_not() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let forged = pb::SessionMessage { kind: Some(Inner::Close(pb::Close {})) }.encode_to_vec();
        let forged = pb::Sealed {
            ciphertext: forged.into(),
            ..sealed(&{
                a.ping(now, 0).unwrap();
                a.poll_transmit().unwrap()
            })
        };
        b.handle(now, addr(A), Kind::Sealed(forged));
        assert!(!b.is_closed() && b.stats().dropped_forged == 1);
        a.goodbye(now);
        assert_eq!(a.poll_event(), Some(Event::Closed { reason: Closed::ByUs }));
        exchange(&mut a, &mut b, now);
        assert_eq!(b.poll_event(), Some(Event::Closed { reason: Closed::ByPeer }));
        assert!(b.is_closed());
    }

    #[test]
    fn keepalives_are_sealed_pings_and_silence_closes_the_session() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        let config = Config::default();
        let mut keepalives = 0;
        while let Some(t) = a.poll_timeout() {
            a.handle_timeout(t);
            for t in std::iter::from_fn(|| a.poll_transmit()) {
                sealed(&t);
                keepalives += 1;
            }
        }
        assert_eq!(keepalives as u32, (config.idle_timeout.as_secs() / config.keepalive.as_secs()) as u32);
        assert_eq!(a.poll_event(), Some(Event::Active(false)), "inactive first, once");
        assert!(matches!(a.poll_event(), Some(Event::Closed { .. })));
        assert!(a.is_closed());
    }

    /// Silence past `inactive_after` is reported once; the next authentic datagram says the
    /// peer is active again.
    #[test]
    fn a_silent_peer_is_inactive_once_and_active_again_when_heard() {
        let start = Instant::now();
        let (mut a, mut b) = pair(start);
        let inactive_at = start + Config::default().inactive_after;
        let mut now = start;
        while let Some(t) = a.poll_timeout().filter(|t| *t <= inactive_at) {
            now = t;
            a.handle_timeout(now);
            while a.poll_transmit().is_some() {}
        }
        assert_eq!(a.poll_event(), Some(Event::Active(false)));
        a.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(a.poll_event(), None, "reported once");
        b.send_data(now, b"back").unwrap();
        exchange(&mut a, &mut b, now);
        assert_eq!(a.poll_event(), Some(Event::Active(true)));
        assert_eq!(a.poll_event(), Some(Event::Data(b"back".to_vec())));
    }

    #[test]
    fn the_controlling_side_makes_new_keys_and_the_old_ones_are_forgotten() {
        let start = Instant::now();
        let (mut a, mut b) = pair(start);
        a.send_data(start, b"first").unwrap();
        let first = sealed(&exchange(&mut a, &mut b, start)[0]);
        assert_eq!(b.poll_event(), Some(Event::Data(b"first".to_vec())));
        let mut now = start;
        // Keepalives both ways until the rekey is due, and on until it settled.
        let rekey_after = Config::default().rekey_after;
        while now < start + rekey_after + KEY_GRACE * 2 {
            now = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min().unwrap();
            a.handle_timeout(now);
            b.handle_timeout(now);
            exchange(&mut a, &mut b, now);
        }
        assert_eq!((a.stats().handshakes, b.stats().handshakes), (2, 2), "one rekey, made by the controlling side");
        a.send_data(now, b"later").unwrap();
        let later = exchange(&mut a, &mut b, now);
        assert_ne!(sealed(&later[0]).key, first.key);
        assert_eq!(b.poll_event(), Some(Event::Data(b"later".to_vec())));
        // The first keys are gone on both sides: what was recorded under them opens nowhere.
        b.handle(now, addr(A), Kind::Sealed(pb::Sealed { counter: 1000, ..first }));
        assert_eq!(b.poll_event(), None);
        assert!(!a.is_closed() && !b.is_closed());
    }

    #[test]
    fn a_relayed_session_makes_its_keys_over_the_circuit_and_holds_what_waits_for_them() {
        let now = Instant::now();
        let mut a = session(1, 2, B, None, true, now);
        let mut b = session(2, 1, A, None, false, now);
        b.send_data(now, b"early").unwrap();
        assert_eq!(b.poll_transmit(), None, "the responder waits for the initiation");
        let initiation = a.poll_transmit().unwrap();
        assert!(matches!(kind(&initiation), Kind::Handshake(pb::Handshake { answer: false, .. })));
        // The initiation is lost; its copy a moment later is answered.
        let copy = {
            a.handle_timeout(now + FIRST_RESEND);
            a.poll_transmit().unwrap()
        };
        assert_eq!(copy.payload, initiation.payload);
        b.handle(now, addr(A), kind(&copy));
        let answer = b.poll_transmit().unwrap();
        assert!(answer.payload.len() <= copy.payload.len(), "no answer larger than what it answers");
        // The held datagram goes out with the keys, after the answer.
        let early = b.poll_transmit().unwrap();
        // A replayed initiation earns the same answer, and no new keys.
        b.handle(now, addr(A), kind(&initiation));
        assert_eq!(b.poll_transmit().unwrap().payload, answer.payload);
        assert_eq!(b.stats().handshakes, 1);
        a.handle(now, addr(B), kind(&answer));
        a.handle(now, addr(B), kind(&early));
        assert_eq!(a.poll_event(), Some(Event::Data(b"early".to_vec())));
        assert_eq!(a.stats().handshakes, 1);
    }
}
