//! The NAT-pair matrix, end to end on the simulator: whole nodes ([`SimNode`]) probe, register
//! with introducers, get introduced, punch and ping — for every pair of NAT presets, many
//! seeds each — against DESIGN.md's strategy table.
//!
//! Topology of every run: an RFC 5780 introducer (2 IPs × 2 ports) and a second, one-address
//! introducer on the internet; peer A, on the internet or behind its own NAT, asks for peer B,
//! on the internet or behind its own NAT (or A's). Internet one-way latency 10–25 ms by seed
//! plus up to 4 ms of jitter; 1 ms inside NATs.
//!
//! `cargo test -p introducer-sim --test sim_matrix -- --nocapture` prints the matrix; a
//! failing seed prints its replay line (`SIM_SEED=n cargo test <test>`).

use introducer_actors::identity::Identity;
use introducer_actors::nat::{Allocation, Filtering, NatBehavior, NatReport, NatType};
use introducer_actors::punch::{self, Path, Strategy};
use introducer_actors::SocketId;
use introducer_node::{Config, NodeEvent};
use introducer_sim::node::{Connected, SimNode};
use introducer_sim::standard::{Standard, NAT_IPS, PEER_PORT, PUBLIC_IPS};
use introducer_sim::{for_each_seed, HostId, Link, NatId, Place, Sim};
use libp2p_identity::PeerId;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// How many times A pings B, a second apart, once connected (`introducer ping --count 3`).
const PINGS: u32 = 3;
const SEEDS: Range<u64> = 0..50;

const PR: NatBehavior = NatBehavior::PORT_RESTRICTED;
const FC: NatBehavior = NatBehavior::FULL_CONE;
const RC: NatBehavior = NatBehavior::RESTRICTED_CONE;
const ER: NatBehavior = NatBehavior::EIM_RANDOM_PORT;
const SR: NatBehavior = NatBehavior::SYMMETRIC_RANDOM;
const SS: NatBehavior = NatBehavior::SYMMETRIC_SEQUENTIAL;
/// Counting down, two at a time.
const SS_DOWN: NatBehavior = NatBehavior { allocation: Allocation::Sequential { step: -2 }, ..SS };
const EASY: [NatBehavior; 4] = [PR, FC, RC, ER];

// ----- cells -----

#[derive(Debug, Clone, Copy)]
enum Side {
    Public,
    Behind(NatBehavior),
    /// A home router behind a carrier-grade NAT.
    Double {
        home: NatBehavior,
        cgnat: NatBehavior,
    },
}

