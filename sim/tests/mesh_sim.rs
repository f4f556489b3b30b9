//! The mesh on the simulated internet, run by whole nodes (the composition the binary
//! runs): public nodes that bootstrap off a founder become members of one mesh, learn each
//! other's records, and suspect a member that goes silent, then declare it down.

use introducer_actors::identity::Identity;
use introducer_actors::SocketId;
use introducer_node::event::{MeshChange, NodeEvent};
use introducer_sim::node::SimNode;
use introducer_sim::{for_each_seed, HostId, Link, Place, Sim};
use libp2p_identity::PeerId;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn mesh_changes(sim: &Sim, host: introducer_sim::HostId, change: MeshChange) -> BTreeSet<PeerId> {
    sim.machine_ref::<SimNode>(host)
        .events()
        .iter()
        .filter_map(|(_, e)| match e {
            NodeEvent::Mesh { change: c, peer } if *c == change => Some(*peer),
            _ => None,
        })
        .collect()
}

/// A founder on two IPs (a full RFC 5780 server, so the others can tell they are public)
/// and `n - 1` more public nodes that joined through it, all serving; the founder's
/// address and every member, the founder first.
fn public_mesh(sim: &mut Sim, n: u8) -> (SocketAddr, Vec<HostId>) {
    let founder = SimNode::introducer(Identity::from_seed(100)).alternate_ip(Ipv4Addr::new(198, 51, 100, 99)).spawn(
        sim,
        Place::Public(Ipv4Addr::new(198, 51, 100, 10)),
        3478,
    );
    let founder_addr = sim.local_addr(founder, SocketId::PRIMARY);
    let mut members = vec![founder];
    for i in 1..n {
        let node = SimNode::peer(Identity::from_seed(100 + u64::from(i)), vec![founder_addr]);
        members.push(node.spawn(sim, Place::Public(Ipv4Addr::new(198, 51, 100, 10 + i)), 3478));
    }
    let serving = |sim: &Sim| members.iter().all(|&m| sim.machine_ref::<SimNode>(m).is_serving());
    assert!(sim.run_until_cond(10 * SEC, serving), "the mesh serves");
    (founder_addr, members)
}

#[test]
fn sim_public_nodes_form_one_mesh_and_declare_a_dead_member_left() {
    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let ip = |i: u8| Ipv4Addr::new(198, 51, 100, 10 + i);
        // The founder listens on two IPs (a full RFC 5780 server), so the others can tell
        // they are public by probing against it.
        let founder = SimNode::introducer(Identity::from_seed(100))
            .alternate_ip(Ipv4Addr::new(198, 51, 100, 99))
            .spawn(&mut sim, Place::Public(ip(0)), 3478);
        let seed_addr = sim.local_addr(founder, SocketId::PRIMARY);
        let mut hosts = vec![founder];
        for i in 1..5u8 {
            let node = SimNode::peer(Identity::from_seed(100 + u64::from(i)), vec![seed_addr]);
            hosts.push(node.spawn(&mut sim, Place::Public(ip(i)), 3478));
        }
        let ids: Vec<PeerId> = hosts.iter().map(|&h| sim.machine_ref::<SimNode>(h).peer_id()).collect();
        let everyone_joined = |sim: &Sim| {
            hosts.iter().enumerate().all(|(i, &h)| {
                let others: BTreeSet<PeerId> =
                    ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
                mesh_changes(sim, h, MeshChange::Joined) == others
            })
        };
        assert!(sim.run_until_cond(30 * SEC, everyone_joined), "seed {seed}: not one mesh after 30 s");
        // Node 3 goes silent: every other member says it left, within SWIM's suspicion time.
        let dead = hosts[3];
        sim.set_host_link(dead, Link::IDEAL.loss(1.0));
        let went = sim.now();
        let all_saw_it = |sim: &Sim| {
            hosts.iter().filter(|&&h| h != dead).all(|&h| mesh_changes(sim, h, MeshChange::Left).contains(&ids[3]))
        };
        assert!(sim.run_until_cond(30 * SEC, all_saw_it), "seed {seed}: the dead member is still counted");
        let took = sim.now() - went;
        eprintln!("seed {seed}: joined by {:?}, dead member left after {took:?}", went - sim.instant(Duration::ZERO));
        assert!(took < 20 * SEC, "seed {seed}: {took:?} to declare a dead member left");
        for &h in hosts.iter().filter(|&&h| h != dead) {
            let left = mesh_changes(&sim, h, MeshChange::Left);
            assert_eq!(left, BTreeSet::from([ids[3]]), "seed {seed}: only the dead member left");
            // Suspected first, once, and nobody else (the links lose nothing).
            let changes: Vec<(MeshChange, PeerId)> = sim
                .machine_ref::<SimNode>(h)
                .events()
                .iter()
                .filter_map(|(_, e)| match e {
                    NodeEvent::Mesh { change, peer } if *change != MeshChange::Joined => Some((*change, *peer)),
                    _ => None,
                })
                .collect();
            assert_eq!(changes, [(MeshChange::Suspect, ids[3]), (MeshChange::Left, ids[3])], "seed {seed}");
        }
    });
}

