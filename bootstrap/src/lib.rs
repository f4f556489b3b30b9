//! Joining a mesh: resolve the seed list, make first contact, learn who the seeds are.
//!
//! First contact is a padded `Hello` answered by a `ServerInfo` that is never larger than
//! the Hello (so a spoofed Hello cannot make a node an amplifier). The answer names the
//! seed's PeerId, every address it listens on (the RFC 5780 alternates among them) and
//! where it saw us — enough to start NAT probing and register.
//!
//! [`members`] asks a member, after first contact, for the members of its mesh.

pub mod members;

use introducer_actors::backoff::Backoff;
use introducer_actors::bucket::TokenBucket;
use introducer_actors::cookie::Cookies;
use introducer_actors::driver::Protocol;
use introducer_actors::socket::{Inbound, Payload};
use introducer_actors::{SocketId, Transmit};
use introducer_proto::pb::{self, envelope::Kind};
use libp2p_identity::PeerId;
use prost::Message;
use rand::RngCore;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Port a node listens on when none is given (STUN's, since every node answers STUN).
pub const DEFAULT_PORT: u16 = 3478;
/// Size a Hello is padded to; answers are trimmed to fit it.
pub const HELLO_SIZE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("bad bootstrap address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("no bootstrap node answered ({tried}) after {tries} tries over {waited:?}")]
    Unreachable { tried: String, tries: u32, waited: Duration },
}

impl BootstrapError {
    /// A short, stable word for scripts (`--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            BootstrapError::BadAddress { .. } => "bad_address",
            BootstrapError::Unreachable { .. } => "unreachable",
        }
    }
}

/// Resolves `host:port` or `host` (default port), by DNS if needed, preferring IPv4.
pub fn resolve(addr: &str) -> Result<SocketAddr, BootstrapError> {
    let bad = |reason: String| BootstrapError::BadAddress { addr: addr.to_owned(), reason };
    // HOST:PORT (an IPv6 address has colons of its own: it takes a port in brackets).
    let port = addr.rsplit_once(':').filter(|(h, _)| !h.contains(':') || h.ends_with(']')).map(|(_, p)| p);
    let with_port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad(format!("port {p} is out of range (1 to 65535)"))),
            Ok(_) => addr.to_owned(),
        },
        _ if addr.parse::<SocketAddr>().is_ok() => addr.to_owned(),
        _ if addr.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{addr}]:{DEFAULT_PORT}"),
        _ => format!("{addr}:{DEFAULT_PORT}"),
    };
    let addrs: Vec<SocketAddr> = with_port.to_socket_addrs().map_err(|e| bad(e.to_string()))?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or_else(|| bad("resolves to nothing".into()))
}

/// A seed that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    pub listen: Vec<SocketAddr>,
    /// Our address as the seed saw it.
    pub observed: SocketAddr,
    pub introducer: bool,
    /// What a [`pb::DialBackRequest`] to the seed echoes (0: none, e.g. a stored member).
    pub cookie: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub retransmit: Duration,
    pub max_tries: u32,
    /// Once one seed answered, how long to wait for the others.
    pub linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { retransmit: Duration::from_millis(250), max_tries: 4, linger: Duration::from_millis(300) }
    }
}

/// The first-contact machine: Hello to every seed until each answers or tries run out.
pub struct Join {
    config: Config,
    seeds: Vec<SocketAddr>,
    answers: BTreeMap<SocketAddr, Seed>,
    started: Instant,
    /// Hello rounds so far, and the wait after the next one.
    backoff: Backoff,
    next_send: Option<Instant>,
    first_answer: Option<Instant>,
    transmits: Vec<Transmit>,
    result: Option<Result<Vec<Seed>, BootstrapError>>,
    /// Answers that did not decode or came from no seed.
    pub dropped: u64,
}

impl Join {
    pub fn new(config: Config, seeds: Vec<SocketAddr>, now: Instant) -> Self {
        Join {
            backoff: Backoff::new(config.retransmit).give_up_after(config.max_tries),
            config,
            seeds,
            answers: BTreeMap::new(),
            started: now,
            next_send: Some(now),
            first_answer: None,
            transmits: Vec::new(),
            result: None,
            dropped: 0,
        }
    }

