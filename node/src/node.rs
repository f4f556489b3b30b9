//! The `Node` handle and the coordinator actor that sequences a node's life:
//! first contact → NAT probing → registration (and, if public, the introducer role) →
//! introductions → punching → sessions. Every protocol decision is made by the machines
//! in `introducer-actors`; this only passes their events on to the next step.

use crate::config::{Config, Serve};
use crate::event::NodeEvent;
use actix::prelude::*;
use introducer_actors::broker::{self, actor::BrokerActor, Broker};
use introducer_actors::driver::{Call, Emitted, MachineActor};
use introducer_actors::nat::{NatReport, NatType};
use introducer_actors::probe::actor::{probe_socket, NatProbing, ProbeActor};
use introducer_actors::probe::{Layout, LocalSockets, Probe, ProbeConfig, ProbeError, Responder, Server};
use introducer_actors::punch::{self, actor::Attempts, actor::PunchActor, Path};
use introducer_actors::registration::{self, actor::RegistrationActor, actor::Registrations};
use introducer_actors::session::{self, actor::SessionActor, actor::Sessions};
use introducer_actors::socket::{self, Bind, Route, SetRoute, SocketActor};
use introducer_actors::SocketId;
use introducer_bootstrap::{BootstrapError, FirstContact, Seed};
use introducer_proto::pb;
use libp2p_identity::PeerId;
use rand::SeedableRng;
use std::collections::{BTreeSet, HashMap};
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

