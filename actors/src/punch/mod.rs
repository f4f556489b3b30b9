//! Hole punching: one [`Attempt`] per introduction.
//!
//! Both peers learn from the introducer where the other was seen, what NAT it reported
//! and a shared nonce. [`plan()`] picks the candidate addresses and who sends first; the
//! attempt then sends signed punch proofs to every candidate on a steady pace. A proof
//! that arrives is answered with an acknowledging proof; a path counts as connected only
//! when an *acknowledging* proof arrives over it, i.e. when both sides have shown their
//! PeerId over that very path. After connecting the attempt lingers to acknowledge the
//! peer's late proofs (it may not have our acknowledgement yet), then ends.
//!
//! Against a hard (destination-dependent) NAT nobody knows the port to aim at, so the
//! birthday paradox does the aiming: the hard side sends from a pool of sockets (each a
//! fresh mapping on its NAT) toward the easy side, and the easy side sprays proofs at
//! random ports of the hard side's IP. With 256 mappings open out of ~64k ports, k random
//! probes hit with probability 1 − (1 − 256/64512)^k: 174 → 50 %, 1024 → 98 %,
//! 2048 → 99.97 %. The first hit is answered from the pool socket it landed on, and that
//! socket carries the session. Spraying goes only at the IP an authenticated introduction
//! named, and is capped in rate and total.

use crate::identity::{verify_punch, Identity};
use crate::nat::NatReport;
use crate::session::noise::{Handshake, Keys, INITIATION_LEN};

use crate::{SocketId, Transmit};
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind};
use libp2p_identity::PeerId;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub mod actor;
pub mod plan;

pub use plan::{plan, strategy, Birthday, Candidate, Path, Plan, Prediction, Strategy, Unpunchable, Walk};

#[derive(Debug, Clone)]
pub struct Config {
    /// Pause between rounds of proofs to every candidate.
    pub interval: Duration,
    /// Give up this long after the introduction.
    pub timeout: Duration,
    /// How long a side that should not send first waits before sending anyway.
    pub responder_delay: Duration,
    /// How long a connected attempt keeps acknowledging the peer's proofs.
    pub linger: Duration,
    /// Acknowledgements per attempt, at most: a replayed proof cannot make us a reflector.
    pub max_acks: u32,
    /// Addresses learned from proofs arriving from elsewhere than planned (peer-reflexive).
    pub max_candidates: usize,
    /// Attempts under way at once, at most: each sends up to `timeout / interval` rounds.
    pub max_attempts: usize,
    /// ...of which toward one peer IP, and toward one network (/24, /48): identities cost
    /// nothing, so one host minting peers must not take every slot.
    pub max_attempts_per_ip: usize,
    pub max_attempts_per_network: usize,
    /// When the public path answers first but LAN candidates exist (peers behind one NAT
    /// that hairpins), how long to wait for a LAN answer, which is the better path.
    pub local_grace: Duration,
    /// Sockets a node behind a hard NAT keeps for birthday punching (bound once, reused).
    pub pool_size: u16,
    /// How often the hard side re-sends from every pool socket, keeping its mappings open.
    pub pool_refresh: Duration,
    /// A paced pool ([`Birthday::Pool`]) sends from this many sockets every `pool_pace`:
    /// 8 per 5 ms (1,600 proofs/s, the whole pool in 160 ms) is a small share of what even
    /// a debug build behind a loaded CPU takes in (the real-NAT lab's peers handled 12,000
    /// proofs/s and dropped 40 to 90 of a 256-proof burst).
    pub pool_burst: u16,
    pub pool_pace: Duration,
    /// The pool is closed after this long without an attempt using it, and bound again
    /// when one needs it.
    pub pool_idle: Duration,
    /// Random ports the easy side tries per round, and in all.
    pub spray_per_round: u32,
    pub spray_max: u32,
    /// Attempts spraying at once, at most: 4 × 500 probes/s is all a node ever sprays.
    pub max_spraying: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(10),
            responder_delay: Duration::from_secs(1),
            linger: Duration::from_secs(10),
            max_acks: 256,
            max_candidates: 8,
            max_attempts: 64,
            max_attempts_per_ip: 4,
            max_attempts_per_network: 16,
            local_grace: Duration::from_millis(50),
            pool_size: 256,
            pool_refresh: Duration::from_secs(2),
            pool_burst: 8,
            pool_pace: Duration::from_millis(5),
            pool_idle: Duration::from_secs(60),
            // 500 probes/s: 2048 probes (99.97 % against 256 mappings) in about 4 s.
            spray_per_round: 25,
            spray_max: 2048,
            max_spraying: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Our proof was acknowledged over `remote`. `proven` lists every address the peer
    /// proved itself over so far; the `initiator` (the side that asked for the
    /// introduction) controls which path the session uses, the other side follows.
    Connected {
        peer: PeerId,
        /// Our socket the path runs from (a pool socket after a birthday punch).
        socket: SocketId,
        remote: SocketAddr,
        proven: Vec<SocketAddr>,
        initiator: bool,
        path: Path,
        strategy: Strategy,
        probes: u32,
        elapsed: Duration,
        /// The session's keys, from the handshake the proofs carried.
        keys: Keys,
    },
    /// An attempt began: the plan chosen from the two NATs (for people watching: it is
    /// what explains a slow or relayed connection).
    Started { peer: PeerId, initiator: bool, strategy: Strategy, ours: NatReport, theirs: NatReport },
    /// Still punching, at most every [`PROGRESS_EVERY`]: proofs sent so far.
    Probing { peer: PeerId, probes: u32, sprayed: u32 },
    /// After connecting, the peer proved itself over one more address.
    PathProven { peer: PeerId, addr: SocketAddr },
    /// No authenticated answer in time.
    Failed { peer: PeerId, error: TimedOut },
    /// An introduction was not punched (and will not be): the relay may carry it.
    Refused { peer: PeerId, initiator: bool, why: Unpunchable },
    /// An introduction needs the birthday pool, which is closed: bind it and
    /// [`actor::Attempts::set_pool`]; the attempt starts then.
    NeedPool,
    /// Nothing used the pool for [`Config::pool_idle`]: it is no longer used; close it.
    PoolIdle,
}

