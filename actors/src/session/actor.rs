//! The session actor: one [`Session`] per connected peer, found by any address the peer
//! proved itself over — or, for a relayed session, the [`RelayClient`] of its circuit,
//! which wraps what the session sends and unwraps what the relay delivers.

use super::seal::Seal;
use super::{Closed, Config, Event, ProvenPath, RelayError, SendError, Session};
use crate::driver::{MachineActor, Protocol};
use crate::identity::Identity;
use crate::punch::{Path, Strategy};
use crate::relay::client::{self, RelayClient};
use crate::socket::{Inbound, Payload};
use crate::Transmit;
use introducer_proto::frame::{self, Decoded};
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub type SessionActor = MachineActor<Sessions>;

/// What the node (or its user) tells the sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Open (or move) the session with a peer over what a punch proved.
    Open(ProvenPath),
    /// Ask `relay` for the circuit of the introduction `nonce`.
    OpenRelayed {
        peer: PeerId,
        relay: SocketAddr,
        nonce: Vec<u8>,
        controlling: bool,
    },
    /// The peer proved itself over one more address.
    AddPath {
        peer: PeerId,
        addr: SocketAddr,
    },
    Keepalive(Duration),
    Ping(PeerId),
    Send(PeerId, Vec<u8>),
}

/// Datagrams held for a session about to open, at most, and for how long.
///
/// The peer may send its first datagram the moment it has our punch acknowledgement,
/// which can arrive before our own punch machine has told us the path is proven; a
/// few such datagrams are kept briefly rather than lost.
const EARLY_MAX: usize = 16;
const EARLY_TTL: Duration = Duration::from_secs(2);

/// After an upgrade to a direct path, how long the relay circuit still delivers: what was
/// already on its way through the relay is not lost.
const UPGRADE_GRACE: Duration = Duration::from_secs(2);

pub struct Sessions {
    config: Config,
    identity: Identity,
    /// Every session seals with an epoch of its own.
    epochs: StdRng,
    relay_config: client::ClientConfig,
    by_peer: BTreeMap<PeerId, Session>,
    /// Circuits of relayed sessions (the session itself exists once the circuit is ready).
    relayed: BTreeMap<PeerId, (RelayClient, bool)>,
    /// Circuits of sessions that moved to a direct path, and when to close them.
    retiring: BTreeMap<PeerId, Instant>,
    /// Circuit datagrams (closes) of circuits already dropped.
    outgoing: VecDeque<Transmit>,
    /// Every proven address → whose session it carries.
    routes: HashMap<SocketAddr, PeerId>,
    early: VecDeque<Inbound>,
    /// News that is no open session's: circuits (relayed, refused), what could not be sent.
    news: VecDeque<(PeerId, Event)>,
    /// Session traffic from addresses with no session (after the early window).
    pub dropped_unknown_source: u64,
}

/// A new session's sealing keys, with a fresh epoch; none for a peer whose id carries no
/// ed25519 key (every introducer peer's does).
fn seal_for(identity: &Identity, epochs: &mut StdRng, peer: &PeerId) -> Option<Seal> {
    Seal::new(identity, peer, epochs.gen()).inspect_err(|e| tracing::warn!(%peer, "no session: {e}")).ok()
}

impl Sessions {
    /// Sessions, current and future, and future relay circuits keep their mappings with
    /// a keepalive this often, at most.
    pub fn set_keepalive(&mut self, keepalive: Duration) {
        self.config.keepalive = self.config.keepalive.min(keepalive);
        self.relay_config.keepalive = self.relay_config.keepalive.min(keepalive);
        let keepalive = self.config.keepalive;
        self.by_peer.values_mut().for_each(|s| s.set_keepalive(keepalive));
    }

    /// Data dropped by the open sessions: (did not authenticate, replayed).
    pub fn unsealing_drops(&self) -> (u64, u64) {
        self.by_peer
            .values()
            .map(|s| s.stats())
            .fold((0, 0), |(f, r), s| (f + s.dropped_forged, r + s.dropped_replayed))
    }

    /// `epochs` picks the sessions' sealing epochs: from the OS on a real node, so they
    /// never repeat across restarts (seeded on the simulator).
    pub fn new(config: Config, identity: Identity, epochs: StdRng) -> Self {
        Sessions {
            config,
            identity,
            epochs,
            relay_config: client::ClientConfig::default(),
            by_peer: BTreeMap::new(),
            relayed: BTreeMap::new(),
            retiring: BTreeMap::new(),
            outgoing: VecDeque::new(),
            routes: HashMap::new(),
            early: VecDeque::new(),
            news: VecDeque::new(),
            dropped_unknown_source: 0,
        }
    }