/// A running node. Dropping it stops the node.
pub struct Node {
    peer_id: PeerId,
    listen: Vec<SocketAddr>,
    commands: mpsc::UnboundedSender<Option<Command>>,
    events: mpsc::UnboundedReceiver<NodeEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Binds the sockets and starts the node's actors on a thread of their own.
    pub fn start(config: Config) -> Result<Node, NodeError> {
        let sockets = socket_plan(&config.listen)?;
        let (event_tx, events) = mpsc::unbounded_channel();
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
            if a.ip() == b.ip() || a.port() != b.port() || a.port() == 0 || a.port() == u16::MAX || a.is_ipv4() != b.is_ipv4() {
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

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct NodeActor {
    config: Config,
    events: mpsc::UnboundedSender<NodeEvent>,
    socket: Addr<SocketActor>,
    locals: Vec<SocketAddr>,
    contact: Addr<MachineActor<FirstContact>>,
    probe: Addr<ProbeActor>,
    broker: Addr<BrokerActor>,
    registrations: Addr<RegistrationActor>,
    punch: Addr<PunchActor>,
    sessions: Addr<SessionActor>,
    seeds: Vec<Seed>,
    nat: Option<NatReport>,
    /// Our LAN address, as peers behind the same NAT reach us.
    private: Option<SocketAddr>,
    registered: BTreeSet<SocketAddr>,
    /// Connects waiting for a registration.
    waiting: Vec<PeerId>,
    /// When each connect asked for its introduction (the start of `connect_ms`).
    asked: HashMap<PeerId, Instant>,
    paths: HashMap<PeerId, Path>,
}

impl NodeActor {
    fn launch(config: Config, socket: Addr<SocketActor>, locals: Vec<SocketAddr>, events: mpsc::UnboundedSender<NodeEvent>) -> Addr<Self> {
        NodeActor::create(move |ctx| {
            let me = ctx.address();
            let now = Instant::now();
            let seed: u64 = rand::random();
            let id = config.identity.clone();
            let contact = MachineActor::start(FirstContact::new(id.peer_id(), locals.clone(), false), socket.clone(), me.clone().recipient());
            let probe = MachineActor::start(NatProbing::new(responder(&locals)), socket.clone(), me.clone().recipient());
            let broker_machine = Broker::new(config.broker.clone(), now, rand::rngs::StdRng::seed_from_u64(seed));
            let broker = MachineActor::start(broker_machine, socket.clone(), me.clone().recipient());
            let registrations = MachineActor::start(Registrations::new(config.registration.clone()), socket.clone(), me.clone().recipient());
            let punch = MachineActor::start(Attempts::new(config.punch.clone(), id), socket.clone(), me.clone().recipient());
            let sessions = MachineActor::start(Sessions::new(config.session.clone()), socket.clone(), me.clone().recipient());
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
            NodeActor {
                config,
                events,
                socket,
                locals,
                contact,
                probe,
                broker,
                registrations,
                punch,
                sessions,
                seeds: Vec::new(),
                nat: None,
                private: None,
                registered: BTreeSet::new(),
                waiting: Vec::new(),
                asked: HashMap::new(),
                paths: HashMap::new(),
            }
        })
    }

    fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    fn fatal(&self, message: String) {
        self.emit(NodeEvent::Fatal { message });
    }

    fn serve(&mut self) {
        self.socket.do_send(SetRoute(Route::Broker, self.broker.clone().recipient()));
        self.contact.do_send(Call::new(|c: &mut FirstContact, _| c.set_introducer(true)));
    }

    /// Binds the probe's extra sockets, then starts classifying against `servers`.
    fn start_probe(&mut self, servers: Vec<Server>, ctx: &mut Context<Self>) {
        let mut config = ProbeConfig::new(servers.clone());
        // Padding keeps our own nodes' answers no larger than the question, but standard
        // servers (coturn) answer a PADDING request with a path-MTU-sized datagram.
        config.pad_requests = self.config.stun.is_empty();
        let extra = Probe::sockets_needed(&config);
        let primary = self.locals[0];
        let ip = if primary.ip().is_unspecified() { route_ip(servers[0].addr) } else { Some(primary.ip()) };
        self.private = ip.map(|ip| SocketAddr::new(ip, primary.port()));
        let socket = self.socket.clone();
        let bind_ip = primary.ip();
        let bind = async move {
            let mut bound = Vec::new();
            for i in 1..=extra {
                match socket.send(Bind { id: probe_socket(i), addr: SocketAddr::new(bind_ip, 0) }).await {
                    Ok(Ok(addr)) => bound.push(addr),
                    _ => break,
                }
            }
            bound
        };
        let locals = LocalSockets { primary: self.private, extra: Vec::new() };
        ctx.spawn(bind.into_actor(self).map(move |extra, act, _| {
            let locals = LocalSockets { extra, ..locals };
            let seed = rand::random();
            act.probe.do_send(Call::new(move |p: &mut NatProbing, now| p.start(now, config, locals, seed)));
        }));
    }

    fn signed_record(&self) -> pb::SignedPeerRecord {
        let record = pb::PeerRecord {
            peer_id: Default::default(),
            private_addrs: self.private.into_iter().map(Into::into).collect(),
            nat: self.nat.as_ref().map(Into::into),
            issued_ms: unix_ms(),
        };
        self.config.identity.sign_record(record)
    }

    fn ask_introduction(&mut self, peer: PeerId) {
        self.asked.insert(peer, Instant::now());
        self.registrations.do_send(Call::new(move |r: &mut Registrations, now| {
            r.introduce(now, peer);
        }));
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(every) = self.config.stats_interval {
            ctx.run_interval(every, |act, ctx| act.handle(Command::Stats, ctx));
        }
        if !self.config.bootstrap.is_empty() {
            let (timing, seeds) = (self.config.bootstrap_timing.clone(), self.config.bootstrap.clone());
            self.contact.do_send(Call::new(move |c: &mut FirstContact, now| c.join(timing, seeds, now)));
        } else if !self.config.stun.is_empty() {
            let servers = self.config.stun.iter().map(|&a| Server::new(a)).collect();
            self.start_probe(servers, ctx);
        } else {
            // The first node of a new mesh: nobody to ask, so it assumes it is reachable.
            if self.config.serve == Serve::Auto {
                self.serve();
            }
            let listen = self.locals.clone();
            self.emit(NodeEvent::Ready { peer_id: self.config.identity.peer_id(), listen, public: true, nat: None });
        }
    }
}

impl Handler<Emitted<Result<Vec<Seed>, BootstrapError>>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(joined): Emitted<Result<Vec<Seed>, BootstrapError>>, ctx: &mut Context<Self>) {
        match joined {
            Ok(seeds) => {
                let mut servers: Vec<Server> = seeds.iter().map(|s| Server::new(s.addr)).collect();
                servers.extend(self.config.stun.iter().map(|&a| Server::new(a)));
                self.seeds = seeds;
                self.start_probe(servers, ctx);
            }
            Err(e) => self.fatal(e.to_string()),
        }
    }
}

impl Handler<Emitted<Result<NatReport, ProbeError>>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(result): Emitted<Result<NatReport, ProbeError>>, _: &mut Context<Self>) {
        let report = match result {
            Ok(report) => report,
            Err(e) => return self.fatal(format!("NAT probing failed: {e}")),
        };
        self.nat = Some(report);
        let public = report.nat_type() == NatType::Public;
        if public && self.config.serve == Serve::Auto {
            self.serve();
        }
        let listen = self.locals.clone();
        self.emit(NodeEvent::Ready { peer_id: self.config.identity.peer_id(), listen, public, nat: Some(report) });
        if self.config.register {
            let record = self.signed_record();
            let introducers: Vec<SocketAddr> = self.seeds.iter().filter(|s| s.introducer).map(|s| s.addr).collect();
            self.registrations.do_send(Call::new(move |r: &mut Registrations, now| {
                for introducer in introducers {
                    r.add(now, introducer, record.clone());
                }
            }));
        }
    }
}

