//! Our relay, coturn's TURN relay and batched forwarders, each its own process, measured
//! in the same run (see `introducer_benches::relay`): datagrams per second delivered and
//! the relay's CPU time per GB, medians of paired rounds, with the ratios the relay is held
//! to. 1000-byte payloads.
//!
//! `cargo bench -p introducer-benches --bench relay_compare` (`RELAY_COMPARE_COUNT`,
//! `RELAY_COMPARE_ROUNDS`, `RELAY_COMPARE_WINDOW`); `-- --test` runs one short round.

use introducer_benches::relay::{blast, run_child, Blast, Kind3, Relay, CHILD};

const SIZE: usize = 1000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Ok(role) = std::env::var(CHILD) {
        return run_child(&role);
    }
    let quick = std::env::args().any(|a| a == "--test");
    let count = if quick { 5_000 } else { env("RELAY_COMPARE_COUNT", 200_000) };
    let rounds = if quick { 1 } else { env("RELAY_COMPARE_ROUNDS", 5) };
    let window = env("RELAY_COMPARE_WINDOW", 256);
    let kinds = [Kind3::Introducer, Kind3::Coturn, Kind3::Forwarder, Kind3::ForwarderGso];
    let mut runs: Vec<Vec<Blast>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for (k, &kind) in kinds.iter().enumerate() {
            let relay = Relay::start(kind, SIZE);
            blast(&relay, count / 10, window);
            let b = blast(&relay, count, window);
            println!(
                "round {round} {:>10}: {}/{} in {:.2} s, relay CPU {:.2} s",
                kind.name(),
                b.received,
                b.sent,
                b.elapsed.as_secs_f64(),
                b.relay_cpu.as_secs_f64()
            );
            runs[k].push(b);
        }
    }
    let rate = |b: &Blast| b.received as f64 / b.elapsed.as_secs_f64();
    let cpu_per_gb = |b: &Blast| b.relay_cpu.as_secs_f64() / (b.received as f64 * SIZE as f64 / 1e9);
    let rates: Vec<f64> = runs.iter().map(|r| median(r.iter().map(rate).collect())).collect();
    let cpus: Vec<f64> = runs.iter().map(|r| median(r.iter().map(cpu_per_gb).collect())).collect();
    let delivered: Vec<f64> =
        runs.iter().map(|r| median(r.iter().map(|b| b.received as f64 / b.sent as f64 * 100.0).collect())).collect();
    println!("\n{SIZE}-byte payloads, window {window}, {count} datagrams x {rounds} rounds (medians):");
    println!("{:>10} {:>12} {:>9} {:>13} {:>10}", "relay", "datagrams/s", "MB/s", "CPU s per GB", "delivered");
    for (k, kind) in kinds.iter().enumerate() {
        println!(
            "{:>10} {:>12.0} {:>9.1} {:>13.2} {:>9.1}%",
            kind.name(),
            rates[k],
            rates[k] * SIZE as f64 / 1e6,
            cpus[k],
            delivered[k]
        );
    }
    println!(
        "introducer / coturn: {:.2} x datagrams/s (goal >= 1.2), {:.2} x CPU per GB (goal <= 0.8); introducer / forwarder: {:.2} x datagrams/s (goal >= 0.9); introducer / fwd+gso: {:.2} x",
        rates[0] / rates[1],
        cpus[0] / cpus[1],
        rates[0] / rates[2],
        rates[0] / rates[3]
    );
}
