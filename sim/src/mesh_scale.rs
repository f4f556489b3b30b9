//! A mesh of many public members on virtual time, for the scale bench
//! (`benches/benches/mesh_scale.rs`) and its regression test (`sim/tests/mesh_scale.rs`).
//!
//! The members are the real [`Mesh`] machines (foca's SWIM, signed datagrams, records and
//! hosting claims with real ed25519 signatures) on a lossless network with a one-way
//! latency of 10–60 ms per pair of members. Whole nodes (`introducer_sim::SimNode`) would
//! be too heavy for thousands of members, so NATed peers are stood in for by what the
//! mesh sees of them: their homes' hosting claims. Each peer registers (`Command::Host`)
//! with the [`HOMES`] live members its rendezvous hash ranks first, and when a home dies
//! registers with the next one after `rehome_delay`. A member can be killed (dropped from
//! the network, without a goodbye), and a new one (new identity, new address) joins through
//! a random live member.
//!
//! Everything replays from the seed: ordered maps, a seeded generator, virtual time.

use introducer_actors::identity::Identity;
use introducer_actors::mesh::directory::{Key, LOOKUP_TIMEOUT};
use introducer_actors::mesh::{Advert, Command, Config, Event, Load, Mesh};
use introducer_proto::frame::{self, Decoded};
use introducer_proto::pb::envelope::Kind;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Homes a peer keeps.
pub const HOMES: usize = 3;
/// Unix ms at the start of virtual time.
const START_MS: u64 = 1_800_000_000_000;

/// splitmix64: a cheap, well-spread hash for rendezvous ranks and latencies.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One public node, alive or killed.
pub struct Member {
    pub mesh: Option<Mesh>,
    pub peer: PeerId,
    pub addr: SocketAddr,
    pub born: Instant,
    pub died: Option<Instant>,
    /// UDP payload bytes and datagrams it sent.
    pub sent_bytes: u64,
    pub sent_datagrams: u64,
    key: u64,
    /// The peers registered with it.
    hosts: BTreeSet<usize>,
    /// The members it reported up (`Event::Joined`, not `Event::Left` since).
    up: BTreeSet<usize>,
    armed: Option<Instant>,
}

/// A NATed peer, as the mesh sees it: the members it is registered with.
pub struct Peer {
    pub id: PeerId,
    key: u64,
    /// Live homes whose claim was issued.
    pub homes: Vec<usize>,
}

enum Action {
    /// The peer registers with this member, which claims to be its home.
    Host { peer: usize, home: usize },
    /// The peer lost a home: it registers with the next member it ranks.
    Rehome { peer: usize },
    /// The member signs and spreads its record afresh (and next in `record_refresh`).
    Publish { member: usize },
    /// Whether killed members' claims are gone from every table.
    CheckClaims,
}

/// A killed member's claims, until no live member's table names it for any of a sample
/// of its peers.
struct ClaimTrack {
    t0: Instant,
    victim: PeerId,
    sample: Vec<PeerId>,
}

/// How often killed members' claims are looked for.
const CLAIM_CHECK: Duration = Duration::from_millis(500);

struct Delivery {
    at: Instant,
    seq: u64,
    src: usize,
    dst: usize,
    payload: Vec<u8>,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Delivery {}
impl PartialOrd for Delivery {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delivery {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// How something spread over the members alive when it began (and still alive).
#[derive(Debug, Clone)]
struct Track {
    t0: Instant,
    /// Members yet to see it.
    need: BTreeSet<usize>,
    /// Members that saw it, and when (since `t0`).
    seen: BTreeMap<usize, Duration>,
}

impl Track {
    fn new(t0: Instant, members: &[usize]) -> Track {
        Track { t0, need: members.iter().copied().collect(), seen: BTreeMap::new() }
    }

    fn spread(&self) -> Spread {
        let mut seen: Vec<Duration> = self.seen.values().copied().collect();
        seen.sort();
        Spread { expected: self.need.len() + seen.len(), seen }
    }
}

/// How something (a new member's record, a killed member's being declared down) spread
/// over the members that were to see it.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    /// Members that were to see it: alive when it began and still alive.
    pub expected: usize,
    /// When each that saw it did, since it began, in order.
    pub seen: Vec<Duration>,
}

impl Spread {
    /// Time until this fraction of the members saw it; `None` if they had not (yet).
    pub fn until(&self, fraction: f64) -> Option<Duration> {
        let n = (self.expected as f64 * fraction).ceil() as usize;
        if n == 0 {
            return Some(Duration::ZERO);
        }
        self.seen.get(n - 1).copied()
    }

