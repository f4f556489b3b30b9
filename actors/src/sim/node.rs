//! A whole introducer node as one simulated host: [`SimNode`] drives the node's own
//! [`Coordinator`] — the same sequencing the real node runs — over the protocol machines it
//! owns, and routes each datagram with [`classify`] exactly as the socket actor would.
//!
//! The sequencing, step for step:
//!
//! - an **introducer** ([`SimNode::introducer`]) is the first node of a mesh: it serves
//!   (broker route on) from the start and answers STUN on one address, or on 2 IPs × 2 ports
//!   (RFC 5780) with [`SimNode::alternate_ip`];
//! - a **peer** ([`SimNode::peer`]) probes its NAT against its introducers → if public (and
//!   allowed to serve), serves → registers a signed record (private address + NAT report)
//!   with every introducer → on `Registered`, asks the introductions it was waiting for →
//!   on `Introduced`, starts a punch attempt → on `Connected`, opens a session (and pings,
//!   with [`SimNode::pings`]).
//!
//! Nothing here decides anything: machine events go to the coordinator, its actions go to
//! the machines, and its events are recorded as [`SimEvent`]s (the node's `NodeEvent`s)
//! for tests to assert on. The one difference in timing: the real node's actors hand
//! events on through mailboxes, here they are handled at the same virtual instant.
//!
//! ```
//! use introducer_actors::identity::Identity;
//! use introducer_actors::nat::NatBehavior;
//! use introducer_actors::sim::node::SimNode;
//! use introducer_actors::sim::{Place, Sim};
//! use introducer_actors::SocketId;
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(1);
//! let introducer = SimNode::introducer(Identity::from_seed(100))
//!     .alternate_ip([198, 51, 100, 2].into())
//!     .spawn(&mut sim, Place::Public([198, 51, 100, 1].into()), 3478);
//! let introducers = vec![sim.local_addr(introducer, SocketId::PRIMARY)];
//! let nat = sim.add_nat(NatBehavior::PORT_RESTRICTED, [203, 0, 113, 1].into(), None);
//! let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
//! let target = bob.peer_id();
//! let a = SimNode::peer(alice, introducers.clone())
//!     .pings(2, Duration::from_secs(1))
//!     .spawn(&mut sim, Place::Behind(nat), 5000);
//! let b = SimNode::peer(bob, introducers).spawn(&mut sim, Place::Public([192, 0, 2, 7].into()), 5000);
//!
//! let node = |s: &Sim, h| s.machine_ref::<SimNode>(h).is_registered();
//! assert!(sim.run_until_cond(Duration::from_secs(5), |s| node(s, a) && node(s, b)));
//! let now = sim.now();
//! sim.machine::<SimNode>(a).connect(now, target);
//! let pinged = |s: &Sim| s.machine_ref::<SimNode>(a).pongs(&target).len() == 2;
//! assert!(sim.run_until_cond(Duration::from_secs(5), pinged));
//! let connected = sim.machine_ref::<SimNode>(a).connected(&target).unwrap();
//! assert_eq!((connected.path.as_str(), connected.strategy.as_str()), ("direct", "direct"));
//! ```

