//! The relay actor: [`MachineActor`] around a [`Relay`] (server side). The client side of
//! a circuit lives with the sessions it carries. Both are also [`Machine`]s over raw
//! datagrams, for the simulator's relay tests.

use super::client::RelayClient;
use super::server::{self, Relay};
use crate::driver::{MachineActor, Protocol};
use crate::socket::{Fast, FastPath, Inbound, Payload};
use crate::{Machine, SocketId, Transmit};
use introducer_proto::frame::{self, Decoded};
use introducer_proto::pb::envelope::Kind;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// The relay is shared with the socket's receive path, which forwards data itself
/// ([`Relay::take_fast`]); the actor does the rest.
pub type RelayActor = MachineActor<Rc<RefCell<Relay>>>;

impl FastPath for Rc<RefCell<Relay>> {
    fn take(&mut self, now: Instant, _socket: SocketId, src: SocketAddr, datagram: &mut [u8]) -> Fast {
        self.borrow_mut().take_fast(now, src, datagram)
    }
    fn has_output(&self) -> bool {
        self.borrow().has_output()
    }
}

/// The envelope kind of a datagram, if it is an introducer frame.
fn envelope(payload: &[u8]) -> Option<Kind> {
    match frame::decode(payload).ok()? {
        Decoded::Envelope(envelope) => envelope.kind,
        Decoded::Stun(_) => None,
    }
}

impl Protocol for Relay {
    type Event = server::Event;
    type Command = server::Command;
    fn handle_inbound(&mut self, inbound: Inbound) {
        if let Payload::Envelope(kind) = inbound.payload {
            self.handle(inbound.now, inbound.socket, inbound.src, kind);
        }
    }
    fn handle_command(&mut self, now: Instant, command: server::Command) {
        self.command(now, command)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Relay::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Relay::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<server::Event> {
        Relay::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Relay::poll_timeout(self)
    }
}

impl Machine for Relay {
    fn handle_datagram(&mut self, now: Instant, socket: SocketId, src: SocketAddr, payload: &[u8]) {
        match envelope(payload) {
            Some(kind) => self.handle(now, socket, src, kind),
            None => self.count_malformed(),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        Relay::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Relay::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Relay::poll_timeout(self)
    }
}

impl Machine for RelayClient {
    fn handle_datagram(&mut self, now: Instant, _socket: SocketId, src: SocketAddr, payload: &[u8]) {
        if let Some(kind) = envelope(payload) {
            self.handle(now, src, kind);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        RelayClient::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        RelayClient::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        RelayClient::poll_timeout(self)
    }
}
