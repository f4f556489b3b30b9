//! A whole introducer node as one simulated host: [`SimNode`] runs the node's [`NodeCore`]
//! — the composition the binary runs — over the same role machines ([`Roles`]), calling
//! them in place where the binary has an actor per role, and routes each datagram with
//! [`classify`] and [`role_of`] exactly as the socket actor does. First contact, probing,
//! binding the probe's sockets and the birthday pool: all as the binary does them.
//!
//! - an **introducer** ([`SimNode::introducer`]) has nobody to join: it serves from the
//!   start and answers STUN on one IP at its port and the next one, or on 2 IPs × 2 ports
//!   (RFC 5780) with [`SimNode::alternate_ip`];
//! - a **peer** ([`SimNode::peer`]) joins its seeds (Hello / ServerInfo), probes its NAT
//!   against them, serves if public, registers, and connects when told to.
//!
//! A node keeps a [`MemStore`] — its data dir — across [`SimNode::stop`] (a clean stop,
//! or a `kill -9` that loses what was not flushed) and [`SimNode::restart`].
//!
//! Besides the node, a `SimNode` plays its user, as the CLI does: it records every event
//! (with when), connects at a given time ([`SimNode::connect_at`]) and pings what it
//! connected to ([`SimNode::pings`]). The one difference in timing from the binary: there
//! roles hand events on through mailboxes, here at the same virtual instant.
//!
//! ```
//! use introducer_actors::identity::Identity;
//! use introducer_actors::nat::NatBehavior;
//! use introducer_actors::SocketId;
//! use introducer_sim::node::SimNode;
//! use introducer_sim::{Place, Sim};
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
use introducer_actors::broker;
use introducer_actors::driver::Protocol;
use introducer_actors::identity::Identity;
use introducer_actors::nat::NatReport;
use introducer_actors::punch::{Path, Strategy};
use introducer_actors::registration;
use introducer_actors::relay::server as relay;
use introducer_actors::session::SendError;
use introducer_actors::socket::{self, classify, Inbound, Purpose};
use introducer_actors::{Machine, SocketId, Transmit};
use introducer_node::config::Config;
use introducer_node::core::{role_of, NodeCore, Order, Report, RoleId, Roles, Visit};
use introducer_node::store::{MemStore, Store};
use introducer_node::NodeEvent;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

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
    /// Datagrams for a role that was not serving yet (broker, relay).
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
    pub relay: relay::Stats,
}

/// The node, once on the network.
struct Running {
    core: NodeCore,
    roles: Roles,
}

/// A node on the simulator. Build it with [`SimNode::introducer`] or [`SimNode::peer`],
/// put it on the network with [`SimNode::spawn`], then drive it through
/// [`Sim::machine`] (commands) and [`Sim::machine_ref`] (what happened).
pub struct SimNode {
    config: Config,
    /// An introducer's second IP (RFC 5780).
    alternate: Option<Ipv4Addr>,
    /// With one IP, whether the node also answers STUN on the next port.
    alternate_port: bool,
    node: Option<Running>,
    /// The node's data dir: kept across restarts.
    store: MemStore,
    /// What a restart needs: the listening sockets, the RNG seed, restarts so far.
    listen: Vec<SocketAddr>,
    seed: u64,
    restarts: u64,
    /// When the node first started: Unix time on the simulator counts from there.
    born: Option<Instant>,

    connections: Vec<Connected>,
    connect_at: Option<(Instant, PeerId)>,
    ping_plan: Option<(u32, Duration)>,
    /// Peers this node asked for (the ones `pings` applies to).
    asked: Vec<PeerId>,
    /// Pings still to send: peer, when, how many left.
    pinging: Vec<(PeerId, Instant, u32)>,
    /// Pings sent to each peer: the next one's sequence number (as `Node::ping` numbers them).
    pings_sent: BTreeMap<PeerId, u64>,
    /// Times the birthday pool was bound, and closed when idle.
    pools_bound: u32,
    pools_closed: u32,
    out: VecDeque<Transmit>,
    sockets: VecDeque<socket::Command>,
    /// The roles' earliest deadline, as of the last pump (every input ends with one).
    roles_deadline: Option<Instant>,
    events: Vec<(Instant, NodeEvent)>,
    malformed: u64,
}

