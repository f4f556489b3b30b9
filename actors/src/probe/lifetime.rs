//! How long an idle mapping lives on this node's NAT: RFC 5780 §4.6 binding lifetime
//! discovery. Socket X maps itself at a STUN server and goes quiet; after T, socket Y asks
//! the server to answer to X's public port (RESPONSE-PORT, same public IP). The answer
//! reaches X only if X's mapping outlived T.
//!
//! T doubles from [`FIRST_TEST`] while mappings survive, up to [`LONGEST_TEST`] (keepalives
//! every 15 s need to know no more); once one dies it halves, down to [`SHORTEST_TEST`],
//! until one survives. The node then keeps its mappings alive within what survived. A
//! mapping counts as dead only if it dies twice at the same T: once could be a NAT that
//! forgot everything (`conntrack -F`) or a server that went away, and a server that went
//! away answers the fresh mapping no more, which ends the measurement with no finding.

use crate::backoff::Backoff;
use crate::{Machine, SocketId, Transmit};
use introducer_proto::stun::{Class, Message, TransactionId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const FIRST_TEST: Duration = Duration::from_secs(4);
pub const LONGEST_TEST: Duration = Duration::from_secs(32);
pub const SHORTEST_TEST: Duration = Duration::from_secs(1);
/// Socket X, whose mapping is tested, and socket Y, which asks for the answer to X.
pub const KEEPER: SocketId = SocketId(1);
pub const ASKER: SocketId = SocketId(2);
/// Transmissions per request, this far apart: an unanswered ask means a dead mapping only
/// after all of them (a lost datagram is not a short lifetime).
const TRIES: u32 = 4;
const RTO: Duration = Duration::from_millis(400);

/// What the tests found: mappings idle `at_least` survived, idle `below` did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimeReport {
    pub at_least: Option<Duration>,
    pub below: Option<Duration>,
}

