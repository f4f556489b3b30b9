//! Issue 9, "classification with any servers", on whole simulated nodes: NATed peers probe
//! against public nodes that have one IP each — no full RFC 5780 server anywhere — and must
//! still tell a symmetric NAT from an easy one, so that a pair the birthday punch can
//! connect is not relayed after 5 s.
//!
//! Two public nodes X and Y, as `introducer run --listen IP:3478` on each: they answer STUN
//! on 3478 and, as the alternate port, 3479 (or, with [`SimNode::alternate_port`] off, on
//! 3478 only, as a node that could not bind 3479 or an older one). Peers bootstrap off both.

use introducer_actors::identity::Identity;
use introducer_actors::nat::{Filtering, Mapping, NatBehavior, NatReport, NatType};
use introducer_actors::punch::{Path, Strategy};
use introducer_node::event::NodeEvent;
use introducer_sim::node::{Connected, SimNode};
use introducer_sim::standard::{NAT_IPS, PEER_PORT, PORT};
use introducer_sim::{for_each_seed, HostId, Link, Place, Sim};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const X: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const Y: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const PR: NatBehavior = NatBehavior::PORT_RESTRICTED;
const SR: NatBehavior = NatBehavior::SYMMETRIC_RANDOM;

/// X and Y on the internet (10–25 ms one way by seed, up to 4 ms of jitter), and one peer
/// behind a NAT of its own per behaviour (identity seeds 1, 2, …), registered with both.
struct World {
    sim: Sim,
    peers: Vec<HostId>,
}

impl World {
    fn new(seed: u64, alternate_port: bool, behaviors: &[NatBehavior]) -> World {
        let mut sim = Sim::new(seed);
        sim.set_internet_link(
            Link::with_latency(Duration::from_millis(10 + seed % 16)).jitter(Duration::from_millis(4)),
        );
        let public = |sim: &mut Sim, n: u64, ip: Ipv4Addr| {
            let node = SimNode::introducer(Identity::from_seed(n)).alternate_port(alternate_port);
            node.spawn(sim, Place::Public(ip), PORT);
        };
        public(&mut sim, 100, X);
        public(&mut sim, 101, Y);
        let seeds = vec![SocketAddr::from((X, PORT)), SocketAddr::from((Y, PORT))];
        let peers: Vec<HostId> = behaviors
            .iter()
            .enumerate()
            .map(|(i, &behavior)| {
                let nat = sim.add_nat(behavior, NAT_IPS[i], None);
                let peer = SimNode::peer(Identity::from_seed(i as u64 + 1), seeds.clone());
                peer.spawn(&mut sim, Place::Behind(nat), PEER_PORT)
            })
            .collect();
        let registered = |s: &Sim| peers.iter().all(|&p| s.machine_ref::<SimNode>(p).registered().len() == 2);
        assert!(sim.run_until_cond(10 * SEC, registered), "peers registered with X and Y");
        World { sim, peers }
    }

    fn report(&self, peer: usize) -> NatReport {
        *self.sim.machine_ref::<SimNode>(self.peers[peer]).nat().expect("probed")
    }

    /// Peer 0 asks for peer 1; peer 0's connection, once made.
    fn connect(&mut self) -> Connected {
        let (a, b) = (self.peers[0], self.peers[1]);
        let target = self.sim.machine_ref::<SimNode>(b).peer_id();
        let now = self.sim.now();
        self.sim.machine::<SimNode>(a).connect(now, target);
        let settled = |s: &Sim| {
            let n = s.machine_ref::<SimNode>(a);
            n.connected(&target).is_some() || n.failure(&target).is_some()
        };
        assert!(self.sim.run_until_cond(20 * SEC, settled), "settled within 20 s");
        let node = self.sim.machine_ref::<SimNode>(a);
        node.connected(&target).cloned().unwrap_or_else(|| panic!("not connected: {:?}", node.failure(&target)))
    }
}

