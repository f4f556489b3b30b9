//! The socket actor: owns the node's UDP sockets and decides nothing. Datagrams are
//! classified by their first byte and envelope kind and handed to whichever actor
//! registered for that [`Route`]; outgoing [`Transmit`]s are sent as they come.
//!
//! Everything is bounded: mailboxes have a capacity and a full one drops (and counts)
//! rather than queueing without limit, so a flood costs CPU, not memory.

pub mod batch;
pub mod overflow;

use crate::driver::Wake;
use crate::{SocketId, Transmit};
use actix::prelude::*;
use batch::{Batch, Out, BATCH};
use introducer_proto::frame::{self, Decoded};
use introducer_proto::pb::envelope::Kind;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Who gets a kind of datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// STUN Binding requests, answered by every node.
    StunServer,
    /// STUN responses, for NAT probing.
    StunClient,
    /// Hello / ServerInfo, dial-back, and members listings (asked of a member after first
    /// contact, whose cookie proves the asker's address).
    Bootstrap,
    /// Register / IntroduceRequest: the introducer role.
    Broker,
    /// Answers from introducers to this node as a peer.
    Registration,
    Punch,
    Session,
    /// Circuit requests and data for this node as a relay.
    Relay,
    /// Membership gossip between public nodes.
    Mesh,
}

impl Route {
    pub const ALL: [Route; 9] = [
        Route::StunServer,
        Route::StunClient,
        Route::Bootstrap,
        Route::Broker,
        Route::Registration,
        Route::Punch,
        Route::Session,
        Route::Relay,
        Route::Mesh,
    ];
}

/// What a datagram is, once the socket actor has looked at it.
#[derive(Debug, Clone)]
pub enum Payload {
    Stun(Vec<u8>),
    Envelope(Kind),
}

/// A datagram for the actor that registered its route.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub now: Instant,
    pub socket: SocketId,
    pub src: SocketAddr,
    /// Size on the wire, for anti-amplification checks.
    pub len: usize,
    pub payload: Payload,
}

/// Send a datagram.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Send(pub Transmit);

/// What the node tells the socket role: the sockets other roles need beside the primary.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Option<Event>")]
pub enum Command {
    /// Bind these sockets on the primary socket's IP, at ports the OS picks; binding stops
    /// at the first that fails (the rest would fail too: out of ports or descriptors).
    Bind { purpose: Purpose, sockets: Vec<SocketId> },
    /// Close these sockets (those not bound are skipped).
    Unbind(Vec<SocketId>),
}

/// What a bind is for: the answer goes back to whoever needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// NAT probing's extra sockets.
    Probe,
    /// The birthday pool.
    Pool,
}

/// What the socket role reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The sockets bound for `purpose`, with their addresses (fewer than asked if binding
    /// failed part way).
    Bound { purpose: Purpose, sockets: Vec<(SocketId, SocketAddr)> },
}

/// Start handing a route's datagrams to `to`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRoute(pub Route, pub Recipient<Inbound>);

#[derive(Debug, Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub received: u64,
    pub sent: u64,
    pub dropped_malformed: u64,
    pub dropped_unrouted: u64,
    pub dropped_overload: u64,
    /// Datagrams the kernel dropped before we read them (a full receive buffer), as far
    /// as the datagrams read since tell (see [`overflow`]).
    pub dropped_kernel: u64,
    pub send_errors: u64,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Received {
    socket: SocketId,
    src: SocketAddr,
    datagram: Vec<u8>,
}

pub struct SocketActor {
    /// The task that receives on each socket (the sockets themselves are shared).
    receivers: HashMap<SocketId, JoinHandle<()>>,
    routes: HashMap<Route, Recipient<Inbound>>,
    stats: Stats,
    shared: Rc<Shared>,
}

/// What the receiving tasks share with the actor (one thread): what they count, the sockets
/// (a fast path may send on another socket than it read from), and the fast path.
#[derive(Default)]
struct Shared {
    /// Datagrams dropped because this actor's mailbox was full, and those the kernel says
    /// it dropped.
    mailbox_full: Cell<u64>,
    kernel: Cell<u64>,
    /// What the fast path took (read, sent on, failed to send).
    fast_received: Cell<u64>,
    fast_sent: Cell<u64>,
    fast_send_errors: Cell<u64>,
    sockets: RefCell<HashMap<SocketId, Rc<UdpSocket>>>,
    fast: RefCell<Option<FastHook>>,
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get() + n);
}

/// What a role's [`FastPath`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// Not for the fast path: route it as usual.
    Pass,
    /// Taken (counted, dropped, or answered through the role's actor).
    Done,
    /// Send the datagram, as the role rewrote it in place, on this socket to this address.
    Send(SocketId, SocketAddr),
}

