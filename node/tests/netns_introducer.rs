//! The real `introducer` binary across real Linux NATs (network namespaces + nftables).
//!
//! Topology (see `introducer_lab::netns`): introducer A on two IPs (a full RFC 5780 STUN server), public
//! node B on a third IP, NAT routers whose nftables rules implement each `NatBehavior`,
//! hosts behind them. Every expectation comes from the shared NAT model in `nat.rs`.

use introducer_actors::nat::{NatBehavior, NatType};
use introducer_lab::netns::{assert_classified, Host, Lab, LabChild, Standard, A_IP, B_IP, PORT};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The `introducer` binary the lab runs.
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");

/// Introducer A (two IPs, RFC 5780) and public node B registered with it.
struct Mesh {
    std: Standard,
    _a: LabChild,
    _b: LabChild,
}

impl Mesh {
    fn new(name: &str) -> Mesh {
        let std = Standard::new(name, INTRODUCER);
        let (_a, _b) = std.start_introducers();
        Mesh { std, _a, _b }
    }

    /// Starts `introducer run` on `host`, waits until it is registered; returns it and its PeerId.
    fn peer(&self, host: &Host) -> (LabChild, String) {
        self.peer_with(host, &[])
    }

    fn peer_with(&self, host: &Host, args: &[&str]) -> (LabChild, String) {
        self.std.peer(host, args)
    }

    /// Pings `peer` from `host`; returns the `connected` event, asserting pongs came back.
    fn ping(&self, host: &Host, (peer_node, peer_id): &(LabChild, String)) -> Value {
        let out = host.run_timeout(
            INTRODUCER,
            ["ping", peer_id, "--bootstrap", &self.std.bootstrap(), "--json", "--count", "2", "--interval", "0.1"],
            Duration::from_secs(40),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ping failed: {stderr}\n{stdout}\npeer: {}", peer_node.context());
        let events: Vec<Value> =
            stdout.lines().map(|l| serde_json::from_str(l).expect("stdout is JSON lines")).collect();
        assert_eq!(events[0]["event"], "connected", "{stdout}");
        let pongs: Vec<&Value> = events.iter().filter(|e| e["event"] == "pong").collect();
        assert_eq!(pongs.len(), 2, "{stdout}");
        assert!(pongs.iter().all(|p| p["path"] == events[0]["path"] && p["rtt_ms"].as_f64().unwrap() > 0.0));
        events[0].clone()
    }
}

/// `introducer nat` behind `behavior`, against introducer nodes and against coturn.
fn classifies(name: &str, behavior: NatBehavior) {
    let mesh = Mesh::new(name);
    // coturn as a standard RFC 5780 server, on two more public IPs.
    let c = mesh.std.lab.public_host("c", &[Ipv4Addr::new(198, 51, 100, 4), Ipv4Addr::new(198, 51, 100, 5)]);
    let _coturn = c.turnserver(PORT);
    let (nat, host) = mesh.std.natted_host("h", behavior);
    let via_introducer = host.introducer_nat(&["--bootstrap", &mesh.std.bootstrap()]);
    assert_classified(&via_introducer, behavior, nat.wan_ip());
    nat.flush_conntrack();
    let via_stun = host.introducer_nat(&["--stun", "198.51.100.4:3478"]);
    assert_classified(&via_stun, behavior, nat.wan_ip());
}

#[test]
fn classifies_port_restricted() {
    classifies("cpr", NatBehavior::PORT_RESTRICTED);
}

#[test]
fn classifies_full_cone() {
    classifies("cfc", NatBehavior::FULL_CONE);
}

#[test]
fn classifies_restricted_cone() {
    classifies("crc", NatBehavior::RESTRICTED_CONE);
}

#[test]
fn classifies_eim_random_port() {
    classifies("cer", NatBehavior::EIM_RANDOM_PORT);
}

#[test]
fn classifies_symmetric_random() {
    classifies("csr", NatBehavior::SYMMETRIC_RANDOM);
}

#[test]
fn classifies_symmetric_sequential() {
    classifies("css", NatBehavior::SYMMETRIC_SEQUENTIAL);
}

#[test]
fn public_host_is_public() {
    let mesh = Mesh::new("pub");
    let c = mesh.std.lab.public_host("c", &[Ipv4Addr::new(198, 51, 100, 6)]);
    let report = c.introducer_nat(&["--bootstrap", &mesh.std.bootstrap()]);
    assert_eq!(report["nat_type"], NatType::Public.as_str(), "{report}");
    assert_eq!(report["public_addr"].as_str().unwrap().split(':').next(), Some("198.51.100.6"));
}

#[test]
fn ping_public_to_easy() {
    let mesh = Mesh::new("pe");
    let (_, host) = mesh.std.natted_host("p", NatBehavior::PORT_RESTRICTED);
    let peer = mesh.peer(&host);
    let c = mesh.std.lab.public_host("c", &[Ipv4Addr::new(198, 51, 100, 7)]);
    let connected = mesh.ping(&c, &peer);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("direct"), Some("direct")));
}