    pub fn complete(&self) -> bool {
        self.seen.len() >= self.expected
    }
}

/// What the samples of lookups found.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    pub asked: usize,
    /// The answer named a live home of the peer at its address (or the member asked is a
    /// home itself).
    pub found: usize,
    /// The member asked was itself a home: it needs no lookup.
    pub direct: usize,
    /// Answered from the member's own table (it keeps the peer's directory): no round trip.
    pub local: usize,
    /// The answer also named a home that is dead (a connect may try it, suspected last).
    pub named_dead: usize,
    /// From asking to the answer, for each lookup that asked the directory.
    pub times: Vec<Duration>,
}

impl Lookups {
    pub fn success(&self) -> f64 {
        self.found as f64 / self.asked.max(1) as f64
    }

    pub fn merge(mut self, other: Lookups) -> Lookups {
        self.asked += other.asked;
        self.found += other.found;
        self.direct += other.direct;
        self.local += other.local;
        self.named_dead += other.named_dead;
        self.times.extend(other.times);
        self
    }

    /// The time by which this fraction of the lookups that asked the directory had their
    /// answer.
    pub fn time(&self, fraction: f64) -> Option<Duration> {
        let mut times = self.times.clone();
        times.sort();
        let n = ((times.len() as f64 * fraction).ceil() as usize).max(1);
        times.get(n - 1).copied()
    }
}

/// Bytes members sent over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    /// Mean UDP payload bytes per second per member alive in the window.
    pub mean: f64,
    /// The most one member alive through the whole window sent, per second.
    pub max: f64,
    /// Mean datagrams per second per member.
    pub datagrams: f64,
}

/// Where the members' counters stood at a moment.
pub struct Snapshot {
    at: Instant,
    sent: Vec<(u64, u64)>,
}

pub struct MeshSim {
    pub start: Instant,
    pub now: Instant,
    seed: u64,
    rng: StdRng,
    pub members: Vec<Member>,
    live: Vec<usize>,
    by_addr: BTreeMap<SocketAddr, usize>,
    deliveries: BinaryHeap<Reverse<Delivery>>,
    timers: BTreeSet<(Instant, usize)>,
    actions: BTreeMap<(Instant, u64), Action>,
    seq: u64,
    pub peers: Vec<Peer>,
    /// How long a peer takes to register with a new home after one died.
    pub rehome_delay: Duration,
    by_peer: BTreeMap<PeerId, usize>,
    records: BTreeMap<PeerId, Track>,
    republishes: BTreeMap<PeerId, Track>,
    downs: BTreeMap<PeerId, Track>,
    claim_tracks: Vec<ClaimTrack>,
    checking: bool,
    /// How each tracked new member's record spread (`Event::Record`), once every member
    /// held it or once [`MeshSim::close_tracks`] was called.
    pub converged: Vec<Spread>,
    /// Likewise, each tracked republished record of a member already in the mesh.
    pub republished: Vec<Spread>,
    /// How each killed member came to be declared down (`Event::Left`, which also drops
    /// its claims), likewise: by the members that had reported it up.
    pub failovers: Vec<Spread>,
    /// Per killed member, the time until no member's table named it as a home (checked
    /// every 500 ms, on up to 8 of its peers); `None` if some still did when the tracks
    /// closed. Members that never knew it was up keep its claims until they lapse.
    pub claims_dropped: Vec<Option<Duration>>,
    /// Datagrams to an address no member ever had, and to killed members.
    pub strays: u64,
    pub dead_letters: u64,
    /// Lookups asked (by member, of a peer) and when; and the answers: how long they took
    /// and the homes they named.
    asking: BTreeMap<(usize, PeerId), Instant>,
    answers: BTreeMap<(usize, PeerId), (Duration, Vec<SocketAddr>)>,
}