impl SimNode {
    fn new(config: Config) -> Self {
        SimNode {
            config,
            alternate: None,
            alternate_port: false,
            node: None,
            store: MemStore::new(),
            listen: Vec::new(),
            seed: 0,
            restarts: 0,
            born: None,
            connections: Vec::new(),
            connect_at: None,
            ping_plan: None,
            asked: Vec::new(),
            pinging: Vec::new(),
            pings_sent: BTreeMap::new(),
            pools_bound: 0,
            pools_closed: 0,
            out: VecDeque::new(),
            sockets: VecDeque::new(),
            roles_deadline: None,
            events: Vec::new(),
            malformed: 0,
        }
    }

    /// A public node that starts a mesh: nobody to join, so it serves from the start. With
    /// one IP it also answers STUN on the next port, as `introducer run --listen IP:PORT`
    /// does (see [`SimNode::alternate_port`]).
    pub fn introducer(identity: Identity) -> Self {
        SimNode { alternate_port: true, ..SimNode::new(Config::new(identity)) }
    }

    /// A node that joins `introducers`, probes against them, registers with them, and
    /// connects when told to.
    pub fn peer(identity: Identity, introducers: Vec<SocketAddr>) -> Self {
        let mut config = Config::new(identity);
        config.bootstrap = introducers;
        SimNode::new(config)
    }

    /// Introducers only: a second IP, for the RFC 5780 layout (2 IPs × ports P, P+1).
    pub fn alternate_ip(mut self, ip: Ipv4Addr) -> Self {
        assert!(self.config.bootstrap.is_empty(), "only an introducer listens on two IPs");
        self.alternate = Some(ip);
        self
    }

    /// Whether a node with one IP also binds the next port and answers STUN there (the
    /// alternate port of `Layout::two_ports`): on for introducers, off for peers (the
    /// binary's ephemeral clients). Off models a node that could not bind it.
    pub fn alternate_port(mut self, on: bool) -> Self {
        self.alternate_port = on;
        self
    }

