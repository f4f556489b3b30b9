//! The NAT-probing actor: answers every STUN Binding request (the server side each node
//! runs) and, when asked, classifies this node's own NAT with a [`Probe`].
//!
//! The probe numbers its extra sockets 1..=n; here they live at [`PROBE_SOCKETS`]+i so
//! they never collide with the RFC 5780 alternate sockets of the server side.

use super::{LocalSockets, Probe, ProbeConfig, ProbeError, Responder};
use crate::driver::{MachineActor, Protocol};
use crate::nat::NatReport;
use crate::socket::{Inbound, Payload};
use crate::{Machine, SocketId, Transmit};
use std::collections::VecDeque;
use std::time::Instant;

pub type ProbeActor = MachineActor<NatProbing>;

/// Where the probe's extra sockets start in the node's socket numbering.
pub const PROBE_SOCKETS: u16 = 100;

/// The node's socket for the probe's socket `i`.
pub fn probe_socket(i: u16) -> SocketId {
    if i == 0 {
        SocketId::PRIMARY
    } else {
        SocketId(PROBE_SOCKETS + i)
    }
}

pub struct NatProbing {
    responder: Option<Responder>,
    probe: Option<Probe>,
    answers: VecDeque<Transmit>,
    reported: bool,
    /// STUN requests this node did not answer (malformed, or nothing to answer with).
    pub unanswered: u64,
}

impl NatProbing {
    pub fn new(responder: Option<Responder>) -> Self {
        NatProbing { responder, probe: None, answers: VecDeque::new(), reported: false, unanswered: 0 }
    }

    /// Starts classifying; the driver has bound `Probe::sockets_needed` extra sockets
    /// at [`probe_socket`]`(1..)`.
    pub fn start(&mut self, now: Instant, config: ProbeConfig, locals: LocalSockets, seed: u64) {
        self.probe = Some(Probe::new(config, locals, now, seed));
        self.reported = false;
    }
}

impl Protocol for NatProbing {
    type Event = Result<NatReport, ProbeError>;

    fn handle_inbound(&mut self, inbound: Inbound) {
        let Payload::Stun(datagram) = inbound.payload else { return };
        if introducer_proto::stun::is_binding_request(&datagram) {
            match self.responder.as_ref().and_then(|r| r.respond(inbound.socket, inbound.src, &datagram)) {
                Some(answer) => self.answers.push_back(answer),
                None => self.unanswered += 1,
            }
            return;
        }
        let socket = match inbound.socket {
            SocketId::PRIMARY => SocketId::PRIMARY,
            SocketId(n) if n > PROBE_SOCKETS => SocketId(n - PROBE_SOCKETS),
            _ => return,
        };
        if let Some(probe) = &mut self.probe {
            probe.handle_datagram(inbound.now, socket, inbound.src, &datagram);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(probe) = &mut self.probe {
            probe.handle_timeout(now);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(answer) = self.answers.pop_front() {
            return Some(answer);
        }
        let mut t = self.probe.as_mut()?.poll_transmit()?;
        t.socket = probe_socket(t.socket.0);
        Some(t)
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        let result = self.probe.as_ref()?.result()?;
        (!std::mem::replace(&mut self.reported, true)).then_some(result)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.probe.as_ref()?.poll_timeout()
    }
}