    /// The seeds that answered, or why none did; `None` while still trying.
    pub fn result(&self) -> Option<&Result<Vec<Seed>, BootstrapError>> {
        self.result.as_ref()
    }

    pub fn handle(&mut self, now: Instant, src: SocketAddr, info: pb::ServerInfo) {
        let seed = (|| {
            Some(Seed {
                addr: src,
                peer_id: PeerId::from_bytes(&info.peer_id).ok()?,
                listen: info.listen.iter().map(SocketAddr::try_from).collect::<Result<_, _>>().ok()?,
                observed: info.observed.as_ref().map(SocketAddr::try_from)?.ok()?,
                introducer: info.introducer,
                cookie: info.cookie,
            })
        })();
        match seed {
            Some(seed) if self.seeds.contains(&src) && self.result.is_none() => {
                self.answers.insert(src, seed);
                self.first_answer.get_or_insert(now);
                if self.answers.len() == self.seeds.len() {
                    self.finish();
                }
            }
            _ => self.dropped += 1,
        }
    }

    fn finish(&mut self) {
        self.next_send = None;
        self.result = Some(if self.answers.is_empty() {
            let tried = self.seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
            Err(BootstrapError::Unreachable { tried, tries: self.backoff.tries(), waited: self.backoff.waited() })
        } else {
            // Seed order is the user's order of preference.
            Ok(self.seeds.iter().filter_map(|s| self.answers.get(s).cloned()).collect())
        });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        if self.first_answer.is_some_and(|t| now >= t + self.config.linger) {
            return self.finish();
        }
        if self.next_send.is_some_and(|t| now >= t) {
            let Some(next) = self.backoff.retry(now) else { return self.finish() };
            for &seed in self.seeds.iter().filter(|s| !self.answers.contains_key(s)) {
                self.transmits.push(Transmit::envelope(SocketId::PRIMARY, seed, Kind::Hello(hello())));
            }
            self.next_send = Some(next);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let linger = self.first_answer.map(|t| t + self.config.linger);
        self.next_send.into_iter().chain(linger).min().filter(|_| self.result.is_none())
    }

    pub fn started(&self) -> Instant {
        self.started
    }
}

/// A Hello padded to [`HELLO_SIZE`] on the wire.
fn hello() -> pb::Hello {
    // Envelope tag + length (3 bytes) + Hello's padding tag + length (3 bytes) + marker.
    pb::Hello { padding: vec![0; HELLO_SIZE - 7].into() }
}

/// The answer to a Hello of `request_len` bytes: trimmed so it is never larger than the
/// request, or nothing if even the bare answer would be.
pub fn answer_hello(
    request_len: usize,
    me: PeerId,
    listen: &[SocketAddr],
    introducer: bool,
    src: SocketAddr,
    cookie: u64,
) -> Option<pb::ServerInfo> {
    let mut info = pb::ServerInfo {
        peer_id: me.to_bytes().into(),
        listen: listen.iter().map(|&a| a.into()).collect(),
        observed: Some(src.into()),
        introducer,
        cookie,
    };
    // Marker byte + envelope field tag and length prefix.
    let framed = |info: &pb::ServerInfo| 1 + 3 + info.encoded_len();
    while framed(&info) > request_len {
        info.listen.pop()?;
    }
    Some(info)
}

/// What the node tells its first-contact role.
#[derive(Debug, Clone)]
pub enum Command {
    /// Make first contact with these seeds; the outcome comes back as the role's event.
    Join { config: Config, seeds: Vec<SocketAddr> },
    /// Tell those who say Hello that we introduce (we serve now).
    Serve,
    /// Ask `seed` to have another member of the mesh dial us back (with `nonce`).
    DialBack { seed: Seed, nonce: u64 },
}

/// What first contact found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The seeds that answered (in the user's order), or why none did.
    Joined(Result<Vec<Seed>, BootstrapError>),
    /// A seed that answered after the others were reported: its first answers were lost,
    /// or it came up late.
    Late(Seed),
    /// Someone other than the seed we asked reached us unsolicited, from `from`: nothing in
    /// front of us filters what comes in.
    Reachable { from: SocketAddr },
    /// No dial-back came within `DIAL_BACK_WAIT`.
    NotReachable,
    /// Serving: a node that proved it receives at `addr` asks to be dialed back.
    DialBackAsked { addr: SocketAddr, nonce: u64 },
    /// Serving: a node that proved it receives at `addr` asks (on `socket`) for the members
    /// we know, from the `offset`-th on; within its IP's budget.
    MembersAsked { socket: SocketId, addr: SocketAddr, request_id: u64, offset: u32 },
}

