//! The mesh at scale, on virtual time: N members (the real `Mesh` machines: foca's SWIM,
//! signed datagrams, records and hosting claims, real ed25519) and P NATed peers stood in
//! for by their homes' hosting claims (3 homes each, by rendezvous hash). See
//! `introducer_sim::mesh_scale` for the harness.
//!
//! Each scenario, `MEMBERSxPEERS`:
//! 1. members join over 10 s, each through a random member that already did; 20 s later,
//!    the share of (member, other member) pairs where the first holds the second's record.
//!    Each member republishes its record once at a time spread over the next 280 s (then
//!    every 5 min at that phase), as in a mesh whose members started apart;
//! 2. three new members join 5 s apart: time until 50 / 90 / 100 % of the members hold
//!    each one's record; then three members already in the mesh republish theirs 5 s
//!    apart, likewise (both followed through step 3);
//! 3. the peers register, spread over 60 s (one claim renewal period); the next 60 s are
//!    steady state: bytes/s per member, lookups (a random member asks the directory for a
//!    random peer: does the answer name a live home, with its address, and how soon?),
//!    what each member holds and the heap it takes, CPU per member;
//! 4. one member is killed: time until the members that had it up declare it down, and
//!    until no table names it as a home;
//! 5. churn for 60 s: 10 % of the members per minute are killed and replaced (a new
//!    identity joining through a random member); bytes/s per member, failover and record
//!    spread of each, and lookups right after.
//!
//! Memory per record and per claim is measured apart, with a counting allocator, on a
//! member's table fed many of them, and the CPU a new claim takes (decode, verify, insert).
//!
//! `cargo bench -p introducer-benches --bench mesh_scale` runs the default scenarios;
//! `MESH_SCALE=1000x0,1000x1000` picks others, `MESH_SCALE_SEED` the seed,
//! `MESH_SCALE_THREADS` how many scenarios run at once (default 1). `-- --test` runs one
//! tiny scenario (a smoke test).

use introducer_actors::identity::Identity;
use introducer_actors::mesh::record::{Table, MAX_SIGNED_NODE_RECORD};
use introducer_proto::pb;
use introducer_sim::mesh_scale::{Lookups, MeshSim, Spread, Traffic};
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// Counts the bytes allocated and not yet freed (for memory per record).
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn heap() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// CPU seconds this thread used (Linux), to tell cost from a busy machine's wall time.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    members: usize,
    peers: usize,
}

#[derive(Debug, Default)]
struct Figures {
    members: usize,
    peers: usize,
    /// Share of (member, other member) records held 20 s after the last member joined.
    formed: f64,
    converged: Vec<Spread>,
    republished: Vec<Spread>,
    idle: Traffic,
    steady: Lookups,
    claims_held: f64,
    records_held: f64,
    backlog: f64,
    /// CPU seconds the steady-state minute took (every member's work, the harness's too).
    steady_cpu: f64,
    steady_secs: f64,
    failover: Vec<Spread>,
    claims_dropped: Vec<Option<Duration>>,
    churn_claims_dropped: Vec<Option<Duration>>,
    churn: Traffic,
    churn_failover: Vec<Spread>,
    churn_converged: Vec<Spread>,
    after_churn: Lookups,
    after_churn_old: Lookups,
    strays: u64,
    cpu: f64,
    wall: Duration,
}