/// A punch that found no path in time, with what it tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no authenticated answer ({}) within {after:?} ({probes} probes, {sprayed} of them sprayed)", strategy.as_str())]
pub struct TimedOut {
    pub strategy: Strategy,
    pub after: Duration,
    pub probes: u32,
    pub sprayed: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub probes: u32,
    pub acks: u32,
    pub dropped_bad_proof: u32,
    pub dropped_over_ack_limit: u32,
    /// Proofs smaller than our answer would be (fields stripped): not answered.
    pub dropped_short_proof: u32,
    /// Of the probes, those sprayed at guessed ports.
    pub sprayed: u32,
    /// Handshake messages on verified proofs that did not authenticate.
    pub dropped_bad_handshake: u32,
}

/// A probe target: from which of our sockets, to where, and what kind of path it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    socket: SocketId,
    addr: SocketAddr,
    path: Path,
}

/// Predicted guesses at a pool before falling back to random ones: with a stride of half
/// the pool, 32 guesses cover 4096 allocations by anyone behind the hard NAT since it
/// registered.
const PREDICTED_GUESSES: u32 = 32;

/// The first pass of a [`Walk::Both`]: the two sides meet within it when fewer than 64
/// ports were taken on both NATs together since the introducer saw them (each pass
/// doubles; five passes fit in `spray_max`).
const FIRST_PASS: u32 = 64;

/// How long a [`Walk::Both`] waits for the peer's new mapping before walking from where
/// the peer registered (its NAT's counter may have moved far since).
const NEW_MAPPING_WAIT: Duration = Duration::from_secs(1);

/// The easy side's guesses at the hard side's ports.
struct Spray {
    ip: IpAddr,
    rng: StdRng,
    tried: HashSet<u16>,
    predict: Option<Prediction>,
    /// Predicted guesses made so far (in this pass, for [`Walk::Both`]).
    predicted: u32,
    /// Stride between predicted guesses, in allocations: half the hard side's pool, so
    /// its block of consecutive ports cannot fall between two guesses; 1 or 2 when both
    /// sides walk.
    stride: i64,
    /// The current pass's length ([`Walk::Both`]).
    pass: u32,
    /// Its own pace: the spray rate holds whatever else makes the attempt send.
    next: Instant,
}

