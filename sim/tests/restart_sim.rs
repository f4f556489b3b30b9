//! A node restarted from its store alone (the binary's `run --data-dir D` with no
//! `--bootstrap`), killed as by `kill -9` (its unflushed writes lost): it rejoins through
//! the members it kept and is reachable again; with every member down, a NATed node fails
//! with a clear error and a public one serves on its own.

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::SocketId;
use introducer_node::event::{FatalError, MeshChange};
use introducer_node::store::Store;
use introducer_node::NodeEvent;
use introducer_sim::node::SimNode;
use introducer_sim::{for_each_seed, HostId, Place, Sim};
use libp2p_identity::PeerId;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// The events a node reported since `since`.
fn events_since(sim: &Sim, host: HostId, since: Instant) -> Vec<NodeEvent> {
    let node = sim.machine_ref::<SimNode>(host);
    node.events().iter().filter(|(at, _)| *at >= since).map(|(_, e)| e.clone()).collect()
}

/// An RFC 5780 introducer (so a public peer probes as public) and the address to join it.
fn introducer(sim: &mut Sim) -> (HostId, std::net::SocketAddr) {
    let x = SimNode::introducer(Identity::from_seed(100)).alternate_ip([198, 51, 100, 2].into()).spawn(
        sim,
        Place::Public([198, 51, 100, 1].into()),
        3478,
    );
    (x, sim.local_addr(x, SocketId::PRIMARY))
}

#[test]
fn sim_a_restarted_node_rejoins_through_the_members_it_kept() {
    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let (_x, x_addr) = introducer(&mut sim);
        let nat = sim.add_nat(NatBehavior::PORT_RESTRICTED, [203, 0, 113, 1].into(), None);
        let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
        let target = alice.peer_id();
        let a = SimNode::peer(alice, vec![x_addr]).spawn(&mut sim, Place::Behind(nat), 5000);
        let registered = |s: &Sim, h| s.machine_ref::<SimNode>(h).is_registered();
        assert!(sim.run_until_cond(5 * SEC, |s| registered(s, a)), "alice registers");

        // kill -9: only what was flushed survives. Then `run --data-dir D`, no --bootstrap.
        sim.machine::<SimNode>(a).stop(true);
        let kept = sim.machine_ref::<SimNode>(a).stored().clone().load().unwrap();
        assert_eq!(kept.members.values().map(|m| m.addr).collect::<Vec<_>>(), [x_addr], "X was kept");
        sim.run_for(2 * SEC);
        let restarted = sim.now();
        sim.machine::<SimNode>(a).restart(restarted, |c| c.bootstrap.clear());
        assert!(sim.run_until_cond(5 * SEC, |s| registered(s, a)), "alice rejoins");
        let after = events_since(&sim, a, restarted);
        assert!(
            after.iter().any(|e| matches!(e, NodeEvent::Registered { introducer, .. } if *introducer == x_addr)),
            "{after:?}"
        );

        // And she is reachable again, through X.
        let b = SimNode::peer(bob, vec![x_addr]).spawn(&mut sim, Place::Public([192, 0, 2, 7].into()), 5000);
        assert!(sim.run_until_cond(5 * SEC, |s| registered(s, b)));
        let now = sim.now();
        sim.machine::<SimNode>(b).connect(now, target);
        assert!(
            sim.run_until_cond(5 * SEC, |s| s.machine_ref::<SimNode>(b).connected(&target).is_some()),
            "bob reaches the restarted alice: {:?}",
            sim.machine_ref::<SimNode>(b).failure(&target)
        );
    });
}