#[test]
fn ping_easy_to_easy_port_restricted_both_sides() {
    let mesh = Mesh::new("ee");
    let (nat1, h1) = mesh.std.natted_host("p1", NatBehavior::PORT_RESTRICTED);
    let (_, h2) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let peer = mesh.peer(&h1);
    let mut connect_ms = vec![];
    for _ in 0..5 {
        let connected = mesh.ping(&h2, &peer);
        assert_eq!(connected["path"], "direct");
        assert_eq!(connected["strategy"], "simultaneous-open");
        let remote: std::net::SocketAddr = connected["remote"].as_str().unwrap().parse().unwrap();
        assert_eq!(remote.ip(), nat1.wan_ip(), "the peer is reached at its NAT's public address");
        connect_ms.push(connected["connect_ms"].as_f64().unwrap());
    }
    connect_ms.sort_by(f64::total_cmp);
    println!("easy x easy connect_ms over {} runs: median {} (all {connect_ms:?})", connect_ms.len(), connect_ms[2]);
}

#[test]
fn ping_easy_to_full_cone() {
    let mesh = Mesh::new("efc");
    let (_, h1) = mesh.std.natted_host("p1", NatBehavior::FULL_CONE);
    let (_, h2) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let peer = mesh.peer(&h1);
    let connected = mesh.ping(&h2, &peer);
    assert_eq!(
        (connected["path"].as_str(), connected["strategy"].as_str()),
        (Some("direct"), Some("simultaneous-open"))
    );
}

#[test]
fn ping_same_nat_without_hairpin_goes_local() {
    let mesh = Mesh::new("sn");
    let nat = mesh.std.nat("shared", NatBehavior::PORT_RESTRICTED.with_hairpin(false));
    let (h1, h2) = (mesh.std.host_behind(&nat, "p1"), mesh.std.host_behind(&nat, "p2"));
    let peer = mesh.peer(&h1);
    let connected = mesh.ping(&h2, &peer);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("local"), Some("local")));
    assert_eq!(connected["remote"].as_str().unwrap(), format!("{}:{PORT}", h1.ip()));
}

/// Easy × hard (random ports): the hard side opens its pool of 256 mappings, the easy side
/// sprays random ports of its IP; the birthday paradox finds one. Both directions.
#[test]
fn birthday_punch_reaches_a_hard_nat() {
    let mesh = Mesh::new("bd");
    let (hard_nat, hard) = mesh.std.natted_host("p1", NatBehavior::SYMMETRIC_RANDOM);
    let (_, easy) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let hard_peer = mesh.peer(&hard);
    let mut sprays = vec![];
    for _ in 0..3 {
        let connected = mesh.ping(&easy, &hard_peer);
        assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("direct"), Some("birthday")));
        let remote: std::net::SocketAddr = connected["remote"].as_str().unwrap().parse().unwrap();
        assert_eq!(remote.ip(), hard_nat.wan_ip());
        sprays.push((connected["connect_ms"].as_f64().unwrap(), connected["probes"].as_u64().unwrap()));
    }
    println!("easy asks hard, birthday (connect_ms, probes): {sprays:?}");
    // The hard side asking works as well.
    let easy_peer = mesh.peer(&easy);
    let connected = mesh.ping(&hard, &easy_peer);
    assert_eq!(connected["strategy"], "birthday");
}

