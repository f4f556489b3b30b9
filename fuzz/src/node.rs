//! A whole node under attack: the fixture of `sim/tests/amplification.rs` (the standard
//! RFC 5780 introducer and a peer registered with it from behind a port-restricted NAT,
//! on the simulator), with one of the two fed datagrams from spoofed sources while virtual
//! time runs on.
//!
//! After every step, everything any node sent since the last step is checked:
//!
//! - it decodes: [`frame::decode`] takes it, and a STUN datagram is a STUN message;
//! - what went to an address outside the fixture went to an address the attacker used as
//!   a source, and holds to the bytes that came from there: an address gets no more frame
//!   bytes than it sent in frames, and an IP gets STUN answers only for its STUN
//!   datagrams, each at most as long as the request or the full RFC 5780 answer (76 bytes
//!   for IPv4, 124 for IPv6; RESPONSE-PORT may move the answer to another port of the
//!   same IP, so STUN is counted per IP).
//!
//! The fixture's own hosts (both introducer IPs, the NAT's public IP, the peer's private
//! IP) proved where they receive, so what goes to them is not bounded; spoofing them is
//! how the attacker reaches the protocol's deeper states. A panic anywhere is a crash too.
//!
//! The attacker is blind at every address but its own few ([`STRANGERS`]): there it reads
//! what the target sends, and can answer a registration or relay challenge with the
//! cookie (and then ask for introductions as a registered peer). An address that echoed a
//! cookie proved it receives there, so from then on its IP is bounded no more than the
//! fixture's (punch proofs, sprays at an introduced IP): what an honest stranger that
//! registers gets.

use crate::gen::{self, Ctx};
use arbitrary::Unstructured;
use introducer_actors::cookie::request_mac;
use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::probe::server::full_answer_len;
use introducer_actors::relay::sign_request;
use introducer_actors::{Machine, SocketId};
use introducer_proto::frame::{self, Decoded};
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::stun;
use introducer_sim::node::SimNode;
use introducer_sim::standard::{Standard, INTRODUCER_ALT_IP, INTRODUCER_IP, NAT_IPS, PEER_PORT};
use introducer_sim::{HostId, Link, Place, Sent};
use libp2p_identity::{PeerId, PublicKey};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Which node the attacker sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The RFC 5780 introducer (also a relay), serving one registered peer.
    Introducer,
    /// The peer, registered with the introducer, behind its NAT.
    Peer,
}

/// Legitimate datagrams kept for the attacker to replay (the first ones and a rolling window).
const REPLAYS: usize = 64;

/// Addresses an attacker sends from again and again, so that what it sent adds up.
const STRANGERS: [&str; 5] =
    ["192.0.2.99:40000", "192.0.2.99:40001", "192.0.2.100:3478", "[2001:db8::99]:40000", "[::ffff:192.0.2.99]:40000"];

/// What the attacker knows at one of its own addresses.
#[derive(Debug, Default)]
struct Mine {
    /// What it last asked there (a challenge is answered by asking again with the cookie).
    register: Option<pb::Register>,
    relay: Option<pb::RelayRequest>,
    /// The registration cookie it echoed.
    cookie: Option<u64>,
    /// What the target sent there lately, latest last.
    inbox: Vec<Kind>,
}

pub struct Attack {
    standard: Standard,
    target: HostId,
    /// IPs of the fixture's own hosts and NAT.
    fixture: Vec<IpAddr>,
    /// Exact addresses the target knows (spoofing them reaches registered state).
    known: Vec<SocketAddr>,
    ctx: Ctx,
    /// Frame bytes each attacker address sent, and received.
    frames_in: HashMap<SocketAddr, usize>,
    frames_out: HashMap<SocketAddr, usize>,
    /// STUN bytes each attacker IP may be answered with, and was.
    stun_allowed: HashMap<IpAddr, usize>,
    stun_out: HashMap<IpAddr, usize>,
    /// The attacker's own addresses, and what it knows at each.
    mine: HashMap<SocketAddr, Mine>,
    /// IPs of the attacker's that proved they receive (echoed a cookie).
    proven: HashSet<IpAddr>,
    /// Legitimate datagrams seen on the wire, for replays.
    heard: Vec<Vec<u8>>,
    heard_total: usize,
    /// Datagrams the attacker sent.
    pub sent: usize,
}