impl Handler<Emitted<(SocketAddr, registration::Event)>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted((introducer, event)): Emitted<(SocketAddr, registration::Event)>, _: &mut Context<Self>) {
        use registration::Event;
        match event {
            Event::Registered { observed } => {
                self.registered.insert(introducer);
                self.emit(NodeEvent::Registered { introducer, observed });
                for peer in std::mem::take(&mut self.waiting) {
                    self.ask_introduction(peer);
                }
            }
            Event::Unreachable => {
                self.registered.remove(&introducer);
                self.emit(NodeEvent::IntroducerUnreachable { introducer });
                if self.registered.is_empty() {
                    for peer in std::mem::take(&mut self.waiting) {
                        let reason = format!("introducer {introducer} did not answer our registration");
                        self.emit(NodeEvent::ConnectFailed { peer, reason });
                    }
                }
            }
            Event::Introduced(introduced) => {
                let Some(nat) = self.nat else { return };
                let peer = introduced.peer.peer_id;
                let initiator = introduced.initiator;
                let punch = self.punch.send(Call::new(move |a: &mut Attempts, now| a.start(now, &nat, *introduced)));
                let events = self.events.clone();
                actix::spawn(async move {
                    if let Ok(Err(unpunchable)) = punch.await {
                        if initiator {
                            let _ = events.send(NodeEvent::ConnectFailed { peer, reason: unpunchable.to_string() });
                        } else {
                            tracing::warn!(%peer, "{unpunchable}");
                        }
                    }
                });
            }
            Event::IntroduceFailed { target, reason } => {
                self.asked.remove(&target);
                self.emit(NodeEvent::ConnectFailed { peer: target, reason });
            }
        }
    }
}

