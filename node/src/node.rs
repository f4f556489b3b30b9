//! The `Node` handle and the node actor: it feeds every machine's events to the
//! [`Coordinator`] (the same one the simulator drives) and carries out its actions by
//! messaging the other actors. It decides nothing itself.

use crate::config::Config;
use crate::event::NodeEvent;
use actix::prelude::*;
use introducer_actors::broker::{self, actor::BrokerActor, Broker};
use introducer_actors::coordinator::{self, Action, Coordinator};
use introducer_actors::driver::{Call, Emitted, MachineActor};
use introducer_actors::probe::actor::{probe_socket, NatProbing, ProbeActor, ProbeEvent};
use introducer_actors::probe::{Layout, LocalSockets, Probe, ProbeConfig, Responder, Server};
use introducer_actors::punch::{self, actor::pool_socket, actor::Attempts, actor::PunchActor};
use introducer_actors::registration::{self, actor::RegistrationActor, actor::Registrations};
use introducer_actors::relay::{self, actor::RelayActor, server::Relay};
use introducer_actors::session::{self, actor::SessionActor, actor::Sessions};
use introducer_actors::socket::{self, Bind, Route, SetRoute, SocketActor, Unbind};
use introducer_actors::SocketId;
use introducer_bootstrap::{BootstrapError, FirstContact, Seed};
use libp2p_identity::PeerId;
use rand::SeedableRng;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot bind {addr}: {source}")]
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
    Ping(PeerId),
    Send(PeerId, Vec<u8>),
    Stats,
}

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
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Binds the sockets and starts the node's actors on a thread of their own.
    pub fn start(config: Config) -> Result<Node, NodeError> {
        let sockets = socket_plan(&config.listen)?;
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Option<Command>>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let peer_id = config.identity.peer_id();
        let thread = std::thread::Builder::new()
            .name("introducer-node".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let binds: Vec<(SocketId, SocketAddr)> = sockets.iter().map(|&(id, addr)| (id, addr)).collect();
                    let (socket, locals) = match SocketActor::bind(&binds) {
                        Ok(bound) => bound,
                        Err(source) => {
                            let _ = bound_tx.send(Err(NodeError::Bind { addr: binds[0].1, source }));
                            return;
                        }
                    };
                    let node = NodeActor::launch(config, socket, locals.clone(), event_tx);
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
        Ok(Node { peer_id, listen, commands, events, thread: Some(thread) })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node's sockets are bound to (primary first).
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// The next event; `None` once the node has stopped.
    pub async fn next_event(&mut self) -> Option<NodeEvent> {
        self.events.recv().await
    }

    /// Asks an introducer for `peer` and punches; the outcome is a `Connected` or
    /// `ConnectFailed` event.
    pub fn connect(&self, peer: PeerId) {
        let _ = self.commands.send(Some(Command::Connect(peer)));
    }

    /// Pings a connected peer; the answer is a `Pong` event.
    pub fn ping(&self, peer: PeerId) {
        let _ = self.commands.send(Some(Command::Ping(peer)));
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

/// Which sockets to bind. Two listen addresses on two IPs (same port P) make the full
/// RFC 5780 layout: (ip0,P) primary, (ip0,P+1), (ip1,P), (ip1,P+1).
fn socket_plan(listen: &[SocketAddr]) -> Result<Vec<(SocketId, SocketAddr)>, NodeError> {
    match listen {
        [] => Ok(vec![(SocketId::PRIMARY, "0.0.0.0:0".parse().expect("literal"))]),
        [one] => Ok(vec![(SocketId::PRIMARY, *one)]),
        [a, b] => {
            if a.ip() == b.ip()
                || a.port() != b.port()
                || a.port() == 0
                || a.port() == u16::MAX
                || a.is_ipv4() != b.is_ipv4()
            {
                return Err(NodeError::Listen(
                    "two --listen addresses must be two IPs of one family with the same fixed port (the next port is the RFC 5780 alternate)".into(),
                ));
            }
            let alt = a.port() + 1;
            Ok(vec![
                (SocketId::PRIMARY, *a),
                (SocketId(1), SocketAddr::new(a.ip(), alt)),
                (SocketId(2), *b),
                (SocketId(3), SocketAddr::new(b.ip(), alt)),
            ])
        }
        _ => Err(NodeError::Listen("at most two --listen addresses".into())),
    }
}

fn responder(locals: &[SocketAddr]) -> Option<Responder> {
    let layout = match locals {
        [one] => Layout::single(SocketId::PRIMARY, *one),
        [a, _, _, d] => Layout::rfc5780(*a, *d, [SocketId::PRIMARY, SocketId(1), SocketId(2), SocketId(3)]).ok()?,
        _ => return None,
    };
    Some(Responder::new(layout))
}

/// The local IP the OS would use toward `dst` (no packet is sent).
fn route_ip(dst: SocketAddr) -> Option<IpAddr> {
    let probe = UdpSocket::bind(if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    probe.connect(dst).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct NodeActor {
    coordinator: Coordinator,
    events: mpsc::Sender<NodeEvent>,
    socket: Addr<SocketActor>,
    locals: Vec<SocketAddr>,
    contact: Addr<MachineActor<FirstContact>>,
    probe: Addr<ProbeActor>,
    broker: Addr<BrokerActor>,
    registrations: Addr<RegistrationActor>,
    punch: Addr<PunchActor>,
    sessions: Addr<SessionActor>,
    relay: Addr<RelayActor>,
    stats_interval: Option<std::time::Duration>,
    bootstrap: Vec<SocketAddr>,
    bootstrap_timing: introducer_bootstrap::Config,
    /// The coordinator's own deadline, armed.
    timer: Option<(Instant, SpawnHandle)>,
    /// Events the user did not take in time.
    dropped_events: u64,
}

impl NodeActor {
    fn launch(
        config: Config,
        socket: Addr<SocketActor>,
        locals: Vec<SocketAddr>,
        events: mpsc::Sender<NodeEvent>,
    ) -> Addr<Self> {
        NodeActor::create(move |ctx| {
            let me = ctx.address();
            let now = Instant::now();
            let id = config.identity.clone();
            let contact = MachineActor::start(
                FirstContact::new(id.peer_id(), locals.clone(), false),
                socket.clone(),
                me.clone().recipient(),
            );
            let probe =
                MachineActor::start(NatProbing::new(responder(&locals)), socket.clone(), me.clone().recipient());
            let broker_machine =
                Broker::new(config.broker.clone(), now, rand::rngs::StdRng::seed_from_u64(rand::random()));
            let broker = MachineActor::start(broker_machine, socket.clone(), me.clone().recipient());
            let registrations = MachineActor::start(
                Registrations::new(config.registration.clone()),
                socket.clone(),
                me.clone().recipient(),
            );
            let punch = MachineActor::start(
                Attempts::new(config.punch.clone(), id.clone(), rand::random()),
                socket.clone(),
                me.clone().recipient(),
            );
            let sessions = MachineActor::start(
                Sessions::new(config.session.clone(), id.clone(), rand::random()),
                socket.clone(),
                me.clone().recipient(),
            );
            let relay_machine =
                Relay::new(config.relay.clone(), now, rand::rngs::StdRng::seed_from_u64(rand::random()));
            let relay = MachineActor::start(relay_machine, socket.clone(), me.clone().recipient());
            for (route, to) in [
                (Route::Bootstrap, contact.clone().recipient()),
                (Route::StunServer, probe.clone().recipient()),
                (Route::StunClient, probe.clone().recipient()),
                (Route::Registration, registrations.clone().recipient()),
                (Route::Punch, punch.clone().recipient()),
                (Route::Session, sessions.clone().recipient()),
            ] {
                socket.do_send(SetRoute(route, to));
            }
            let roles = coordinator::Config {
                register: config.register,
                serve: config.serve,
                stun: config.stun.clone(),
                pool_size: config.punch.pool_size,
                relay_only: config.relay_only,
                relay_after: config.relay_after,
                adapt_keepalive: config.adapt_keepalive,
            };
            NodeActor {
                coordinator: Coordinator::new(roles, id, locals.clone()),
                events,
                socket,
                locals,
                contact,
                probe,
                broker,
                registrations,
                punch,
                sessions,
                relay,
                stats_interval: config.stats_interval,
                bootstrap: config.bootstrap,
                bootstrap_timing: config.bootstrap_timing,
                timer: None,
                dropped_events: 0,
            }
        })
    }

    /// Carries out what the coordinator decided, and re-arms its timer.
    fn act(&mut self, ctx: &mut Context<Self>) {
        self.carry_out(ctx);
        let deadline = self.coordinator.poll_timeout();
        if self.timer.as_ref().map(|(at, _)| *at) != deadline {
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            if let Some(at) = deadline {
                let handle = ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| {
                    act.timer = None;
                    act.coordinator.handle_timeout(Instant::now());
                    act.act(ctx);
                });
                self.timer = Some((at, handle));
            }
        }
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.coordinator.poll_action() {
            match action {
                Action::Join(seeds) => {
                    let timing = self.bootstrap_timing.clone();
                    self.contact.do_send(Call::new(move |c: &mut FirstContact, now| c.join(timing, seeds, now)));
                }
                Action::Probe { servers, pad_requests } => self.start_probe(servers, pad_requests, ctx),
                Action::Serve => {
                    self.socket.do_send(SetRoute(Route::Broker, self.broker.clone().recipient()));
                    self.socket.do_send(SetRoute(Route::Relay, self.relay.clone().recipient()));
                    self.contact.do_send(Call::new(|c: &mut FirstContact, _| c.set_introducer(true)));
                }
                Action::BindPool(size) => self.bind_pool(size, ctx),
                Action::Register { introducers, record } => {
                    self.registrations.do_send(Call::new(move |r: &mut Registrations, now| {
                        for introducer in introducers {
                            r.add(now, introducer, record.clone());
                        }
                    }));
                }
                Action::Introduce(peer) => self.registrations.do_send(Call::new(move |r: &mut Registrations, now| {
                    r.introduce(now, peer);
                })),
                Action::Settle(peer) => {
                    self.registrations.do_send(Call::new(move |r: &mut Registrations, _| r.settle(&peer)))
                }
                Action::Punch { nat, introduced } => {
                    let (peer, initiator) = (introduced.peer.peer_id, introduced.initiator);
                    let start =
                        self.punch.send(Call::new(move |a: &mut Attempts, now| a.start(now, &nat, *introduced)));
                    ctx.spawn(start.into_actor(self).map(move |result, act, ctx| {
                        if let Ok(Err(why)) = result {
                            act.coordinator.on_punch_refused(peer, initiator, why);
                            act.act(ctx);
                        }
                    }));
                }
                Action::OpenSession(opened) => {
                    self.sessions.do_send(Call::new(move |s: &mut Sessions, now| s.open(now, opened)))
                }
                Action::Relay { peer, relay, nonce, controlling } => {
                    self.sessions.do_send(Call::new(move |s: &mut Sessions, now| {
                        s.open_relayed(now, peer, relay, &nonce, controlling)
                    }))
                }
                Action::AddPath { peer, addr } => {
                    self.sessions.do_send(Call::new(move |s: &mut Sessions, now| s.add_path(now, peer, addr)))
                }
                Action::AuthorizeCircuit { nonce, peers } => {
                    self.relay.do_send(Call::new(move |r: &mut Relay, now| r.authorize(now, &nonce, peers)))
                }
                Action::ClosePool(size) => self.socket.do_send(Unbind((0..size).map(pool_socket).collect())),
                Action::Keepalive(keepalive) => {
                    self.registrations
                        .do_send(Call::new(move |r: &mut Registrations, now| r.set_keepalive(now, keepalive)));
                    self.sessions.do_send(Call::new(move |s: &mut Sessions, _| s.set_keepalive(keepalive)));
                }
                Action::Emit(event) => self.emit(event),
            }
        }
    }

    /// Hands an event to the user; a user who does not keep up loses events (counted), the
    /// node does not queue them without bound.
    fn emit(&mut self, event: NodeEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.dropped_events += 1;
            tracing::warn!(dropped = self.dropped_events, "event queue full: {event:?} dropped");
        }
    }

    /// Finds our LAN address, binds the probe's extra sockets, then starts classifying.
    fn start_probe(&mut self, servers: Vec<Server>, pad_requests: bool, ctx: &mut Context<Self>) {
        let Some(first) = servers.first() else { return };
        let mut config = ProbeConfig::new(servers.clone());
        config.pad_requests = pad_requests;
        let extra = Probe::sockets_needed(&config);
        let primary = self.locals[0];
        let ip = if primary.ip().is_unspecified() { route_ip(first.addr) } else { Some(primary.ip()) };
        let private = ip.map(|ip| SocketAddr::new(ip, primary.port()));
        self.coordinator.set_private(private);
        let socket = self.socket.clone();
        let bind = async move {
            let mut bound = Vec::new();
            for i in 1..=extra {
                match socket.send(Bind { id: probe_socket(i), addr: SocketAddr::new(primary.ip(), 0) }).await {
                    Ok(Ok(addr)) => bound.push(addr),
                    _ => break,
                }
            }
            bound
        };
        ctx.spawn(bind.into_actor(self).map(move |extra, act, _| {
            let locals = LocalSockets { primary: private, extra };
            let seed = rand::random();
            act.probe.do_send(Call::new(move |p: &mut NatProbing, now| p.start(now, config, locals, seed)));
        }));
    }

    /// Binds the birthday pool next to the primary socket, then hands it to the punch actor.
    fn bind_pool(&mut self, size: u16, ctx: &mut Context<Self>) {
        let (socket, ip) = (self.socket.clone(), self.locals[0].ip());
        let bind = async move {
            let mut pool = Vec::new();
            for i in 0..size {
                match socket.send(Bind { id: pool_socket(i), addr: SocketAddr::new(ip, 0) }).await {
                    Ok(Ok(_)) => pool.push(pool_socket(i)),
                    Ok(Err(e)) => {
                        tracing::warn!("birthday pool stops at {i} sockets: {e}");
                        break;
                    }
                    Err(_) => break,
                }
            }
            pool
        };
        ctx.spawn(bind.into_actor(self).map(|pool, act, ctx| {
            act.punch.do_send(Call::new(move |a: &mut Attempts, now| a.set_pool(now, pool)));
            act.coordinator.on_pool_ready();
            act.act(ctx);
        }));
    }

    fn emit_stats(&mut self, ctx: &mut Context<Self>) {
        let socket = self.socket.send(socket::GetStats);
        let broker = self.broker.send(Call::new(|b: &mut Broker, _| b.stats()));
        let punch = self.punch.send(Call::new(|a: &mut Attempts, _| a.dropped_unknown_nonce));
        let sessions =
            self.sessions.send(Call::new(|s: &mut Sessions, _| (s.dropped_unknown_source, s.unsealing_drops())));
        let stun = self.probe.send(Call::new(|p: &mut NatProbing, _| (p.unanswered, p.rate_limited)));
        let relay = self.relay.send(Call::new(|r: &mut Relay, _| r.stats()));
        let events = self.events.clone();
        let dropped_events = self.dropped_events;
        ctx.spawn(
            async move {
                let (Ok(s), Ok(b), Ok(p), Ok((x, (forged, replayed))), Ok((stun_unanswered, stun_rate_limited)), Ok(r)) =
                    (socket.await, broker.await, punch.await, sessions.await, stun.await, relay.await)
                else {
                    return;
                };
                let stats = vec![
                    ("received", s.received),
                    ("sent", s.sent),
                    ("dropped_malformed", s.dropped_malformed),
                    ("dropped_unrouted", s.dropped_unrouted),
                    ("dropped_overload", s.dropped_overload),
                    ("send_errors", s.send_errors),
                    ("dropped_punch_unknown_nonce", p),
                    ("dropped_session_unknown_source", x),
                    ("dropped_data_forged", forged),
                    ("dropped_data_replayed", replayed),
                    ("stun_unanswered", stun_unanswered),
                    ("stun_rate_limited", stun_rate_limited),
                    ("dropped_events", dropped_events),
                    ("broker_registered", b.registered),
                    ("broker_refreshed", b.refreshed),
                    ("broker_challenged", b.challenged),
                    ("broker_introduced", b.introduced),
                    ("broker_unknown_target", b.unknown_target),
                    ("broker_dropped_bad_signature", b.dropped_bad_signature),
                    ("broker_dropped_unregistered", b.dropped_unregistered),
                    ("broker_dropped_rate_limited", b.dropped_rate_limited),
                    ("relay_challenged", r.challenged),
                    ("relay_circuits_opened", r.circuits_opened),
                    ("relay_circuits_ready", r.circuits_ready),
                    ("relay_circuits_closed", r.circuits_closed),
                    ("relay_circuits_expired", r.circuits_expired),
                    ("relay_forwarded_packets", r.forwarded_packets),
                    ("relay_forwarded_bytes", r.forwarded_bytes),
                    ("relay_dropped_rate_limited", r.dropped_rate_limited),
                    ("relay_dropped_relay_busy", r.dropped_relay_busy),
                    ("relay_dropped_bad_signature", r.dropped_bad_signature),
                    ("relay_dropped_malformed", r.dropped_malformed),
                    ("relay_dropped_unknown_circuit", r.dropped_unknown_circuit),
                    ("relay_dropped_wrong_source", r.dropped_wrong_source),
                    ("relay_dropped_not_ready", r.dropped_not_ready),
                    ("relay_refused_not_introduced", r.refused_not_introduced),
                    (
                        "relay_refused",
                        r.refused_full
                            + r.refused_pending
                            + r.refused_peer_limit
                            + r.refused_bad_request
                            + r.refused_not_introduced,
                    ),
                ];
                let _ = events.try_send(NodeEvent::Stats(stats));
            }
            .into_actor(self),
        );
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(every) = self.stats_interval {
            ctx.run_interval(every, |act, ctx| act.emit_stats(ctx));
        }
        self.coordinator.start(self.bootstrap.clone());
        self.act(ctx);
    }
}

impl Handler<Emitted<Result<Vec<Seed>, BootstrapError>>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(joined): Emitted<Result<Vec<Seed>, BootstrapError>>, ctx: &mut Context<Self>) {
        let joined = joined
            .map(|seeds| seeds.iter().map(|s| coordinator::Seed { addr: s.addr, introducer: s.introducer }).collect())
            .map_err(|e| e.to_string());
        self.coordinator.on_joined(joined);
        self.act(ctx);
    }
}

impl Handler<Emitted<ProbeEvent>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(event): Emitted<ProbeEvent>, ctx: &mut Context<Self>) {
        match event {
            ProbeEvent::Classified(result) => self.coordinator.on_probe(unix_ms(), result),
            ProbeEvent::Lifetime(report) => self.coordinator.on_lifetime(report),
        }
        self.act(ctx);
    }
}

