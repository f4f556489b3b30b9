//! The broker actor: [`MachineActor`] around a [`Broker`].

use super::{Broker, Command, Event};
use crate::driver::{MachineActor, Protocol};
use crate::socket::{Inbound, Payload};
use crate::Transmit;
use std::time::Instant;

pub type BrokerActor = MachineActor<Broker>;

impl Protocol for Broker {
    type Event = Event;
    type Command = Command;
    fn handle_inbound(&mut self, inbound: Inbound) {
        if let Payload::Envelope(kind) = inbound.payload {
            self.handle(inbound.now, inbound.socket, inbound.src, kind);
        }
    }
    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Serve => self.serving = true,
            Command::Homes { peer, homes } => self.set_homes(now, &peer, homes),
            Command::Members(members) => self.set_members(members),
            Command::Topic { topic, peers } => self.set_topic(now, topic, peers),
            Command::Me(record) => self.set_me(record),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        Broker::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Broker::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Broker::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Broker::poll_timeout(self)
    }
}
