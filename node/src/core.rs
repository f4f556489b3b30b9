//! The composition of a node's roles, written once: which role's event leads to which
//! role's command, and what the user hears. Both drivers run exactly this — the actix
//! node (`node.rs`: an actor per role, over real sockets and the real clock) and the
//! simulator (`introducer-sim`: the same machines called in place, over virtual sockets
//! and virtual time). They differ only in the socket and the clock.
//!
//! Like str0m's `Rtc` or quinn-proto's `Endpoint`, the core does no I/O and reads no
//! clock. Roles report to it ([`Report`], with `now`); it answers with [`Order`]s, each
//! addressed to one role (or to the user: [`Order::Emit`]), which the driver delivers in a
//! few generic lines. What the roles are and where datagrams go is decided here too
//! ([`Roles::new`], [`role_of`]).
//!
//! A node's life: first contact → NAT probing → serving (if public) and registering →
//! introductions → punching (or relaying) → sessions. A connect asked for early does not
//! wait for the whole probe: the node registers with the NAT report stored for its network,
//! or with probing's early verdict on the mapping, and re-registers once classified
//! (`register_early`). Each peer it deals with has one entry in one map (`Peer`), whose
//! `Phase` says where the connection stands.

use crate::config::{Config, Serve};
use crate::event::{ConnectError, FatalError, MeshChange, NodeEvent, PeerState, Progress};
use crate::store::{MeasuredNat, Member, Network, StoreOp, Stored};
use crate::telemetry::spans::Spans;
use introducer_actors::broker::{self, Broker};
use introducer_actors::driver::Protocol;
use introducer_actors::mesh::{self, directory::Key, Advert, Mesh};
use introducer_actors::nat::{Filtering, NatReport, NatType};
use introducer_actors::probe::actor::{self as probing, probe_socket, NatProbing, ProbeEvent};
use introducer_actors::probe::{Layout, LifetimeReport, LocalSockets, Probe, ProbeConfig, Responder, Server};
use introducer_actors::punch::{self, actor::pool_socket, actor::Attempts, Path, Strategy};
use introducer_actors::registration::{self, actor::Registrations, Introduced};
use introducer_actors::relay::server::{self as relay, Relay};
use introducer_actors::session::{self, actor::Sessions, ProvenPath};
use introducer_actors::socket::{self, Purpose, Route};
use introducer_actors::SocketId;
use introducer_bootstrap::{self as bootstrap, BootstrapError, FirstContact, Seed};
use introducer_proto::pb;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A serving node republishes its node record when the relay circuits it carries change,
/// at most this often: every record is a broadcast each member hears, and a count that
/// flaps (circuits come and go within seconds) is worth one record per interval, not one per
/// circuit. `peers` shows the load at most this stale (plus gossip's spread).
pub const LOAD_PUBLISH_INTERVAL: Duration = Duration::from_secs(30);

/// The roles of a node, one machine each: the actix node runs each in an actor of its
/// own, the simulator calls them in place.
pub struct Roles {
    pub contact: FirstContact,
    pub probe: NatProbing,
    pub broker: Broker,
    pub registrations: Registrations,
    pub punch: Attempts,
    pub sessions: Sessions,
    pub relay: Relay,
    pub mesh: Mesh,
}

/// Something done to every role alike; see [`Roles::each`].
pub trait Visit {
    fn role<P: Protocol>(&mut self, role: &mut P)
    where
        P::Event: Into<Report>;
}

/// One role, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoleId {
    FirstContact,
    Probe,
    Broker,
    Registration,
    Punch,
    Session,
    Relay,
    Mesh,
}

/// Which role takes a kind of datagram. Every route is taken from the start; the broker
/// and the relay drop (and count) what comes before the node serves.
pub fn role_of(route: Route) -> RoleId {
    match route {
        Route::Bootstrap => RoleId::FirstContact,
        Route::StunServer | Route::StunClient => RoleId::Probe,
        Route::Broker => RoleId::Broker,
        Route::Registration => RoleId::Registration,
        Route::Punch => RoleId::Punch,
        Route::Session => RoleId::Session,
        Route::Relay => RoleId::Relay,
        Route::Mesh => RoleId::Mesh,
    }
}

/// The STUN server side for the node's bound sockets (`locals[i]` is `SocketId(i)`): one
/// address; one IP with the alternate port (what a node with one listen address binds,
/// so that clients can test filtering against the other port and tell a mapping that
/// depends on the port from one that does not); or the full RFC 5780 layout of two IPs ×
/// two ports. A layout the addresses do not fit falls back to the primary alone: every
/// node answers STUN.
fn responder(locals: &[SocketAddr]) -> Option<Responder> {
    let primary = *locals.first()?;
    let layout = match locals {
        [a, b] => Layout::two_ports((SocketId::PRIMARY, *a), (SocketId(1), *b)).ok(),
        [a, _, _, d] => Layout::rfc5780(*a, *d, [SocketId::PRIMARY, SocketId(1), SocketId(2), SocketId(3)]).ok(),
        _ => None,
    };
    Some(Responder::new(layout.unwrap_or_else(|| Layout::single(SocketId::PRIMARY, primary))))
}

/// A seed's alternate STUN port, from the addresses its ServerInfo lists: another port on
/// the IP of its first (primary) address, reached at the seed's IP. Our probe needs it to
/// find a one-IP node's alternate port, which such a node does not advertise in STUN:
/// RFC 5780 allows OTHER-ADDRESS only with a second IP, and standard clients (coturn's
/// `turnutils_natdiscovery`) would run their "other IP" tests against the primary address
/// and report every NAT as endpoint-independent. Only the port is taken, the IP stays the
/// one we contacted, so a forged ServerInfo cannot aim our probes anywhere else; and only
/// if we reached the seed at its primary port (behind a port-forward the next port may
/// not be the seed's). An RFC 5780 node's OTHER-ADDRESS takes precedence in the probe.
fn alternate_port(seed: &Seed) -> Option<SocketAddr> {
    let primary = seed.listen.first()?;
    if primary.port() != seed.addr.port() {
        return None;
    }
    let alt = seed.listen.iter().skip(1).find(|a| a.ip() == primary.ip() && a.port() != primary.port())?;
    Some(SocketAddr::new(seed.addr.ip(), alt.port()))
}

impl Roles {
    /// Visits every role, in one fixed order (the simulator drains, ticks and asks for
    /// deadlines this way; a new role is added here once).
    pub fn each(&mut self, visit: &mut impl Visit) {
        visit.role(&mut self.contact);
        visit.role(&mut self.probe);
        visit.role(&mut self.broker);
        visit.role(&mut self.registrations);
        visit.role(&mut self.punch);
        visit.role(&mut self.sessions);
        visit.role(&mut self.relay);
        visit.role(&mut self.mesh);
    }

    /// Every role of a node listening on `locals`. Keys, cookie secrets and nonce seeds
    /// come from `rng`: the OS's on a real node, a seeded one on the simulator. `epoch`
    /// ties `now` to Unix time (ms).
    pub fn new(config: &Config, locals: &[SocketAddr], epoch: (Instant, u64), rng: &mut StdRng) -> Roles {
        let now = epoch.0;
        let id = &config.identity;
        let mut child = || StdRng::from_rng(&mut *rng).expect("StdRng never fails");
        Roles {
            contact: FirstContact::new(id.peer_id(), locals.to_vec(), false, &mut child(), now),
            broker: Broker::idle(config.broker.clone(), now, child()),
            registrations: Registrations::new(config.registration.clone(), id.clone(), child()),
            punch: Attempts::new(config.punch.clone(), id.clone(), child()),
            sessions: Sessions::new(config.session.clone(), id.clone(), child()),
            relay: Relay::idle(config.relay.clone(), now, child()),
            probe: NatProbing::new(responder(locals), child()),
            mesh: Mesh::new(config.mesh.clone(), id.clone(), epoch, child()),
        }
    }
}

/// What a role reports to the core.
#[derive(Debug)]
pub enum Report {
    Socket(socket::Event),
    FirstContact(bootstrap::Event),
    Probe(ProbeEvent),
    Broker(broker::Event),
    Registration(SocketAddr, registration::Event),
    Punch(punch::Event),
    Session(PeerId, session::Event),
    Relay(relay::Event),
    Mesh(mesh::Event),
}

macro_rules! report_from {
    ($($event:ty => $variant:ident $(($($field:ident),+))?;)*) => {$(
        impl From<$event> for Report {
            fn from(event: $event) -> Report {
                report_from!(@make $variant event $(($($field),+))?)
            }
        }
    )*};
    (@make $variant:ident $event:ident) => { Report::$variant($event) };
    (@make $variant:ident $event:ident ($($field:ident),+)) => {{ let ($($field),+) = $event; Report::$variant($($field),+) }};
}

report_from! {
    socket::Event => Socket;
    bootstrap::Event => FirstContact;
    ProbeEvent => Probe;
    broker::Event => Broker;
    (SocketAddr, registration::Event) => Registration(a, e);
    punch::Event => Punch;
    (PeerId, session::Event) => Session(p, e);
    relay::Event => Relay;
    mesh::Event => Mesh;
}

/// What the core wants done: a command for one role, or an event for the user.
#[derive(Debug)]
pub enum Order {
    Socket(socket::Command),
    FirstContact(bootstrap::Command),
    Probe(probing::Command),
    Broker(broker::Command),
    Registration(registration::actor::Command),
    Punch(punch::actor::Command),
    Session(session::actor::Command),
    Relay(relay::Command),
    Mesh(mesh::Command),
    /// A write to the node's store. The driver applies these in order, before the orders
    /// that follow: an event emitted after a [`StoreOp::Flush`] is seen only once what
    /// came before the flush is on disk.
    Store(StoreOp),
    Emit(NodeEvent),
}

/// An introduction whose punch is under way: what a fallback to its relay needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Intro {
    /// The introducer, whose relay carries the circuit; `None` when we introduced
    /// ourselves (a peer asked our broker for us): there is no other node to relay through.
    relay: Option<SocketAddr>,
    nonce: Vec<u8>,
    /// We asked for the introduction: we control the path.
    controlling: bool,
}

/// Where the connection with a peer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Nothing under way.
    Idle,
    /// The user asked before any introducer registered us.
    AwaitingRegistration,
    /// An introduction is asked for; none has come.
    Asked,
    /// The peer is registered with other members: we register with its homes (all at once,
    /// so a dead one costs nothing) and ask the first that answers for the introduction.
    AwaitingHomes(Vec<SocketAddr>),
    /// Punching under an introduction; a relay circuit is asked for too at `relay_at`.
    Punching { intro: Intro, relay_at: Option<Instant> },
    /// The relay circuit is being set up (the punch may go on: if it wins, it takes over).
    /// Repeats of the introduction are ignored meanwhile.
    Relaying { intro: Intro },
}

/// The open session with a peer: its path, and the introduction that made it (repeats of
/// that introduction change nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    path: Path,
    nonce: Vec<u8>,
}

/// Everything the core knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Peer {
    phase: Phase,
    /// When our user's connect asked for the introduction (the start of `connect_ms`);
    /// `None` when the peer reached us, or we punch again on our own.
    asked: Option<Instant>,
    session: Option<Open>,
    /// This connect followed one introducer's word that the peer is registered elsewhere:
    /// it follows no second (two members each naming the other would be a loop).
    redirected: bool,
    /// The peer's other homes, tried in turn if the one asked fails.
    homes_left: Vec<SocketAddr>,
}

impl Default for Peer {
    fn default() -> Self {
        Peer { phase: Phase::Idle, asked: None, session: None, redirected: false, homes_left: Vec::new() }
    }
}

impl Peer {
    fn is_empty(&self) -> bool {
        self.phase == Phase::Idle && self.asked.is_none() && self.session.is_none() && !self.redirected
    }
}

/// Homes a node keeps registrations with: one failing leaves two that reach it.
const HOMES: usize = 3;
/// How often a node on topics asks who is on them.
const TOPIC_LOOKUP: Duration = Duration::from_secs(3);
/// The core's tick, and how late one may come before the node counts it as a wakeup.
const HEARTBEAT: Duration = Duration::from_secs(5);
const WAKEUP_GAP: Duration = Duration::from_secs(10);
/// The NAT is classified again after a wakeup or a move at most this often: a flapping
/// link must not turn into a stream of probes.
const REPROBE_INTERVAL: Duration = Duration::from_secs(30);

/// The birthday pool's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Closed,
    Binding,
    Open,
}

pub struct NodeCore {
    config: Config,
    /// Our sockets' local addresses (the primary first), and the primary's as our LAN
    /// sees it (the IP the OS routes from when bound to 0.0.0.0).
    listen: Vec<SocketAddr>,
    lan: Option<SocketAddr>,
    /// Unix milliseconds at `epoch`, for the `issued_ms` of our records.
    epoch: (Instant, u64),
    rng: StdRng,
    /// What the node keeps across restarts, as loaded at start and kept up to date: the
    /// driver's store holds the same (see [`Order::Store`]).
    table: Stored,
    /// The addresses first contact asks: `--bootstrap`, or the stored members.
    joining: Vec<SocketAddr>,
    /// First contact asks the stored members (no `--bootstrap` was given).
    rejoining: bool,
    /// The introducer role is taken.
    serving: bool,
    seeds: Vec<Seed>,
    nat: Option<NatReport>,
    /// Until classification ends, the report a connect that waits is introduced with: the
    /// one stored for this network, or probing's verdict on the mapping (see
    /// [`NodeCore::register_early`]).
    provisional: Option<NatReport>,
    /// The report in the record our registrations carry (`None`: not registering yet).
    registered_nat: Option<NatReport>,
    /// Probing waits for its extra sockets.
    probing: Option<ProbeConfig>,
    /// The sockets probing classified from (kept to classify again), and when the NAT was
    /// last classified again.
    probe_locals: Option<LocalSockets>,
    last_probe: Option<Instant>,
    /// Whether the NAT was classified again with our homes as servers, because the seeds
    /// (one IP) left the mapping unknown: once.
    probed_with_homes: bool,
    /// A NAT report waiting for its dial-back (see `on_probed`).
    dialing_back: Option<NatReport>,
    /// Members of the mesh up now (serving nodes).
    mesh_up: BTreeSet<PeerId>,
    /// Introducers we register with (registered or not yet): our homes. Kept at
    /// `HOMES` from what introducers suggest, as homes fail.
    homes: BTreeSet<SocketAddr>,
    /// Homes introducers suggested, not taken yet.
    suggested: BTreeSet<SocketAddr>,
    /// The topics we joined, and the members we know on each.
    topics: BTreeMap<Vec<u8>, BTreeSet<PeerId>>,
    /// When to ask our homes who is on our topics next.
    next_topic_lookup: Option<Instant>,
    /// A tick every `HEARTBEAT` once registered: one that comes much later than due means
    /// the machine slept (or the process was stopped), and every mapping may be gone.
    next_heartbeat: Option<Instant>,
    registered: BTreeSet<SocketAddr>,
    /// Behind a hard NAT nobody may be introduced to us before we can punch back: the
    /// registration (and what follows it) waits for the pool.
    held_registration: Vec<registration::actor::Command>,
    pool: Pool,
    peers: BTreeMap<PeerId, Peer>,
    /// Serving: what our node record says (its relay load as last published), when it was
    /// last published, and when a changed load is due to be (see [`LOAD_PUBLISH_INTERVAL`]).
    advert: Option<Advert>,
    published: Option<Instant>,
    publish_due: Option<Instant>,
    /// The relay circuits we carry (ready: both sides asked).
    carrying: BTreeSet<u64>,
    orders: VecDeque<Order>,
    /// The spans of what the node does, from its orders and its roles' reports.
    spans: Spans,
}

