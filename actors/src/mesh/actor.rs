//! The mesh actor: [`MachineActor`] around a [`Mesh`].

use super::{Command, Event, Mesh};
use crate::driver::{MachineActor, Protocol};
use crate::socket::{Inbound, Payload};
use crate::Transmit;
use introducer_proto::pb::envelope::Kind;
use std::time::Instant;

pub type MeshActor = MachineActor<Mesh>;

impl Protocol for Mesh {
    type Event = Event;
    type Command = Command;
    fn handle_inbound(&mut self, inbound: Inbound) {
        if let Payload::Envelope(Kind::Gossip(gossip)) = inbound.payload {
            self.handle(inbound.now, inbound.src, *gossip);
        }
    }
    fn handle_command(&mut self, now: Instant, command: Command) {
        self.command(now, command)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Mesh::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Mesh::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Mesh::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Mesh::poll_timeout(self)
    }
}
