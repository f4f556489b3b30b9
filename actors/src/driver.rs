//! The one actor that drives every role's machine: datagrams, commands and timers in,
//! datagrams and events out. A module's "actor" is this driver around its machine, so
//! actors stay as thin as the design asks and every decision stays testable without I/O.
//!
//! What passes between roles is uniform: each role takes its own [`Protocol::Command`]s
//! and reports its own [`Protocol::Event`]s. The node's composition (`introducer_node`'s
//! `core`) decides which command follows which event; its drivers — this actor system, or
//! the simulator calling the machines directly — carry them out in a few generic lines.

use crate::socket::{self, Inbound, SocketActor};
use crate::Transmit;
use actix::prelude::*;
use std::time::Instant;

/// A sans-I/O role machine that takes decoded datagrams from the socket actor.
pub trait Protocol: Unpin + 'static {
    /// What the role reports to the node.
    type Event: Send + 'static;
    /// What the node may tell the role to do.
    type Command: Send + 'static;
    fn handle_inbound(&mut self, inbound: Inbound);
    fn handle_command(&mut self, now: Instant, command: Self::Command);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn poll_event(&mut self) -> Option<Self::Event>;
    fn poll_timeout(&self) -> Option<Instant>;
}

/// A command for a role's actor.
#[derive(Debug)]
pub struct Deliver<C>(pub C);

impl<C> Message for Deliver<C> {
    type Result = ();
}

/// A query run on the machine (with the current time); answers its result. For reading
/// counters and state, never for protocol decisions: those go through [`Deliver`]s.
pub struct Call<P, R>(Query<P, R>);

type Query<P, R> = Box<dyn FnOnce(&mut P, Instant) -> R + Send>;

impl<P, R> Call<P, R> {
    pub fn new(f: impl FnOnce(&mut P, Instant) -> R + Send + 'static) -> Self {
        Call(Box::new(f))
    }
}

impl<P: 'static, R: 'static> Message for Call<P, R> {
    type Result = R;
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Tick;

/// Output is waiting in the machine (queued outside the mailbox, by a
/// [`crate::socket::FastPath`]): send it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// A machine shared with a [`crate::socket::FastPath`] on the same thread: the actor drives
/// it as it would own it.
impl<P: Protocol> Protocol for std::rc::Rc<std::cell::RefCell<P>> {
    type Event = P::Event;
    type Command = P::Command;
    fn handle_inbound(&mut self, inbound: Inbound) {
        self.borrow_mut().handle_inbound(inbound)
    }
    fn handle_command(&mut self, now: Instant, command: Self::Command) {
        self.borrow_mut().handle_command(now, command)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.borrow_mut().handle_timeout(now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.borrow_mut().poll_transmit()
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        self.borrow_mut().poll_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.borrow().poll_timeout()
    }
}

/// Where a role's events go (the node actor, wrapped in its own report type).
pub type Sink<E> = Box<dyn Fn(E)>;

pub struct MachineActor<P: Protocol> {
    machine: P,
    socket: Addr<SocketActor>,
    events: Sink<P::Event>,
    timer: Option<(Instant, SpawnHandle)>,
}

impl<P: Protocol> MachineActor<P> {
    /// Starts the actor; its events go to `events`.
    pub fn start(machine: P, socket: Addr<SocketActor>, events: impl Fn(P::Event) + 'static) -> Addr<Self> {
        Actor::create(|ctx: &mut Context<Self>| {
            ctx.set_mailbox_capacity(socket::MAILBOX);
            let mut actor = MachineActor { machine, socket, events: Box::new(events), timer: None };
            actor.flush(ctx);
            actor
        })
    }

    /// Sends what the machine queued, forwards its events, and re-arms the one timer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        while let Some(t) = self.machine.poll_transmit() {
            self.socket.do_send(socket::Send(t));
        }
        while let Some(e) = self.machine.poll_event() {
            (self.events)(e);
        }
        let deadline = self.machine.poll_timeout();
        if self.timer.as_ref().map(|(at, _)| *at) == deadline {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = deadline {
            // A due deadline runs on the next turn of the mailbox: tokio's timer wheel
            // would round even a zero delay up to its 1 ms tick.
            let handle = match at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                Some(delay) => ctx.notify_later(Tick, delay),
                None => ctx.spawn(actix::fut::ready(()).map(|(), act: &mut Self, ctx| act.handle(Tick, ctx))),
            };
            self.timer = Some((at, handle));
        }
    }
}

impl<P: Protocol> Actor for MachineActor<P> {
    type Context = Context<Self>;
}

impl<P: Protocol> Handler<Inbound> for MachineActor<P> {
    type Result = ();
    fn handle(&mut self, inbound: Inbound, ctx: &mut Context<Self>) {
        self.machine.handle_inbound(inbound);
        self.flush(ctx);
    }
}

impl<P: Protocol> Handler<Deliver<P::Command>> for MachineActor<P> {
    type Result = ();
    fn handle(&mut self, Deliver(command): Deliver<P::Command>, ctx: &mut Context<Self>) {
        self.machine.handle_command(Instant::now(), command);
        self.flush(ctx);
    }
}

impl<P: Protocol> Handler<Wake> for MachineActor<P> {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

impl<P: Protocol> Handler<Tick> for MachineActor<P> {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.timer = None;
        self.machine.handle_timeout(Instant::now());
        self.flush(ctx);
    }
}

impl<P: Protocol, R: 'static> Handler<Call<P, R>> for MachineActor<P> {
    type Result = MessageResult<Call<P, R>>;
    fn handle(&mut self, Call(f): Call<P, R>, ctx: &mut Context<Self>) -> MessageResult<Call<P, R>> {
        let result = f(&mut self.machine, Instant::now());
        self.flush(ctx);
        MessageResult(result)
    }
}