impl NodeCore {
    /// A node listening on `listen` (the primary socket first), `lan` being the primary's
    /// address as its LAN sees it; `epoch` ties `now`s to Unix time (milliseconds).
    pub fn new(
        config: Config,
        listen: Vec<SocketAddr>,
        lan: Option<SocketAddr>,
        epoch: (Instant, u64),
        rng: StdRng,
    ) -> Self {
        NodeCore {
            config,
            listen,
            lan,
            epoch,
            rng,
            table: Stored::default(),
            joining: Vec::new(),
            rejoining: false,
            serving: false,
            seeds: Vec::new(),
            nat: None,
            provisional: None,
            registered_nat: None,
            probing: None,
            probe_locals: None,
            last_probe: None,
            probed_with_homes: false,
            dialing_back: None,
            mesh_up: BTreeSet::new(),
            homes: BTreeSet::new(),
            suggested: BTreeSet::new(),
            topics: BTreeMap::new(),
            next_topic_lookup: None,
            next_heartbeat: None,
            registered: BTreeSet::new(),
            held_registration: Vec::new(),
            pool: Pool::Closed,
            peers: BTreeMap::new(),
            advert: None,
            published: None,
            publish_due: None,
            carrying: BTreeSet::new(),
            orders: VecDeque::new(),
            spans: Spans::default(),
        }
    }

    pub fn poll_order(&mut self) -> Option<Order> {
        let order = self.orders.pop_front();
        match &order {
            Some(order) => self.spans.order(order),
            None => self.spans.drained(),
        }
        order
    }

    pub fn peer_id(&self) -> PeerId {
        self.config.identity.peer_id()
    }

    pub fn nat(&self) -> Option<&NatReport> {
        self.nat.as_ref()
    }

    /// What the node keeps across restarts (as its store holds it).
    pub fn table(&self) -> &Stored {
        &self.table
    }

    /// The introducers that accepted our registration.
    pub fn registered(&self) -> &BTreeSet<SocketAddr> {
        &self.registered
    }

    fn emit(&mut self, event: NodeEvent) {
        self.orders.push_back(Order::Emit(event));
    }

    fn peer(&mut self, peer: PeerId) -> &mut Peer {
        self.peers.entry(peer).or_default()
    }

    /// Forgets a peer nothing is left of.
    fn tidy(&mut self, peer: &PeerId) {
        if self.peers.get(peer).is_some_and(Peer::is_empty) {
            self.peers.remove(peer);
        }
    }

    // ----- the user -----

    /// Starts the node with what its store kept: joins the seeds, or probes against STUN
    /// servers, or rejoins through the members it kept, or — with nobody to ask — becomes
    /// the first node of a new mesh.
    pub fn start(&mut self, now: Instant, mut stored: Stored) {
        tracing::debug!(nat_reports = stored.nat.len(), members = stored.members.len(), "starting");
        let now_ms = self.unix_ms(now);
        if stored.prune(now_ms) > 0 {
            self.orders.push_back(Order::Store(StoreOp::Prune(now_ms)));
        }
        self.table = stored;
        if !self.config.bootstrap.is_empty() {
            self.join(self.config.bootstrap.clone());
        } else if !self.config.stun.is_empty() {
            self.on_joined(now, Ok(Vec::new()));
        } else if !self.table.members.is_empty() {
            // Restarted from the data dir alone: the members it met are its seeds. They
            // are suspects until they answer, which first contact finds out.
            self.rejoining = true;
            self.join(self.table.rejoin_seeds());
        } else if self.config.serve == Serve::Never {
            self.emit(NodeEvent::Fatal(FatalError::NothingToJoin));
        } else {
            self.found(now);
        }
    }

    fn join(&mut self, seeds: Vec<SocketAddr>) {
        self.joining = seeds.clone();
        let config = self.config.bootstrap_timing.clone();
        self.orders.push_back(Order::FirstContact(bootstrap::Command::Join { config, seeds }));
    }

    /// The first node of a new mesh: nobody to ask, so it serves (unless told not to)
    /// without probing.
    fn found(&mut self, now: Instant) {
        if self.config.serve == Serve::Auto {
            self.serve(now);
        }
        self.ready(true);
    }

    /// Unix milliseconds at `now`.
    fn unix_ms(&self, now: Instant) -> u64 {
        let (at, unix_ms) = self.epoch;
        unix_ms + now.saturating_duration_since(at).as_millis() as u64
    }

    /// The user wants to reach `peer`.
    pub fn connect(&mut self, now: Instant, peer: PeerId) {
        self.peer(peer).redirected = false;
        if self.registered.is_empty() {
            self.peer(peer).phase = Phase::AwaitingRegistration;
            self.register_early(now);
        } else {
            self.ask_introduction(now, peer);
        }
    }

    /// Pings a connected peer; the answer is a `Pong` with `seq` (the user numbers its pings).
    pub fn ping(&mut self, peer: PeerId, seq: u64) {
        self.orders.push_back(Order::Session(session::actor::Command::Ping(peer, seq)));
    }

    /// Sends one datagram to a connected peer.
    pub fn send(&mut self, peer: PeerId, payload: Vec<u8>) {
        self.orders.push_back(Order::Session(session::actor::Command::Send(peer, payload)));
    }