/// Easy × sequential hard: the hard NAT hands out ports in order, so its pool sits just past
/// the port the introducer saw; the easy side's first guesses land in it.
#[test]
fn sequential_ports_are_predicted() {
    let mesh = Mesh::new("pr");
    let (_, hard) = mesh.std.natted_host("p1", NatBehavior::SYMMETRIC_SEQUENTIAL);
    let (_, easy) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let hard_peer = mesh.peer(&hard);
    let connected = mesh.ping(&easy, &hard_peer);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("direct"), Some("predict")));
    let probes = connected["probes"].as_u64().unwrap();
    assert!(probes <= 60, "predicted, not sprayed at random: {probes} probes");
    println!("easy asks sequential hard: {connected}");
}

/// Opens `flows` new mappings on the NAT in front of `host`: one datagram to each of as
/// many ports of public node B, as a busy LAN does.
fn take_ports(host: &Host, flows: u16) {
    let socket = host.udp_socket((Ipv4Addr::UNSPECIFIED, 0));
    for port in 0..flows {
        socket.send_to(b"x", (B_IP, 10_000 + port)).expect("send");
    }
}

/// UDP sockets the process `pid` holds open (from /proc: sockets are fds to `socket:[…]`).
fn open_sockets(pid: u32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the node runs");
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Behind a hard NAT the node binds its birthday pool (256 sockets) and closes it when no
/// punch used it for `--pool-idle`; a later punch binds it again and connects by birthday.
#[test]
fn the_birthday_pool_closes_when_idle_and_opens_for_a_punch() {
    let mesh = Mesh::new("pi");
    let (_, hard) = mesh.std.natted_host("p1", NatBehavior::SYMMETRIC_RANDOM);
    let (_, easy) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let hard_peer = mesh.peer_with(&hard, &["--pool-idle", "2"]);
    let pid = hard_peer.0.pid();
    assert!(open_sockets(pid) > 256, "the pool is open once probing found the NAT hard");
    // Nothing announces the close: watch the process's file descriptors.
    let closed = |n: usize| n < 64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !closed(open_sockets(pid)) {
        assert!(std::time::Instant::now() < deadline, "pool still open: {} sockets", open_sockets(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let connected = mesh.ping(&easy, &hard_peer);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("direct"), Some("birthday")));
    assert!(open_sockets(pid) > 256, "bound again for the punch");
}

/// Two sequential NATs whose counters moved since their peers registered (others behind
/// them took 600 and 200 ports): each side shows the introducer a new mapping, and from
/// there both walk each other's next ports and meet directly.
#[test]
fn two_sequential_nats_predict_each_other() {
    let mesh = Mesh::new("ss");
    let (target_nat, target) = mesh.std.natted_host("p1", NatBehavior::SYMMETRIC_SEQUENTIAL);
    let (pinger_nat, pinger) = mesh.std.natted_host("p2", NatBehavior::SYMMETRIC_SEQUENTIAL);
    let target_peer = mesh.peer(&target);
    take_ports(&mesh.std.lab.host_behind(&target_nat, "busy1"), 600);
    take_ports(&mesh.std.lab.host_behind(&pinger_nat, "busy2"), 200);
    let connected = mesh.ping(&pinger, &target_peer);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("direct"), Some("predict")));
    let probes = connected["probes"].as_u64().unwrap();
    assert!(probes <= 200, "the walk started near the counters: {probes} probes");
    println!("sequential x sequential: {connected}");
}

/// Two hard NATs that are not both sequential cannot be punched: the introducer relays.
#[test]
fn two_hard_nats_connect_through_the_relay() {
    let mesh = Mesh::new("hd");
    let (_, hard1) = mesh.std.natted_host("p1", NatBehavior::SYMMETRIC_RANDOM);
    let (_, hard2) = mesh.std.natted_host("p2", NatBehavior::SYMMETRIC_SEQUENTIAL);
    let peer = mesh.peer(&hard1);
    let connected = mesh.ping(&hard2, &peer);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("relayed"), Some("relay")));
    assert_eq!(connected["remote"], format!("{A_IP}:{PORT}"), "the introducer relays");
    println!("hard x hard: {connected}");
}