use super::{HostId, Place, Sim};
use crate::broker::{self, Broker};
use crate::coordinator::{self, Action, Coordinator, Event, Serve};
use crate::driver::Protocol;
use crate::identity::Identity;
use crate::nat::NatReport;
use crate::probe::actor::{probe_socket, NatProbing, ProbeEvent};
use crate::probe::{Layout, LocalSockets, Probe, ProbeConfig, Responder, Server};
use crate::punch::{self, actor::pool_socket, actor::Attempts, Path, Strategy};
use crate::registration::{self, actor::Registrations};
use crate::relay::server::{Relay, RelayConfig};
use crate::session::{self, actor::Sessions, SendError};
use crate::socket::{classify, Inbound, Route};
use crate::{Machine, SocketId, Transmit};
use libp2p_identity::PeerId;
use rand::SeedableRng;
use std::collections::{BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// What the node reported: the coordinator's events, as the real node emits them.
pub type SimEvent = Event;

/// The protocol timings and role switches of a node (the node crate's `Config`, minus
/// sockets and bootstrap: sim nodes are given their introducers directly).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub registration: registration::Config,
    pub broker: broker::Config,
    pub punch: punch::Config,
    pub session: session::Config,
    /// Serve as introducer once probing shows the node public (`Serve::Auto`); off is
    /// `Serve::Never`, as `introducer ping` runs. Introducer nodes always serve.
    pub serve: bool,
    /// Register with the introducers once probed.
    pub register: bool,
    /// A punch not connected after this long also gets a relay circuit.
    pub relay_after: Duration,
    /// Keep mappings alive within the lifetime probing measures.
    pub adapt_keepalive: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            registration: Default::default(),
            broker: Default::default(),
            punch: Default::default(),
            session: Default::default(),
            serve: true,
            register: true,
            relay_after: Duration::from_secs(5),
            adapt_keepalive: true,
        }
    }
}

/// A successful punch, as the node's `connected` event reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Connected {
    pub peer: PeerId,
    pub remote: SocketAddr,
    pub path: Path,
    pub strategy: Strategy,
    /// Punch proofs this side had sent when the path was proven.
    pub probes: u32,
    /// The CLI's `connect_ms`: from asking for the introduction to the first authenticated
    /// answer (for the introduced side, from the introduction).
    pub connect: Duration,
    /// When it connected.
    pub at: Instant,
}

impl Connected {
    pub fn connect_ms(&self) -> f64 {
        self.connect.as_secs_f64() * 1000.0
    }
}

/// What each part of the node dropped or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops {
    /// Datagrams `classify` refused (the socket actor's `dropped_malformed`).
    pub malformed: u64,
    /// Datagrams for a route nobody takes here: Broker while not serving, Bootstrap.
    pub unrouted: u64,
    /// STUN requests the responder did not answer.
    pub stun_unanswered: u64,
    /// Introducer role (zero while not serving).
    pub broker: broker::Stats,
    /// Per introducer we register with.
    pub registration: Vec<(SocketAddr, registration::Stats)>,
    pub punch_unknown_nonce: u64,
    pub session_unknown_source: u64,
    /// Relay role (zero while not serving).
    pub relay: crate::relay::server::Stats,
}

#[derive(Debug, Clone)]
enum Role {
    Introducer { alternate: Option<Ipv4Addr> },
    Peer { introducers: Vec<SocketAddr> },
}

/// A node on the simulator. Build it with [`SimNode::introducer`] or [`SimNode::peer`],
/// put it on the network with [`SimNode::spawn`], then drive it through
/// [`Sim::machine`] (commands) and [`Sim::machine_ref`] (what happened).
pub struct SimNode {
    identity: Identity,
    role: Role,
    config: NodeConfig,
    seed: u64,
    /// For the record's `issued_ms`: virtual milliseconds since this node started.
    epoch: Option<Instant>,
    coordinator: Coordinator,

    probing: NatProbing,
    /// `Some` once serving: the broker and relay routes are on.
    broker: Option<Broker>,
    relay: Option<Relay>,
    registrations: Registrations,
    attempts: Attempts,
    sessions: Sessions,

    registered: BTreeSet<SocketAddr>,
    connections: Vec<Connected>,
    connect_at: Option<(Instant, PeerId)>,
    ping_plan: Option<(u32, Duration)>,
    /// Peers this node asked for (the ones `pings` applies to).
    asked: Vec<PeerId>,
    /// Pings still to send: peer, when, how many left.
    pinging: Vec<(PeerId, Instant, u32)>,

    /// The probe's extra sockets, bound at spawn.
    probe_extra: Vec<SocketAddr>,
    /// The primary socket's address (what probing compares the mapped address with).
    private: Option<SocketAddr>,
    /// Birthday sockets, bound at spawn.
    pool: Vec<SocketId>,
    /// Times the birthday pool was bound, and closed when idle.
    pools_bound: u32,
    pools_closed: u32,
    out: VecDeque<Transmit>,
    events: Vec<(Instant, SimEvent)>,
    malformed: u64,
    unrouted: u64,
}