/// A public node on one IP that knows only another single-IP node cannot test filtering by
/// probing; another member dialing it back shows it is public, and it serves. A node
/// behind a NAT asking the same is not reached, and does not serve.
#[test]
fn sim_a_single_ip_node_learns_it_is_public_by_dial_back() {
    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let ip = |i: u8| Ipv4Addr::new(198, 51, 100, 10 + i);
        let founder = SimNode::introducer(Identity::from_seed(100))
            .alternate_ip(Ipv4Addr::new(198, 51, 100, 99))
            .spawn(&mut sim, Place::Public(ip(0)), 3478);
        let founder_addr = sim.local_addr(founder, SocketId::PRIMARY);
        let b = SimNode::peer(Identity::from_seed(101), vec![founder_addr]).spawn(&mut sim, Place::Public(ip(1)), 3478);
        let b_addr = sim.local_addr(b, SocketId::PRIMARY);
        assert!(sim.run_until_cond(10 * SEC, |sim| sim.machine_ref::<SimNode>(b).is_serving()));
        // C knows only B (one IP): only a dial-back by the founder can tell it is public.
        let c = SimNode::peer(Identity::from_seed(102), vec![b_addr]).spawn(&mut sim, Place::Public(ip(2)), 3478);
        let nat = sim.add_nat(introducer_actors::nat::NatBehavior::FULL_CONE, Ipv4Addr::new(203, 0, 113, 1), None);
        let behind = SimNode::peer(Identity::from_seed(103), vec![b_addr]).spawn(&mut sim, Place::Behind(nat), 3478);
        let ready = |sim: &Sim, h| {
            sim.machine_ref::<SimNode>(h).events().iter().find_map(|(_, e)| match e {
                NodeEvent::Ready { public, .. } => Some(*public),
                _ => None,
            })
        };
        assert!(sim.run_until_cond(10 * SEC, |sim| ready(sim, c).is_some() && ready(sim, behind).is_some()));
        assert_eq!(ready(&sim, c), Some(true), "seed {seed}: dialed back, C is public");
        assert_eq!(ready(&sim, behind), Some(false), "seed {seed}: a NATed node is not");
        let c_id = sim.machine_ref::<SimNode>(c).peer_id();
        assert!(
            sim.run_until_cond(10 * SEC, |sim| mesh_changes(sim, founder, MeshChange::Joined).contains(&c_id)),
            "seed {seed}: C serves and joins the mesh"
        );
    });
}