/// A peer (run with `args`) behind a NAT that forgets idle mappings after 3 s: outliving
/// that several times over, its mapping toward the introducer stays alive — only keepalives
/// inside the lifetime keep it — and a late ping gets through. `check` sees the running
/// peer first.
fn stays_reachable_behind_a_3_s_nat(name: &str, args: &[&str], check: impl FnOnce(&mut LabChild)) {
    let mesh = Mesh::new(name);
    let lifetime = Duration::from_secs(3);
    let (nat, h1) = mesh.std.natted_host("p1", NatBehavior::PORT_RESTRICTED.with_mapping_lifetime(lifetime));
    let (_, h2) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let mut peer = mesh.peer_with(&h1, args);
    check(&mut peer.0);
    std::thread::sleep(lifetime * 3);
    let table = nat.conntrack_table();
    assert!(table.contains("198.51.100.1"), "the mapping toward the introducer is alive:\n{table}");
    let connected = mesh.ping(&h2, &peer);
    assert_eq!(connected["path"], "direct");
}

/// `--keepalive 1`: fixed keepalives inside the lifetime.
#[test]
fn keepalives_hold_a_short_lived_nat_mapping() {
    stays_reachable_behind_a_3_s_nat("ka", &["--keepalive", "1"], |_| {});
}

/// No `--keepalive`: the node times its NAT's idle mappings (RFC 5780 lifetime discovery
/// against the introducer), says what it found, and refreshes within it.
#[test]
fn keepalive_adapts_to_the_mapping_lifetime_it_measures() {
    stays_reachable_behind_a_3_s_nat("kl", &[], |peer| {
        let found = peer.wait_json(|v| v["event"] == "mapping_lifetime", Duration::from_secs(30));
        assert_eq!((found["at_least_s"].as_f64(), found["below_s"].as_f64()), (Some(2.0), Some(4.0)), "{found}");
        assert_eq!(found["keepalive_s"].as_f64(), Some(1.5), "{found}");
    });
}

/// `conntrack -F` on a NAT that allocates random ports: the target is mapped anew, the
/// introducer sees it at another port, and the target registers again and punches again;
/// both sessions move to the new path and data flows once more.
#[test]
fn a_remapped_node_punches_again_and_data_flows() {
    use std::io::Write;
    let mesh = Mesh::new("rb");
    let (target_nat, target) = mesh.std.natted_host("p1", NatBehavior::EIM_RANDOM_PORT);
    let (_, h2) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let (mut target_node, target_id) = mesh.peer(&target);
    let bootstrap = mesh.std.bootstrap();
    let mut command = h2.introducer_command(&["connect", &target_id, "--bootstrap", &bootstrap, "--json"]);
    command.stdin(std::process::Stdio::piped());
    let mut connect = h2.spawn_command("connect", command);
    let connected = connect.wait_json(|v| v["event"] == "connected", WAIT);
    target_nat.flush_conntrack();
    let moved = connect.wait_json(|v| v["event"] == "moved", Duration::from_secs(45));
    assert_eq!(moved["path"], "direct", "{moved}");
    assert_ne!(moved["remote"], connected["remote"], "the target is reached at its new mapping");
    target_node.wait_json(|v| v["event"] == "moved", WAIT);
    writeln!(connect.stdin().expect("connect reads stdin"), "after the flush").unwrap();
    let data = target_node.wait_json(|v| v["event"] == "data", WAIT);
    assert_eq!(data["data"], "after the flush");
}

