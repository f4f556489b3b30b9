//! The scale harness, small: a few dozen mesh members and a hundred peers (stood in for
//! by their homes' claims) on virtual time. Behaviour, not timing: records republished in
//! a formed mesh reach every member, every lookup (one round trip to the peer's
//! directory) finds a live home at steady state, a killed member is declared down by every
//! member that had it up and its claims go, and its peers keep being found. The figures at scale are the bench's
//! (`cargo bench -p introducer-benches --bench mesh_scale`).

use introducer_actors::mesh::directory::COPIES;
use introducer_sim::mesh_scale::{MeshSim, HOMES};
use std::time::Duration;

#[test]
fn a_small_mesh_converges_finds_every_peer_and_fails_over() {
    let mut sim = MeshSim::new(7);
    for n in 0..16 {
        let via = if n == 0 { None } else { sim.random_live() };
        sim.spawn(via, false);
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(10));
    // Records republished from a formed mesh reach nearly everyone each time (a broadcast
    // is passed on 6 times by each member, so about e^-6 of the members miss it), and
    // everyone after two rounds.
    sim.stagger_refresh(Duration::from_secs(30));
    sim.run_for(Duration::from_secs(40));
    let (pairs, known) = sim.records_known();
    assert!(known * 100 >= pairs * 99, "{known} of {pairs} records held");
    sim.stagger_refresh(Duration::from_secs(30));
    sim.run_for(Duration::from_secs(40));
    let (pairs, known) = sim.records_known();
    assert_eq!(known, pairs, "every member holds every other's record");

    // Steady state: a lookup anywhere (one round trip to the peer's directory) finds a
    // live home, with its address. Each claim is held by its home and the directory's
    // members: a few copies, not one per member.
    sim.add_peers(60, Duration::from_secs(60));
    sim.run_for(Duration::from_secs(130));
    let l = sim.lookups(500, Duration::ZERO);
    assert_eq!((l.found, l.named_dead), (l.asked, 0), "{l:?}");
    assert!(l.time(1.0).unwrap() < Duration::from_millis(300), "one round trip: {l:?}");
    let loads = sim.loads();
    let held: usize = loads.iter().map(|load| load.claims).sum();
    let claims = 60 * HOMES;
    assert!((claims * COPIES..=claims * (COPIES + 1)).contains(&held), "{held} claims held, {claims} made");

    // A home dies: declared down by all that had it up, its claims dropped everywhere,
    // and its peers still found (their other homes, then the new one).
    let victim = sim.live().iter().copied().find(|&m| sim.peers.iter().any(|p| p.homes.contains(&m))).unwrap();
    sim.kill(victim);
    let l = sim.lookups(500, Duration::ZERO);
    assert_eq!(l.found, l.asked, "the other homes answer at once: {l:?}");
    sim.run_for(Duration::from_secs(30));
    sim.close_tracks();
    assert!(sim.failovers[0].complete(), "{:?}", sim.failovers);
    assert!(sim.claims_dropped[0].is_some(), "no table names the dead home");
    assert!(sim.peers.iter().all(|p| p.homes.len() == HOMES), "its peers took new homes");
    let l = sim.lookups(500, Duration::ZERO);
    assert_eq!((l.found, l.named_dead), (l.asked, 0), "{l:?}");
    assert_eq!(sim.strays, 0, "nothing went anywhere but to members");
}