    /// Opens (or replaces) the session with a peer over the paths a punch proved.
    pub fn open(&mut self, now: Instant, opened: ProvenPath) {
        let peer = opened.peer;
        self.routes.retain(|_, p| *p != peer);
        match self.relayed.get_mut(&peer) {
            // An upgrade: the relay still delivers for a while.
            Some((client, _)) if client.is_ready() => {
                self.retiring.insert(peer, now + UPGRADE_GRACE);
            }
            // The punch won before the circuit was ready: no need for it.
            Some((client, _)) => client.close(now),
            None => {}
        }
        let session = match self.by_peer.remove(&peer) {
            // The session moves, with everything in flight.
            Some(mut session) if !session.is_closed() => {
                session.move_to(opened);
                session
            }
            _ => match seal_for(&self.identity, &mut self.epochs, &peer) {
                Some(seal) => Session::new(self.config.clone(), opened, seal, now),
                None => return,
            },
        };
        // Relays carry many circuits: their address routes by circuit, not to one session.
        let relays: Vec<SocketAddr> = self.relayed.values().map(|(c, _)| c.relay()).collect();
        for &addr in session.proven().iter().filter(|a| !relays.contains(a)) {
            self.routes.insert(addr, peer);
        }
        self.by_peer.insert(peer, session);
        self.replay_early(now);
    }

    /// Asks `relay` for the circuit of the introduction `nonce`; the session opens when the
    /// relay says both sides asked. The side that asked for the introduction controls.
    pub fn open_relayed(&mut self, now: Instant, peer: PeerId, relay: SocketAddr, nonce: &[u8], controlling: bool) {
        // A repeated introduction asks again for the circuit we already hold or wait for.
        if self.relayed.get(&peer).is_some_and(|(c, _)| c.relay() == relay && c.nonce() == nonce) {
            return;
        }
        let config = self.relay_config.clone();
        let client = RelayClient::new(config, self.identity.clone(), crate::SocketId::PRIMARY, relay, peer, nonce, now);
        self.relayed.insert(peer, (client, controlling));
    }

    /// Moves relayed sessions' datagrams into their circuits and the circuits' news into
    /// the sessions.
    fn pump_relayed(&mut self, now: Instant) {
        let retired: Vec<PeerId> = self.retiring.iter().filter(|(_, t)| **t <= now).map(|(p, _)| *p).collect();
        for peer in retired {
            self.retiring.remove(&peer);
            if let Some((client, _)) = self.relayed.get_mut(&peer) {
                client.close(now);
            }
        }
        for (peer, (client, controlling)) in &mut self.relayed {
            let relayed_session = |s: &Session| s.path() == Path::Relayed;
            while let Some(event) = client.poll_event() {
                match event {
                    client::Event::Ready { .. } => {
                        let relay = client.relay();
                        let opened = ProvenPath {
                            peer: *peer,
                            socket: crate::SocketId::PRIMARY,
                            remote: relay,
                            proven: vec![relay],
                            controlling: *controlling,
                            path: Path::Relayed,
                            strategy: Strategy::Relay,
                        };
                        let Some(seal) = seal_for(&self.identity, &mut self.epochs, peer) else { continue };
                        self.by_peer.insert(*peer, Session::new(self.config.clone(), opened, seal, now));
                        self.news.push_back((*peer, Event::Relayed { relay }));
                    }
                    client::Event::Data(datagram) => match (self.by_peer.get_mut(peer), frame::decode(&datagram)) {
                        (Some(session), Ok(Decoded::Envelope(envelope))) => {
                            if let Some(kind) = envelope.kind {
                                session.handle(now, client.relay(), kind);
                            }
                        }
                        _ => self.dropped_unknown_source += 1,
                    },
                    client::Event::Refused { reason, .. } => {
                        let error = RelayError::Refused(reason);
                        self.news.push_back((*peer, Event::RelayFailed { error }));
                    }
                    client::Event::Throttled => tracing::debug!(%peer, "relay throttled our data"),
                    client::Event::Closed { reason } => match self.by_peer.get_mut(peer) {
                        Some(session) if relayed_session(session) => session.close(Closed::Circuit(reason)),
                        Some(_) => {} // retired after an upgrade
                        None => {
                            let error = RelayError::Closed(reason);
                            self.news.push_back((*peer, Event::RelayFailed { error }));
                        }
                    },
                }
            }
            if let Some(session) = self.by_peer.get_mut(peer).filter(|s| relayed_session(s)) {
                while let Some(t) = session.poll_transmit() {
                    if let Err(e) = client.send(now, &t.payload) {
                        tracing::debug!(%peer, "relayed datagram not sent: {e}");
                    }
                }
            }
        }
        let outgoing = &mut self.outgoing;
        self.relayed.retain(|_, (client, _)| {
            let over = matches!(client.state(), client::State::Refused | client::State::Closed);
            if over {
                outgoing.extend(std::iter::from_fn(|| client.poll_transmit()));
            }
            !over
        });
    }