impl Handler<Emitted<punch::Event>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(event): Emitted<punch::Event>, _: &mut Context<Self>) {
        match event {
            punch::Event::Connected { peer, remote, path, strategy, probes, elapsed } => {
                let connect_ms = self.asked.remove(&peer).map_or(millis(elapsed), |t| millis(t.elapsed()));
                self.paths.insert(peer, path);
                self.sessions.do_send(Call::new(move |s: &mut Sessions, now| s.open(now, peer, remote, path, strategy)));
                self.emit(NodeEvent::Connected { peer, remote, path, strategy, connect_ms, probes });
            }
            punch::Event::Failed { peer, reason } => {
                if self.asked.remove(&peer).is_some() {
                    self.emit(NodeEvent::ConnectFailed { peer, reason });
                } else {
                    tracing::info!(%peer, "{reason}");
                }
            }
        }
    }
}

impl Handler<Emitted<(PeerId, session::Event)>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted((peer, event)): Emitted<(PeerId, session::Event)>, _: &mut Context<Self>) {
        let path = self.paths.get(&peer).copied().unwrap_or(Path::Direct);
        let event = match event {
            session::Event::Pong { seq, rtt } => NodeEvent::Pong { peer, seq, rtt_ms: millis(rtt), path },
            session::Event::Data(payload) => NodeEvent::Data { peer, payload },
            session::Event::Closed { reason } => {
                self.paths.remove(&peer);
                NodeEvent::Disconnected { peer, reason }
            }
        };
        self.emit(event);
    }
}

impl Handler<Emitted<broker::Event>> for NodeActor {
    type Result = ();
    fn handle(&mut self, Emitted(event): Emitted<broker::Event>, _: &mut Context<Self>) {
        match event {
            broker::Event::Registered { peer, addr } => self.emit(NodeEvent::PeerRegistered { peer, addr }),
            broker::Event::Introduced { requester, target } => self.emit(NodeEvent::Introduced { requester, target }),
            broker::Event::Expired { peer } => tracing::info!(%peer, "registration expired"),
        }
    }
}

impl Handler<Command> for NodeActor {
    type Result = ();
    fn handle(&mut self, command: Command, ctx: &mut Context<Self>) {
        match command {
            Command::Connect(peer) if self.registered.is_empty() => self.waiting.push(peer),
            Command::Connect(peer) => self.ask_introduction(peer),
            Command::Ping(peer) => self.sessions.do_send(Call::new(move |s: &mut Sessions, now| {
                let _ = s.ping(now, &peer);
            })),
            Command::Send(peer, payload) => self.sessions.do_send(Call::new(move |s: &mut Sessions, now| {
                if let Err(e) = s.send(now, &peer, &payload) {
                    tracing::warn!(%peer, "not sent: {e}");
                }
            })),
            Command::Stats => {
                let socket = self.socket.send(socket::GetStats);
                let broker = self.broker.send(Call::new(|b: &mut Broker, _| b.stats()));
                let punch = self.punch.send(Call::new(|a: &mut Attempts, _| a.dropped_unknown_nonce));
                let sessions = self.sessions.send(Call::new(|s: &mut Sessions, _| s.dropped_unknown_source));
                let events = self.events.clone();
                ctx.spawn(
                    async move {
                        let (Ok(s), Ok(b), Ok(p), Ok(x)) = (socket.await, broker.await, punch.await, sessions.await) else { return };
                        let stats = serde_json::json!({
                            "received": s.received, "sent": s.sent,
                            "dropped_malformed": s.dropped_malformed, "dropped_unrouted": s.dropped_unrouted,
                            "dropped_overload": s.dropped_overload, "send_errors": s.send_errors,
                            "dropped_punch_unknown_nonce": p, "dropped_session_unknown_source": x,
                            "broker": {
                                "registered": b.registered, "refreshed": b.refreshed, "challenged": b.challenged,
                                "introduced": b.introduced, "unknown_target": b.unknown_target,
                                "dropped_bad_signature": b.dropped_bad_signature, "dropped_unregistered": b.dropped_unregistered,
                                "dropped_rate_limited": b.dropped_rate_limited,
                            },
                        });
                        let _ = events.send(NodeEvent::Stats(stats));
                    }
                    .into_actor(self),
                );
            }
        }
    }
}