/// Two NATed peers homed at different members: the requester's home knows (from the
/// mesh) where the target is homed, sends it there, and that home introduces them, with
/// every proof a registration gives. They punch and ping.
#[test]
fn sim_peers_homed_at_different_members_connect_through_the_targets_home() {
    for_each_seed(0..8, |seed| {
        let mut sim = Sim::new(seed);
        let (founder_addr, members) = public_mesh(&mut sim, 2);
        let b_addr = sim.local_addr(members[1], SocketId::PRIMARY);
        let nat = |sim: &mut Sim, i: u8| {
            sim.add_nat(introducer_actors::nat::NatBehavior::PORT_RESTRICTED, Ipv4Addr::new(203, 0, 113, i), None)
        };
        let (nat_p, nat_q) = (nat(&mut sim, 1), nat(&mut sim, 2));
        let target = Identity::from_seed(200);
        let p = SimNode::peer(target.clone(), vec![founder_addr]).spawn(&mut sim, Place::Behind(nat_p), 4000);
        assert!(sim.run_until_cond(10 * SEC, |sim| sim.machine_ref::<SimNode>(p).is_registered()));
        // B hears from the mesh that the founder hosts P.
        let at = sim.now() + 3 * SEC;
        let q = SimNode::peer(Identity::from_seed(201), vec![b_addr])
            .connect_at(at, target.peer_id())
            .pings(3, Duration::from_millis(200))
            .spawn(&mut sim, Place::Behind(nat_q), 4000);
        let pinged = |sim: &Sim| sim.machine_ref::<SimNode>(q).pongs(&target.peer_id()).len() >= 3;
        let ok = sim.run_until_cond(30 * SEC, pinged);
        let node = sim.machine_ref::<SimNode>(q);
        assert!(ok, "seed {seed}: {:?}", node.failure(&target.peer_id()));
        let connected = node.connected(&target.peer_id()).expect("connected");
        assert_eq!(connected.path, introducer_actors::punch::Path::Direct, "seed {seed}");
        assert!(node.registered().contains(&founder_addr), "seed {seed}: registered with the target's home");
        eprintln!("seed {seed}: connected across homes in {:.0} ms", connected.connect_ms());
    });
}

/// A NATed peer that knows one member registers with three (the others suggested by the
/// mesh). When two of its homes die at once, a peer asking a member that is not its home
/// still reaches it within 10 s — the lookup moves on from a home that does not answer to
/// the next — and the peer takes new homes to keep three.
#[test]
fn sim_a_peer_keeps_three_homes_and_stays_reachable_when_one_dies() {
    for_each_seed(0..6, |seed| {
        let mut sim = Sim::new(seed);
        let (founder_addr, members) = public_mesh(&mut sim, 5);
        sim.run_for(3 * SEC);
        let addr_of = |sim: &Sim, h| sim.local_addr(h, SocketId::PRIMARY);
        let nat = |sim: &mut Sim, i: u8| {
            sim.add_nat(introducer_actors::nat::NatBehavior::PORT_RESTRICTED, Ipv4Addr::new(203, 0, 113, i), None)
        };
        let nat_p = nat(&mut sim, 1);
        let target = Identity::from_seed(200);
        let p = SimNode::peer(target.clone(), vec![founder_addr]).spawn(&mut sim, Place::Behind(nat_p), 4000);
        let three = |sim: &Sim| sim.machine_ref::<SimNode>(p).registered().len() == 3;
        assert!(sim.run_until_cond(10 * SEC, three), "seed {seed}: P has three homes");
        let homes = sim.machine_ref::<SimNode>(p).registered().clone();
        let elsewhere =
            *members.iter().find(|&&m| !homes.contains(&addr_of(&sim, m))).expect("a member that is not a home");
        // Let the claims spread, then kill two of its three homes.
        sim.run_for(3 * SEC);
        let dead: Vec<_> = members.iter().copied().filter(|&m| homes.contains(&addr_of(&sim, m))).take(2).collect();
        for &home in &dead {
            sim.set_host_link(home, Link::IDEAL.loss(1.0));
        }
        let killed = sim.now();
        let nat_q = nat(&mut sim, 2);
        let q = SimNode::peer(Identity::from_seed(201), vec![addr_of(&sim, elsewhere)])
            .connect_at(killed, target.peer_id())
            .pings(1, Duration::from_millis(100))
            .spawn(&mut sim, Place::Behind(nat_q), 4000);
        let reached = |sim: &Sim| !sim.machine_ref::<SimNode>(q).pongs(&target.peer_id()).is_empty();
        let ok = sim.run_until_cond(30 * SEC, reached);
        assert!(ok, "seed {seed}: {:?}", sim.machine_ref::<SimNode>(q).failure(&target.peer_id()));
        let took = sim.now() - killed;
        eprintln!("seed {seed}: reachable again {took:?} after two of its three homes died");
        assert!(took <= 10 * SEC, "seed {seed}: {took:?}");
        // And P keeps three live homes.
        let dead_addrs: Vec<_> = dead.iter().map(|&h| addr_of(&sim, h)).collect();
        let rehomed = |sim: &Sim| {
            let r = sim.machine_ref::<SimNode>(p).registered();
            r.len() == 3 && dead_addrs.iter().all(|d| !r.contains(d))
        };
        assert!(sim.run_until_cond(60 * SEC, rehomed), "seed {seed}: {:?}", sim.machine_ref::<SimNode>(p).registered());
    });
}