impl MeshSim {
    pub fn new(seed: u64) -> MeshSim {
        let now = Instant::now();
        MeshSim {
            start: now,
            now,
            seed,
            rng: StdRng::seed_from_u64(seed),
            members: Vec::new(),
            live: Vec::new(),
            by_addr: BTreeMap::new(),
            deliveries: BinaryHeap::new(),
            timers: BTreeSet::new(),
            actions: BTreeMap::new(),
            seq: 0,
            peers: Vec::new(),
            rehome_delay: Duration::from_secs(2),
            by_peer: BTreeMap::new(),
            records: BTreeMap::new(),
            republishes: BTreeMap::new(),
            downs: BTreeMap::new(),
            claim_tracks: Vec::new(),
            checking: false,
            converged: Vec::new(),
            republished: Vec::new(),
            failovers: Vec::new(),
            claims_dropped: Vec::new(),
            strays: 0,
            dead_letters: 0,
            asking: BTreeMap::new(),
            answers: BTreeMap::new(),
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn live(&self) -> &[usize] {
        &self.live
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// One-way latency between two members: 10–60 ms, fixed per pair.
    fn latency(&self, a: usize, b: usize) -> Duration {
        let (ka, kb) = (self.members[a].key, self.members[b].key);
        Duration::from_millis(10 + mix(ka ^ kb) % 51)
    }

    fn advert(addr: SocketAddr) -> Advert {
        Advert { addrs: vec![addr], introducer: true, relay: true, relay_capacity: 64, relay_load: 0 }
    }

    /// A random live member, if any.
    pub fn random_live(&mut self) -> Option<usize> {
        (!self.live.is_empty()).then(|| self.live[self.rng.gen_range(0..self.live.len())])
    }

    /// A new member (new identity, new address) that joins through `via`, or starts a
    /// mesh. With `track`, the time until every live member holds its record is measured.
    pub fn spawn(&mut self, via: Option<usize>, track: bool) -> usize {
        let i = self.members.len();
        let identity = Identity::from_seed(mix(self.seed) ^ (i as u64 + 1));
        let peer = identity.peer_id();
        let ip = Ipv4Addr::from(0x0a00_0000 | (i as u32 + 1));
        let addr = SocketAddr::new(ip.into(), 3478);
        let unix_ms = START_MS + self.elapsed().as_millis() as u64;
        let rng = StdRng::seed_from_u64(mix(self.seed ^ mix(i as u64)));
        let mut mesh = Mesh::new(Config::default(), identity, (self.now, unix_ms), rng);
        mesh.command(self.now, Command::Start(Self::advert(addr)));
        if let Some(v) = via {
            let seed = (self.members[v].peer, self.members[v].addr);
            mesh.command(self.now, Command::Join(vec![seed]));
        }
        if track {
            self.records.insert(peer, Track::new(self.now, &self.live));
        }
        self.members.push(Member {
            mesh: Some(mesh),
            peer,
            addr,
            born: self.now,
            died: None,
            sent_bytes: 0,
            sent_datagrams: 0,
            key: mix(self.seed.rotate_left(32) ^ i as u64),
            hosts: BTreeSet::new(),
            up: BTreeSet::new(),
            armed: None,
        });
        self.by_addr.insert(addr, i);
        self.by_peer.insert(peer, i);
        self.live.push(i);
        self.after(i);
        i
    }

    /// Kills a member: it vanishes from the network; its peers re-home after
    /// `rehome_delay`. The time until every live member declares it down is measured.
    pub fn kill(&mut self, i: usize) {
        if self.members[i].mesh.take().is_none() {
            return;
        }
        self.members[i].died = Some(self.now);
        self.live.retain(|&m| m != i);
        if let Some(t) = self.members[i].armed.take() {
            self.timers.remove(&(t, i));
        }
        let hosts = std::mem::take(&mut self.members[i].hosts);
        let peer = self.members[i].peer;
        // A sample of its peers spread over its list, to see its claims go.
        let stride = hosts.len().div_ceil(8).max(1);
        let sample: Vec<PeerId> = hosts.iter().step_by(stride).map(|&p| self.peers[p].id).collect();
        if !sample.is_empty() {
            self.claim_tracks.push(ClaimTrack { t0: self.now, victim: peer, sample });
            if !self.checking {
                self.checking = true;
                let key = (self.now + CLAIM_CHECK, self.next_seq());
                self.actions.insert(key, Action::CheckClaims);
            }
        }
        for p in hosts {
            self.peers[p].homes.retain(|&h| h != i);
            let key = (self.now + self.rehome_delay, self.next_seq());
            self.actions.insert(key, Action::Rehome { peer: p });
        }
        let knew: Vec<usize> = self.live.iter().copied().filter(|&m| self.members[m].up.contains(&i)).collect();
        self.downs.insert(peer, Track::new(self.now, &knew));
        // It will never see anything now.
        for track in self.records.values_mut().chain(self.republishes.values_mut()).chain(self.downs.values_mut()) {
            track.need.remove(&i);
            track.seen.remove(&i);
        }
        self.settle();
    }

    /// Finished tracks become figures.
    fn settle(&mut self) {
        let done: Vec<PeerId> = self.records.iter().filter(|(_, t)| t.need.is_empty()).map(|(p, _)| *p).collect();
        for p in done {
            let t = self.records.remove(&p).expect("listed");
            self.converged.push(t.spread());
        }
        let done: Vec<PeerId> = self.republishes.iter().filter(|(_, t)| t.need.is_empty()).map(|(p, _)| *p).collect();
        for p in done {
            let t = self.republishes.remove(&p).expect("listed");
            self.republished.push(t.spread());
        }
        let done: Vec<PeerId> = self.downs.iter().filter(|(_, t)| t.need.is_empty()).map(|(p, _)| *p).collect();
        for p in done {
            let t = self.downs.remove(&p).expect("listed");
            self.failovers.push(t.spread());
        }
    }

    /// Tracks not finished yet become figures as they stand (incomplete).
    pub fn close_tracks(&mut self) {
        self.settle();
        for (_, t) in std::mem::take(&mut self.records) {
            self.converged.push(t.spread());
        }
        for (_, t) in std::mem::take(&mut self.republishes) {
            self.republished.push(t.spread());
        }
        for (_, t) in std::mem::take(&mut self.downs) {
            self.failovers.push(t.spread());
        }
        for _ in std::mem::take(&mut self.claim_tracks) {
            self.claims_dropped.push(None);
        }
    }

    /// Killed members no live table names as a home any more become figures.
    fn check_claims(&mut self) {
        let now = self.now;
        let (members, live) = (&self.members, &self.live);
        let named = |t: &ClaimTrack| {
            live.iter().any(|&m| {
                let mesh = members[m].mesh.as_ref().expect("live");
                t.sample.iter().any(|p| mesh.homes(p).iter().any(|(h, _)| *h == t.victim))
            })
        };
        let (open, done): (Vec<ClaimTrack>, Vec<ClaimTrack>) =
            std::mem::take(&mut self.claim_tracks).into_iter().partition(named);
        self.claims_dropped.extend(done.iter().map(|t| Some(now - t.t0)));
        self.claim_tracks = open;
        self.checking = !self.claim_tracks.is_empty();
        if self.checking {
            let key = (now + CLAIM_CHECK, self.next_seq());
            self.actions.insert(key, Action::CheckClaims);
        }
    }

    /// Every live member republishes its record once, at times spread evenly over `over`
    /// (from then on every `record_refresh` at that phase), as in a mesh whose members
    /// started at different times; otherwise members that joined together refresh
    /// together and idle traffic comes in bursts.
    pub fn stagger_refresh(&mut self, over: Duration) {
        let live = self.live.clone();
        for (k, &member) in live.iter().enumerate() {
            let key = (self.now + over.mul_f64(k as f64 / live.len() as f64), self.next_seq());
            self.actions.insert(key, Action::Publish { member });
        }
    }

    /// A live member signs and spreads its record afresh now; the time until every other
    /// live member holds this version is measured (into [`MeshSim::republished`]).
    pub fn republish(&mut self, member: usize) {
        let others: Vec<usize> = self.live.iter().copied().filter(|&m| m != member).collect();
        self.republishes.insert(self.members[member].peer, Track::new(self.now, &others));
        self.act(Action::Publish { member });
    }

    /// The live members a peer ranks first, skipping `except`.
    fn rank(&self, peer: usize, except: &[usize], n: usize) -> Vec<usize> {
        let pk = self.peers[peer].key;
        let mut best: Vec<(u64, usize)> = Vec::with_capacity(n + 1);
        for &m in &self.live {
            if except.contains(&m) {
                continue;
            }
            let score = mix(pk ^ self.members[m].key);
            if best.len() < n || score > best[n - 1].0 {
                let at = best.partition_point(|&(s, _)| s > score);
                best.insert(at, (score, m));
                best.truncate(n);
            }
        }
        best.into_iter().map(|(_, m)| m).collect()
    }

    /// `count` new peers register with their homes, spread evenly over `spread` (as
    /// registrations come and go in a running mesh, so renewals do not come in bursts).
    pub fn add_peers(&mut self, count: usize, spread: Duration) {
        let first = self.peers.len();
        for n in 0..count {
            let p = first + n;
            let id = Identity::from_seed(mix(self.seed ^ 0x7065_6572) ^ (p as u64 + 1)).peer_id();
            self.peers.push(Peer { id, key: mix(self.seed ^ mix(p as u64 + 0x1_0000_0000)), homes: Vec::new() });
            let at = self.now + spread.mul_f64(n as f64 / count as f64);
            for home in self.rank(p, &[], HOMES) {
                let key = (at, self.next_seq());
                self.actions.insert(key, Action::Host { peer: p, home });
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Host { peer, home } => {
                if self.peers[peer].homes.contains(&home) {
                    return;
                }
                let now = self.now;
                let id = self.peers[peer].id;
                let Some(mesh) = self.members[home].mesh.as_mut() else {
                    let key = (now + self.rehome_delay, self.next_seq());
                    self.actions.insert(key, Action::Rehome { peer });
                    return;
                };
                mesh.command(now, Command::Host { peer: id, topics: Vec::new() });
                self.peers[peer].homes.push(home);
                self.members[home].hosts.insert(peer);
                self.after(home);
            }
            Action::Rehome { peer } => {
                if self.peers[peer].homes.len() >= HOMES {
                    return;
                }
                let homes = self.peers[peer].homes.clone();
                if let Some(&home) = self.rank(peer, &homes, 1).first() {
                    self.act(Action::Host { peer, home });
                }
            }
            Action::Publish { member } => {
                let now = self.now;
                let advert = Self::advert(self.members[member].addr);
                if let Some(mesh) = self.members[member].mesh.as_mut() {
                    mesh.command(now, Command::Publish(advert));
                    self.after(member);
                }
            }
            Action::CheckClaims => self.check_claims(),
        }
    }

    /// Runs every delivery, timer and peer action due until `until`.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            let delivery = self.deliveries.peek().map(|d| d.0.at);
            let timer = self.timers.first().map(|&(t, _)| t);
            let action = self.actions.first_key_value().map(|(&(t, _), _)| t);
            let Some(next) = [delivery, timer, action].into_iter().flatten().min().filter(|&t| t <= until) else {
                self.now = self.now.max(until);
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            if delivery == Some(next) {
                let Reverse(d) = self.deliveries.pop().expect("peeked");
                let src = self.members[d.src].addr;
                let Some(mesh) = self.members[d.dst].mesh.as_mut() else {
                    self.dead_letters += 1;
                    continue;
                };
                if let Ok(Decoded::Envelope(envelope)) = frame::decode(&d.payload) {
                    if let Some(Kind::Gossip(gossip)) = envelope.kind {
                        mesh.handle(now, src, *gossip);
                    }
                }
                self.after(d.dst);
            } else if timer == Some(next) {
                let (_, i) = self.timers.pop_first().expect("peeked");
                self.members[i].armed = None;
                if let Some(mesh) = self.members[i].mesh.as_mut() {
                    mesh.handle_timeout(now);
                }
                self.after(i);
            } else {
                let (_, action) = self.actions.pop_first().expect("peeked");
                self.act(action);
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Moves what member `i` wants sent onto the network, looks at its events and
    /// re-arms its timer.
    fn after(&mut self, i: usize) {
        let Some(mesh) = self.members[i].mesh.as_mut() else { return };
        let mut out = Vec::new();
        while let Some(t) = mesh.poll_transmit() {
            out.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = mesh.poll_event() {
            events.push(e);
        }
        let timeout = mesh.poll_timeout();
        for t in out {
            self.members[i].sent_bytes += t.payload.len() as u64;
            self.members[i].sent_datagrams += 1;
            let Some(&j) = self.by_addr.get(&t.dst) else {
                self.strays += 1;
                continue;
            };
            let at = self.now + self.latency(i, j);
            let seq = self.next_seq();
            self.deliveries.push(Reverse(Delivery { at, seq, src: i, dst: j, payload: t.payload }));
        }
        let mut settle = false;
        for e in events {
            let track = match e {
                Event::Record(r) if self.records.contains_key(&r.peer) => self.records.get_mut(&r.peer),
                Event::Record(r) => self.republishes.get_mut(&r.peer),
                Event::Joined(p) => {
                    if let Some(&j) = self.by_peer.get(&p) {
                        self.members[i].up.insert(j);
                    }
                    None
                }
                Event::Left(p) => {
                    if let Some(&j) = self.by_peer.get(&p) {
                        self.members[i].up.remove(&j);
                    }
                    self.downs.get_mut(&p)
                }
                Event::Homes { peer, homes } => {
                    if let Some(at) = self.asking.remove(&(i, peer)) {
                        self.answers.insert((i, peer), (self.now - at, homes));
                    }
                    None
                }
                _ => None,
            };
            if let Some(track) = track {
                if track.need.remove(&i) {
                    track.seen.insert(i, self.now - track.t0);
                    settle |= track.need.is_empty();
                }
            }
        }
        if settle {
            self.settle();
        }
        let member = &mut self.members[i];
        if member.armed != timeout {
            if let Some(old) = member.armed {
                self.timers.remove(&(old, i));
            }
            if let Some(new) = timeout {
                self.timers.insert((new, i));
            }
            member.armed = timeout;
        }
    }

    /// How many (live member, other live member) pairs there are, and in how many the
    /// first holds the second's record.
    pub fn records_known(&self) -> (usize, usize) {
        let (mut pairs, mut known) = (0, 0);
        for &m in &self.live {
            let mesh = self.members[m].mesh.as_ref().expect("live");
            for &o in self.live.iter().filter(|&&o| o != m) {
                pairs += 1;
                known += usize::from(mesh.record(&self.members[o].peer).is_some());
            }
        }
        (pairs, known)
    }

    /// `samples` random (live member at least `min_age` old, peer with a live home) pairs:
    /// the member asks the directory for the peer's homes (`Command::Lookup`, as its
    /// broker does for a peer registered elsewhere); the sim runs until the answers are in.
    /// Did the answer name a live home at its address?
    pub fn lookups(&mut self, samples: usize, min_age: Duration) -> Lookups {
        let askers: Vec<usize> =
            self.live.iter().copied().filter(|&m| self.now - self.members[m].born >= min_age).collect();
        let wanted: Vec<usize> = (0..self.peers.len()).filter(|&p| !self.peers[p].homes.is_empty()).collect();
        let mut l = Lookups::default();
        if askers.is_empty() || wanted.is_empty() {
            return l;
        }
        let mut pairs = BTreeMap::new();
        for _ in 0..samples {
            let m = askers[self.rng.gen_range(0..askers.len())];
            let p = wanted[self.rng.gen_range(0..wanted.len())];
            if self.peers[p].homes.contains(&m) {
                l.asked += 1;
                l.direct += 1;
                l.found += 1;
            } else {
                pairs.insert((m, self.peers[p].id), p);
            }
        }
        let now = self.now;
        for &(m, peer) in pairs.keys() {
            self.asking.insert((m, peer), now);
            let key = Key::Peer(peer);
            self.members[m].mesh.as_mut().expect("live").command(now, Command::Lookup(key));
            self.after(m);
        }
        self.run_for(LOOKUP_TIMEOUT + Duration::from_millis(100));
        for ((m, peer), p) in pairs {
            l.asked += 1;
            self.asking.remove(&(m, peer));
            let Some((took, named)) = self.answers.remove(&(m, peer)) else { continue };
            let live_at = |a: &SocketAddr| self.peers[p].homes.iter().any(|&h| self.members[h].addr == *a);
            let dead_at = |a: &SocketAddr| self.by_addr.get(a).is_some_and(|&h| self.members[h].mesh.is_none());
            l.found += usize::from(named.iter().any(live_at));
            l.named_dead += usize::from(named.iter().any(dead_at));
            match took.is_zero() {
                true => l.local += 1,
                false => l.times.push(took),
            }
        }
        l
    }

    /// Each live member's load.
    pub fn loads(&self) -> Vec<Load> {
        self.live.iter().map(|&m| self.members[m].mesh.as_ref().expect("live").load()).collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot { at: self.now, sent: self.members.iter().map(|m| (m.sent_bytes, m.sent_datagrams)).collect() }
    }

    /// What the members sent since `s`.
    pub fn traffic_since(&self, s: &Snapshot) -> Traffic {
        let window = (self.now - s.at).as_secs_f64();
        let (mut bytes, mut datagrams, mut alive_secs, mut max) = (0u64, 0u64, 0f64, 0f64);
        for (i, m) in self.members.iter().enumerate() {
            let (b0, d0) = s.sent.get(i).copied().unwrap_or_default();
            let (from, to) = (m.born.max(s.at), m.died.unwrap_or(self.now));
            if to <= from {
                continue;
            }
            bytes += m.sent_bytes - b0;
            datagrams += m.sent_datagrams - d0;
            alive_secs += (to - from).as_secs_f64();
            if m.born <= s.at && m.died.is_none() {
                max = max.max((m.sent_bytes - b0) as f64 / window);
            }
        }
        let alive_secs = alive_secs.max(f64::MIN_POSITIVE);
        Traffic { mean: bytes as f64 / alive_secs, max, datagrams: datagrams as f64 / alive_secs }
    }
}
