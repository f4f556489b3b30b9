//! Punch latency.
//!
//! - `punch/sim/easy_pair`: one easy × easy punch on the simulator (two port-restricted NATs,
//!   20 ms one way): criterion measures the *wall-clock* cost of simulating it, from the
//!   introduction request to A's `Connected` (the network is built, probed and registered
//!   outside the measurement). The simulated *virtual* time-to-connect is the protocol's
//!   result, not a cost, so it is printed as a table over many seeds and latencies first.
//! - `punch/sim/birthday`: the same for easy × hard (port-restricted asks symmetric-random):
//!   the easy side sprays random ports of the hard side's 256-socket pool; its success
//!   rate, virtual time-to-direct and probes are printed over many seeds first.
//! - `punch/loopback/easy_pair`: the real node over loopback sockets: wall time from
//!   `Node::connect(peer)` to the `Connected` event in the caller's hands, each iteration a
//!   complete fresh introduction and punch (see `introducer_benches::Loopback`). The node's
//!   own `connect_ms` is printed alongside.
//! - `punch/loopback/birthday`: birthday spraying over real loopback sockets between two
//!   bare punch attempts (`introducer_benches::LoopbackSpray`): the hard side's pool is 256
//!   sockets on kernel-picked ports, the easy side sprays random ports; time-to-direct is
//!   until both sides connected. Its runs' time-to-direct and probes are printed next to
//!   what the birthday paradox predicts.
//! - `punch/loopback/predict`: the same with the pool on consecutive ports just past the
//!   port the introducer saw, so the easy side's predicted guesses hit in the first round.
//!   On loopback its time is mostly the hard side opening its pool (256 sends, a few µs
//!   each) before it reads the hit, not a round trip.
//!
//! `cargo bench -p introducer-benches --bench punch`; `-- --test` runs each once.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use introducer_actors::nat::NatBehavior;
use introducer_actors::punch;
use introducer_benches::{birthday_guesses, HardPorts, Loopback, LoopbackConnect, LoopbackSpray, SimPair, SprayPunch};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn percentile<T: Copy + PartialOrd>(mut v: Vec<T>, p: f64) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied()
}

/// The virtual time-to-connect of easy × easy punches, by internet latency.
fn print_virtual_times(seeds: u64) {
    println!("\nsimulated easy × easy punch (port-restricted × port-restricted), {seeds} seeds per latency");
    println!("{:>12} {:>8} {:>12} {:>12} {:>10} {:>7}", "one way", "ok", "median ms", "p95 ms", "median RTT", "probes");
    for latency_ms in [5, 20, 50, 150] {
        let latency = Duration::from_millis(latency_ms);
        let (mut ms, mut rtts, mut probes, mut ok) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for seed in 0..seeds {
            let mut pair = SimPair::easy(seed, latency);
            if let Some(c) = pair.punch() {
                ok += 1;
                ms.push(c.connect_ms());
                rtts.push(c.connect.as_secs_f64() / pair.rtt.as_secs_f64());
                probes.push(c.probes);
            }
        }
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "{:>9} ms {:>4}/{:<3} {:>12} {:>12} {:>10} {:>7}",
            latency_ms,
            ok,
            seeds,
            f(percentile(ms.clone(), 0.5)),
            f(percentile(ms, 0.95)),
            percentile(rtts, 0.5).map_or("-".to_owned(), |v| format!("{v:.2}")),
            percentile(probes, 0.5).map_or("-".to_owned(), |v| v.to_string()),
        );
    }
}

/// Birthday punches (easy asks hard), 20 ms one way: success, time-to-direct, probes.
fn print_birthday(seeds: u64) {
    let (mut ms, mut probes, mut ok) = (Vec::new(), Vec::new(), 0);
    for seed in 0..seeds {
        let mut pair = birthday_pair(seed);
        if let Some(c) = pair.punch() {
            ok += 1;
            ms.push(c.connect_ms());
            probes.push(c.probes);
        }
    }
    println!("\nsimulated birthday punch (port-restricted asks symmetric-random, 20 ms one way), {seeds} seeds");
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let p = |q| percentile(probes.clone(), q).map_or("-".to_owned(), |v: u32| v.to_string());
    println!(
        "ok {ok}/{seeds}; connect ms median {} p95 {} max {}; probes median {} p95 {} max {}",
        f(percentile(ms.clone(), 0.5)),
        f(percentile(ms.clone(), 0.95)),
        f(percentile(ms, 1.0)),
        p(0.5),
        p(0.95),
        p(1.0)
    );
}

fn birthday_pair(seed: u64) -> SimPair {
    SimPair::new(seed, Duration::from_millis(20), NatBehavior::PORT_RESTRICTED, NatBehavior::SYMMETRIC_RANDOM)
}

