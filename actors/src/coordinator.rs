//! The sequencing of a node's life, as a pure machine: first contact → NAT probing →
//! serving (if public) and registering → introductions → punching → sessions.
//!
//! Each protocol machine reports what happened; the coordinator decides what follows and
//! says so as [`Action`]s, which its driver carries out — the actix node by messaging the
//! actors, the simulator by calling the machines it owns. One copy of these decisions
//! serves both, so what the simulator proves is what the binary does.

use crate::broker;
use crate::identity::Identity;
use crate::nat::{NatReport, NatType};
use crate::probe::{LifetimeReport, ProbeError, Server};
use crate::punch::{self, Path, Strategy, Unpunchable};
use crate::registration::{self, Introduced};
use crate::session::{self, ProvenPath};
use introducer_proto::pb;
use libp2p_identity::PeerId;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Whether the node serves as introducer (and, later, relay) for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Once probing shows the node publicly reachable, or right away when it has nobody
    /// to ask (the first node of a new mesh).
    Auto,
    Never,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Register with the introducers once probed, so peers can reach us.
    pub register: bool,
    /// Birthday sockets to bind when probing finds a hard NAT.
    pub pool_size: u16,
    /// Never punch: every connection goes through the introducer's relay (benchmarks, or a
    /// peer that would rather not learn, or be learned by, the other's address).
    pub relay_only: bool,
    /// A punch that has not connected after this long also asks for a relay circuit,
    /// and keeps punching: a later direct path takes the session over.
    pub relay_after: Duration,
    pub serve: Serve,
    /// Standard STUN servers to probe with (besides, or instead of, the seeds).
    pub stun: Vec<SocketAddr>,
    /// Keep mappings alive within the lifetime probing measures (false when the user set
    /// the keepalive).
    pub adapt_keepalive: bool,
}

/// What the node reports to its user.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// NAT known (when it could be probed); `public` nodes serve as introducers.
    Ready {
        peer_id: PeerId,
        listen: Vec<SocketAddr>,
        public: bool,
        nat: Option<NatReport>,
    },
    /// An introducer accepted our registration (again, if our public address changed).
    Registered {
        introducer: SocketAddr,
        observed: SocketAddr,
    },
    IntroducerUnreachable {
        introducer: SocketAddr,
    },
    /// A peer is reachable over `remote`. `connect` runs from asking for the introduction
    /// (for the introduced side, from the introduction) to the first authenticated answer.
    Connected {
        peer: PeerId,
        remote: SocketAddr,
        path: Path,
        strategy: Strategy,
        connect: Duration,
        probes: u32,
    },
    ConnectFailed {
        peer: PeerId,
        reason: String,
    },
    Pong {
        peer: PeerId,
        seq: u64,
        rtt: Duration,
        path: Path,
    },
    Data {
        peer: PeerId,
        payload: Vec<u8>,
    },
    Disconnected {
        peer: PeerId,
        reason: String,
    },
    /// Introducer role: a peer registered with us.
    PeerRegistered {
        peer: PeerId,
        addr: SocketAddr,
    },
    /// Introducer role: we introduced two peers.
    Introduced {
        requester: PeerId,
        target: PeerId,
    },
    /// Relay role: we carry a circuit between two peers.
    Relaying {
        peers: [PeerId; 2],
    },
    /// Our NAT kept idle mappings `at_least` long, not `below`; `keepalive` is what
    /// registrations and sessions now use (`None`: left as configured).
    MappingLifetime {
        at_least: Option<Duration>,
        below: Option<Duration>,
        keepalive: Option<Duration>,
    },
    /// A session moved to a newly punched path: after our NAT mapped us anew (or the
    /// peer's did), or because the peer punched again.
    Moved {
        peer: PeerId,
        remote: SocketAddr,
        path: Path,
        strategy: Strategy,
    },
    /// A relayed peer became reachable directly: the session moved to the direct path.
    Upgraded {
        peer: PeerId,
        remote: SocketAddr,
        path: Path,
        strategy: Strategy,
    },
    /// Named counters of what was received, sent and dropped (the driver's).
    Stats(Vec<(&'static str, u64)>),
    /// The node cannot go on (no bootstrap node answered, probing failed).
    Fatal {
        message: String,
    },
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// First contact with these seeds; report with [`Coordinator::on_joined`].
    Join(Vec<SocketAddr>),
    /// Classify our NAT; report with [`Coordinator::on_probe`]. The driver knows our
    /// local address and tells it with [`Coordinator::set_private`].
    Probe {
        servers: Vec<Server>,
        pad_requests: bool,
    },
    /// Take the introducer role (route registrations and introduction requests to the broker).
    Serve,
    /// Bind this many sockets for birthday punching and hand them to the punch machine
    /// (we are behind a hard NAT); report with [`Coordinator::on_pool_ready`].
    BindPool(u16),
    Register {
        introducers: Vec<SocketAddr>,
        record: pb::SignedPeerRecord,
    },
    Introduce(PeerId),
    /// The punch with this peer is over: stop re-asking its introduction.
    Settle(PeerId),
    /// Start punching; report a refusal with [`Coordinator::on_punch_refused`].
    Punch {
        nat: NatReport,
        introduced: Box<Introduced>,
    },
    OpenSession(ProvenPath),
    /// No direct path: ask `relay` for the circuit of the introduction `nonce`.
    Relay {
        peer: PeerId,
        relay: SocketAddr,
        nonce: Vec<u8>,
        controlling: bool,
    },
    /// A further address the peer proved itself over: take its session traffic too.
    AddPath {
        peer: PeerId,
        addr: SocketAddr,
    },
    /// Registrations and sessions refresh their mappings this often (at most).
    Keepalive(Duration),
    /// Close the birthday pool's sockets (the punch machine no longer uses them).
    ClosePool(u16),
    /// Relay role: we introduced `peers` with `nonce`; our relay may carry their circuit.
    AuthorizeCircuit {
        nonce: [u8; 16],
        peers: [PeerId; 2],
    },
    Emit(Event),
}

/// A seed that answered first contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub addr: SocketAddr,
    pub introducer: bool,
}