impl SimNode {
    fn new(identity: Identity, role: Role) -> Self {
        let config = NodeConfig::default();
        SimNode {
            coordinator: Self::coordinator(&config, &identity),
            probing: NatProbing::new(None),
            broker: None,
            relay: None,
            registrations: Registrations::new(config.registration.clone()),
            attempts: Attempts::new(config.punch.clone(), identity.clone(), sim_secret(&identity)),
            sessions: Sessions::new(config.session.clone(), identity.clone(), sim_secret(&identity)),
            identity,
            role,
            config,
            seed: 0,
            epoch: None,
            registered: BTreeSet::new(),
            connections: Vec::new(),
            connect_at: None,
            ping_plan: None,
            asked: Vec::new(),
            pinging: Vec::new(),
            probe_extra: Vec::new(),
            private: None,
            pool: Vec::new(),
            pools_bound: 0,
            pools_closed: 0,
            out: VecDeque::new(),
            events: Vec::new(),
            malformed: 0,
            unrouted: 0,
        }
    }

    fn coordinator(config: &NodeConfig, identity: &Identity) -> Coordinator {
        let serve = if config.serve { Serve::Auto } else { Serve::Never };
        let config = coordinator::Config {
            register: config.register,
            serve,
            stun: Vec::new(),
            pool_size: config.punch.pool_size,
            relay_only: false,
            relay_after: config.relay_after,
            adapt_keepalive: config.adapt_keepalive,
        };
        Coordinator::new(config, identity.clone(), Vec::new())
    }

    /// A public node that starts a mesh: it serves from the start and does not probe.
    pub fn introducer(identity: Identity) -> Self {
        SimNode::new(identity, Role::Introducer { alternate: None })
    }

    /// A node that probes against `introducers`, registers with them, and connects when
    /// told to.
    pub fn peer(identity: Identity, introducers: Vec<SocketAddr>) -> Self {
        SimNode::new(identity, Role::Peer { introducers })
    }

    /// Introducers only: a second IP, for the RFC 5780 layout (2 IPs × ports P, P+1).
    pub fn alternate_ip(mut self, ip: Ipv4Addr) -> Self {
        match &mut self.role {
            Role::Introducer { alternate } => *alternate = Some(ip),
            Role::Peer { .. } => panic!("only an introducer listens on two IPs"),
        }
        self
    }

    pub fn config(mut self, config: NodeConfig) -> Self {
        self.coordinator = Self::coordinator(&config, &self.identity);
        self.registrations = Registrations::new(config.registration.clone());
        self.attempts = Attempts::new(config.punch.clone(), self.identity.clone(), sim_secret(&self.identity));
        self.sessions = Sessions::new(config.session.clone(), self.identity.clone(), self.seed);
        self.config = config;
        self
    }

    /// Calls [`SimNode::connect`] at `at`.
    pub fn connect_at(mut self, at: Instant, target: PeerId) -> Self {
        self.connect_at = Some((at, target));
        self
    }

    /// Once connected to a peer it asked for, pings it `count` times, `interval` apart
    /// (the first right away), as `introducer ping --count --interval` does.
    pub fn pings(mut self, count: u32, interval: Duration) -> Self {
        self.ping_plan = Some((count, interval));
        self
    }

