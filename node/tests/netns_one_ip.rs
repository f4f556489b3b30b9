//! Issue 9, "classification with any servers", on real NATs: public nodes with one IP each
//! (`introducer run --listen IP:3478`; none is an RFC 5780 server) are enough for
//! `introducer nat` to tell a symmetric NAT from a port-restricted cone, and a pair of the
//! two is punched by the birthday paradox instead of being relayed after 5 s. Such a node
//! answers STUN on the next port too, as the alternate port of a one-IP STUN server, and
//! runs without it when that port is taken.
//!
//! Needs root and scripts/install-deps.sh. Every test builds its own lab.

use introducer_actors::nat::NatBehavior;
use introducer_lab::netns::*;
use introducer_lab::stun::{stun_binding, stun_request, StunAnswer};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");
const WAIT: Duration = Duration::from_secs(20);
/// Two public nodes, one IP each.
const X_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const Y_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// A public host that only asks.
const C_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn at(ip: Ipv4Addr, port: u16) -> String {
    SocketAddr::from((ip, port)).to_string()
}

/// `introducer run --listen IP:3478` on a new public host with that one IP, started a mesh
/// of its own (so it serves at once: learning that a one-IP node is public is another
/// part of the issue); returns it once ready, after checking it listens on both ports.
fn one_ip_node(lab: &Lab, name: &str, ip: Ipv4Addr) -> (Host, LabChild) {
    let host = lab.public_host(name, &[ip]);
    let mut node = host.introducer(&["run", "--listen", &at(ip, PORT)]);
    let ready = node.wait_json(|v| v["event"] == "ready", WAIT);
    assert_eq!(ready["listen"], json!([at(ip, PORT), at(ip, PORT + 1)]), "{ready}");
    (host, node)
}

/// `introducer nat --json args…` on `host`, printed for the record.
fn nat(host: &Host, label: &str, args: &[&str]) -> Value {
    let report = host.introducer_nat(args);
    eprintln!("{label}: {report}");
    report
}

/// Asserts the report's type, mapping and filtering words and its public IP.
fn assert_words(report: &Value, nat_type: &str, mapping: &str, filtering: &str, nat_ip: Ipv4Addr) {
    let words = (&report["nat_type"], &report["mapping"], &report["filtering"]);
    assert_eq!(words, (&json!(nat_type), &json!(mapping), &json!(filtering)), "{report}");
    let public: SocketAddr = report["public_addr"].as_str().expect("public_addr").parse().unwrap();
    assert_eq!(public.ip(), nat_ip, "{report}");
}

/// Against two one-IP nodes, `introducer nat` behind a symmetric NAT says hard and behind a
/// port-restricted cone easy, with mapping, filtering and allocation all as configured:
/// each node's ServerInfo names its alternate port, so X's two ports tell port dependence
/// and Y's IP endpoint independence. With X alone, endpoint independence cannot be shown
/// (an address-dependent NAT keeps one mapping per IP): unknown, hence hard, never easy.
/// Through the same nodes as plain STUN servers (`--stun`, no alternate ports known), two
/// IPs still tell hard from easy.
#[test]
fn one_ip_nodes_tell_a_symmetric_nat_from_a_port_restricted_cone() {
    let lab = Lab::new("oneip-nat", INTRODUCER);
    let (_x, _xn) = one_ip_node(&lab, "x", X_IP);
    let (_y, _yn) = one_ip_node(&lab, "y", Y_IP);
    let (x, y) = (at(X_IP, PORT), at(Y_IP, PORT));
    for (name, behavior) in [("sym", NatBehavior::SYMMETRIC_RANDOM), ("prc", NatBehavior::PORT_RESTRICTED)] {
        let nat_box = lab.nat(&format!("{name}-nat"), behavior, lab.next_wan_ip());
        let host = lab.host_behind(&nat_box, name);
        let wan = nat_box.wan_ip();
        let hard = behavior.nat_type().as_str() == "hard";

        let both = nat(&host, &format!("{name} --bootstrap X --bootstrap Y"), &["--bootstrap", &x, "--bootstrap", &y]);
        assert_classified(&both, behavior, wan);

        nat_box.flush_conntrack();
        let alone = nat(&host, &format!("{name} --bootstrap X"), &["--bootstrap", &x]);
        let mapping = if hard { "address-and-port-dependent" } else { "unknown" };
        assert_words(&alone, "hard", mapping, "address-and-port-dependent", wan);

        nat_box.flush_conntrack();
        let plain = nat(&host, &format!("{name} --stun X --stun Y"), &["--stun", &x, "--stun", &y]);
        let (nat_type, mapping) = if hard { ("hard", "unknown") } else { ("easy", "endpoint-independent") };
        assert_words(&plain, nat_type, mapping, "unknown", wan);
    }
}

