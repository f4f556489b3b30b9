//! What a user touches, across real Linux NATs (network namespaces + nftables): ping's
//! accounting when the NAT loses datagrams, its summary on Ctrl-C, what a terminal user
//! is told while a hard connection is made, and the library example behind a NAT.

use introducer_actors::nat::NatBehavior;
use introducer_lab::netns::{Host, LabChild, Standard, A_IP, PORT};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");
const WAIT: Duration = Duration::from_secs(30);

/// Introducers A and B, and a peer running behind a NAT of `behavior` (registered).
fn with_peer(name: &str, behavior: NatBehavior) -> (Standard, [LabChild; 3], String) {
    let std = Standard::new(name, INTRODUCER);
    let (a, b) = std.start_introducers();
    let (_, host) = std.natted_host("p", behavior);
    let (peer, peer_id) = std.peer(&host, &[]);
    (std, [a, b, peer], peer_id)
}

fn seqs(events: &[Value], kind: &str) -> BTreeSet<u64> {
    events.iter().filter(|e| e["event"] == kind).map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// A NAT that loses 30 % of what it forwards, either way: every ping is answered or
/// reported lost (never both, never neither), the summary's figures are those of the
/// lines before it, and each ping reported lost is a datagram the NAT dropped.
#[test]
fn ping_counts_what_a_lossy_nat_loses() {
    let (std, _nodes, peer_id) = with_peer("loss", NatBehavior::PORT_RESTRICTED);
    let (nat, host) = std.natted_host("q", NatBehavior::PORT_RESTRICTED);
    let count = 40;
    let args = ["ping", &peer_id, "--bootstrap", &std.bootstrap(), "-c", "40", "-i", "0.05", "-W", "3"];
    let mut ping = host.introducer(&args);
    ping.wait_json(|v| v["event"] == "connected", WAIT);
    nat.set_loss(30);
    let status = ping.wait_exit(WAIT);
    let events = ping.json_lines();
    let context = ping.context();
    assert!(status.success(), "some pongs came back: {context}");
    let (pongs, lost) = (seqs(&events, "pong"), seqs(&events, "timeout"));
    assert!(pongs.is_disjoint(&lost), "{context}");
    assert_eq!(pongs.union(&lost).copied().collect::<Vec<_>>(), (0..count).collect::<Vec<_>>(), "{context}");
    assert!(!lost.is_empty() && !pongs.is_empty(), "{context}");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary", "{context}");
    assert_eq!(
        (summary["transmitted"].as_u64(), summary["received"].as_u64()),
        (Some(count), Some(pongs.len() as u64))
    );
    let loss = (lost.len() as f64 * 1000.0 / count as f64).round() / 10.0;
    assert_eq!(summary["loss_pct"].as_f64(), Some(loss), "{summary}");
    let rtts: Vec<f64> =
        events.iter().filter(|e| e["event"] == "pong").map(|e| e["rtt_ms"].as_f64().unwrap()).collect();
    let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(summary["rtt_min_ms"].as_f64(), Some(min), "{summary}");
    assert!(nat.lost() >= lost.len() as u64, "{} dropped, {} pings lost", nat.lost(), lost.len());
}

/// `ping --count 0` pings until Ctrl-C, and Ctrl-C prints the summary (exit 0: pongs came).
#[test]
fn ctrl_c_ends_ping_with_its_summary() {
    let (std, _nodes, peer_id) = with_peer("ctrlc", NatBehavior::FULL_CONE);
    let (_, host) = std.natted_host("q", NatBehavior::PORT_RESTRICTED);
    let mut ping = host.introducer(&["ping", &peer_id, "--bootstrap", &std.bootstrap(), "-c", "0", "-i", "0.1"]);
    for _ in 0..3 {
        ping.wait_json(|v| v["event"] == "pong", WAIT);
    }
    ping.signal(libc::SIGINT);
    let status = ping.wait_exit(WAIT);
    assert!(status.success(), "{}", ping.context());
    let events = ping.json_lines();
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary", "{}", ping.context());
    let (sent, got) = (summary["transmitted"].as_u64().unwrap(), summary["received"].as_u64().unwrap());
    assert!(sent >= 3 && got >= 3 && got <= sent, "{summary}");
    assert_eq!(got, seqs(&events, "pong").len() as u64);
    assert!(summary["rtt_avg_ms"].as_f64().unwrap() > 0.0, "{summary}");
}

/// `introducer ARGS` on `host` as a person runs it: human output, no data dir.
fn run_human(host: &Host, args: &[&str]) -> Output {
    host.run_timeout(INTRODUCER, args, Duration::from_secs(60))
}

/// A person behind a hard NAT, told why each connection is slow or relayed (`-v`): a
/// birthday punch to a peer behind an easy NAT, the relay to a peer behind another hard
/// one. Progress goes to stderr; stdout has the results, in sentences.
#[test]
fn a_person_is_told_what_a_hard_connection_waits_for() {
    let (std, [mut a, _b, _easy], easy_id) = with_peer("human", NatBehavior::PORT_RESTRICTED);
    let (_, hard_host) = std.natted_host("s", NatBehavior::SYMMETRIC_RANDOM);
    let (_hard, hard_id) = std.peer(&hard_host, &[]);
    let (_, host) = std.natted_host("q", NatBehavior::SYMMETRIC_RANDOM);
    let bootstrap = std.bootstrap();
    for (peer, strategy, path) in [(&easy_id, "birthday", "direct"), (&hard_id, "relay", "relayed")] {
        let out = run_human(&host, &["ping", peer, "--bootstrap", &bootstrap, "-v", "-c", "2", "-i", "0.2"]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("$ introducer ping {peer} -v -c 2 -i 0.2\n{stderr}{stdout}");
        assert!(out.status.success(), "{stderr}{stdout}");
        assert!(stderr.contains(&format!("asking for an introduction to {peer}")), "{stderr}");
        assert!(stderr.contains("our NAT: hard (address-and-port-dependent mapping"), "{stderr}");
        assert!(stderr.contains(&format!("plan: {strategy} — ")), "{stderr}");
        if path == "relayed" {
            assert!(stderr.contains("asking relay "), "{stderr}");
        }
        let first = stdout.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("connected to {peer} via {path} path")), "{stdout}");
        assert!(stdout.contains("2 transmitted, 2 received, 0% loss"), "{stdout}");
        assert!(!stdout.contains('{'), "no JSON in human mode: {stdout}");
    }
    // The introducer says it introduced each pair once, however often the request was
    // repeated while the punch went on. A node registering after both pings ended is the
    // marker: what A printed before it is all A will print of them.
    let (_, marker_host) = std.natted_host("m", NatBehavior::PORT_RESTRICTED);
    let (_marker, marker_id) = std.peer(&marker_host, &[]);
    a.wait_json(|v| v["event"] == "peer_registered" && v["peer_id"] == marker_id.as_str(), WAIT);
    for peer in [&easy_id, &hard_id] {
        let introduced = a.json_lines().into_iter().filter(|v| v["event"] == "introduced" && v["target"] == *peer);
        assert_eq!(introduced.count(), 1, "{}", a.context());
    }
}