    /// Adds the node to `sim` at `place`, binds its sockets and starts it; its RNG seed is
    /// derived from the simulation's. Primary socket on `port`; an introducer with an
    /// alternate IP also binds (ip0, port+1), (ip1, port), (ip1, port+1), as the real node
    /// does for two `--listen` addresses; a peer binds the probe's extra sockets at
    /// ephemeral ports.
    pub fn spawn(self, sim: &mut Sim, place: Place, port: u16) -> HostId {
        let role = self.role.clone();
        let host = sim.add_host(place, self);
        let seed = sim.derive_seed(host.index() as u32);
        let primary = sim.bind(host, SocketId::PRIMARY, port);
        let now = sim.now();
        match role {
            Role::Introducer { alternate } => {
                let layout = match alternate {
                    None => Layout::single(SocketId::PRIMARY, primary),
                    Some(ip1) => {
                        sim.add_ip(host, ip1);
                        let ip0 = sim.host_ip(host);
                        let alt = port.checked_add(1).expect("the alternate port is port + 1");
                        sim.bind_addr(host, SocketId(1), SocketAddrV4::new(ip0, alt));
                        sim.bind_addr(host, SocketId(2), SocketAddrV4::new(ip1, port));
                        let far = sim.bind_addr(host, SocketId(3), SocketAddrV4::new(ip1, alt));
                        let sockets = [SocketId::PRIMARY, SocketId(1), SocketId(2), SocketId(3)];
                        Layout::rfc5780(primary, far, sockets).expect("two IPs, two ports")
                    }
                };
                let node = sim.machine::<SimNode>(host);
                node.probing = NatProbing::new(Some(Responder::new(layout)));
                node.start(now, seed, Vec::new());
            }
            Role::Peer { introducers } => {
                let servers = introducers.iter().map(|&a| Server::new(a)).collect();
                let extra = Probe::sockets_needed(&ProbeConfig::new(servers));
                let extra = (1..=extra).map(|i| sim.bind(host, probe_socket(i), 0)).collect();
                // The simulator cannot bind later, from inside the node: the birthday pool is
                // bound up front and handed over when the coordinator asks for it.
                let pool_size = sim.machine::<SimNode>(host).config.punch.pool_size;
                let pool = (0..pool_size).map(pool_socket).collect::<Vec<_>>();
                for &socket in &pool {
                    sim.bind(host, socket, 0);
                }
                let node = sim.machine::<SimNode>(host);
                node.pool = pool;
                node.probing = NatProbing::new(Some(Responder::new(Layout::single(SocketId::PRIMARY, primary))));
                node.coordinator.set_private(Some(primary));
                node.private = Some(primary);
                node.start(now, seed, extra);
            }
        }
        host
    }

    /// Starts the coordinator. Sim peers skip first contact: their introducers are
    /// known, so the join is reported at once and probing uses the bound `extra` sockets.
    fn start(&mut self, now: Instant, seed: u64, extra: Vec<SocketAddr>) {
        self.seed = seed;
        self.epoch = Some(now);
        match &self.role {
            Role::Introducer { .. } => self.coordinator.start(Vec::new()),
            Role::Peer { introducers } => {
                let seeds = introducers.iter().map(|&addr| coordinator::Seed { addr, introducer: true }).collect();
                self.coordinator.on_joined(Ok(seeds));
                self.probe_extra = extra;
            }
        }
        self.pump(now);
    }

    // ----- commands -----

    /// Asks an introducer for `target` and punches (`Node::connect`): right away when
    /// registered, else once the first registration succeeds.
    pub fn connect(&mut self, now: Instant, target: PeerId) {
        self.asked.push(target);
        self.coordinator.connect(now, target);
        self.pump(now);
    }

    /// Pings a connected peer; the answer is a [`SimEvent::Pong`].
    pub fn ping(&mut self, now: Instant, peer: &PeerId) -> Result<u64, SendError> {
        let seq = self.sessions.ping(now, peer);
        self.pump(now);
        seq
    }

    /// Sends one datagram to a connected peer.
    pub fn send(&mut self, now: Instant, peer: &PeerId, payload: &[u8]) -> Result<(), SendError> {
        let sent = self.sessions.send(now, peer, payload);
        self.pump(now);
        sent
    }

    // ----- what happened -----

    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// Everything the node reported, in order, with when.
    pub fn events(&self) -> &[(Instant, SimEvent)] {
        &self.events
    }