/// Three peers behind NATs (one of them hard), homed at different members, join a topic:
/// each connects to the two others; one goes silent and the others see it leave; it comes
/// back and they connect to it again.
#[test]
fn sim_a_topic_connects_its_members_notices_one_leave_and_come_back() {
    use introducer_actors::nat::NatBehavior;
    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let (founder_addr, members) = public_mesh(&mut sim, 2);
        let b_addr = sim.local_addr(members[1], SocketId::PRIMARY);
        let kinds = [
            (NatBehavior::PORT_RESTRICTED, founder_addr),
            (NatBehavior::PORT_RESTRICTED, b_addr),
            (NatBehavior::SYMMETRIC_RANDOM, founder_addr),
        ];
        let mut peers = Vec::new();
        for (i, (behavior, seed_addr)) in kinds.into_iter().enumerate() {
            let nat = sim.add_nat(behavior, Ipv4Addr::new(203, 0, 113, 1 + i as u8), None);
            let node = SimNode::peer(Identity::from_seed(300 + i as u64), vec![seed_addr]);
            peers.push(node.spawn(&mut sim, Place::Behind(nat), 4000));
        }
        let registered = |sim: &Sim| peers.iter().all(|&p| sim.machine_ref::<SimNode>(p).is_registered());
        assert!(sim.run_until_cond(10 * SEC, registered), "seed {seed}");
        let now = sim.now();
        for &p in &peers {
            sim.machine::<SimNode>(p).join(now, b"chat");
        }
        let ids: Vec<PeerId> = peers.iter().map(|&p| sim.machine_ref::<SimNode>(p).peer_id()).collect();
        let all_connected = |sim: &Sim| {
            peers.iter().enumerate().all(|(i, &p)| {
                ids.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .all(|(_, id)| sim.machine_ref::<SimNode>(p).session_remote(id).is_some())
            })
        };
        assert!(sim.run_until_cond(20 * SEC, all_connected), "seed {seed}: not everyone connected");
        let joined = sim.now() - now;
        // The second goes silent: the others see it leave.
        let events_of = |sim: &Sim, h, want: &dyn Fn(&NodeEvent) -> bool| {
            sim.machine_ref::<SimNode>(h).events().iter().filter(|(_, e)| want(e)).count()
        };
        let left = |e: &NodeEvent| matches!(e, NodeEvent::TopicLeft { peer, .. } if *peer == ids[1]);
        sim.set_host_link(peers[1], Link::IDEAL.loss(1.0));
        let silenced = sim.now();
        let saw_leave = |sim: &Sim| [0, 2].iter().all(|&i| events_of(sim, peers[i], &left) > 0);
        assert!(sim.run_until_cond(120 * SEC, saw_leave), "seed {seed}: nobody saw it leave");
        let leave = sim.now() - silenced;
        // It comes back: they connect to it again.
        sim.set_host_link(peers[1], Link::IDEAL);
        let back = sim.now();
        let reconnected =
            |sim: &Sim| [0, 2].iter().all(|&i| sim.machine_ref::<SimNode>(peers[i]).session_remote(&ids[1]).is_some());
        assert!(sim.run_until_cond(60 * SEC, reconnected), "seed {seed}: not reconnected");
        eprintln!(
            "seed {seed}: topic of 3 connected in {joined:?}; a leave seen after {leave:?}; back after {:?}",
            sim.now() - back
        );
    });
}