/// A role that takes datagrams on the receive path itself, before they are copied or
/// routed, and decides about them synchronously: a relay forwards data this way, in the
/// batch it arrived in, with no mailbox between the datagram and its next hop. The role's
/// machine decides as it would behind its mailbox ([`Fast::Pass`] leaves the rest to it).
pub trait FastPath {
    fn take(&mut self, now: Instant, socket: SocketId, src: SocketAddr, datagram: &mut [u8]) -> Fast;
    /// Whether the role queued output (a refusal, an event) its actor must now send.
    fn has_output(&self) -> bool;
}

struct FastHook {
    path: Box<dyn FastPath>,
    /// The role's actor, woken when [`FastPath::has_output`].
    wake: Recipient<Wake>,
}

/// Where a role installs its [`FastPath`] (the socket actor shares it with its receiving
/// tasks; a handle, as it is not `Send`).
#[derive(Clone)]
pub struct FastSlot(Rc<Shared>);

impl FastSlot {
    pub fn install(&self, path: impl FastPath + 'static, wake: Recipient<Wake>) {
        *self.0.fast.borrow_mut() = Some(FastHook { path: Box::new(path), wake });
    }
}

/// What [`SocketActor::bind_some`] bound.
pub struct Bound {
    pub actor: Addr<SocketActor>,
    /// The bound sockets' local addresses, in binding order.
    pub locals: Vec<SocketAddr>,
    /// The optional socket that could not be bound (it and those after it are left out),
    /// and why, for the caller to report.
    pub skipped: Option<(SocketAddr, io::Error)>,
    /// Where a role installs its fast path.
    pub fast: FastSlot,
}

/// Mailbox size of every actor on the datagram path.
pub const MAILBOX: usize = 4096;

impl SocketActor {
    /// Binds the primary socket (and any others given) and starts receiving.
    pub fn bind(addrs: &[(SocketId, SocketAddr)]) -> io::Result<(Addr<SocketActor>, Vec<SocketAddr>)> {
        Self::bind_some(addrs, &[]).map(|b| (b.actor, b.locals))
    }

    /// Binds `required` (the primary first), then as many of `optional` as can be, in
    /// order up to the first that fails; starts receiving.
    pub fn bind_some(required: &[(SocketId, SocketAddr)], optional: &[(SocketId, SocketAddr)]) -> io::Result<Bound> {
        let mut skipped = None;
        let mut bound = Vec::new();
        let mut locals = Vec::new();
        for &(id, addr) in required {
            let socket = bind_udp(addr)?;
            locals.push(socket.local_addr()?);
            bound.push((id, Rc::new(socket)));
        }
        for &(id, addr) in optional {
            match bind_udp(addr).and_then(|socket| Ok((socket.local_addr()?, socket))) {
                Ok((local, socket)) => {
                    locals.push(local);
                    bound.push((id, Rc::new(socket)));
                }
                Err(e) => {
                    skipped = Some((addr, e));
                    break;
                }
            }
        }
        let shared = Rc::new(Shared::default());
        let fast = FastSlot(shared.clone());
        let actor = SocketActor::create(|ctx| {
            ctx.set_mailbox_capacity(MAILBOX);
            let mut actor =
                SocketActor { receivers: HashMap::new(), routes: HashMap::new(), stats: Stats::default(), shared };
            for (id, socket) in bound {
                actor.add(id, socket, ctx);
            }
            actor
        });
        Ok(Bound { actor, locals, skipped, fast })
    }

    fn bind_one(&mut self, id: SocketId, addr: SocketAddr, ctx: &mut Context<Self>) -> io::Result<SocketAddr> {
        let socket = Rc::new(bind_udp(addr)?);
        let local = socket.local_addr()?;
        self.add(id, socket, ctx);
        Ok(local)
    }

    fn add(&mut self, id: SocketId, socket: Rc<UdpSocket>, ctx: &mut Context<Self>) {
        let receiver = spawn_receiver(ctx.address(), id, socket.clone(), self.shared.clone());
        self.shared.sockets.borrow_mut().insert(id, socket);
        self.receivers.insert(id, receiver);
    }

    fn route(&mut self, socket: SocketId, src: SocketAddr, datagram: Vec<u8>) {
        let len = datagram.len();
        let Some((route, payload)) = classify(datagram) else {
            self.stats.dropped_malformed += 1;
            tracing::debug!(%src, len, "dropped malformed datagram");
            return;
        };
        let Some(to) = self.routes.get(&route) else {
            self.stats.dropped_unrouted += 1;
            return;
        };
        if to.try_send(Inbound { now: Instant::now(), socket, src, len, payload }).is_err() {
            self.stats.dropped_overload += 1;
        }
    }
}