/// How long a node waits for its dial-back, and how often it asks meanwhile: longer than
/// the interval seeds and members keep between two dial-backs of one IP, so a node that
/// restarts right after one (say, its store lost) is still dialed back.
pub const DIAL_BACK_WAIT: Duration = Duration::from_millis(2500);
const DIAL_BACK_RETRY: Duration = Duration::from_millis(500);
/// A seed takes one dial-back request per IP this often, and remembers this many IPs.
const DIAL_BACK_INTERVAL: Duration = Duration::from_secs(2);
const MAX_DIAL_BACK_IPS: usize = 4096;
/// The cookie of our ServerInfo: echoed in a dial-back or members request, it proves the
/// asker receives at its source address (the domain's name is older than its second use).
const COOKIE_DOMAIN: &[u8] = b"introducer/dial-back/v1";
/// Members requests taken per source IP (a second, and burst) and from all sources: one
/// request earns up to 8 datagrams (`mesh::listing::MAX_REPLIES`), to a cookie-proven
/// address only; at 20 a second (after a burst of 40) 4,096 members take about 3 s.
const MEMBERS_PER_IP: (f64, f64) = (20.0, 40.0);
const MEMBERS_TOTAL: (f64, f64) = (100.0, 200.0);
/// Source IPs with a members budget tracked at once; beyond, idle ones are forgotten and
/// then new ones are refused.
const MAX_MEMBERS_IPS: usize = 4096;

/// Our dial-back under way: the seed asked, the nonce, when to ask again and give up.
#[derive(Debug, Clone)]
struct DialingBack {
    seed: Seed,
    nonce: u64,
    next: Instant,
    until: Instant,
}

/// The bootstrap route of a node: answers every Hello, and runs a [`Join`] when asked.
///
/// A join reports the seeds that answered within a short linger after the first one, so a
/// dead seed does not hold the node up; the silent ones get another round, and those that
/// answer then are reported as [`Event::Late`] (a lost Hello must not cost a node one of
/// its introducers). Rounds go on only while they find someone.
pub struct FirstContact {
    me: PeerId,
    listen: Vec<SocketAddr>,
    introducer: bool,
    config: Config,
    /// The current round, and the seeds it asks.
    join: Option<(Join, Vec<SocketAddr>)>,
    /// The first round's outcome was reported.
    joined: bool,
    events: VecDeque<Event>,
    answers: Vec<Transmit>,
    /// Proves, in a dial-back request, that the asker receives where our ServerInfo went.
    cookies: Cookies,
    dialing_back: Option<DialingBack>,
    /// When each IP last had a dial-back request taken.
    asked: BTreeMap<IpAddr, Instant>,
    /// Members requests: each source IP's budget, and everyone's.
    members_budget: BTreeMap<IpAddr, TokenBucket>,
    members_total: TokenBucket,
    /// Hellos not answered because even a trimmed answer would be larger.
    pub dropped_small_hello: u64,
    /// Dial-back requests without a valid cookie, or too soon after the last from their IP;
    /// probes that were not ours or came from the seed we asked.
    pub dropped_dial_back: u64,
    /// Members requests not taken: we do not serve, the cookie is not the source's, or the
    /// source IP (or everyone) is over budget.
    pub dropped_members_request: u64,
}

impl FirstContact {
    pub fn new(me: PeerId, listen: Vec<SocketAddr>, introducer: bool, rng: &mut impl RngCore, now: Instant) -> Self {
        FirstContact {
            me,
            listen,
            introducer,
            config: Config::default(),
            join: None,
            joined: false,
            events: VecDeque::new(),
            answers: Vec::new(),
            cookies: Cookies::new(COOKIE_DOMAIN, rng, now, Duration::from_secs(60)),
            dialing_back: None,
            asked: BTreeMap::new(),
            members_budget: BTreeMap::new(),
            members_total: TokenBucket::full(MEMBERS_TOTAL.0, MEMBERS_TOTAL.1, now),
            dropped_small_hello: 0,
            dropped_dial_back: 0,
            dropped_members_request: 0,
        }
    }

