//! Relay throughput: datagrams/s and bytes/s between two real nodes on loopback, through
//! the introducer's relay (`relay_only` peers, the relay's limits lifted) versus a direct
//! path on the same machine. One connection per mode, then bursts of 1000-byte datagrams
//! with a bounded window in flight; received counts and rates are printed, and criterion
//! times a burst of 1000 datagrams.
//!
//! `cargo bench -p introducer-benches --bench relay`; `-- --test` runs each once.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use introducer_benches::Loopback;

const SIZE: usize = 1000;
const WINDOW: u32 = 64;

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay");
    group.sample_size(10);
    println!("\nloopback, {SIZE}-byte datagrams, window {WINDOW}:");
    for (name, relay_only) in [("direct", false), ("relayed", true)] {
        let mut nodes = Loopback::start_with(relay_only);
        let connected = nodes.connect();
        // Not relayed: one host's two nodes share an IP, so the path is direct or local.
        assert_eq!(connected.path == "relayed", relay_only, "{name}: {}", connected.path);
        let blast = nodes.blast(20_000, SIZE, WINDOW);
        let secs = blast.elapsed.as_secs_f64();
        println!(
            "  {name:>8}: {}/{} arrived in {:.2} s — {:.0} datagrams/s, {:.1} MB/s",
            blast.received,
            blast.sent,
            secs,
            f64::from(blast.received) / secs,
            f64::from(blast.received) * SIZE as f64 / secs / 1e6
        );
        group.throughput(Throughput::Bytes(1000 * SIZE as u64));
        group.bench_function(name, |b| b.iter(|| nodes.blast(1000, SIZE, WINDOW)));
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