/// With the alternate port, two one-IP nodes classify mapping exactly: the port test on X
/// tells port dependence, X against Y tells endpoint independence. Filtering shows only
/// where nothing answers from X's other port (port-restricted); endpoint-independent vs
/// address-dependent filtering would need an answer from another IP.
#[test]
fn two_one_ip_nodes_with_alternate_ports_classify_the_mapping() {
    let behaviors = [
        SR,
        NatBehavior::SYMMETRIC_SEQUENTIAL,
        PR,
        NatBehavior::EIM_RANDOM_PORT,
        NatBehavior::FULL_CONE,
        NatBehavior::RESTRICTED_CONE,
    ];
    for_each_seed(0..10, |seed| {
        for pair in behaviors.chunks(2) {
            let world = World::new(seed, true, pair);
            for (i, behavior) in pair.iter().enumerate() {
                let report = world.report(i);
                let filtering = Some(behavior.filtering).filter(|&f| f == Filtering::AddressAndPortDependent);
                assert_eq!(
                    (report.mapping, report.filtering, report.allocation),
                    (Some(behavior.mapping), filtering, Some(behavior.allocation)),
                    "{behavior:?}"
                );
                assert_eq!(report.nat_type(), behavior.nat_type(), "{behavior:?}");
                assert_eq!(report.public_addr.ip(), NAT_IPS[i]);
            }
        }
    });
}

/// Without alternate ports (one-IP nodes as they were, or nodes that could not bind the next
/// port): different public ports towards X and Y show a symmetric NAT is not easy, though
/// not whether its mapping depends on the port too. It was reported easy.
#[test]
fn two_one_ip_nodes_without_alternate_ports_still_tell_hard_from_easy() {
    for_each_seed(0..10, |seed| {
        let world = World::new(seed, false, &[SR, PR]);
        let (symmetric, port_restricted) = (world.report(0), world.report(1));
        assert_eq!((symmetric.mapping, symmetric.nat_type()), (None, NatType::Hard), "{symmetric:?}");
        let easy = (Some(Mapping::EndpointIndependent), None, NatType::Easy);
        assert_eq!((port_restricted.mapping, port_restricted.filtering, port_restricted.nat_type()), easy);
    });
}

/// The symptom: a port-restricted peer asking for a peer behind a symmetric NAT,
/// both homed at one-IP nodes, was relayed after 5 s (both planned a simultaneous open the
/// symmetric NAT cannot take). Classified right, the pair is a birthday punch, direct.
#[test]
fn a_birthday_pair_homed_at_one_ip_nodes_is_punched_not_relayed() {
    for alternate_port in [true, false] {
        for_each_seed(0..10, |seed| {
            let mut world = World::new(seed, alternate_port, &[PR, SR]);
            let connected = world.connect();
            assert_eq!((connected.path, connected.strategy), (Path::Direct, Strategy::Birthday), "{connected:?}");
            assert!(connected.connect < 5 * SEC, "before the relay fallback: {connected:?}");
        });
    }
}

/// A peer that knows only one single-IP node cannot tell an endpoint-independent mapping
/// from a symmetric one, and plans as hard (a full-cone peer was birthday-punched or
/// relayed in the docker-compose testbed). Once it has a home on another IP (suggested
/// when it registers), it classifies again with that home as a second server: easy.
#[test]
fn a_peer_seeded_by_one_single_ip_node_classifies_again_with_its_homes() {
    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let founder = SimNode::introducer(Identity::from_seed(100))
            .alternate_ip(Ipv4Addr::new(198, 51, 100, 99))
            .spawn(&mut sim, Place::Public(X), PORT);
        let founder_addr = sim.local_addr(founder, introducer_actors::SocketId::PRIMARY);
        let y = SimNode::peer(Identity::from_seed(101), vec![founder_addr]).spawn(&mut sim, Place::Public(Y), PORT);
        let y_serves = |s: &Sim| s.machine_ref::<SimNode>(y).nat().is_some_and(|r| r.nat_type() == NatType::Public);
        assert!(sim.run_until_cond(10 * SEC, y_serves), "seed {seed}: Y serves");
        sim.run_for(3 * SEC);
        let nat = sim.add_nat(NatBehavior::FULL_CONE, NAT_IPS[0], None);
        let peer = SimNode::peer(Identity::from_seed(1), vec![SocketAddr::from((Y, PORT))]);
        let peer = peer.spawn(&mut sim, Place::Behind(nat), PEER_PORT);
        let easy = |s: &Sim| s.machine_ref::<SimNode>(peer).nat().is_some_and(|r| r.nat_type() == NatType::Easy);
        assert!(sim.run_until_cond(20 * SEC, easy), "seed {seed}: {:?}", sim.machine_ref::<SimNode>(peer).nat());
        let node = sim.machine_ref::<SimNode>(peer);
        let report = node.nat().unwrap();
        assert_eq!(report.mapping, Some(Mapping::EndpointIndependent), "seed {seed}");
        let reclassified = node.events().iter().any(|(_, e)| matches!(e, NodeEvent::Nat { .. }));
        assert!(reclassified, "seed {seed}: first classified hard, then again");
    });
}