#[test]
fn sim_with_every_member_down_a_natted_node_fails_clearly_and_a_public_one_serves_alone() {
    let mut sim = Sim::new(1);
    let (x, x_addr) = introducer(&mut sim);
    let nat = sim.add_nat(NatBehavior::PORT_RESTRICTED, [203, 0, 113, 1].into(), None);
    let natted = SimNode::peer(Identity::from_seed(1), vec![x_addr]).spawn(&mut sim, Place::Behind(nat), 5000);
    let public =
        SimNode::peer(Identity::from_seed(2), vec![x_addr]).spawn(&mut sim, Place::Public([192, 0, 2, 7].into()), 5000);
    let up = |s: &Sim| [natted, public].iter().all(|&h| s.machine_ref::<SimNode>(h).is_registered());
    assert!(sim.run_until_cond(5 * SEC, up));
    assert!(sim.machine_ref::<SimNode>(public).is_serving(), "a public node serves");
    // The public node is in X's mesh: X's signed node record is kept with the member.
    let x_id = Identity::from_seed(100).peer_id();
    let x_record = |s: &Sim| {
        let kept = s.machine_ref::<SimNode>(public).stored().clone().load().unwrap();
        kept.members.get(&x_id).is_some_and(|m| !m.record.is_empty() && m.addr == x_addr)
    };
    assert!(sim.run_until_cond(5 * SEC, x_record), "X's node record is kept");

    sim.machine::<SimNode>(x).stop(false);
    for node in [natted, public] {
        sim.machine::<SimNode>(node).stop(true);
    }
    let restarted = sim.now();
    for node in [natted, public] {
        sim.machine::<SimNode>(node).restart(restarted, |c| c.bootstrap.clear());
    }
    sim.run_for(10 * SEC);

    let fatal = events_since(&sim, natted, restarted).into_iter().find_map(|e| match e {
        NodeEvent::Fatal(error) => Some(error),
        _ => None,
    });
    assert!(matches!(fatal, Some(FatalError::Rejoin(_))), "{fatal:?}");
    let message = fatal.unwrap().to_string();
    assert!(message.contains("members kept in the data dir") && message.contains(&x_addr.to_string()), "{message}");

    let after = events_since(&sim, public, restarted);
    assert!(after.iter().any(|e| matches!(e, NodeEvent::Ready { public: true, .. })), "{after:?}");
    assert!(!after.iter().any(|e| matches!(e, NodeEvent::Fatal(_))), "{after:?}");
    assert!(sim.machine_ref::<SimNode>(public).is_serving(), "it serves on its own");
}

/// A public member of X's mesh, killed and restarted from its store alone before X
/// declares it down: it rejoins the mesh through the member it kept (it sees X join), and
/// X keeps it as a member. (Restarted after X declared it left, it is not taken back, with
/// or without the store: the mesh's to fix.)
#[test]
fn sim_a_public_member_restarted_from_its_store_rejoins_the_mesh() {
    let mut sim = Sim::new(3);
    let (x, x_addr) = introducer(&mut sim);
    let (x_id, p_id) = (Identity::from_seed(100).peer_id(), Identity::from_seed(2).peer_id());
    let p =
        SimNode::peer(Identity::from_seed(2), vec![x_addr]).spawn(&mut sim, Place::Public([192, 0, 2, 7].into()), 5000);
    let joined = |s: &Sim, host: HostId, peer: PeerId, since: Instant| {
        let events = events_since(s, host, since);
        events.iter().any(|e| matches!(e, NodeEvent::Mesh { change: MeshChange::Joined, peer: p } if *p == peer))
    };
    let start = sim.now();
    assert!(sim.run_until_cond(10 * SEC, |s| joined(s, x, p_id, start) && joined(s, p, x_id, start)));
    sim.machine::<SimNode>(p).stop(true);
    sim.run_for(SEC);
    let restarted = sim.now();
    sim.machine::<SimNode>(p).restart(restarted, |c| c.bootstrap.clear());
    let rejoined = sim.run_until_cond(10 * SEC, |s| joined(s, p, x_id, restarted));
    assert!(rejoined, "P rejoins X's mesh: {:#?}", events_since(&sim, p, restarted));
    // X takes the restarted P (a newer generation) for the old one: it is never left.
    sim.run_for(30 * SEC);
    let left = events_since(&sim, x, restarted)
        .into_iter()
        .any(|e| matches!(e, NodeEvent::Mesh { change: MeshChange::Left, peer } if peer == p_id));
    assert!(!left, "X keeps the restarted P as a member");
}