/// A node that sleeps (SIGSTOP) while the network changes under it — its NAT turns
/// symmetric and forgets every mapping — wakes, says so, classifies the NAT again and
/// registers its new record: a peer reaches it by birthday punch from then on.
#[test]
fn a_node_that_wakes_behind_another_nat_classifies_it_again() {
    let mesh = Mesh::new("wk");
    let (nat, h1) = mesh.std.natted_host("p1", NatBehavior::PORT_RESTRICTED);
    let (_, h2) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let mut sleeper = mesh.peer(&h1);
    sleeper.0.signal(libc::SIGSTOP);
    nat.set_behavior(NatBehavior::SYMMETRIC_RANDOM);
    // The suspend itself: its length is what the node must notice (ticks every 5 s, a
    // tick 10 s late is a wakeup).
    std::thread::sleep(Duration::from_secs(18));
    sleeper.0.signal(libc::SIGCONT);
    sleeper.0.wait_json(|v| v["event"] == "woke", WAIT);
    let again = sleeper.0.wait_json(|v| v["event"] == "nat", WAIT);
    assert_eq!(again["nat"]["nat_type"], "hard", "{again}");
    assert_eq!(
        again["nat"]["public_addr"].as_str().unwrap().split(':').next(),
        Some(nat.wan_ip().to_string().as_str())
    );
    // The new record goes out once the birthday pool is bound, a few ms after the event; a
    // ping launched in that window is introduced with the old one (and relayed).
    let mut strategies = vec![];
    for _ in 0..3 {
        let connected = mesh.ping(&h2, &sleeper);
        strategies.push(connected["strategy"].as_str().unwrap_or_default().to_owned());
        if connected["strategy"] == "birthday" {
            assert_eq!(connected["path"], "direct", "{connected}");
            break;
        }
    }
    println!("pings after the wakeup: {strategies:?}");
    assert_eq!(strategies.last().map(String::as_str), Some("birthday"), "{strategies:?}");
}

/// The host is given another address on its LAN (a new DHCP lease): the node notices
/// within its 5 s check, registers its new record, classifies the NAT again, and a peer
/// reaches it directly at its new mapping.
#[test]
fn a_node_whose_local_address_changes_registers_again_and_stays_reachable() {
    let mesh = Mesh::new("mv");
    let (nat, h1) = mesh.std.natted_host("p1", NatBehavior::PORT_RESTRICTED);
    let (_, h2) = mesh.std.natted_host("p2", NatBehavior::PORT_RESTRICTED);
    let mut mover = mesh.peer(&h1);
    let gateway = nat.lan_gateway().to_string();
    let g = nat.lan_gateway().octets();
    let new_ip = std::net::Ipv4Addr::new(g[0], g[1], g[2], 200);
    let (old, new) = (format!("{}/24", h1.ip()), format!("{new_ip}/24"));
    h1.run_ok("ip", ["addr", "del", &old, "dev", "eth0"]);
    h1.run_ok("ip", ["addr", "add", &new, "dev", "eth0"]);
    h1.run_ok("ip", ["route", "replace", "default", "via", &gateway]);
    let again = mover.0.wait_json(|v| v["event"] == "nat", WAIT);
    assert_eq!(again["nat"]["nat_type"], "easy", "{again}");
    let connected = mesh.ping(&h2, &mover);
    assert_eq!(connected["path"], "direct", "{connected}");
    assert_eq!(connected["remote"].as_str().unwrap().split(':').next(), Some(nat.wan_ip().to_string().as_str()));
}

/// `introducer run` with no flags is the first node of a new mesh on the default port (and
/// the next one, its STUN alternate port), and `--bootstrap HOST` (no port) finds it there.
#[test]
fn run_without_flags_starts_a_mesh_on_the_default_port() {
    let lab = Lab::new("dflt", INTRODUCER);
    let (a, b) = (lab.public_host("a", &[A_IP]), lab.public_host("b", &[B_IP]));
    let mut seed = a.introducer(&["run"]);
    let ready = seed.wait_json(|v| v["event"] == "ready", WAIT);
    assert_eq!(
        ready["listen"],
        serde_json::json!([format!("0.0.0.0:{PORT}"), format!("0.0.0.0:{}", PORT + 1)]),
        "{ready}"
    );
    assert_eq!(ready["public"], true);
    let mut peer = b.introducer(&["run", "--bootstrap", &A_IP.to_string()]);
    let registered = peer.wait_json(|v| v["event"] == "registered", WAIT);
    assert_eq!(registered["introducer"], format!("{A_IP}:{PORT}"));
    seed.wait_json(|v| v["event"] == "peer_registered", WAIT);
}
