//! Shared set-up for the benchmarks.
//!
//! - [`SimPair`]: two peers on the simulator — an RFC 5780 introducer and two [`SimNode`]
//!   peers behind NATs of given kinds, probed and registered — ready to punch.
//! - [`Loopback`]: the real node ([`introducer_node::Node`]) over loopback sockets — an
//!   introducer and two peers registered with it, ready to connect.
//! - [`LoopbackSpray`]: two bare punch [`Attempt`]s, an easy side spraying at a hard side's
//!   256-socket pool, over real loopback sockets — birthday spraying and port prediction
//!   timed without the introduction around them.
//! - [`relay`]: our relay next to coturn's and a batched forwarder, each its own process.

pub mod relay;

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::punch::{self, actor::pool_socket, Attempt, Birthday, Candidate, Plan, Prediction, Walk};
use introducer_actors::session::noise::Handshake;
use introducer_actors::SocketId;
use introducer_node::config::Serve;
use introducer_node::{Config, Node, NodeEvent};
use introducer_proto::frame::{self, Decoded};
use introducer_proto::pb::{envelope::Kind, Envelope};
use introducer_sim::node::{Connected, SimNode};
use introducer_sim::standard::{Standard, NAT_IPS, PEER_PORT};
use introducer_sim::{HostId, Link, Place, Sim};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Two peers behind NATs, each registered with an RFC 5780 introducer, on a simulated
/// internet with `latency` one way.
pub struct SimPair {
    pub sim: Sim,
    pub a: HostId,
    pub b: HostId,
    /// The round trip between the peers: the internet twice, each NAT's LAN twice.
    pub rtt: Duration,
}

impl SimPair {
    /// Peers behind port-restricted NATs (the typical home router).
    pub fn easy(seed: u64, latency: Duration) -> SimPair {
        SimPair::new(seed, latency, NatBehavior::PORT_RESTRICTED, NatBehavior::PORT_RESTRICTED)
    }

    /// Builds the network (the simulator's standard topology, one introducer) and runs it
    /// until both peers are probed and registered.
    pub fn new(seed: u64, latency: Duration, a_nat: NatBehavior, b_nat: NatBehavior) -> SimPair {
        let mut standard = Standard::new(seed, Link::with_latency(latency), false);
        let (a_node, b_node) = (standard.peer(1), standard.peer(2));
        let sim = &mut standard.sim;
        let (nat_a, nat_b) = (sim.add_nat(a_nat, NAT_IPS[0], None), sim.add_nat(b_nat, NAT_IPS[1], None));
        let a = a_node.spawn(sim, Place::Behind(nat_a), PEER_PORT);
        let b = b_node.spawn(sim, Place::Behind(nat_b), PEER_PORT);
        assert!(
            standard.run_until_registered(&[a, b], Duration::from_secs(10)),
            "peers did not register (seed {seed})"
        );
        let rtt = 2 * (latency + 2 * Link::LAN_DEFAULT.latency);
        SimPair { sim: standard.sim, a, b, rtt }
    }

    /// A asks for B; runs the simulation until A reports the connection (virtual time is
    /// in [`Connected::connect`]) or gives up (`None`).
    pub fn punch(&mut self) -> Option<Connected> {
        let (a, target) = (self.a, self.sim.machine_ref::<SimNode>(self.b).peer_id());
        let now = self.sim.now();
        self.sim.machine::<SimNode>(a).connect(now, target);
        let settled = |s: &Sim| {
            let node = s.machine_ref::<SimNode>(a);
            node.connected(&target).is_some() || node.failure(&target).is_some()
        };
        self.sim.run_until_cond(Duration::from_secs(30), settled);
        self.sim.machine_ref::<SimNode>(a).connected(&target).cloned()
    }
}

/// Lifts an introducer's limits on introductions and relaying, so that a bench measures
/// the node, not its budgets.
pub fn lift_limits(config: &mut Config) {
    config.broker.introductions_per_sec = 1e9;
    config.broker.introduction_burst = 1e9;
    let relay = &mut config.relay;
    for rate in
        [&mut relay.bytes_per_sec, &mut relay.bytes_burst, &mut relay.total_bytes_per_sec, &mut relay.total_bytes_burst]
    {
        *rate = 1e12;
    }
    relay.packets_per_sec = 1e9;
    relay.packets_burst = 1e9;
    // Every client of a bench registers from one loopback address.
    config.broker.max_registrations = 1 << 20;
    config.broker.max_registrations_per_ip = u32::MAX;
    config.broker.max_registrations_per_network = u32::MAX;
}