/// Addresses a peer may prove itself over, kept at most (a hard peer's pool sends from
/// hundreds of ports; a full-cone side sees them all).
const MAX_PROVEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Punching,
    /// Lingering to acknowledge the peer's proofs until `until`; the proof that lets the
    /// peer trust the winning path goes `via` it `resends` more times, the next at `next`.
    Connected {
        until: Instant,
        via: Target,
        resends: u32,
        next: Instant,
    },
    Done,
}

/// Copies of the path-proving proof after the first, 100, 200 and 400 ms apart: one lost
/// datagram (a socket buffer overflowing under a birthday burst, say) must not leave the
/// peer punching on toward another path of ours.
const REPROOFS: u32 = 3;
/// How often an attempt tells how many proofs it sent.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const FIRST_REPROOF: Duration = Duration::from_millis(100);

pub struct Attempt {
    config: Config,
    peer: PeerId,
    /// Where the introducer saw the peer (what per-IP limits count).
    pub(crate) peer_ip: IpAddr,
    me: PeerId,
    nonce: Vec<u8>,
    initiator: bool,
    strategy: Strategy,
    /// Probed every round.
    targets: Vec<Target>,
    /// The hard side's pool, each socket sending to `pool_target` every `pool_refresh`;
    /// `pool_burst` at a time when `pool_paced`.
    pool: Vec<SocketId>,
    pool_target: Option<SocketAddr>,
    pool_paced: bool,
    next_pool_send: Instant,
    /// The pool socket the current pass goes on from, and when that pass began.
    pool_next: usize,
    pool_pass: Instant,
    spray: Option<Spray>,
    /// Addresses the peer proved itself over, in order of first proof.
    proven: Vec<SocketAddr>,
    /// Our proof, signed once; each datagram adds its path tokens and the handshake.
    proof: pb::Punch,
    /// The session's Noise handshake, riding the proofs: the initiator's message on every
    /// proof of the initiator's, the responder's answer on the responder's once made.
    handshake: Handshake,
    /// Keys the path tokens: local, so a peer cannot forge an echo.
    secret: [u8; 32],
    /// The token last received from each address on each of our sockets (what we echo back
    /// there). Per socket: the peer's token names the address it saw us at, and each socket of
    /// a birthday pool is a different one to it, though all send to the same address.
    echoes: HashMap<(SocketId, SocketAddr), u64>,
    started: Instant,
    next_send: Instant,
    /// When the next [`Event::Probing`] may be told (rounds wake the attempt often enough).
    next_progress: Instant,
    /// Rounds of proofs sent to the targets so far.
    rounds: u32,
    /// A public path that answered while LAN candidates were still pending, and until when
    /// to wait for one of those.
    grace: Option<(Target, Instant)>,
    state: State,
    stats: Stats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Attempt {
    /// `pool` is this node's birthday socket pool (used when the plan says we are the hard
    /// side); the plan's candidates are probed from the primary socket. `secret` keys the
    /// path tokens (random per node; the attempt mixes in its nonce). `handshake` makes the
    /// session's keys: the initiator's side at the initiator, bound to `nonce`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        me: &Identity,
        peer: PeerId,
        nonce: Vec<u8>,
        initiator: bool,
        plan: Plan,
        pool: &[SocketId],
        secret: &[u8; 32],
        handshake: Handshake,
        now: Instant,
    ) -> Self {
        tracing::debug!(%peer, ?plan, initiator, "punching");
        let secret = Sha256::new().chain_update(secret).chain_update(&nonce).finalize().into();
        let next_send = if plan.send_first { now } else { now + config.responder_delay };
        let targets = plan.candidates.iter().map(|c| Target { socket: SocketId::PRIMARY, addr: c.addr, path: c.path });
        let (pool, pool_target, spray) = match plan.birthday {
            Some(Birthday::Pool { target, .. }) => (pool.to_vec(), Some(target), None),
            Some(Birthday::Spray { ip, predict }) => {
                // Seeded by the nonce: deterministic on the simulator, unpredictable to others.
                let seed = nonce.iter().fold(0u64, |acc, b| acc.rotate_left(8) ^ u64::from(*b));
                let stride = match predict.map(|p| p.walk) {
                    Some(Walk::Both) => 2 - i64::from(initiator),
                    _ => (i64::from(config.pool_size) / 2).max(1),
                };
                let rng = StdRng::seed_from_u64(seed);
                let (tried, pass) = (HashSet::new(), FIRST_PASS);
                let next = match predict.map(|p| p.walk) {
                    Some(Walk::Both) => now + NEW_MAPPING_WAIT,
                    _ => now,
                };
                let spray = Spray { ip, rng, tried, predict, predicted: 0, stride, pass, next };
                (Vec::new(), None, Some(spray))
            }
            None => (Vec::new(), None, None),
        };
        let pool_paced = matches!(plan.birthday, Some(Birthday::Pool { paced: true, .. }));
        Attempt {
            peer_ip: IpAddr::from([0, 0, 0, 0]),
            proof: me.punch(&nonce, &peer, false),
            handshake,
            secret,
            echoes: HashMap::new(),
            peer,
            me: me.peer_id(),
            nonce,
            initiator,
            strategy: plan.strategy,
            targets: targets.collect(),
            pool,
            pool_target,
            pool_paced,
            next_pool_send: now,
            pool_next: 0,
            pool_pass: now,
            spray,
            proven: Vec::new(),
            started: now,
            next_send,
            next_progress: now + PROGRESS_EVERY,
            rounds: 0,
            grace: None,
            state: State::Punching,
            stats: Stats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            config,
        }
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether both sides walk each other's sequential ports: then each side shows the
    /// introducer a new mapping ([`Attempt::show_new_mapping`]).
    pub fn walks_both(&self) -> bool {
        self.spray.as_ref().and_then(|s| s.predict).is_some_and(|p| p.walk == Walk::Both)
    }

    /// Shows the introducer a new mapping from `socket`, which must not have talked to it
    /// lately: our NAT maps it anew, at the port its counter has reached, and the
    /// introducer passes that on to the peer.
    pub fn show_new_mapping(&mut self, me: &Identity, socket: SocketId, introducer: SocketAddr) {
        let payload =
            encode_envelope(&pb::Envelope { kind: Some(Kind::NewMapping(me.new_mapping(&self.nonce, &self.peer))) });
        self.transmits.push_back(Transmit { socket, dst: introducer, payload });
    }

    /// The introducer passed on a new mapping of the peer's: a walk of both sides starts
    /// over from there, at once.
    pub fn peer_moved(&mut self, now: Instant, addr: SocketAddr) {
        let Some(spray) = self.spray.as_mut().filter(|s| s.ip == addr.ip()) else { return };
        let Some(p) = spray.predict.as_mut().filter(|p| p.walk == Walk::Both) else { return };
        if p.last != addr.port() {
            tracing::debug!(peer = %self.peer, from = p.last, to = addr.port(), "peer showed a new mapping");
            p.last = addr.port();
            (spray.predicted, spray.pass) = (0, FIRST_PASS);
        }
        spray.next = spray.next.min(now);
    }

    /// Whether the attempt sends from the birthday pool.
    pub fn uses_pool(&self) -> bool {
        self.pool_target.is_some() && !self.is_done()
    }

    /// Whether the attempt is still spraying guesses.
    pub fn is_spraying(&self) -> bool {
        self.state == State::Punching && self.spray.is_some() && self.stats.sprayed < self.config.spray_max
    }

    /// True once the attempt has nothing more to do and can be dropped.
    /// Still looking for a path (not lingering after one, not over).
    pub fn is_punching(&self) -> bool {
        self.state == State::Punching
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A punch proof arrived on `socket` from `src`. Proofs that do not verify are dropped
    /// and counted.
    pub fn handle_punch(&mut self, now: Instant, socket: SocketId, src: SocketAddr, punch: &pb::Punch) {
        if self.state == State::Done {
            return;
        }
        if verify_punch(punch, &self.peer, &self.me, &self.nonce).is_err() {
            self.stats.dropped_bad_proof += 1;
            tracing::debug!(peer = %self.peer, %src, "dropped punch proof that does not verify");
            return;
        }
        if self.handshake.keys().is_none() && !punch.handshake.is_empty() {
            if let Err(e) = self.handshake.handle(&punch.handshake) {
                self.stats.dropped_bad_handshake += 1;
                tracing::debug!(peer = %self.peer, %src, "handshake on a punch proof dropped: {e}");
            }
        }
        // Does it echo our token for this very address, i.e. does the peer receive here?
        let verified = punch.echo == Some(self.token(src));
        tracing::debug!(peer = %self.peer, %src, ack = ?punch.ack, verified, state = ?self.state, "punch proof");
        if self.echoes.len() < MAX_PROVEN + self.pool.len() || self.echoes.contains_key(&(socket, src)) {
            self.echoes.insert((socket, src), punch.token.unwrap_or_default());
        }
        if verified && !self.proven.contains(&src) && self.proven.len() < MAX_PROVEN {
            self.proven.push(src);
            if matches!(self.state, State::Connected { .. }) {
                self.events.push_back(Event::PathProven { peer: self.peer, addr: src });
            }
        }
        if punch.ack != Some(true) {
            // Answered 1:1 whatever the address, capped per attempt, and never larger than
            // the proof: a captured proof with its optional fields stripped earns nothing.
            let answer = self.proof_to(socket, src, true);
            if answer.encoded_len() > punch.encoded_len() {
                self.stats.dropped_short_proof += 1;
            } else if self.stats.acks >= self.config.max_acks {
                self.stats.dropped_over_ack_limit += 1;
            } else {
                self.stats.acks += 1;
                let payload = encode_envelope(&pb::Envelope { kind: Some(Kind::Punch(answer)) });
                self.transmits.push_back(Transmit { socket, dst: src, payload });
            }
            // Probed from now on, from the socket it reached: an address the introduction
            // named (the peer may answer from a pool socket), or one the peer proved.
            let planned = self.targets.iter().any(|t| t.addr == src) || self.pool_target == Some(src);
            let known = self.targets.iter().any(|t| t.addr == src && t.socket == socket);
            let sent = (planned || verified)
                && !known
                && self.add_target(Target { socket, addr: src, path: self.path_to(src) });
            // The peer receives here (it echoed our token): our proof goes back now rather
            // than with the next round, so that the peer's answer connects us at once.
            if verified && !sent && self.state == State::Punching {
                self.send_proof(socket, src);
            }
            // A responder need not wait any longer: the peer's NAT is open toward us. Only
            // the first round moves up: later proofs must not set the pace.
            if self.state == State::Punching && self.rounds == 0 && self.next_send > now {
                self.next_send = now;
            }
        }
        // A proof from an address of the hard side that echoes our guess there: a hit.
        if verified && self.spray.as_ref().is_some_and(|s| s.ip == src.ip()) {
            tracing::debug!(peer = %self.peer, %src, sprayed = self.stats.sprayed, "birthday hit");
            self.spray = None;
            if !self.targets.iter().any(|t| t.addr == src) {
                self.add_target(Target { socket, addr: src, path: Path::Direct });
            }
        }
        // Connected: the peer proved this path, and both sides hold the session's keys (the
        // initiator's answer carries its initiation, the responder's carries its answer).
        if punch.ack == Some(true) && verified && self.state == State::Punching && self.handshake.keys().is_some() {
            let target = Target { socket, addr: src, path: self.path_to(src) };
            let lan_pending = self.targets.iter().any(|t| t.path == Path::Local);
            match (target.path, lan_pending) {
                (Path::Direct, true) => {
                    self.grace.get_or_insert((target, now + self.config.local_grace));
                }
                _ => self.connect(now, target),
            }
        }
    }

    /// Probes `target` from now on, starting at once: it answered, so the round's pace
    /// need not delay the proof that lets the peer connect. At most `max_candidates`.
    /// Whether a proof went out.
    fn add_target(&mut self, target: Target) -> bool {
        if self.targets.len() >= self.config.max_candidates {
            return false;
        }
        self.targets.push(target);
        let punching = self.state == State::Punching;
        if punching {
            self.send_proof(target.socket, target.addr);
        }
        punching
    }

    /// One proof (not an answer) to `dst`, from `socket`, outside the rounds.
    fn send_proof(&mut self, socket: SocketId, dst: SocketAddr) {
        let payload = self.frame(socket, dst, false);
        self.transmits.push_back(Transmit { socket, dst, payload });
        self.stats.probes += 1;
    }

    /// Our token for `addr`: a keyed hash only we can compute.
    fn token(&self, addr: SocketAddr) -> u64 {
        let digest = Sha256::new().chain_update(self.secret).chain_update(addr.to_string()).finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
    }

    /// Our proof for `dst` from `socket`: its path token, and the token `dst` last sent to
    /// that socket echoed (every field always present, so every proof of ours has the same size).
    /// The responder's proofs are padded to an initiation's size: they may be answered by
    /// the initiator with one.
    fn proof_to(&self, socket: SocketId, dst: SocketAddr, ack: bool) -> pb::Punch {
        let handshake = self.handshake.message().unwrap_or_default();
        let padding = if ack || self.initiator { 0 } else { INITIATION_LEN.saturating_sub(handshake.len()) };
        pb::Punch {
            ack: Some(ack),
            token: Some(self.token(dst)),
            echo: Some(self.echoes.get(&(socket, dst)).copied().unwrap_or_default()),
            handshake: handshake.to_vec().into(),
            padding: vec![0; padding].into(),
            ..self.proof.clone()
        }
    }

    fn frame(&self, socket: SocketId, dst: SocketAddr, ack: bool) -> Vec<u8> {
        encode_envelope(&pb::Envelope { kind: Some(Kind::Punch(self.proof_to(socket, dst, ack))) })
    }

    fn path_to(&self, addr: SocketAddr) -> Path {
        self.targets.iter().find(|t| t.addr == addr).map_or(Path::Direct, |t| t.path)
    }

    fn connect(&mut self, now: Instant, via @ Target { socket, addr: remote, path }: Target) {
        let until = now + self.config.linger;
        self.state = State::Connected { until, via, resends: REPROOFS, next: now + FIRST_REPROOF };
        self.events.push_back(Event::Connected {
            peer: self.peer,
            socket,
            remote,
            proven: self.proven.clone(),
            initiator: self.initiator,
            path,
            strategy: self.strategy,
            probes: self.stats.probes,
            elapsed: now - self.started,
            keys: self.handshake.keys().expect("connected only with keys").clone(),
        });
        // One more proof back over the winning path: it echoes the peer's token there, so a
        // peer that only knew this address from our proofs can trust it too.
        self.send_proof(socket, remote);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((target, until)) = self.grace.filter(|_| self.state == State::Punching) {
            if now >= until {
                return self.connect(now, target);
            }
        }
        match self.state {
            State::Punching if now >= self.started + self.config.timeout => {
                self.state = State::Done;
                let error = TimedOut {
                    strategy: self.strategy,
                    after: self.config.timeout,
                    probes: self.stats.probes,
                    sprayed: self.stats.sprayed,
                };
                self.events.push_back(Event::Failed { peer: self.peer, error });
            }
            State::Punching => {
                if now >= self.next_send {
                    self.send_round();
                    self.next_send = now + self.config.interval;
                }
                if self.spray.as_ref().is_some_and(|s| now >= s.next) {
                    self.send_spray(now);
                }
                if let Some(target) = self.pool_target.filter(|_| now >= self.next_pool_send) {
                    self.send_pool(now, target);
                }
                if now >= self.next_progress && self.stats.probes > 0 {
                    self.next_progress = now + PROGRESS_EVERY;
                    let (probes, sprayed) = (self.stats.probes, self.stats.sprayed);
                    self.events.push_back(Event::Probing { peer: self.peer, probes, sprayed });
                }
            }
            State::Connected { until, .. } if now >= until => self.state = State::Done,
            State::Connected { until, via, resends, next } if resends > 0 && now >= next => {
                self.send_proof(via.socket, via.addr);
                let next = now + FIRST_REPROOF * 2u32.pow(REPROOFS - resends + 1);
                self.state = State::Connected { until, via, resends: resends - 1, next };
            }
            _ => {}
        }
    }

    /// One round: a proof to every target.
    fn send_round(&mut self) {
        self.rounds += 1;
        for target in &self.targets {
            let payload = self.frame(target.socket, target.addr, false);
            self.transmits.push_back(Transmit { socket: target.socket, dst: target.addr, payload });
        }
        self.stats.probes += self.targets.len() as u32;
    }

    /// The pool's next proofs to `target`: the whole pass at once, or its next
    /// `pool_burst` sockets when paced. A pass starts `pool_refresh` after the last began.
    fn send_pool(&mut self, now: Instant, target: SocketAddr) {
        if self.pool_next == 0 {
            self.pool_pass = now;
        }
        let burst = if self.pool_paced { usize::from(self.config.pool_burst.max(1)) } else { self.pool.len() };
        let end = (self.pool_next + burst).min(self.pool.len());
        for i in self.pool_next..end {
            let socket = self.pool[i];
            let payload = self.frame(socket, target, false);
            self.transmits.push_back(Transmit { socket, dst: target, payload });
        }
        self.stats.probes += (end - self.pool_next) as u32;
        if end < self.pool.len() {
            (self.pool_next, self.next_pool_send) = (end, now + self.config.pool_pace);
        } else {
            (self.pool_next, self.next_pool_send) = (0, self.pool_pass + self.config.pool_refresh);
        }
    }

    /// The next batch of guesses at the hard side's ports, never the same port twice.
    fn send_spray(&mut self, now: Instant) {
        let Some(spray) = &mut self.spray else { return };
        spray.next = now + self.config.interval;
        let untried = u32::from(u16::MAX - 1023) - spray.tried.len() as u32;
        let batch = self.config.spray_per_round.min(self.config.spray_max - self.stats.sprayed).min(untried);
        let guesses: Vec<SocketAddr> = (0..batch).map(|_| SocketAddr::new(spray.ip, spray.next_port())).collect();
        for dst in guesses {
            let payload = self.frame(SocketId::PRIMARY, dst, false);
            self.transmits.push_back(Transmit { socket: SocketId::PRIMARY, dst, payload });
        }
        self.stats.sprayed += batch;
        self.stats.probes += batch;
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Punching => {
                let grace = self.grace.map(|(_, until)| until);
                let pool = self.pool_target.map(|_| self.next_pool_send);
                let spray = self.spray.as_ref().filter(|_| self.stats.sprayed < self.config.spray_max).map(|s| s.next);
                let others = [self.next_send, self.started + self.config.timeout];
                grace.into_iter().chain(pool).chain(spray).chain(others).min()
            }
            State::Connected { until, resends, next, .. } => Some(if resends > 0 { next.min(until) } else { until }),
            State::Done => None,
        }
    }
}

impl Spray {
    /// The next port to try: predicted ones first, then untried random ones. A walk of
    /// both sides never turns random: its passes repeat instead.
    fn next_port(&mut self) -> u16 {
        if let Some(p) = self.predict.filter(|p| p.walk == Walk::Both) {
            if self.predicted == self.pass {
                self.predicted = 0;
                self.pass *= 2;
            }
            self.predicted += 1;
            return p.port(self.stride * i64::from(self.predicted));
        }
        while let Some(p) = self.predict.filter(|_| self.predicted < PREDICTED_GUESSES) {
            let k = 1 + self.stride * i64::from(self.predicted);
            self.predicted += 1;
            let port = p.port(k);
            if self.tried.insert(port) {
                return port;
            }
        }
        loop {
            let port = self.rng.gen_range(1024..=u16::MAX);
            if self.tried.insert(port) {
                return port;
            }
        }
    }
}

/// Whether a report says the node can be reached unsolicited.
#[cfg(test)]
mod tests;