/// A NAT forgets a connected peer's mappings (a router reboot, `conntrack -F`, a machine
/// that slept): its session goes silent, both sides call it inactive, one punches anew, and
/// the session is active again on the new mappings, without the user reconnecting.
#[test]
fn sim_a_session_whose_nat_forgot_it_becomes_active_again() {
    use introducer_actors::nat::NatBehavior;
    use introducer_node::event::PeerState;
    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let (founder_addr, _) = public_mesh(&mut sim, 1);
        let nat_a = sim.add_nat(NatBehavior::EIM_RANDOM_PORT, Ipv4Addr::new(203, 0, 113, 1), None);
        let nat_b = sim.add_nat(NatBehavior::EIM_RANDOM_PORT, Ipv4Addr::new(203, 0, 113, 2), None);
        let b_id = Identity::from_seed(301);
        let b = SimNode::peer(b_id.clone(), vec![founder_addr]).spawn(&mut sim, Place::Behind(nat_b), 4000);
        assert!(sim.run_until_cond(10 * SEC, |sim| sim.machine_ref::<SimNode>(b).is_registered()));
        let now = sim.now();
        let a = SimNode::peer(Identity::from_seed(300), vec![founder_addr]).connect_at(now, b_id.peer_id()).spawn(
            &mut sim,
            Place::Behind(nat_a),
            4000,
        );
        let connected = |sim: &Sim| sim.machine_ref::<SimNode>(a).connected(&b_id.peer_id()).is_some();
        assert!(sim.run_until_cond(10 * SEC, connected), "seed {seed}");
        sim.flush_nat(nat_b);
        let flushed = sim.now();
        let state = |sim: &Sim, s: PeerState| {
            sim.machine_ref::<SimNode>(a)
                .events()
                .iter()
                .filter(|(t, e)| *t > flushed && matches!(e, NodeEvent::PeerState { state, .. } if *state == s))
                .count()
        };
        let back = |sim: &Sim| state(sim, PeerState::Inactive) > 0 && state(sim, PeerState::Active) > 0;
        assert!(sim.run_until_cond(60 * SEC, back), "seed {seed}: not active again");
        let took = sim.now() - flushed;
        assert_eq!(state(&sim, PeerState::Gone), 0, "seed {seed}: never gone");
        let now = sim.now();
        sim.machine::<SimNode>(a).ping(now, &b_id.peer_id()).expect("session open");
        let pongs = sim.machine_ref::<SimNode>(a).pongs(&b_id.peer_id()).len();
        assert!(sim.run_until_cond(5 * SEC, |sim| sim.machine_ref::<SimNode>(a).pongs(&b_id.peer_id()).len() > pongs));
        eprintln!("seed {seed}: active again {took:?} after the NAT forgot the session");
    });
}