fn run(s: Scenario, seed: u64) -> Figures {
    let (wall, cpu) = (Instant::now(), cpu_secs());
    let mut sim = MeshSim::new(seed);
    let mut f = Figures { members: s.members, peers: s.peers, ..Figures::default() };

    // 1. Formation; record refreshes spread as in a mesh whose members started apart.
    let step = Duration::from_secs(10) / s.members as u32;
    for n in 0..s.members {
        let via = if n == 0 { None } else { sim.random_live() };
        sim.spawn(via, false);
        sim.run_for(step);
    }
    sim.run_for(Duration::from_secs(10));
    sim.stagger_refresh(Duration::from_secs(280));
    sim.run_for(Duration::from_secs(10));
    let (pairs, known) = sim.records_known();
    f.formed = known as f64 / pairs.max(1) as f64;

    // 2. New members, then members already in the mesh republish (each record's spread
    // is followed through step 3).
    for _ in 0..3 {
        let via = sim.random_live();
        sim.spawn(via, true);
        sim.run_for(Duration::from_secs(5));
    }
    for _ in 0..3 {
        let old = sim.live()[sim.live().len() / 2];
        let member = sim.random_live().filter(|&m| sim.members[m].born + Duration::from_secs(30) < sim.now);
        sim.republish(member.unwrap_or(old));
        sim.run_for(Duration::from_secs(5));
    }

    // 3. Peers register over one renewal period; the next period is steady state.
    sim.add_peers(s.peers, Duration::from_secs(60));
    sim.run_for(Duration::from_secs(60));
    let snap = sim.snapshot();
    let mut steady = Lookups::default();
    let steady_cpu = cpu_secs();
    for _ in 0..4 {
        sim.run_for(Duration::from_secs(15));
        steady = steady.merge(sim.lookups(500, Duration::ZERO));
    }
    f.steady_cpu = cpu_secs() - steady_cpu;
    f.steady_secs = 60.0;
    f.idle = sim.traffic_since(&snap);
    f.steady = steady;
    let loads = sim.loads();
    f.claims_held = loads.iter().map(|l| l.claims).sum::<usize>() as f64 / loads.len() as f64;
    f.records_held = loads.iter().map(|l| l.records).sum::<usize>() as f64 / loads.len() as f64;
    f.backlog = loads.iter().map(|l| l.backlog).sum::<usize>() as f64 / loads.len() as f64;
    sim.close_tracks();
    f.converged = std::mem::take(&mut sim.converged);
    f.republished = std::mem::take(&mut sim.republished);

    // 4. One member killed.
    let victim = sim.random_live().expect("members");
    sim.kill(victim);
    sim.run_for(Duration::from_secs(30));
    sim.close_tracks();
    f.failover = std::mem::take(&mut sim.failovers);
    f.claims_dropped = std::mem::take(&mut sim.claims_dropped);

    // 5. Churn: 10 % of the members per minute killed and replaced.
    let every = Duration::from_secs(60).div_f64((s.members as f64 * 0.1).max(1.0));
    let snap = sim.snapshot();
    let end = sim.now + Duration::from_secs(60);
    while sim.now + every <= end {
        sim.run_for(every);
        let victim = sim.random_live().expect("members");
        sim.kill(victim);
        let via = sim.random_live();
        sim.spawn(via, true);
    }
    sim.run_until(end);
    f.churn = sim.traffic_since(&snap);
    f.after_churn = sim.lookups(2000, Duration::ZERO);
    f.after_churn_old = sim.lookups(2000, Duration::from_secs(120));
    sim.run_for(Duration::from_secs(30));
    sim.close_tracks();
    f.churn_failover = std::mem::take(&mut sim.failovers);
    f.churn_claims_dropped = std::mem::take(&mut sim.claims_dropped);
    f.churn_converged = std::mem::take(&mut sim.converged);
    f.strays = sim.strays;
    f.cpu = cpu_secs() - cpu;
    f.wall = wall.elapsed();
    f
}

/// What one entry of a member's table costs.
struct Costs {
    /// Heap bytes per node record and per hosting claim.
    per_record: f64,
    per_claim: f64,
    /// Their signed sizes.
    record_len: usize,
    claim_len: usize,
    /// CPU µs to take one new claim (decode, ed25519 verify, insert).
    claim_us: f64,
}

/// Heap bytes a member's table takes per node record and per hosting claim, and the CPU a
/// new claim takes.
fn memory_per_entry() -> Costs {
    const START_MS: u64 = 1_800_000_000_000;
    let table = || Table {
        now_ms: START_MS,
        max_skew_ms: 30_000,
        ttl_ms: 20 * 60_000,
        max_records: 1 << 20,
        max_hosted_per_home: 1 << 20,
        ..Table::default()
    };
    // Records: 1,000 members, one address each (as in the scenarios).
    let records: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| {
            let addr = std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 3478));
            let record = pb::NodeRecord {
                generation: START_MS,
                issued_ms: START_MS,
                addrs: vec![pb::Addr::from(addr)],
                introducer: true,
                relay: true,
                relay_capacity: 64,
                ..Default::default()
            };
            Identity::from_seed(i + 1).sign_node_record(record).encode_to_vec()
        })
        .collect();
    let before = heap();
    let mut t = table();
    for r in &records {
        t.offer(r).expect("valid record");
    }
    t.fresh = Vec::new();
    let per_record = (heap() - before) as f64 / records.len() as f64;
    drop(t);
    // Claims: 10,000 peers, 3 homes each among 100 members.
    let homes: Vec<Identity> = (0..100u64).map(|i| Identity::from_seed(i + 1)).collect();
    let claims: Vec<Vec<u8>> = (0..10_000u64)
        .flat_map(|p| {
            let peer = Identity::from_seed(1_000_000 + p).peer_id();
            let homes = &homes;
            (0..3).map(move |k| {
                let home = &homes[((p * 7 + k * 31) % 100) as usize];
                home.sign_hosting(&peer, START_MS, START_MS + 120_000, &[]).encode_to_vec()
            })
        })
        .collect();
    let before = heap();
    let mut t = table();
    let cpu = cpu_secs();
    for c in &claims {
        let claim = t.check_claim(c).expect("valid claim");
        assert!(t.offer_claim(claim));
    }
    let claim_us = (cpu_secs() - cpu) * 1e6 / claims.len() as f64;
    t.rehomed = Vec::new();
    let per_claim = (heap() - before) as f64 / claims.len() as f64;
    let record_len = records.iter().map(Vec::len).max().unwrap_or(0);
    assert!(record_len <= MAX_SIGNED_NODE_RECORD);
    Costs { per_record, per_claim, record_len, claim_len: claims[0].len(), claim_us }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// The median over spreads of the time until `fraction` of the members saw each; "-" if
