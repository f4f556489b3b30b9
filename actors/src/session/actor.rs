//! The session actor: one [`Session`] per connected peer, found by any address the peer
//! proved itself over — or, for a relayed session, the [`RelayClient`] of its circuit,
//! which wraps what the session sends and unwraps what the relay delivers.

use super::noise::{Binding, Handshake, Statics};
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
use rand::SeedableRng;
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
    /// Ping number `seq` (numbered by the user: see [`Session::ping`]).
    Ping(PeerId, u64),
    Send(PeerId, Vec<u8>),
    /// The node stops: every session says goodbye to its peer and every relay circuit is
    /// torn down, so peers and relays free their state now rather than at their timeouts.
    CloseAll,
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
    /// Draws the sessions' ephemeral keys.
    rng: StdRng,
    relay_config: client::ClientConfig,
    /// Everything about each peer, in one place.
    peers: BTreeMap<PeerId, Peer>,
    /// Circuit datagrams (closes) of circuits already dropped.
    outgoing: VecDeque<Transmit>,
    /// Every proven address → whose session it carries (an index into `peers`).
    routes: HashMap<SocketAddr, PeerId>,
    early: VecDeque<Inbound>,
    /// News that is no open session's: circuits (relayed, refused), what could not be sent.
    news: VecDeque<(PeerId, Event)>,
    /// Session traffic from addresses with no session (after the early window).
    pub dropped_unknown_source: u64,
}

/// One peer: its session, and the relay circuit that carries it — or is being set up
/// (the session opens when it is ready), or retires after an upgrade to a direct path.
#[derive(Default)]
struct Peer {
    session: Option<Session>,
    circuit: Option<Circuit>,
}

struct Circuit {
    client: RelayClient,
    /// We asked for the introduction: our side picks the path.
    controlling: bool,
    /// After an upgrade: when the circuit stops delivering.
    retire_at: Option<Instant>,
}

impl Peer {
    fn is_empty(&self) -> bool {
        self.session.is_none() && self.circuit.is_none()
    }
}

/// The static keys of a new session, and a generator for its ephemeral ones; none for a
/// peer whose id carries no ed25519 key (every introducer peer's does).
fn keying(identity: &Identity, rng: &mut StdRng, peer: &PeerId) -> Option<(Statics, StdRng)> {
    let statics = Statics::new(identity, peer).inspect_err(|e| tracing::warn!(%peer, "no session: {e}")).ok()?;
    Some((statics, StdRng::from_rng(rng).expect("StdRng never fails")))
}

impl Sessions {
    /// Sessions, current and future, and future relay circuits keep their mappings with
    /// a keepalive this often, at most.
    pub fn set_keepalive(&mut self, keepalive: Duration) {
        self.config.keepalive = self.config.keepalive.min(keepalive);
        self.relay_config.keepalive = self.relay_config.keepalive.min(keepalive);
        let keepalive = self.config.keepalive;
        self.sessions_mut().for_each(|s| s.set_keepalive(keepalive));
    }

    /// Datagrams dropped by the open sessions: (did not authenticate, replayed).
    pub fn unsealing_drops(&self) -> (u64, u64) {
        let stats = self.sessions().map(|s| s.stats());
        stats.fold((0, 0), |(f, r), s| (f + s.dropped_forged + s.dropped_bad_handshake, r + s.dropped_replayed))
    }

    /// `rng` draws the sessions' ephemeral keys: from the OS on a real node (seeded on the
    /// simulator, so that a seed replays).
    pub fn new(config: Config, identity: Identity, rng: StdRng) -> Self {
        Sessions {
            config,
            identity,
            rng,
            relay_config: client::ClientConfig::default(),
            peers: BTreeMap::new(),
            outgoing: VecDeque::new(),
            routes: HashMap::new(),
            early: VecDeque::new(),
            news: VecDeque::new(),
            dropped_unknown_source: 0,
        }
    }

    fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.peers.values().filter_map(|p| p.session.as_ref())
    }

    fn sessions_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.peers.values_mut().filter_map(|p| p.session.as_mut())
    }

    fn circuits(&self) -> impl Iterator<Item = &Circuit> {
        self.peers.values().filter_map(|p| p.circuit.as_ref())
    }

    /// Opens (or replaces) the session with a peer over the paths a punch proved.
    pub fn open(&mut self, now: Instant, opened: ProvenPath) {
        let peer = opened.peer;
        self.routes.retain(|_, p| *p != peer);
        // Relays carry many circuits: their address routes by circuit, not to one session.
        let relays: Vec<SocketAddr> = self.circuits().map(|c| c.client.relay()).collect();
        let entry = self.peers.entry(peer).or_default();
        match &mut entry.circuit {
            // An upgrade: the relay still delivers for a while.
            Some(c) if c.client.is_ready() => c.retire_at = Some(now + UPGRADE_GRACE),
            // The punch won before the circuit was ready: no need for it.
            Some(c) => c.client.close(now),
            None => {}
        }
        let session = match entry.session.take() {
            // The session moves, with everything in flight.
            Some(mut session) if !session.is_closed() => {
                session.move_to(now, opened);
                session
            }
            _ => match keying(&self.identity, &mut self.rng, &peer) {
                Some((statics, rng)) => Session::new(self.config.clone(), opened, None, statics, rng, now),
                None => return,
            },
        };
        for &addr in session.proven().iter().filter(|a| !relays.contains(a)) {
            self.routes.insert(addr, peer);
        }
        entry.session = Some(session);
        self.replay_early(now);
    }

    /// Asks `relay` for the circuit of the introduction `nonce`; the session opens when the
    /// relay says both sides asked. The side that asked for the introduction controls.
    pub fn open_relayed(&mut self, now: Instant, peer: PeerId, relay: SocketAddr, nonce: &[u8], controlling: bool) {
        let entry = self.peers.entry(peer).or_default();
        // A repeated introduction asks again for the circuit we already hold or wait for.
        if entry.circuit.as_ref().is_some_and(|c| c.client.relay() == relay && c.client.nonce() == nonce) {
            return;
        }
        let config = self.relay_config.clone();
        let client = RelayClient::new(config, self.identity.clone(), crate::SocketId::PRIMARY, relay, peer, nonce, now);
        entry.circuit = Some(Circuit { client, controlling, retire_at: None });
    }

    /// Moves relayed sessions' datagrams into their circuits and the circuits' news into
    /// the sessions.
    fn pump_relayed(&mut self, now: Instant) {
        let Sessions { config, identity, rng, peers, outgoing, news, dropped_unknown_source, .. } = self;
        for (peer, entry) in peers.iter_mut() {
            let Some(circuit) = &mut entry.circuit else { continue };
            if circuit.retire_at.is_some_and(|t| t <= now) {
                circuit.retire_at = None;
                circuit.client.close(now);
            }
            let client = &mut circuit.client;
            while let Some(event) = client.poll_event() {
                match event {
                    client::Event::Ready { .. } => {
                        let relay = client.relay();
                        let opened = ProvenPath {
                            peer: *peer,
                            socket: crate::SocketId::PRIMARY,
                            remote: relay,
                            proven: vec![relay],
                            controlling: circuit.controlling,
                            path: Path::Relayed,
                            strategy: Strategy::Relay,
                            keys: None,
                        };
                        let Some((statics, mut rng)) = keying(identity, rng, peer) else { continue };
                        // The circuit's own handshake, bound to its introduction.
                        let ephemeral = StdRng::from_rng(&mut rng).expect("StdRng never fails");
                        let binding = Binding::Relay(client.nonce());
                        let handshake = Handshake::new(circuit.controlling, statics.clone(), binding, ephemeral);
                        entry.session = Some(Session::new(config.clone(), opened, Some(handshake), statics, rng, now));
                        news.push_back((*peer, Event::Relayed { relay }));
                    }
                    client::Event::Data(datagram) => match (entry.session.as_mut(), frame::decode(&datagram)) {
                        (Some(session), Ok(Decoded::Envelope(envelope))) => {
                            if let Some(kind) = envelope.kind {
                                session.handle(now, client.relay(), kind);
                            }
                        }
                        _ => *dropped_unknown_source += 1,
                    },
                    client::Event::Refused { reason, .. } => {
                        news.push_back((*peer, Event::RelayFailed { error: RelayError::Refused(reason) }));
                    }
                    client::Event::Throttled => tracing::debug!(%peer, "relay throttled our data"),
                    client::Event::Closed { reason } => match entry.session.as_mut() {
                        Some(session) if session.path() == Path::Relayed => session.close(Closed::Circuit(reason)),
                        Some(_) => {} // retired after an upgrade
                        None => news.push_back((*peer, Event::RelayFailed { error: RelayError::Closed(reason) })),
                    },
                }
            }
            if let Some(session) = entry.session.as_mut().filter(|s| s.path() == Path::Relayed) {
                while let Some(t) = session.poll_transmit() {
                    if let Err(e) = client.send(now, &t.payload) {
                        tracing::debug!(%peer, "relayed datagram not sent: {e}");
                    }
                }
            }
            if matches!(client.state(), client::State::Refused | client::State::Closed) {
                outgoing.extend(std::iter::from_fn(|| client.poll_transmit()));
                entry.circuit = None;
            }
        }
        peers.retain(|_, p| !p.is_empty());
    }

    /// Takes `peer`'s traffic from one more proven address.
    pub fn add_path(&mut self, now: Instant, peer: PeerId, addr: SocketAddr) {
        if let Some(session) = self.get_mut(&peer) {
            session.add_path(addr);
            self.routes.insert(addr, peer);
            self.replay_early(now);
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<&Session> {
        self.peers.get(peer)?.session.as_ref()
    }

    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Session> {
        self.peers.get_mut(peer)?.session.as_mut()
    }

    pub fn ping(&mut self, now: Instant, peer: &PeerId, seq: u64) -> Result<(), SendError> {
        self.get_mut(peer).ok_or(SendError::Closed)?.ping(now, seq)?;
        self.pump_relayed(now);
        Ok(())
    }

    pub fn send(&mut self, now: Instant, peer: &PeerId, payload: &[u8]) -> Result<(), SendError> {
        self.get_mut(peer).ok_or(SendError::Closed)?.send_data(now, payload)?;
        self.pump_relayed(now);
        Ok(())
    }

    fn close_all(&mut self, now: Instant) {
        self.sessions_mut().for_each(|s| s.goodbye(now));
        // Relayed goodbyes into their circuits first, then the circuits' own closes.
        self.pump_relayed(now);
        for circuit in self.peers.values_mut().filter_map(|p| p.circuit.as_mut()) {
            circuit.client.close(now);
        }
        self.pump_relayed(now);
    }

    fn replay_early(&mut self, now: Instant) {
        for early in std::mem::take(&mut self.early) {
            let session = self.routes.get(&early.src).and_then(|p| self.peers.get_mut(p)?.session.as_mut());
            match (session, early.payload) {
                (Some(session), Payload::Envelope(kind)) => session.handle_on(now, early.socket, early.src, kind),
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
            Command::Ping(peer, seq) => {
                if let Err(error) = self.ping(now, &peer, seq) {
                    self.news.push_back((peer, Event::NotSent { error }));
                }
            }
            Command::Send(peer, payload) => {
                if let Err(error) = self.send(now, &peer, &payload) {
                    self.news.push_back((peer, Event::NotSent { error }));
                }
            }
            Command::CloseAll => self.close_all(now),
        }
    }
    fn handle_inbound(&mut self, inbound: Inbound) {
        let now = inbound.now;
        if let Payload::Envelope(kind) = &inbound.payload {
            if crate::relay::to_relay(kind) == Some(false) {
                // From a relay: every circuit through it looks (each checks nonce or circuit).
                let circuits = self.peers.values_mut().filter_map(|p| p.circuit.as_mut());
                for c in circuits.filter(|c| c.client.relay() == inbound.src) {
                    c.client.handle(now, inbound.src, kind.clone());
                }
                return self.pump_relayed(now);
            }
        }
        let session = self.routes.get(&inbound.src).and_then(|p| self.peers.get_mut(p)?.session.as_mut());
        match (session, inbound.payload) {
            (Some(session), Payload::Envelope(kind)) => session.handle_on(now, inbound.socket, inbound.src, kind),
            (None, payload @ Payload::Envelope(_)) => self.hold_early(Inbound { payload, ..inbound }),
            (_, Payload::Stun(_)) => {}
        }
        self.pump_relayed(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.expire_early(now);
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        for peer in self.peers.values_mut() {
            if let Some(session) = peer.session.as_mut().filter(|s| due(s.poll_timeout())) {
                session.handle_timeout(now);
            }
            if let Some(c) = peer.circuit.as_mut().filter(|c| due(c.client.poll_timeout())) {
                c.client.handle_timeout(now);
            }
        }
        self.pump_relayed(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        // Relayed sessions' own datagrams were moved into their circuits by `pump_relayed`.
        let direct = self.sessions_mut().filter(|s| s.path() != Path::Relayed).find_map(Session::poll_transmit);
        direct.or_else(|| self.outgoing.pop_front()).or_else(|| {
            self.peers.values_mut().filter_map(|p| p.circuit.as_mut()).find_map(|c| c.client.poll_transmit())
        })
    }
    fn poll_event(&mut self) -> Option<(PeerId, Event)> {
        if let Some(event) = self.news.pop_front() {
            return Some(event);
        }
        let event = self.sessions_mut().find_map(|s| s.poll_event().map(|e| (s.peer(), e)));
        if event.is_none() {
            for peer in self.peers.values_mut() {
                peer.session.take_if(|s| s.is_closed());
            }
            self.peers.retain(|_, p| !p.is_empty());
            let open = |p: &Peer| p.session.is_some();
            let peers = &self.peers;
            self.routes.retain(|_, p| peers.get(p).is_some_and(open));
        }
        event
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let early = self.early.front().map(|e| e.now + EARLY_TTL);
        let circuits = self.circuits().flat_map(|c| [c.client.poll_timeout(), c.retire_at]).flatten();
        self.sessions().filter_map(Session::poll_timeout).chain(early).chain(circuits).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::punch::{Path, Strategy};
    use crate::session::noise::{test_keys, Keyring, Keys};
    use crate::SocketId;
    use introducer_proto::pb::{self, envelope::Kind, session_message::Kind as Inner};
    use prost::Message as _;

    /// A datagram from `src`: a ping sealed with `keys` (any sealed bytes without).
    fn ping_from(src: SocketAddr, now: Instant, keys: Option<&Keys>) -> Inbound {
        let mut ring = Keyring::default();
        keys.into_iter().for_each(|k| ring.install(k, now));
        let ping = pb::SessionMessage { kind: Some(Inner::Ping(pb::Ping { seq: 0 })) }.encode_to_vec();
        let sealed = ring.seal(&ping).unwrap_or_default();
        Inbound { now, socket: SocketId::PRIMARY, src, len: 4, payload: Payload::Envelope(Kind::Sealed(sealed)) }
    }

    #[test]
    fn a_ping_that_beats_the_session_open_is_answered_when_it_opens() {
        let now = Instant::now();
        let peer: SocketAddr = "203.0.113.2:5000".parse().unwrap();
        let (theirs, ours) = test_keys(1, 9, Binding::Punch(&[1; 16]), 1);
        let mut sessions =
            Sessions::new(Config::default(), Identity::from_seed(9), rand::SeedableRng::seed_from_u64(9));
        sessions.handle_inbound(ping_from(peer, now, Some(&theirs)));
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
            keys: Some(ours),
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
            sessions.handle_inbound(ping_from(SocketAddr::from(([192, 0, 2, 1], i)), now, None));
        }
        assert_eq!(sessions.dropped_unknown_source, 4);
        // They age out on their own timer, not only when more arrive.
        assert_eq!(sessions.poll_timeout(), Some(now + EARLY_TTL));
        sessions.handle_timeout(now + EARLY_TTL);
        assert_eq!(sessions.dropped_unknown_source, 4 + EARLY_MAX as u64);
        assert_eq!(sessions.poll_timeout(), None);
    }
}