impl LifetimeReport {
    /// How often to send on a mapping to keep it: `default` unless the NAT forgets
    /// sooner, then three quarters of the longest idle time that survived (half the
    /// shortest that did not, if none survived).
    pub fn keepalive(&self, default: Duration) -> Duration {
        match (self.at_least, self.below) {
            (_, None) => default,
            (Some(alive), Some(_)) => (alive * 3 / 4).min(default),
            (None, Some(dead)) => (dead / 2).min(default),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// X sends a Binding request to learn (and open) its mapping.
    Map,
    /// X stays quiet until then.
    Idle {
        until: Instant,
        mapped: SocketAddr,
    },
    /// Y asks for an answer to `mapped`.
    Ask {
        mapped: SocketAddr,
    },
    Done,
}

pub struct Lifetime {
    server: SocketAddr,
    rng: StdRng,
    step: Step,
    /// The idle time under test.
    test: Duration,
    report: LifetimeReport,
    /// The request in flight: its id, transmissions so far, when to retransmit.
    txn: Option<(TransactionId, Backoff, Instant)>,
    out: VecDeque<Transmit>,
    /// The last ask at this idle time went unanswered: one dead test may be a NAT that was
    /// flushed or a server that went away, so the same idle time is tested once more.
    confirming: bool,
    /// False when the server stopped answering X: nothing was learned.
    pub gave_up: bool,
}

impl Lifetime {
    pub fn new(server: SocketAddr, now: Instant, seed: u64) -> Self {
        let mut lifetime = Lifetime {
            server,
            rng: StdRng::seed_from_u64(seed),
            step: Step::Map,
            test: FIRST_TEST,
            report: LifetimeReport { at_least: None, below: None },
            txn: None,
            out: VecDeque::new(),
            confirming: false,
            gave_up: false,
        };
        lifetime.send(now);
        lifetime
    }

    /// The finding, once the tests are over (`None` before, or if the server went away).
    pub fn result(&self) -> Option<LifetimeReport> {
        matches!(self.step, Step::Done).then_some(self.report).filter(|_| !self.gave_up)
    }

    /// (Re)sends the current step's request.
    fn send(&mut self, now: Instant) {
        let (socket, response_port) = match self.step {
            Step::Map => (KEEPER, None),
            Step::Ask { mapped } => (ASKER, Some(mapped.port())),
            Step::Idle { .. } | Step::Done => return,
        };
        let (id, mut backoff) = match self.txn {
            Some((id, backoff, _)) => (id, backoff),
            None => (self.rng.gen(), Backoff::fixed(RTO).give_up_after(TRIES)),
        };
        let at = backoff.next(now);
        self.txn = Some((id, backoff, at));
        let payload = Message { response_port, ..Message::binding_request(id) }.encode();
        self.out.push_back(Transmit { socket, dst: self.server, payload });
    }

    /// The test of `self.test` is over: on to the next idle time, or done.
    fn concluded(&mut self, now: Instant, survived: bool) {
        let t = self.test;
        self.confirming = false;
        if survived {
            self.report.at_least = Some(t);
        } else {
            self.report.below = Some(t);
        }
        let next = match (survived, self.report.below) {
            (true, None) if t < LONGEST_TEST => Some(t * 2),
            (false, _) if self.report.at_least.is_none() && t > SHORTEST_TEST => Some(t / 2),
            _ => None,
        };
        tracing::debug!(idle = ?t, survived, ?next, "mapping lifetime test");
        self.txn = None;
        match next {
            Some(t) => {
                self.test = t;
                self.step = Step::Map;
                self.send(now);
            }
            None => self.step = Step::Done,
        }
    }
}

impl Machine for Lifetime {
    fn handle_datagram(&mut self, now: Instant, socket: SocketId, src: SocketAddr, datagram: &[u8]) {
        let Ok(m) = Message::decode(datagram) else { return };
        let ours = self.txn.is_some_and(|(id, ..)| id == m.transaction_id);
        if !ours || src != self.server || m.class != Class::SuccessResponse || socket != KEEPER {
            return;
        }
        match self.step {
            Step::Map => {
                let Some(mapped) = m.xor_mapped_address.or(m.mapped_address) else { return };
                self.txn = None;
                self.step = Step::Idle { until: now + self.test, mapped };
            }
            // The answer Y asked for reached X: its mapping outlived the idle time.
            Step::Ask { .. } => self.concluded(now, true),
            Step::Idle { .. } | Step::Done => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Step::Idle { until, mapped } = self.step {
            if now >= until {
                self.step = Step::Ask { mapped };
                self.send(now);
            }
            return;
        }
        let Some((_, backoff, at)) = self.txn else { return };
        if now < at {
            return;
        }
        match self.step {
            _ if !backoff.exhausted() => self.send(now),
            // The same idle time again, from a fresh mapping: if the server is gone, the
            // new mapping gets no answer either and nothing is concluded.
            Step::Ask { .. } if !self.confirming => {
                self.confirming = true;
                self.txn = None;
                self.step = Step::Map;
                self.send(now);
            }
            Step::Ask { .. } => self.concluded(now, false),
            _ => {
                self.gave_up = true;
                self.step = Step::Done;
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.step {
            Step::Idle { until, .. } => Some(until),
            Step::Done => None,
            _ => self.txn.map(|(_, _, at)| at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "198.51.100.1:3478";

    /// Plays the server and a NAT whose mappings live `lifetime`: answers X's requests, and
    /// Y's asks only when X has sent within `lifetime`.
    fn measure(lifetime: Duration) -> (Option<LifetimeReport>, Duration) {
        measure_in(lifetime, None, None)
    }

    /// ...where, besides, the server answers nothing from `server_gone` on, and the NAT
    /// forgets X's mapping just before the ask datagram number `flushed_at_ask` (from 0).
    fn measure_in(
        lifetime: Duration,
        server_gone: Option<Duration>,
        flushed_at_ask: Option<u32>,
    ) -> (Option<LifetimeReport>, Duration) {
        let server: SocketAddr = SERVER.parse().unwrap();
        let mapped: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let start = Instant::now();
        let mut now = start;
        let mut l = Lifetime::new(server, now, 1);
        let (mut x_sent, mut asks, mut flushed) = (now, 0, false);
        for _ in 0..10_000 {
            while let Some(t) = l.poll_transmit() {
                if server_gone.is_some_and(|gone| now - start >= gone) {
                    continue;
                }
                let request = Message::decode(&t.payload).unwrap();
                let answer = Message::binding_success(request.transaction_id, mapped).encode();
                match t.socket {
                    KEEPER => {
                        (x_sent, flushed) = (now, false);
                        l.handle_datagram(now, KEEPER, server, &answer);
                    }
                    _ => {
                        assert_eq!(request.response_port, Some(mapped.port()));
                        // Gone until X maps itself again.
                        flushed |= flushed_at_ask == Some(asks);
                        asks += 1;
                        if now - x_sent < lifetime && !flushed {
                            l.handle_datagram(now, KEEPER, server, &answer);
                        }
                    }
                }
            }
            let Some(at) = l.poll_timeout() else { break };
            now = at;
            l.handle_timeout(now);
        }
        (l.result(), now - start)
    }

    /// A NAT flushed once during the tests, or a server that goes away mid-way, must not
    /// leave the node with a short keepalive for good (the audit saw 3 s for life).
    #[test]
    fn a_flushed_nat_or_a_vanished_server_does_not_shorten_the_lifetime() {
        let s = Duration::from_secs;
        let long_lived = Some(LifetimeReport { at_least: Some(s(32)), below: None });
        assert_eq!(measure_in(s(120), None, Some(1)).0, long_lived, "one flush is confirmed away");
        assert_eq!(measure_in(s(120), Some(s(10)), None).0, None, "the server went away: no finding");
        // A NAT that really forgets after 3 s still says so.
        let short = Some(LifetimeReport { at_least: Some(s(2)), below: Some(s(4)) });
        assert_eq!(measure_in(s(3), None, Some(0)).0, short);
    }

    /// Whenever the server goes away, the measurement it interrupted finds nothing: it is
    /// never cut short into a finding (a NAT that keeps mappings for minutes is not told
    /// to keep them alive every 3 s because the introducer died 5 s into the tests).
    #[test]
    fn a_measurement_the_server_interrupts_is_discarded() {
        let s = Duration::from_secs;
        let complete = measure(s(120));
        for gone in (0..80_000).step_by(250).map(Duration::from_millis) {
            let (report, _) = measure_in(s(120), Some(gone), None);
            assert!(report.is_none() || gone >= complete.1, "server gone after {gone:?}: {report:?}");
        }
    }

    #[test]
    fn idle_times_double_while_mappings_live_and_halve_after_one_dies() {
        let s = Duration::from_secs;
        let (report, took) = measure(s(120));
        assert_eq!(report, Some(LifetimeReport { at_least: Some(s(32)), below: None }));
        assert_eq!(report.unwrap().keepalive(s(15)), s(15));
        assert!(took < s(4 + 8 + 16 + 32 + 4), "{took:?}");

        let (report, _) = measure(s(3));
        assert_eq!(report, Some(LifetimeReport { at_least: Some(s(2)), below: Some(s(4)) }));
        assert_eq!(report.unwrap().keepalive(s(15)), Duration::from_millis(1500));

        let (report, _) = measure(s(20));
        assert_eq!(report, Some(LifetimeReport { at_least: Some(s(16)), below: Some(s(32)) }));
        assert_eq!(report.unwrap().keepalive(s(15)), s(12));

        let (report, _) = measure(Duration::from_millis(500));
        assert_eq!(report, Some(LifetimeReport { at_least: None, below: Some(s(1)) }));
    }

    #[test]
    fn a_server_that_stops_answering_teaches_nothing() {
        let mut l = Lifetime::new(SERVER.parse().unwrap(), Instant::now(), 1);
        let mut sent = 0;
        while let Some(at) = l.poll_timeout() {
            sent += std::iter::from_fn(|| l.poll_transmit()).count();
            l.handle_timeout(at);
        }
        assert_eq!((sent, l.result()), (TRIES as usize, None));
    }
}
