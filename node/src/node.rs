//! The `Node` handle and the actix driver of a node: one actor per role over real sockets
//! and the real clock, and a node actor that runs the [`NodeCore`] — the same composition
//! the simulator runs — delivering its orders to them.

use crate::config::Config;
use crate::core::{role_of, NodeCore, Order, Report, RoleId, Roles};
use crate::event::NodeEvent;
use crate::identity::DataDir;
use crate::store::sled::Opened;
use crate::store::{MemStore, SledStore, Store, Stored};
use crate::telemetry::stats::{self, Stats};
use actix::prelude::*;
use introducer_actors::broker::{actor::BrokerActor, Broker};
use introducer_actors::driver::{Call, Deliver, MachineActor, Protocol};
use introducer_actors::mesh::actor::MeshActor;
use introducer_actors::probe::actor::{NatProbing, ProbeActor};
use introducer_actors::punch::actor::{Attempts, PunchActor};
use introducer_actors::registration::actor::RegistrationActor;
use introducer_actors::relay::{actor::RelayActor, server::Relay};
use introducer_actors::session::actor::{self as sessions, SessionActor, Sessions};
use introducer_actors::socket::{self, FastSlot, Inbound, Route, SetRoute, SocketActor};
use introducer_actors::SocketId;
use introducer_bootstrap::FirstContact;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot bind {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("bad --listen set: {0}")]
    Listen(String),
    #[error("cannot start the node thread: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
enum Command {
    Connect(PeerId),
    Join(Vec<u8>),
    Ping(PeerId, u64),
    Send(PeerId, Vec<u8>),
    Stats,
}

/// How often the counters are gathered for the metric exporter (when metrics are exported;
/// it sends them at its own pace, `OTEL_METRIC_EXPORT_INTERVAL`).
const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Events waiting for the user, at most (a burst of received datagrams fits).
const EVENT_QUEUE: usize = 4096;

/// Waits until every datagram already handed to the node has been sent.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

/// A running node. Dropping it stops the node (after sending what it was given).
pub struct Node {
    peer_id: PeerId,
    listen: Vec<SocketAddr>,
    commands: mpsc::UnboundedSender<Option<Command>>,
    events: mpsc::Receiver<NodeEvent>,
    /// A `Fatal` was handed out (or the node stopped): the stream has ended.
    ended: bool,
    /// Pings sent to each peer: the next one's sequence number.
    pings: Mutex<BTreeMap<PeerId, u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Binds the sockets and starts the node's actors on a thread of their own.
    pub fn start(config: Config) -> Result<Node, NodeError> {
        let plan = socket_plan(&config.listen)?;
        let (store, stored) = open_store(config.data_dir.as_ref());
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Option<Command>>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let peer_id = config.identity.peer_id();
        let thread = std::thread::Builder::new()
            .name("introducer-node".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let optional: Vec<(SocketId, SocketAddr)> = plan.alternate.into_iter().collect();
                    let (socket, locals, fast) = match SocketActor::bind_some(&plan.required, &optional) {
                        Ok(bound) => {
                            if let Some((addr, e)) = bound.skipped {
                                tracing::warn!(
                                    "cannot bind {addr}, the STUN alternate port ({e}): answering STUN on the listen address only"
                                );
                            }
                            (bound.actor, bound.locals, bound.fast)
                        }
                        Err(source) => {
                            let _ = bound_tx.send(Err(NodeError::Bind { addr: plan.required[0].1, source }));
                            return;
                        }
                    };
                    let node = NodeActor::launch(config, (store, stored), (socket, fast), locals.clone(), event_tx);
                    let _ = bound_tx.send(Ok(locals));
                    while let Some(Some(command)) = command_rx.recv().await {
                        node.do_send(command);
                    }
                    // What the user sent before stopping still goes out.
                    let _ = node.send(Flush).await;
                    System::current().stop();
                })
            })
            .map_err(NodeError::Thread)?;
        let listen = bound_rx.recv().unwrap_or_else(|_| Err(NodeError::Listen("node thread died".into())))?;
        Ok(Node { peer_id, listen, commands, events, ended: false, pings: Default::default(), thread: Some(thread) })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node's sockets are bound to (primary first).
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// The next event; `None` once the node has stopped. A [`NodeEvent::Fatal`] is the
    /// last one: the node stops (its sockets close) and the stream ends after it.
    pub async fn next_event(&mut self) -> Option<NodeEvent> {
        if self.ended {
            return None;
        }
        let event = self.events.recv().await;
        if matches!(event, None | Some(NodeEvent::Fatal(_))) {
            self.ended = true;
            let _ = self.commands.send(None);
        }
        event
    }

    /// Asks an introducer for `peer` and punches; the outcome is a `Connected` or
    /// `ConnectFailed` event.
    pub fn connect(&self, peer: PeerId) {
        let _ = self.commands.send(Some(Command::Connect(peer)));
    }

    /// Joins `topic`: the node connects to everyone on it (a `TopicMember`, then a
    /// `Connected`, per member), again to members that come back, and reports those that
    /// leave (`TopicLeft`).
    pub fn join(&self, topic: impl Into<Vec<u8>>) {
        let _ = self.commands.send(Some(Command::Join(topic.into())));
    }

    /// Pings a connected peer and returns the ping's sequence number (0, 1, 2… per peer);
    /// the answer is a `Pong` event with it, or nothing if the ping or its pong is lost.
    pub fn ping(&self, peer: PeerId) -> u64 {
        let mut pings = self.pings.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sent = pings.entry(peer).or_default();
        let seq = *sent;
        *sent += 1;
        let _ = self.commands.send(Some(Command::Ping(peer, seq)));
        seq
    }

    /// Sends one datagram to a connected peer.
    pub fn send(&self, peer: PeerId, payload: Vec<u8>) {
        let _ = self.commands.send(Some(Command::Send(peer, payload)));
    }

    /// Asks for a `Stats` event.
    pub fn stats(&self) {
        let _ = self.commands.send(Some(Command::Stats));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.commands.send(None);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Which sockets to bind: those the node cannot run without, and the STUN alternate port
/// it runs without if that port is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SocketPlan {
    required: Vec<(SocketId, SocketAddr)>,
    alternate: Option<(SocketId, SocketAddr)>,
}