/// `node/examples/two_peers.rs`, built by `cargo test`, next to the test binaries.
fn example(name: &str) -> PathBuf {
    let path = PathBuf::from(INTRODUCER).with_file_name("examples").join(name);
    assert!(path.exists(), "{} is not built: `cargo test` builds the examples", path.display());
    path
}

/// The README's example, run behind a real NAT: its two peers join through introducer
/// A, get introduced, punch, ping and talk.
#[test]
fn the_example_runs_behind_a_nat() {
    let std = Standard::new("example", INTRODUCER);
    let (_a, _b) = std.start_introducers();
    let (_, host) = std.natted_host("e", NatBehavior::PORT_RESTRICTED);
    let seed = format!("{A_IP}:{PORT}");
    let out = host.run_timeout(example("two_peers"), [seed.as_str()], Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // Behind one NAT, the two find each other on its LAN.
    assert!(stdout.starts_with("bob reached alice: local path, local in "), "{stdout}");
    assert!(stdout.contains("pong 0: "), "{stdout}");
    assert!(stdout.contains("alice got \"hello, alice\" from 12D3KooW"), "{stdout}");
}

/// The PeerId a node announced when it was ready.
fn ready_id(node: &LabChild) -> String {
    let ready = node.json_lines().into_iter().find(|v| v["event"] == "ready").expect("ready");
    ready["peer_id"].as_str().unwrap().to_owned()
}

/// A public node is pinged by its PeerId like any peer, from behind a NAT: the one the
/// client bootstraps through (it introduces itself), another seed, and a member the client
/// never named (its introducer names it as its own home).
#[test]
fn a_public_node_is_pinged_by_its_peer_id() {
    let std = Standard::new("pubid", INTRODUCER);
    let (a, b) = std.start_introducers();
    let c_host = std.lab.public_host("c", &[std::net::Ipv4Addr::new(198, 51, 100, 9)]);
    let mut c = c_host.introducer(&["run", "--bootstrap", &std.bootstrap()]);
    let c_id = c.wait_json(|v| v["event"] == "ready", WAIT)["peer_id"].as_str().unwrap().to_owned();
    c.wait_json(|v| v["event"] == "mesh" && v["change"] == "joined", WAIT);
    let (_, host) = std.natted_host("q", NatBehavior::SYMMETRIC_RANDOM);
    for (name, id) in [("a", ready_id(&a)), ("b", ready_id(&b)), ("c", c_id)] {
        let mut ping = host.introducer(&["ping", &id, "--bootstrap", &std.bootstrap(), "-c", "2", "-i", "0.1"]);
        let status = ping.wait_exit(WAIT);
        let context = ping.context();
        assert!(status.success(), "ping {name}: {context}");
        let events = ping.json_lines();
        assert_eq!(
            (events[0]["event"].as_str(), events[0]["path"].as_str()),
            (Some("connected"), Some("direct")),
            "{name}: {context}"
        );
        assert_eq!(events[0]["strategy"], "direct", "{name}: {context}");
        assert_eq!(events.last().unwrap()["received"], 2, "{name}: {context}");
    }
}