/// The symptom on real NATs: a peer behind a port-restricted cone and one behind a
/// symmetric NAT, homed at one-IP nodes, were relayed after 5 s (the symmetric side read
/// as easy, both sides tried a simultaneous open). Now the symmetric side opens its
/// birthday pool and the pair connects directly.
#[test]
fn a_birthday_pair_homed_at_one_ip_nodes_connects_directly() {
    let lab = Lab::new("oneip-ping", INTRODUCER);
    let (_x, _xn) = one_ip_node(&lab, "x", X_IP);
    let (_y, _yn) = one_ip_node(&lab, "y", Y_IP);
    let (x, y) = (at(X_IP, PORT), at(Y_IP, PORT));
    let seeds = ["--bootstrap", x.as_str(), "--bootstrap", y.as_str()];

    let easy_nat = lab.nat("prc-nat", NatBehavior::PORT_RESTRICTED, lab.next_wan_ip());
    let easy = lab.host_behind(&easy_nat, "prc");
    let mut target = easy.introducer(&[&["run"][..], &seeds].concat());
    let ready = target.wait_json(|v| v["event"] == "ready", WAIT);
    assert_eq!(ready["nat"]["nat_type"], "easy", "{ready}");
    target.wait_json(|v| v["event"] == "registered", WAIT);
    let target_id = ready["peer_id"].as_str().expect("peer_id").to_owned();

    let hard_nat = lab.nat("sym-nat", NatBehavior::SYMMETRIC_RANDOM, lab.next_wan_ip());
    let hard = lab.host_behind(&hard_nat, "sym");
    let args = [&["ping", target_id.as_str(), "--count", "2", "--interval", "0.2", "--timeout", "20"][..], &seeds];
    let mut ping = hard.spawn_command("ping", hard.introducer_command(&args.concat()));
    let connected = ping.wait_json(|v| v["event"] == "connected", WAIT);
    eprintln!("sym → prc: {connected}");
    assert_eq!((&connected["path"], &connected["strategy"]), (&json!("direct"), &json!("birthday")), "{connected}");
    assert!(connected["connect_ms"].as_f64().expect("connect_ms") < 5000.0, "before the relay fallback: {connected}");
    ping.wait_json(|v| v["event"] == "pong", WAIT);
    assert!(ping.wait_exit(WAIT).success(), "{}", ping.context());
}

/// What a one-IP node's STUN sockets answer to `request` from C.
fn ask(c: &Host, server: SocketAddr, change: (bool, bool)) -> StunAnswer {
    let sock = c.udp_socket(SocketAddr::from((C_IP, 0)));
    let mine = sock.local_addr().unwrap();
    // Loss-free lab, but a request may still race the node's start: a few tries.
    let answer = (0..5).find_map(|_| stun_request(&sock, server, change, Duration::from_millis(500)));
    let answer = answer.unwrap_or_else(|| panic!("{server} did not answer {change:?}"));
    if answer.error.is_none() {
        assert_eq!(answer.mapped.map(SocketAddr::V4), Some(mine), "{answer:?}");
    }
    answer
}

/// The alternate port is a real RFC 5780 one: a CHANGE-REQUEST for the other port is
/// answered from it (and back), a change of IP cannot be made (420), and no OTHER-ADDRESS
/// is advertised — so coturn's NAT discovery, pointed at the node, claims nothing rather
/// than taking the primary address for the "other" one. With the next port taken, the node
/// runs on its listen address alone.
#[test]
fn a_one_ip_node_answers_on_its_alternate_port() {
    let lab = Lab::new("oneip-alt", INTRODUCER);
    let (_x, _xn) = one_ip_node(&lab, "x", X_IP);
    let c = lab.public_host("c", &[C_IP]);
    let (primary, alternate) = (SocketAddr::from((X_IP, PORT)), SocketAddr::from((X_IP, PORT + 1)));
    let cases = [
        (primary, (false, true), alternate, None),
        (alternate, (false, true), primary, None),
        (alternate, (false, false), alternate, None),
        (primary, (true, false), primary, Some(420)),
        (primary, (true, true), primary, Some(420)),
    ];
    for (to, change, from, error) in cases {
        let answer = ask(&c, to, change);
        eprintln!("to {to} change {change:?}: {answer:?}");
        assert_eq!((answer.from, answer.error, answer.other), (from, error, None), "to {to} change {change:?}");
    }

    if find_tool("turnutils_natdiscovery").is_some() {
        let nat_box = lab.nat("sym-nat", NatBehavior::SYMMETRIC_RANDOM, lab.next_wan_ip());
        let host = lab.host_behind(&nat_box, "sym");
        let x = X_IP.to_string();
        let out = host.run_timeout("turnutils_natdiscovery", ["-m", "-f", x.as_str()], Duration::from_secs(30));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let said: Vec<&str> = text.lines().filter(|l| l.contains("Discovery") || l.contains("NAT")).collect();
        eprintln!("turnutils_natdiscovery -m -f X: {said:?}");
        assert!(!text.contains("RFC 5780 response") && !text.contains("NAT with"), "claims nothing:\n{text}");
    }

    // A public host whose next port is taken: the node warns and runs on one socket.
    let w_ip = Ipv4Addr::new(198, 51, 100, 7);
    let w = lab.public_host("w", &[w_ip]);
    let _taken = w.udp_socket(SocketAddrV4::new(w_ip, PORT + 1));
    let mut node = w.introducer(&["run", "--listen", &at(w_ip, PORT)]);
    let ready = node.wait_json(|v| v["event"] == "ready", WAIT);
    assert_eq!(ready["listen"], json!([at(w_ip, PORT)]), "{ready}");
    let sock = c.udp_socket(SocketAddr::from((C_IP, 0)));
    assert!(stun_binding(&sock, SocketAddr::from((w_ip, PORT)), WAIT).is_some(), "STUN still answered");
    let refused = ask(&c, SocketAddr::from((w_ip, PORT)), (false, true));
    assert_eq!((refused.from, refused.error), (SocketAddr::from((w_ip, PORT)), Some(420)), "{refused:?}");
    node.signal(libc::SIGINT);
    assert!(node.wait_exit(WAIT).success(), "{}", node.context());
    assert!(node.stderr_tail().contains("STUN alternate port"), "the warning:\n{}", node.stderr_tail());
}