/// The real node on loopback: an introducer and two peers, `a` and `b`, registered with it.
///
/// Each [`Loopback::connect`] asks the introducer for `b` again, so every call is a complete
/// introduction and punch (fresh nonce, fresh punch attempt on both sides), not a lookup of
/// an open session. To allow that in a tight loop, the introducer's per-peer introduction
/// rate limit is lifted and punch attempts linger 100 ms after connecting instead of 10 s
/// (on loopback the peer has its acknowledgement within microseconds); otherwise the
/// defaults apply.
pub struct Loopback {
    pub rt: tokio::runtime::Runtime,
    pub introducer: Node,
    pub a: Node,
    pub b: Node,
}

/// What one [`Loopback::connect`] took.
#[derive(Debug, Clone, Copy)]
pub struct LoopbackConnect {
    /// From the `connect` call to the `Connected` event in the caller's hands.
    pub wall: Duration,
    /// The node's own `connect_ms`: from asking for the introduction to the first
    /// authenticated answer (the CLI contract's definition).
    pub connect_ms: f64,
    pub path: &'static str,
    pub strategy: &'static str,
    pub probes: u32,
}

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const WAIT: Duration = Duration::from_secs(15);

impl Loopback {
    /// Starts the three nodes and waits until both peers are registered.
    pub fn start() -> Loopback {
        Loopback::start_with(false)
    }

    /// With `relay_only`, the peers never punch: every connection goes through the
    /// introducer's relay, whose limits are lifted so that it is measured, not its budget.
    pub fn start_with(relay_only: bool) -> Loopback {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime");
        let listen = vec![SocketAddr::from((LOCALHOST, 0))];
        let mut config = Config::new(Identity::from_seed(100));
        config.listen = listen.clone();
        lift_limits(&mut config);
        let introducer = Node::start(config).expect("introducer node");
        let bootstrap = introducer.listen()[0];
        let peer = |n: u64| {
            let mut config = Config::new(Identity::from_seed(n));
            config.listen = listen.clone();
            config.bootstrap = vec![bootstrap];
            config.serve = Serve::Never;
            config.punch.linger = Duration::from_millis(100);
            config.punch.max_attempts = 1024;
            config.relay_only = relay_only;
            Node::start(config).expect("peer node")
        };
        let (mut a, mut b) = (peer(1), peer(2));
        rt.block_on(async {
            for node in [&mut a, &mut b] {
                loop {
                    match tokio::time::timeout(WAIT, node.next_event()).await {
                        Ok(Some(NodeEvent::Registered { .. })) => break,
                        Ok(Some(NodeEvent::Fatal(error))) => panic!("peer failed: {error}"),
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("peer stopped"),
                        Err(_) => panic!("peer did not register within {WAIT:?}"),
                    }
                }
            }
        });
        Loopback { rt, introducer, a, b }
    }

    /// `a` asks for `b` and waits for the `Connected` event.
    pub fn connect(&mut self) -> LoopbackConnect {
        let (a, target) = (&mut self.a, self.b.peer_id());
        self.rt.block_on(async {
            let start = Instant::now();
            a.connect(target);
            loop {
                match tokio::time::timeout(WAIT, a.next_event()).await {
                    Ok(Some(NodeEvent::Connected { peer, connect, path, strategy, probes, .. })) if peer == target => {
                        let wall = start.elapsed();
                        return LoopbackConnect {
                            wall,
                            connect_ms: connect.as_secs_f64() * 1000.0,
                            path: path.as_str(),
                            strategy: strategy.as_str(),
                            probes,
                        };
                    }
                    Ok(Some(NodeEvent::ConnectFailed { error, .. })) => panic!("connect failed: {error}"),
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("node stopped"),
                    Err(_) => panic!("no connection within {WAIT:?}"),
                }
            }
        })
    }

    /// Drops the events `b` reported so far (one `Connected` per introduction).
    pub fn drain_b(&mut self) {
        let b = &mut self.b;
        self.rt
            .block_on(async { while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, b.next_event()).await {} });
    }
}

/// What one [`Loopback::blast`] moved.
#[derive(Debug, Clone, Copy)]
pub struct Blast {
    pub sent: u32,
    pub received: u32,
    pub elapsed: Duration,
}