/// The address as a node treats it: an IPv4-mapped IPv6 address is the IPv4 one.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Attack {
    /// The introducer and a peer registered with it (as in the amplification test), and
    /// the attacker aiming at `target`.
    pub fn new(target: Target) -> Self {
        let mut standard = Standard::new(1, Link::INTERNET_DEFAULT, false);
        standard.sim.record_sends();
        let introducer = standard.introducers[0];
        let peer = standard.peer(2);
        let nat = standard.sim.add_nat(NatBehavior::PORT_RESTRICTED, NAT_IPS[0], None);
        let peer = peer.spawn(&mut standard.sim, Place::Behind(nat), PEER_PORT);
        assert!(standard.run_until_registered(&[peer], Duration::from_secs(10)), "the fixture registers");
        let peer_ip = IpAddr::V4(standard.sim.host_ip(peer));
        let fixture = vec![INTRODUCER_IP.into(), INTRODUCER_ALT_IP.into(), NAT_IPS[0].into(), peer_ip];
        let known: Vec<SocketAddr> = match target {
            // The peer's public mappings (the introducer saw it at one of them) and its
            // private address.
            Target::Introducer => {
                let mapped = standard.sim.nat_mappings(nat).into_iter().map(|m| SocketAddr::V4(m.external));
                mapped.chain([standard.sim.local_addr(peer, SocketId::PRIMARY)]).collect()
            }
            Target::Peer => standard.sim.sockets(introducer).into_iter().map(|(_, a)| a).collect(),
        };
        let ctx =
            Ctx { peers: vec![Identity::from_seed(100).peer_id(), Identity::from_seed(2).peer_id()], nonces: vec![] };
        let mut attack = Attack {
            target: match target {
                Target::Introducer => introducer,
                Target::Peer => peer,
            },
            standard,
            fixture,
            known,
            ctx,
            frames_in: HashMap::new(),
            frames_out: HashMap::new(),
            stun_allowed: HashMap::new(),
            stun_out: HashMap::new(),
            mine: STRANGERS
                .iter()
                .map(|a| (canonical(a.parse().expect("a socket address")), Mine::default()))
                .collect(),
            proven: HashSet::new(),
            heard: Vec::new(),
            heard_total: 0,
            sent: 0,
        };
        attack.check();
        attack
    }

    /// Every source the input can name: the attacker's own addresses, the exact addresses
    /// the target knows, and other ports at the fixture's IPs.
    fn sources(&self) -> Vec<SocketAddr> {
        let strangers = STRANGERS.iter().map(|s| s.parse().expect("a socket address"));
        let beside = self.fixture.iter().map(|&ip| SocketAddr::new(ip, 1));
        strangers.chain(self.known.iter().copied()).chain(beside).collect()
    }

    /// One step (see [`Step`]): time passes (the fixture talks on), then one datagram from
    /// a spoofed source arrives at one of the target's sockets; everything sent is checked.
    pub fn step(&mut self, step: &Step) {
        self.run(step.wait());
        let sources = self.sources();
        let src = sources[usize::from(step.source) % sources.len()];
        let datagram = match step.what % 5 {
            4 => {
                let own = STRANGERS[usize::from(step.source) % STRANGERS.len()].parse().expect("a socket address");
                let Some(answer) = self.answer(own, step.payload) else {
                    return;
                };
                let sockets = self.standard.sim.sockets(self.target);
                let (socket, _) = sockets[usize::from(step.socket) % sockets.len()];
                return self.deliver(socket, own, &answer);
            }
            0 => step.payload.to_vec(),
            1 if !self.heard.is_empty() => {
                let [pick, at, xor, ..] = *step.payload else {
                    return;
                };
                let mut replay = self.heard[usize::from(pick) % self.heard.len()].clone();
                if let Some(byte) = replay.get_mut(usize::from(at)) {
                    *byte ^= xor;
                }
                replay
            }
            _ => match gen::datagram(&mut Unstructured::new(step.payload), &self.ctx) {
                Ok(datagram) => datagram,
                Err(_) => return,
            },
        };
        let sockets = self.standard.sim.sockets(self.target);
        let (socket, _) = sockets[usize::from(step.socket) % sockets.len()];
        self.deliver(socket, src, &datagram);
    }

    /// The attacker at its address `own` answers what it was last challenged with (the
    /// cookie echoed, signed by the key it asked with), or, registered, asks for an
    /// introduction to a peer the `payload` picks.
    fn answer(&mut self, own: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        let mine = self.mine.get_mut(&canonical(own))?;
        let signer = |key: &[u8]| {
            let peer = PublicKey::try_decode_protobuf(key).ok()?.to_peer_id();
            gen::attackers().iter().find(|a| a.peer_id() == peer)
        };
        let kind = match mine.inbox.pop() {
            Some(Kind::RegisterChallenge(c)) => {
                let register = mine.register.clone()?;
                let me = signer(&register.record.as_ref()?.public_key)?;
                mine.cookie = Some(c.cookie);
                let proof = me.register_proof(c.cookie, c.nonce).into();
                Kind::Register(pb::Register { cookie: c.cookie, nonce: c.nonce, proof, ..register })
            }
            Some(Kind::RelayChallenge(c)) => {
                let request = mine.relay.clone()?;
                let me = signer(&request.public_key)?;
                let target = PeerId::from_bytes(&request.target).ok()?;
                Kind::RelayRequest(sign_request(me, &target, &request.nonce, c.cookie))
            }
            _ => {
                let cookie = mine.cookie?;
                let pick = usize::from(*payload.first()?);
                let target = self.ctx.peers[pick % self.ctx.peers.len()].to_bytes().into();
                let mut request = pb::IntroduceRequest { target, request_id: pick as u64, mac: 0 };
                request.mac = request_mac(cookie, &request);
                Kind::IntroduceRequest(request)
            }
        };
        self.proven.insert(canonical(own).ip());
        Some(frame::encode_envelope(&pb::Envelope { kind: Some(kind) }))
    }

    /// Hands `datagram` from `src` to the target as its socket would, and checks what
    /// comes of it at once.
    pub fn deliver(&mut self, socket: SocketId, src: SocketAddr, datagram: &[u8]) {
        self.sent += 1;
        let from = canonical(src);
        if !self.fixture.contains(&from.ip()) {
            if datagram.first().is_some_and(|&b| b <= 3) {
                let cap = full_answer_len(from.is_ipv6()).max(datagram.len());
                *self.stun_allowed.entry(from.ip()).or_default() += cap;
            } else {
                *self.frames_in.entry(from).or_default() += datagram.len();
            }
        }
        if let (Some(mine), Ok(Decoded::Envelope(e))) = (self.mine.get_mut(&from), frame::decode(datagram)) {
            match e.kind {
                Some(Kind::Register(r)) => mine.register = Some(r),
                Some(Kind::RelayRequest(r)) => mine.relay = Some(r),
                _ => {}
            }
        }
        let sim = &mut self.standard.sim;
        let now = sim.now();
        sim.machine::<SimNode>(self.target).handle_datagram(now, socket, src, datagram);
        self.run(Duration::ZERO);
    }

    /// Runs the simulation for `d` and checks what was sent.
    pub fn run(&mut self, d: Duration) {
        self.standard.sim.run_for(d);
        self.check();
    }

    /// Lets the fixture talk on for a while after the last datagram, and checks that too.
    pub fn finish(&mut self) {
        self.run(Duration::from_secs(5));
    }

    fn check(&mut self) {
        for sent in self.standard.sim.take_sends() {
            self.check_one(sent);
        }
    }

    fn check_one(&mut self, sent: Sent) {
        let Sent { from, dst, payload, .. } = sent;
        let decoded = frame::decode(&payload);
        let stun = match &decoded {
            Ok(Decoded::Stun(bytes)) => {
                if let Err(e) = stun::Message::decode(bytes) {
                    panic!("{from} sent a STUN datagram that does not decode ({e}) to {dst}: {payload:02x?}");
                }
                true
            }
            Ok(Decoded::Envelope(envelope)) => {
                self.learn(envelope.kind.as_ref());
                false
            }
            Err(e) => {
                panic!("{from} sent a datagram that does not decode ({e}) to {dst}: {payload:02x?}")
            }
        };
        let to = canonical(dst);
        if let (Some(mine), Ok(Decoded::Envelope(e))) = (self.mine.get_mut(&to), &decoded) {
            if mine.inbox.len() == 8 {
                mine.inbox.remove(0);
            }
            mine.inbox.extend(e.kind.clone());
        }
        if self.fixture.contains(&to.ip()) || self.proven.contains(&to.ip()) {
            self.hear(payload);
            return;
        }
        let len = payload.len();
        if stun {
            let out = self.stun_out.entry(to.ip()).or_default();
            *out += len;
            let allowed = self.stun_allowed.get(&to.ip()).copied().unwrap_or(0);
            assert!(
                *out <= allowed,
                "{from} sent {out} B of STUN to {} (this one {len} B to {dst}), allowed {allowed} B",
                to.ip()
            );
        } else {
            let out = self.frames_out.entry(to).or_default();
            *out += len;
            let came = self.frames_in.get(&to).copied().unwrap_or(0);
            assert!(
                *out <= came,
                "{from} sent {out} B of frames to {dst} (this one {len} B: {payload:02x?}), which sent {came} B"
            );
        }
    }

    /// Keeps a legitimate datagram for replays: the first [`REPLAYS`], then a rolling window.
    fn hear(&mut self, payload: Vec<u8>) {
        if self.heard.len() < REPLAYS {
            self.heard.push(payload);
        } else {
            let slot = REPLAYS / 2 + self.heard_total % (REPLAYS / 2);
            self.heard[slot] = payload;
        }
        self.heard_total += 1;
    }

    /// Nonces on the wire, for the generator to name.
    fn learn(&mut self, kind: Option<&Kind>) {
        let nonce = match kind {
            Some(Kind::Introduction(i)) => &i.nonce,
            Some(Kind::Punch(p)) => &p.nonce,
            Some(Kind::RelayRequest(r)) => &r.nonce,
            _ => return,
        };
        if self.ctx.nonces.len() < 8 && !self.ctx.nonces.iter().any(|n| n[..] == nonce[..]) {
            self.ctx.nonces.push(nonce.to_vec());
        }
    }

    /// What the target's roles dropped: for a target's statistics, and to see the fuzz
    /// input reached past decoding.
    pub fn drops(&self) -> introducer_sim::node::Drops {
        self.standard.sim.machine_ref::<SimNode>(self.target).drops()
    }
}