pub struct Coordinator {
    config: Config,
    identity: Identity,
    listen: Vec<SocketAddr>,
    seeds: Vec<Seed>,
    nat: Option<NatReport>,
    /// Our LAN address, as peers behind the same NAT reach us.
    private: Option<SocketAddr>,
    registered: BTreeSet<SocketAddr>,
    /// Connects waiting for a registration.
    waiting: Vec<PeerId>,
    /// When each connect asked for its introduction (the start of `connect`).
    asked: HashMap<PeerId, Instant>,
    paths: HashMap<PeerId, Path>,
    /// A registration held back until the birthday pool is bound: nobody may be
    /// introduced to us before we can punch back.
    held_registration: Option<Action>,
    /// Introductions whose punch is under way: by whom, with which nonce, and whether we
    /// asked — what a fallback to the introducer's relay needs.
    introductions: HashMap<PeerId, (SocketAddr, Vec<u8>, bool)>,
    /// When each punch under way falls back to the relay too.
    relay_deadlines: HashMap<PeerId, Instant>,
    /// Peers whose relay circuit is being set up: the introduction keeps being repeated
    /// (the other side's copy may have been lost, and it must ask for the circuit too),
    /// and the repeats are ignored here.
    relaying: HashSet<PeerId>,
    /// A BindPool is under way (its `on_pool_ready` has not come yet).
    binding_pool: bool,
    actions: VecDeque<Action>,
}