impl Loopback {
    /// `a` sends `count` datagrams of `size` bytes to `b` over the open session, `window` at
    /// a time ahead of what `b` has received (so loopback buffers are not simply overrun);
    /// returns how many arrived and how long it took.
    pub fn blast(&mut self, count: u32, size: usize, window: u32) -> Blast {
        let target = self.b.peer_id();
        let (a, b) = (&self.a, &mut self.b);
        let payload = vec![0x5a; size];
        self.rt.block_on(async {
            let start = Instant::now();
            let (mut sent, mut received) = (0, 0);
            while received < count {
                while sent < count && sent < received + window {
                    a.send(target, payload.clone());
                    sent += 1;
                }
                match tokio::time::timeout(Duration::from_millis(200), b.next_event()).await {
                    Ok(Some(NodeEvent::Data { .. })) => received += 1,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("node stopped"),
                    // Lost on the way: let the window move on.
                    Err(_) if sent == count => break,
                    Err(_) => received = sent,
                }
            }
            Blast { sent, received, elapsed: start.elapsed() }
        })
    }
}

/// Which ports the hard side's birthday pool gets in a [`LoopbackSpray`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardPorts {
    /// Whatever the kernel picks for `127.0.0.1:0` (random within the ephemeral range):
    /// what a randomly allocating NAT hands out. The easy side sprays at random.
    Random,
    /// One block of consecutive ports, just past the port the introducer saw: what a
    /// sequentially allocating NAT hands out. The easy side predicts ([`Walk::Pool`]).
    Consecutive,
}

/// What one [`LoopbackSpray::punch`] took.
#[derive(Debug, Clone, Copy)]
pub struct SprayPunch {
    /// Both sides connected (false: the easy side sprayed `spray_max` guesses in vain and
    /// the attempt timed out).
    pub connected: bool,
    /// From the attempts' start until the later side's `Connected` (or the failure).
    pub elapsed: Duration,
    /// The easy side's probes when it connected (the `probes` of its `Connected` event),
    /// and how many of them were sprayed guesses.
    pub probes: u32,
    pub sprayed: u32,
}

/// An easy and a hard side punching each other with bare [`Attempt`]s over real UDP
/// sockets on 127.0.0.1, without the node or an introducer: the easy side (the initiator)
/// sprays guesses at the hard side's pool of 256 sockets, from its one primary socket.
/// Each side runs on a thread of its own, as on a machine of its own.
///
/// Loopback has no NAT, so two things a NAT would do are emulated here:
///
/// - *Allocation*: the pool's ports are the NAT's mappings ([`HardPorts`]).
/// - *Filtering*: every socket admits datagrams only from addresses it has sent to (a
///   port-restricted NAT on both sides; a symmetric NAT filters so too). Without it the
///   pool's first proofs would simply reach the easy side and connect it at once, as a
///   full-cone easy side does — for which the plan would not spray at all.
///
/// The sockets are bound once and reused by every punch, as the node keeps its pool; each
/// punch is a fresh pair of attempts with a fresh nonce (which seeds the random guesses),
/// and datagrams left over from an earlier punch are dropped. Mappings and filters start
/// afresh each punch.
///
/// Guesses go to every port of 127.0.0.1 in 1024..=65535: nothing answers on loopback
/// except the sockets here (anyone else's socket gets a proof it drops).
///
/// Both sides walking each other's sequential ports ([`Walk::Both`]) is not emulated: each
/// of those guesses leaves from a new mapping of the guesser's NAT, i.e. from a new port
/// per destination, which one primary socket on loopback cannot be.
pub struct LoopbackSpray {
    easy: Host,
    hard: Host,
    ids: [Identity; 2],
    /// Where the introducer saw the hard side: a port bound and closed again, so nothing
    /// answers the easy side's rounds there (the hard NAT's mapping toward the introducer
    /// filters the easy side out).
    seen: SocketAddr,
    predict: Option<Prediction>,
    punches: u64,
}

fn bind(port: u16) -> std::io::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind((LOCALHOST, port))
}