/// fewer than half of the spreads got there.
fn median_until(v: &[Spread], fraction: f64) -> String {
    let times: Vec<Duration> = v.iter().filter_map(|s| s.until(fraction)).collect();
    if times.len() * 2 < v.len() || times.is_empty() {
        return "-".to_owned();
    }
    let mut all: Vec<Option<Duration>> = v.iter().map(|s| s.until(fraction)).collect();
    all.sort_by_key(|t| t.unwrap_or(Duration::MAX));
    secs(all[(all.len() - 1) / 2])
}

/// The worst time until every member saw it, or how many spreads never completed.
fn worst_until_all(v: &[Spread]) -> String {
    let open = v.iter().filter(|s| !s.complete()).count();
    if open > 0 {
        return format!("{open}/{} open", v.len());
    }
    secs(v.iter().filter_map(|s| s.until(1.0)).max())
}

fn pct(l: &Lookups) -> String {
    if l.asked == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}%", 100.0 * l.success())
    }
}

fn kb(t: &Traffic) -> String {
    format!("{:.1}", t.mean / 1000.0)
}

/// Time until every killed member's claims were gone from every table: the worst, or how
/// many were still named when tracking ended.
fn claims_gone(v: &[Option<Duration>]) -> String {
    let open = v.iter().filter(|d| d.is_none()).count();
    if open > 0 {
        return format!("{open}/{} open", v.len());
    }
    secs(v.iter().flatten().max().copied())
}

