//! Cold start on real NATs: `introducer ping` launched as a fresh process behind a
//! port-restricted NAT (easy), reaching a peer behind another one, timed from the launch
//! of the process to its `connected` line — with no data dir (nothing stored, the NAT is
//! classified from scratch) and with a data dir that holds the NAT report of this network
//! from an earlier run (reused).
//!
//! The timings are printed, not asserted (speed belongs in benchmarks; a loaded CI machine
//! must not fail the suite): `cargo test --release -p introducer-node --test
//! netns_cold_start -- --nocapture` prints the table, `COLD_RUNS=N` changes the number of
//! launches per row (default 5), `COLD_LOG=debug` passes `RUST_LOG` to the launched
//! processes (their timestamped stderr shows where the time goes). What is asserted is the
//! behaviour: every launch connects directly by simultaneous open and gets its pongs.

use introducer_actors::nat::NatBehavior;
use introducer_lab::netns::{Host, Standard};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");
const WAIT: Duration = Duration::from_secs(20);

/// One launch: launch → `connected` as the test saw it, and the `connect_ms` the node
/// printed (from asking for the introduction to the first authenticated packet).
struct Launch {
    connected_ms: f64,
    connect_ms: f64,
}

/// Launches `introducer ping PEER` on `host` (with `data_dir`, if any) and times it.
fn launch(std: &Standard, host: &Host, peer: &str, data_dir: Option<&Path>) -> Launch {
    let bootstrap = std.bootstrap();
    let mut args = vec!["ping", peer, "--bootstrap", &bootstrap, "--json", "--count", "2", "--interval", "0.1"];
    let dir = data_dir.map(|d| d.to_string_lossy().into_owned());
    if let Some(dir) = &dir {
        args.extend(["--data-dir", dir]);
    }
    let mut cmd = host.command(INTRODUCER, &args);
    if let Ok(log) = std::env::var("COLD_LOG") {
        cmd.env("RUST_LOG", log);
    }
    let started = Instant::now();
    let mut ping = host.spawn_command("ping", cmd);
    let connected = ping.wait_json(|v| v["event"] == "connected", WAIT);
    let connected_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = ping.wait_exit(WAIT);
    assert!(status.success(), "ping failed\n{}", ping.context());
    assert_eq!(
        (connected["path"].as_str(), connected["strategy"].as_str()),
        (Some("direct"), Some("simultaneous-open"))
    );
    let pongs: Vec<Value> = ping.json_lines().into_iter().filter(|v| v["event"] == "pong").collect();
    assert_eq!(pongs.len(), 2, "{}", ping.context());
    assert!(pongs.iter().all(|p| p["path"] == "direct"), "{}", ping.context());
    Launch { connected_ms, connect_ms: connected["connect_ms"].as_f64().expect("connect_ms") }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Easy × easy (port-restricted both sides): launch → connected with and without the
/// stored NAT report, `COLD_RUNS` launches each. Without a data dir each launch is on a
/// network of its own (its own NAT): a fresh process on a network it never saw, and no
/// introducer's STUN budget for one source IP (20 answers a second) spent by the launches
/// before it. With the data dir, every launch is on the same network, which the first one
/// (not timed) classified; a launch there lives until its NAT is classified again, to
/// keep the report (`ping` with a data dir does), so it spends that budget no faster than
/// it refills.
#[test]
fn cold_start_easy_to_easy() {
    let runs: usize = std::env::var("COLD_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(5).max(1);
    let std = Standard::new("cold", INTRODUCER);
    let (_a, _b) = std.start_introducers();
    let (_, h1) = std.natted_host("p1", NatBehavior::PORT_RESTRICTED);
    let (_peer, peer_id) = std.peer(&h1, &[]);

    let fresh: Vec<Launch> = (0..runs)
        .map(|i| {
            let (_, host) = std.natted_host(&format!("c{i}"), NatBehavior::PORT_RESTRICTED);
            launch(&std, &host, &peer_id, None)
        })
        .collect();
    let (_, h2) = std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let dir = tempfile::tempdir().expect("a data dir");
    launch(&std, &h2, &peer_id, Some(dir.path()));
    let reused: Vec<Launch> = (0..runs).map(|_| launch(&std, &h2, &peer_id, Some(dir.path()))).collect();

    println!("\ncold start, easy x easy (port-restricted both sides), {runs} launches each:");
    println!("{:<30} {:>26} {:>18}  all launch → connected (ms)", "", "launch → connected median", "connect_ms median");
    for (what, launches) in [("no data dir (NAT classified)", fresh), ("data dir (NAT report reused)", reused)] {
        let connected: Vec<f64> = launches.iter().map(|l| l.connected_ms).collect();
        let connect = median(launches.iter().map(|l| l.connect_ms).collect());
        let all: Vec<String> = connected.iter().map(|ms| format!("{ms:.0}")).collect();
        println!("{what:<30} {:>23.0} ms {connect:>15.1} ms  [{}]", median(connected.clone()), all.join(", "));
    }
}