impl Side {
    /// The NAT as the internet sees it.
    fn behavior(self) -> Option<NatBehavior> {
        match self {
            Side::Public => None,
            Side::Behind(b) => Some(b),
            Side::Double { home, cgnat } => Some(home.behind(cgnat)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Topology {
    /// A asks for B; each on the internet or behind a NAT of its own.
    Apart(Side, Side),
    /// Both behind one NAT.
    SameNat(NatBehavior),
    /// Each behind a home router of its own, both behind one carrier-grade NAT.
    SameCgnat { home: NatBehavior, cgnat: NatBehavior },
}

/// Both sides connect over this path with this strategy, and every ping is answered.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Expect {
    path: Path,
    strategy: Strategy,
}

#[derive(Debug, Clone)]
struct Cell {
    name: String,
    topology: Topology,
    expect: Expect,
}

/// What the strategy table ([`punch::strategy`], the one the punch plans by) says two
/// sides connect with, from what probing must report for each.
fn expect(a: Side, b: Side, same_ip: bool) -> Expect {
    let report = |side: Side, i: usize| match side.behavior() {
        None => NatReport::public(SocketAddr::from((PUBLIC_IPS[i], PEER_PORT))),
        Some(behavior) => behavior.expected_report(SocketAddr::from((NAT_IPS[i], PEER_PORT))),
    };
    let strategy = punch::strategy(&report(a, 0), &report(b, 1), same_ip);
    Expect { path: strategy.path(), strategy }
}

fn preset_name(b: NatBehavior) -> String {
    let presets = [
        (PR, "port-restricted"),
        (FC, "full-cone"),
        (RC, "restricted-cone"),
        (ER, "eim-random-port"),
        (SR, "symmetric-random"),
        (SS, "symmetric-seq"),
        (SS_DOWN, "symmetric-seq-2"),
    ];
    let name =
        presets.into_iter().find(|(p, _)| NatBehavior { hairpin: false, ..b } == *p).map_or("custom", |(_, n)| n);
    if b.hairpin {
        format!("{name}+hairpin")
    } else {
        name.to_owned()
    }
}

fn side_name(s: Side) -> String {
    match s {
        Side::Public => "public".to_owned(),
        Side::Behind(b) => preset_name(b),
        Side::Double { home, cgnat } => format!("{} in {}", preset_name(home), preset_name(cgnat)),
    }
}

fn apart(a: Side, b: Side) -> Cell {
    let expect = expect(a, b, false);
    Cell { name: format!("{} × {}", side_name(a), side_name(b)), topology: Topology::Apart(a, b), expect }
}

fn same_nat(b: NatBehavior) -> Cell {
    let expect = expect(Side::Behind(b), Side::Behind(b), true);
    Cell { name: format!("same NAT: {}", preset_name(b)), topology: Topology::SameNat(b), expect }
}

/// The pairs of NATs the matrix runs; what each must connect with comes from the strategy table.
fn cells() -> Vec<Cell> {
    use Side::{Behind, Public};
    let double = |home, cgnat| Side::Double { home, cgnat };
    let mut cells = vec![apart(Public, Public)];
    for b in EASY.into_iter().chain([SR, SS]) {
        cells.push(apart(Public, Behind(b)));
    }
    // The NATed side asking: it sends first (for a hard NAT: "hard side sends first").
    cells.push(apart(Behind(PR), Public));
    cells.push(apart(Behind(SR), Public));
    for (i, a) in EASY.into_iter().enumerate() {
        for b in EASY.into_iter().skip(i) {
            cells.push(apart(Behind(a), Behind(b)));
        }
    }
    cells.push(same_nat(PR));
    cells.push(same_nat(SR));
    cells.push(same_nat(PR.with_hairpin(true)));
    // One hard side: the birthday paradox finds a port; either side may ask. Facing a
    // full cone, the hard side just sends.
    for (a, b) in [(SR, PR), (PR, SR), (SR, RC)] {
        cells.push(apart(Behind(a), Behind(b)));
    }
    // A sequential hard side: its pool is predicted instead of guessed.
    for (a, b) in [(ER, SS), (SS, ER), (PR, SS), (SS, RC)] {
        cells.push(apart(Behind(a), Behind(b)));
    }
    cells.push(apart(Behind(SS), Behind(FC)));
    cells.push(apart(Behind(FC), Behind(SR)));
    // Two sequential sides predict each other.
    cells.push(apart(Behind(SS), Behind(SS)));
    cells.push(apart(Behind(SS), Behind(SS_DOWN)));
    // Any other two hard sides: through the introducer's relay.
    for (a, b) in [(SR, SS), (SS, SR), (SR, SR)] {
        cells.push(apart(Behind(a), Behind(b)));
    }
    // Double NAT: the pair acts as its most restrictive layer. A carrier-grade NAT that maps
    // endpoint-independently (as RFC 6888 asks) keeps a home router easy; a symmetric one
    // makes it hard.
    let (easy2, seq2, random2) = (double(PR, ER), double(FC, SS), double(PR, SR));
    cells.push(apart(Public, easy2));
    cells.push(apart(easy2, Public));
    cells.push(apart(easy2, Behind(PR)));
    cells.push(apart(easy2, easy2));
    cells.push(apart(easy2, Behind(SR)));
    cells.push(apart(Behind(SR), easy2));
    cells.push(apart(Behind(PR), seq2));
    cells.push(apart(seq2, Behind(SS)));
    cells.push(apart(random2, Behind(PR)));
    cells.push(apart(random2, seq2));
    // Two homes behind one hairpinning carrier-grade NAT: the home LANs are not each
    // other's, the shared public IP reaches across.
    cells.push(Cell {
        name: "same CGNAT: port-restricted homes".into(),
        topology: Topology::SameCgnat { home: PR, cgnat: ER.with_hairpin(true) },
        // One public IP: the table says local; the path that answers is the CGNAT's hairpin.
        expect: Expect { path: Path::Direct, ..expect(Behind(PR.behind(ER)), Behind(PR.behind(ER)), true) },
    });
    cells
}

// ----- one run -----

fn id(n: u64) -> Identity {
    Identity::from_seed(n)
}

/// Internet latency 10–25 ms one way by seed, plus up to 4 ms of jitter.
fn internet(seed: u64, loss: f64) -> Link {
    Link::with_latency(Duration::from_millis(10 + seed % 16)).jitter(4 * MS).loss(loss)
}

/// The two introducers and peers A and B, registered with both (or given up trying).
struct World {
    sim: Sim,
    introducers: [HostId; 2],
    a: HostId,
    b: HostId,
    nats: [Option<NatId>; 2],
    a_id: PeerId,
    b_id: PeerId,
    /// Worst-case round trip between A and B across the internet (latency + jitter).
    rtt: Duration,
}

impl World {
    fn new(seed: u64, topology: Topology, internet: Link) -> World {
        World::with_config(seed, topology, internet, |_| {})
    }

    /// Peers A and B run with `config`.
    fn with_config(seed: u64, topology: Topology, internet: Link, config: fn(&mut Config)) -> World {
        World::build(seed, topology, internet, config, false)
    }

    /// ...and with `trace`, every datagram is recorded from the start ([`Sim::trace`]).
    fn build(seed: u64, topology: Topology, internet: Link, config: fn(&mut Config), trace: bool) -> World {
        let mut standard = Standard::new(seed, internet, true);
        let (a, b) = (standard.peer(1).configure(config).pings(PINGS, SEC), standard.peer(2).configure(config));
        let sim = &mut standard.sim;
        if trace {
            sim.enable_trace();
        }
        let mut nats = [None, None];
        // NATs on each side's way to the internet (each one LAN hop of 1 ms).
        let mut hops = [0u32; 2];
        let home_wan = |i: usize| Ipv4Addr::new(100, 64, 0, 2 + i as u8);
        let places: Vec<Place> = match topology {
            Topology::Apart(a, b) => [a, b]
                .into_iter()
                .enumerate()
                .map(|(i, side)| match side {
                    Side::Public => Place::Public(PUBLIC_IPS[i]),
                    Side::Behind(behavior) => {
                        let nat = sim.add_nat(behavior, NAT_IPS[i], None);
                        (nats[i], hops[i]) = (Some(nat), 1);
                        Place::Behind(nat)
                    }
                    Side::Double { home, cgnat } => {
                        let cgnat = sim.add_nat(cgnat, NAT_IPS[i], None);
                        (nats[i], hops[i]) = (Some(cgnat), 2);
                        Place::Behind(sim.add_nat(home, home_wan(i), Some(cgnat)))
                    }
                })
                .collect(),
            Topology::SameNat(behavior) => {
                let nat = sim.add_nat(behavior, NAT_IPS[0], None);
                (nats, hops) = ([Some(nat); 2], [1; 2]);
                vec![Place::Behind(nat); 2]
            }
            Topology::SameCgnat { home, cgnat } => {
                let cgnat = sim.add_nat(cgnat, NAT_IPS[0], None);
                (nats, hops) = ([Some(cgnat); 2], [2; 2]);
                (0..2).map(|i| Place::Behind(sim.add_nat(home, home_wan(i), Some(cgnat)))).collect()
            }
        };
        let (a, b) = (a.spawn(sim, places[0], PEER_PORT), b.spawn(sim, places[1], PEER_PORT));
        standard.run_until_registered(&[a, b], 10 * SEC);
        let Standard { sim, introducers } = standard;
        let introducers = [introducers[0], introducers[1]];
        let rtt = 2 * (internet.latency + internet.jitter + MS * (hops[0] + hops[1]));
        World { sim, introducers, a, b, nats, a_id: id(1).peer_id(), b_id: id(2).peer_id(), rtt }
    }

    fn node(&self, h: HostId) -> &SimNode {
        self.sim.machine_ref::<SimNode>(h)
    }

    /// A asks for B now; returns A's outcome once connected and pinged, or failed.
    fn connect(&mut self) -> Result<Connected, String> {
        let (a, b_id) = (self.a, self.b_id);
        let now = self.sim.now();
        self.sim.machine::<SimNode>(a).connect(now, b_id);
        let settled = |s: &Sim| {
            let n = s.machine_ref::<SimNode>(a);
            n.connected(&b_id).is_some() || n.failure(&b_id).is_some()
        };
        self.sim.run_until_cond(20 * SEC, settled);
        let outcome = match (self.node(a).connected(&b_id), self.node(a).failure(&b_id)) {
            (Some(c), _) => Ok(c.clone()),
            (None, Some(reason)) => Err(reason.to_owned()),
            (None, None) => Err("neither connected nor failed within 20 s".to_owned()),
        };
        if outcome.is_ok() {
            let pinged = |s: &Sim| s.machine_ref::<SimNode>(a).pongs(&b_id).len() == PINGS as usize;
            self.sim.run_until_cond(PINGS * SEC + 5 * SEC, pinged);
        }
        outcome
    }

    fn pongs(&self) -> usize {
        self.node(self.a).pongs(&self.b_id).len()
    }

    /// Nobody sent anything malformed or misrouted, no record or introduction was refused.
    fn check_drops(&self, cell: &str) {
        for h in self.introducers.into_iter().chain([self.a, self.b]) {
            let d = self.node(h).drops();
            assert_eq!((d.malformed, d.unrouted, d.stun_unanswered), (0, 0, 0), "{cell}: {h} {d:?}");
            assert_eq!((d.broker.dropped_bad_signature, d.broker.dropped_stale_record), (0, 0), "{cell}: {h} {d:?}");
            assert_eq!((d.broker.dropped_unregistered, d.broker.dropped_rate_limited), (0, 0), "{cell}: {h} {d:?}");
            for (introducer, r) in &d.registration {
                assert_eq!((r.dropped_foreign, r.dropped_bad_introduction), (0, 0), "{cell}: {h} from {introducer}");
            }
        }
    }

    /// B's own view of the connection.
    fn b_connected(&self) -> Option<&Connected> {
        self.node(self.b).connected(&self.a_id)
    }

    /// Whether B's session now sends over the path A chose: to A's LAN address for a local
    /// path, else to an address of A's across the internet.
    fn b_follows_a(&self, a: &Connected) -> bool {
        let b_remote = self.node(self.b).session_remote(&self.a_id);
        let a_lan = self.sim.local_addr(self.a, SocketId::PRIMARY);
        let a_public = self.nats[0].is_none();
        match a.path {
            Path::Local => b_remote == Some(a_lan),
            Path::Direct => b_remote.is_some_and(|r| a_public || r != a_lan),
            Path::Relayed => b_remote == Some(a.remote),
        }
    }
}

// ----- checks -----

/// What probing must have found for a peer on `side`.
fn check_report(cell: &str, who: &str, side: Side, alone: bool, report: Option<&NatReport>, nat_ip: Ipv4Addr) {
    let report = report.unwrap_or_else(|| panic!("{cell}: {who} has no NAT report"));
    match side.behavior() {
        None => {
            assert_eq!(report.nat_type(), NatType::Public, "{cell}: {who} {report:?}");
            assert!(report.no_nat, "{cell}: {who} {report:?}");
            assert_eq!(report.filtering, Some(Filtering::EndpointIndependent), "{cell}: {who}");
        }
        Some(behavior) => {
            let expected = behavior.expected_report(report.public_addr);
            assert_eq!(report.public_addr.ip(), nat_ip, "{cell}: {who}");
            assert!(!report.no_nat, "{cell}: {who}");
            assert_eq!(report.nat_type(), behavior.nat_type(), "{cell}: {who} {report:?}");
            assert_eq!((report.mapping, report.filtering), (expected.mapping, expected.filtering), "{cell}: {who}");
            // Two hosts probing through one NAT at once (same ports) take ports from each
            // other, so allocation is only checked for a peer alone behind its NAT.
            if alone {
                assert_eq!(report.allocation, expected.allocation, "{cell}: {who}");
            }
        }
    }
}

/// Punch proofs a side may have sent before its path is proven: one per candidate (the
/// planned ones, plus one learned from where the peer's proofs come from) per 50 ms round,
/// for two RTTs — the other side may start up to an RTT later, as the introducer's two
/// introductions take different paths, and then its proofs need one to answer — plus two
/// rounds of slack.
/// Proofs sent before connecting, at most: every candidate (plus one learned address) per
/// round, for two round trips and two rounds of slack, plus the LAN grace where the plan
/// has LAN candidates.
fn probes_bound(planned: u32, rtt: Duration) -> u32 {
    let config = punch::Config::default();
    let round = config.interval.as_millis() as u32;
    let grace = if planned > 1 { config.local_grace.as_millis() as u32 / round + 1 } else { 0 };
    (planned + 1) * ((2 * rtt).as_millis() as u32 / round + 2 + grace)
}

/// Proofs a birthday punch may send before connecting, at most: the spray's cap, a round
/// of targets every interval, and the hard side's pool every refresh.
fn birthday_probes_bound(connect: Duration) -> u32 {
    let config = punch::Config::default();
    let rounds = (connect.as_millis() / config.interval.as_millis()) as u32 + 1;
    let refreshes = (connect.as_millis() / config.pool_refresh.as_millis()) as u32 + 1;
    config.spray_max + rounds * config.max_candidates as u32 + refreshes * u32::from(config.pool_size)
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v.get(v.len() / 2).copied()
}

/// One line of the printed matrix.
#[derive(Debug, Default)]
struct Row {
    name: String,
    runs: usize,
    /// Connected as the table says, on both sides, with every ping answered.
    ok: usize,
    connect_ms: Vec<f64>,
    connect_rtts: Vec<f64>,
    probes: Vec<u32>,
    pongs: usize,
    how: String,
}

fn print_table(title: &str, rows: &[&Row]) {
    println!("\n{title}");
    println!(
        "{:<36} {:>4} {:>6} {:>9} {:>6} {:>6} {:>5}  path / strategy (or why not)",
        "A asks for B", "runs", "ok %", "connect", "× RTT", "probes", "pongs"
    );
    for r in rows {
        let ms = median(r.connect_ms.clone()).map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        let rtts = median(r.connect_rtts.clone()).map_or("-".to_owned(), |v| format!("{v:.2}"));
        let probes = median(r.probes.clone()).map_or("-".to_owned(), |v| v.to_string());
        let ok = 100.0 * r.ok as f64 / r.runs.max(1) as f64;
        println!("{:<36} {:>4} {ok:>6.1} {ms:>9} {rtts:>6} {probes:>6} {:>5}  {}", r.name, r.runs, r.pongs, r.how);
    }
}

/// Runs `cell` over `seeds`, asserting per seed what must hold in every run (a failing seed
/// prints its replay line), then the bound on the median connect time.
fn check_cell(cell: &Cell, seeds: Range<u64>) -> Row {
    let mut row = Row { name: cell.name.clone(), ..Row::default() };
    for_each_seed(seeds, |seed| {
        let mut world = World::new(seed, cell.topology, internet(seed, 0.0));
        let outcome = world.connect();
        let name = &cell.name;
        let (sides, alone) = match cell.topology {
            Topology::Apart(a, b) => ([a, b], true),
            Topology::SameNat(n) => ([Side::Behind(n); 2], false),
            Topology::SameCgnat { home, cgnat } => ([Side::Double { home, cgnat }; 2], false),
        };
        for (i, (who, host)) in [("A", world.a), ("B", world.b)].into_iter().enumerate() {
            let nat_ip = if alone { NAT_IPS[i] } else { NAT_IPS[0] };
            check_report(name, who, sides[i], alone, world.node(host).nat(), nat_ip);
        }
        world.check_drops(name);
        row.runs += 1;
        let Expect { path, strategy } = cell.expect;
        let a = outcome.unwrap_or_else(|reason| panic!("{name}: A did not connect: {reason}"));
        for (side, peer) in [(world.a, world.b_id), (world.b, world.a_id)] {
            let connects = world
                .node(side)
                .events()
                .iter()
                .filter(|(_, e)| matches!(e, NodeEvent::Connected { peer: p, .. } if *p == peer));
            assert_eq!(connects.count(), 1, "{name}: one connection per side, no churn");
        }
        let b = world.b_connected().cloned();
        let pongs = world.pongs();
        assert_eq!(a.strategy, strategy, "{name}: A {a:?}");
        let bound = match strategy {
            Strategy::Birthday | Strategy::Predict => birthday_probes_bound(a.connect),
            _ => probes_bound(if strategy == Strategy::Local { 2 } else { 1 }, world.rtt),
        };
        assert!(a.probes <= bound, "{name}: A sent {} probes > {bound} (rtt {:?}): {a:?}", a.probes, world.rtt);
        row.connect_ms.push(a.connect_ms());
        row.connect_rtts.push(a.connect.as_secs_f64() / world.rtt.as_secs_f64());
        row.probes.push(a.probes);
        row.pongs += pongs;
        // B reports the path it proved first; once A's traffic arrives, B follows A's choice.
        let both = b.as_ref().is_some_and(|b| b.strategy == strategy) && world.b_follows_a(&a);
        if a.path == path && both && pongs == PINGS as usize {
            row.ok += 1;
            row.how = format!("{} / {}", path.as_str(), strategy.as_str());
        } else {
            panic!(
                "{name}: A {a:?}\nB {b:?}\n{pongs} of {PINGS} pongs\nrelay {:?}",
                world.node(world.introducers[0]).drops().relay
            );
        }
    });
    match cell.expect {
        Expect { strategy: Strategy::Relay, .. } => {
            // The introduction, then the circuit: a cookie round trip and both requests.
            let rtts = median(row.connect_rtts.clone()).expect("connected runs");
            assert!(rtts <= 6.0, "{}: median relayed connect time is {rtts:.2} RTTs", cell.name);
        }
        Expect { strategy: Strategy::Predict, .. } => {
            // The first guesses land in the pool: about as fast as a simultaneous open.
            let rtts = median(row.connect_rtts.clone()).expect("connected runs");
            assert!(rtts <= 4.0, "{}: median predicted connect time is {rtts:.2} RTTs", cell.name);
        }
        Expect { strategy: Strategy::Birthday, .. } => {
            // A hit takes ~174 probes at the median: 7 spray rounds of 50 ms, plus the RTTs.
            let ms = median(row.connect_ms.clone()).expect("connected runs");
            assert!(ms <= 1000.0, "{}: median birthday connect time is {ms:.0} ms", cell.name);
        }
        _ => {
            if let Some(rtts) = median(row.connect_rtts.clone()) {
                // About one RTT for the introduction (ask; the introducer tells both) and one
                // for the punch: two in all, three with room for whoever starts late. A hard
                // peer reaches us from a port nobody observed; proving that path (its proof
                // must echo our token from there) costs one round trip more.
                let hard_peer = matches!(cell.topology, Topology::Apart(_, b) if b.behavior().is_some_and(|b| b.nat_type() == NatType::Hard));
                let bound = if hard_peer { 4.0 } else { 3.0 };
                assert!(rtts <= bound, "{}: median connect time is {rtts:.2} RTTs", cell.name);
            }
        }
    }
    row
}

/// Runs each cell on a thread of its own, named like the test so that `for_each_seed`'s
/// replay line names it; prints the rows of the cells that passed, then re-raises the first
/// failure.
fn check_cells(title: &str, cells: &[Cell], seeds: Range<u64>) {
    let test = std::thread::current().name().unwrap_or("sim_matrix").to_owned();
    let results: Vec<std::thread::Result<Row>> = std::thread::scope(|scope| {
        let spawn = |cell| {
            let seeds = seeds.clone();
            std::thread::Builder::new().name(test.clone()).spawn_scoped(scope, move || check_cell(cell, seeds))
        };
        let handles: Vec<_> = cells.iter().map(|cell| spawn(cell).expect("spawn")).collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let rows: Vec<&Row> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    print_table(title, &rows);
    if let Some(Err(payload)) = results.into_iter().find(|r| r.is_err()) {
        std::panic::resume_unwind(payload);
    }
}

// ----- tests -----

#[test]
fn nat_pair_matrix() {
    let title = format!(
        "NAT-pair matrix: {} seeds per cell, internet 10–25 ms one way + ≤4 ms jitter",
        SEEDS.end - SEEDS.start
    );
    check_cells(&title, &cells(), SEEDS);
}

/// Path choice when both peers sit behind one NAT that hairpins: both a LAN path and a
/// hairpin path work, and each side first takes the one acknowledged *to it*, so they can
/// disagree (e.g. seeds 3 and 11). The session of the side that asked for the introduction
/// controls: the other side accepts any path the peer proved itself over and answers
/// over the one the controlling side uses, so traffic flows on one path.
#[test]
fn same_nat_with_hairpin_both_sides_use_one_path() {
    let cell = same_nat(PR.with_hairpin(true));
    check_cells("same NAT with hairpinning, strict", &[cell], SEEDS);
}

/// A peer behind a restricted-cone NAT admits every mapping of a hard peer's birthday pool
/// once it has sent to that IP, so the pool's proofs all land on its one socket. On the
/// real-NAT grid, about one run in 12 lost the first ping: the peer (a debug build reading
/// about 12,000 proofs/s) overflowed its socket buffer under the 256-proof burst, and the
/// ping, sent the moment the path was proven, left right behind the burst. Here, on a
/// 0.5 ms internet, A puts a datagram on the wire every 20 µs and B reads one every 100 µs
/// into a 64-datagram buffer: nothing may be lost to that buffer, and every ping is answered.
#[test]
fn a_birthday_pool_leaves_a_slow_restricted_cone_peer_room_for_the_first_ping() {
    let lab = Link::with_latency(MS / 2).jitter(MS / 2);
    for hard in [SR, SS] {
        let cell = apart(Side::Behind(hard), Side::Behind(RC));
        // Seeds whose B dropped datagrams at its full buffer, and those that lost a pong.
        let (mut overflowed, mut unanswered) = (Vec::new(), Vec::new());
        for_each_seed(0..30, |seed| {
            let mut world = World::new(seed, cell.topology, lab);
            world.sim.set_sender(world.a, Duration::from_micros(20));
            world.sim.set_receiver(world.b, 64, Duration::from_micros(100));
            let a = world.connect().unwrap_or_else(|reason| panic!("{}: A did not connect: {reason}", cell.name));
            assert_eq!((a.path, a.strategy), (cell.expect.path, cell.expect.strategy), "{}", cell.name);
            let dropped = world.sim.counters().dropped_overflow;
            if dropped > 0 {
                overflowed.push((seed, dropped));
            }
            let answered: Vec<u64> = world.node(world.a).pongs(&world.b_id).iter().map(|&(seq, _)| seq).collect();
            let lost: Vec<u64> = (0..u64::from(PINGS)).filter(|seq| !answered.contains(seq)).collect();
            if !lost.is_empty() {
                unanswered.push((seed, lost));
            }
        });
        let name = &cell.name;
        assert!(unanswered.is_empty(), "{name}: (seed, pings unanswered) {unanswered:?}; overflowed {overflowed:?}");
        assert!(overflowed.is_empty(), "{name}: (seed, datagrams lost to B's full buffer) {overflowed:?}");
    }
}

/// Runs `cells` with `loss` of all datagrams crossing the internet lost. A run counts when
/// A connects over the cell's path with its strategy — or through the relay fallback, which
/// is what a punch whose every probe was unlucky gets; the table says which.
fn lossy_runs(loss: f64, cells: &[Cell], seeds: Range<u64>) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for cell in cells {
        let mut row = Row { name: cell.name.clone(), ..Row::default() };
        let (mut expected, mut relayed) = (0, 0);
        for_each_seed(seeds.clone(), |seed| {
            let mut world = World::new(seed, cell.topology, internet(seed, loss));
            row.runs += 1;
            match world.connect() {
                Ok(c) => {
                    match (c.path, c.strategy) {
                        how if how == (cell.expect.path, cell.expect.strategy) => expected += 1,
                        (Path::Relayed, Strategy::Relay) => relayed += 1,
                        other => panic!(
                            "{}: connected as {other:?}; nats {:?} / {:?}",
                            cell.name,
                            world.node(world.a).nat(),
                            world.node(world.b).nat()
                        ),
                    }
                    row.ok += 1;
                    row.pongs += world.pongs();
                    row.connect_ms.push(c.connect_ms());
                    row.connect_rtts.push(c.connect.as_secs_f64() / world.rtt.as_secs_f64());
                    row.probes.push(c.probes);
                }
                Err(reason) => failures.push(format!("{} seed {seed}: {reason}", cell.name)),
            }
        });
        let Expect { path, strategy } = cell.expect;
        row.how = format!("{} / {}: {expected}, relayed: {relayed}", path.as_str(), strategy.as_str());
        rows.push(row);
    }
    (rows, failures)
}

/// Prints the lossy runs and their failures (with replay lines); asserts that at least
/// `percent` of all runs connected.
fn check_lossy(title: &str, (rows, failures): (Vec<Row>, Vec<String>), percent: usize) {
    print_table(title, &rows.iter().collect::<Vec<_>>());
    let test = std::thread::current().name().unwrap_or("sim_matrix").to_owned();
    for f in &failures {
        let seed = f.rsplit_once(" seed ").and_then(|(_, s)| s.split(':').next()).unwrap_or("?");
        println!("failed: {f}\n  replay: SIM_SEED={seed} cargo test -p introducer-sim --test sim_matrix {test}");
    }
    let (ok, runs) = rows.iter().fold((0, 0), |(o, n), r| (o + r.ok, n + r.runs));
    assert!(ok * 100 >= runs * percent, "{ok} of {runs} lossy runs connected: below {percent} %");
}

/// With 10 % loss on the internet, easy × easy pairs still connect in at least 95 % of
/// seeds: every step retransmits. The introduction, too: the requester repeats its request
/// (same request id) until the punch settles, and the introducer answers a repeat with the
/// same nonce, so a copy lost on its way to either peer is made good without orphaning the
/// other side's attempt.
#[test]
fn easy_pairs_connect_through_10_percent_loss() {
    let mut cells = vec![];
    for (i, a) in EASY.into_iter().enumerate() {
        for b in EASY.into_iter().skip(i) {
            cells.push(apart(Side::Behind(a), Side::Behind(b)));
        }
    }
    check_lossy("easy × easy with 10 % loss on the internet", lossy_runs(0.10, &cells, 0..30), 95);
}

/// A fifth of all internet datagrams lost, across every strategy: simultaneous open,
/// birthday, prediction (one and both sides), relay. Still at least 95 % connect.
#[test]
fn every_strategy_connects_through_20_percent_loss() {
    use Side::Behind;
    let cells = [
        apart(Behind(PR), Behind(PR)),
        apart(Behind(RC), Behind(ER)),
        apart(Behind(PR), Behind(SR)),
        apart(Behind(PR), Behind(SS)),
        apart(Behind(SS), Behind(SS)),
        apart(Behind(SR), Behind(SR)),
    ];
    check_lossy("every strategy with 20 % loss on the internet", lossy_runs(0.20, &cells, 0..30), 95);
}

/// A whole cell — two complete nodes behind their NATs, both introducers, a punch that
/// falls back to the relay and then upgrades to direct, pings — runs twice from one seed:
/// every datagram (bytes, addresses, fate, when) and every event of every node is the same.
/// Another seed runs differently. (A std `HashMap` iterated on the way to output, or a
/// clock or RNG read outside the seed, breaks this.)
#[test]
fn a_whole_cell_replays_byte_for_byte_from_its_seed() {
    let run = |seed| {
        let topology = Topology::Apart(Side::Behind(PR), Side::Behind(SR));
        let mut world = World::build(seed, topology, internet(seed, 0.05), |c| c.relay_after = 100 * MS, true);
        world.connect().expect("connects");
        let (now, b_id) = (world.sim.now(), world.b_id);
        world.sim.machine::<SimNode>(world.a).send(now, &b_id, b"sealed").expect("session open");
        world.sim.run_for(5 * SEC);
        let start = world.sim.instant(Duration::ZERO);
        let hosts = world.introducers.into_iter().chain([world.a, world.b]);
        let events = hosts
            .flat_map(|h| {
                world.node(h).events().iter().map(move |(t, e)| (h, t.duration_since(start), format!("{e:?}")))
            })
            .collect::<Vec<_>>();
        (world.sim.trace().to_vec(), events)
    };
    let ((trace, events), (again, events_again)) = (run(9), run(9));
    let first_difference = trace.iter().zip(&again).position(|(a, b)| a != b);
    assert!(again.len() == trace.len() && first_difference.is_none(), "traces differ at {first_difference:?}");
    assert!(events_again == events, "events differ");
    let said = |what: &str| events.iter().filter(|(_, _, e)| e.starts_with(what)).count();
    assert!(said("Relaying") > 0 && said("Upgraded") > 0, "the seed exercises the relay and the upgrade");
    assert!(trace.len() > 300, "{} datagrams", trace.len());
    let (other, _) = run(5);
    assert!(other != trace, "another seed, another run");
}

/// The NAT mapping of B's primary socket, if live.
fn primary_mapping(world: &World, host: HostId, nat: NatId) -> Option<SocketAddr> {
    let primary = world.sim.local_addr(host, SocketId::PRIMARY);
    let mappings = world.sim.nat_mappings(nat);
    mappings.into_iter().find(|m| SocketAddr::V4(m.internal) == primary).map(|m| SocketAddr::V4(m.external))
}

/// B's registration refreshes (every 15 s) hold its NAT mapping (30 s) open: across two idle
/// minutes the mapping never lapses or moves, so an introduction asked for afterwards reaches
/// B. Then the session's keepalives (10 s) hold the punched path through two more idle
/// minutes.
#[test]
fn registration_keeps_the_mapping_for_a_late_introduction() {
    for_each_seed(0..10, |seed| {
        let mut world = World::new(seed, Topology::Apart(Side::Behind(PR), Side::Behind(PR)), internet(seed, 0.0));
        let nat_b = world.nats[1].expect("B is behind a NAT");
        let mapped = primary_mapping(&world, world.b, nat_b).expect("B's primary socket is mapped");
        for s in 1..=120 {
            world.sim.run_for(SEC);
            assert_eq!(primary_mapping(&world, world.b, nat_b), Some(mapped), "at {s} s idle");
        }
        let registered = world.node(world.b).events().iter().filter(|(_, e)| matches!(e, NodeEvent::Registered { .. }));
        assert_eq!(registered.count(), 2, "one registration per introducer, never renewed at a new address");
        // The NAT keeps mappings 30 s: B's lifetime tests saw 16 s survive and 32 s not,
        // twice (a dead test is confirmed once: the 4 answers to each dead mapping are all
        // the NAT dropped), and the 15 s keepalive went down to 12 s.
        let s = Duration::from_secs;
        assert_eq!(lifetime(&world, world.b), Some((Some(s(16)), Some(s(32)), Some(s(12)))));
        assert_eq!(world.sim.nat_counters(nat_b).dropped_no_mapping, 8);

        let connected = world.connect().unwrap_or_else(|reason| panic!("late introduction failed: {reason}"));
        assert_eq!(connected.strategy, Strategy::SimultaneousOpen);
        assert_eq!(world.pongs(), PINGS as usize);
        world.sim.run_for(120 * SEC);
        let (a, b_id, now) = (world.a, world.b_id, world.sim.now());
        world.sim.machine::<SimNode>(a).ping(now, &b_id).expect("session still open after two idle minutes");
        world.sim.run_for(SEC);
        assert_eq!(world.pongs(), PINGS as usize + 1, "the session's path survived two idle minutes");
    });
}

/// What B's lifetime tests found: (at least, below, keepalive now).
fn lifetime(world: &World, host: HostId) -> Option<(Option<Duration>, Option<Duration>, Option<Duration>)> {
    world.node(host).events().iter().find_map(|(_, e)| match e {
        NodeEvent::MappingLifetime { at_least, below, keepalive } => Some((*at_least, *below, *keepalive)),
        _ => None,
    })
}

/// The introducer B times its NAT's mappings against dies partway through: the tests it
/// cut short teach nothing, and B never reports the idle time that had survived so far
/// (4 s, 8 s…) as its NAT's lifetime — only a measurement that ran to its end, if any.
#[test]
fn a_lifetime_measurement_its_server_cuts_short_is_dropped() {
    let topology = Topology::Apart(Side::Behind(PR), Side::Behind(PR));
    // Left alone, the measurement ends (the simulated NAT forgets after 30 s).
    let mut whole = World::new(0, topology, internet(0, 0.0));
    whole.sim.run_for(120 * SEC);
    assert_eq!(lifetime(&whole, whole.b), Some((Some(16 * SEC), Some(32 * SEC), Some(12 * SEC))));
    for (seed, dies_after) in [(0, 7), (1, 12), (2, 20), (3, 35)] {
        let mut world = World::new(seed, topology, internet(seed, 0.0));
        world.sim.run_for(dies_after * SEC);
        assert_eq!(lifetime(&world, world.b), None, "still measuring after {dies_after} s");
        for introducer in world.introducers {
            world.sim.machine::<SimNode>(introducer).stop(false);
        }
        world.sim.run_for(120 * SEC);
        let found = lifetime(&world, world.b);
        assert!(found.is_none(), "server gone after {dies_after} s, yet B reports {found:?}");
    }
}

/// NATs that forget idle mappings sooner than the registration keepalive (15 s): B times
/// its NAT's mappings and refreshes within what survived, so it stays reachable: a late
/// introduction arrives, at any moment, without the requester's repeats having to outlast
/// a gap.
#[test]
fn late_introduction_through_a_nat_that_forgets_after_10_or_3_s() {
    let s = Duration::from_secs;
    // (lifetime, what the tests find, the keepalive that follows)
    let nats =
        [(s(10), (Some(s(8)), Some(s(16))), Duration::from_secs(6)), (s(3), (Some(s(2)), Some(s(4))), MS * 1500)];
    for (forgets, (at_least, below), keepalive) in nats {
        for_each_seed(0..10, |seed| {
            let short = PR.with_mapping_lifetime(forgets);
            let topology = Topology::Apart(Side::Behind(PR), Side::Behind(short));
            let mut world = World::new(seed, topology, internet(seed, 0.0));
            world.sim.run_for(120 * SEC + seed as u32 * 1500 * MS);
            assert_eq!(lifetime(&world, world.b), Some((at_least, below, Some(keepalive))));
            let nat_b = world.nats[1].expect("B is behind a NAT");
            let mapped = primary_mapping(&world, world.b, nat_b).expect("B's primary socket is mapped");
            let connected = world.connect().unwrap_or_else(|reason| panic!("late introduction failed: {reason}"));
            assert_eq!(connected.strategy, Strategy::SimultaneousOpen);
            assert_eq!(primary_mapping(&world, world.b, nat_b), Some(mapped), "B kept its mapping throughout");
        });
    }
}

/// A punch slower than the relay bound (birthday, with the relay asked for after 100 ms):
/// the relay carries the session first, the punch keeps going, and when it succeeds the
/// session moves to the direct path — every ping answered across the switch.
#[test]
fn a_relayed_session_upgrades_to_direct_when_the_punch_succeeds() {
    let config: fn(&mut Config) = |c| c.relay_after = 100 * MS;
    let mut upgraded = 0;
    for_each_seed(0..20, |seed| {
        let mut world =
            World::with_config(seed, Topology::Apart(Side::Behind(PR), Side::Behind(SR)), internet(seed, 0.0), config);
        let connected = world.connect().unwrap_or_else(|reason| panic!("did not connect: {reason}"));
        // Pings run for 3 s: long enough for the birthday punch to land in most seeds.
        assert_eq!(world.pongs(), PINGS as usize, "no ping lost across the switch: {connected:?}");
        let a = world.node(world.a);
        let upgrade = a.events().iter().find_map(|(_, e)| match e {
            NodeEvent::Upgraded { path, strategy, .. } => Some((*path, *strategy)),
            _ => None,
        });
        match (connected.path, upgrade) {
            (Path::Relayed, Some(up)) => {
                assert_eq!(up, (Path::Direct, Strategy::Birthday));
                assert_eq!(world.node(world.a).session_remote(&world.b_id).map(|r| r.ip()), Some(NAT_IPS[1].into()));
                upgraded += 1;
            }
            (Path::Relayed, None) => {} // the punch is still going
            (Path::Direct, None) => assert_eq!(connected.strategy, Strategy::Birthday),
            other => panic!("unexpected {other:?}"),
        }
    });
    assert!(upgraded >= 5, "only {upgraded} of 20 runs went relayed → direct");
    println!("relayed then upgraded to direct in {upgraded} of 20 runs");
}

/// A host that opens `flows` new mappings on its NAT at once (one datagram to each of as
/// many destinations), as a busy LAN or earlier punches do.
struct Flows(u16);

impl introducer_actors::Machine for Flows {
    fn handle_datagram(&mut self, _: std::time::Instant, _: SocketId, _: SocketAddr, _: &[u8]) {}
    fn handle_timeout(&mut self, _: std::time::Instant) {}
    fn poll_transmit(&mut self) -> Option<introducer_actors::Transmit> {
        self.0 = self.0.checked_sub(1)?;
        let dst = SocketAddr::from(([192, 0, 2, 200], 10_000 + self.0));
        Some(introducer_actors::Transmit { socket: SocketId::PRIMARY, dst, payload: vec![0x09, 0] })
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        None
    }
}

/// Two sequential NATs whose counters moved far since their peers registered (1,500 and
/// 300 ports taken by others): predicting from the registered ports would need ~1,800
/// guesses each; the new mappings both sides show the introducer put them back within a
/// few ports, and they meet directly.
#[test]
fn sequential_pair_meets_after_others_took_ports() {
    for_each_seed(0..20, |seed| {
        let mut world = World::new(seed, Topology::Apart(Side::Behind(SS), Side::Behind(SS)), internet(seed, 0.0));
        for (nat, flows) in world.nats.into_iter().zip([300, 1500]) {
            let host = world.sim.add_host(Place::Behind(nat.expect("behind a NAT")), Flows(flows));
            world.sim.bind(host, SocketId::PRIMARY, 9000);
        }
        world.sim.run_for(SEC);
        let a = world.connect().unwrap_or_else(|reason| panic!("did not connect: {reason}"));
        assert_eq!((a.path, a.strategy), (Path::Direct, Strategy::Predict), "{a:?}");
        assert!(a.probes < 200, "{a:?}");
        assert_eq!(world.pongs(), PINGS as usize);
    });
}

/// B's NAT forgets every mapping (a reboot, `conntrack -F`) and maps B anew at another
/// random port: A's datagrams go to a mapping that is gone. B's next registration refresh
/// shows the introducer's view moved; B re-registers and punches again, both sessions move
/// to the new path, and pings flow again.
#[test]
fn a_node_mapped_anew_registers_again_and_punches_again() {
    for_each_seed(0..10, |seed| {
        let topology = Topology::Apart(Side::Behind(PR), Side::Behind(ER));
        let mut world = World::new(seed, topology, internet(seed, 0.0));
        let before = world.connect().unwrap_or_else(|reason| panic!("did not connect: {reason}"));
        let nat_b = world.nats[1].expect("B is behind a NAT");
        world.sim.flush_nat(nat_b);
        let moved = |w: &World, host: HostId| {
            let events = w.node(host).events();
            events.iter().find_map(|(_, e)| match e {
                NodeEvent::Moved { remote, path, .. } => Some((*remote, *path)),
                _ => None,
            })
        };
        let (a, b) = (world.a, world.b);
        world.sim.run_until_cond(30 * SEC, |s| {
            let w = |h| s.machine_ref::<SimNode>(h).events().iter().any(|(_, e)| matches!(e, NodeEvent::Moved { .. }));
            w(a) && w(b)
        });
        let (a_remote, path) = moved(&world, a).expect("A's session moved");
        assert_eq!(path, Path::Direct);
        assert_ne!(a_remote, before.remote, "B is reached at its new mapping");
        assert_eq!(Some(a_remote), primary_mapping(&world, b, nat_b));
        assert!(moved(&world, b).is_some(), "B's session moved too");
        let registered = world.node(b).events().iter().filter(|(_, e)| matches!(e, NodeEvent::Registered { .. }));
        assert!(registered.count() >= 3, "B registered again at its new address");
        let now = world.sim.now();
        let b_id = world.b_id;
        world.sim.machine::<SimNode>(a).ping(now, &b_id).expect("session open");
        world.sim.run_for(SEC);
        assert_eq!(world.pongs(), PINGS as usize + 1, "pings flow over the new path");
    });
}

/// The hard side's birthday pool is closed after a minute without use and bound again
/// when an introduction needs it (to send from, or to show a new mapping from): the punch
/// waits for it, and connects as before.
#[test]
fn an_idle_birthday_pool_is_closed_and_bound_again_when_needed() {
    for (a_nat, expect) in [(PR, Strategy::Birthday), (SS, Strategy::Predict)] {
        let b_nat = if expect == Strategy::Birthday { SR } else { SS };
        for_each_seed(0..10, |seed| {
            let topology = Topology::Apart(Side::Behind(a_nat), Side::Behind(b_nat));
            let mut world = World::new(seed, topology, internet(seed, 0.0));
            assert_eq!(world.node(world.b).pool_cycles(), (1, 0), "bound once probing found the NAT hard");
            world.sim.run_for(61 * SEC);
            assert_eq!(world.node(world.b).pool_cycles(), (1, 1), "closed after a minute unused");
            let a = world.connect().unwrap_or_else(|reason| panic!("did not connect: {reason}"));
            assert_eq!((a.path, a.strategy), (Path::Direct, expect));
            assert_eq!(world.pongs(), PINGS as usize);
            assert_eq!(world.node(world.b).pool_cycles(), (2, 1), "bound again for the punch");
        });
    }
}

/// Data between relayed peers is sealed end to end: nothing on the wire — the relay's
/// links included — carries it in the clear, while the relay does see whom it relays.
#[test]
fn relayed_data_is_sealed_end_to_end() {
    for_each_seed(0..5, |seed| {
        let topology = Topology::Apart(Side::Behind(SR), Side::Behind(SR));
        let mut world = World::new(seed, topology, internet(seed, 0.0));
        let a = world.connect().unwrap_or_else(|reason| panic!("did not connect: {reason}"));
        assert_eq!(a.path, Path::Relayed);
        let (secret, b_id, now) = (b"attack at dawn".as_slice(), world.b_id, world.sim.now());
        world.sim.sniff(secret);
        world.sim.machine::<SimNode>(world.a).send(now, &b_id, secret).expect("session open");
        world.sim.run_for(SEC);
        let got = world
            .node(world.b)
            .events()
            .iter()
            .any(|(_, e)| matches!(e, NodeEvent::Data { payload, .. } if payload == secret));
        assert!(got, "B opened the data");
        assert_eq!(world.sim.sniffed(), 0, "no datagram carried it in the clear");
        // The sniffer works: the relay's own traffic names the peers.
        world.sim.sniff(&b_id.to_bytes());
        world.sim.machine::<SimNode>(world.a).send(now, &b_id, secret).expect("session open");
        world.sim.run_for(20 * SEC);
        assert!(world.sim.sniffed() > 0, "relay keepalives carry peer ids");
    });
}