fn print(all: &[Figures], costs: &Costs) {
    println!(
        "\nrecords (virtual time): share of (member, other member) records held 20 s after the last member joined; \
         a new member's record held by 50 / 90 / 100 % of the members, s (median over new members; the worst, or how many never reached all); \
         likewise a republished record of a member already in the mesh, and new members' records under churn"
    );
    println!(
        "{:>7} {:>7} | {:>7} | {:>6} {:>6} {:>9} | {:>6} {:>6} {:>9} | {:>8} {:>6} {:>9} | {:>6} {:>6}",
        "members",
        "peers",
        "formed",
        "new 50",
        "90",
        "100",
        "rep 50",
        "90",
        "100",
        "churn 50",
        "90",
        "100",
        "cpu s",
        "wall s"
    );
    for f in all {
        println!(
            "{:>7} {:>7} | {:>6.2}% | {:>6} {:>6} {:>9} | {:>6} {:>6} {:>9} | {:>8} {:>6} {:>9} | {:>6.0} {:>6.0}",
            f.members,
            f.peers,
            100.0 * f.formed,
            median_until(&f.converged, 0.5),
            median_until(&f.converged, 0.9),
            worst_until_all(&f.converged),
            median_until(&f.republished, 0.5),
            median_until(&f.republished, 0.9),
            worst_until_all(&f.republished),
            median_until(&f.churn_converged, 0.5),
            median_until(&f.churn_converged, 0.9),
            worst_until_all(&f.churn_converged),
            f.cpu,
            f.wall.as_secs_f64(),
        );
    }
    println!(
        "\nbytes/s per member (UDP payload, kB/s: mean at steady state, the most one member sent, mean under churn); \
         claims held and broadcasts still to spread per member; lookups: share of (random member, random peer) where the \
         member's lookup (to the peer's directory) named a live home at its address, at steady state, right after churn, \
         and there asking only members older than 2 min; asked member is a home itself; answer time at steady state, \
         ms, 50 / 90 %"
    );
    println!(
        "{:>7} {:>7} | {:>6} {:>6} {:>6} | {:>7} {:>7} | {:>8} {:>8} {:>8} {:>6} | {:>5} {:>5}",
        "members",
        "peers",
        "idle",
        "max",
        "churn",
        "claims",
        "backlog",
        "steady",
        "churn",
        "old",
        "direct",
        "ms 50",
        "90"
    );
    let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0));
    for f in all {
        println!(
            "{:>7} {:>7} | {:>6} {:>6.1} {:>6} | {:>7.0} {:>7.0} | {:>8} {:>8} {:>8} {:>5.1}% | {:>5} {:>5}",
            f.members,
            f.peers,
            kb(&f.idle),
            f.idle.max / 1000.0,
            kb(&f.churn),
            f.claims_held,
            f.backlog,
            pct(&f.steady),
            pct(&f.after_churn),
            pct(&f.after_churn_old),
            100.0 * f.steady.direct as f64 / f.steady.asked.max(1) as f64,
            ms(f.steady.time(0.5)),
            ms(f.steady.time(0.9)),
        );
    }
    println!(
        "\nper member at steady state: records and claims held and the heap they take (MB, by the per-entry figures above); \
         CPU, ms per s (the steady minute's CPU, harness included, over the members: an upper bound); lookup hops: \
         round trips before a home is named (1: to the directory; 0 when the member asked keeps the directory or is a \
         home), mean over the lookups"
    );
    println!(
        "{:>7} {:>7} | {:>7} {:>7} {:>7} | {:>8} | {:>5}",
        "members", "peers", "records", "claims", "MB", "cpu ms/s", "hops"
    );
    for f in all {
        let mb = (f.records_held * costs.per_record + f.claims_held * costs.per_claim) / 1e6;
        let hops = f.steady.times.len() as f64 / f.steady.asked.max(1) as f64;
        println!(
            "{:>7} {:>7} | {:>7.0} {:>7.0} {:>7.2} | {:>8.2} | {:>5.2}",
            f.members,
            f.peers,
            f.records_held,
            f.claims_held,
            mb,
            1000.0 * f.steady_cpu / f.steady_secs / f.members as f64,
            hops,
        );
    }
    println!(
        "\nfailover, s: a killed member declared down by 50 / 90 / 100 % of the members that had it up; its claims gone from every table \
         (worst; open: still named 30 s after); one killed alone, then those killed under churn"
    );
    println!(
        "{:>7} {:>7} | {:>5} {:>5} {:>8} {:>7} | {:>8} {:>5} {:>9} {:>9} | {:>6}",
        "members", "peers", "alone", "90", "100", "claims", "churn 50", "90", "100", "claims", "strays"
    );
    for f in all {
        println!(
            "{:>7} {:>7} | {:>5} {:>5} {:>8} {:>7} | {:>8} {:>5} {:>9} {:>9} | {:>6}",
            f.members,
            f.peers,
            median_until(&f.failover, 0.5),
            median_until(&f.failover, 0.9),
            worst_until_all(&f.failover),
            claims_gone(&f.claims_dropped),
            median_until(&f.churn_failover, 0.5),
            median_until(&f.churn_failover, 0.9),
            worst_until_all(&f.churn_failover),
            claims_gone(&f.churn_claims_dropped),
            f.strays,
        );
    }
}

fn main() {
    let test = std::env::args().any(|a| a == "--test");
    let spec = std::env::var("MESH_SCALE")
        .unwrap_or_else(|_| if test { "20x50" } else { "100x0,100x1000,100x10000,300x0,300x1000" }.to_owned());
    let seed: u64 = std::env::var("MESH_SCALE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let threads: usize = std::env::var("MESH_SCALE_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let scenarios: Vec<Scenario> = spec
        .split(',')
        .filter_map(|s| {
            let (m, p) = s.trim().split_once('x')?;
            Some(Scenario { members: m.parse().ok()?, peers: p.parse().ok()? })
        })
        .collect();

    let costs = memory_per_entry();
    println!(
        "memory (counting allocator, one member's table): {:.0} B per node record ({} B signed), \
         {:.0} B per hosting claim ({} B signed); a new claim takes {:.0} us of CPU (decode, verify, insert)",
        costs.per_record, costs.record_len, costs.per_claim, costs.claim_len, costs.claim_us
    );

    let mut figures: Vec<Option<Figures>> = (0..scenarios.len()).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(&mut figures);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(scenarios.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&s) = scenarios.get(i) else { break };
                let f = run(s, seed);
                eprintln!("{}x{}: {:.0} cpu s", s.members, s.peers, f.cpu);
                done.lock().expect("no panic")[i] = Some(f);
            });
        }
    });
    let all: Vec<Figures> = figures.into_iter().flatten().collect();
    print(&all, &costs);
    println!(
        "\nanchors: hyperdht O(log n) lookup hops, records on the 3 closest nodes, 20 min record expiry, \
         20-30 min before a new node is used; iroh one home relay, a stale record stranded a node 15 h; \
         libp2p kad provider records republished every 12-22 h; chitchat full digest every second broke near 500 nodes"
    );
}