/// Two listen addresses on two IPs (same port P) make the full RFC 5780 layout: (ip0,P)
/// primary, (ip0,P+1), (ip1,P), (ip1,P+1). One listen address IP:P also gets IP:P+1 if it
/// is free: with that alternate port, clients can test filtering (CHANGE-REQUEST port) and
/// tell a port-dependent mapping against one IP. Not bound: an ephemeral port (0: nothing
/// to add one to) and no listen address (the ephemeral `ping` / `nat` clients).
fn socket_plan(listen: &[SocketAddr]) -> Result<SocketPlan, NodeError> {
    match listen {
        [] => Ok(SocketPlan {
            required: vec![(SocketId::PRIMARY, "0.0.0.0:0".parse().expect("literal"))],
            alternate: None,
        }),
        [one] => Ok(SocketPlan {
            required: vec![(SocketId::PRIMARY, *one)],
            alternate: alternate_port(one.port()).map(|alt| (SocketId(1), SocketAddr::new(one.ip(), alt))),
        }),
        [a, b] => {
            let fits = a.ip() != b.ip() && a.port() == b.port() && a.is_ipv4() == b.is_ipv4();
            let Some(alt) = alternate_port(a.port()).filter(|_| fits) else {
                return Err(NodeError::Listen(
                    "two --listen addresses must be two IPs of one family with the same fixed port (the next port is the RFC 5780 alternate)".into(),
                ));
            };
            Ok(SocketPlan {
                required: vec![
                    (SocketId::PRIMARY, *a),
                    (SocketId(1), SocketAddr::new(a.ip(), alt)),
                    (SocketId(2), *b),
                    (SocketId(3), SocketAddr::new(b.ip(), alt)),
                ],
                alternate: None,
            })
        }
        _ => Err(NodeError::Listen("at most two --listen addresses".into())),
    }
}

/// The node's store: sled in the data dir, or — with no data dir, or if no store can be
/// made there — one in memory, which keeps nothing across restarts. Never fatal: the store
/// is a cache.
fn open_store(data_dir: Option<&DataDir>) -> (Box<dyn Store>, Stored) {
    let Some(dir) = data_dir else { return (Box::new(MemStore::new()), Stored::default()) };
    match SledStore::open_or_rebuild(&dir.store()) {
        Ok(Opened { store, stored, .. }) => {
            tracing::debug!(path = %dir.store().display(), "store opened");
            (Box::new(store), stored)
        }
        Err(e) => {
            tracing::warn!("{e}: running without a store (nothing is kept across restarts)");
            (Box::new(MemStore::new()), Stored::default())
        }
    }
}