/// Two peers behind symmetric NATs talk through a relay (no punch gets through); the relay
/// dies: their session goes inactive, is introduced anew through a live home, and carries
/// on over another relay — the user does not reconnect.
#[test]
fn sim_a_relayed_session_moves_to_another_relay_when_its_relay_dies() {
    use introducer_actors::nat::NatBehavior;
    use introducer_actors::punch::Path;
    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let (founder_addr, members) = public_mesh(&mut sim, 4);
        sim.run_for(3 * SEC);
        let nat_a = sim.add_nat(NatBehavior::SYMMETRIC_RANDOM, Ipv4Addr::new(203, 0, 113, 1), None);
        let nat_b = sim.add_nat(NatBehavior::SYMMETRIC_RANDOM, Ipv4Addr::new(203, 0, 113, 2), None);
        let b_id = Identity::from_seed(301);
        let b = SimNode::peer(b_id.clone(), vec![founder_addr]).spawn(&mut sim, Place::Behind(nat_b), 4000);
        let three = |sim: &Sim, h| sim.machine_ref::<SimNode>(h).registered().len() == 3;
        assert!(sim.run_until_cond(10 * SEC, |sim| three(sim, b)), "seed {seed}");
        let now = sim.now();
        let a = SimNode::peer(Identity::from_seed(300), vec![founder_addr]).connect_at(now, b_id.peer_id()).spawn(
            &mut sim,
            Place::Behind(nat_a),
            4000,
        );
        let connected = |sim: &Sim| sim.machine_ref::<SimNode>(a).connected(&b_id.peer_id()).is_some();
        assert!(sim.run_until_cond(20 * SEC, connected), "seed {seed}");
        assert_eq!(sim.machine_ref::<SimNode>(a).connected(&b_id.peer_id()).unwrap().path, Path::Relayed);
        let relay = sim.machine_ref::<SimNode>(a).session_remote(&b_id.peer_id()).expect("relayed via");
        let dead = *members.iter().find(|&&m| sim.local_addr(m, SocketId::PRIMARY) == relay).unwrap();
        sim.set_host_link(dead, Link::IDEAL.loss(1.0));
        let killed = sim.now();
        let moved = |sim: &Sim| {
            let node = sim.machine_ref::<SimNode>(a);
            node.session_remote(&b_id.peer_id()).is_some_and(|r| r != relay)
        };
        assert!(sim.run_until_cond(60 * SEC, moved), "seed {seed}: still on the dead relay");
        let failed = |e: &NodeEvent| matches!(e, NodeEvent::ConnectFailed { .. });
        assert!(
            !sim.machine_ref::<SimNode>(b).events().iter().any(|(_, e)| failed(e)),
            "seed {seed}: the user hears no failure"
        );
        let took = sim.now() - killed;
        let now = sim.now();
        let before = sim.machine_ref::<SimNode>(a).pongs(&b_id.peer_id()).len();
        sim.machine::<SimNode>(a).ping(now, &b_id.peer_id()).expect("session open");
        let pong = |sim: &Sim| sim.machine_ref::<SimNode>(a).pongs(&b_id.peer_id()).len() > before;
        assert!(sim.run_until_cond(5 * SEC, pong), "seed {seed}: no pong over the new relay");
        eprintln!("seed {seed}: on another relay {took:?} after its relay died");
    });
}