    /// The NAT report, once probed.
    /// Times the birthday pool was bound, and closed for being idle.
    pub fn pool_cycles(&self) -> (u32, u32) {
        (self.pools_bound, self.pools_closed)
    }

    pub fn nat(&self) -> Option<&NatReport> {
        self.coordinator.nat()
    }

    pub fn is_serving(&self) -> bool {
        self.broker.is_some()
    }

    /// Registered with at least one introducer.
    pub fn is_registered(&self) -> bool {
        !self.registered.is_empty()
    }

    /// The introducers we are registered with.
    pub fn registered(&self) -> &BTreeSet<SocketAddr> {
        &self.registered
    }

    /// Where the open session with `peer` sends now (it follows the controlling side).
    pub fn session_remote(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.sessions.get(peer).map(|s| s.remote())
    }

    /// The first connection to `peer`.
    pub fn connected(&self, peer: &PeerId) -> Option<&Connected> {
        self.connections.iter().find(|c| c.peer == *peer)
    }

    /// The first reason a connect to `peer` failed (or why probing failed: `Fatal`).
    pub fn failure(&self, peer: &PeerId) -> Option<&str> {
        self.events.iter().find_map(|(_, e)| match e {
            SimEvent::ConnectFailed { peer: p, reason } if p == peer => Some(reason.as_str()),
            SimEvent::Fatal { message } => Some(message.as_str()),
            _ => None,
        })
    }

    /// Pongs received from `peer`: (seq, rtt).
    pub fn pongs(&self, peer: &PeerId) -> Vec<(u64, Duration)> {
        let pong = |e: &SimEvent| match e {
            SimEvent::Pong { peer: p, seq, rtt, .. } if p == peer => Some((*seq, *rtt)),
            _ => None,
        };
        self.events.iter().filter_map(|(_, e)| pong(e)).collect()
    }

    pub fn drops(&self) -> Drops {
        let introducers = match &self.role {
            Role::Peer { introducers } => introducers.as_slice(),
            Role::Introducer { .. } => &[],
        };
        Drops {
            malformed: self.malformed,
            unrouted: self.unrouted,
            stun_unanswered: self.probing.unanswered,
            broker: self.broker.as_ref().map(Broker::stats).unwrap_or_default(),
            registration: introducers.iter().filter_map(|a| Some((*a, self.registrations.get(a)?.stats()))).collect(),
            punch_unknown_nonce: self.attempts.dropped_unknown_nonce,
            session_unknown_source: self.sessions.dropped_unknown_source,
            relay: self.relay.as_ref().map(Relay::stats).unwrap_or_default(),
        }
    }

    // ----- driving the coordinator -----

    /// Unix milliseconds for the record's `issued_ms`, on virtual time.
    fn unix_ms(&self, now: Instant) -> u64 {
        let since = self.epoch.map_or(Duration::ZERO, |e| now.saturating_duration_since(e));
        1_700_000_000_000 + since.as_millis() as u64
    }

    /// Moves what the machines queued to the wire, hands their events to the coordinator
    /// and carries out its actions, until nothing is left.
    fn pump(&mut self, now: Instant) {
        loop {
            self.collect_transmits();
            let mut handled = false;
            while let Some(event) = Protocol::poll_event(&mut self.probing) {
                match event {
                    ProbeEvent::Classified(result) => {
                        let unix_ms = self.unix_ms(now);
                        self.coordinator.on_probe(unix_ms, result);
                    }
                    ProbeEvent::Lifetime(report) => self.coordinator.on_lifetime(report),
                }
                handled = true;
            }
            while let Some(event) = self.broker.as_mut().and_then(Broker::poll_event) {
                self.coordinator.on_broker(event);
                handled = true;
            }
            while let Some((introducer, event)) = Protocol::poll_event(&mut self.registrations) {
                self.coordinator.on_registration(now, introducer, event);
                handled = true;
            }
            while let Some(event) = Protocol::poll_event(&mut self.attempts) {
                self.coordinator.on_punch(now, event);
                handled = true;
            }
            while let Some((peer, event)) = Protocol::poll_event(&mut self.sessions) {
                self.coordinator.on_session(now, peer, event);
                handled = true;
            }
            while let Some(event) = self.relay.as_mut().and_then(Relay::poll_event) {
                self.coordinator.on_relay(event);
                handled = true;
            }
            while let Some(action) = self.coordinator.poll_action() {
                self.apply(now, action);
                handled = true;
            }
            if !handled {
                return;
            }
        }
    }