impl LoopbackSpray {
    /// Binds both sides' sockets: the easy side's primary; the hard side's primary and
    /// pool (`punch::Config::default().pool_size` sockets).
    pub fn new(ports: HardPorts) -> LoopbackSpray {
        let size = punch::Config::default().pool_size;
        // The port the introducer saw, then the pool.
        let block: Vec<std::net::UdpSocket> = match ports {
            HardPorts::Random => (0..=size).map(|_| bind(0).expect("bind 127.0.0.1:0")).collect(),
            // The first free block of them at 40000, 41000, … 64000.
            HardPorts::Consecutive => (40..=64)
                .map(|thousands: u16| thousands * 1000)
                .find_map(|base| (base - 1..base + size).map(bind).collect::<std::io::Result<Vec<_>>>().ok())
                .expect("no free block of consecutive ports on 127.0.0.1 from 40000 up"),
        };
        let seen = block[0].local_addr().expect("local addr");
        let predict =
            (ports == HardPorts::Consecutive).then_some(Prediction { last: seen.port(), step: 1, walk: Walk::Pool });
        let primary = || (SocketId::PRIMARY, bind(0).expect("bind 127.0.0.1:0"));
        let pool = block.into_iter().skip(1).zip(0..).map(|(socket, i)| (pool_socket(i), socket));
        LoopbackSpray {
            easy: Host::new(vec![primary()]),
            hard: Host::new(std::iter::once(primary()).chain(pool).collect()),
            ids: [Identity::from_seed(1), Identity::from_seed(2)],
            seen,
            predict,
            punches: 0,
        }
    }

    /// Sockets on the hard side that a guess can hit: the pool, and the primary socket,
    /// which probes the easy side every round and so is admitted from it too.
    pub fn mappings(&self) -> u32 {
        self.hard.sockets.len() as u32
    }

    /// What the easy side predicts of the hard side's ports, if anything.
    pub fn predict(&self) -> Option<Prediction> {
        self.predict
    }

    /// One complete punch with `punch::Config::default()` pacing, until both sides report
    /// `Connected` (or the easy side's guesses run out and both time out).
    pub fn punch(&mut self) -> SprayPunch {
        self.easy.drain();
        self.hard.drain();
        self.punches += 1;
        // A nonce per punch (it also seeds the easy side's random guesses).
        let nonce = (self.punches ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9).to_le_bytes().to_vec();
        let easy_addr = self.easy.sockets[&SocketId::PRIMARY].local_addr().expect("local addr");
        let plan = |to: SocketAddr, birthday| Plan {
            strategy: if self.predict.is_some() { punch::Strategy::Predict } else { punch::Strategy::Birthday },
            candidates: vec![Candidate { addr: to, path: punch::Path::Direct }],
            send_first: true,
            birthday: Some(birthday),
        };
        let spray = Birthday::Spray { ip: self.seen.ip(), predict: self.predict };
        let start = Instant::now();
        let [easy_id, hard_id] = &self.ids;
        // Each side keys its path tokens with a secret of its own, as nodes do.
        let attempt = |me: &Identity, peer: &Identity, initiator: bool, plan, pool: &[SocketId]| {
            let (config, secret) = (punch::Config::default(), [u8::from(initiator); 32]);
            let ephemeral = rand::SeedableRng::seed_from_u64(u64::from(initiator));
            let handshake = Handshake::punch(me, &peer.peer_id(), &nonce, initiator, ephemeral).expect("ed25519 ids");
            Attempt::new(config, me, peer.peer_id(), nonce.clone(), initiator, plan, pool, &secret, handshake, start)
        };
        let easy = attempt(easy_id, hard_id, true, plan(self.seen, spray), &[]);
        let hard = attempt(
            hard_id,
            easy_id,
            false,
            plan(easy_addr, Birthday::Pool { target: easy_addr, paced: false }),
            &self.hard.pool,
        );
        let settled = watch::channel([false; 2]).0;
        let (easy, hard) = std::thread::scope(|s| {
            let easy = s.spawn(|| self.easy.drive(easy, &nonce, start, 0, &settled));
            let hard = self.hard.drive(hard, &nonce, start, 1, &settled);
            (easy.join().expect("easy side"), hard)
        });
        SprayPunch { connected: easy.connected && hard.connected, elapsed: easy.elapsed.max(hard.elapsed), ..easy }
    }
}

/// One side of a [`LoopbackSpray`]: its real sockets, by the [`SocketId`]s its attempt
/// names, what arrives on them, and a runtime of its own.
struct Host {
    sockets: HashMap<SocketId, Arc<tokio::net::UdpSocket>>,
    pool: Vec<SocketId>,
    inbox: mpsc::UnboundedReceiver<(SocketId, SocketAddr, Vec<u8>)>,
    /// Last, so that the sockets deregister before it shuts down.
    rt: tokio::runtime::Runtime,
}