    /// Takes `peer`'s traffic from one more proven address.
    pub fn add_path(&mut self, now: Instant, peer: PeerId, addr: SocketAddr) {
        if let Some(session) = self.by_peer.get_mut(&peer) {
            session.add_path(addr);
            self.routes.insert(addr, peer);
            self.replay_early(now);
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<&Session> {
        self.by_peer.get(peer)
    }

    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Session> {
        self.by_peer.get_mut(peer)
    }

    pub fn ping(&mut self, now: Instant, peer: &PeerId) -> Result<u64, SendError> {
        let seq = self.get_mut(peer).ok_or(SendError::Closed)?.ping(now);
        self.pump_relayed(now);
        Ok(seq)
    }

    pub fn send(&mut self, now: Instant, peer: &PeerId, payload: &[u8]) -> Result<(), SendError> {
        self.get_mut(peer).ok_or(SendError::Closed)?.send_data(now, payload)?;
        self.pump_relayed(now);
        Ok(())
    }

    fn replay_early(&mut self, now: Instant) {
        for early in std::mem::take(&mut self.early) {
            match (self.routes.get(&early.src).and_then(|p| self.by_peer.get_mut(p)), early.payload) {
                (Some(session), Payload::Envelope(kind)) => session.handle(now, early.src, kind),
                (_, payload) => self.early.push_back(Inbound { payload, ..early }),
            }
        }
    }

    fn expire_early(&mut self, now: Instant) {
        while self.early.front().is_some_and(|e| now.saturating_duration_since(e.now) >= EARLY_TTL) {
            let dropped = self.early.pop_front().expect("front exists");
            self.dropped_unknown_source += 1;
            tracing::debug!(src = %dropped.src, "dropped session traffic from no session's address");
        }
    }

    fn hold_early(&mut self, inbound: Inbound) {
        self.expire_early(inbound.now);
        if self.early.len() >= EARLY_MAX {
            self.dropped_unknown_source += 1;
            tracing::debug!(src = %inbound.src, "dropped session traffic from no session's address");
            return;
        }
        self.early.push_back(inbound);
    }
}

impl Protocol for Sessions {
    type Event = (PeerId, Event);
    type Command = Command;
    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Open(opened) => self.open(now, opened),
            Command::OpenRelayed { peer, relay, nonce, controlling } => {
                self.open_relayed(now, peer, relay, &nonce, controlling)
            }
            Command::AddPath { peer, addr } => self.add_path(now, peer, addr),
            Command::Keepalive(keepalive) => self.set_keepalive(keepalive),
            Command::Ping(peer) => {
                if let Err(error) = self.ping(now, &peer) {
                    self.news.push_back((peer, Event::NotSent { error }));
                }
            }
            Command::Send(peer, payload) => {
                if let Err(error) = self.send(now, &peer, &payload) {
                    self.news.push_back((peer, Event::NotSent { error }));
                }
            }
        }
    }
    fn handle_inbound(&mut self, inbound: Inbound) {
        let now = inbound.now;
        if let Payload::Envelope(kind) = &inbound.payload {
            if crate::relay::to_relay(kind) == Some(false) {
                // From a relay: every circuit through it looks (each checks nonce or circuit).
                for (client, _) in self.relayed.values_mut().filter(|(c, _)| c.relay() == inbound.src) {
                    client.handle(now, inbound.src, kind.clone());
                }
                return self.pump_relayed(now);
            }
        }
        let session = self.routes.get(&inbound.src).and_then(|p| self.by_peer.get_mut(p));
        match (session, inbound.payload) {
            (Some(session), Payload::Envelope(kind)) => session.handle(inbound.now, inbound.src, kind),
            (None, payload @ Payload::Envelope(_)) => self.hold_early(Inbound { payload, ..inbound }),
            (_, Payload::Stun(_)) => {}
        }
        self.pump_relayed(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.expire_early(now);
        for session in self.by_peer.values_mut().filter(|s| s.poll_timeout().is_some_and(|t| t <= now)) {
            session.handle_timeout(now);
        }
        for (client, _) in self.relayed.values_mut().filter(|(c, _)| c.poll_timeout().is_some_and(|t| t <= now)) {
            client.handle_timeout(now);
        }
        self.pump_relayed(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        // Relayed sessions' own datagrams were moved into their circuits by `pump_relayed`.
        let direct = self.by_peer.values_mut().filter(|s| s.path() != Path::Relayed).find_map(Session::poll_transmit);
        direct
            .or_else(|| self.outgoing.pop_front())
            .or_else(|| self.relayed.values_mut().find_map(|(c, _)| c.poll_transmit()))
    }
    fn poll_event(&mut self) -> Option<(PeerId, Event)> {
        if let Some(event) = self.news.pop_front() {
            return Some(event);
        }
        let event = self.by_peer.values_mut().find_map(|s| s.poll_event().map(|e| (s.peer(), e)));
        if event.is_none() {
            self.by_peer.retain(|_, s| !s.is_closed());
            let by_peer = &self.by_peer;
            self.routes.retain(|_, p| by_peer.contains_key(p));
        }
        event
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let early = self.early.front().map(|e| e.now + EARLY_TTL);
        let circuits = self.relayed.values().filter_map(|(c, _)| c.poll_timeout());
        let retiring = self.retiring.values().copied();
        self.by_peer.values().filter_map(Session::poll_timeout).chain(early).chain(circuits).chain(retiring).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::punch::{Path, Strategy};
    use crate::SocketId;
    use introducer_proto::pb::{self, envelope::Kind};

    fn ping_from(src: SocketAddr, now: Instant) -> Inbound {
        Inbound {
            now,
            socket: SocketId::PRIMARY,
            src,
            len: 4,
            payload: Payload::Envelope(Kind::Ping(pb::Ping { seq: 0 })),
        }
    }

    #[test]
    fn a_ping_that_beats_the_session_open_is_answered_when_it_opens() {
        let now = Instant::now();
        let peer: SocketAddr = "203.0.113.2:5000".parse().unwrap();
        let mut sessions =
            Sessions::new(Config::default(), Identity::from_seed(9), rand::SeedableRng::seed_from_u64(9));
        sessions.handle_inbound(ping_from(peer, now));
        assert!(sessions.poll_transmit().is_none());
        let id = Identity::from_seed(1).peer_id();
        let opened = ProvenPath {
            peer: id,
            socket: SocketId::PRIMARY,
            remote: peer,
            proven: vec![peer],
            controlling: false,
            path: Path::Direct,
            strategy: Strategy::SimultaneousOpen,
        };
        sessions.open(now, opened);
        let pong = sessions.poll_transmit().expect("the held ping is answered");
        assert_eq!(pong.dst, peer);
        assert_eq!(sessions.dropped_unknown_source, 0);
    }

    #[test]
    fn a_repeated_relay_request_keeps_the_circuit_it_has() {
        let now = Instant::now();
        let relay: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        let peer = Identity::from_seed(2).peer_id();
        let mut sessions =
            Sessions::new(Config::default(), Identity::from_seed(9), rand::SeedableRng::seed_from_u64(9));
        sessions.open_relayed(now, peer, relay, &[7; 16], true);
        assert_eq!(std::iter::from_fn(|| sessions.poll_transmit()).count(), 1, "one circuit request");
        sessions.open_relayed(now, peer, relay, &[7; 16], true);
        assert_eq!(sessions.poll_transmit(), None, "the same circuit is not asked for again");
        sessions.open_relayed(now, peer, relay, &[8; 16], true);
        assert_eq!(std::iter::from_fn(|| sessions.poll_transmit()).count(), 1, "a new introduction, a new circuit");
    }

    #[test]
    fn early_datagrams_are_bounded_in_count_and_age() {
        let now = Instant::now();
        let mut sessions =
            Sessions::new(Config::default(), Identity::from_seed(9), rand::SeedableRng::seed_from_u64(9));
        for i in 0..EARLY_MAX as u16 + 4 {
            sessions.handle_inbound(ping_from(SocketAddr::from(([192, 0, 2, 1], i)), now));
        }
        assert_eq!(sessions.dropped_unknown_source, 4);
        // They age out on their own timer, not only when more arrive.
        assert_eq!(sessions.poll_timeout(), Some(now + EARLY_TTL));
        sessions.handle_timeout(now + EARLY_TTL);
        assert_eq!(sessions.dropped_unknown_source, 4 + EARLY_MAX as u64);
        assert_eq!(sessions.poll_timeout(), None);
    }
}
