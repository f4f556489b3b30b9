//! The NAT-classifying client: a [`Machine`] that sends STUN Binding requests and concludes
//! a [`NatReport`]. The test sequence is described in [`super`].

use super::{canonical, server::full_answer_len, Server};
use crate::backoff::Backoff;
use crate::nat::{Allocation, Filtering, Mapping, NatReport};
use crate::{Machine, SocketId, Transmit};
use introducer_proto::stun::{self, ChangeRequest, Class, Message, TransactionId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How the probe behaves. [`ProbeConfig::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Tried in order for the first test; later ones also serve as a second IP for the
    /// mapping test when the first server has no alternate IP.
    pub servers: Vec<Server>,
    /// Port-allocation samples, one extra socket each (default 4).
    pub allocation_samples: u16,
    /// First retransmission timeout (default 100 ms); doubles after each transmission.
    pub rto: Duration,
    /// Transmissions per request before "no answer" is concluded (default 3).
    pub max_tries: u32,
    /// Transmissions for the mapping and allocation tests, sent to servers that already
    /// answered: silence there is loss, not information, and an unknown mapping would
    /// count an easy NAT as hard (default 6: 0.2 % lost at 20 % loss each way).
    pub max_tries_answered: u32,
    /// Largest |step| reported as sequential allocation (default 16).
    pub max_step: u16,
    /// Pad requests so that a full RFC 5780 answer is no larger than the request (default on).
    pub pad_requests: bool,
}

impl ProbeConfig {
    pub fn new(servers: Vec<Server>) -> Self {
        ProbeConfig {
            servers,
            allocation_samples: 4,
            rto: Duration::from_millis(100),
            max_tries: 3,
            max_tries_answered: 6,
            max_step: 16,
            pad_requests: true,
        }
    }
}

/// The local end of the probe's sockets, as bound by the driver.
///
/// The driver binds `Probe::sockets_needed(&config)` extra sockets, `SocketId(1)` to
/// `SocketId(n)`, on the same interface as the primary one (so they go through the same
/// NAT), to ephemeral ports. Fewer is allowed: with none, filtering runs from the primary
/// socket before the mapping tests and allocation is inferred from the primary socket's
/// mappings; with one, there are no allocation samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSockets {
    /// The primary socket's local address, with a concrete IP if the driver knows one. It
    /// decides `no_nat` (public endpoint == local endpoint). A socket bound to `0.0.0.0`/`::`
    /// should be given with the address the OS picks for outgoing traffic (e.g. learned from
    /// a connected UDP socket); an unspecified IP or `None` never counts as "no NAT".
    pub primary: Option<SocketAddr>,
    /// `extra[i]` is the local address of `SocketId(i + 1)`; only its port is used (to tell
    /// port-preserving allocation).
    pub extra: Vec<SocketAddr>,
}

/// Why probing failed altogether. Partial knowledge is a report with `None` fields instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("no STUN server configured")]
    NoServers,
    #[error("no STUN server answered")]
    NoServerAnswered,
}

/// Counters for what arrived and left; unexpected input is counted, never fatal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Requests sent for the first time.
    pub requests: u64,
    pub retransmissions: u64,
    /// Datagrams handed to the probe.
    pub received: u64,
    /// Answers that concluded a transaction (success or error).
    pub answers: u64,
    /// Error responses among them.
    pub errors: u64,
    /// Answers to a transaction already concluded (retransmission echoes, replays).
    pub duplicates: u64,
    /// STUN messages matching no transaction on the socket they arrived on, and
    /// non-responses.
    pub unmatched: u64,
    /// Datagrams that are not valid STUN, and success responses without a mapped address.
    pub garbage: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterTest {
    /// CHANGE-REQUEST ip+port: answered ⇒ endpoint-independent filtering.
    ChangeBoth,
    /// CHANGE-REQUEST port: answered ⇒ at most address-dependent filtering.
    ChangePort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Test I from the primary socket to `servers[index]`.
    First {
        server: usize,
    },
    /// A mapping test from the primary socket; `order` is the send order. `silent`: to a
    /// server that did not answer Test I (dead, or its answers lost), as the second IP of
    /// last resort.
    Mapping {
        order: usize,
        silent: bool,
    },
    Filter(FilterTest),
    /// Allocation sample `index` (0-based), from `SocketId(FIRST_ALLOC_SOCKET + index)`.
    Alloc {
        index: usize,
    },
}

#[derive(Debug, Clone)]
struct Txn {
    id: TransactionId,
    purpose: Purpose,
    socket: SocketId,
    dst: SocketAddr,
    change: Option<ChangeRequest>,
    padded: bool,
    payload: Vec<u8>,
    /// Transmissions so far, and the wait after the next one.
    backoff: Backoff,
    first_sent: Instant,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Answer { mapped: SocketAddr, src: SocketAddr, other: Option<SocketAddr> },
    Error(u16),
    Timeout,
}

/// What we learned from the first answering server.
#[derive(Debug, Clone, Copy)]
struct First {
    /// Its index in the configured servers.
    server: usize,
    addr: SocketAddr,
    /// Its alternate (OTHER-ADDRESS), if known and of the same family.
    alt: Option<SocketAddr>,
    m1: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestState {
    /// Not applicable with this server.
    NotRun,
    Pending,
    /// Answered from the changed address.
    Answered,
    /// No answer after every retransmission.
    Silent,
    /// Error, or answered from an address that shows the change was not honoured.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterPlan {
    /// No usable alternate address: filtering unknown.
    Unknown,
    /// Alternate IP and port: both tests.
    Full,
    /// Alternate port only (one-IP server): the change-port test alone.
    PortOnly,
}

#[derive(Debug, Clone, Copy)]
struct FilterState {
    plan: FilterPlan,
    both: TestState,
    port: TestState,
}

impl FilterState {
    fn plan(first: &First) -> Self {
        let a = first.addr;
        let plan = match first.alt {
            Some(alt) if alt.ip() != a.ip() && alt.port() != a.port() => FilterPlan::Full,
            Some(alt) if alt.ip() == a.ip() && alt.port() != a.port() => FilterPlan::PortOnly,
            _ => FilterPlan::Unknown,
        };
        let (both, port) = match plan {
            FilterPlan::Full => (TestState::Pending, TestState::Pending),
            FilterPlan::PortOnly => (TestState::NotRun, TestState::Pending),
            FilterPlan::Unknown => (TestState::NotRun, TestState::NotRun),
        };
        FilterState { plan, both, port }
    }

    fn concluded(&self) -> bool {
        match self.plan {
            FilterPlan::Unknown => true,
            FilterPlan::Full => {
                self.both == TestState::Answered || (self.both != TestState::Pending && self.port != TestState::Pending)
            }
            FilterPlan::PortOnly => self.port != TestState::Pending,
        }
    }

    fn result(&self) -> Option<Filtering> {
        use TestState::*;
        match self.plan {
            FilterPlan::Unknown => None,
            FilterPlan::Full => match (self.both, self.port) {
                (Answered, _) => Some(Filtering::EndpointIndependent),
                (Silent, Answered) => Some(Filtering::AddressDependent),
                (Silent, Silent) => Some(Filtering::AddressAndPortDependent),
                _ => None,
            },
            // Answered: endpoint-independent or address-dependent, which one is unknown.
            FilterPlan::PortOnly => (self.port == Silent).then_some(Filtering::AddressAndPortDependent),
        }
    }
}

/// The socket the filtering tests use when the driver provided it.
const FILTER_SOCKET: SocketId = SocketId(1);
/// The first allocation-sample socket.
const FIRST_ALLOC_SOCKET: u16 = 2;

/// NAT classification by STUN, as a sans-I/O machine. See [`super`] for the test sequence.
#[derive(Debug)]
pub struct Probe {
    config: ProbeConfig,
    locals: LocalSockets,
    rng: StdRng,
    rto: Duration,
    pad: bool,
    pending: Vec<Txn>,
    /// Concluded transactions, to tell duplicates from strangers.
    concluded: Vec<(TransactionId, SocketId)>,
    out: VecDeque<Transmit>,
    stats: ProbeStats,
    result: Option<Result<NatReport, ProbeError>>,
    /// The report as soon as the mapping and allocation tests are over, with filtering as
    /// far as known (see [`Probe::mapped`]).
    mapped: Option<NatReport>,

    first: Option<First>,
    mapping_started: bool,
    mappings_sent: usize,
    /// (send order, destination, mapped endpoint) of answered mapping tests, M1 included.
    observed: Vec<(usize, SocketAddr, SocketAddr)>,
    filter: Option<FilterState>,
    filter_sent: bool,
    alloc_started: bool,
    alloc_next: usize,
    /// (socket index, local port, mapped port) of answered allocation samples, in the
    /// order the answers came.
    samples: Vec<(usize, u16, u16)>,
}

impl Probe {
    /// Extra sockets (`SocketId(1..=n)`) the driver should bind before starting: one for
    /// filtering, one per allocation sample.
    pub fn sockets_needed(config: &ProbeConfig) -> u16 {
        config.allocation_samples.saturating_add(1)
    }

    /// Starts probing at `now`: the first request is ready in `poll_transmit`. `seed` feeds
    /// the transaction ids (pass `rand::random()` in production, a constant in tests).
    pub fn new(config: ProbeConfig, locals: LocalSockets, now: Instant, seed: u64) -> Self {
        let mut probe = Probe {
            rto: config.rto.max(Duration::from_millis(1)),
            pad: config.pad_requests,
            config,
            locals,
            rng: StdRng::seed_from_u64(seed),
            pending: Vec::new(),
            concluded: Vec::new(),
            out: VecDeque::new(),
            stats: ProbeStats::default(),
            result: None,
            mapped: None,
            first: None,
            mapping_started: false,
            mappings_sent: 0,
            observed: Vec::new(),
            filter: None,
            filter_sent: false,
            alloc_started: false,
            alloc_next: 0,
            samples: Vec::new(),
        };
        probe.try_server(now, 0);
        probe
    }

    /// `None` while probing; then the report, or why there is none.
    pub fn result(&self) -> Option<Result<NatReport, ProbeError>> {
        self.result.clone()
    }

    pub fn is_done(&self) -> bool {
        self.result.is_some()
    }

    /// The report as soon as the mapping and port-allocation tests are over — a few round
    /// trips — while the filtering tests may still wait for answers that a filtering NAT
    /// drops (their silence is concluded only after every retransmission, 700 ms): its
    /// `filtering` is what is known by then, usually `None`. Mapping and allocation are
    /// final, the same as in [`Probe::result`]'s report. `None` before.
    pub fn mapped(&self) -> Option<NatReport> {
        self.mapped
    }

    pub fn stats(&self) -> ProbeStats {
        self.stats
    }

    fn extra_sockets(&self) -> usize {
        self.locals.extra.len()
    }

    fn filter_socket(&self) -> SocketId {
        if self.extra_sockets() >= 1 {
            FILTER_SOCKET
        } else {
            SocketId::PRIMARY
        }
    }

    fn alloc_total(&self) -> usize {
        let available = self.extra_sockets().saturating_sub(usize::from(FIRST_ALLOC_SOCKET) - 1);
        available.min(usize::from(self.config.allocation_samples))
    }

    fn send(
        &mut self,
        now: Instant,
        purpose: Purpose,
        socket: SocketId,
        dst: SocketAddr,
        change: Option<ChangeRequest>,
        padded: bool,
    ) {
        let id: TransactionId = self.rng.gen();
        let mut msg = Message { change_request: change, ..Message::binding_request(id) };
        if padded {
            let target = full_answer_len(dst.is_ipv6());
            // PADDING's own header takes 4 bytes; its value stays a multiple of 4.
            msg.padding = target.saturating_sub(msg.encoded_len() + 4) & !3;
        }
        let payload = msg.encode();
        // Silence from a server that already answered is loss, not information: more tries.
        let max_tries = match purpose {
            Purpose::Mapping { silent: false, .. } | Purpose::Alloc { .. } => self.config.max_tries_answered,
            Purpose::Mapping { silent: true, .. } | Purpose::First { .. } | Purpose::Filter(_) => self.config.max_tries,
        };
        let mut backoff = Backoff::new(self.rto).give_up_after(max_tries.max(1));
        let deadline = backoff.next(now);
        self.out.push_back(Transmit { socket, dst, payload: payload.clone() });
        self.stats.requests += 1;
        self.pending.push(Txn {
            id,
            purpose,
            socket,
            dst,
            change,
            padded: padded && msg.padding > 0,
            payload,
            backoff,
            first_sent: now,
            deadline,
        });
    }

    /// Test I to `servers[index]`, or failure if there is none left.
    fn try_server(&mut self, now: Instant, index: usize) {
        match self.config.servers.get(index) {
            Some(server) => {
                let dst = server.addr;
                let pad = self.pad;
                self.send(now, Purpose::First { server: index }, SocketId::PRIMARY, dst, None, pad);
            }
            None => {
                self.result = Some(Err(if self.config.servers.is_empty() {
                    ProbeError::NoServers
                } else {
                    ProbeError::NoServerAnswered
                }));
                self.pending.clear();
            }
        }
    }

    /// Mapping-test destinations beyond A, in send order, each with whether it is a server
    /// that did not answer Test I: one with another IP, one with the same IP as another
    /// destination but another port.
    fn mapping_destinations(&self, first: &First) -> Vec<(SocketAddr, bool)> {
        let a = first.addr;
        let other_ip = |s: &&Server| s.addr.ip() != a.ip() && s.addr.is_ipv4() == a.is_ipv4();
        let servers = &self.config.servers;
        // Servers after A first. Those before it did not answer Test I, so one of them is
        // asked (with Test I's tries, not a mapping test's) only when no other server has
        // another IP: without a second IP the mapping stays unknown, which counts as hard,
        // and their silence may have been loss.
        let other_server = match servers.iter().skip(first.server + 1).find(other_ip) {
            Some(s) => Some((s, false)),
            None => servers.iter().take(first.server).find(other_ip).map(|s| (s, true)),
        };
        let mut dsts = Vec::new();
        match first.alt {
            Some(alt) if alt.ip() != a.ip() => {
                dsts.push((SocketAddr::new(alt.ip(), a.port()), false));
                if alt.port() != a.port() {
                    dsts.push((alt, false));
                }
            }
            Some(alt) => {
                // Same IP, another port: the port test against A itself.
                dsts.push((alt, false));
                dsts.extend(other_server.map(|(s, silent)| (s.addr, silent)));
            }
            None => {
                if let Some((s, silent)) = other_server {
                    dsts.push((s.addr, silent));
                    if let Some(o) = s.other.filter(|o| o.port() != s.addr.port()) {
                        // RFC 5780 servers listen on their alternate port at the primary IP.
                        dsts.push((SocketAddr::new(s.addr.ip(), o.port()), silent));
                    }
                }
            }
        }
        dsts
    }

    /// Starts whatever the results so far allow, and concludes when nothing is left.
    fn advance(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        let Some(first) = self.first else { return };
        if self.filter.is_none() {
            self.filter = Some(FilterState::plan(&first));
        }
        let filter_on_primary = self.filter_socket() == SocketId::PRIMARY;

        // Mapping tests open holes towards the alternate address on the primary socket, so
        // they wait for the filtering tests when those share the socket. They go first in
        // the burst otherwise, so that M1, M2, M3 are consecutive allocations of the NAT.
        let filter_done = self.filter.is_some_and(|f| f.concluded());
        if !self.mapping_started && (!filter_on_primary || filter_done) {
            self.mapping_started = true;
            for (dst, silent) in self.mapping_destinations(&first) {
                self.mappings_sent += 1;
                let order = self.mappings_sent;
                let pad = self.pad;
                self.send(now, Purpose::Mapping { order, silent }, SocketId::PRIMARY, dst, None, pad);
            }
        }

        if !self.filter_sent {
            self.filter_sent = true;
            self.send_filter_tests(now, &first);
        }

        if !self.alloc_started {
            self.alloc_started = true;
            if self.no_nat(&first) {
                // Nothing translates: nothing to sample.
                self.alloc_next = self.alloc_total();
            }
        }
        let sampling = self.pending.iter().any(|t| matches!(t.purpose, Purpose::Alloc { .. }));
        if !sampling && self.alloc_next < self.alloc_total() {
            let index = self.alloc_next;
            self.alloc_next += 1;
            let socket = SocketId(FIRST_ALLOC_SOCKET.saturating_add(index as u16));
            let pad = self.pad;
            self.send(now, Purpose::Alloc { index }, socket, first.addr, None, pad);
        }

        let mapped = self.mapping_started
            && self.alloc_next >= self.alloc_total()
            && self.pending.iter().all(|t| matches!(t.purpose, Purpose::Filter(_)));
        if mapped && self.mapped.is_none() {
            let filtering = self.filter.filter(FilterState::concluded).and_then(|f| f.result());
            self.mapped = Some(self.report(&first, filtering));
        }
        if mapped && self.filter.is_some_and(|f| f.concluded()) && self.pending.is_empty() {
            let filtering = self.filter.and_then(|f| f.result());
            self.result = Some(Ok(self.report(&first, filtering)));
        }
    }

    fn send_filter_tests(&mut self, now: Instant, first: &First) {
        let Some(filter) = self.filter else { return };
        let socket = self.filter_socket();
        let pad = self.pad;
        if filter.both == TestState::Pending {
            let change = ChangeRequest { change_ip: true, change_port: true };
            let purpose = Purpose::Filter(FilterTest::ChangeBoth);
            self.send(now, purpose, socket, first.addr, Some(change), pad);
        }
        if filter.port == TestState::Pending {
            let change = ChangeRequest { change_ip: false, change_port: true };
            let purpose = Purpose::Filter(FilterTest::ChangePort);
            self.send(now, purpose, socket, first.addr, Some(change), pad);
        }
    }

    fn no_nat(&self, first: &First) -> bool {
        self.locals.primary.is_some_and(|local| !local.ip().is_unspecified() && canonical(local) == canonical(first.m1))
    }

    fn on_outcome(&mut self, now: Instant, txn: Txn, outcome: Outcome) {
        if let (Outcome::Error(420), true) = (outcome, txn.padded) {
            // The server may not know PADDING (comprehension-required): ask again without,
            // and stop padding for the rest of the probe.
            self.pad = false;
            self.send(now, txn.purpose, txn.socket, txn.dst, txn.change, false);
            return;
        }
        match txn.purpose {
            Purpose::First { server } => match outcome {
                Outcome::Answer { mapped, other, .. } => {
                    if txn.backoff.tries() == 1 {
                        let rtt = now.saturating_duration_since(txn.first_sent);
                        self.rto = self.rto.max(rtt.saturating_mul(2));
                    }
                    let configured = self.config.servers.get(server).and_then(|s| s.other);
                    let alt = other
                        .or(configured)
                        .map(canonical)
                        .filter(|o| o.is_ipv4() == txn.dst.is_ipv4() && *o != txn.dst);
                    self.observed.push((0, txn.dst, canonical(mapped)));
                    self.first = Some(First { server, addr: txn.dst, alt, m1: mapped });
                }
                Outcome::Error(_) | Outcome::Timeout => self.try_server(now, server + 1),
            },
            Purpose::Mapping { order, .. } => {
                if let Outcome::Answer { mapped, .. } = outcome {
                    self.observed.push((order, txn.dst, canonical(mapped)));
                }
            }
            Purpose::Filter(test) => self.on_filter(test, outcome),
            Purpose::Alloc { index } => {
                if let Outcome::Answer { mapped, .. } = outcome {
                    let local = self.locals.extra.get(index + 1).map_or(0, SocketAddr::port);
                    self.samples.push((index, local, mapped.port()));
                }
            }
        }
    }

    fn on_filter(&mut self, test: FilterTest, outcome: Outcome) {
        let Some(first) = self.first else { return };
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        let state = match outcome {
            Outcome::Answer { src, .. } => {
                let src = canonical(src);
                let changed_ip = src.ip() != first.addr.ip();
                let changed_port = src.port() != first.addr.port();
                let honoured = match test {
                    FilterTest::ChangeBoth => changed_ip && changed_port,
                    FilterTest::ChangePort => changed_port && !changed_ip,
                };
                if honoured {
                    TestState::Answered
                } else {
                    TestState::Refused
                }
            }
            Outcome::Error(_) => TestState::Refused,
            Outcome::Timeout => TestState::Silent,
        };
        match test {
            FilterTest::ChangeBoth => filter.both = state,
            FilterTest::ChangePort => filter.port = state,
        }
        if filter.concluded() {
            // The other test no longer matters (EIF already proven): stop retransmitting it.
            let stale: Vec<_> = self
                .pending
                .iter()
                .filter(|t| matches!(t.purpose, Purpose::Filter(_)))
                .map(|t| (t.id, t.socket))
                .collect();
            self.pending.retain(|t| !matches!(t.purpose, Purpose::Filter(_)));
            self.concluded.extend(stale);
        }
    }

    /// The report from the mapping and allocation tests' results, with `filtering`.
    fn report(&self, first: &First, filtering: Option<Filtering>) -> NatReport {
        let no_nat = self.no_nat(first);
        let pairs: Vec<(SocketAddr, SocketAddr)> =
            self.observed.iter().map(|&(_, dst, mapped)| (dst, mapped)).collect();
        let mut mapping = classify_mapping(&pairs);
        if no_nat && mapping.is_none() {
            mapping = Some(Mapping::EndpointIndependent);
        }
        let allocation = if no_nat { Some(Allocation::Preserving) } else { self.infer_allocation(first, mapping) };
        NatReport { public_addr: first.m1, no_nat, mapping, filtering, allocation }
    }

    fn infer_allocation(&self, first: &First, mapping: Option<Mapping>) -> Option<Allocation> {
        let max_step = self.config.max_step;
        if self.samples.len() >= 2 {
            return classify_allocation(&in_socket_order(&self.samples), max_step);
        }
        let local = self.locals.primary.map_or(0, |l| l.port());
        if mapping == Some(Mapping::AddressAndPortDependent) {
            // Every mapping test made a new mapping: the primary socket's M1, M2, M3 (in send
            // order) are allocation samples too.
            let mut seq = self.observed.clone();
            seq.sort_by_key(|&(order, _, _)| order);
            let seq: Vec<(u16, u16)> = seq.iter().map(|&(_, _, m)| (local, m.port())).collect();
            if seq.len() >= 2 {
                return classify_allocation(&seq, max_step);
            }
        }
        match self.samples.first() {
            Some(&(_, local, mapped)) => classify_allocation(&[(local, mapped)], max_step),
            None => classify_allocation(&[(local, first.m1.port())], max_step),
        }
    }
}

impl Machine for Probe {
    fn handle_datagram(&mut self, now: Instant, socket: SocketId, src: SocketAddr, payload: &[u8]) {
        self.stats.received += 1;
        let msg = match Message::decode(payload) {
            Ok(msg) => msg,
            Err(_) => {
                self.stats.garbage += 1;
                return;
            }
        };
        if msg.method != stun::BINDING || !matches!(msg.class, Class::SuccessResponse | Class::ErrorResponse) {
            self.stats.unmatched += 1;
            return;
        }
        let key = (msg.transaction_id, socket);
        let Some(pos) = self.pending.iter().position(|t| (t.id, t.socket) == key) else {
            if self.concluded.contains(&key) {
                self.stats.duplicates += 1;
            } else {
                self.stats.unmatched += 1;
            }
            return;
        };
        let outcome = match msg.class {
            Class::ErrorResponse => Outcome::Error(msg.error_code.as_ref().map_or(0, |&(code, _)| code)),
            _ => match msg.xor_mapped_address.or(msg.mapped_address) {
                Some(mapped) => Outcome::Answer { mapped, src, other: msg.other_address },
                None => {
                    // Useless answer; keep waiting for a proper one.
                    self.stats.garbage += 1;
                    return;
                }
            },
        };
        self.stats.answers += 1;
        if matches!(outcome, Outcome::Error(_)) {
            self.stats.errors += 1;
        }
        let txn = self.pending.remove(pos);
        self.concluded.push(key);
        self.on_outcome(now, txn, outcome);
        self.advance(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        let mut expired = Vec::new();
        for txn in &mut self.pending {
            if txn.deadline > now {
                continue;
            }
            match txn.backoff.retry(now) {
                Some(deadline) => {
                    txn.deadline = deadline;
                    self.out.push_back(Transmit { socket: txn.socket, dst: txn.dst, payload: txn.payload.clone() });
                    self.stats.retransmissions += 1;
                }
                None => expired.push((txn.id, txn.socket)),
            }
        }
        for key in expired {
            // An earlier outcome in this loop may have dropped it (filter tests).
            let Some(pos) = self.pending.iter().position(|t| (t.id, t.socket) == key) else {
                continue;
            };
            let txn = self.pending.remove(pos);
            self.concluded.push(key);
            self.on_outcome(now, txn, Outcome::Timeout);
            if self.result.is_some() {
                break;
            }
        }
        self.advance(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        self.pending.iter().map(|t| t.deadline).min()
    }
}

/// Mapping behaviour from `(destination, mapped endpoint)` pairs observed from one socket.
///
/// Two destinations with different IPs and the same mapping ⇒ endpoint-independent (a
/// dependent NAT would have needed a new mapping). Two destinations on one IP with different
/// ports and different mappings ⇒ address-and-port-dependent. Different mappings towards
/// different IPs *and* the same mapping towards two ports of one IP ⇒ address-dependent.
/// Otherwise `None` (e.g. one destination only, or only different IPs with different
/// mappings, which does not tell address- from address-and-port-dependent), which
/// `NatReport::nat_type` counts as hard: different mappings towards two IPs are enough to
/// know the NAT is not easy, and nothing less than the same mapping towards two IPs shows
/// that it is.
pub fn classify_mapping(observed: &[(SocketAddr, SocketAddr)]) -> Option<Mapping> {
    let (mut addr_dep, mut port_dep) = (None::<bool>, None::<bool>);
    for (i, &(dst_a, map_a)) in observed.iter().enumerate() {
        for &(dst_b, map_b) in observed.iter().skip(i + 1) {
            let (dst_a, dst_b) = (canonical(dst_a), canonical(dst_b));
            if dst_a == dst_b {
                continue;
            }
            let slot = if dst_a.ip() == dst_b.ip() { &mut port_dep } else { &mut addr_dep };
            *slot = Some(slot.unwrap_or(false) || canonical(map_a) != canonical(map_b));
        }
    }
    match (addr_dep, port_dep) {
        (_, Some(true)) => Some(Mapping::AddressAndPortDependent),
        (Some(false), _) => Some(Mapping::EndpointIndependent),
        (Some(true), Some(false)) => Some(Mapping::AddressDependent),
        _ => None,
    }
}

/// Allocation samples as `(local, mapped)` in the order their sockets sent (answers can
/// come out of order). A socket whose answers were all lost still took its port: where
/// `k` sockets lie between two samples and the mapped ports moved by a multiple of `k`,
/// that counts as `k` even steps, not one long one.
fn in_socket_order(samples: &[(usize, u16, u16)]) -> Vec<(u16, u16)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by_key(|&(index, _, _)| index);
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
    for (k, &(index, local, mapped)) in sorted.iter().enumerate() {
        let Some(&(_, prev)) = out.last() else {
            out.push((local, mapped));
            continue;
        };
        let gap = (index - sorted[k - 1].0) as i32;
        let delta = i32::from(mapped) - i32::from(sorted[k - 1].2);
        let step = if gap > 1 && delta % gap == 0 { delta / gap } else { delta };
        out.push((local, (i32::from(prev) + step).rem_euclid(1 << 16) as u16));
    }
    out
}

/// Port-allocation behaviour from `(local port, mapped port)` samples, one per new mapping,
/// in the order the NAT made them.
///
/// - **Preserving** if a strict majority of samples kept their local port (all of them for
///   one or two samples): one port taken by another host does not hide it.
/// - Else, with at least two samples, **Sequential { step }** if a strict majority of the
///   consecutive deltas of mapped ports equal the same non-zero `step` with
///   `|step| ≤ max_step`: with 4 samples (3 deltas), one foreign allocation in between or a
///   wrap of the NAT's port range is tolerated (deltas 1,2,1 ⇒ step 1; 2,4,2 ⇒ step 2).
/// - Else **Random**; one non-preserved sample alone gives `None`.
pub fn classify_allocation(samples: &[(u16, u16)], max_step: u16) -> Option<Allocation> {
    if samples.is_empty() {
        return None;
    }
    let preserved = samples.iter().filter(|(local, mapped)| local == mapped).count();
    if preserved * 2 > samples.len() {
        return Some(Allocation::Preserving);
    }
    if samples.len() < 2 {
        return None;
    }
    let deltas: Vec<i32> = samples.windows(2).map(|w| i32::from(w[1].1) - i32::from(w[0].1)).collect();
    let best = deltas
        .iter()
        .filter(|d| **d != 0 && d.unsigned_abs() <= u32::from(max_step))
        .map(|&d| (deltas.iter().filter(|&&e| e == d).count(), d))
        // Most frequent; among equals the smallest |step|, then the positive one.
        .max_by_key(|&(count, d)| (count, std::cmp::Reverse(d.unsigned_abs()), d > 0));
    match best {
        Some((count, step)) if count * 2 > deltas.len() => Some(Allocation::Sequential { step }),
        _ => Some(Allocation::Random),
    }
}

/// Tests that need no network: the classification rules, and the probe fed by hand. The
/// probe against servers and NATs runs on the simulator (`sim/tests/probe_sim.rs`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::NatType;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const EIM: Mapping = Mapping::EndpointIndependent;
    const ADM: Mapping = Mapping::AddressDependent;
    const APDM: Mapping = Mapping::AddressAndPortDependent;

    /// A probe driven by hand against one RFC 5780 server, no NAT in between.
    fn manual() -> (Probe, Instant, Transmit) {
        let start = Instant::now();
        let locals = LocalSockets {
            primary: Some(a("10.0.0.2:40000")),
            extra: (1..=5).map(|i| SocketAddr::new("10.0.0.2".parse().unwrap(), 40000 + i)).collect(),
        };
        let server = Server::new(a("198.51.100.1:3478"));
        let mut probe = Probe::new(ProbeConfig::new(vec![server]), locals, start, 9);
        let first = probe.poll_transmit().unwrap();
        assert_eq!(probe.poll_transmit(), None);
        (probe, start, first)
    }

    fn answer(req: &Transmit, mapped: &str) -> Vec<u8> {
        let tid = Message::decode(&req.payload).unwrap().transaction_id;
        Message { other_address: Some(a("198.51.100.2:3479")), ..Message::binding_success(tid, a(mapped)) }.encode()
    }

    #[test]
    fn retransmission_schedule_is_100_200_400_ms() {
        let (mut probe, start, first) = manual();
        let ms = |n| start + Duration::from_millis(n);
        assert_eq!(first.socket, SocketId::PRIMARY);
        assert_eq!(probe.poll_timeout(), Some(ms(100)));
        probe.handle_timeout(ms(50)); // spurious: nothing happens
        assert_eq!(probe.poll_transmit(), None);
        probe.handle_timeout(ms(100));
        assert_eq!(probe.poll_transmit().unwrap().payload, first.payload);
        assert_eq!(probe.poll_timeout(), Some(ms(300)));
        probe.handle_timeout(ms(300));
        assert_eq!(probe.poll_transmit().unwrap().payload, first.payload);
        assert_eq!(probe.poll_timeout(), Some(ms(700)));
        probe.handle_timeout(ms(699));
        assert!(probe.result().is_none());
        probe.handle_timeout(ms(700));
        assert_eq!(probe.result(), Some(Err(ProbeError::NoServerAnswered)));
        assert_eq!(probe.poll_transmit(), None);
    }

    #[test]
    fn no_servers_configured_fails_at_once() {
        let start = Instant::now();
        let probe = Probe::new(ProbeConfig::new(vec![]), LocalSockets::default(), start, 0);
        assert_eq!(probe.result(), Some(Err(ProbeError::NoServers)));
        assert_eq!(probe.poll_timeout(), None);
    }

    #[test]
    fn rto_follows_a_slow_first_answer() {
        let (mut probe, start, first) = manual();
        let at = start + Duration::from_millis(90);
        probe.handle_datagram(at, SocketId::PRIMARY, first.dst, &answer(&first, "203.0.113.9:50000"));
        // RTT 90 ms ⇒ rto 180 ms for everything after.
        assert_eq!(probe.poll_timeout(), Some(at + Duration::from_millis(180)));
    }

    #[test]
    fn garbage_duplicates_and_strangers_are_ignored_and_counted() {
        let (mut probe, start, first) = manual();
        let now = start + Duration::from_millis(5);
        let src = first.dst;
        let reply = answer(&first, "203.0.113.9:50000");
        // Garbage, truncated, and a non-STUN frame.
        probe.handle_datagram(now, SocketId::PRIMARY, src, b"\x00\x01garbage");
        probe.handle_datagram(now, SocketId::PRIMARY, src, &reply[..reply.len() - 4]);
        probe.handle_datagram(now, SocketId::PRIMARY, src, &[0x09, 1, 2, 3]);
        probe.handle_datagram(now, SocketId::PRIMARY, src, &[]);
        // The right answer on the wrong socket; an unknown transaction; a request.
        probe.handle_datagram(now, SocketId(3), src, &reply);
        let stranger = Message::binding_success([7; 12], a("203.0.113.9:1")).encode();
        probe.handle_datagram(now, SocketId::PRIMARY, src, &stranger);
        let request = Message::binding_request([8; 12]).encode();
        probe.handle_datagram(now, SocketId::PRIMARY, src, &request);
        // A success without any mapped address.
        let tid = Message::decode(&first.payload).unwrap().transaction_id;
        let empty = Message { xor_mapped_address: None, ..Message::binding_success(tid, src) };
        probe.handle_datagram(now, SocketId::PRIMARY, src, &empty.encode());
        assert!(probe.poll_transmit().is_none(), "nothing above may advance the probe");
        assert_eq!(probe.stats().garbage, 5);
        assert_eq!(probe.stats().unmatched, 3);
        // The real answer, then its duplicate.
        probe.handle_datagram(now, SocketId::PRIMARY, src, &reply);
        probe.handle_datagram(now, SocketId::PRIMARY, src, &reply);
        let s = probe.stats();
        assert_eq!((s.received, s.answers, s.duplicates, s.garbage, s.unmatched), (10, 1, 1, 5, 3));
        // The probe moved on: mapping tests, filtering tests, first allocation sample.
        let burst: Vec<Transmit> = std::iter::from_fn(|| probe.poll_transmit()).collect();
        assert_eq!(burst.len(), 5);
        assert!(probe.result().is_none());
    }

    #[test]
    fn hostile_input_never_panics() {
        let (mut probe, start, first) = manual();
        let mut rng = StdRng::seed_from_u64(5);
        let tid = Message::decode(&first.payload).unwrap().transaction_id;
        let valid = answer(&first, "203.0.113.9:50000");
        for i in 0..5000u64 {
            let now = start + Duration::from_millis(i);
            let mut bytes = if i % 2 == 0 { valid.clone() } else { Message::binding_error(tid, 500, "x").encode() };
            let flips = rng.gen_range(0..4);
            for _ in 0..flips {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] = rng.gen();
            }
            bytes.truncate(rng.gen_range(0..=bytes.len()));
            let socket = SocketId(rng.gen_range(0..8));
            probe.handle_datagram(now, socket, a("198.51.100.1:3478"), &bytes);
            if i % 97 == 0 {
                probe.handle_timeout(now);
            }
            while probe.poll_transmit().is_some() {}
        }
        assert!(probe.stats().received == 5000);
    }

    /// A new public port per socket and destination (IPv4 destinations).
    fn symmetric(socket: SocketId, dst: SocketAddr) -> u16 {
        let last = match dst.ip() {
            std::net::IpAddr::V4(v4) => u16::from(v4.octets()[3]),
            std::net::IpAddr::V6(_) => unreachable!("IPv4 only"),
        };
        20000 + 100 * socket.0 + 10 * last + dst.port() % 10
    }

    /// One public port per socket, whatever the destination.
    fn easy(socket: SocketId, _: SocketAddr) -> u16 {
        30000 + socket.0
    }

    /// Runs a probe to its end against one-IP servers that answer every Binding request at
    /// the address it was sent to, behind a NAT that maps `(socket, destination)` to a
    /// public port with `map` and drops every answer from an address the socket never sent
    /// to (port-restricted filtering).
    fn probe_one_ip_servers(servers: Vec<Server>, map: impl Fn(SocketId, SocketAddr) -> u16) -> NatReport {
        let start = Instant::now();
        let locals = LocalSockets {
            primary: Some(a("10.0.0.2:40000")),
            extra: (1..=5).map(|i| SocketAddr::new("10.0.0.2".parse().unwrap(), 40000 + i)).collect(),
        };
        let mut probe = Probe::new(ProbeConfig::new(servers), locals, start, 3);
        let mut now = start;
        for _ in 0..1000 {
            while let Some(t) = probe.poll_transmit() {
                let request = Message::decode(&t.payload).unwrap();
                if request.change_request.is_some_and(|c| c.change_port || c.change_ip) {
                    continue; // answered from another port: filtered out
                }
                let mapped = SocketAddr::new("203.0.113.9".parse().unwrap(), map(t.socket, t.dst));
                let answer = Message::binding_success(request.transaction_id, mapped).encode();
                probe.handle_datagram(now, t.socket, t.dst, &answer);
            }
            if let Some(result) = probe.result() {
                return result.expect("the servers answered");
            }
            now = probe.poll_timeout().expect("a running probe has a deadline");
            probe.handle_timeout(now);
        }
        panic!("the probe never ended");
    }

    /// Behind a port-restricted NAT (easy mapping, change requests filtered) 20 ms from an
    /// RFC 5780 server: the mapping and allocation are known once the last allocation
    /// sample is answered (Test I, then a round trip per sample), the filtering only once
    /// its tests' silence is concluded, 700 ms after they were sent. `mapped` comes that
    /// much earlier and says all the final report says but the filtering.
    #[test]
    fn the_mapping_is_known_long_before_the_filtering_silence_ends() {
        let start = Instant::now();
        let locals = LocalSockets {
            primary: Some(a("10.0.0.2:40000")),
            extra: (1..=5).map(|i| SocketAddr::new("10.0.0.2".parse().unwrap(), 40000 + i)).collect(),
        };
        let mut probe = Probe::new(ProbeConfig::new(vec![Server::new(a("198.51.100.1:3478"))]), locals, start, 3);
        let rtt = Duration::from_millis(20);
        let (mut now, mut answers, mut mapped_at) =
            (start, VecDeque::<(Instant, SocketId, SocketAddr, Vec<u8>)>::new(), None);
        let result = loop {
            while let Some(t) = probe.poll_transmit() {
                let request = Message::decode(&t.payload).unwrap();
                if request.change_request.is_some_and(|c| c.change_port || c.change_ip) {
                    continue; // answered from another address: filtered out
                }
                let mapped = SocketAddr::new("203.0.113.9".parse().unwrap(), easy(t.socket, t.dst));
                let answer = Message {
                    other_address: Some(a("198.51.100.2:3479")),
                    ..Message::binding_success(request.transaction_id, mapped)
                };
                answers.push_back((now + rtt, t.socket, t.dst, answer.encode()));
            }
            if mapped_at.is_none() && probe.mapped().is_some() {
                mapped_at = Some(now);
            }
            if let Some(result) = probe.result() {
                break result.expect("the server answered");
            }
            let next_answer = answers.front().map(|(at, ..)| *at);
            now = next_answer.into_iter().chain(probe.poll_timeout()).min().expect("a running probe has a deadline");
            if next_answer == Some(now) {
                let (_, socket, src, answer) = answers.pop_front().unwrap();
                probe.handle_datagram(now, socket, src, &answer);
            } else {
                probe.handle_timeout(now);
            }
        };
        assert_eq!(mapped_at, Some(start + 5 * rtt), "Test I, then four allocation samples one after another");
        assert_eq!(now, start + rtt + Duration::from_millis(700), "the filtering tests' three tries, unanswered");
        let mapped = probe.mapped().unwrap();
        assert_eq!(mapped, NatReport { filtering: None, ..result });
        assert_eq!((result.mapping, result.filtering), (Some(EIM), Some(Filtering::AddressAndPortDependent)));
        assert_eq!(mapped.nat_type(), NatType::Easy);
    }

    /// Issue 9: against two one-IP servers, a symmetric NAT's different public ports
    /// towards them were "unknown", and unknown was easy.
    #[test]
    fn two_one_ip_servers_tell_a_symmetric_nat_from_an_easy_one() {
        let servers = || vec![Server::new(a("198.51.100.1:3478")), Server::new(a("198.51.100.3:3478"))];
        let symmetric = probe_one_ip_servers(servers(), symmetric);
        assert_eq!(symmetric.mapping, None, "address- or address-and-port-dependent: no port test tells which");
        assert_eq!(symmetric.nat_type(), NatType::Hard);
        let easy = probe_one_ip_servers(servers(), easy);
        assert_eq!((easy.mapping, easy.filtering), (Some(EIM), None));
        assert_eq!(easy.nat_type(), NatType::Easy);
    }

    /// A one-IP server's alternate port (from its ServerInfo) gives the port test and the
    /// filtering test; endpoint-independence still needs a second IP.
    #[test]
    fn a_one_ip_servers_alternate_port_tells_port_dependence_and_filtering() {
        let (x, x_alt, y) = (a("198.51.100.1:3478"), a("198.51.100.1:3479"), a("198.51.100.3:3478"));
        let with_alt = || Server { addr: x, other: Some(x_alt) };

        let r = probe_one_ip_servers(vec![with_alt(), Server::new(y)], symmetric);
        assert_eq!(
            (r.mapping, r.filtering, r.nat_type()),
            (Some(APDM), Some(Filtering::AddressAndPortDependent), NatType::Hard)
        );
        let r = probe_one_ip_servers(vec![with_alt(), Server::new(y)], easy);
        assert_eq!(
            (r.mapping, r.filtering, r.nat_type()),
            (Some(EIM), Some(Filtering::AddressAndPortDependent), NatType::Easy)
        );
        // One server alone: port-dependence shows, endpoint-independence cannot.
        let r = probe_one_ip_servers(vec![with_alt()], symmetric);
        assert_eq!((r.mapping, r.nat_type()), (Some(APDM), NatType::Hard));
        let r = probe_one_ip_servers(vec![with_alt()], easy);
        assert_eq!(
            (r.mapping, r.filtering, r.nat_type()),
            (None, Some(Filtering::AddressAndPortDependent), NatType::Hard)
        );
    }

    #[test]
    fn mapping_rule() {
        let (a0, a1, b0, b1) = (a("1.1.1.1:1"), a("1.1.1.1:2"), a("2.2.2.2:1"), a("2.2.2.2:2"));
        let (m, n, o) = (a("9.9.9.9:100"), a("9.9.9.9:101"), a("9.9.9.9:102"));
        assert_eq!(classify_mapping(&[(a0, m), (b0, m), (b1, m)]), Some(EIM));
        assert_eq!(classify_mapping(&[(a0, m), (b0, n), (b1, n)]), Some(ADM));
        assert_eq!(classify_mapping(&[(a0, m), (b0, n), (b1, o)]), Some(APDM));
        assert_eq!(classify_mapping(&[(a0, m), (b0, m)]), Some(EIM));
        assert_eq!(classify_mapping(&[(a0, m), (b0, n)]), None);
        assert_eq!(classify_mapping(&[(a0, m), (a1, n)]), Some(APDM));
        assert_eq!(classify_mapping(&[(a0, m), (a1, m)]), None);
        assert_eq!(classify_mapping(&[(a0, m), (a1, m), (b0, n)]), Some(ADM));
        assert_eq!(classify_mapping(&[(a0, m)]), None);
        assert_eq!(classify_mapping(&[]), None);
        // The same IPv4 peer seen through a dual-stack socket is the same destination.
        assert_eq!(classify_mapping(&[(a0, m), (a("[::ffff:1.1.1.1]:1"), n)]), None);
    }

    #[test]
    fn allocation_samples_are_read_in_socket_order_and_lost_ones_still_took_a_port() {
        // Answers out of order, and socket 2's answers all lost (seen in the simulator at
        // 20 % loss behind a sequential NAT).
        let samples = [(1, 40001, 28312), (0, 40000, 28311), (3, 40003, 28314)];
        let seq1 = Some(Allocation::Sequential { step: 1 });
        assert_eq!(classify_allocation(&in_socket_order(&samples), 16), seq1);
        let as_answered: Vec<(u16, u16)> = samples.iter().map(|&(_, l, m)| (l, m)).collect();
        assert_eq!(classify_allocation(&as_answered, 16), Some(Allocation::Random));
        // A gap the ports did not move evenly across stays one long step.
        let uneven = [(0, 40000, 20000), (2, 40002, 20003), (3, 40003, 20010)];
        assert_eq!(classify_allocation(&in_socket_order(&uneven), 16), Some(Allocation::Random));
    }

    #[test]
    fn allocation_rule() {
        let seq = |ports: &[u16]| -> Vec<(u16, u16)> { ports.iter().map(|&p| (40000, p)).collect() };
        let c = |ports: &[u16]| classify_allocation(&seq(ports), 16);
        let step = |step| Some(Allocation::Sequential { step });
        assert_eq!(c(&[20000, 20001, 20002, 20003]), step(1));
        assert_eq!(c(&[20000, 20002, 20004, 20006]), step(2));
        assert_eq!(c(&[20003, 20002, 20001, 20000]), step(-1));
        assert_eq!(c(&[20000, 20001, 20003, 20004]), step(1)); // one foreign allocation
        assert_eq!(c(&[20000, 20002, 20006, 20008]), step(2));
        assert_eq!(c(&[29998, 29999, 20000, 20001]), step(1)); // range wrap
        assert_eq!(c(&[20000, 20016, 20032, 20048]), step(16));
        assert_eq!(c(&[20000, 20017, 20034, 20051]), Some(Allocation::Random)); // step too big
        assert_eq!(c(&[20000, 20001, 20003, 20006]), Some(Allocation::Random));
        assert_eq!(c(&[31337, 1234, 60000, 4242]), Some(Allocation::Random));
        assert_eq!(c(&[20000, 20000, 20000, 20000]), Some(Allocation::Random));
        assert_eq!(c(&[20000, 20001]), step(1));
        assert_eq!(c(&[20000]), None);
        assert_eq!(c(&[]), None);
        let preserved = [(40001, 40001), (40002, 40002), (40003, 40003), (40004, 40004)];
        assert_eq!(classify_allocation(&preserved, 16), Some(Allocation::Preserving));
        // One port taken by someone else: still preserving.
        let one_off = [(40001, 40001), (40002, 51234), (40003, 40003), (40004, 40004)];
        assert_eq!(classify_allocation(&one_off, 16), Some(Allocation::Preserving));
        assert_eq!(classify_allocation(&[(40001, 40001)], 16), Some(Allocation::Preserving));
        assert_eq!(classify_allocation(&[(40001, 40001), (40002, 50000)], 16), Some(Allocation::Random));
    }
}