    fn apply(&mut self, now: Instant, action: Action) {
        match action {
            // Sim peers are given their introducers: `start` reports the join itself.
            Action::Join(_) => {}
            Action::Probe { servers, pad_requests } => {
                let mut config = ProbeConfig::new(servers);
                config.pad_requests = pad_requests;
                let locals = LocalSockets { primary: self.private, extra: std::mem::take(&mut self.probe_extra) };
                self.probing.start(now, config, locals, self.seed);
            }
            Action::Serve => {
                if self.broker.is_none() {
                    let rng = rand::rngs::StdRng::seed_from_u64(self.seed);
                    self.broker = Some(Broker::new(self.config.broker.clone(), now, rng));
                    let rng = rand::rngs::StdRng::seed_from_u64(self.seed.rotate_left(1));
                    self.relay = Some(Relay::new(RelayConfig::default(), now, rng));
                }
            }
            Action::Relay { peer, relay, nonce, controlling } => {
                self.sessions.open_relayed(now, peer, relay, &nonce, controlling)
            }
            Action::BindPool(size) => {
                let pool = self.pool.iter().copied().take(size.into()).collect();
                self.pools_bound += 1;
                self.attempts.set_pool(now, pool);
                self.coordinator.on_pool_ready();
            }
            Action::Register { introducers, record } => {
                for introducer in introducers {
                    self.registrations.add(now, introducer, record.clone());
                }
            }
            Action::Introduce(peer) => {
                self.registrations.introduce(now, peer);
            }
            Action::Settle(peer) => self.registrations.settle(&peer),
            Action::Punch { nat, introduced } => {
                let (peer, initiator) = (introduced.peer.peer_id, introduced.initiator);
                if let Err(why) = self.attempts.start(now, &nat, *introduced) {
                    self.coordinator.on_punch_refused(peer, initiator, why);
                }
            }
            Action::OpenSession(opened) => self.sessions.open(now, opened),
            Action::AddPath { peer, addr } => self.sessions.add_path(now, peer, addr),
            // The simulated pool's sockets stay bound: the punch machine no longer uses them.
            Action::ClosePool(_) => self.pools_closed += 1,
            Action::AuthorizeCircuit { nonce, peers } => {
                if let Some(relay) = &mut self.relay {
                    relay.authorize(now, &nonce, peers);
                }
            }
            Action::Keepalive(keepalive) => {
                self.registrations.set_keepalive(now, keepalive);
                self.sessions.set_keepalive(keepalive);
            }
            Action::Emit(event) => self.record(now, event),
        }
    }

    fn collect_transmits(&mut self) {
        while let Some(t) = Protocol::poll_transmit(&mut self.probing) {
            self.out.push_back(t);
        }
        while let Some(t) = self.broker.as_mut().and_then(Broker::poll_transmit) {
            self.out.push_back(t);
        }
        while let Some(t) = Protocol::poll_transmit(&mut self.registrations) {
            self.out.push_back(t);
        }
        while let Some(t) = Protocol::poll_transmit(&mut self.attempts) {
            self.out.push_back(t);
        }
        while let Some(t) = Protocol::poll_transmit(&mut self.sessions) {
            self.out.push_back(t);
        }
        while let Some(t) = self.relay.as_mut().and_then(Relay::poll_transmit) {
            self.out.push_back(t);
        }
    }

