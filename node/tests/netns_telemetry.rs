//! The node's traces and metrics, as a tracing backend receives them: the real binary
//! across real Linux NATs exports over OTLP/HTTP to a real receiver (oteltap, run by
//! `scripts/otlp-receiver.py`, installed by `scripts/install-deps.sh`). A birthday punch
//! and a relayed connection are checked span by span: names, parent and child, and the
//! attributes that say why a connection took the path it took.

use introducer_actors::nat::NatBehavior;
use introducer_lab::netns::{Host, LabChild, Standard, A_IP, PORT};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");
/// The receiver's host, on the lab's internet.
const RECEIVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const RECEIVER_PORT: u16 = 4318;

/// The OTLP receiver, and every span and metric point it printed so far.
struct Receiver(LabChild);

impl Receiver {
    fn start(host: &Host) -> Receiver {
        let venv = std::env::var("OTELTAP_VENV").unwrap_or_else(|_| "/opt/introducer/oteltap".into());
        let python = Path::new(&venv).join("bin/python3");
        assert!(python.exists(), "no oteltap venv at {venv}: run scripts/install-deps.sh");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/otlp-receiver.py");
        let mut child = host.spawn(python, [script, &RECEIVER_PORT.to_string()]);
        child.wait_json(|v| v["kind"] == "listening", WAIT);
        Receiver(child)
    }

    /// The first span (seen or to come) that `pred` accepts.
    fn span(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let mut pred = move |v: &Value| v["kind"] == "span" && pred(v);
        if let Some(seen) = self.0.json_lines().into_iter().find(|v| pred(v)) {
            return seen;
        }
        self.0.try_wait_json(&mut pred, WAIT).unwrap_or_else(|e| panic!("no span {what}: {e}"))
    }

    /// The first data point of metric `name` for `peer_id` that `pred` accepts.
    fn metric(&mut self, name: &str, peer_id: &str, mut pred: impl FnMut(u64) -> bool) -> u64 {
        let mut pred = move |v: &Value| {
            v["kind"] == "metric"
                && v["name"] == name
                && v["attributes"]["introducer.peer_id"] == peer_id
                && v["value"].as_u64().is_some_and(&mut pred)
        };
        let seen = self.0.json_lines().into_iter().find(|v| pred(v));
        let point = seen.unwrap_or_else(|| {
            self.0.try_wait_json(&mut pred, WAIT).unwrap_or_else(|e| panic!("no metric {name}: {e}"))
        });
        point["value"].as_u64().unwrap()
    }

