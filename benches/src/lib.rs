//! Shared set-up for the benchmarks.
//!
//! - [`SimPair`]: two peers on the simulator — an RFC 5780 introducer and two [`SimNode`]
//!   peers behind NATs of given kinds, probed and registered — ready to punch.
//! - [`Loopback`]: the real node ([`introducer_node::Node`]) over loopback sockets — an
//!   introducer and two peers registered with it, ready to connect.

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::sim::node::{Connected, SimNode};
use introducer_actors::sim::{HostId, Link, Place, Sim};
use introducer_actors::SocketId;
use introducer_node::config::Serve;
use introducer_node::{Config, Node, NodeEvent};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

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

    /// Builds the network and runs it until both peers are probed and registered.
    pub fn new(seed: u64, latency: Duration, a_nat: NatBehavior, b_nat: NatBehavior) -> SimPair {
        let mut sim = Sim::new(seed);
        sim.set_internet_link(Link::with_latency(latency));
        let introducer = SimNode::introducer(Identity::from_seed(100))
            .alternate_ip(Ipv4Addr::new(198, 51, 100, 2))
            .spawn(&mut sim, Place::Public(Ipv4Addr::new(198, 51, 100, 1)), 3478);
        let introducers = vec![sim.local_addr(introducer, SocketId::PRIMARY)];
        let mut peer = |n: u64, behavior: NatBehavior, nat_ip: Ipv4Addr| {
            let nat = sim.add_nat(behavior, nat_ip, None);
            SimNode::peer(Identity::from_seed(n), introducers.clone()).spawn(&mut sim, Place::Behind(nat), 5000)
        };
        let (a, b) = (peer(1, a_nat, Ipv4Addr::new(203, 0, 113, 10)), peer(2, b_nat, Ipv4Addr::new(203, 0, 113, 20)));
        let registered = |s: &Sim| [a, b].iter().all(|&h| s.machine_ref::<SimNode>(h).is_registered());
        assert!(sim.run_until_cond(Duration::from_secs(10), registered), "peers did not register (seed {seed})");
        let rtt = 2 * (latency + 2 * Link::LAN_DEFAULT.latency);
        SimPair { sim, a, b, rtt }
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
        config.broker.introductions_per_sec = 1e9;
        config.broker.introduction_burst = 1e9;
        for rate in
            [&mut config.relay.bytes_per_sec, &mut config.relay.bytes_burst, &mut config.relay.total_bytes_per_sec]
        {
            *rate = 1e12;
        }
        config.relay.total_bytes_burst = 1e12;
        config.relay.packets_per_sec = 1e9;
        config.relay.packets_burst = 1e9;
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
                        Ok(Some(NodeEvent::Fatal { message })) => panic!("peer failed: {message}"),
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
                    Ok(Some(NodeEvent::ConnectFailed { reason, .. })) => panic!("connect failed: {reason}"),
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