impl Coordinator {
    pub fn new(config: Config, identity: Identity, listen: Vec<SocketAddr>) -> Self {
        Coordinator {
            config,
            identity,
            listen,
            seeds: Vec::new(),
            nat: None,
            private: None,
            registered: BTreeSet::new(),
            waiting: Vec::new(),
            asked: HashMap::new(),
            paths: HashMap::new(),
            held_registration: None,
            introductions: HashMap::new(),
            relay_deadlines: HashMap::new(),
            relaying: HashSet::new(),
            binding_pool: false,
            actions: VecDeque::new(),
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn nat(&self) -> Option<&NatReport> {
        self.nat.as_ref()
    }

    pub fn is_registered(&self) -> bool {
        !self.registered.is_empty()
    }

    fn emit(&mut self, event: Event) {
        self.actions.push_back(Action::Emit(event));
    }

    fn ready(&mut self, public: bool) {
        let (peer_id, listen, nat) = (self.identity.peer_id(), self.listen.clone(), self.nat);
        self.emit(Event::Ready { peer_id, listen, public, nat });
    }

    /// Starts the node: joins the seeds, or probes against STUN servers, or — with
    /// nobody to ask — becomes the first node of a new mesh.
    pub fn start(&mut self, seeds: Vec<SocketAddr>) {
        if !seeds.is_empty() {
            self.actions.push_back(Action::Join(seeds));
        } else if !self.config.stun.is_empty() {
            self.on_joined(Ok(Vec::new()));
        } else {
            if self.config.serve == Serve::Auto {
                self.actions.push_back(Action::Serve);
            }
            self.ready(true);
        }
    }

    /// First contact is over.
    pub fn on_joined(&mut self, joined: Result<Vec<Seed>, String>) {
        match joined {
            Ok(seeds) => {
                let servers = seeds.iter().map(|s| s.addr).chain(self.config.stun.iter().copied()).map(Server::new);
                // Padding keeps our nodes' answers no larger than the question, but
                // standard servers (coturn) answer it with a path-MTU-sized datagram.
                let pad_requests = self.config.stun.is_empty();
                self.actions.push_back(Action::Probe { servers: servers.collect(), pad_requests });
                self.seeds = seeds;
            }
            Err(message) => self.emit(Event::Fatal { message }),
        }
    }

    /// Our LAN endpoint, as the driver determined it before probing.
    pub fn set_private(&mut self, private: Option<SocketAddr>) {
        self.private = private;
    }

    pub fn on_probe(&mut self, now_unix_ms: u64, result: Result<NatReport, ProbeError>) {
        let report = match result {
            Ok(report) => report,
            Err(e) => return self.emit(Event::Fatal { message: format!("NAT probing failed: {e}") }),
        };
        self.nat = Some(report);
        let public = report.nat_type() == NatType::Public;
        if public && self.config.serve == Serve::Auto {
            self.actions.push_back(Action::Serve);
        }
        let hard = report.nat_type() == NatType::Hard;
        if hard {
            self.bind_pool();
        }
        self.ready(public);
        let introducers: Vec<SocketAddr> = self.seeds.iter().filter(|s| s.introducer).map(|s| s.addr).collect();
        if self.config.register && !introducers.is_empty() {
            let record = self.signed_record(now_unix_ms);
            let register = Action::Register { introducers, record };
            match hard {
                true => self.held_registration = Some(register),
                false => self.actions.push_back(register),
            }
        }
    }

    /// Probing timed our NAT's idle mappings: keep ours alive within that.
    pub fn on_lifetime(&mut self, report: LifetimeReport) {
        // The registration keepalive stands unless the NAT forgets sooner.
        let default = registration::Config::default().keepalive;
        let keepalive = self.config.adapt_keepalive.then(|| report.keepalive(default));
        if let Some(keepalive) = keepalive.filter(|_| report.below.is_some()) {
            self.actions.push_back(Action::Keepalive(keepalive));
        }
        let LifetimeReport { at_least, below } = report;
        self.emit(Event::MappingLifetime { at_least, below, keepalive });
    }

    fn bind_pool(&mut self) {
        if !std::mem::replace(&mut self.binding_pool, true) {
            self.actions.push_back(Action::BindPool(self.config.pool_size));
        }
    }

    /// The birthday pool is bound: what waited for it may go.
    pub fn on_pool_ready(&mut self) {
        self.binding_pool = false;
        self.actions.extend(self.held_registration.take());
    }

    fn signed_record(&self, now_unix_ms: u64) -> pb::SignedPeerRecord {
        let record = pb::PeerRecord {
            peer_id: Default::default(),
            private_addrs: self.private.into_iter().map(Into::into).collect(),
            nat: self.nat.as_ref().map(Into::into),
            issued_ms: now_unix_ms,
        };
        self.identity.sign_record(record)
    }

    /// The user wants to reach `peer`.
    pub fn connect(&mut self, now: Instant, peer: PeerId) {
        if self.registered.is_empty() {
            self.waiting.push(peer);
        } else {
            self.ask_introduction(now, peer);
        }
    }

    fn ask_introduction(&mut self, now: Instant, peer: PeerId) {
        self.asked.insert(peer, now);
        self.actions.push_back(Action::Introduce(peer));
    }

    /// The introducer sees us at a new address: our NAT dropped our mappings and made new
    /// ones, so peers' datagrams go to mappings that are gone. Punch every direct session
    /// again; each moves to its new path when the punch succeeds. (A port-preserving NAT
    /// re-creates the same mappings and needs none of this.)
    fn repunch(&mut self) {
        let direct =
            self.paths.iter().filter(|(p, path)| **path != Path::Relayed && !self.introductions.contains_key(p));
        let peers: Vec<PeerId> = direct.map(|(p, _)| *p).collect();
        for peer in peers {
            tracing::info!(%peer, "mapped anew: punching again");
            self.actions.push_back(Action::Introduce(peer));
        }
    }

    fn fail(&mut self, peer: PeerId, reason: String) {
        self.asked.remove(&peer);
        self.introductions.remove(&peer);
        self.relaying.remove(&peer);
        self.actions.push_back(Action::Settle(peer));
        self.emit(Event::ConnectFailed { peer, reason });
    }

    pub fn on_broker(&mut self, event: broker::Event) {
        match event {
            broker::Event::Registered { peer, addr } => self.emit(Event::PeerRegistered { peer, addr }),
            broker::Event::Introduced { requester, target, nonce } => {
                // Our relay carries their circuit if their punch needs one.
                self.actions.push_back(Action::AuthorizeCircuit { nonce, peers: [requester, target] });
                self.emit(Event::Introduced { requester, target })
            }
            broker::Event::Expired { peer } => tracing::info!(%peer, "registration expired"),
        }
    }

    pub fn on_registration(&mut self, now: Instant, introducer: SocketAddr, event: registration::Event) {
        use registration::Event as R;
        match event {
            R::Registered { observed } => {
                let remapped = !self.registered.insert(introducer);
                self.emit(Event::Registered { introducer, observed });
                if remapped {
                    self.repunch();
                }
                for peer in std::mem::take(&mut self.waiting) {
                    self.ask_introduction(now, peer);
                }
            }
            R::Unreachable => {
                self.registered.remove(&introducer);
                self.emit(Event::IntroducerUnreachable { introducer });
                if self.registered.is_empty() {
                    for peer in std::mem::take(&mut self.waiting) {
                        self.fail(peer, format!("introducer {introducer} did not answer our registration"));
                    }
                }
            }
            R::Introduced(introduced) if self.relaying.contains(&introduced.peer.peer_id) => {}
            R::Introduced(introduced) => {
                if let Some(nat) = self.nat {
                    let info = (introducer, introduced.nonce.clone(), introduced.initiator);
                    let peer = introduced.peer.peer_id;
                    self.introductions.insert(peer, info);
                    if self.config.relay_only {
                        self.relay(peer);
                    } else {
                        self.relay_deadlines.entry(peer).or_insert(now + self.config.relay_after);
                        self.actions.push_back(Action::Punch { nat, introduced });
                    }
                }
            }
            R::IntroduceFailed { target, reason } => self.fail(target, reason),
        }
    }

    /// The punch machine refused an introduction (two hard NATs, too busy): the relay
    /// carries it instead, if there is one.
    pub fn on_punch_refused(&mut self, peer: PeerId, initiator: bool, why: Unpunchable) {
        tracing::info!(%peer, "not punching: {why}");
        if self.relay(peer) {
            return;
        }
        if initiator {
            self.fail(peer, why.to_string());
        } else {
            tracing::warn!(%peer, "{why}");
        }
    }

    /// When [`Coordinator::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.relay_deadlines.values().min().copied()
    }

    /// Punches that have taken too long get a relay circuit as well.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self.relay_deadlines.iter().filter(|(_, t)| **t <= now).map(|(p, _)| *p).collect();
        for peer in due {
            self.relay_deadlines.remove(&peer);
            if !self.paths.contains_key(&peer) {
                self.relay(peer);
            }
        }
    }