    /// Changes the node's configuration (timings, roles) before it is spawned.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Starts the node with `store` as its data dir's store.
    pub fn store(mut self, store: MemStore) -> Self {
        self.store = store;
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
    /// does for two `--listen` addresses; one with the alternate port only (ip0, port+1),
    /// as it does for one.
    pub fn spawn(self, sim: &mut Sim, place: Place, port: u16) -> HostId {
        let (alternate, alternate_port) = (self.alternate, self.alternate_port);
        let host = sim.add_host(place, self);
        let seed = sim.derive_seed(host.index() as u32);
        let primary = sim.bind(host, SocketId::PRIMARY, port);
        let mut listen = vec![primary];
        if let Some(ip1) = alternate {
            sim.add_ip(host, ip1);
            let ip0 = sim.host_ip(host);
            let alt = port.checked_add(1).expect("the alternate port is port + 1");
            for (id, ip, port) in [(1, ip0, alt), (2, ip1, port), (3, ip1, alt)] {
                listen.push(sim.bind_addr(host, SocketId(id), SocketAddrV4::new(ip, port)));
            }
        } else if let Some(alt) = port.checked_add(1).filter(|_| alternate_port) {
            listen.push(sim.bind_addr(host, SocketId(1), SocketAddrV4::new(sim.host_ip(host), alt)));
        }
        let now = sim.now();
        sim.machine::<SimNode>(host).start(now, seed, listen);
        host
    }

    fn start(&mut self, now: Instant, seed: u64, listen: Vec<SocketAddr>) {
        (self.seed, self.listen) = (seed, listen);
        self.boot(now);
    }

    /// Runs the node on its sockets, from what its store holds (as the binary does from
    /// its data dir).
    fn boot(&mut self, now: Instant) {
        // A restarted node draws new keys and nonces, as a new process does.
        let mut rng = StdRng::seed_from_u64(self.seed ^ self.restarts.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let listen = self.listen.clone();
        // Simulated hosts have one address per network: the primary's is the LAN's. Unix
        // time runs on with virtual time, across restarts too.
        let born = *self.born.get_or_insert(now);
        let unix_ms = 1_700_000_000_000 + now.saturating_duration_since(born).as_millis() as u64;
        let (lan, epoch) = (Some(listen[0]), (now, unix_ms));
        let roles = Roles::new(&self.config, &listen, epoch, &mut rng);
        let core = NodeCore::new(self.config.clone(), listen, lan, epoch, rng);
        self.node = Some(Running { core, roles });
        let stored = self.store.load().unwrap_or_default();
        self.running().core.start(now, stored);
        self.pump(now);
    }

    /// Stops the node: it sends nothing more and drops what arrives. `crash`: as a
    /// `kill -9`, which loses the store's writes since its last flush.
    pub fn stop(&mut self, crash: bool) {
        self.node = None;
        self.out.clear();
        self.sockets.clear();
        self.pinging.clear();
        self.pings_sent.clear();
        (self.connect_at, self.roles_deadline) = (None, None);
        if crash {
            self.store.crash();
        }
    }

    /// Starts the stopped node again on the same sockets, with what its store kept and
    /// its configuration as `change` leaves it (`|c| c.bootstrap.clear()`: the binary's
    /// `run --data-dir D` with no `--bootstrap`).
    pub fn restart(&mut self, now: Instant, change: impl FnOnce(&mut Config)) {
        assert!(self.node.is_none(), "stop the node first");
        change(&mut self.config);
        self.restarts += 1;
        self.boot(now);
    }

    fn running(&mut self) -> &mut Running {
        self.node.as_mut().expect("the node is spawned")
    }

    fn roles(&self) -> &Roles {
        &self.node.as_ref().expect("the node is spawned").roles
    }

    // ----- commands -----

    /// Asks an introducer for `target` and punches (`Node::connect`): right away when
    /// registered, else once the first registration succeeds.
    pub fn connect(&mut self, now: Instant, target: PeerId) {
        self.asked.push(target);
        self.running().core.connect(now, target);
        self.pump(now);
    }

    /// Joins a topic (`Node::join`).
    pub fn join(&mut self, now: Instant, topic: &[u8]) {
        self.running().core.join_topic(now, topic.to_vec());
        self.pump(now);
    }

    /// Pings a connected peer (`Node::ping`); the answer is a [`NodeEvent::Pong`].
    pub fn ping(&mut self, now: Instant, peer: &PeerId) -> Result<(), SendError> {
        let seq = self.next_ping(peer);
        self.running().core.ping(*peer, seq);
        self.pump_for(now, peer)
    }

    /// Sends one datagram to a connected peer (`Node::send`).
    pub fn send(&mut self, now: Instant, peer: &PeerId, payload: &[u8]) -> Result<(), SendError> {
        self.running().core.send(*peer, payload.to_vec());
        self.pump_for(now, peer)
    }

    /// Pumps after a user command, and says whether it was sent (the node reports it if not).
    fn pump_for(&mut self, now: Instant, peer: &PeerId) -> Result<(), SendError> {
        let before = self.events.len();
        self.pump(now);
        match self.events[before..].iter().find_map(|(_, e)| match e {
            NodeEvent::NotSent { peer: p, error } if p == peer => Some(error.clone()),
            _ => None,
        }) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    // ----- what happened -----

    pub fn peer_id(&self) -> PeerId {
        self.config.identity.peer_id()
    }

    /// Everything the node reported, in order, with when.
    pub fn events(&self) -> &[(Instant, NodeEvent)] {
        &self.events
    }

    /// Times the birthday pool was bound, and closed for being idle.
    pub fn pool_cycles(&self) -> (u32, u32) {
        (self.pools_bound, self.pools_closed)
    }

    /// The NAT report, once probed.
    pub fn nat(&self) -> Option<&NatReport> {
        self.node.as_ref()?.core.nat()
    }

    /// Whether the node serves as introducer.
    pub fn is_serving(&self) -> bool {
        self.roles().broker.is_serving()
    }

    /// Registered with at least one introducer.
    pub fn is_registered(&self) -> bool {
        !self.registered().is_empty()
    }

    /// The introducers we are registered with (none while stopped).
    pub fn registered(&self) -> &BTreeSet<SocketAddr> {
        static NONE: BTreeSet<SocketAddr> = BTreeSet::new();
        self.node.as_ref().map_or(&NONE, |n| n.core.registered())
    }

    /// Whether the node runs (it is stopped between [`SimNode::stop`] and
    /// [`SimNode::restart`]).
    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }

    /// The node's store (its data dir).
    pub fn stored(&self) -> &MemStore {
        &self.store
    }

    /// Where the open session with `peer` sends now (it follows the controlling side).
    pub fn session_remote(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.roles().sessions.get(peer).map(|s| s.remote())
    }

    /// The first connection to `peer`.
    pub fn connected(&self, peer: &PeerId) -> Option<&Connected> {
        self.connections.iter().find(|c| c.peer == *peer)
    }

    /// Why the first connect to `peer` failed (or why the node could not go on: `Fatal`).
    pub fn failure(&self, peer: &PeerId) -> Option<String> {
        self.events.iter().find_map(|(_, e)| match e {
            NodeEvent::ConnectFailed { peer: p, error } if p == peer => Some(error.to_string()),
            NodeEvent::Fatal(error) => Some(error.to_string()),
            _ => None,
        })
    }

    /// Pongs received from `peer`: (seq, rtt).
    pub fn pongs(&self, peer: &PeerId) -> Vec<(u64, Duration)> {
        let pong = |e: &NodeEvent| match e {
            NodeEvent::Pong { peer: p, seq, rtt, .. } if p == peer => Some((*seq, *rtt)),
            _ => None,
        };
        self.events.iter().filter_map(|(_, e)| pong(e)).collect()
    }

    pub fn drops(&self) -> Drops {
        let roles = self.roles();
        let (broker, relay) = (roles.broker.stats(), roles.relay.stats());
        let registration =
            self.config.bootstrap.iter().filter_map(|a| Some((*a, roles.registrations.get(a)?.stats()))).collect();
        Drops {
            malformed: self.malformed,
            unrouted: broker.dropped_not_serving + relay.dropped_not_serving,
            stun_unanswered: roles.probe.unanswered,
            broker,
            registration,
            punch_unknown_nonce: roles.punch.dropped_unknown_nonce,
            session_unknown_source: roles.sessions.dropped_unknown_source,
            relay,
        }
    }

    // ----- driving the core -----

    /// Moves what the roles queued to the wire, hands their events to the core and
    /// delivers its orders, until nothing is left.
    fn pump(&mut self, now: Instant) {
        loop {
            let Running { core, roles } = self.node.as_mut().expect("the node is spawned");
            let mut drain = Drain { core, out: &mut self.out, now, busy: false };
            roles.each(&mut drain);
            let mut busy = drain.busy;
            while let Some(order) = self.running().core.poll_order() {
                self.deliver(now, order);
                busy = true;
            }
            if !busy {
                let mut earliest = Earliest(None);
                self.running().roles.each(&mut earliest);
                self.roles_deadline = earliest.0;
                return;
            }
        }
    }

    fn deliver(&mut self, now: Instant, order: Order) {
        let roles = &mut self.running().roles;
        match order {
            Order::FirstContact(command) => roles.contact.handle_command(now, command),
            Order::Probe(command) => roles.probe.handle_command(now, command),
            Order::Broker(command) => roles.broker.handle_command(now, command),
            Order::Registration(command) => roles.registrations.handle_command(now, command),
            Order::Punch(command) => roles.punch.handle_command(now, command),
            Order::Session(command) => roles.sessions.handle_command(now, command),
            Order::Relay(command) => roles.relay.handle_command(now, command),
            Order::Mesh(command) => roles.mesh.handle_command(now, command),
            Order::Socket(command) => {
                match &command {
                    socket::Command::Bind { purpose: Purpose::Pool, .. } => self.pools_bound += 1,
                    socket::Command::Unbind(_) => self.pools_closed += 1,
                    socket::Command::Bind { .. } => {}
                }
                self.sockets.push_back(command);
            }
            // A MemStore never fails.
            Order::Store(op) => drop(self.store.apply(op)),
            Order::Emit(event) => self.record(now, event),
        }
    }

    fn record(&mut self, now: Instant, event: NodeEvent) {
        if let NodeEvent::Connected { peer, remote, path, strategy, connect, probes } = event {
            self.connections.push(Connected { peer, remote, path, strategy, probes, connect, at: now });
            if let (true, Some((count, _))) = (self.asked.contains(&peer), self.ping_plan) {
                if count > 0 {
                    self.pinging.push((peer, now, count));
                    self.send_pings(now);
                }
            }
        }
        self.events.push((now, event));
    }

    /// The pings that are due, as the CLI's ping loop sends them.
    fn send_pings(&mut self, now: Instant) {
        let interval = self.ping_plan.map_or(Duration::ZERO, |(_, i)| i);
        let mut due = Vec::new();
        for (peer, next, left) in self.pinging.iter_mut().filter(|(_, next, _)| *next <= now) {
            due.push(*peer);
            *left -= 1;
            *next = now + interval;
        }
        self.pinging.retain(|(_, _, left)| *left > 0);
        for peer in due {
            // A closed session is the CLI's "peer disconnected": nothing more to ping.
            let seq = self.next_ping(&peer);
            self.running().core.ping(peer, seq);
        }
    }

    /// The next ping's sequence number for `peer` (as `Node::ping` numbers them).
    fn next_ping(&mut self, peer: &PeerId) -> u64 {
        let sent = self.pings_sent.entry(*peer).or_default();
        *sent += 1;
        *sent - 1
    }
}

/// Moves each role's datagrams to `out` and its events to the core (`busy` if any).
struct Drain<'a> {
    core: &'a mut NodeCore,
    out: &'a mut VecDeque<Transmit>,
    now: Instant,
    busy: bool,
}

impl Visit for Drain<'_> {
    fn role<P: Protocol>(&mut self, role: &mut P)
    where
        P::Event: Into<Report>,
    {
        self.out.extend(std::iter::from_fn(|| role.poll_transmit()));
        while let Some(event) = role.poll_event() {
            self.core.handle_report(self.now, event.into());
            self.busy = true;
        }
    }
}

fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|t| t <= now)
}

/// Calls each role's `handle_timeout` if its deadline has come, as its actor would.
struct Tick(Instant);

impl Visit for Tick {
    fn role<P: Protocol>(&mut self, role: &mut P) {
        if due(role.poll_timeout(), self.0) {
            role.handle_timeout(self.0);
        }
    }
}

/// The earliest deadline of the roles.
struct Earliest(Option<Instant>);

impl Visit for Earliest {
    fn role<P: Protocol>(&mut self, role: &mut P) {
        self.0 = self.0.into_iter().chain(role.poll_timeout()).min();
    }
}

impl Machine for SimNode {
    fn handle_datagram(&mut self, now: Instant, socket: SocketId, src: SocketAddr, payload: &[u8]) {
        if self.node.is_none() {
            return;
        }
        let len = payload.len();
        let Some((route, payload)) = classify(payload.to_vec()) else {
            self.malformed += 1;
            return;
        };
        let inbound = Inbound { now, socket, src, len, payload };
        let roles = &mut self.running().roles;
        match role_of(route) {
            RoleId::FirstContact => roles.contact.handle_inbound(inbound),
            RoleId::Probe => roles.probe.handle_inbound(inbound),
            RoleId::Broker => roles.broker.handle_inbound(inbound),
            RoleId::Registration => roles.registrations.handle_inbound(inbound),
            RoleId::Punch => roles.punch.handle_inbound(inbound),
            RoleId::Session => roles.sessions.handle_inbound(inbound),
            RoleId::Relay => roles.relay.handle_inbound(inbound),
            RoleId::Mesh => roles.mesh.handle_inbound(inbound),
        }
        self.pump(now);
    }

    /// Like each role's actor, a role is called only when its own deadline is due.
    fn handle_timeout(&mut self, now: Instant) {
        let Some(Running { core, roles }) = self.node.as_mut() else { return };
        roles.each(&mut Tick(now));
        if due(core.poll_timeout(), now) {
            core.handle_timeout(now);
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
        let Some(Running { core, .. }) = &self.node else { return None };
        [
            self.roles_deadline,
            core.poll_timeout(),
            self.connect_at.map(|(at, _)| at),
            self.pinging.iter().map(|(_, at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll_socket_command(&mut self) -> Option<socket::Command> {
        self.sockets.pop_front()
    }

    fn handle_socket_event(&mut self, now: Instant, event: socket::Event) {
        let Some(Running { core, .. }) = self.node.as_mut() else { return };
        core.handle_report(now, Report::Socket(event));
        self.pump(now);
    }
}