/// One step of a machine target's input: 6 bytes and a payload.
///
/// | byte | meaning |
/// |---|---|
/// | 0 | what the payload is: (mod 5) 0 the datagram itself; 1 a replay of a datagram the fixture sent (payload: which, at which byte, XOR what); 2, 3 input for [`gen::datagram`]; 4 none: the attacker answers at its own address (see [`Attack`]) |
/// | 1 | the source: an index into the attacker's addresses, the target's known ones, and other ports at fixture IPs (for 4: into the attacker's own) |
/// | 2 | how long virtual time runs first ([`Step::wait`]) |
/// | 3 | the target's socket it arrives on (index) |
/// | 4, 5 | the payload's length, little-endian (cut to what is left) |
///
/// A plain format rather than [`Unstructured`] for all of it, so that the seed corpus
/// can be written from real datagrams (`examples/seeds.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    pub what: u8,
    pub source: u8,
    pub wait: u8,
    pub socket: u8,
    pub payload: &'a [u8],
}

impl<'a> Step<'a> {
    /// Splits the next step off `input`; `None` when fewer than the 6 header bytes are left.
    pub fn parse(input: &mut &'a [u8]) -> Option<Self> {
        let (&[what, source, wait, socket, l0, l1], rest) = input.split_first_chunk::<6>()?;
        let len = usize::from(u16::from_le_bytes([l0, l1])).min(rest.len());
        let (payload, rest) = rest.split_at(len);
        *input = rest;
        Some(Step { what, source, wait, socket, payload })
    }

    /// Appends the step to `out` (the seed corpus writer).
    pub fn write(&self, out: &mut Vec<u8>) {
        let len = u16::try_from(self.payload.len()).expect("a payload under 64 KiB");
        out.extend_from_slice(&[self.what, self.source, self.wait, self.socket]);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.payload);
    }

    /// Virtual time before the datagram: none, up to 1 s in 10 ms, up to 100 s in seconds,
    /// or up to 27 minutes in half minutes (registrations and circuits lapse).
    pub fn wait(&self) -> Duration {
        match self.wait {
            0 => Duration::ZERO,
            n @ 1..=100 => Duration::from_millis(u64::from(n) * 10),
            n @ 101..=200 => Duration::from_secs(u64::from(n - 100)),
            n => Duration::from_secs(u64::from(n - 200) * 30),
        }
    }
}

/// The body of a machine target: a fresh fixture, then steps until the input runs out.
pub fn run(target: Target, mut data: &[u8]) {
    let mut attack = Attack::new(target);
    while let Some(step) = Step::parse(&mut data) {
        attack.step(&step);
    }
    attack.finish();
}