/// The STUN alternate port next to a fixed `port`.
fn alternate_port(port: u16) -> Option<u16> {
    port.checked_add(1).filter(|_| port != 0)
}

/// The local IP the OS would use toward `dst` (no packet is sent).
fn route_ip(dst: SocketAddr) -> Option<IpAddr> {
    let probe = UdpSocket::bind(if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    probe.connect(dst).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

/// The primary socket's address as the LAN sees it: its own IP, or — bound to every
/// interface — the one the OS routes from toward the first server.
fn lan_addr(primary: SocketAddr, first_server: Option<SocketAddr>) -> Option<SocketAddr> {
    let ip = if primary.ip().is_unspecified() { route_ip(first_server?)? } else { primary.ip() };
    Some(SocketAddr::new(ip, primary.port()))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A role's report, for the node actor.
#[derive(Message)]
#[rtype(result = "()")]
struct Reported(Report);

/// The node actor: runs the [`NodeCore`] (the same one the simulator runs) and delivers its
/// orders to the role actors. It decides nothing itself.
struct NodeActor {
    core: NodeCore,
    events: mpsc::Sender<NodeEvent>,
    socket: Addr<SocketActor>,
    contact: Addr<MachineActor<FirstContact>>,
    probe: Addr<ProbeActor>,
    broker: Addr<BrokerActor>,
    registrations: Addr<RegistrationActor>,
    punch: Addr<PunchActor>,
    sessions: Addr<SessionActor>,
    relay: Addr<RelayActor>,
    mesh: Addr<MeshActor>,
    /// Where the core's [`Order::Store`] writes go, in order, inline: a flush returns
    /// before the orders after it are delivered.
    store: Box<dyn Store>,
    /// What the store held at start, until the core starts with it.
    stored: Option<Stored>,
    /// Records the store skipped at load, and writes that failed (logged, never fatal).
    store_skipped: u64,
    store_errors: u64,
    stats_interval: Option<std::time::Duration>,
    /// The core's own deadline, armed.
    timer: Option<(Instant, SpawnHandle)>,
    /// Events the user did not take in time.
    dropped_events: u64,
    /// Bound to every interface: the primary socket, and where the OS is asked which
    /// address it routes from (to notice a move to another network).
    routed: Option<(SocketAddr, SocketAddr)>,
}

/// How often a node bound to every interface asks the OS which address it sends from.
const LAN_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a role's actor; its events come back to the node actor as reports.
fn start_role<P: Protocol>(machine: P, socket: &Addr<SocketActor>, node: &Addr<NodeActor>) -> Addr<MachineActor<P>>
where
    P::Event: Into<Report>,
{
    let node = node.clone();
    MachineActor::start(machine, socket.clone(), move |event: P::Event| node.do_send(Reported(event.into())))
}

impl NodeActor {
    fn launch(
        config: Config,
        (store, stored): (Box<dyn Store>, Stored),
        (socket, fast): (Addr<SocketActor>, FastSlot),
        locals: Vec<SocketAddr>,
        events: mpsc::Sender<NodeEvent>,
    ) -> Addr<Self> {
        NodeActor::create(move |ctx| {
            let me = ctx.address();
            let now = Instant::now();
            // Keys, cookie secrets and nonce seeds: full entropy from the OS.
            let mut rng = StdRng::from_entropy();
            let epoch = (now, unix_ms());
            let roles = Roles::new(&config, &locals, epoch, &mut rng);
            let contact = start_role(roles.contact, &socket, &me);
            let probe = start_role(roles.probe, &socket, &me);
            let broker = start_role(roles.broker, &socket, &me);
            let registrations = start_role(roles.registrations, &socket, &me);
            let punch = start_role(roles.punch, &socket, &me);
            let sessions = start_role(roles.sessions, &socket, &me);
            // The relay forwards data on the socket's receive path, and does the rest here.
            let shared = Rc::new(RefCell::new(roles.relay));
            let relay = start_role(shared.clone(), &socket, &me);
            fast.install(shared, relay.clone().recipient());
            let mesh = start_role(roles.mesh, &socket, &me);
            for route in Route::ALL {
                let to: Recipient<Inbound> = match role_of(route) {
                    RoleId::FirstContact => contact.clone().recipient(),
                    RoleId::Probe => probe.clone().recipient(),
                    RoleId::Broker => broker.clone().recipient(),
                    RoleId::Registration => registrations.clone().recipient(),
                    RoleId::Punch => punch.clone().recipient(),
                    RoleId::Session => sessions.clone().recipient(),
                    RoleId::Relay => relay.clone().recipient(),
                    RoleId::Mesh => mesh.clone().recipient(),
                };
                socket.do_send(SetRoute(route, to));
            }
            let first_server = config.bootstrap.iter().chain(&config.stun).next().copied();
            let first_server = first_server.or_else(|| stored.rejoin_seeds().first().copied());
            let lan = lan_addr(locals[0], first_server);
            let routed = first_server.filter(|_| locals[0].ip().is_unspecified()).map(|s| (locals[0], s));
            let stats_interval = config.stats_interval;
            let core = NodeCore::new(config, locals, lan, epoch, StdRng::from_rng(&mut rng).expect("rng"));
            NodeActor {
                core,
                events,
                socket,
                contact,
                probe,
                broker,
                registrations,
                punch,
                sessions,
                relay,
                mesh,
                store,
                store_skipped: stored.skipped,
                stored: Some(stored),
                store_errors: 0,
                stats_interval,
                timer: None,
                dropped_events: 0,
                routed,
            }
        })
    }

    /// Delivers what the core ordered, and re-arms its timer.
    fn act(&mut self, ctx: &mut Context<Self>) {
        while let Some(order) = self.core.poll_order() {
            match order {
                Order::Socket(command) => {
                    let done = self.socket.send(command);
                    ctx.spawn(done.into_actor(self).map(|event, act, ctx| {
                        if let Ok(Some(event)) = event {
                            act.report(Report::Socket(event), ctx);
                        }
                    }));
                }
                Order::FirstContact(command) => self.contact.do_send(Deliver(command)),
                Order::Probe(command) => self.probe.do_send(Deliver(command)),
                Order::Broker(command) => self.broker.do_send(Deliver(command)),
                Order::Registration(command) => self.registrations.do_send(Deliver(command)),
                Order::Punch(command) => self.punch.do_send(Deliver(command)),
                Order::Session(command) => self.sessions.do_send(Deliver(command)),
                Order::Relay(command) => self.relay.do_send(Deliver(command)),
                Order::Mesh(command) => self.mesh.do_send(Deliver(command)),
                Order::Store(op) => {
                    if let Err(e) = self.store.apply(op) {
                        self.store_errors += 1;
                        tracing::warn!("{e}");
                    }
                }
                Order::Emit(event) => self.emit(event),
            }
        }
        let deadline = self.core.poll_timeout();
        if self.timer.as_ref().map(|(at, _)| *at) != deadline {
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            if let Some(at) = deadline {
                let handle = ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| {
                    act.timer = None;
                    act.core.handle_timeout(Instant::now());
                    act.act(ctx);
                });
                self.timer = Some((at, handle));
            }
        }
    }

    fn report(&mut self, report: Report, ctx: &mut Context<Self>) {
        self.core.handle_report(Instant::now(), report);
        self.act(ctx);
    }

    /// Hands an event to the user; a user who does not keep up loses events (counted), the
    /// node does not queue them without bound.
    fn emit(&mut self, event: NodeEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.dropped_events += 1;
            tracing::warn!(dropped = self.dropped_events, "event queue full: {event:?} dropped");
        }
    }

    /// Gathers every role's counters: for the user (a `Stats` event) if `emit`, and for
    /// the metric exporter if metrics are exported.
    fn gather_stats(&mut self, ctx: &mut Context<Self>, emit: bool) {
        let socket = self.socket.send(socket::GetStats);
        let broker = self.broker.send(Call::new(|b: &mut Broker, _| b.stats()));
        let punch = self.punch.send(Call::new(|a: &mut Attempts, _| a.dropped_unknown_nonce));
        let sessions =
            self.sessions.send(Call::new(|s: &mut Sessions, _| (s.dropped_unknown_source, s.unsealing_drops())));
        let stun = self.probe.send(Call::new(|p: &mut NatProbing, _| (p.unanswered, p.rate_limited)));
        let relay = self.relay.send(Call::new(|r: &mut Rc<RefCell<Relay>>, _| r.borrow().stats()));
        let events = self.events.clone();
        let (dropped_events, store_skipped, store_errors) =
            (self.dropped_events, self.store_skipped, self.store_errors);
        let peer_id = self.core.peer_id().to_string();
        ctx.spawn(
            async move {
                let (Ok(s), Ok(b), Ok(p), Ok((x, (forged, replayed))), Ok((stun_unanswered, stun_rate_limited)), Ok(r)) =
                    (socket.await, broker.await, punch.await, sessions.await, stun.await, relay.await)
                else {
                    return;
                };
                let driver = stats::Driver {
                    dropped_punch_unknown_nonce: p,
                    dropped_session_unknown_source: x,
                    dropped_data_forged: forged,
                    dropped_data_replayed: replayed,
                    stun_unanswered,
                    stun_rate_limited,
                    dropped_events,
                    store_skipped,
                    store_errors,
                };
                let stats = Stats::new(s, b, r, driver);
                if stats::exported() {
                    stats::publish(&peer_id, &stats);
                }
                if emit {
                    let _ = events.try_send(NodeEvent::Stats(Box::new(stats)));
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(every) = self.stats_interval {
            ctx.run_interval(every, |act, ctx| act.gather_stats(ctx, true));
        }
        if stats::exported() {
            ctx.run_interval(METRICS_EVERY, |act, ctx| act.gather_stats(ctx, false));
        }
        if let Some((primary, toward)) = self.routed {
            ctx.run_interval(LAN_CHECK, move |act, ctx| {
                if let Some(lan) = lan_addr(primary, Some(toward)) {
                    act.core.local_address(Instant::now(), lan);
                    act.act(ctx);
                }
            });
        }
        let stored = self.stored.take().unwrap_or_default();
        self.core.start(Instant::now(), stored);
        self.act(ctx);
    }
}

impl Handler<Reported> for NodeActor {
    type Result = ();
    fn handle(&mut self, Reported(report): Reported, ctx: &mut Context<Self>) {
        self.report(report, ctx);
    }
}

impl Handler<Flush> for NodeActor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> ResponseFuture<()> {
        // Peers and relays hear we go (a sealed goodbye, circuit closes) rather than find
        // out at their timeouts. Mailboxes are FIFO: once the sessions answered a no-op,
        // their sends are queued at the socket actor, and once it answered, they are on
        // the wire.
        self.sessions.do_send(Deliver(sessions::Command::CloseAll));
        let (sessions, socket) = (self.sessions.clone(), self.socket.clone());
        Box::pin(async move {
            let _ = sessions.send(Call::new(|_: &mut Sessions, _| ())).await;
            let _ = socket.send(socket::GetStats).await;
        })
    }
}

impl Handler<Command> for NodeActor {
    type Result = ();
    fn handle(&mut self, command: Command, ctx: &mut Context<Self>) {
        match command {
            Command::Connect(peer) => self.core.connect(Instant::now(), peer),
            Command::Join(topic) => self.core.join_topic(Instant::now(), topic),
            Command::Ping(peer, seq) => self.core.ping(peer, seq),
            Command::Send(peer, payload) => self.core.send(peer, payload),
            Command::Stats => self.gather_stats(ctx, true),
        }
        self.act(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_listen_address_gets_the_next_port_as_an_optional_stun_alternate() {
        let plan = socket_plan(&[at("198.51.100.1:3478")]).unwrap();
        assert_eq!(plan.required, [(SocketId::PRIMARY, at("198.51.100.1:3478"))]);
        assert_eq!(plan.alternate, Some((SocketId(1), at("198.51.100.1:3479"))));
        let any = socket_plan(&[at("0.0.0.0:3478")]).unwrap();
        assert_eq!(any.alternate, Some((SocketId(1), at("0.0.0.0:3479"))));
        // An ephemeral port has no next port; 65535 has none either.
        for listen in [&[][..], &[at("127.0.0.1:0")], &[at("198.51.100.1:65535")]] {
            assert_eq!(socket_plan(listen).unwrap().alternate, None, "{listen:?}");
        }
        // Two IPs: the full RFC 5780 layout, all four required.
        let full = socket_plan(&[at("198.51.100.1:3478"), at("198.51.100.2:3478")]).unwrap();
        let ids: Vec<SocketId> = full.required.iter().map(|&(id, _)| id).collect();
        assert_eq!((ids, full.alternate), (vec![SocketId(0), SocketId(1), SocketId(2), SocketId(3)], None));
        for bad in [
            &[at("198.51.100.1:3478"), at("198.51.100.1:3478")][..],
            &[at("198.51.100.1:3478"), at("198.51.100.2:3479")],
            &[at("198.51.100.1:65535"), at("198.51.100.2:65535")],
            &[at("198.51.100.1:0"), at("198.51.100.2:0")],
            &[at("198.51.100.1:1"), at("198.51.100.2:1"), at("198.51.100.3:1")],
        ] {
            assert!(socket_plan(bad).is_err(), "{bad:?}");
        }
    }
}