    fn record(&mut self, now: Instant, event: SimEvent) {
        match &event {
            Event::Registered { introducer, .. } => {
                self.registered.insert(*introducer);
            }
            Event::IntroducerUnreachable { introducer } => {
                self.registered.remove(introducer);
            }
            &Event::Connected { peer, remote, path, strategy, connect, probes } => {
                self.connections.push(Connected { peer, remote, path, strategy, probes, connect, at: now });
                if let (true, Some((count, _))) = (self.asked.contains(&peer), self.ping_plan) {
                    if count > 0 {
                        self.pinging.push((peer, now, count));
                        self.send_pings(now);
                    }
                }
            }
            _ => {}
        }
        self.events.push((now, event));
    }

    /// The pings that are due, as the CLI's ping loop sends them.
    fn send_pings(&mut self, now: Instant) {
        let interval = self.ping_plan.map_or(Duration::ZERO, |(_, i)| i);
        for (peer, next, left) in &mut self.pinging {
            if *next <= now {
                // A closed session is the CLI's "peer disconnected": nothing more to ping.
                let _ = self.sessions.ping(now, peer);
                *left -= 1;
                *next = now + interval;
            }
        }
        self.pinging.retain(|(_, _, left)| *left > 0);
    }
}

/// A deterministic stand-in for the node's random token secret (runs must replay).
fn sim_secret(identity: &Identity) -> u64 {
    identity
        .peer_id()
        .to_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|t| t <= now)
}

impl Machine for SimNode {
    fn handle_datagram(&mut self, now: Instant, socket: SocketId, src: SocketAddr, payload: &[u8]) {
        let len = payload.len();
        let Some((route, payload)) = classify(payload.to_vec()) else {
            self.malformed += 1;
            return;
        };
        let inbound = Inbound { now, socket, src, len, payload };
        match route {
            Route::StunServer | Route::StunClient => self.probing.handle_inbound(inbound),
            Route::Broker => match &mut self.broker {
                Some(broker) => broker.handle_inbound(inbound),
                None => self.unrouted += 1,
            },
            Route::Registration => self.registrations.handle_inbound(inbound),
            Route::Punch => self.attempts.handle_inbound(inbound),
            Route::Session => self.sessions.handle_inbound(inbound),
            Route::Relay => match &mut self.relay {
                Some(relay) => relay.handle_inbound(inbound),
                None => self.unrouted += 1,
            },
            Route::Bootstrap => self.unrouted += 1,
        }
        self.pump(now);
    }

    /// Like each machine's actor, a machine is called only when its own deadline is due.
    fn handle_timeout(&mut self, now: Instant) {
        if due(Protocol::poll_timeout(&self.probing), now) {
            Protocol::handle_timeout(&mut self.probing, now);
        }
        if let Some(broker) = self.broker.as_mut().filter(|b| due(b.poll_timeout(), now)) {
            broker.handle_timeout(now);
        }
        if let Some(relay) = self.relay.as_mut().filter(|r| due(r.poll_timeout(), now)) {
            relay.handle_timeout(now);
        }
        if due(Protocol::poll_timeout(&self.registrations), now) {
            Protocol::handle_timeout(&mut self.registrations, now);
        }
        if due(Protocol::poll_timeout(&self.attempts), now) {
            Protocol::handle_timeout(&mut self.attempts, now);
        }
        if due(Protocol::poll_timeout(&self.sessions), now) {
            Protocol::handle_timeout(&mut self.sessions, now);
        }
        if due(self.coordinator.poll_timeout(), now) {
            self.coordinator.handle_timeout(now);
        }
        if let Some((_, target)) = self.connect_at.filter(|(at, _)| *at <= now) {
            self.connect_at = None;
            self.connect(now, target);
        }
        self.send_pings(now);
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            Protocol::poll_timeout(&self.probing),
            self.broker.as_ref().and_then(Broker::poll_timeout),
            self.relay.as_ref().and_then(Relay::poll_timeout),
            Protocol::poll_timeout(&self.registrations),
            Protocol::poll_timeout(&self.attempts),
            Protocol::poll_timeout(&self.sessions),
            self.coordinator.poll_timeout(),
            self.connect_at.map(|(at, _)| at),
            self.pinging.iter().map(|(_, at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