    /// Falls back to the introducer's relay for `peer`, if an introduction names one.
    fn relay(&mut self, peer: PeerId) -> bool {
        let Some((relay, nonce, controlling)) = self.introductions.remove(&peer) else { return false };
        tracing::info!(%peer, %relay, "no direct path: relaying");
        // The introduction is settled once the circuit is ready (both sides asked for it).
        self.relaying.insert(peer);
        self.actions.push_back(Action::Relay { peer, relay, nonce, controlling });
        true
    }

    /// Relay role: what our relay did.
    pub fn on_relay(&mut self, event: crate::relay::server::Event) {
        match event {
            crate::relay::server::Event::Ready { peers, .. } => self.emit(Event::Relaying { peers }),
            other => tracing::debug!(?other, "relay"),
        }
    }

    pub fn on_punch(&mut self, now: Instant, event: punch::Event) {
        match event {
            punch::Event::Connected { peer, socket, remote, proven, initiator, path, strategy, probes, elapsed } => {
                self.introductions.remove(&peer);
                self.relay_deadlines.remove(&peer);
                // A circuit still being set up closes when the session moves (Sessions::open).
                self.relaying.remove(&peer);
                let before = self.paths.insert(peer, path);
                self.actions.push_back(Action::Settle(peer));
                let opened = ProvenPath { peer, socket, remote, proven, controlling: initiator, path, strategy };
                self.actions.push_back(Action::OpenSession(opened));
                match before {
                    Some(Path::Relayed) => self.emit(Event::Upgraded { peer, remote, path, strategy }),
                    Some(_) if !self.asked.contains_key(&peer) => {
                        self.emit(Event::Moved { peer, remote, path, strategy })
                    }
                    _ => {
                        let connect = self.asked.remove(&peer).map_or(elapsed, |t| now.saturating_duration_since(t));
                        self.emit(Event::Connected { peer, remote, path, strategy, connect, probes });
                    }
                }
            }
            punch::Event::PathProven { peer, addr } => self.actions.push_back(Action::AddPath { peer, addr }),
            punch::Event::NeedPool => self.bind_pool(),
            punch::Event::PoolIdle => self.actions.push_back(Action::ClosePool(self.config.pool_size)),
            punch::Event::Failed { peer, reason } => {
                tracing::info!(%peer, "punch failed: {reason}");
                self.relay_deadlines.remove(&peer);
                // Already relayed (the fallback came first), or relaying now: nothing failed.
                if self.paths.contains_key(&peer) || self.relay(peer) {
                    return;
                }
                if self.asked.contains_key(&peer) {
                    self.fail(peer, reason);
                } else {
                    tracing::info!(%peer, "{reason}");
                }
            }
        }
    }