/// Where a datagram goes and what it is; `None` for anything malformed. The simulator
/// routes with this too, so it delivers exactly what the real socket actor would.
pub fn classify(datagram: Vec<u8>) -> Option<(Route, Payload)> {
    match frame::decode(&datagram).ok()? {
        Decoded::Stun(_) if datagram.len() >= 20 => {
            // STUN class bits: both zero means request (RFC 8489 §5).
            let is_request = datagram[0] & 0x01 == 0 && datagram[1] & 0x10 == 0;
            Some((if is_request { Route::StunServer } else { Route::StunClient }, Payload::Stun(datagram)))
        }
        Decoded::Stun(_) => None,
        Decoded::Envelope(envelope) => {
            let kind = envelope.kind.expect("decode refuses empty envelopes");
            Some((route_of(&kind), Payload::Envelope(kind)))
        }
    }
}

/// The route of an introducer message kind.
pub fn route_of(kind: &Kind) -> Route {
    match kind {
        Kind::Hello(_)
        | Kind::ServerInfo(_)
        | Kind::DialBackRequest(_)
        | Kind::DialBackProbe(_)
        | Kind::MembersRequest(_)
        | Kind::MembersReply(_) => Route::Bootstrap,
        Kind::Register(_) | Kind::IntroduceRequest(_) | Kind::NewMapping(_) | Kind::TopicRequest(_) => Route::Broker,
        Kind::RegisterChallenge(_)
        | Kind::Registered(_)
        | Kind::Introduction(_)
        | Kind::IntroduceError(_)
        | Kind::TopicMembers(_) => Route::Registration,
        Kind::Punch(_) => Route::Punch,
        Kind::Handshake(_) | Kind::Sealed(_) => Route::Session,
        Kind::Gossip(_) => Route::Mesh,
        // Relay frames toward a relay go to its server side; answers and deliveries to the
        // client side, which lives with the sessions it carries.
        relayed if crate::relay::to_relay(relayed) == Some(true) => Route::Relay,
        _ => Route::Session,
    }
}

/// What each socket asks the kernel to buffer: a birthday pool's burst (or a flood) must
/// not overflow the default (about 200 kB) before the receiver reads it. The kernel caps
/// it at `net.core.rmem_max`; a refusal is not fatal.
const RECV_BUFFER: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(%addr, "receive buffer left as it was: {e}");
    }
    if let Err(e) = overflow::enable(&socket) {
        tracing::debug!(%addr, "kernel drops not counted: {e}");
    }
    UdpSocket::from_std(socket)
}

/// Reads the socket in batches: the fast path (if a role installed one) takes what it
/// wants, and what it sends on goes out in one batch too; the rest is copied and routed
/// through the actor.
fn spawn_receiver(
    actor: Addr<SocketActor>,
    socket: SocketId,
    udp: Rc<UdpSocket>,
    shared: Rc<Shared>,
) -> JoinHandle<()> {
    actix::spawn(async move {
        let mut batch = Batch::default();
        // This socket's count of kernel drops, as last seen.
        let mut seen = 0u32;
        let mut out: Vec<Out> = Vec::with_capacity(BATCH);
        loop {
            // ICMP errors surface here on Linux (ECONNREFUSED); they say nothing useful.
            if let Err(e) = udp.async_io(Interest::READABLE, || batch.recv(&*udp)).await {
                tracing::trace!(%e, "recv error");
                continue;
            }
            out.clear();
            if !take(&mut batch, &mut seen, &mut out, socket, &shared, &actor) {
                return;
            }
            add(&shared.fast_received, out.len() as u64);
            send_on(&batch, &mut out, socket, &udp, &shared).await;
            // The roles' actors run between batches: a flooded socket read batch after batch
            // in one turn would fill their mailboxes before they answer anything.
            tokio::task::yield_now().await;
        }
    })
}

/// Hands each datagram read to the fast path, or copies it to the actor: what is to be
/// sent on lands in `out`. False once the actor is gone.
fn take(
    batch: &mut Batch,
    seen: &mut u32,
    out: &mut Vec<Out>,
    socket: SocketId,
    shared: &Shared,
    actor: &Addr<SocketActor>,
) -> bool {
    let now = Instant::now();
    let mut fast = shared.fast.borrow_mut();
    for i in 0..batch.meta().len() {
        let meta = batch.meta()[i];
        if let Some(count) = meta.drops {
            add(&shared.kernel, u64::from(count.wrapping_sub(*seen)));
            *seen = count;
        }
        let verdict = match fast.as_mut() {
            Some(hook) => hook.path.take(now, socket, meta.src, batch.datagram(i)),
            None => Fast::Pass,
        };
        match verdict {
            Fast::Send(via, dst) => out.push(Out { via, index: i, dst }),
            Fast::Done => add(&shared.fast_received, 1),
            Fast::Pass => {
                let received = Received { socket, src: meta.src, datagram: batch.datagram(i).to_vec() };
                match actor.try_send(received) {
                    Ok(()) => {}
                    Err(SendError::Full(_)) => add(&shared.mailbox_full, 1),
                    Err(SendError::Closed(_)) => return false,
                }
            }
        }
    }
    // A full mailbox needs no wake: the actor flushes after its next message anyway.
    if let Some(hook) = fast.as_ref().filter(|hook| hook.path.has_output()) {
        let _ = hook.wake.try_send(Wake);
    }
    true
}

