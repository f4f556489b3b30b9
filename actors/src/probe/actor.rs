//! The NAT-probing actor: answers every STUN Binding request (the server side each node
//! runs) and, when asked, classifies this node's own NAT with a [`Probe`]; behind a NAT it
//! then measures how long the NAT keeps idle mappings ([`Lifetime`]), in the background.
//!
//! The probe numbers its extra sockets 1..=n; here they live at [`PROBE_SOCKETS`]+i so
//! they never collide with the RFC 5780 alternate sockets of the server side.
//!
//! A STUN answer is larger than the smallest request (76 bytes for 20; standard clients
//! such as coturn's send bare 20-byte requests, so answers cannot be capped at the
//! request's size without breaking them). To keep a node from being a useful reflector
//! for spoofed requests, answers are rate-limited per source IP.

use super::lifetime::{ASKER, KEEPER};
use super::{Lifetime, LifetimeReport, LocalSockets, Probe, ProbeConfig, ProbeError, Responder};
use crate::bucket::TokenBucket;
use crate::driver::{MachineActor, Protocol};
use crate::nat::NatReport;
use crate::socket::{Inbound, Payload};
use crate::{Machine, SocketId, Transmit};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

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

/// STUN answers per second to one IP, sustained, and in a burst (a full probe, with its
/// retransmissions, needs a dozen).
const ANSWERS_PER_SEC: f64 = 20.0;
const ANSWER_BURST: f64 = 40.0;
/// Source IPs tracked at once; when full, idle ones are forgotten first.
const TRACKED_SOURCES: usize = 4096;

/// A token bucket per source IP.
#[derive(Debug, Default)]
struct AnswerBudget {
    by_ip: BTreeMap<IpAddr, TokenBucket>,
}

impl AnswerBudget {
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.by_ip.len() >= TRACKED_SOURCES && !self.by_ip.contains_key(&ip) {
            let idle = Duration::from_secs_f64(ANSWER_BURST / ANSWERS_PER_SEC);
            self.by_ip.retain(|_, bucket| now.saturating_duration_since(bucket.refilled()) < idle);
            if self.by_ip.len() >= TRACKED_SOURCES {
                return false;
            }
        }
        let bucket = self.by_ip.entry(ip).or_insert_with(|| TokenBucket::full(ANSWERS_PER_SEC, ANSWER_BURST, now));
        bucket.try_take(now, 1.0)
    }
}

/// What probing found.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeEvent {
    Classified(Result<NatReport, ProbeError>),
    /// Later, behind a NAT: how long it keeps idle mappings.
    Lifetime(LifetimeReport),
}

pub struct NatProbing {
    responder: Option<Responder>,
    budget: AnswerBudget,
    probe: Option<Probe>,
    /// Where the lifetime is measured, once classified (the first server; it needs two
    /// extra sockets).
    lifetime_server: Option<SocketAddr>,
    lifetime: Option<Lifetime>,
    seed: u64,
    answers: VecDeque<Transmit>,
    reported: bool,
    /// STUN requests this node did not answer (malformed, or nothing to answer with).
    pub unanswered: u64,
    /// STUN requests not answered because their source IP was over its budget.
    pub rate_limited: u64,
}

impl NatProbing {
    pub fn new(responder: Option<Responder>) -> Self {
        NatProbing {
            responder,
            budget: AnswerBudget::default(),
            probe: None,
            lifetime_server: None,
            lifetime: None,
            seed: 0,
            answers: VecDeque::new(),
            reported: false,
            unanswered: 0,
            rate_limited: 0,
        }
    }

    /// Starts classifying; the driver has bound `Probe::sockets_needed` extra sockets
    /// at [`probe_socket`]`(1..)`.
    pub fn start(&mut self, now: Instant, config: ProbeConfig, locals: LocalSockets, seed: u64) {
        let sockets = usize::from(ASKER.0.max(KEEPER.0));
        self.lifetime_server = config.servers.first().map(|s| s.addr).filter(|_| locals.extra.len() >= sockets);
        self.probe = Some(Probe::new(config, locals, now, seed));
        (self.seed, self.reported, self.lifetime) = (seed, false, None);
    }