impl Handler<Emitted<(SocketAddr, registration::Event)>> for NodeActor {
    type Result = ();
    fn handle(
        &mut self,
        Emitted((introducer, event)): Emitted<(SocketAddr, registration::Event)>,
        ctx: &mut Context<Self>,
    ) {
        self.coordinator.on_registration(Instant::now(), introducer, event);
        self.act(ctx);
    }
}

impl Handler<Emitted<punch::Event>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(event): Emitted<punch::Event>, ctx: &mut Context<Self>) {
        self.coordinator.on_punch(Instant::now(), event);
        self.act(ctx);
    }
}

impl Handler<Emitted<(PeerId, session::Event)>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted((peer, event)): Emitted<(PeerId, session::Event)>, ctx: &mut Context<Self>) {
        self.coordinator.on_session(Instant::now(), peer, event);
        self.act(ctx);
    }
}

impl Handler<Emitted<relay::server::Event>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(event): Emitted<relay::server::Event>, ctx: &mut Context<Self>) {
        self.coordinator.on_relay(event);
        self.act(ctx);
    }
}

impl Handler<Emitted<broker::Event>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(event): Emitted<broker::Event>, ctx: &mut Context<Self>) {
        self.coordinator.on_broker(event);
        self.act(ctx);
    }
}

impl Handler<Flush> for NodeActor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> ResponseFuture<()> {
        // Mailboxes are FIFO: once the sessions answered a no-op, their sends are queued
        // at the socket actor, and once it answered, they are on the wire.
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
            Command::Connect(peer) => {
                self.coordinator.connect(Instant::now(), peer);
                self.act(ctx);
            }
            Command::Ping(peer) => self.sessions.do_send(Call::new(move |s: &mut Sessions, now| {
                let _ = s.ping(now, &peer);
            })),
            Command::Send(peer, payload) => self.sessions.do_send(Call::new(move |s: &mut Sessions, now| {
                if let Err(e) = s.send(now, &peer, &payload) {
                    tracing::warn!(%peer, "not sent: {e}");
                }
            })),
            Command::Stats => self.emit_stats(ctx),
        }
    }
}