    /// Serving: a members request with a cookie our ServerInfo gave its source is handed to
    /// the mesh (which answers it), within the source IP's budget and everyone's. The
    /// cookie is checked first, so requests forged from an asker's IP cannot spend its budget.
    fn members_asked(&mut self, now: Instant, socket: SocketId, src: SocketAddr, request: &pb::MembersRequest) {
        if !self.introducer
            || !self.cookies.check(now, src, &self.me, request.cookie)
            || !self.members_budget(now, src.ip())
        {
            self.dropped_members_request += 1;
            return;
        }
        let (request_id, offset) = (request.request_id, request.offset);
        self.events.push_back(Event::MembersAsked { socket, addr: src, request_id, offset });
    }

    fn members_budget(&mut self, now: Instant, ip: IpAddr) -> bool {
        let (rate, burst) = MEMBERS_PER_IP;
        if self.members_budget.len() >= MAX_MEMBERS_IPS && !self.members_budget.contains_key(&ip) {
            // Sources idle long enough to be full again need not be remembered.
            self.members_budget.retain(|_, b| b.available(now) < burst);
            if self.members_budget.len() >= MAX_MEMBERS_IPS {
                return false;
            }
        }
        let bucket = self.members_budget.entry(ip).or_insert_with(|| TokenBucket::full(rate, burst, now));
        if bucket.available(now) < 1.0 || self.members_total.available(now) < 1.0 {
            return false;
        }
        bucket.take(1.0);
        self.members_total.take(1.0);
        true
    }

    /// Serving: a dial-back request with a cookie our ServerInfo gave its source is handed
    /// to the mesh (one per IP every `DIAL_BACK_INTERVAL`).
    fn dial_back_asked(&mut self, now: Instant, src: SocketAddr, request: &pb::DialBackRequest) {
        self.asked.retain(|_, t| now < *t + DIAL_BACK_INTERVAL);
        let fresh = !self.asked.contains_key(&src.ip()) && self.asked.len() < MAX_DIAL_BACK_IPS;
        if !self.introducer || !fresh || !self.cookies.check(now, src, &self.me, request.cookie) {
            self.dropped_dial_back += 1;
            return;
        }
        self.asked.insert(src.ip(), now);
        self.events.push_back(Event::DialBackAsked { addr: src, nonce: request.nonce });
    }

    /// A probe for our dial-back: it counts only with our nonce and from an IP that is not
    /// the seed's (the seed reaching us proves nothing it did not already know).
    fn dial_back_probe(&mut self, src: SocketAddr, probe: &pb::DialBackProbe) {
        let ours = self.dialing_back.as_ref().is_some_and(|d| {
            d.nonce == probe.nonce && d.seed.addr.ip() != src.ip() && d.seed.listen.iter().all(|a| a.ip() != src.ip())
        });
        if !ours {
            self.dropped_dial_back += 1;
            return;
        }
        self.dialing_back = None;
        self.events.push_back(Event::Reachable { from: src });
    }

    fn dial_back_timeout(&mut self, now: Instant) {
        let Some(d) = &mut self.dialing_back else { return };
        if now >= d.until {
            self.dialing_back = None;
            self.events.push_back(Event::NotReachable);
        } else if now >= d.next {
            d.next = now + DIAL_BACK_RETRY;
            let request = pb::DialBackRequest { cookie: d.seed.cookie, nonce: d.nonce };
            self.answers.push(Transmit::envelope(SocketId::PRIMARY, d.seed.addr, Kind::DialBackRequest(request)));
        }
    }

    /// Starts first contact with `seeds`; the outcome comes back as events.
    pub fn join(&mut self, config: Config, seeds: Vec<SocketAddr>, now: Instant) {
        self.join = Some((Join::new(config.clone(), seeds.clone(), now), seeds));
        (self.config, self.joined) = (config, false);
    }