    /// When [`NodeCore::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let relays = self.peers.values().filter_map(|p| match p.phase {
            Phase::Punching { relay_at, .. } => relay_at,
            _ => None,
        });
        relays.chain(self.next_topic_lookup).chain(self.next_heartbeat).chain(self.publish_due).min()
    }

    /// Punches that have taken too long get a relay circuit as well; a relay load that
    /// changed is published once its interval is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.publish_due.is_some_and(|t| t <= now) {
            self.publish_due = None;
            self.publish_load(now);
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.phase, Phase::Punching { relay_at: Some(t), .. } if t <= now))
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            let p = self.peer(peer);
            if let Phase::Punching { relay_at, .. } = &mut p.phase {
                *relay_at = None;
            }
            if p.session.is_none() {
                let why = format!("no direct path within {:?}", self.config.relay_after);
                self.relay(peer, why);
            }
        }
        if self.next_topic_lookup.is_some_and(|t| now >= t) {
            self.lookup_topics(now);
        }
        if let Some(due) = self.next_heartbeat.filter(|t| now >= *t) {
            self.next_heartbeat = Some(now + HEARTBEAT);
            if now > due + WAKEUP_GAP {
                self.woke_up(now, now - due);
            }
        }
    }

    /// The machine slept: NATs have likely forgotten every mapping, and the machine may
    /// have woken on another network. Register again now (our homes see where we are),
    /// classify the NAT again, punch every session anew, look our topics up.
    fn woke_up(&mut self, now: Instant, late: Duration) {
        tracing::info!(?late, "woke up: registering and punching again");
        self.emit(NodeEvent::Woke { late });
        self.orders.push_back(Order::Registration(registration::actor::Command::Refresh));
        self.reprobe(now);
        let sessions: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.phase == Phase::Idle && p.session.is_some())
            .map(|(id, _)| *id)
            .collect();
        for peer in sessions {
            self.punch_again(peer);
        }
        if !self.topics.is_empty() {
            self.lookup_topics(now);
        }
    }

    /// The user joins `topic`: our homes say so to the mesh, and we look up and connect to
    /// everyone on it, again every `TOPIC_LOOKUP` (to find newcomers and members that
    /// come back).
    pub fn join_topic(&mut self, now: Instant, topic: Vec<u8>) {
        if self.topics.contains_key(&topic) {
            return;
        }
        self.topics.insert(topic, BTreeSet::new());
        let topics = self.topics.keys().cloned().collect();
        self.orders.push_back(Order::Registration(registration::actor::Command::Topics(topics)));
        self.register_early(now);
        self.lookup_topics(now);
    }

    fn lookup_topics(&mut self, now: Instant) {
        self.next_topic_lookup = (!self.topics.is_empty()).then_some(now + TOPIC_LOOKUP);
        if self.registered.is_empty() {
            return;
        }
        for topic in self.topics.keys() {
            self.orders.push_back(Order::Registration(registration::actor::Command::LookupTopic(topic.clone())));
        }
    }

    /// Who is on a topic we joined: newcomers are connected to (by the side with the
    /// smaller PeerId, so that two members do not introduce themselves to each other
    /// twice at once); those no longer listed have left.
    fn on_topic_members(&mut self, now: Instant, topic: Vec<u8>, peers: Vec<PeerId>) {
        let me = self.config.identity.peer_id();
        let Some(known) = self.topics.get_mut(&topic) else { return };
        let listed: BTreeSet<PeerId> = peers.into_iter().filter(|p| *p != me).collect();
        let gone: Vec<PeerId> = known.difference(&listed).copied().collect();
        let new: Vec<PeerId> = listed.difference(known).copied().collect();
        *known = listed;
        for peer in gone {
            self.emit(NodeEvent::TopicLeft { peer, topic: topic.clone() });
        }
        for peer in new {
            self.emit(NodeEvent::TopicMember { peer, topic: topic.clone() });
            let idle = self.peers.get(&peer).is_none_or(|p| p.phase == Phase::Idle && p.session.is_none());
            if idle && me < peer {
                self.connect(now, peer);
            }
        }
    }

    // ----- the roles -----

    /// What a role reported.
    pub fn handle_report(&mut self, now: Instant, report: Report) {
        self.spans.report(&report);
        match report {
            Report::Socket(socket::Event::Bound { purpose, sockets }) => self.on_bound(purpose, sockets),
            Report::FirstContact(bootstrap::Event::Joined(joined)) => self.on_joined(now, joined),
            Report::FirstContact(bootstrap::Event::Late(seed)) => self.on_late_seed(now, seed),
            Report::FirstContact(bootstrap::Event::Reachable { from }) => {
                tracing::info!(%from, "dialed back: reachable unsolicited");
                self.on_dial_back(now, true)
            }
            Report::FirstContact(bootstrap::Event::NotReachable) => self.on_dial_back(now, false),
            Report::FirstContact(bootstrap::Event::DialBackAsked { addr, nonce }) => {
                self.orders.push_back(Order::Mesh(mesh::Command::DialBack { addr, nonce }))
            }
            // First contact holds the cookies that prove the asker's address; the mesh holds
            // the members and answers.
            Report::FirstContact(bootstrap::Event::MembersAsked { socket, addr, request_id, offset }) => {
                let list = mesh::Command::ListMembers { socket, to: addr, request_id, offset };
                self.orders.push_back(Order::Mesh(list))
            }
            Report::Probe(ProbeEvent::Mapped(report)) => self.on_mapped(now, report),
            Report::Probe(ProbeEvent::Classified(Ok(report))) => self.on_probed(now, report),
            // Classifying again (after a wakeup or a move) may fail while the network settles:
            // the last report stands.
            Report::Probe(ProbeEvent::Classified(Err(e))) if self.nat.is_some() => {
                tracing::warn!("classifying the NAT again failed: {e}")
            }
            Report::Probe(ProbeEvent::Classified(Err(e))) => self.emit(NodeEvent::Fatal(FatalError::Probe(e))),
            Report::Probe(ProbeEvent::Lifetime(report)) => self.on_lifetime(report),
            Report::Broker(event) => self.on_broker(now, event),
            Report::Registration(introducer, event) => self.on_registration(now, introducer, event),
            Report::Punch(event) => self.on_punch(now, event),
            Report::Session(peer, event) => self.on_session(now, peer, event),
            Report::Relay(relay::Event::Ready { circuit, peers }) => {
                self.carrying.insert(circuit);
                self.publish_load(now);
                self.emit(NodeEvent::Relaying { peers })
            }
            Report::Relay(relay::Event::Closed { circuit, .. }) => {
                self.carrying.remove(&circuit);
                self.publish_load(now);
            }
            Report::Relay(other) => tracing::debug!(?other, "relay"),
            Report::Mesh(event) => self.on_mesh(now, event),
        }
    }

    fn ready(&mut self, public: bool) {
        let (peer_id, listen, nat) = (self.config.identity.peer_id(), self.listen.clone(), self.nat);
        self.emit(NodeEvent::Ready { peer_id, listen, public, nat });
    }

    /// Takes the introducer and relay roles, says so to those who say Hello, and joins the
    /// mesh of public nodes through the seeds that serve (or starts one).
    /// The store remembers it: a public node whose stored members are all down when it
    /// restarts serves on its own rather than exit.
    fn serve(&mut self, now: Instant) {
        if std::mem::replace(&mut self.serving, true) {
            return;
        }
        let now_ms = self.unix_ms(now);
        self.table.served_ms = Some(now_ms);
        self.orders.push_back(Order::Store(StoreOp::Served(now_ms)));
        self.orders.push_back(Order::Store(StoreOp::Flush));
        self.orders.push_back(Order::Broker(broker::Command::Serve));
        self.orders.push_back(Order::Relay(relay::Command::Serve));
        self.orders.push_back(Order::FirstContact(bootstrap::Command::Serve));
        // Where others reach us: what probing saw, else where we listen (a node that
        // starts a mesh on its own has nobody to ask).
        let addrs = match self.nat {
            Some(nat) => vec![nat.public_addr],
            None => self.listen.iter().copied().filter(|a| !a.ip().is_unspecified()).take(1).collect(),
        };
        let advert = Advert {
            addrs,
            introducer: true,
            relay: true,
            relay_capacity: self.config.relay.max_circuits as u32,
            relay_load: 0,
        };
        self.advert = Some(advert.clone());
        // Peers may ask for us by PeerId: the broker introduces them to us.
        let me = self.signed_record_with(now, self.public_report().as_ref());
        self.orders.push_back(Order::Broker(broker::Command::Me(me)));
        self.published = Some(now);
        self.orders.push_back(Order::Mesh(mesh::Command::Start(advert)));
        let seeds: Vec<(PeerId, SocketAddr)> =
            self.seeds.iter().filter(|s| s.introducer).map(|s| (s.peer_id, s.addr)).collect();
        if !seeds.is_empty() {
            self.orders.push_back(Order::Mesh(mesh::Command::Join(seeds)));
        }
    }

    /// Publishes our node record again if the relay circuits we carry are not what it says,
    /// at most once per [`LOAD_PUBLISH_INTERVAL`] (a change within it is published when it
    /// ends, if the count has not come back by then).
    fn publish_load(&mut self, now: Instant) {
        let load = self.carrying.len().try_into().unwrap_or(u32::MAX);
        let Some(advert) = self.advert.as_mut().filter(|a| a.relay_load != load) else {
            self.publish_due = None;
            return;
        };
        let due = self.published.map_or(now, |t| t + LOAD_PUBLISH_INTERVAL);
        if now < due {
            self.publish_due = Some(due);
            return;
        }
        advert.relay_load = load;
        let advert = advert.clone();
        (self.published, self.publish_due) = (Some(now), None);
        self.orders.push_back(Order::Mesh(mesh::Command::Publish(advert)));
    }

    fn on_mesh(&mut self, now: Instant, event: mesh::Event) {
        match event {
            mesh::Event::Joined(peer) => {
                // Up now: asked early when the node restarts.
                let now_ms = self.unix_ms(now);
                if let Some(member) = self.table.members.get_mut(&peer) {
                    member.seen_ms = now_ms;
                    let member = member.clone();
                    self.orders.push_back(Order::Store(StoreOp::PutMember(member)));
                }
                self.mesh_up.insert(peer);
                self.offer_members();
                self.emit(NodeEvent::Mesh { change: MeshChange::Joined, peer })
            }
            // Kept: a member that is down now is a suspect worth asking at the next start.
            mesh::Event::Left(peer) => {
                self.mesh_up.remove(&peer);
                self.offer_members();
                self.emit(NodeEvent::Mesh { change: MeshChange::Left, peer })
            }
            mesh::Event::Suspect(peer) => self.emit(NodeEvent::Mesh { change: MeshChange::Suspect, peer }),
            mesh::Event::Alive(peer) => self.emit(NodeEvent::Mesh { change: MeshChange::Alive, peer }),
            mesh::Event::Record(record) => {
                tracing::debug!(peer = %record.peer, addrs = ?record.addrs, "node record");
                self.remember_record(&record);
                self.offer_members();
            }
            mesh::Event::Homes { peer, homes } => {
                self.orders.push_back(Order::Broker(broker::Command::Homes { peer, homes }))
            }
            mesh::Event::Topic { topic, peers } => {
                self.orders.push_back(Order::Broker(broker::Command::Topic { topic, peers }))
            }
            mesh::Event::Active | mesh::Event::Alone => tracing::debug!(?event, "mesh"),
        }
    }

    /// Keeps a member's signed node record as it was gossiped (not flushed: the mesh hands
    /// it on again). A member first contact met keeps the address it answered at; one
    /// known only from gossip is reached at the first address of its record, and ranks
    /// after those that answered us.
    /// The members up now that introduce, with their records: our broker offers a few to
    /// each new registrant as further homes.
    fn offer_members(&mut self) {
        let members = self
            .mesh_up
            .iter()
            .filter_map(|p| self.table.members.get(p))
            .filter(|m| m.introducer && !m.record.is_empty())
            .map(|m| (m.peer_id, m.record.clone()))
            .collect();
        self.orders.push_back(Order::Broker(broker::Command::Members(members)));
    }

    fn remember_record(&mut self, record: &mesh::record::NodeRecord) {
        let known = self.table.members.get(&record.peer);
        let Some(addr) = known.map(|m| m.addr).or(record.addrs.first().copied()) else { return };
        let member = Member {
            peer_id: record.peer,
            addr,
            listen: record.addrs.clone(),
            introducer: record.introducer,
            record: record.signed.clone(),
            seen_ms: known.map_or(0, |m| m.seen_ms),
        };
        self.table.members.insert(record.peer, member.clone());
        self.orders.push_back(Order::Store(StoreOp::PutMember(member)));
    }

    /// Keeps a seed that answered as a member (merged with what the store has of it), so a
    /// restart without `--bootstrap` rejoins through it. Not flushed: the caller flushes
    /// once for all.
    fn remember(&mut self, now: Instant, seed: &Seed) {
        let seen_ms = self.unix_ms(now);
        let record = self.table.members.get(&seed.peer_id).map(|m| m.record.clone()).unwrap_or_default();
        let member = Member {
            peer_id: seed.peer_id,
            addr: seed.addr,
            listen: seed.listen.clone(),
            introducer: seed.introducer,
            record,
            seen_ms,
        };
        self.table.members.insert(seed.peer_id, member.clone());
        self.orders.push_back(Order::Store(StoreOp::PutMember(member)));
    }

    fn on_joined(&mut self, now: Instant, joined: Result<Vec<Seed>, BootstrapError>) {
        let seeds = match joined {
            Ok(seeds) => {
                tracing::debug!(seeds = seeds.len(), "first contact answered");
                seeds
            }
            // A public node serves on its own when none of its members is up: nodes that
            // bootstrap off each other must be able to restart while the others are down.
            Err(e) if self.rejoining && self.config.serve == Serve::Auto && self.table.served_ms.is_some() => {
                tracing::warn!("none of the members kept in the store answered ({e}): serving on our own");
                return self.found(now);
            }
            Err(e) if self.rejoining => return self.emit(NodeEvent::Fatal(FatalError::Rejoin(e))),
            Err(e) => return self.emit(NodeEvent::Fatal(FatalError::Bootstrap(e))),
        };
        // Seeds often list every seed, the one they run on included: that one is us.
        let me = self.peer_id();
        let (ourselves, seeds): (Vec<Seed>, Vec<Seed>) = seeds.into_iter().partition(|s| s.peer_id == me);
        for seed in &ourselves {
            tracing::warn!("bootstrap node {} is this node itself: skipped", seed.addr);
            self.joining.retain(|a| *a != seed.addr);
        }
        if seeds.is_empty() && !ourselves.is_empty() && self.config.stun.is_empty() {
            // Nobody else answered: as with no bootstrap node at all.
            if self.config.serve == Serve::Never {
                return self.emit(NodeEvent::Fatal(FatalError::NothingToJoin));
            }
            tracing::warn!("no other bootstrap node answered: starting a new mesh");
            return self.found(now);
        }
        // Flushed before anything is acknowledged: a node killed once registered must
        // find its members when it restarts.
        for seed in &seeds {
            self.remember(now, seed);
        }
        if !seeds.is_empty() {
            self.orders.push_back(Order::Store(StoreOp::Flush));
        }
        self.seeds = seeds;
        let Some(config) = self.probe_config() else { return };
        let sockets = (1..=Probe::sockets_needed(&config)).map(probe_socket).collect();
        self.probing = Some(config);
        self.orders.push_back(Order::Socket(socket::Command::Bind { purpose: Purpose::Probe, sockets }));
        // The network we are on is known now: what we measured on it last time can stand in
        // until probing ends.
        self.provisional = self.stored_nat(now);
        if let Some(report) = self.provisional {
            tracing::debug!(?report, "NAT report stored for this network");
        }
        self.register_early(now);
    }

    /// What probing asks: the seeds that answered first contact (with their alternate
    /// ports), then those that did not (their answers may just have been lost), then the
    /// STUN servers given.
    fn probe_config(&self) -> Option<ProbeConfig> {
        let answered: Vec<SocketAddr> = self.seeds.iter().map(|s| s.addr).collect();
        let silent = self.joining.iter().filter(|a| !answered.contains(a));
        let mut servers: Vec<Server> = self
            .seeds
            .iter()
            .map(|s| Server { addr: s.addr, other: alternate_port(s) })
            .chain(silent.chain(&self.config.stun).copied().map(Server::new))
            .collect();
        // Homes on other IPs serve probing too: a second IP is what tells an
        // endpoint-independent mapping from a symmetric one.
        let ips: BTreeSet<IpAddr> = servers.iter().map(|s| s.addr.ip()).collect();
        let homes = self.homes.iter().filter(|h| !ips.contains(&h.ip()));
        servers.extend(homes.copied().map(Server::new).take(1));
        if servers.is_empty() {
            return None;
        }
        let mut config = ProbeConfig::new(servers);
        // Padding keeps our nodes' answers no larger than the question, but standard
        // servers (coturn) answer it with a path-MTU-sized datagram.
        config.pad_requests = self.config.stun.is_empty();
        Some(config)
    }

    /// Classifies the NAT again: after a wakeup or a move the node may sit behind another
    /// NAT (or none), and its record must say so before peers plan punches with it. Not
    /// while the first classification runs, and at most every [`REPROBE_INTERVAL`].
    fn reprobe(&mut self, now: Instant) {
        let Some(locals) = self.probe_locals.clone() else { return };
        if self.nat.is_none()
            || self.dialing_back.is_some()
            || self.last_probe.is_some_and(|t| now < t + REPROBE_INTERVAL)
        {
            return;
        }
        let Some(config) = self.probe_config() else { return };
        tracing::info!("classifying the NAT again");
        self.last_probe = Some(now);
        let locals = LocalSockets { primary: self.lan, ..locals };
        let seed = self.rng.gen();
        self.orders.push_back(Order::Probe(probing::Command::Start { config, locals, seed }));
    }

    /// The driver saw the address the OS sends from change (another network, a new DHCP
    /// lease): our record's private address is stale and the NAT may be another one.
    pub fn local_address(&mut self, now: Instant, lan: SocketAddr) {
        if self.lan == Some(lan) {
            return;
        }
        tracing::info!(old = ?self.lan, new = %lan, "local address changed");
        self.lan = Some(lan);
        if let Some(report) = self.registered_nat {
            self.update_record(now, report);
        }
        self.reprobe(now);
    }

    /// The NAT report stored for the network we are on — our LAN IP and the public IP the
    /// first seed saw us at, both known one round trip after start — if it was measured
    /// within [`Config::stored_nat_max_age`] and says easy or public, at the address the
    /// seed sees us at now. A stored hard report is not used: a hard node's pool would open
    /// mappings while probing samples how the NAT allocates ports (probing's own mapping
    /// verdict comes a few round trips later, see `on_mapped`).
    fn stored_nat(&self, now: Instant) -> Option<NatReport> {
        let (lan, seed) = (self.lan?, self.seeds.first()?);
        let stored = self.table.nat.get(&Network { lan: lan.ip(), public: seed.observed.ip() })?;
        let age = Duration::from_millis(self.unix_ms(now).saturating_sub(stored.measured_ms));
        let report = NatReport { public_addr: seed.observed, ..stored.report };
        (age <= self.config.stored_nat_max_age && report.nat_type() != NatType::Hard).then_some(report)
    }

    /// A connect (or a topic lookup) waits for a registration, and classification has not
    /// ended: register with the provisional report now, so the introduction is asked for at once rather than
    /// after the filtering tests (whose silence behind a filtering NAT takes 700 ms). The
    /// record is re-registered once classified if the report changed. A node nobody waits
    /// on registers once classified, as it always did: its `ready` (the measured report)
    /// comes first.
    fn register_early(&mut self, now: Instant) {
        let Some(report) = self.provisional else { return };
        let waiting = !self.awaiting_registration().is_empty() || !self.topics.is_empty();
        if self.nat.is_none() && self.registered_nat.is_none() && waiting {
            tracing::debug!(?report, "registering before classification ends: a connect waits");
            self.register(now, report);
        }
    }

    /// Probing knows our mapping and port allocation; filtering may take 700 ms more. A
    /// connect that waits is introduced with that (an unknown filtering counts as the most
    /// restrictive: nothing relies on the peer getting in unsolicited). Not with no NAT in
    /// front: whether something filters decides whether we are public, and a public node
    /// plans otherwise (it waits for the peer's first proof), so that waits for the end.
    fn on_mapped(&mut self, now: Instant, report: NatReport) {
        tracing::debug!(?report, "NAT mapping known");
        if report.no_nat || self.nat.is_some() {
            return;
        }
        // A stored report that agrees stands: it knows the filtering too.
        let key = |r: &NatReport| (r.no_nat, r.mapping, r.allocation);
        if self.provisional.is_some_and(|p| key(&p) == key(&report)) {
            return;
        }
        self.provisional = Some(report);
        match self.registered_nat {
            Some(_) => self.update_record(now, report),
            None => self.register_early(now),
        }
    }

    /// A seed that answered first contact late: register with it too.
    fn on_late_seed(&mut self, now: Instant, seed: Seed) {
        if self.seeds.iter().any(|s| s.addr == seed.addr) {
            return;
        }
        self.seeds.push(seed.clone());
        self.remember(now, &seed);
        self.orders.push_back(Order::Store(StoreOp::Flush));
        if !seed.introducer || !self.config.register {
            return;
        }
        // Not registering yet: it is registered with along with the others.
        if self.registered_nat.is_none() {
            return;
        }
        self.register_with(now, vec![seed.addr]);
    }

    /// Registers with `introducers` (our homes from now on), or adds them to the
    /// registration that waits for the birthday pool.
    fn register_with(&mut self, now: Instant, introducers: Vec<SocketAddr>) {
        let Some(report) = self.registered_nat else { return };
        self.homes.extend(&introducers);
        let held = self.held_registration.iter_mut().find_map(|c| match c {
            registration::actor::Command::Register { introducers, .. } => Some(introducers),
            _ => None,
        });
        match held {
            Some(held) => held.extend(introducers),
            None => {
                let record = self.signed_record(now);
                self.registration(report, registration::actor::Command::Register { introducers, record });
            }
        }
    }

    /// Keeps `HOMES` homes: takes suggested ones while there are fewer (some failed, or
    /// the user gave fewer seeds).
    fn rehome(&mut self, now: Instant) {
        if !self.config.register || self.registered_nat.is_none() {
            return;
        }
        let wanted = HOMES.saturating_sub(self.homes.len());
        let new: Vec<SocketAddr> =
            self.suggested.iter().filter(|a| !self.homes.contains(a)).take(wanted).copied().collect();
        for addr in &new {
            self.suggested.remove(addr);
        }
        if !new.is_empty() {
            tracing::debug!(homes = ?new, "adding homes");
            self.register_with(now, new);
            self.probe_with_homes(now);
        }
    }

    /// The seeds (a single IP) could not tell our mapping: classified as hard, a full-cone
    /// NAT would be birthday-punched or relayed. A home on another IP can tell it: classify
    /// again at once with it (once; later changes are [`NodeCore::reprobe`]'s).
    fn probe_with_homes(&mut self, now: Instant) {
        let unknown = self.nat.is_some_and(|r| !r.no_nat && r.mapping.is_none());
        let seed_ips: BTreeSet<IpAddr> = self.seeds.iter().map(|s| s.addr.ip()).collect();
        if !unknown || self.probed_with_homes || self.homes.iter().all(|h| seed_ips.contains(&h.ip())) {
            return;
        }
        self.probed_with_homes = true;
        self.last_probe = None;
        self.reprobe(now);
    }

    fn on_bound(&mut self, purpose: Purpose, sockets: Vec<(SocketId, SocketAddr)>) {
        match purpose {
            Purpose::Probe => {
                let Some(config) = self.probing.take() else { return };
                let locals = LocalSockets { primary: self.lan, extra: sockets.into_iter().map(|(_, a)| a).collect() };
                self.probe_locals = Some(locals.clone());
                let seed = self.rng.gen();
                self.orders.push_back(Order::Probe(probing::Command::Start { config, locals, seed }));
            }
            Purpose::Pool => {
                self.pool = Pool::Open;
                let pool = sockets.into_iter().map(|(id, _)| id).collect();
                self.orders.push_back(Order::Punch(punch::actor::Command::Pool(pool)));
                for held in std::mem::take(&mut self.held_registration) {
                    self.orders.push_back(Order::Registration(held));
                }
            }
        }
    }

    /// Probing found no NAT but could not test filtering (no server on a second IP): another
    /// member of the mesh reaching us unsolicited is what tells we are public (dial-back).
    fn on_probed(&mut self, now: Instant, report: NatReport) {
        tracing::debug!(?report, "NAT classified");
        let untested = report.no_nat && report.filtering != Some(Filtering::EndpointIndependent);
        let seed = self.seeds.iter().find(|s| s.introducer && s.cookie != 0).cloned();
        match seed.filter(|_| untested && self.config.serve == Serve::Auto && self.dialing_back.is_none()) {
            Some(seed) => {
                self.dialing_back = Some(report);
                let nonce = self.rng.gen();
                self.orders.push_back(Order::FirstContact(bootstrap::Command::DialBack { seed, nonce }));
            }
            None => self.classified(now, report),
        }
    }

    /// The dial-back's outcome: whether someone reached us unsolicited.
    fn on_dial_back(&mut self, now: Instant, reached: bool) {
        let Some(mut report) = self.dialing_back.take() else { return };
        if reached {
            report.filtering = Some(Filtering::EndpointIndependent);
        }
        self.classified(now, report);
    }

    fn classified(&mut self, now: Instant, report: NatReport) {
        let again = self.nat.replace(report).is_some();
        self.provisional = None;
        // Kept for the network it was measured on (not flushed: losing it costs a probe).
        if let Some(lan) = self.lan {
            let network = Network { lan: lan.ip(), public: report.public_addr.ip() };
            let nat = MeasuredNat { report, measured_ms: self.unix_ms(now) };
            self.table.nat.insert(network, nat);
            self.orders.push_back(Order::Store(StoreOp::PutNat(network, nat)));
        }
        let public = report.nat_type() == NatType::Public;
        if public && self.config.serve == Serve::Auto {
            self.serve(now);
        }
        let hard = report.nat_type() == NatType::Hard;
        if hard {
            self.bind_pool();
        }
        if again {
            self.emit(NodeEvent::Nat { public, nat: report });
            // A serving node that moved says where it is now.
            if let Some(advert) = self.advert.as_mut().filter(|a| a.addrs != [report.public_addr]) {
                advert.addrs = vec![report.public_addr];
                let advert = advert.clone();
                self.published = Some(now);
                self.orders.push_back(Order::Mesh(mesh::Command::Publish(advert)));
            }
        } else {
            self.ready(public);
        }
        match self.registered_nat {
            None => self.register(now, report),
            // Registered early with what we now measured (the address aside: peers are
            // introduced at the one the introducer sees).
            Some(old) if NatReport { public_addr: report.public_addr, ..old } == report => {}
            Some(_) => self.update_record(now, report),
        }
        self.probe_with_homes(now);
    }

    /// Registers with every seed that introduces, our record saying `report`.
    fn register(&mut self, now: Instant, report: NatReport) {
        let introducers: Vec<SocketAddr> = self.seeds.iter().filter(|s| s.introducer).map(|s| s.addr).collect();
        if !self.config.register || introducers.is_empty() {
            return;
        }
        self.registered_nat = Some(report);
        self.register_with(now, introducers);
        self.rehome(now);
    }

    /// What we registered said another NAT than we know now (registered early, then
    /// classified): every registration registers the new record at once, so later
    /// introductions plan with it. A Register still held for the pool takes it too.
    fn update_record(&mut self, now: Instant, report: NatReport) {
        tracing::debug!(?report, "NAT report changed since we registered: registering the new record");
        self.registered_nat = Some(report);
        let record = self.signed_record(now);
        for held in &mut self.held_registration {
            if let registration::actor::Command::Register { record: r, .. } = held {
                *r = record.clone();
            }
        }
        self.registration(report, registration::actor::Command::Record(record));
    }

    /// A command to the registrations, made under `report`: behind a hard NAT it waits for
    /// the birthday pool (and so does everything after it, to keep their order).
    fn registration(&mut self, report: NatReport, command: registration::actor::Command) {
        if report.nat_type() == NatType::Hard {
            self.bind_pool();
        }
        let wait = report.nat_type() == NatType::Hard && self.pool != Pool::Open;
        if wait || !self.held_registration.is_empty() {
            self.held_registration.push(command);
        } else {
            self.orders.push_back(Order::Registration(command));
        }
    }

    /// Probing timed our NAT's idle mappings: keep ours alive within that.
    fn on_lifetime(&mut self, report: LifetimeReport) {
        // The registration keepalive stands unless the NAT forgets sooner.
        let default = registration::Config::default().keepalive;
        let keepalive = self.config.adapt_keepalive.then(|| report.keepalive(default));
        if let Some(keepalive) = keepalive.filter(|_| report.below.is_some()) {
            self.orders.push_back(Order::Registration(registration::actor::Command::Keepalive(keepalive)));
            self.orders.push_back(Order::Session(session::actor::Command::Keepalive(keepalive)));
        }
        let LifetimeReport { at_least, below } = report;
        self.emit(NodeEvent::MappingLifetime { at_least, below, keepalive });
    }

    fn bind_pool(&mut self) {
        if self.pool == Pool::Closed {
            self.pool = Pool::Binding;
            let sockets = (0..self.config.punch.pool_size).map(pool_socket).collect();
            self.orders.push_back(Order::Socket(socket::Command::Bind { purpose: Purpose::Pool, sockets }));
        }
    }

    /// Our signed record: our LAN address and the NAT report our registrations carry.
    fn signed_record(&self, now: Instant) -> pb::SignedPeerRecord {
        self.signed_record_with(now, self.registered_nat.as_ref())
    }

    fn signed_record_with(&self, now: Instant, nat: Option<&NatReport>) -> pb::SignedPeerRecord {
        let record = pb::PeerRecord {
            peer_id: Default::default(),
            private_addrs: self.lan.into_iter().map(Into::into).collect(),
            nat: nat.map(Into::into),
            issued_ms: self.unix_ms(now),
        };
        self.config.identity.sign_record(record)
    }

    /// What a serving node is to those who reach it: public, at the address it advertises.
    fn public_report(&self) -> Option<NatReport> {
        let advertised = self.advert.as_ref().and_then(|a| a.addrs.first());
        Some(NatReport::public(*advertised.or(self.listen.first())?))
    }

    fn ask_introduction(&mut self, now: Instant, peer: PeerId) {
        let p = self.peer(peer);
        (p.phase, p.asked) = (Phase::Asked, Some(now));
        self.orders.push_back(Order::Registration(registration::actor::Command::Introduce(peer)));
        self.progress(peer, Progress::Introducing { via: None });
    }

    fn progress(&mut self, peer: PeerId, progress: Progress) {
        self.emit(NodeEvent::Progress { peer, progress });
    }

    /// The introducer sees us at a new address: our NAT dropped our mappings and made new
    /// ones, so peers' datagrams go to mappings that are gone. Punch every direct session
    /// again; each moves to its new path when the punch succeeds. (A port-preserving NAT
    /// re-creates the same mappings and needs none of this.)
    fn repunch(&mut self) {
        let direct = |p: &Peer| p.phase == Phase::Idle && p.session.as_ref().is_some_and(|s| s.path != Path::Relayed);
        let peers: Vec<PeerId> = self.peers.iter().filter(|(_, p)| direct(p)).map(|(id, _)| *id).collect();
        for peer in peers {
            tracing::info!(%peer, "mapped anew: punching again");
            self.punch_again(peer);
        }
    }

    /// Asks for a new introduction to a peer we have a session with: the punch (or relay)
    /// that follows moves the session onto whatever path works now.
    fn punch_again(&mut self, peer: PeerId) {
        self.peer(peer).phase = Phase::Asked;
        self.orders.push_back(Order::Registration(registration::actor::Command::Introduce(peer)));
    }

    /// The connection the user asked for cannot be made.
    fn fail(&mut self, peer: PeerId, error: ConnectError) {
        let p = self.peer(peer);
        // A session the user did not ask to (re)connect just stays as it is.
        let background = p.asked.is_none() && p.session.is_some();
        (p.phase, p.asked, p.redirected) = (Phase::Idle, None, false);
        p.homes_left.clear();
        self.settle(peer);
        self.tidy(&peer);
        match background {
            true => tracing::info!(%peer, "punching again failed: {error}"),
            false => self.emit(NodeEvent::ConnectFailed { peer, error }),
        }
    }

    /// The punch with `peer` is over: its introducer may stop repeating the introduction.
    fn settle(&mut self, peer: PeerId) {
        self.orders.push_back(Order::Registration(registration::actor::Command::Settle(peer)));
    }

    fn on_broker(&mut self, now: Instant, event: broker::Event) {
        match event {
            broker::Event::Registered { peer, addr } => self.emit(NodeEvent::PeerRegistered { peer, addr }),
            broker::Event::Introduced { requester, target, nonce, repeat } => {
                // Our relay carries their circuit if their punch needs one.
                let peers = [requester, target];
                self.orders.push_back(Order::Relay(relay::Command::Authorize { nonce, peers }));
                if !repeat {
                    self.emit(NodeEvent::Introduced { requester, target })
                }
            }
            // We are its home: the mesh hears so (with its topics), and lookups for it
            // anywhere end here.
            broker::Event::Topics { peer, topics } => {
                self.orders.push_back(Order::Mesh(mesh::Command::Host { peer, topics }));
            }
            broker::Event::Expired { peer } => {
                tracing::info!(%peer, "registration expired");
                self.orders.push_back(Order::Mesh(mesh::Command::Unhost(peer)));
            }
            broker::Event::IntroducedToUs { request_id, peer, public, nonce } => {
                let introduced = Introduced {
                    request_id,
                    peer: *peer,
                    peer_public: public,
                    fresh: false,
                    // Nobody else introduced us: no introducer to show a new mapping to.
                    introducer: SocketAddr::from(([0, 0, 0, 0], 0)),
                    nonce: nonce.to_vec(),
                    initiator: false,
                };
                self.on_introduced(now, None, Box::new(introduced));
            }
            // A member of the mesh is its own home: asked for, it introduces itself.
            broker::Event::Lookup(Key::Peer(peer)) if self.mesh_up.contains(&peer) => {
                let homes = self.table.members.get(&peer).map(|m| vec![m.addr]).unwrap_or_default();
                self.orders.push_back(Order::Broker(broker::Command::Homes { peer, homes }));
            }
            broker::Event::Lookup(key) => self.orders.push_back(Order::Mesh(mesh::Command::Lookup(key))),
        }
    }

    fn on_registration(&mut self, now: Instant, introducer: SocketAddr, event: registration::Event) {
        use registration::Event as R;
        match event {
            R::Registered { observed } => {
                tracing::debug!(%introducer, %observed, "registered");
                self.next_heartbeat.get_or_insert(now + HEARTBEAT);
                let remapped = !self.registered.insert(introducer);
                self.emit(NodeEvent::Registered { introducer, observed });
                // Our homes see us elsewhere: the NAT forgot us (a reboot, a move), and may
                // be another NAT now.
                if remapped {
                    self.repunch();
                    self.reprobe(now);
                }
                for peer in self.awaiting_registration() {
                    self.ask_introduction(now, peer);
                }
                if self.registered.len() == 1 && !self.topics.is_empty() {
                    self.lookup_topics(now);
                }
                for peer in self.awaiting_home(introducer) {
                    let p = self.peer(peer);
                    if let Phase::AwaitingHomes(homes) = std::mem::replace(&mut p.phase, Phase::Asked) {
                        // The others, registered with too, are where to ask next.
                        p.homes_left = homes.into_iter().filter(|h| *h != introducer).collect();
                    }
                    let ask = registration::actor::Command::IntroduceVia(peer, introducer);
                    self.orders.push_back(Order::Registration(ask));
                    self.progress(peer, Progress::Introducing { via: Some(introducer) });
                }
            }
            R::TopicMembers { topic, peers } => self.on_topic_members(now, topic, peers),
            R::Suggested(homes) => {
                self.suggested.extend(homes.into_iter().filter(|h| !self.homes.contains(h)));
                self.rehome(now);
            }
            R::Unreachable => {
                self.registered.remove(&introducer);
                self.homes.remove(&introducer);
                self.rehome(now);
                for peer in self.awaiting_home(introducer) {
                    let Phase::AwaitingHomes(homes) = &mut self.peer(peer).phase else { continue };
                    homes.retain(|h| *h != introducer);
                    if homes.is_empty() {
                        self.next_home(now, peer, ConnectError::IntroducerUnreachable { introducer });
                    }
                }
                self.emit(NodeEvent::IntroducerUnreachable { introducer });
                if self.registered.is_empty() {
                    for peer in self.awaiting_registration() {
                        self.fail(peer, ConnectError::IntroducerUnreachable { introducer });
                    }
                }
            }
            R::Introduced(introduced) => self.on_introduced(now, Some(introducer), introduced),
            R::IntroduceFailed { target, error: registration::IntroduceError::Elsewhere { homes, .. } }
                if !homes.is_empty()
                    && self.peers.get(&target).is_some_and(|p| p.phase == Phase::Asked && !p.redirected) =>
            {
                self.ask_home(now, target, homes)
            }
            R::IntroduceFailed { target, error } => {
                // Punching again for a session the user did not ask for (it went inactive):
                // an introducer that fails is passed over for our other ones.
                let introducers: Vec<SocketAddr> =
                    self.registered.iter().filter(|h| **h != introducer).copied().collect();
                if let Some(p) = self.peers.get_mut(&target).filter(|p| p.asked.is_none() && p.session.is_some()) {
                    if p.homes_left.is_empty() && !p.redirected {
                        (p.homes_left, p.redirected) = (introducers, true);
                    }
                }
                self.next_home(now, target, ConnectError::Introduce(error))
            }
        }
    }

    /// Asking one of the peer's homes failed: the next, if any is left; else the error.
    fn next_home(&mut self, now: Instant, peer: PeerId, error: ConnectError) {
        let left = self.peers.get_mut(&peer).map(|p| std::mem::take(&mut p.homes_left)).unwrap_or_default();
        if left.is_empty() {
            return self.fail(peer, error);
        }
        tracing::info!(%peer, "{error}: asking its next home");
        self.peer(peer).phase = Phase::Asked;
        self.ask_home(now, peer, left);
    }

    /// The peer is registered with other members (`homes`): ask the first for the
    /// introduction, registering with it first if need be. A second redirect for the same
    /// connect is a failure (see the guard in `on_registration`), so this never loops.
    fn ask_home(&mut self, now: Instant, peer: PeerId, mut homes: Vec<SocketAddr>) {
        self.peer(peer).redirected = true;
        // A home we are registered with: ask it now, the others after it.
        if let Some(i) = homes.iter().position(|h| self.registered.contains(h)) {
            let home = homes.remove(i);
            tracing::info!(%peer, %home, "registered elsewhere: asking its home");
            self.peer(peer).homes_left = homes;
            self.orders.push_back(Order::Registration(registration::actor::Command::IntroduceVia(peer, home)));
            self.progress(peer, Progress::Introducing { via: Some(home) });
            return;
        }
        tracing::info!(%peer, ?homes, "registered elsewhere: registering with its homes");
        let new: Vec<SocketAddr> = homes.iter().filter(|h| !self.homes.contains(h)).copied().collect();
        self.peer(peer).phase = Phase::AwaitingHomes(homes);
        if !new.is_empty() {
            self.register_with(now, new);
        }
    }

    /// The peers waiting for `introducer` among their target's homes.
    fn awaiting_home(&self, introducer: SocketAddr) -> Vec<PeerId> {
        let waiting = |p: &Peer| matches!(&p.phase, Phase::AwaitingHomes(homes) if homes.contains(&introducer));
        self.peers.iter().filter(|(_, p)| waiting(p)).map(|(id, _)| *id).collect()
    }

    /// The peers whose connect waits for a registration.
    fn awaiting_registration(&self) -> Vec<PeerId> {
        let waiting = self.peers.iter().filter(|(_, p)| p.phase == Phase::AwaitingRegistration);
        waiting.map(|(id, _)| *id).collect()
    }

    /// An introduction to punch: made by `introducer`, or by ourselves (`None`).
    fn on_introduced(&mut self, now: Instant, introducer: Option<SocketAddr>, introduced: Box<Introduced>) {
        tracing::debug!(peer = %introduced.peer.peer_id, ?introducer, "introduced");
        // Before classification ends, the provisional report we registered with; a node
        // that introduces itself without having probed (the first of a mesh) is public.
        let public = || introducer.is_none().then(|| self.public_report()).flatten();
        let Some(nat) = self.nat.or(self.provisional).or_else(public) else { return };
        let peer = introduced.peer.peer_id;
        let intro = Intro { relay: introducer, nonce: introduced.nonce.clone(), controlling: introduced.initiator };
        let (relay_only, relay_after) = (self.config.relay_only, self.config.relay_after);
        let p = self.peer(peer);
        let relay_at = match &p.phase {
            // The introducer repeats the introduction until the punch settles: the circuit
            // being set up settles it.
            Phase::Relaying { .. } => return,
            // A repeat of the introduction that made the open session.
            Phase::Idle if p.session.as_ref().is_some_and(|s| s.nonce == intro.nonce) => return,
            Phase::Punching { relay_at, .. } => *relay_at,
            _ => introducer.map(|_| now + relay_after),
        };
        if let (true, Some(relay)) = (relay_only, introducer) {
            p.phase = Phase::Relaying { intro: intro.clone() };
            return self.open_relayed(peer, relay, intro);
        }
        p.phase = Phase::Punching { intro, relay_at };
        self.orders.push_back(Order::Punch(punch::actor::Command::Start { nat, introduced }));
    }

    /// Falls back to the relay of the introduction being punched, if there is one (`why`:
    /// what the punch could not do).
    fn relay(&mut self, peer: PeerId, why: String) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else { return false };
        let Phase::Punching { intro: intro @ Intro { relay: Some(relay), .. }, .. } = &p.phase else { return false };
        let (intro, relay) = (intro.clone(), *relay);
        tracing::debug!(%peer, %relay, "no direct path: relaying");
        // The introduction is settled once the circuit is ready (both sides asked for it).
        p.phase = Phase::Relaying { intro: intro.clone() };
        self.open_relayed(peer, relay, intro);
        self.progress(peer, Progress::Relaying { relay, why });
        true
    }

    fn open_relayed(&mut self, peer: PeerId, relay: SocketAddr, intro: Intro) {
        let Intro { nonce, controlling, .. } = intro;
        let open = session::actor::Command::OpenRelayed { peer, relay, nonce, controlling };
        self.orders.push_back(Order::Session(open));
    }

    fn on_punch(&mut self, now: Instant, event: punch::Event) {
        match event {
            punch::Event::Connected {
                peer,
                socket,
                remote,
                proven,
                initiator,
                path,
                strategy,
                probes,
                elapsed,
                keys,
            } => {
                let p = self.peer(peer);
                let nonce = match &p.phase {
                    Phase::Punching { intro, .. } | Phase::Relaying { intro } => intro.nonce.clone(),
                    _ => p.session.as_ref().map(|s| s.nonce.clone()).unwrap_or_default(),
                };
                // A circuit still being set up closes when the session moves (Sessions::open).
                let before = p.session.replace(Open { path, nonce }).map(|s| s.path);
                let asked = p.asked.take();
                (p.phase, p.redirected) = (Phase::Idle, false);
                self.settle(peer);
                let keys = Some(keys);
                let opened = ProvenPath { peer, socket, remote, proven, controlling: initiator, path, strategy, keys };
                self.orders.push_back(Order::Session(session::actor::Command::Open(opened)));
                self.emit(match (before, asked) {
                    (Some(Path::Relayed), _) => NodeEvent::Upgraded { peer, remote, path, strategy },
                    (Some(_), None) => NodeEvent::Moved { peer, remote, path, strategy },
                    _ => {
                        let connect = asked.map_or(elapsed, |t| now.saturating_duration_since(t));
                        NodeEvent::Connected { peer, remote, path, strategy, connect, probes }
                    }
                });
            }
            punch::Event::Started { peer, strategy, ours, theirs, .. } => {
                self.progress(peer, Progress::Punching { strategy, ours, theirs })
            }
            punch::Event::Probing { peer, probes, sprayed } => {
                self.progress(peer, Progress::Probes { sent: probes, sprayed })
            }
            punch::Event::PathProven { peer, addr } => {
                self.orders.push_back(Order::Session(session::actor::Command::AddPath { peer, addr }))
            }
            punch::Event::NeedPool => self.bind_pool(),
            punch::Event::PoolIdle => {
                self.pool = Pool::Closed;
                let sockets = (0..self.config.punch.pool_size).map(pool_socket).collect();
                self.orders.push_back(Order::Socket(socket::Command::Unbind(sockets)));
            }
            punch::Event::Refused { peer, initiator, why } => {
                tracing::debug!(%peer, "not punching: {why}");
                if self.relay(peer, why.to_string()) {
                    return;
                }
                if initiator {
                    self.fail(peer, ConnectError::Unpunchable(why));
                } else {
                    tracing::warn!(%peer, "{why}");
                }
            }
            punch::Event::Failed { peer, error } => {
                tracing::debug!(%peer, "punch failed: {error}");
                let Some(p) = self.peers.get_mut(&peer) else { return };
                if p.session.is_some() {
                    // Already relayed (the fallback came first), or punching again: the
                    // session stands.
                    if matches!(p.phase, Phase::Punching { .. }) {
                        p.phase = Phase::Idle;
                    }
                    return;
                }
                if self.relay(peer, error.to_string()) {
                    return;
                }
                if self.peers.get(&peer).is_some_and(|p| p.asked.is_some()) {
                    self.fail(peer, ConnectError::TimedOut(error));
                } else {
                    self.tidy(&peer);
                }
            }
        }
    }

    fn on_session(&mut self, now: Instant, peer: PeerId, event: session::Event) {
        let session = self.peers.get(&peer).and_then(|p| p.session.as_ref());
        let path = session.map_or(Path::Direct, |s| s.path);
        let event = match event {
            // The punch won the race: the direct session already replaced this one.
            session::Event::Relayed { .. } if session.is_some_and(|s| s.path != Path::Relayed) => return,
            session::Event::Relayed { relay } => {
                let p = self.peer(peer);
                let connect = p.asked.take().map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                let nonce = match std::mem::replace(&mut p.phase, Phase::Idle) {
                    Phase::Relaying { intro } | Phase::Punching { intro, .. } => intro.nonce,
                    _ => Vec::new(),
                };
                p.session = Some(Open { path: Path::Relayed, nonce });
                self.settle(peer);
                let (path, strategy) = (Path::Relayed, Strategy::Relay);
                NodeEvent::Connected { peer, remote: relay, path, strategy, connect, probes: 0 }
            }
            session::Event::RelayFailed { error } => {
                if let Some(p) = self.peers.get_mut(&peer).filter(|p| matches!(p.phase, Phase::Relaying { .. })) {
                    p.phase = Phase::Idle;
                }
                self.settle(peer);
                if self.peers.get(&peer).is_some_and(|p| p.asked.is_some()) {
                    return self.fail(peer, ConnectError::Relay(error));
                }
                tracing::info!(%peer, "relay failed: {error}");
                return self.tidy(&peer);
            }
            session::Event::Pong { seq, rtt } => NodeEvent::Pong { peer, seq, rtt, path },
            session::Event::Active(true) => NodeEvent::PeerState { peer, state: PeerState::Active },
            // Keepalives go unanswered: its path may have died (a NAT that forgot us, an
            // address that changed, a relay that went, a machine that slept): punch anew.
            session::Event::Active(false) => {
                // Both sides notice: the one with the smaller PeerId asks, as on topics.
                let asks = self.config.identity.peer_id() < peer;
                if asks && self.peers.get(&peer).is_some_and(|p| p.phase == Phase::Idle && p.session.is_some()) {
                    tracing::info!(%peer, "peer inactive: punching again");
                    self.punch_again(peer);
                }
                NodeEvent::PeerState { peer, state: PeerState::Inactive }
            }
            session::Event::Data(payload) => NodeEvent::Data { peer, payload },
            session::Event::NotSent { error } => NodeEvent::NotSent { peer, error },
            session::Event::Closed { reason } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.session = None;
                }
                self.tidy(&peer);
                // A topic member gone silent has left; if it comes back, a lookup finds it.
                let left: Vec<Vec<u8>> = self
                    .topics
                    .iter_mut()
                    .filter_map(|(t, members)| members.remove(&peer).then(|| t.clone()))
                    .collect();
                for topic in left {
                    self.emit(NodeEvent::TopicLeft { peer, topic });
                }
                self.emit(NodeEvent::PeerState { peer, state: PeerState::Gone });
                NodeEvent::Disconnected { peer, reason }
            }
        };
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use introducer_actors::identity::{verify_record, Identity};
    use introducer_actors::nat::NatBehavior;
    use introducer_actors::punch::Unpunchable;

    const INTRODUCER: &str = "198.51.100.1:3478";

    fn introduced(me: &Identity, peer: &Identity, nat: &NatReport) -> registration::Event {
        let record = peer.sign_record(pb::PeerRecord { nat: Some(nat.into()), ..Default::default() });
        registration::Event::Introduced(Box::new(Introduced {
            request_id: 1,
            peer: verify_record(&record).unwrap(),
            peer_public: nat.public_addr,
            nonce: vec![9; 16],
            initiator: me.peer_id() < peer.peer_id(),
            fresh: false,
            introducer: INTRODUCER.parse().unwrap(),
        }))
    }

    fn orders(c: &mut NodeCore) -> Vec<Order> {
        std::iter::from_fn(|| c.poll_order()).collect()
    }

    /// A node (with a pool of 4) that joined one introducer and is about to probe.
    fn joined(now: Instant, relay_only: bool) -> NodeCore {
        let mut config = Config::new(Identity::from_seed(1));
        (config.relay_only, config.punch.pool_size) = (relay_only, 4);
        config.bootstrap = vec![INTRODUCER.parse().unwrap()];
        let mut c = NodeCore::new(config, vec![], None, (now, 1_000_000), StdRng::seed_from_u64(1));
        let seed = Seed {
            addr: INTRODUCER.parse().unwrap(),
            peer_id: Identity::from_seed(100).peer_id(),
            listen: vec![],
            observed: "203.0.113.1:3478".parse().unwrap(),
            introducer: true,
            cookie: 7,
        };
        c.handle_report(now, Report::FirstContact(bootstrap::Event::Joined(Ok(vec![seed]))));
        c.handle_report(now, Report::Socket(socket::Event::Bound { purpose: Purpose::Probe, sockets: vec![] }));
        orders(&mut c);
        c
    }

    /// ...and was probed as `nat`.
    fn probed(now: Instant, relay_only: bool, nat: NatReport) -> NodeCore {
        let mut c = joined(now, relay_only);
        c.handle_report(now, Report::Probe(ProbeEvent::Classified(Ok(nat))));
        orders(&mut c);
        c
    }

    fn registration(c: &mut NodeCore, now: Instant, event: registration::Event) {
        c.handle_report(now, Report::Registration(INTRODUCER.parse().unwrap(), event));
    }

    /// The keys a punch between `me` (initiating) and `peer` ends with.
    fn punch_keys(me: &Identity, peer: &Identity) -> introducer_actors::session::noise::Keys {
        use introducer_actors::session::noise::Handshake;
        let hs = |a: &Identity, b: &Identity, initiator| {
            Handshake::punch(a, &b.peer_id(), &[9; 16], initiator, StdRng::seed_from_u64(1)).unwrap()
        };
        let (mut ours, mut theirs) = (hs(me, peer, true), hs(peer, me, false));
        theirs.handle(ours.message().unwrap()).unwrap();
        ours.handle(theirs.message().unwrap()).unwrap().unwrap()
    }

    /// Now, a port-restricted NAT's report, and two peers.
    fn easy_peers() -> (Instant, NatReport, Identity, Identity) {
        let easy = NatBehavior::PORT_RESTRICTED.expected_report("203.0.113.1:3478".parse().unwrap());
        (Instant::now(), easy, Identity::from_seed(1), Identity::from_seed(2))
    }

    /// A tick far later than due means the machine slept: the node says so, registers
    /// again at once and punches every session anew. A tick on time does nothing of that.
    #[test]
    fn a_late_tick_is_a_wakeup_that_registers_and_punches_again() {
        let (now, easy, me, peer) = easy_peers();
        let mut c = probed(now, false, easy);
        registration(&mut c, now, registration::Event::Registered { observed: easy.public_addr });
        registration(&mut c, now, introduced(&me, &peer, &easy));
        orders(&mut c);
        let keys = punch_keys(&me, &peer);
        let connected = punch::Event::Connected {
            peer: peer.peer_id(),
            socket: SocketId::PRIMARY,
            remote: "203.0.113.2:3478".parse().unwrap(),
            proven: vec![],
            initiator: true,
            path: Path::Direct,
            strategy: Strategy::SimultaneousOpen,
            probes: 1,
            elapsed: Duration::from_millis(5),
            keys,
        };
        c.handle_report(now, Report::Punch(connected));
        orders(&mut c);
        let due = c.poll_timeout().expect("a tick");
        c.handle_timeout(due);
        let on_time = orders(&mut c);
        assert!(!on_time.iter().any(|o| matches!(o, Order::Emit(NodeEvent::Woke { .. }))), "{on_time:?}");
        let due = c.poll_timeout().expect("the next tick");
        c.handle_timeout(due + Duration::from_secs(60));
        let woke = orders(&mut c);
        assert!(woke
            .iter()
            .any(|o| matches!(o, Order::Emit(NodeEvent::Woke { late }) if *late >= Duration::from_secs(60))));
        assert!(woke.iter().any(|o| matches!(o, Order::Registration(registration::actor::Command::Refresh))));
        assert!(
            woke.iter().any(
                |o| matches!(o, Order::Registration(registration::actor::Command::Introduce(p)) if *p == peer.peer_id())
            ),
            "{woke:?}"
        );
    }

    fn reprobes(orders: &[Order]) -> usize {
        orders.iter().filter(|o| matches!(o, Order::Probe(probing::Command::Start { .. }))).count()
    }

    /// Woken on what is now a symmetric NAT: the node classifies again (once, however many
    /// homes see it moved), says what it is behind now, binds its birthday pool and
    /// registers the new record once the pool is up. A failed second classification is
    /// not fatal: the last report stands.
    #[test]
    fn a_wakeup_or_a_remap_classifies_the_nat_again_at_most_every_30_s() {
        let (now, easy, _, _) = easy_peers();
        let mut c = probed(now, false, easy);
        registration(&mut c, now, registration::Event::Registered { observed: easy.public_addr });
        orders(&mut c);
        let due = c.poll_timeout().expect("a tick");
        c.handle_timeout(due + Duration::from_secs(60));
        let woke = orders(&mut c);
        assert_eq!(reprobes(&woke), 1, "{woke:?}");

        let moved = "198.51.100.7:40001".parse().unwrap();
        let hard = NatBehavior::SYMMETRIC_RANDOM.expected_report(moved);
        let later = due + Duration::from_secs(61);
        c.handle_report(later, Report::Probe(ProbeEvent::Classified(Ok(hard))));
        let after = orders(&mut c);
        assert!(
            after.iter().any(|o| matches!(o, Order::Emit(NodeEvent::Nat { public: false, nat }) if *nat == hard)),
            "{after:?}"
        );
        assert!(!after.iter().any(|o| matches!(o, Order::Emit(NodeEvent::Ready { .. }))), "{after:?}");
        assert!(
            after.iter().any(|o| matches!(o, Order::Socket(socket::Command::Bind { purpose: Purpose::Pool, .. }))),
            "{after:?}"
        );
        c.handle_report(later, Report::Socket(socket::Event::Bound { purpose: Purpose::Pool, sockets: vec![] }));
        let pooled = orders(&mut c);
        assert!(
            pooled.iter().any(|o| matches!(o, Order::Registration(registration::actor::Command::Record(_)))),
            "{pooled:?}"
        );

        // Two homes see us at the new address within the interval: no second probe.
        let seen = |c: &mut NodeCore, at, observed| {
            registration(c, at, registration::Event::Registered { observed });
            reprobes(&orders(c))
        };
        assert_eq!(seen(&mut c, later + Duration::from_secs(5), moved), 0);
        // Our home sees us elsewhere again, the interval over: classified again, and a
        // failure then leaves the last report in place.
        let elsewhere = "198.51.100.7:40777".parse().unwrap();
        assert_eq!(seen(&mut c, later + Duration::from_secs(40), elsewhere), 1);
        let failed = introducer_actors::probe::ProbeError::NoServerAnswered;
        c.handle_report(later + Duration::from_secs(41), Report::Probe(ProbeEvent::Classified(Err(failed))));
        let after = orders(&mut c);
        assert!(!after.iter().any(|o| matches!(o, Order::Emit(NodeEvent::Fatal(_)))), "{after:?}");
        assert_eq!(c.nat(), Some(&hard));
    }

    /// A public node that serves and is classified again at another address republishes
    /// its node record with it; the same address publishes nothing.
    #[test]
    fn a_serving_node_that_moved_publishes_its_new_address() {
        let now = Instant::now();
        let mut c = joined(now, false);
        let old = "198.51.100.7:3478".parse().unwrap();
        c.handle_report(now, Report::Probe(ProbeEvent::Classified(Ok(NatReport::public(old)))));
        let addrs = |orders: Vec<Order>| -> Vec<Vec<SocketAddr>> {
            orders
                .into_iter()
                .filter_map(|o| match o {
                    Order::Mesh(mesh::Command::Start(a) | mesh::Command::Publish(a)) => Some(a.addrs),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(addrs(orders(&mut c)), [vec![old]]);
        let later = now + Duration::from_secs(60);
        c.handle_report(later, Report::Probe(ProbeEvent::Classified(Ok(NatReport::public(old)))));
        assert!(addrs(orders(&mut c)).is_empty());
        let new = "198.51.100.9:3478".parse().unwrap();
        c.handle_report(later, Report::Probe(ProbeEvent::Classified(Ok(NatReport::public(new)))));
        assert_eq!(addrs(orders(&mut c)), [vec![new]]);
    }

    /// The OS now sends from another address: the record (its private address) is
    /// registered anew and the NAT classified again.
    #[test]
    fn a_new_local_address_registers_the_new_record_and_classifies_again() {
        use prost::Message as _;
        let (now, easy, _, _) = easy_peers();
        let mut c = probed(now, false, easy);
        registration(&mut c, now, registration::Event::Registered { observed: easy.public_addr });
        orders(&mut c);
        c.local_address(now + Duration::from_secs(5), LAN.parse().unwrap());
        orders(&mut c);
        c.local_address(now + Duration::from_secs(6), LAN.parse().unwrap());
        assert!(orders(&mut c).is_empty(), "the same address changes nothing");
        let later = now + Duration::from_secs(40);
        c.local_address(later, "192.168.7.9:4000".parse().unwrap());
        let moved = orders(&mut c);
        assert_eq!(reprobes(&moved), 1, "{moved:?}");
        let record = moved.iter().find_map(|o| match o {
            Order::Registration(registration::actor::Command::Record(r)) => Some(r.clone()),
            _ => None,
        });
        let record = pb::PeerRecord::decode(&record.expect("a new record").record[..]).unwrap();
        assert_eq!(record.private_addrs, vec![pb::Addr::from("192.168.7.9:4000".parse::<SocketAddr>().unwrap())]);
    }

    #[test]
    fn an_introduction_is_punched_or_relayed_as_configured() {
        let (now, easy, me, peer) = easy_peers();

        let mut punching = probed(now, false, easy);
        registration(&mut punching, now, introduced(&me, &peer, &easy));
        assert!(matches!(punching.poll_order(), Some(Order::Punch(punch::actor::Command::Start { .. }))));

        let mut relaying = probed(now, true, easy);
        registration(&mut relaying, now, introduced(&me, &peer, &easy));
        match relaying.poll_order() {
            Some(Order::Session(session::actor::Command::OpenRelayed { peer: p, relay, nonce, .. })) => {
                assert_eq!((p, relay, nonce), (peer.peer_id(), INTRODUCER.parse().unwrap(), vec![9; 16]));
            }
            other => panic!("expected a relay, got {other:?}"),
        }
    }

    #[test]
    fn two_hard_sides_fall_back_to_the_introducers_relay_and_a_hard_node_registers_after_its_pool() {
        let now = Instant::now();
        let hard = NatBehavior::SYMMETRIC_RANDOM.expected_report("203.0.113.1:3478".parse().unwrap());
        let mut c = joined(now, false);
        c.handle_report(now, Report::Probe(ProbeEvent::Classified(Ok(hard))));
        let first = orders(&mut c);
        let pool = first.iter().find_map(|o| match o {
            Order::Socket(socket::Command::Bind { purpose: Purpose::Pool, sockets }) => Some(sockets.clone()),
            _ => None,
        });
        assert_eq!(pool.map(|p| p.len()), Some(4), "{first:?}");
        assert!(!first.iter().any(|o| matches!(o, Order::Registration(_))), "no registration before the pool");
        let bound = (0..4).map(|i| (pool_socket(i), "10.0.0.2:1".parse().unwrap())).collect();
        c.handle_report(now, Report::Socket(socket::Event::Bound { purpose: Purpose::Pool, sockets: bound }));
        let next = orders(&mut c);
        assert!(matches!(next[0], Order::Punch(punch::actor::Command::Pool(_))));
        assert!(matches!(next[1], Order::Registration(registration::actor::Command::Register { .. })));

        let (me, peer) = (Identity::from_seed(1), Identity::from_seed(2));
        registration(&mut c, now, introduced(&me, &peer, &hard));
        assert!(matches!(c.poll_order(), Some(Order::Punch(punch::actor::Command::Start { .. }))));
        let why = Unpunchable::BothHard { ours: hard.allocation, theirs: hard.allocation };
        let refused = punch::Event::Refused { peer: peer.peer_id(), initiator: true, why };
        c.handle_report(now, Report::Punch(refused));
        assert!(matches!(
            c.poll_order(),
            Some(Order::Session(session::actor::Command::OpenRelayed { relay, .. })) if relay == INTRODUCER.parse().unwrap()
        ));
        // Whoever watches hears why.
        assert!(matches!(
            c.poll_order(),
            Some(Order::Emit(NodeEvent::Progress { progress: Progress::Relaying { why, .. }, .. })) if why.contains("both")
        ));
        // Repeats of the introduction (for the other side's sake) change nothing here; the
        // ready circuit settles it.
        registration(&mut c, now, introduced(&me, &peer, &hard));
        assert!(c.poll_order().is_none());
        let relayed = session::Event::Relayed { relay: INTRODUCER.parse().unwrap() };
        c.handle_report(now, Report::Session(peer.peer_id(), relayed));
        assert!(
            matches!(c.poll_order(), Some(Order::Registration(registration::actor::Command::Settle(p))) if p == peer.peer_id()),
            "no more repeats of the introduction"
        );
    }

    /// A punch that wins while the fallback circuit is still being set up ends the relaying:
    /// a later introduction to that peer is punched again, not ignored.
    #[test]
    fn a_punch_that_beats_the_circuit_leaves_later_introductions_alone() {
        let (now, easy, me, peer) = easy_peers();
        let mut c = probed(now, false, easy);
        registration(&mut c, now, introduced(&me, &peer, &easy));
        assert!(matches!(c.poll_order(), Some(Order::Punch(_))));
        c.handle_timeout(now + Duration::from_secs(5));
        assert!(
            matches!(c.poll_order(), Some(Order::Session(session::actor::Command::OpenRelayed { .. }))),
            "the punch is slow: a circuit too"
        );
        let remote = "203.0.113.9:4000".parse().unwrap();
        let connected = punch::Event::Connected {
            peer: peer.peer_id(),
            socket: SocketId::PRIMARY,
            remote,
            proven: vec![remote],
            initiator: true,
            path: Path::Direct,
            strategy: Strategy::SimultaneousOpen,
            probes: 3,
            elapsed: Duration::from_secs(6),
            keys: punch_keys(&me, &peer),
        };
        c.handle_report(now + Duration::from_secs(6), Report::Punch(connected));
        orders(&mut c);
        // The same introduction again is a repeat; a new one (the peer was mapped anew) is punched.
        registration(&mut c, now, introduced(&me, &peer, &easy));
        assert!(c.poll_order().is_none(), "a repeat of the introduction that connected changes nothing");
        let mut again = introduced(&me, &peer, &easy);
        if let registration::Event::Introduced(i) = &mut again {
            i.nonce = vec![10; 16];
        }
        registration(&mut c, now, again);
        assert!(matches!(c.poll_order(), Some(Order::Punch(_))), "a new introduction is punched");
    }

    /// A node with one listen address that also bound the next port answers STUN there as
    /// the alternate port: a CHANGE-REQUEST for another port is answered from it.
    #[test]
    fn one_ip_and_the_next_port_make_a_two_port_stun_server() {
        use introducer_proto::stun::{ChangeRequest, Message};
        let (p, alt): (SocketAddr, SocketAddr) =
            ("198.51.100.1:3478".parse().unwrap(), "198.51.100.1:3479".parse().unwrap());
        let client: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let change_port = Message {
            change_request: Some(ChangeRequest { change_ip: false, change_port: true }),
            ..Message::binding_request([1; 12])
        }
        .encode();
        let two = responder(&[p, alt]).expect("every node answers STUN");
        let answer = two.respond(SocketId::PRIMARY, client, &change_port).expect("answered");
        assert_eq!(answer.socket, SocketId(1));
        assert_eq!(Message::decode(&answer.payload).unwrap().response_origin, Some(alt));
        // One socket: the port change cannot be made (420), a plain request is answered.
        let one = responder(&[p]).unwrap();
        let refused = Message::decode(&one.respond(SocketId::PRIMARY, client, &change_port).unwrap().payload).unwrap();
        assert_eq!(refused.error_code.map(|e| e.0), Some(420));
        // Addresses that make no layout still leave the primary answering.
        let odd = responder(&[p, "198.51.100.9:3479".parse().unwrap()]).unwrap();
        assert!(odd.respond(SocketId::PRIMARY, client, &Message::binding_request([2; 12]).encode()).is_some());
        assert_eq!(odd.respond(SocketId(1), client, &Message::binding_request([3; 12]).encode()), None);
    }

    /// Probing takes a one-IP seed's alternate port from the addresses its ServerInfo
    /// lists, at the IP we reached it on; an RFC 5780 seed's OTHER-ADDRESS comes later.
    #[test]
    fn probing_learns_a_one_ip_seeds_alternate_port_from_its_server_info() {
        let now = Instant::now();
        let seed = |addr: &str, listen: &[&str]| Seed {
            addr: addr.parse().unwrap(),
            peer_id: Identity::from_seed(100).peer_id(),
            listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
            observed: "203.0.113.1:3478".parse().unwrap(),
            introducer: true,
            cookie: 7,
        };
        let seeds = vec![
            // Bound to every interface, reached at its public IP.
            seed("198.51.100.1:3478", &["0.0.0.0:3478", "0.0.0.0:3479"]),
            // No alternate port (an ephemeral one, or the next port was taken).
            seed("198.51.100.3:3478", &["198.51.100.3:3478"]),
            // Reached at another port than its primary (a port-forward): the next one is a guess.
            seed("198.51.100.4:4000", &["10.0.0.4:3478", "10.0.0.4:3479"]),
            // Behind a 1:1 NAT: listens on a private IP, reached at the public one.
            seed("198.51.100.5:3478", &["10.0.0.5:3478", "10.0.0.5:3479"]),
        ];
        let mut config = Config::new(Identity::from_seed(1));
        config.bootstrap = seeds.iter().map(|s| s.addr).chain(["198.51.100.6:3478".parse().unwrap()]).collect();
        let mut c = NodeCore::new(config, vec![], None, (now, 1_000_000), StdRng::seed_from_u64(1));
        c.start(now, Stored::default());
        orders(&mut c);
        c.handle_report(now, Report::FirstContact(bootstrap::Event::Joined(Ok(seeds))));
        c.handle_report(now, Report::Socket(socket::Event::Bound { purpose: Purpose::Probe, sockets: vec![] }));
        let servers = orders(&mut c).into_iter().find_map(|o| match o {
            Order::Probe(probing::Command::Start { config, .. }) => Some(config.servers),
            _ => None,
        });
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(
            servers.expect("probing starts"),
            vec![
                Server { addr: at("198.51.100.1:3478"), other: Some(at("198.51.100.1:3479")) },
                Server::new(at("198.51.100.3:3478")),
                Server::new(at("198.51.100.4:4000")),
                Server { addr: at("198.51.100.5:3478"), other: Some(at("198.51.100.5:3479")) },
                // A seed that did not answer Hello: nothing known about it.
                Server::new(at("198.51.100.6:3478")),
            ]
        );
    }

    /// A seed that answers first contact late (its first answers lost) is registered with
    /// too; one that introduces nobody is not.
    #[test]
    fn a_late_seed_is_registered_with() {
        let (now, easy, ..) = easy_peers();
        let mut c = probed(now, false, easy);
        let late = |addr: &str, introducer| Seed {
            addr: addr.parse().unwrap(),
            peer_id: Identity::from_seed(101).peer_id(),
            listen: vec![],
            observed: easy.public_addr,
            introducer,
            cookie: 0,
        };
        c.handle_report(now, Report::FirstContact(bootstrap::Event::Late(late("198.51.100.20:3478", true))));
        let (stored, mut others) = store_orders(&mut c);
        assert!(matches!(&stored[..], [StoreOp::PutMember(m), StoreOp::Flush] if m.addr.port() == 3478), "{stored:?}");
        match others.pop() {
            Some(Order::Registration(registration::actor::Command::Register { introducers, .. })) => {
                assert_eq!(introducers, ["198.51.100.20:3478".parse::<SocketAddr>().unwrap()]);
            }
            other => panic!("expected a registration, got {other:?}"),
        }
        c.handle_report(now, Report::FirstContact(bootstrap::Event::Late(late("198.51.100.30:3478", false))));
        assert!(store_orders(&mut c).1.is_empty());
    }

    /// A members request first contact took (cookie-proven, within budget) goes to the mesh,
    /// which holds the members, addressed to that very source and socket — nowhere else.
    #[test]
    fn a_members_request_first_contact_took_is_answered_by_the_mesh_to_its_source() {
        let now = Instant::now();
        let mut c = joined(now, false);
        let addr: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let asked = bootstrap::Event::MembersAsked { socket: SocketId(1), addr, request_id: 3, offset: 6 };
        c.handle_report(now, Report::FirstContact(asked));
        match &orders(&mut c)[..] {
            [Order::Mesh(mesh::Command::ListMembers { socket, to, request_id, offset })] => {
                assert_eq!((*socket, *to, *request_id, *offset), (SocketId(1), addr, 3, 6))
            }
            other => panic!("expected the mesh to list, got {other:?}"),
        }
    }

    /// The relay load our node record says, each time the core publishes it.
    fn published_loads(c: &mut NodeCore) -> Vec<u32> {
        orders(c)
            .into_iter()
            .filter_map(|o| match o {
                Order::Mesh(mesh::Command::Start(a) | mesh::Command::Publish(a)) => Some(a.relay_load),
                _ => None,
            })
            .collect()
    }

    /// A serving node republishes its record when the circuits it carries change — at most
    /// once every 30 s, and not at all if the count is back to what was published.
    #[test]
    fn the_relay_load_is_published_when_it_changes_at_most_every_30_s() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let listen = vec!["198.51.100.1:3478".parse().unwrap()];
        let mut c = NodeCore::new(Config::new(Identity::from_seed(1)), listen, None, (t0, 0), StdRng::seed_from_u64(1));
        c.start(t0, Stored::default());
        assert_eq!(published_loads(&mut c), [0], "a founder serves at once, carrying nothing");
        let peers = [Identity::from_seed(2).peer_id(), Identity::from_seed(3).peer_id()];
        let ready = |circuit| Report::Relay(relay::Event::Ready { circuit, peers });
        let closed = |circuit| Report::Relay(relay::Event::Closed { circuit, peers, reason: relay::CloseReason::Idle });
        c.handle_report(s(10), ready(1));
        assert_eq!(published_loads(&mut c), [] as [u32; 0], "not within 30 s of the last record");
        assert_eq!(c.poll_timeout(), Some(s(30)));
        c.handle_timeout(s(30));
        assert_eq!(published_loads(&mut c), [1]);
        // Up and back down within the interval: nothing to say.
        c.handle_report(s(31), ready(2));
        c.handle_report(s(40), closed(2));
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(s(60));
        assert_eq!(published_loads(&mut c), [] as [u32; 0]);
        // Long after the last record: at once.
        c.handle_report(s(100), closed(1));
        assert_eq!(published_loads(&mut c), [0]);
        // A node that does not serve publishes nothing.
        let mut config = Config::new(Identity::from_seed(4));
        config.serve = Serve::Never;
        config.bootstrap = vec![INTRODUCER.parse().unwrap()];
        let mut peer = NodeCore::new(config, vec![], None, (t0, 0), StdRng::seed_from_u64(1));
        peer.start(t0, Stored::default());
        peer.handle_report(s(100), ready(1));
        assert_eq!(published_loads(&mut peer), [] as [u32; 0]);
    }

    // ----- cold start -----

    const LAN: &str = "10.0.0.2:5000";
    const OBSERVED: &str = "203.0.113.1:40000";

    /// A node on LAN address `LAN` that starts with `stored`, is asked to connect to
    /// `peer` (unless `None`) before first contact answers, hears from its seed that it is
    /// seen at `OBSERVED`, and starts probing; with its orders since the start.
    fn cold(now: Instant, stored: Stored, peer: Option<PeerId>) -> (NodeCore, Vec<Order>) {
        let mut config = Config::new(Identity::from_seed(1));
        config.bootstrap = vec![INTRODUCER.parse().unwrap()];
        config.punch.pool_size = 4;
        let lan = Some(LAN.parse().unwrap());
        let mut c =
            NodeCore::new(config, vec![LAN.parse().unwrap()], lan, (now, 1_000_000_000), StdRng::seed_from_u64(1));
        c.start(now, stored);
        if let Some(peer) = peer {
            c.connect(now, peer);
        }
        let seed = Seed { observed: OBSERVED.parse().unwrap(), ..seed(100, INTRODUCER) };
        c.handle_report(now, Report::FirstContact(bootstrap::Event::Joined(Ok(vec![seed]))));
        c.handle_report(now, Report::Socket(socket::Event::Bound { purpose: Purpose::Probe, sockets: vec![] }));
        let all = orders(&mut c);
        (c, all)
    }

    /// The NAT reports the registration orders among `orders` carry: (Register or Record, report).
    fn registered_nats(orders: &[Order]) -> Vec<(&'static str, NatReport)> {
        let nat = |record: &pb::SignedPeerRecord| {
            let nat = verify_record(record).expect("signed by us").record.nat.expect("a NAT report");
            NatReport::try_from(&nat).expect("a whole report")
        };
        orders
            .iter()
            .filter_map(|o| match o {
                Order::Registration(registration::actor::Command::Register { record, .. }) => {
                    Some(("register", nat(record)))
                }
                Order::Registration(registration::actor::Command::Record(record)) => Some(("record", nat(record))),
                _ => None,
            })
            .collect()
    }

    fn ready(orders: &[Order]) -> bool {
        orders.iter().any(|o| matches!(o, Order::Emit(NodeEvent::Ready { .. })))
    }

    fn probe(c: &mut NodeCore, now: Instant, event: ProbeEvent) -> Vec<Order> {
        c.handle_report(now, Report::Probe(event));
        orders(c)
    }

    /// A port-restricted NAT at `OBSERVED`: as classified, and as known before the
    /// filtering tests end.
    fn port_restricted() -> (NatReport, NatReport) {
        let full = NatBehavior::PORT_RESTRICTED.expected_report(OBSERVED.parse().unwrap());
        (full, NatReport { filtering: None, ..full })
    }

    /// Issue 9, fast cold start, nothing stored: a connect that waits is registered for as
    /// soon as probing knows the mapping (filtering still unknown, which counts as the most
    /// restrictive), asks for its introduction once registered and punches with that
    /// report; the classification 700 ms later re-registers the record with the filtering.
    /// Before, nothing was registered until classification ended.
    #[test]
    fn a_waiting_connect_registers_once_the_mapping_is_known_and_re_registers_when_classified() {
        let (now, me, peer) = (Instant::now(), Identity::from_seed(1), Identity::from_seed(2));
        let (full, mapped) = port_restricted();
        let (mut c, first) = cold(now, Stored::default(), Some(peer.peer_id()));
        assert!(registered_nats(&first).is_empty(), "nothing known of our NAT yet: {first:?}");

        let at = now + Duration::from_millis(100);
        let early = probe(&mut c, at, ProbeEvent::Mapped(mapped));
        assert_eq!(registered_nats(&early), [("register", mapped)]);
        assert_eq!(mapped.nat_type(), NatType::Easy);
        assert!(!ready(&early), "ready waits for the whole report");

        registration(&mut c, at, registration::Event::Registered { observed: OBSERVED.parse().unwrap() });
        let asked = orders(&mut c);
        assert!(
            asked.iter().any(
                |o| matches!(o, Order::Registration(registration::actor::Command::Introduce(p)) if *p == peer.peer_id())
            ),
            "{asked:?}"
        );
        let peer_nat = NatBehavior::PORT_RESTRICTED.expected_report("203.0.113.2:3478".parse().unwrap());
        registration(&mut c, at, introduced(&me, &peer, &peer_nat));
        match c.poll_order() {
            Some(Order::Punch(punch::actor::Command::Start { nat, .. })) => assert_eq!(nat, mapped),
            other => panic!("expected a punch, got {other:?}"),
        }

        let classified = probe(&mut c, now + Duration::from_millis(720), ProbeEvent::Classified(Ok(full)));
        assert!(ready(&classified));
        assert_eq!(registered_nats(&classified), [("record", full)], "the filtering is registered, once");
        assert_eq!(c.nat(), Some(&full));
    }

    /// A joined topic waits on a registration as a connect does: registered as soon as the
    /// mapping is known, and the topic looked up once registered.
    #[test]
    fn a_joined_topic_registers_once_the_mapping_is_known() {
        let now = Instant::now();
        let (_, mapped) = port_restricted();
        let (mut c, _) = cold(now, Stored::default(), None);
        c.join_topic(now, b"chat".to_vec());
        let at = now + Duration::from_millis(100);
        assert_eq!(registered_nats(&probe(&mut c, at, ProbeEvent::Mapped(mapped))), [("register", mapped)]);
        registration(&mut c, at, registration::Event::Registered { observed: OBSERVED.parse().unwrap() });
        let lookup = orders(&mut c);
        assert!(
            lookup.iter().any(
                |o| matches!(o, Order::Registration(registration::actor::Command::LookupTopic(t)) if t == b"chat")
            ),
            "{lookup:?}"
        );
    }

    /// Nobody waiting: the node registers once classified, after `ready`, as it always did
    /// (the mapping known early changes nothing); a node with no NAT in front waits for
    /// the filtering even when a connect waits (it decides whether the node is public).
    #[test]
    fn without_a_waiting_connect_or_behind_no_nat_the_node_registers_once_classified() {
        let now = Instant::now();
        let (full, mapped) = port_restricted();
        let (mut c, _) = cold(now, Stored::default(), None);
        assert!(registered_nats(&probe(&mut c, now, ProbeEvent::Mapped(mapped))).is_empty());
        let classified = probe(&mut c, now, ProbeEvent::Classified(Ok(full)));
        let ready_at = classified.iter().position(|o| matches!(o, Order::Emit(NodeEvent::Ready { .. })));
        let register_at = classified.iter().position(|o| matches!(o, Order::Registration(_)));
        assert!(ready_at.is_some() && ready_at < register_at, "{classified:?}");
        assert_eq!(registered_nats(&classified), [("register", full)]);

        let (mut c, _) = cold(now, Stored::default(), Some(Identity::from_seed(2).peer_id()));
        let no_nat = NatReport { filtering: None, ..NatReport::public(LAN.parse().unwrap()) };
        assert!(registered_nats(&probe(&mut c, now, ProbeEvent::Mapped(no_nat))).is_empty());
    }

    /// A mapping known early to be hard — or not known to be easy — is hard: the pool is
    /// bound and the registration waits for it, as after classification.
    #[test]
    fn an_early_mapping_that_is_not_proven_easy_registers_after_the_pool() {
        let now = Instant::now();
        let unknown = NatReport { mapping: None, ..port_restricted().1 };
        let (mut c, _) = cold(now, Stored::default(), Some(Identity::from_seed(2).peer_id()));
        let early = probe(&mut c, now, ProbeEvent::Mapped(unknown));
        assert!(early.iter().any(|o| matches!(o, Order::Socket(socket::Command::Bind { purpose: Purpose::Pool, .. }))));
        assert!(registered_nats(&early).is_empty(), "no registration before the pool: {early:?}");
        let bound = (0..4).map(|i| (pool_socket(i), "10.0.0.2:1".parse().unwrap())).collect();
        c.handle_report(now, Report::Socket(socket::Event::Bound { purpose: Purpose::Pool, sockets: bound }));
        assert_eq!(registered_nats(&orders(&mut c)), [("register", unknown)]);
        // Classified the same but for the filtering: the record again, and no second pool.
        let full = NatReport { filtering: Some(Filtering::AddressAndPortDependent), ..unknown };
        let classified = probe(&mut c, now, ProbeEvent::Classified(Ok(full)));
        assert_eq!(registered_nats(&classified), [("record", full)]);
        assert!(!classified.iter().any(|o| matches!(o, Order::Socket(socket::Command::Bind { .. }))), "{classified:?}");
    }

    fn stored_nat(network_public: &str, report: NatReport, measured_ms: u64) -> Stored {
        let mut stored = Stored::default();
        let network = Network { lan: LAN.parse::<SocketAddr>().unwrap().ip(), public: network_public.parse().unwrap() };
        stored.nat.insert(network, MeasuredNat { report, measured_ms });
        stored
    }

    /// Issue 9, fast cold start, a report stored for this network: a connect that waits is
    /// registered for right after first contact, with the stored report at the address the
    /// seed sees now; probing goes on, and a classification that agrees changes nothing.
    /// A report of another network, a stale one or a hard one is not used.
    #[test]
    fn a_waiting_connect_registers_at_first_contact_with_the_report_stored_for_this_network() {
        let now = Instant::now();
        let peer = Identity::from_seed(2).peer_id();
        let (full, mapped) = port_restricted();
        let stored = NatReport { public_addr: "203.0.113.1:55555".parse().unwrap(), ..full };
        let an_hour_ago = 1_000_000_000 - 3_600_000;
        let (mut c, first) = cold(now, stored_nat("203.0.113.1", stored, an_hour_ago), Some(peer));
        assert_eq!(registered_nats(&first), [("register", full)], "at the address first contact saw");
        assert!(!ready(&first), "ready waits for the measured report");
        assert!(registered_nats(&probe(&mut c, now, ProbeEvent::Mapped(mapped))).is_empty(), "it agrees");
        let classified = probe(&mut c, now, ProbeEvent::Classified(Ok(full)));
        assert!(ready(&classified));
        assert!(registered_nats(&classified).is_empty(), "what we registered holds: {classified:?}");

        let week = 7 * 24 * 3_600_000;
        let hard = NatBehavior::SYMMETRIC_RANDOM.expected_report(OBSERVED.parse().unwrap());
        for (public, report, measured_ms, what) in [
            ("203.0.113.77", full, an_hour_ago, "another network"),
            ("203.0.113.1", full, 1_000_000_000 - week - 1, "stale"),
            ("203.0.113.1", hard, an_hour_ago, "hard"),
        ] {
            let (_, first) = cold(now, stored_nat(public, report, measured_ms), Some(peer));
            assert!(registered_nats(&first).is_empty(), "{what}: {first:?}");
        }
        let (_, first) = cold(now, stored_nat("203.0.113.1", full, an_hour_ago), None);
        assert!(registered_nats(&first).is_empty(), "nobody waits");
    }

    /// A stored report that probing contradicts (the NAT behind this network changed) is
    /// replaced as soon as the mapping is known: here by a hard one, whose record waits
    /// for the pool; meanwhile introductions are punched with the new report.
    #[test]
    fn a_stored_report_that_probing_contradicts_is_replaced_by_the_mapping() {
        let (now, me, peer) = (Instant::now(), Identity::from_seed(1), Identity::from_seed(2));
        let (full, _) = port_restricted();
        let (mut c, first) = cold(now, stored_nat("203.0.113.1", full, 1_000_000_000), Some(peer.peer_id()));
        assert_eq!(registered_nats(&first), [("register", full)]);
        let hard =
            NatReport { filtering: None, ..NatBehavior::SYMMETRIC_RANDOM.expected_report(OBSERVED.parse().unwrap()) };
        let changed = probe(&mut c, now, ProbeEvent::Mapped(hard));
        assert!(changed
            .iter()
            .any(|o| matches!(o, Order::Socket(socket::Command::Bind { purpose: Purpose::Pool, .. }))));
        assert!(registered_nats(&changed).is_empty(), "the new record waits for the pool");
        registration(&mut c, now, introduced(&me, &peer, &full));
        match c.poll_order() {
            Some(Order::Punch(punch::actor::Command::Start { nat, .. })) => assert_eq!(nat, hard),
            other => panic!("expected a punch, got {other:?}"),
        }
        let bound = (0..4).map(|i| (pool_socket(i), "10.0.0.2:1".parse().unwrap())).collect();
        c.handle_report(now, Report::Socket(socket::Event::Bound { purpose: Purpose::Pool, sockets: bound }));
        assert_eq!(registered_nats(&orders(&mut c)), [("record", hard)]);
    }

    /// The store orders, and the others.
    fn store_orders(c: &mut NodeCore) -> (Vec<StoreOp>, Vec<Order>) {
        let (mut stored, mut others) = (Vec::new(), Vec::new());
        for order in orders(c) {
            match order {
                Order::Store(op) => stored.push(op),
                other => others.push(other),
            }
        }
        (stored, others)
    }

    fn seed(n: u64, addr: &str) -> Seed {
        let addr = addr.parse().unwrap();
        let peer_id = Identity::from_seed(n).peer_id();
        Seed {
            addr,
            peer_id,
            listen: vec![addr],
            observed: "203.0.113.1:3478".parse().unwrap(),
            introducer: true,
            cookie: 7,
        }
    }

    /// The seeds that answered are kept as members, and flushed before probing starts (and
    /// so before anything is registered or reported).
    #[test]
    fn the_seeds_that_answer_are_kept_and_flushed_before_anything_else() {
        let now = Instant::now();
        let mut config = Config::new(Identity::from_seed(1));
        config.bootstrap = vec![INTRODUCER.parse().unwrap()];
        let mut c = NodeCore::new(config, vec![], None, (now, 1_000_000), StdRng::seed_from_u64(1));
        c.start(now, Stored::default());
        assert!(matches!(&orders(&mut c)[..], [Order::FirstContact(bootstrap::Command::Join { .. })]));
        let later = now + Duration::from_secs(2);
        c.handle_report(later, Report::FirstContact(bootstrap::Event::Joined(Ok(vec![seed(100, INTRODUCER)]))));
        let all = orders(&mut c);
        let member = Member {
            peer_id: Identity::from_seed(100).peer_id(),
            addr: INTRODUCER.parse().unwrap(),
            listen: vec![INTRODUCER.parse().unwrap()],
            introducer: true,
            record: vec![],
            seen_ms: 1_002_000,
        };
        assert!(
            matches!(&all[..], [Order::Store(StoreOp::PutMember(m)), Order::Store(StoreOp::Flush), Order::Socket(_)] if *m == member),
            "{all:?}"
        );
        assert_eq!(c.table().members.values().collect::<Vec<_>>(), [&member]);
    }

    /// A member's signed node record, as the mesh gossips it, is kept with the member: a
    /// member first contact met keeps the address it answered at.
    #[test]
    fn node_records_from_the_mesh_are_kept_with_their_members() {
        let now = Instant::now();
        let mut c = joined(now, false);
        let record = |n: u64, addr: &str| mesh::record::NodeRecord {
            peer: Identity::from_seed(n).peer_id(),
            generation: 1,
            issued_ms: 5,
            addrs: vec![addr.parse().unwrap()],
            introducer: true,
            relay: true,
            relay_capacity: 8,
            relay_load: 0,
            signed: vec![n as u8; 100],
        };
        // The seed of `joined` (seed 100) at another address in its record; a new member.
        for r in [record(100, "192.0.2.100:3478"), record(200, "192.0.2.200:3478")] {
            c.handle_report(now, Report::Mesh(mesh::Event::Record(r)));
        }
        let (stored, _) = store_orders(&mut c);
        let put: Vec<(PeerId, SocketAddr, u8)> = stored
            .iter()
            .filter_map(|op| match op {
                StoreOp::PutMember(m) => Some((m.peer_id, m.addr, m.record[0])),
                _ => None,
            })
            .collect();
        assert_eq!(
            put,
            [
                (Identity::from_seed(100).peer_id(), INTRODUCER.parse().unwrap(), 100),
                (Identity::from_seed(200).peer_id(), "192.0.2.200:3478".parse().unwrap(), 200),
            ]
        );
        let seeds = c.table().rejoin_seeds();
        assert_eq!(seeds[0], INTRODUCER.parse::<SocketAddr>().unwrap(), "the member that answered us first: {seeds:?}");
    }

    /// No bootstrap given: the stored members are the seeds, the most recently seen first;
    /// without any, a node that may serve founds a mesh, one that may not cannot go on.
    #[test]
    fn without_bootstrap_the_stored_members_are_the_seeds() {
        let now = Instant::now();
        let mut stored = Stored::default();
        for (n, addr, seen_ms) in [(100, "198.51.100.1:3478", 5), (101, "198.51.100.2:3478", 9)] {
            let seed = seed(n, addr);
            let member = Member {
                peer_id: seed.peer_id,
                addr: seed.addr,
                listen: vec![],
                introducer: true,
                record: vec![],
                seen_ms,
            };
            stored.members.insert(seed.peer_id, member);
        }
        let start = |serve, stored: Stored| {
            let mut config = Config::new(Identity::from_seed(1));
            config.serve = serve;
            let mut c = NodeCore::new(config, vec![], None, (now, 0), StdRng::seed_from_u64(1));
            c.start(now, stored);
            orders(&mut c)
        };
        match &start(Serve::Auto, stored)[..] {
            [Order::FirstContact(bootstrap::Command::Join { seeds, .. })] => {
                assert_eq!(seeds, &["198.51.100.2:3478".parse().unwrap(), "198.51.100.1:3478".parse().unwrap()])
            }
            other => panic!("expected a join, got {other:?}"),
        }
        let founder = start(Serve::Auto, Stored::default());
        assert!(founder.iter().any(|o| matches!(o, Order::Emit(NodeEvent::Ready { public: true, .. }))));
        assert!(founder.iter().any(|o| matches!(o, Order::Store(StoreOp::Served(0)))), "a founder remembers it served");
        let alone = start(Serve::Never, Stored::default());
        assert!(matches!(&alone[..], [Order::Emit(NodeEvent::Fatal(FatalError::NothingToJoin))]), "{alone:?}");
    }
}
