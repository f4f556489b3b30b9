//! Our relay, coturn's TURN relay and batched forwarders, each its own process, measured
//! in the same run (see `introducer_benches::relay`): datagrams per second delivered and
//! the relay's CPU time per GB, medians of paired rounds, with the ratios the relay is held
//! to. 1000-byte payloads.
//!
//! `cargo bench -p introducer-benches --bench relay_compare` (`RELAY_COMPARE_COUNT`,
//! `RELAY_COMPARE_ROUNDS`, `RELAY_COMPARE_WINDOW`); `-- --test` runs one short round.

use introducer_benches::relay::{blast, registrations, run_child, Blast, Kind3, Relay, CHILD};
use std::time::Duration;

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
    // Admissions: registrations (fresh identities) against authenticated allocations.
    let (clients, secs) = (env("RELAY_COMPARE_CLIENTS", 32) as usize, if quick { 1 } else { 4 });
    let mut admitted = [Vec::new(), Vec::new()];
    for _ in 0..rounds.min(3) {
        for (k, kind) in [Kind3::Introducer, Kind3::Coturn].into_iter().enumerate() {
            let a = registrations(kind, clients, Duration::from_secs(secs));
            println!(
                "{:>10}: {} admitted in {:.2} s, server CPU {:.2} s",
                kind.name(),
                a.done,
                a.elapsed.as_secs_f64(),
                a.server_cpu.as_secs_f64()
            );
            admitted[k].push(a);
        }
    }
    let per_sec: Vec<f64> =
        admitted.iter().map(|r| median(r.iter().map(|a| a.done as f64 / a.elapsed.as_secs_f64()).collect())).collect();
    let cpu_each: Vec<f64> = admitted
        .iter()
        .map(|r| median(r.iter().map(|a| a.server_cpu.as_secs_f64() * 1e6 / a.done.max(1) as f64).collect()))
        .collect();
    println!(
        "\n{clients} clients at once, each admission from scratch (medians):\n{:>10} {:>12} {:>16}",
        "server", "admitted/s", "server CPU us each"
    );
    for (k, what) in ["introducer registrations", "coturn allocations"].iter().enumerate() {
        println!("{what:>25} {:>12.0} {:>16.1}", per_sec[k], cpu_each[k]);
    }
    println!("registrations / allocations: {:.2} x per second (goal >= 1.0)", per_sec[0] / per_sec[1]);
}
