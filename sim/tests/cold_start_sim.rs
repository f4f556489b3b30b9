//! Issue 9, fast cold start, on virtual time: a node launched to reach one peer (what
//! `introducer ping` does) behind an easy NAT, the peer behind another. It asks for the
//! introduction before its NAT is fully classified: once probing knows the mapping (a
//! few round trips; the filtering tests behind a port-restricted NAT wait 700 ms for
//! answers that never come), or right after first contact when its store holds the NAT
//! report of the network it is on. Links: 10 ms across the internet, 1 ms on each LAN,
//! no jitter, so every step is a whole number of round trips.

use introducer_actors::nat::NatBehavior;
use introducer_actors::punch::{Path, Strategy};
use introducer_node::store::Store;
use introducer_node::NodeEvent;
use introducer_sim::node::SimNode;
use introducer_sim::standard::{Standard, NAT_IPS, PEER_PORT};
use introducer_sim::{for_each_seed, HostId, Link, Place, Sim};
use libp2p_identity::PeerId;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
/// A NATed node's round trip to the introducer (and, LAN to LAN, to the other peer):
/// 1 + 10 ms each way.
const RTT: Duration = Duration::from_millis(22);

/// When, after `since`, the node first reported Registered, Connected (to `peer`) and
/// Ready, among the events from the `skip`-th on.
#[derive(Debug)]
struct Steps {
    registered: Duration,
    connected: Duration,
    ready: Duration,
}

fn steps(sim: &Sim, host: HostId, (since, skip): (Instant, usize), peer: PeerId) -> Steps {
    let events = &sim.machine_ref::<SimNode>(host).events()[skip..];
    let at = |pred: &dyn Fn(&NodeEvent) -> bool| {
        let found = events.iter().find(|(_, e)| pred(e)).map(|(t, _)| *t - since);
        found.unwrap_or_else(|| panic!("not reported: {events:?}"))
    };
    let connected = at(&|e| match e {
        NodeEvent::Connected { peer: p, path, strategy, .. } => {
            assert_eq!((*path, *strategy), (Path::Direct, Strategy::SimultaneousOpen), "{e:?}");
            *p == peer
        }
        _ => false,
    });
    Steps {
        registered: at(&|e| matches!(e, NodeEvent::Registered { .. })),
        connected,
        ready: at(&|e| matches!(e, NodeEvent::Ready { .. })),
    }
}

/// Launches (or restarts) `host` and connects it to `peer` at once, as the CLI does;
/// runs until it is connected and classified; returns when each came.
fn cold_start(sim: &mut Sim, host: HostId, peer: PeerId, restart: Option<bool>) -> Steps {
    let launched = sim.now();
    let skip = sim.machine_ref::<SimNode>(host).events().len();
    if let Some(reuse) = restart {
        sim.machine::<SimNode>(host).restart(launched, |c| {
            if !reuse {
                c.stored_nat_max_age = Duration::ZERO;
            }
        });
    }
    sim.machine::<SimNode>(host).connect(launched, peer);
    fn node(s: &Sim, host: HostId) -> &SimNode {
        s.machine_ref::<SimNode>(host)
    }
    let done = |s: &Sim| {
        let events = node(s, host).events()[skip..].iter();
        let (mut connected, mut ready) = (false, false);
        for (_, e) in events {
            connected |= matches!(e, NodeEvent::Connected { peer: p, .. } if *p == peer);
            ready |= matches!(e, NodeEvent::Ready { .. });
        }
        connected && ready
    };
    assert!(sim.run_until_cond(3 * SEC, done), "{:?}", node(sim, host).failure(&peer));
    steps(sim, host, (launched, skip), peer)
}

#[test]
fn sim_a_cold_start_asks_for_the_introduction_before_classification_ends() {
    for_each_seed(0..4, |seed| {
        let mut std = Standard::new(seed, Link::INTERNET_DEFAULT, false);
        let target_nat = std.sim.add_nat(NatBehavior::PORT_RESTRICTED, NAT_IPS[0], None);
        let cold_nat = std.sim.add_nat(NatBehavior::PORT_RESTRICTED, NAT_IPS[1], None);
        let target = std.peer(1).spawn(&mut std.sim, Place::Behind(target_nat), PEER_PORT);
        assert!(std.run_until_registered(&[target], 5 * SEC));
        let peer = std.sim.machine_ref::<SimNode>(target).peer_id();

        // Nothing stored: first contact (1 RTT), Test I (1), the allocation samples one
        // after another (4), the registration's cookie (2), the introduction, the punch.
        let cold = std.peer(2).spawn(&mut std.sim, Place::Behind(cold_nat), PEER_PORT);
        let first = cold_start(&mut std.sim, cold, peer, None);
        assert_eq!(first.registered, 8 * RTT, "{first:?}");
        assert!(first.connected <= 11 * RTT, "{first:?}");
        assert!(first.connected < first.ready, "connected before the filtering tests end: {first:?}");
        assert!(first.ready >= Duration::from_millis(700), "{first:?}");
        let stored = std.sim.machine_ref::<SimNode>(cold).stored().clone().load().unwrap();
        assert_eq!(stored.nat.len(), 1, "the report is kept for this network");

        // Restarted from its data dir: the report stored for this network stands in, and
        // it registers right after first contact (3 RTT), no probing round trip first.
        std.sim.machine::<SimNode>(cold).stop(false);
        std.sim.run_for(SEC);
        let reused = cold_start(&mut std.sim, cold, peer, Some(true));
        assert_eq!(reused.registered, 3 * RTT, "{reused:?}");
        assert!(reused.connected <= 6 * RTT, "{reused:?}");
        assert!(reused.connected < reused.ready, "{reused:?}");

        // The same restart with the stored report not reused takes as long as nothing stored.
        std.sim.machine::<SimNode>(cold).stop(false);
        std.sim.run_for(SEC);
        let not_reused = cold_start(&mut std.sim, cold, peer, Some(false));
        assert_eq!(not_reused.registered, first.registered, "{not_reused:?}");
        println!(
            "seed {seed}: launch → connected {:?} nothing stored, {:?} the stored report reused ({:?} not reused); classified after {:?}",
            first.connected, reused.connected, not_reused.connected, first.ready
        );
    });
}