    pub fn on_session(&mut self, now: Instant, peer: PeerId, event: session::Event) {
        let path = self.paths.get(&peer).copied().unwrap_or(Path::Direct);
        let event = match event {
            session::Event::Relayed { .. } if self.paths.get(&peer).is_some_and(|p| *p != Path::Relayed) => {
                // The punch won the race: the direct session already replaced this one.
                return;
            }
            session::Event::Relayed { relay } => {
                let connect = self.asked.remove(&peer).map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                self.relaying.remove(&peer);
                self.paths.insert(peer, Path::Relayed);
                self.actions.push_back(Action::Settle(peer));
                let (path, strategy) = (Path::Relayed, Strategy::Relay);
                Event::Connected { peer, remote: relay, path, strategy, connect, probes: 0 }
            }
            session::Event::RelayFailed { reason } => {
                self.relaying.remove(&peer);
                self.actions.push_back(Action::Settle(peer));
                if self.asked.contains_key(&peer) {
                    return self.fail(peer, format!("no direct path, and the relay failed: {reason}"));
                }
                tracing::info!(%peer, "relay failed: {reason}");
                return;
            }
            session::Event::Pong { seq, rtt } => Event::Pong { peer, seq, rtt, path },
            session::Event::Data(payload) => Event::Data { peer, payload },
            session::Event::Closed { reason } => {
                self.paths.remove(&peer);
                Event::Disconnected { peer, reason }
            }
        };
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::verify_record;
    use crate::nat::NatBehavior;

    fn introduced(me: &Identity, peer: &Identity, nat: &NatReport) -> registration::Event {
        let record = peer.sign_record(pb::PeerRecord { nat: Some(nat.into()), ..Default::default() });
        registration::Event::Introduced(Box::new(Introduced {
            request_id: 1,
            peer: verify_record(&record).unwrap(),
            peer_public: nat.public_addr,
            nonce: vec![9; 16],
            initiator: me.peer_id() < peer.peer_id(),
            fresh: false,
            introducer: "192.0.2.1:3478".parse().unwrap(),
        }))
    }

    fn probed(relay_only: bool, nat: NatReport) -> Coordinator {
        let config = Config {
            register: true,
            serve: Serve::Auto,
            stun: vec![],
            pool_size: 4,
            relay_only,
            relay_after: Duration::from_secs(5),
            adapt_keepalive: true,
        };
        let mut c = Coordinator::new(config, Identity::from_seed(1), vec![]);
        c.on_joined(Ok(vec![Seed { addr: "198.51.100.1:3478".parse().unwrap(), introducer: true }]));
        c.on_probe(0, Ok(nat));
        std::iter::from_fn(|| c.poll_action()).for_each(drop);
        c
    }

    /// Now, a port-restricted NAT's report, the introducer, and two peers.
    fn easy_peers() -> (Instant, NatReport, SocketAddr, Identity, Identity) {
        let easy = NatBehavior::PORT_RESTRICTED.expected_report("203.0.113.1:3478".parse().unwrap());
        let introducer = "198.51.100.1:3478".parse().unwrap();
        (Instant::now(), easy, introducer, Identity::from_seed(1), Identity::from_seed(2))
    }

    #[test]
    fn an_introduction_is_punched_or_relayed_as_configured() {
        let (now, easy, introducer, me, peer) = easy_peers();

        let mut punching = probed(false, easy);
        punching.on_registration(now, introducer, introduced(&me, &peer, &easy));
        assert!(matches!(punching.poll_action(), Some(Action::Punch { .. })));

        let mut relaying = probed(true, easy);
        relaying.on_registration(now, introducer, introduced(&me, &peer, &easy));
        match relaying.poll_action() {
            Some(Action::Relay { peer: p, relay, nonce, .. }) => {
                assert_eq!((p, relay, nonce), (peer.peer_id(), introducer, vec![9; 16]));
            }
            other => panic!("expected a relay, got {other:?}"),
        }
    }

    #[test]
    fn two_hard_sides_fall_back_to_the_introducers_relay_and_a_hard_node_registers_after_its_pool() {
        let now = Instant::now();
        let hard = NatBehavior::SYMMETRIC_RANDOM.expected_report("203.0.113.1:3478".parse().unwrap());
        let config = Config {
            register: true,
            serve: Serve::Auto,
            stun: vec![],
            pool_size: 4,
            relay_only: false,
            relay_after: Duration::from_secs(5),
            adapt_keepalive: true,
        };
        let mut c = Coordinator::new(config, Identity::from_seed(1), vec![]);
        let introducer: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        c.on_joined(Ok(vec![Seed { addr: introducer, introducer: true }]));
        std::iter::from_fn(|| c.poll_action()).for_each(drop);
        c.on_probe(0, Ok(hard));
        let actions: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
        assert!(actions.iter().any(|a| matches!(a, Action::BindPool(4))));
        assert!(!actions.iter().any(|a| matches!(a, Action::Register { .. })), "no registration before the pool");
        c.on_pool_ready();
        assert!(matches!(c.poll_action(), Some(Action::Register { .. })));

        let peer = Identity::from_seed(2);
        c.on_registration(now, introducer, introduced(&Identity::from_seed(1), &peer, &hard));
        assert!(matches!(c.poll_action(), Some(Action::Punch { .. })));
        c.on_punch_refused(peer.peer_id(), true, Unpunchable::BothHard);
        assert!(matches!(c.poll_action(), Some(Action::Relay { relay, .. }) if relay == introducer));
        // Repeats of the introduction (for the other side's sake) change nothing here; the
        // ready circuit settles it.
        c.on_registration(now, introducer, introduced(&Identity::from_seed(1), &peer, &hard));
        assert_eq!(c.poll_action(), None);
        c.on_session(now, peer.peer_id(), session::Event::Relayed { relay: introducer });
        assert_eq!(c.poll_action(), Some(Action::Settle(peer.peer_id())), "no more repeats of the introduction");
    }

    /// A punch that wins while the fallback circuit is still being set up ends the relaying:
    /// a later introduction to that peer is punched again, not ignored.
    #[test]
    fn a_punch_that_beats_the_circuit_leaves_later_introductions_alone() {
        let (now, easy, introducer, me, peer) = easy_peers();
        let mut c = probed(false, easy);
        c.on_registration(now, introducer, introduced(&me, &peer, &easy));
        assert!(matches!(c.poll_action(), Some(Action::Punch { .. })));
        c.handle_timeout(now + Duration::from_secs(5));
        assert!(matches!(c.poll_action(), Some(Action::Relay { .. })), "the punch is slow: a circuit too");
        let remote = "203.0.113.9:4000".parse().unwrap();
        let (path, strategy) = (Path::Direct, Strategy::SimultaneousOpen);
        let connected = punch::Event::Connected {
            peer: peer.peer_id(),
            socket: crate::SocketId::PRIMARY,
            remote,
            proven: vec![remote],
            initiator: true,
            path,
            strategy,
            probes: 3,
            elapsed: Duration::from_secs(6),
        };
        c.on_punch(now + Duration::from_secs(6), connected);
        std::iter::from_fn(|| c.poll_action()).for_each(drop);
        c.on_registration(now, introducer, introduced(&me, &peer, &easy));
        assert!(matches!(c.poll_action(), Some(Action::Punch { .. })), "a new introduction is punched");
    }
}