/// Sends what the fast path kept, socket by socket, waiting for room in a send buffer
/// rather than dropping (meanwhile nothing is read: the kernel drops and counts).
async fn send_on(batch: &Batch, out: &mut [Out], own: SocketId, udp: &Rc<UdpSocket>, shared: &Shared) {
    out.sort_by_key(|o| (o.via != own, o.via.0, o.index));
    for group in out.chunk_by(|a, b| a.via == b.via) {
        let via = group[0].via;
        let socket = if via == own { Some(udp.clone()) } else { shared.sockets.borrow().get(&via).cloned() };
        let Some(socket) = socket else {
            add(&shared.fast_send_errors, group.len() as u64);
            continue;
        };
        let mut done = 0;
        while done < group.len() {
            match socket.async_io(Interest::WRITABLE, || batch.send(&*socket, &group[done..])).await {
                Ok(sent) => {
                    add(&shared.fast_sent, sent as u64);
                    done += sent;
                }
                // sendmmsg fails only on its first datagram: count it and go past it.
                Err(e) => {
                    tracing::debug!(dst = %group[done].dst, %e, "send failed");
                    add(&shared.fast_send_errors, 1);
                    done += 1;
                }
            }
        }
    }
}

impl Actor for SocketActor {
    type Context = Context<Self>;
}

impl Handler<Received> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: Received, _: &mut Context<Self>) {
        self.stats.received += 1;
        self.route(msg.socket, msg.src, msg.datagram);
    }
}

impl Handler<Send> for SocketActor {
    type Result = ();
    fn handle(&mut self, Send(t): Send, _: &mut Context<Self>) {
        let Some(socket) = self.shared.sockets.borrow().get(&t.socket).cloned() else {
            self.stats.send_errors += 1;
            tracing::debug!(socket = t.socket.0, "send on an unknown socket");
            return;
        };
        self.stats.sent += 1;
        match socket.try_send_to(&t.payload, t.dst) {
            Ok(_) => {}
            // Tokio reports WouldBlock until a fresh socket's first readiness poll, and
            // when the send buffer is full: wait for the socket instead of dropping.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                actix::spawn(async move {
                    if let Err(e) = socket.send_to(&t.payload, t.dst).await {
                        tracing::debug!(dst = %t.dst, %e, "send failed");
                    }
                });
            }
            Err(e) => {
                self.stats.send_errors += 1;
                tracing::debug!(dst = %t.dst, socket = t.socket.0, %e, "send failed");
            }
        }
    }
}

impl Handler<Command> for SocketActor {
    type Result = Option<Event>;
    fn handle(&mut self, command: Command, ctx: &mut Context<Self>) -> Option<Event> {
        match command {
            Command::Bind { purpose, sockets } => {
                let ip = self.shared.sockets.borrow().get(&SocketId::PRIMARY)?.local_addr().ok()?.ip();
                let mut bound = Vec::new();
                for id in sockets {
                    match self.bind_one(id, SocketAddr::new(ip, 0), ctx) {
                        Ok(addr) => bound.push((id, addr)),
                        Err(e) => {
                            tracing::warn!(?purpose, "binding stops at {} sockets: {e}", bound.len());
                            break;
                        }
                    }
                }
                Some(Event::Bound { purpose, sockets: bound })
            }
            Command::Unbind(ids) => {
                for id in ids {
                    if let Some(receiver) = self.receivers.remove(&id) {
                        // The receiver holds the socket's last reference: it closes with it.
                        self.shared.sockets.borrow_mut().remove(&id);
                        receiver.abort();
                    }
                }
                None
            }
        }
    }
}

impl Handler<SetRoute> for SocketActor {
    type Result = ();
    fn handle(&mut self, SetRoute(route, to): SetRoute, _: &mut Context<Self>) {
        self.routes.insert(route, to);
    }
}

impl Handler<GetStats> for SocketActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> MessageResult<GetStats> {
        let shared = &self.shared;
        MessageResult(Stats {
            received: self.stats.received + shared.fast_received.get(),
            sent: self.stats.sent + shared.fast_sent.get(),
            send_errors: self.stats.send_errors + shared.fast_send_errors.get(),
            dropped_overload: self.stats.dropped_overload + shared.mailbox_full.get(),
            dropped_kernel: shared.kernel.get(),
            ..self.stats
        })
    }
}