    /// Whether Hellos report us as an introducer (set once probing shows we are public).
    pub fn set_introducer(&mut self, introducer: bool) {
        self.introducer = introducer;
    }

    /// Reports a finished round, and starts the next for the seeds still silent.
    fn check(&mut self, now: Instant) {
        let Some(result) = self.join.as_ref().and_then(|(join, _)| join.result().cloned()) else { return };
        let (_, asked) = self.join.take().expect("a round is running");
        let found: Vec<SocketAddr> = result.iter().flatten().map(|s| s.addr).collect();
        if !std::mem::replace(&mut self.joined, true) {
            self.events.push_back(Event::Joined(result));
        } else {
            self.events.extend(result.into_iter().flatten().map(Event::Late));
        }
        let silent: Vec<SocketAddr> = asked.into_iter().filter(|a| !found.contains(a)).collect();
        if !found.is_empty() && !silent.is_empty() {
            self.join = Some((Join::new(self.config.clone(), silent.clone(), now), silent));
        }
    }
}

impl Protocol for FirstContact {
    type Event = Event;
    type Command = Command;

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join { config, seeds } => self.join(config, seeds, now),
            Command::Serve => self.set_introducer(true),
            Command::DialBack { seed, nonce } => {
                self.dialing_back = Some(DialingBack { seed, nonce, next: now, until: now + DIAL_BACK_WAIT });
                self.dial_back_timeout(now);
            }
        }
    }

    fn handle_inbound(&mut self, inbound: Inbound) {
        let Payload::Envelope(kind) = inbound.payload else { return };
        match kind {
            Kind::Hello(_) => match answer_hello(
                inbound.len,
                self.me,
                &self.listen,
                self.introducer,
                inbound.src,
                self.cookies.mint(inbound.now, inbound.src, &self.me),
            ) {
                Some(info) => {
                    self.answers.push(Transmit::envelope(inbound.socket, inbound.src, Kind::ServerInfo(info)))
                }
                None => self.dropped_small_hello += 1,
            },
            Kind::ServerInfo(info) => {
                if let Some((join, _)) = &mut self.join {
                    join.handle(inbound.now, inbound.src, info);
                    self.check(inbound.now);
                }
            }
            Kind::DialBackRequest(request) => self.dial_back_asked(inbound.now, inbound.src, &request),
            Kind::DialBackProbe(probe) => self.dial_back_probe(inbound.src, &probe),
            Kind::MembersRequest(request) => self.members_asked(inbound.now, inbound.socket, inbound.src, &request),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some((join, _)) = &mut self.join {
            join.handle_timeout(now);
            self.check(now);
        }
        self.dial_back_timeout(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.answers.pop().or_else(|| self.join.as_mut()?.0.poll_transmit())
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let join = self.join.as_ref().and_then(|(join, _)| join.poll_timeout());
        let dial_back = self.dialing_back.as_ref().map(|d| d.next.min(d.until));
        join.into_iter().chain(dial_back).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use introducer_actors::identity::Identity;
    use introducer_proto::frame;
    use rand::SeedableRng;

    fn seeds() -> Vec<SocketAddr> {
        vec!["198.51.100.1:3478".parse().unwrap(), "203.0.113.1:3478".parse().unwrap()]
    }

    #[test]
    fn resolves_with_default_port_and_rejects_garbage() {
        assert_eq!(resolve("198.51.100.1").unwrap(), "198.51.100.1:3478".parse().unwrap());
        assert_eq!(resolve("198.51.100.1:9").unwrap(), "198.51.100.1:9".parse().unwrap());
        assert_eq!(resolve("[2001:db8::1]:9").unwrap(), "[2001:db8::1]:9".parse().unwrap());
        assert!(matches!(resolve("not an address:x"), Err(BootstrapError::BadAddress { .. })));
        assert_eq!(resolve("2001:db8::1").unwrap(), "[2001:db8::1]:3478".parse().unwrap());
        // A port out of range is said to be, not looked up as a host name.
        for bad in ["127.0.0.1:99999", "127.0.0.1:0", "localhost:65536"] {
            let Err(BootstrapError::BadAddress { reason, .. }) = resolve(bad) else { panic!("{bad} resolved") };
            assert!(reason.contains("out of range"), "{bad}: {reason}");
        }
    }

    #[test]
    fn hello_is_padded_and_the_answer_never_exceeds_it() {
        let hello = Transmit::envelope(SocketId::PRIMARY, seeds()[0], Kind::Hello(hello()));
        assert_eq!(hello.payload.len(), HELLO_SIZE);
        let me = Identity::from_seed(1).peer_id();
        let listen: Vec<SocketAddr> = (0..40).map(|i| SocketAddr::from(([198, 51, 100, i], 3478))).collect();
        let src = "203.0.113.7:4444".parse().unwrap();
        let info = answer_hello(HELLO_SIZE, me, &listen, true, src, 7).unwrap();
        let answer = frame::encode_envelope(&pb::Envelope { kind: Some(Kind::ServerInfo(info.clone())) });
        assert!(answer.len() <= HELLO_SIZE, "{} > {HELLO_SIZE}", answer.len());
        assert!(!info.listen.is_empty() && info.listen.len() < 40);
        assert_eq!(answer_hello(20, me, &listen, true, src, 7), None);
    }

    #[test]
    fn joins_the_seeds_that_answer_and_reports_the_silent_ones() {
        let now = Instant::now();
        let mut join = Join::new(Config::default(), seeds(), now);
        join.handle_timeout(now);
        assert_eq!(std::iter::from_fn(|| join.poll_transmit()).count(), 2);
        let me = Identity::from_seed(1).peer_id();
        let observed = "203.0.113.50:1000".parse().unwrap();
        let info = answer_hello(HELLO_SIZE, me, &[seeds()[0]], true, observed, 7).unwrap();
        join.handle(now, "192.0.2.1:1".parse().unwrap(), info.clone());
        assert_eq!(join.dropped, 1, "answers from non-seeds are dropped");
        join.handle(now, seeds()[0], info);
        while let Some(t) = join.poll_timeout() {
            join.handle_timeout(t);
        }
        let seeds_found = join.result().unwrap().as_ref().unwrap();
        assert_eq!(seeds_found.len(), 1);
        assert_eq!((seeds_found[0].peer_id, seeds_found[0].observed), (me, observed));

        let mut silent = Join::new(Config::default(), seeds(), now);
        while let Some(t) = silent.poll_timeout() {
            silent.handle_timeout(t);
        }
        let Some(Err(BootstrapError::Unreachable { tries, waited, .. })) = silent.result() else { panic!() };
        assert_eq!(*tries, Config::default().max_tries);
        assert_eq!(*waited, Duration::from_millis(250 + 500 + 1000 + 2000));
        assert_eq!(silent.poll_timeout(), None);
    }

    fn server_info(src: SocketAddr, now: Instant) -> Inbound {
        let seed = Identity::from_seed(9).peer_id();
        let info = answer_hello(HELLO_SIZE, seed, &[src], true, "203.0.113.50:1000".parse().unwrap(), 7).unwrap();
        Inbound { now, socket: SocketId::PRIMARY, src, len: 100, payload: Payload::Envelope(Kind::ServerInfo(info)) }
    }

    fn contact(now: Instant) -> FirstContact {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        FirstContact::new(Identity::from_seed(1).peer_id(), vec![], false, &mut rng, now)
    }

    #[test]
    fn a_seed_silent_in_the_first_round_is_asked_again_and_reported_late() {
        let now = Instant::now();
        let mut contact = contact(now);
        contact.handle_command(now, Command::Join { config: Config::default(), seeds: seeds() });
        contact.handle_timeout(now);
        assert_eq!(std::iter::from_fn(|| contact.poll_transmit()).count(), 2);
        contact.handle_inbound(server_info(seeds()[0], now));
        let joined = loop {
            let t = contact.poll_timeout().expect("the first round ends");
            contact.handle_timeout(t);
            if let Some(event) = contact.poll_event() {
                break event;
            }
        };
        let Event::Joined(Ok(found)) = joined else { panic!("{joined:?}") };
        assert_eq!(found.iter().map(|s| s.addr).collect::<Vec<_>>(), [seeds()[0]]);
        // The next round asks only the silent seed; its answer is reported late.
        let t = contact.poll_timeout().expect("a second round");
        contact.handle_timeout(t);
        let hellos: Vec<Transmit> = std::iter::from_fn(|| contact.poll_transmit()).collect();
        assert!(!hellos.is_empty() && hellos.iter().all(|h| h.dst == seeds()[1]), "{hellos:?}");
        contact.handle_inbound(server_info(seeds()[1], t));
        assert!(matches!(contact.poll_event(), Some(Event::Late(seed)) if seed.addr == seeds()[1]));
        assert_eq!(contact.poll_timeout(), None, "everyone answered: no more rounds");
    }

    fn inbound(now: Instant, src: SocketAddr, kind: Kind) -> Inbound {
        Inbound { now, socket: SocketId::PRIMARY, src, len: 100, payload: Payload::Envelope(kind) }
    }

    /// A seed takes a dial-back request only with the cookie its ServerInfo gave that very
    /// address, and only one per IP every two seconds: nobody can have the mesh probe an
    /// address that did not ask.
    #[test]
    fn a_dial_back_request_needs_the_askers_cookie_and_is_rate_limited() {
        let now = Instant::now();
        let mut seed = contact(now);
        seed.handle_command(now, Command::Serve);
        let asker: SocketAddr = "198.51.100.40:3478".parse().unwrap();
        seed.handle_inbound(inbound(now, asker, Kind::Hello(hello())));
        let Some(Transmit { payload, .. }) = seed.poll_transmit() else { panic!("no ServerInfo") };
        let Ok(frame::Decoded::Envelope(pb::Envelope { kind: Some(Kind::ServerInfo(info)) })) = frame::decode(&payload)
        else {
            panic!("not a ServerInfo")
        };
        let request = |cookie| Kind::DialBackRequest(pb::DialBackRequest { cookie, nonce: 9 });
        // Another address with that cookie (a spoofer that saw it), or a made-up cookie.
        seed.handle_inbound(inbound(now, "192.0.2.1:53".parse().unwrap(), request(info.cookie)));
        seed.handle_inbound(inbound(now, asker, request(info.cookie ^ 1)));
        assert_eq!((seed.poll_event(), seed.dropped_dial_back), (None, 2));
        seed.handle_inbound(inbound(now, asker, request(info.cookie)));
        assert_eq!(seed.poll_event(), Some(Event::DialBackAsked { addr: asker, nonce: 9 }));
        seed.handle_inbound(inbound(now + Duration::from_secs(1), asker, request(info.cookie)));
        assert_eq!((seed.poll_event(), seed.dropped_dial_back), (None, 3), "one per IP every 2 s");
        seed.handle_inbound(inbound(now + Duration::from_secs(2), asker, request(info.cookie)));
        assert!(matches!(seed.poll_event(), Some(Event::DialBackAsked { .. })));
    }

    /// Our ServerInfo to `asker`, from a seed that serves.
    fn cookie_for(seed: &mut FirstContact, now: Instant, asker: SocketAddr) -> u64 {
        seed.handle_inbound(inbound(now, asker, Kind::Hello(hello())));
        let Some(Transmit { payload, .. }) = seed.poll_transmit() else { panic!("no ServerInfo") };
        match frame::decode(&payload) {
            Ok(frame::Decoded::Envelope(pb::Envelope { kind: Some(Kind::ServerInfo(info)) })) => info.cookie,
            other => panic!("not a ServerInfo: {other:?}"),
        }
    }

    /// A member takes a members request only with the cookie its ServerInfo gave that very
    /// address, only while it serves, and within a budget per source IP; it answers nothing
    /// itself (the mesh does, to the address the event names: the proven one). Requests
    /// with a wrong cookie from the asker's IP do not spend the asker's budget.
    #[test]
    fn a_members_request_needs_the_askers_cookie_and_a_budget() {
        let now = Instant::now();
        let mut seed = contact(now);
        let asker: SocketAddr = "198.51.100.40:3478".parse().unwrap();
        let cookie = cookie_for(&mut seed, now, asker);
        let request = |cookie, offset| Kind::MembersRequest(pb::MembersRequest { cookie, request_id: 5, offset });
        seed.handle_inbound(inbound(now, asker, request(cookie, 0)));
        assert_eq!((seed.poll_event(), seed.dropped_members_request), (None, 1), "not serving: no member");
        seed.handle_command(now, Command::Serve);
        // The cookie from another address (a spoofer that saw it), a made-up one, none.
        seed.handle_inbound(inbound(now, "192.0.2.1:53".parse().unwrap(), request(cookie, 0)));
        seed.handle_inbound(inbound(now, asker, request(cookie ^ 1, 0)));
        seed.handle_inbound(inbound(now, asker, request(0, 0)));
        assert_eq!((seed.poll_event(), seed.dropped_members_request), (None, 4));
        assert!(seed.poll_transmit().is_none(), "first contact answers no members request itself");
        for _ in 0..100 {
            seed.handle_inbound(inbound(now, asker, request(cookie ^ 2, 0)));
        }
        let mut taken = 0;
        for _ in 0..100 {
            seed.handle_inbound(inbound(now, asker, request(cookie, 3)));
            while let Some(event) = seed.poll_event() {
                assert_eq!(
                    event,
                    Event::MembersAsked { socket: SocketId::PRIMARY, addr: asker, request_id: 5, offset: 3 }
                );
                taken += 1;
            }
        }
        assert_eq!(taken, MEMBERS_PER_IP.1 as usize, "a burst per IP, whatever was forged before");
        // Another IP has a budget of its own; a second later the asker has some again.
        let other: SocketAddr = "198.51.100.41:3478".parse().unwrap();
        let other_cookie = cookie_for(&mut seed, now, other);
        seed.handle_inbound(inbound(now, other, request(other_cookie, 0)));
        assert!(matches!(seed.poll_event(), Some(Event::MembersAsked { addr, .. }) if addr == other));
        let later = now + Duration::from_secs(1);
        let again: usize = (0..100)
            .map(|_| {
                seed.handle_inbound(inbound(later, asker, request(cookie, 0)));
                std::iter::from_fn(|| seed.poll_event()).count()
            })
            .sum();
        assert_eq!(again, MEMBERS_PER_IP.0 as usize);
    }

    /// The asker counts only a probe with its nonce from an IP that is not the seed's; it
    /// asks again while waiting and gives up after `DIAL_BACK_WAIT`.
    #[test]
    fn only_a_probe_from_elsewhere_with_our_nonce_says_reachable() {
        let now = Instant::now();
        let seed_addr: SocketAddr = "198.51.100.3:3478".parse().unwrap();
        let seed = Seed {
            addr: seed_addr,
            peer_id: Identity::from_seed(9).peer_id(),
            listen: vec![seed_addr, "198.51.100.4:3478".parse().unwrap()],
            observed: "198.51.100.40:3478".parse().unwrap(),
            introducer: true,
            cookie: 77,
        };
        let mut node = contact(now);
        node.handle_command(now, Command::DialBack { seed: seed.clone(), nonce: 5 });
        let asked: Vec<Transmit> = std::iter::from_fn(|| node.poll_transmit()).collect();
        assert!(matches!(&asked[..], [t] if t.dst == seed_addr), "{asked:?}");
        let probe = |nonce| Kind::DialBackProbe(pb::DialBackProbe { nonce });
        node.handle_inbound(inbound(now, "198.51.100.4:3478".parse().unwrap(), probe(5)));
        node.handle_inbound(inbound(now, "198.51.100.1:3478".parse().unwrap(), probe(6)));
        assert_eq!((node.poll_event(), node.dropped_dial_back), (None, 2), "the seed's own IP, a wrong nonce");
        let elsewhere: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        node.handle_inbound(inbound(now, elsewhere, probe(5)));
        assert_eq!(node.poll_event(), Some(Event::Reachable { from: elsewhere }));

        let mut silent = contact(now);
        silent.handle_command(now, Command::DialBack { seed, nonce: 5 });
        let mut requests = 0;
        while let Some(t) = silent.poll_timeout() {
            requests += std::iter::from_fn(|| silent.poll_transmit()).count();
            silent.handle_timeout(t);
        }
        assert_eq!(silent.poll_event(), Some(Event::NotReachable));
        assert_eq!(requests, 5, "asked at 0, 0.5, 1, 1.5 and 2 s: once past a seed's 2 s between two of one IP");
    }
}