fn sim(c: &mut Criterion) {
    print_virtual_times(40);
    print_birthday(200);
    let mut group = c.benchmark_group("punch/sim");
    let mut seed = 0;
    // A birthday punch may miss (all 2048 guesses sprayed, 0.03 % of runs): counted, not fatal.
    let mut bench = |name: &str, make: fn(u64) -> SimPair, may_miss: bool| {
        let mut misses = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    seed += 1;
                    let mut pair = make(seed);
                    let start = Instant::now();
                    let connected = black_box(pair.punch());
                    spent += start.elapsed();
                    assert!(connected.is_some() || may_miss, "seed {seed}: {name} did not connect");
                    misses += u32::from(connected.is_none());
                }
                spent
            })
        });
        if misses > 0 {
            println!("{name}: {misses} punches missed");
        }
    };
    bench("easy_pair", |seed| SimPair::easy(seed, Duration::from_millis(20)), false);
    bench("birthday", birthday_pair, true);
    group.finish();
}

fn loopback(c: &mut Criterion) {
    let mut nodes = Loopback::start();
    let mut seen: Vec<LoopbackConnect> = Vec::new();
    let mut group = c.benchmark_group("punch/loopback");
    group.bench_function("easy_pair", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let connected = nodes.connect();
                spent += connected.wall;
                seen.push(connected);
            }
            nodes.drain_b();
            spent
        })
    });
    group.finish();
    // Filtered out: nothing to print.
    if seen.is_empty() {
        return;
    }
    let wall: Vec<f64> = seen.iter().map(|c| c.wall.as_secs_f64() * 1000.0).collect();
    let node: Vec<f64> = seen.iter().map(|c| c.connect_ms).collect();
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    let how = seen.last().map_or(String::new(), |c| format!("{} / {}, {} probe(s)", c.path, c.strategy, c.probes));
    println!("\nloopback punches: {} ({how})", seen.len());
    println!(
        "  connect() → Connected event, wall: median {} ms, p95 {} ms",
        f(percentile(wall.clone(), 0.5)),
        f(percentile(wall, 0.95))
    );
    println!(
        "  node's connect_ms:                  median {} ms, p95 {} ms",
        f(percentile(node.clone(), 0.5)),
        f(percentile(node, 0.95))
    );
}

/// Birthday spraying and port prediction over loopback sockets. One iteration is a whole
/// punch, and a birthday punch takes about half a second: few samples, flat sampling, and
/// time enough for a few dozen birthday punches in all (their spread is wide).
fn loopback_spray(c: &mut Criterion) {
    let mut group = c.benchmark_group("punch/loopback");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (name, ports, measure) in [("birthday", HardPorts::Random, 20), ("predict", HardPorts::Consecutive, 2)] {
        let mut pair = LoopbackSpray::new(ports);
        let mut seen = Vec::new();
        group.measurement_time(Duration::from_secs(measure));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let punched = black_box(pair.punch());
                        seen.push(punched);
                        punched.elapsed
                    })
                    .sum()
            })
        });
        print_spray(name, &pair, &seen);
    }
    group.finish();
}

/// A loopback spray bench's runs: time-to-direct and the easy side's probes, and what
/// random guessing predicts for them.
fn print_spray(name: &str, pair: &LoopbackSpray, seen: &[SprayPunch]) {
    if seen.is_empty() {
        return;
    }
    let ok: Vec<&SprayPunch> = seen.iter().filter(|p| p.connected).collect();
    let ms: Vec<f64> = ok.iter().map(|p| p.elapsed.as_secs_f64() * 1000.0).collect();
    let counts = |count: fn(&SprayPunch) -> u32| {
        let v: Vec<u32> = ok.iter().map(|&p| count(p)).collect();
        let q = |q| percentile(v.clone(), q).map_or("-".to_owned(), |v| v.to_string());
        format!("median {} p95 {} max {}", q(0.5), q(0.95), q(1.0))
    };
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    println!("\nloopback {name}: {}/{} punches connected", ok.len(), seen.len());
    println!(
        "  time-to-direct ms: median {} p95 {} max {}",
        f(percentile(ms.clone(), 0.5)),
        f(percentile(ms.clone(), 0.95)),
        f(percentile(ms, 1.0))
    );
    println!("  easy side's probes: {}", counts(|p| p.probes));
    println!("  of them sprayed:    {}", counts(|p| p.sprayed));
    let config = punch::Config::default();
    let (per_round, interval_ms) = (config.spray_per_round, config.interval.as_secs_f64() * 1000.0);
    // Guesses leave in rounds, the first at once: guess k goes out with round ⌈k / per_round⌉.
    let at = |k: u32| {
        let round = k.div_ceil(per_round);
        format!("guess {k} (sprayed {}, ~{:.0} ms)", round * per_round, f64::from(round - 1) * interval_ms)
    };
    if pair.predict().is_some() {
        println!("  expected: the first predicted guess is the pool's first port: a hit with {}", at(1));
    } else {
        let guesses = |p| at(birthday_guesses(pair.mappings(), p));
        println!(
            "  expected: random guesses at {} open mappings of 64512 ports hit by {} in half the punches, by {} in 95 %",
            pair.mappings(),
            guesses(0.5),
            guesses(0.95)
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = sim, loopback, loopback_spray
}
criterion_main!(benches);