/// `introducer peers` on the simulated internet: a one-shot asker behind a NAT (no member)
/// asks one member, which lists every member — itself included — with its addresses, roles,
/// state and relay load: the founder relays two symmetric-NAT peers, and its record says so
/// once the core republished it (at most 30 s after the last) and gossip spread it. A member
/// that goes silent is listed as suspect, then down.
#[test]
fn sim_peers_lists_every_member_with_its_state_and_relay_load() {
    use introducer_actors::mesh::listing::MemberState;
    use introducer_actors::nat::NatBehavior;
    use introducer_actors::SocketId;
    use introducer_bootstrap::members::{Listing, MembersQuery, QueryConfig};

    for_each_seed(0..4, |seed| {
        let mut sim = Sim::new(seed);
        let ip = |i: u8| Ipv4Addr::new(198, 51, 100, 10 + i);
        let founder = SimNode::introducer(Identity::from_seed(100))
            .alternate_ip(Ipv4Addr::new(198, 51, 100, 99))
            .spawn(&mut sim, Place::Public(ip(0)), 3478);
        let founder_addr = sim.local_addr(founder, SocketId::PRIMARY);
        let b = SimNode::peer(Identity::from_seed(101), vec![founder_addr]).spawn(&mut sim, Place::Public(ip(1)), 3478);
        let c = SimNode::peer(Identity::from_seed(102), vec![founder_addr]).spawn(&mut sim, Place::Public(ip(2)), 3478);
        let ids: Vec<PeerId> = [founder, b, c].iter().map(|&h| sim.machine_ref::<SimNode>(h).peer_id()).collect();
        let b_addr = sim.local_addr(b, SocketId::PRIMARY);
        let one_mesh = |sim: &Sim| mesh_changes(sim, b, MeshChange::Joined) == BTreeSet::from([ids[0], ids[2]]);
        assert!(sim.run_until_cond(30 * SEC, one_mesh), "seed {seed}: no mesh");
        // Two peers behind symmetric NATs: nothing punches them, the founder relays.
        let hard =
            |sim: &mut Sim, i: u8| sim.add_nat(NatBehavior::SYMMETRIC_RANDOM, Ipv4Addr::new(203, 0, 113, i), None);
        let (nat_a, nat_b) = (hard(&mut sim, 1), hard(&mut sim, 2));
        let bob = Identity::from_seed(201);
        let alice = SimNode::peer(Identity::from_seed(200), vec![founder_addr])
            .connect_at(sim.now() + 3 * SEC, bob.peer_id())
            .spawn(&mut sim, Place::Behind(nat_a), 4000);
        SimNode::peer(bob.clone(), vec![founder_addr]).spawn(&mut sim, Place::Behind(nat_b), 4000);
        let relayed = |sim: &Sim| sim.machine_ref::<SimNode>(alice).connected(&bob.peer_id()).is_some();
        assert!(sim.run_until_cond(30 * SEC, relayed), "seed {seed}: not relayed");
        let path = sim.machine_ref::<SimNode>(alice).connected(&bob.peer_id()).unwrap().path;
        assert_eq!(path, introducer_actors::punch::Path::Relayed, "seed {seed}");
        sim.run_for(35 * SEC);

        let asker_nat = sim.add_nat(NatBehavior::PORT_RESTRICTED, Ipv4Addr::new(203, 0, 113, 9), None);
        let ask = |sim: &mut Sim, port: u16| -> Listing {
            let unix_ms = 1_700_000_000_000 + sim.elapsed().as_millis() as u64;
            let now = sim.now();
            let query = MembersQuery::new(QueryConfig::default(), vec![b_addr], seed, (now, unix_ms));
            let host = sim.add_host(Place::Behind(asker_nat), query);
            sim.bind(host, SocketId::PRIMARY, port);
            let done = |sim: &Sim| sim.machine_ref::<MembersQuery>(host).result().is_some();
            assert!(sim.run_until_cond(10 * SEC, done), "seed {seed}: the query never ended");
            sim.machine_ref::<MembersQuery>(host).result().unwrap().clone().expect("listed")
        };
        let listing = ask(&mut sim, 6000);
        assert_eq!(listing.from.peer_id, ids[1], "seed {seed}: B answered");
        assert_eq!(listing.members.keys().copied().collect::<BTreeSet<_>>(), BTreeSet::from_iter(ids.clone()));
        for (i, id) in ids.iter().enumerate() {
            let m = &listing.members[id];
            assert_eq!(m.state, MemberState::Alive, "seed {seed}: member {i}");
            assert_eq!(m.record.addrs.first(), Some(&std::net::SocketAddr::from((ip(i as u8), 3478))), "seed {seed}");
            assert!(m.record.introducer && m.record.relay && m.record.relay_capacity == 256, "seed {seed}");
            let load = if i == 0 { 1 } else { 0 };
            assert_eq!(m.record.relay_load, load, "seed {seed}: member {i}'s relay load");
        }
        // C goes silent: B lists it as suspect, then as down.
        sim.set_host_link(c, Link::IDEAL.loss(1.0));
        let mut states = BTreeSet::new();
        for port in 6001..6031 {
            sim.run_for(SEC);
            states.insert(ask(&mut sim, port).members[&ids[2]].state);
            if states.contains(&MemberState::Down) {
                break;
            }
        }
        assert!(
            states.contains(&MemberState::Suspect) && states.contains(&MemberState::Down),
            "seed {seed}: {states:?}"
        );
    });
}