    /// The child span `name` of `parent` (same trace).
    fn child(&mut self, parent: &Value, name: &str) -> Value {
        let (trace, id) = (parent["trace_id"].clone(), parent["span_id"].clone());
        self.span(name, |v| v["name"] == name && v["trace_id"] == trace && v["parent_span_id"] == id)
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// `ping PEER` from `host`: its `connected` event (the command exits, flushing its spans).
fn ping(std: &Standard, host: &Host, peer: &str) -> Value {
    let args = ["ping", peer, "--bootstrap", &std.bootstrap(), "--json", "--count", "2", "--interval", "0.1"];
    let out = host.run_timeout(INTRODUCER, args, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().next().unwrap()).unwrap()
}

#[test]
fn a_birthday_punch_and_a_relayed_connection_are_traced() {
    let std = Standard::new("otel", INTRODUCER);
    let mut receiver = Receiver::start(&std.lab.public_host("o", &[RECEIVER_IP]));
    // Every node this test starts inherits these: all of them export.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{RECEIVER_IP}:{RECEIVER_PORT}"));
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "500");
    let (a, _b) = std.start_introducers();
    let a_id = a.json_lines().iter().find(|v| v["event"] == "ready").unwrap()["peer_id"].as_str().unwrap().to_owned();
    let (_, hard) = std.natted_host("p1", NatBehavior::SYMMETRIC_RANDOM);
    let (_, easy) = std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let (_, other_hard) = std.natted_host("p3", NatBehavior::SYMMETRIC_SEQUENTIAL);
    let (_hard_node, hard_id) = std.peer(&hard, &[]);

    // Easy asks hard: a birthday punch.
    let connected = ping(&std, &easy, &hard_id);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("direct"), Some("birthday")));
    let root = receiver.span("connect (birthday)", |v| {
        v["name"] == "introducer.connect"
            && attr(v, "introducer.peer_id") == hard_id.as_str()
            && attr(v, "introducer.strategy") == "birthday"
    });
    assert_eq!(root["parent_span_id"], "", "the connection is a trace's root: {root}");
    assert_eq!(attr(&root, "introducer.initiator"), true);
    assert_eq!(attr(&root, "introducer.path"), "direct");
    assert_eq!(attr(&root, "introducer.nat.remote"), "hard/address-and-port-dependent", "{root}");
    assert_eq!(attr(&root, "network.peer.address"), &connected["remote"], "{root}");
    let introduction = receiver.child(&root, "introducer.introduction");
    assert_eq!(attr(&introduction, "introducer.role"), "requester");
    let punch = receiver.child(&root, "introducer.punch");
    assert_eq!(attr(&punch, "introducer.strategy"), "birthday", "{punch}");
    assert_eq!(attr(&punch, "introducer.outcome"), "connected", "{punch}");
    assert_eq!(attr(&punch, "introducer.probes").as_i64(), connected["probes"].as_i64(), "{punch}");
    assert_eq!(attr(&punch, "network.transport"), "udp");
    assert!(attr(&punch, "introducer.nat.local").as_str().unwrap().starts_with("easy/"), "{punch}");
    assert!(root["duration_ms"].as_f64().unwrap() >= punch["duration_ms"].as_f64().unwrap(), "{root}\n{punch}");
    println!("a birthday punch, as the receiver got it:\n  {root}\n  {introduction}\n  {punch}");
    // The other side, introduced to us, traced its punch too; the introducer its introduction.
    let theirs = receiver.span("connect (target side)", |v| {
        v["name"] == "introducer.connect"
            && attr(v, "introducer.initiator") == false
            && attr(v, "introducer.strategy") == "birthday"
    });
    assert_eq!(attr(&receiver.child(&theirs, "introducer.introduction"), "introducer.role"), "target");
    assert_eq!(attr(&receiver.child(&theirs, "introducer.punch"), "introducer.outcome"), "connected");
    receiver.span("introduction (introducer side)", |v| {
        v["name"] == "introducer.introduction"
            && attr(v, "introducer.role") == "introducer"
            && attr(v, "introducer.target") == hard_id.as_str()
    });

    // Two hard NATs: relayed by the introducer.
    let connected = ping(&std, &other_hard, &hard_id);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("relayed"), Some("relay")));
    let root = receiver.span("connect (relayed)", |v| {
        v["name"] == "introducer.connect"
            && attr(v, "introducer.initiator") == true
            && attr(v, "introducer.path") == "relayed"
    });
    assert_eq!(attr(&root, "introducer.strategy"), "relay");
    let relay = receiver.child(&root, "introducer.relay");
    assert_eq!(attr(&relay, "network.peer.address"), format!("{A_IP}:{PORT}").as_str(), "{relay}");
    assert_eq!(attr(&relay, "introducer.outcome"), "connected", "{relay}");
    println!("a relayed connection:\n  {root}\n  {relay}");
    let circuit = receiver.span("relay circuit", |v| v["name"] == "introducer.relay.circuit");
    assert!(attr(&circuit, "introducer.peers").as_str().unwrap().contains(&hard_id), "{circuit}");

    // The introducer's counters, as metrics.
    assert!(receiver.metric("introducer.broker_introduced", &a_id, |n| n >= 2) >= 2);
    assert!(receiver.metric("introducer.relay_forwarded_packets", &a_id, |n| n >= 4) >= 4);
}