    /// Once the probe has its result, and only behind a NAT, starts timing its mappings.
    fn check_classified(&mut self, now: Instant) {
        let Some(server) = self.lifetime_server else { return };
        let Some(result) = self.probe.as_ref().and_then(Probe::result) else { return };
        self.lifetime_server = None;
        if result.is_ok_and(|report| !report.no_nat) {
            self.lifetime = Some(Lifetime::new(server, now, self.seed));
        }
    }
}

/// What the node tells its NAT probing.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Classify our NAT against these servers, from the primary socket and the extra
    /// sockets bound at [`probe_socket`]`(1..)`; `seed` picks transaction ids.
    Start { config: ProbeConfig, locals: LocalSockets, seed: u64 },
}

impl Protocol for NatProbing {
    type Event = ProbeEvent;
    type Command = Command;

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Start { config, locals, seed } => self.start(now, config, locals, seed),
        }
    }

    fn handle_inbound(&mut self, inbound: Inbound) {
        let Payload::Stun(datagram) = inbound.payload else { return };
        if introducer_proto::stun::is_binding_request(&datagram) {
            if !self.budget.allow(inbound.src.ip(), inbound.now) {
                self.rate_limited += 1;
                return;
            }
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
        match (&mut self.lifetime, &mut self.probe) {
            (Some(lifetime), _) => lifetime.handle_datagram(inbound.now, socket, inbound.src, &datagram),
            (None, Some(probe)) => probe.handle_datagram(inbound.now, socket, inbound.src, &datagram),
            (None, None) => {}
        }
        self.check_classified(inbound.now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(probe) = &mut self.probe {
            probe.handle_timeout(now);
        }
        if let Some(lifetime) = &mut self.lifetime {
            lifetime.handle_timeout(now);
        }
        self.check_classified(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(answer) = self.answers.pop_front() {
            return Some(answer);
        }
        let probe = self.probe.as_mut().and_then(Probe::poll_transmit);
        let mut t = probe.or_else(|| self.lifetime.as_mut()?.poll_transmit())?;
        t.socket = probe_socket(t.socket.0);
        Some(t)
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        if let Some(result) = self.probe.as_ref().and_then(Probe::result).filter(|_| !self.reported) {
            self.reported = true;
            return Some(ProbeEvent::Classified(result));
        }
        // Reported once; the tests are over.
        let report = self.lifetime.as_ref()?.result()?;
        self.lifetime = None;
        Some(ProbeEvent::Lifetime(report))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let probe = self.probe.as_ref().and_then(Probe::poll_timeout);
        probe.into_iter().chain(self.lifetime.as_ref().and_then(Lifetime::poll_timeout)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use introducer_proto::stun::Message;

    #[test]
    fn stun_answers_are_rate_limited_per_source_ip() {
        let local = "198.51.100.1:3478".parse().unwrap();
        let mut probing = NatProbing::new(Some(Responder::new(super::super::Layout::single(SocketId::PRIMARY, local))));
        let request = Message::binding_request([7; 12]).encode();
        let now = Instant::now();
        let ask = |p: &mut NatProbing, src: &str, now| {
            let inbound = Inbound {
                now,
                socket: SocketId::PRIMARY,
                src: src.parse().unwrap(),
                len: request.len(),
                payload: Payload::Stun(request.clone()),
            };
            p.handle_inbound(inbound);
            std::iter::from_fn(|| Protocol::poll_transmit(p)).count()
        };
        let answered: usize = (0..100).map(|_| ask(&mut probing, "203.0.113.9:1000", now)).sum();
        assert_eq!(answered, ANSWER_BURST as usize, "a flood from one IP gets one burst");
        assert_eq!(probing.rate_limited, 100 - ANSWER_BURST as u64);
        assert_eq!(ask(&mut probing, "203.0.113.10:1000", now), 1, "other sources are not affected");
        assert_eq!(ask(&mut probing, "203.0.113.9:1000", now + Duration::from_secs(1)), 1, "the budget refills");
    }
}