impl Host {
    /// Takes over `sockets`, with a reader per socket that forwards what arrives.
    fn new(sockets: Vec<(SocketId, std::net::UdpSocket)>) -> Host {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let (tx, inbox) = mpsc::unbounded_channel();
        let pool = sockets.iter().map(|(id, _)| *id).filter(|&id| id != SocketId::PRIMARY).collect();
        let guard = rt.enter();
        let sockets = sockets
            .into_iter()
            .map(|(id, socket)| {
                socket.set_nonblocking(true).expect("nonblocking socket");
                let socket = Arc::new(tokio::net::UdpSocket::from_std(socket).expect("tokio socket"));
                let (reader, tx) = (socket.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0; frame::MAX_DATAGRAM + 1];
                    loop {
                        match reader.recv_from(&mut buf).await {
                            Ok((n, src)) if tx.send((id, src, buf[..n].to_vec())).is_ok() => {}
                            // ICMP port unreachable from an earlier guess: no answer is news.
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                            _ => break,
                        }
                    }
                });
                (id, socket)
            })
            .collect();
        drop(guard);
        Host { sockets, pool, inbox, rt }
    }

    /// Drops what an earlier punch left in flight (proofs sent as the attempts connected,
    /// the pool's proofs the easy side filtered out), unmeasured.
    fn drain(&mut self) {
        let Host { inbox, rt, .. } = self;
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            while inbox.try_recv().is_ok() {}
        });
    }

    /// Runs `attempt` over the sockets until it has settled (connected or failed) and so
    /// has the peer's (`settled`, by `side`): sends what it transmits, delivers what the
    /// sockets admit, calls its timeout when due.
    fn drive(
        &mut self,
        mut attempt: Attempt,
        nonce: &[u8],
        start: Instant,
        side: usize,
        settled: &watch::Sender<[bool; 2]>,
    ) -> SprayPunch {
        let Host { sockets, inbox, rt, .. } = self;
        let mut changed = settled.subscribe();
        rt.block_on(async {
            // The (socket, destination) pairs sent to: what the filter admits.
            let mut sent = HashSet::new();
            let mut outcome = None;
            loop {
                let now = Instant::now();
                if attempt.poll_timeout().is_some_and(|t| t <= now) {
                    attempt.handle_timeout(now);
                }
                while let Some(t) = attempt.poll_transmit() {
                    sent.insert((t.socket, t.dst));
                    // A failed send is a lost datagram, as on any network.
                    let _ = sockets[&t.socket].send_to(&t.payload, t.dst).await;
                }
                while let Some(event) = attempt.poll_event() {
                    let sprayed = attempt.stats().sprayed;
                    outcome = match event {
                        punch::Event::Connected { elapsed, probes, .. } => {
                            Some(SprayPunch { connected: true, elapsed, probes, sprayed })
                        }
                        punch::Event::Failed { .. } => {
                            let (elapsed, probes) = (now - start, attempt.stats().probes);
                            Some(SprayPunch { connected: false, elapsed, probes, sprayed })
                        }
                        // More proven paths after connecting: not part of the punch's time.
                        _ => continue,
                    };
                    settled.send_modify(|s| s[side] = true);
                }
                if let Some(outcome) = outcome.filter(|_| *settled.borrow() == [true; 2]) {
                    return outcome;
                }
                // None once failed: then only the peer's settling is awaited.
                let next = attempt.poll_timeout().unwrap_or(now + WAIT);
                tokio::select! {
                    Some((socket, src, datagram)) = inbox.recv() => {
                        if !sent.contains(&(socket, src)) {
                            continue;
                        }
                        let Ok(Decoded::Envelope(Envelope { kind: Some(Kind::Punch(proof)) })) = frame::decode(&datagram)
                        else { continue };
                        // Routed by nonce, as the punch actor does.
                        if proof.nonce[..] == *nonce {
                            attempt.handle_punch(Instant::now(), socket, src, &proof);
                        }
                    }
                    () = tokio::time::sleep_until(next.into()) => {}
                    _ = changed.changed() => {}
                }
            }
        })
    }
}

/// How many random guesses a birthday spray needs to have hit one of `mappings` open ports
/// of the 64512 it guesses among (1024..=65535) with probability `p`: the `k` with
/// 1 − (1 − mappings/64512)^k ≥ p (guessing with replacement; without, it is a little less).
pub fn birthday_guesses(mappings: u32, p: f64) -> u32 {
    let miss = 1.0 - f64::from(mappings) / f64::from(u16::MAX - 1023);
    ((1.0 - p).ln() / miss.ln()).ceil() as u32
}
