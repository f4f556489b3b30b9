//! Proves the real-NAT lab right, with coturn as the independent referee: a `turnserver`
//! RFC 5780 STUN server on public host A and `turnutils_natdiscovery` behind each NAT must
//! report exactly the mapping and filtering that the lab configured from `NatBehavior`.
//! Plain std UDP sockets inside the namespaces check what coturn cannot see: sequential
//! port allocation shared by hosts, hairpinning, mapping lifetimes, early inbound packets.
//!
//! Needs root and scripts/install-deps.sh. Every test builds its own lab, so they run in
//! parallel; the lab deletes its namespaces even when a test fails.

use introducer_actors::nat::{Allocation, Filtering, Mapping, NatBehavior};
use introducer_lab::netns::*;
use introducer_lab::stun::stun_binding;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

/// The `introducer` binary the lab runs.
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");

/// What `turnutils_natdiscovery` concluded.
#[derive(Debug)]
struct Discovery {
    mapping: Option<Mapping>,
    filtering: Option<Filtering>,
    hairpin: Option<bool>,
    /// (reflexive, local) address pairs in the order the responses came.
    responses: Vec<(SocketAddrV4, SocketAddrV4)>,
    output: String,
}

fn parse_addr(line: &str) -> Option<SocketAddrV4> {
    line.rsplit(' ').next()?.trim().parse().ok()
}

fn parse_natdiscovery(output: &str) -> Discovery {
    let mapping = if output.contains("NAT with Endpoint Independent Mapping!")
        || output.contains("No NAT! (Endpoint Independent Mapping)")
    {
        Some(Mapping::EndpointIndependent)
    } else if output.contains("NAT with Address Dependent Mapping!") {
        Some(Mapping::AddressDependent)
    } else if output.contains("NAT with Address and Port Dependent Mapping!") {
        Some(Mapping::AddressAndPortDependent)
    } else {
        None
    };
    let filtering = if output.contains("NAT with Endpoint Independent Filtering!") {
        Some(Filtering::EndpointIndependent)
    } else if output.contains("NAT with Address Dependent Filtering!") {
        Some(Filtering::AddressDependent)
    } else if output.contains("NAT with Address and Port Dependent Filtering!") {
        Some(Filtering::AddressAndPortDependent)
    } else {
        None
    };
    let hairpin =
        output.contains("-= Hairpinning Behavior Discovery =-").then(|| output.contains("successful hairpinning"));
    let mut responses = Vec::new();
    let mut reflexive = None;
    for line in output.lines() {
        if line.contains("UDP reflexive addr:") {
            reflexive = parse_addr(line);
        } else if line.contains("Local addr:") {
            if let (Some(r), Some(l)) = (reflexive.take(), parse_addr(line)) {
                responses.push((r, l));
            }
        }
    }
    Discovery { mapping, filtering, hairpin, responses, output: output.to_string() }
}

/// Runs `turnutils_natdiscovery FLAGS 198.51.100.1` on `host`.
fn natdiscovery(host: &Host, flags: &[&str]) -> Discovery {
    natdiscovery_against(host, flags, A_IP)
}

/// Runs `turnutils_natdiscovery FLAGS SERVER` on `host`.
fn natdiscovery_against(host: &Host, flags: &[&str], server: Ipv4Addr) -> Discovery {
    let server = server.to_string();
    let args: Vec<&str> = flags.iter().copied().chain([server.as_str()]).collect();
    let out = host.run_timeout("turnutils_natdiscovery", &args, Duration::from_secs(30));
    assert!(out.status.success(), "natdiscovery failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    parse_natdiscovery(&String::from_utf8_lossy(&out.stdout))
}

/// Builds A (running turnserver) and one host behind a NAT with `behavior`; asserts that
/// coturn sees the configured mapping and filtering and the allocation's port pattern.
fn coturn_agrees(name: &str, behavior: NatBehavior) {
    let s = Standard::new(name, INTRODUCER);
    let _stun = s.a.turnserver(PORT);
    let (nat, host) = s.natted_host("h", behavior);
    let d = natdiscovery(&host, &["-m", "-f"]);
    let why =
        || format!("\n{}\n--- rules ---\n{}\n--- conntrack ---\n{}", d.output, nat.ruleset(), nat.conntrack_table());
    eprintln!(
        "{name}: coturn says mapping {:?}, filtering {:?}, (reflexive, local) {:?}",
        d.mapping, d.filtering, d.responses
    );
    assert_eq!(d.mapping, Some(behavior.mapping), "mapping{}", why());
    assert_eq!(d.filtering, Some(behavior.filtering), "filtering{}", why());
    assert!(d.responses.len() >= 3, "too few responses{}", why());
    assert!(d.responses.iter().all(|(r, _)| *r.ip() == nat.wan_ip()), "reflexive addresses not on the WAN{}", why());
    let ports: Vec<u16> = d.responses.iter().map(|(r, _)| r.port()).collect();
    match behavior.allocation {
        Allocation::Preserving => {
            assert!(d.responses.iter().all(|(r, l)| r.port() == l.port()), "ports not preserved{}", why())
        }
        Allocation::Random => {
            assert!(d.responses.iter().all(|(r, l)| r.port() != l.port()), "ports preserved{}", why());
            assert!(ports.windows(2).any(|w| w[1] != w[0].wrapping_add(1)), "ports look sequential{}", why());
        }
        Allocation::Sequential { step } => assert!(
            ports.windows(2).all(|w| w[1] as i32 - w[0] as i32 == step),
            "ports not sequential with step {step}{}",
            why()
        ),
    }
}

/// coturn's own NAT discovery client, pointed once at coturn and once at an introducer
/// node on two IPs, must classify the same NAT the same way: the node is a faithful
/// RFC 5780 server.
fn introducer_serves_stun_like_coturn(name: &str, behavior: NatBehavior) {
    let s = Standard::new(name, INTRODUCER);
    let args = Standard::a_listen_args();
    let mut node = s.a.introducer(&["run", &args[0], &args[1], &args[2], &args[3]]);
    node.wait_json(|v| v["event"] == "ready", Duration::from_secs(10));
    let coturn_ips = [Ipv4Addr::new(198, 51, 100, 4), Ipv4Addr::new(198, 51, 100, 5)];
    let _coturn = s.lab.public_host("c", &coturn_ips).turnserver(PORT);
    let (nat, host) = s.natted_host("h", behavior);
    let against_node = natdiscovery_against(&host, &["-m", "-f"], A_IP);
    nat.flush_conntrack();
    let against_coturn = natdiscovery_against(&host, &["-m", "-f"], coturn_ips[0]);
    let why = || format!("\n--- node ---\n{}\n--- coturn ---\n{}", against_node.output, against_coturn.output);
    assert_eq!(against_node.mapping, Some(behavior.mapping), "{}", why());
    assert_eq!(against_node.filtering, Some(behavior.filtering), "{}", why());
    assert_eq!(
        (against_node.mapping, against_node.filtering),
        (against_coturn.mapping, against_coturn.filtering),
        "{}",
        why()
    );
}

#[test]
fn introducer_serves_stun_like_coturn_port_restricted() {
    introducer_serves_stun_like_coturn("ipr", NatBehavior::PORT_RESTRICTED);
}

#[test]
fn introducer_serves_stun_like_coturn_full_cone() {
    introducer_serves_stun_like_coturn("ifc", NatBehavior::FULL_CONE);
}

#[test]
fn introducer_serves_stun_like_coturn_restricted_cone() {
    introducer_serves_stun_like_coturn("irc", NatBehavior::RESTRICTED_CONE);
}

#[test]
fn introducer_serves_stun_like_coturn_symmetric() {
    introducer_serves_stun_like_coturn("isr", NatBehavior::SYMMETRIC_RANDOM);
}

#[test]
fn port_restricted_is_what_coturn_sees() {
    coturn_agrees("port-restricted", NatBehavior::PORT_RESTRICTED);
}

#[test]
fn full_cone_is_what_coturn_sees() {
    coturn_agrees("full-cone", NatBehavior::FULL_CONE);
}

#[test]
fn restricted_cone_is_what_coturn_sees() {
    coturn_agrees("restricted-cone", NatBehavior::RESTRICTED_CONE);
}

#[test]
fn eim_random_port_is_what_coturn_sees() {
    coturn_agrees("eim-random", NatBehavior::EIM_RANDOM_PORT);
}

#[test]
fn symmetric_random_is_what_coturn_sees() {
    coturn_agrees("sym-random", NatBehavior::SYMMETRIC_RANDOM);
}

#[test]
fn symmetric_sequential_is_what_coturn_sees() {
    coturn_agrees("sym-seq", NatBehavior::SYMMETRIC_SEQUENTIAL);
}

/// Behaviours beyond the presets that `NatBehavior` can express: coturn checks the mapping
/// (filtering is the presets' business; `-m` alone is fast).
#[test]
fn other_mappings_are_what_coturn_sees() {
    let s = Standard::new("other-mappings", INTRODUCER);
    let _stun = s.a.turnserver(PORT);
    let cases = [
        ("adm-random", NatBehavior { mapping: Mapping::AddressDependent, ..NatBehavior::SYMMETRIC_RANDOM }),
        ("adm-seq", NatBehavior { mapping: Mapping::AddressDependent, ..NatBehavior::SYMMETRIC_SEQUENTIAL }),
        ("eim-seq", NatBehavior { mapping: Mapping::EndpointIndependent, ..NatBehavior::SYMMETRIC_SEQUENTIAL }),
        (
            "apdm-seq-step2",
            NatBehavior { allocation: Allocation::Sequential { step: 2 }, ..NatBehavior::SYMMETRIC_SEQUENTIAL },
        ),
    ];
    for (name, behavior) in cases {
        let (nat, host) = s.natted_host(name, behavior);
        let d = natdiscovery(&host, &["-m"]);
        eprintln!("{name}: coturn says mapping {:?}, (reflexive, local) {:?}", d.mapping, d.responses);
        assert_eq!(d.mapping, Some(behavior.mapping), "{name}\n{}\n{}", d.output, nat.ruleset());
        if let Allocation::Sequential { step } = behavior.allocation {
            // Only new mappings take a port: the distinct ports, in order, are a sequence.
            let mut ports: Vec<i32> = d.responses.iter().map(|(r, _)| r.port() as i32).collect();
            ports.dedup();
            assert!(ports.windows(2).all(|w| w[1] - w[0] == step), "{name}: ports {ports:?}\n{}", d.output);
        }
    }
}

/// Sends `msg` from `from` to `to` and returns the source address `to` saw.
fn observed_source(from: &UdpSocket, to: &UdpSocket, msg: &[u8]) -> SocketAddr {
    let dest = to.local_addr().unwrap();
    from.send_to(msg, dest).unwrap();
    recv_from(to, Duration::from_secs(2)).unwrap_or_else(|| panic!("nothing arrived at {dest}")).1
}

fn recv_from(sock: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1500];
    sock.recv_from(&mut buf).ok().map(|(n, a)| (buf[..n].to_vec(), a))
}

/// Sequential allocation is one counter for the whole NAT: two hosts taking turns get
/// consecutive external ports.
#[test]
fn sequential_ports_are_consecutive_across_hosts() {
    let s = Standard::new("seq-shared", INTRODUCER);
    let nat = s.nat("nat", NatBehavior::SYMMETRIC_SEQUENTIAL);
    let h1 = s.host_behind(&nat, "h1");
    let h2 = s.host_behind(&nat, "h2");
    let s1 = h1.udp_socket(([0, 0, 0, 0], 0));
    let s2 = h2.udp_socket(([0, 0, 0, 0], 0));
    let peers: Vec<UdpSocket> = (0..3).map(|i| s.b.udp_socket((B_IP, 7000 + i))).collect();
    let mut seen = Vec::new();
    for peer in &peers {
        for sock in [&s1, &s2] {
            let src = observed_source(sock, peer, b"hello");
            assert_eq!(src.ip(), nat.wan_ip(), "source not the WAN address");
            seen.push(src.port());
        }
    }
    eprintln!("external ports in order: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "not consecutive: {seen:?}");
}

/// Hairpinning on: a host reaches its neighbour at the neighbour's public mapping and is
/// seen from its own public mapping (RFC 4787 REQ-9); coturn agrees. Off: nothing arrives.
#[test]
fn hairpin_follows_the_behavior() {
    let s = Standard::new("hairpin", INTRODUCER);
    let _stun = s.a.turnserver(PORT);
    let server = SocketAddr::from((A_IP, PORT));
    for hairpin in [true, false] {
        let nat = s.nat(&format!("nat-{hairpin}"), NatBehavior::PORT_RESTRICTED.with_hairpin(hairpin));
        let h1 = s.host_behind(&nat, &format!("h1-{hairpin}"));
        let h2 = s.host_behind(&nat, &format!("h2-{hairpin}"));
        let s1 = h1.udp_socket(([0, 0, 0, 0], 0));
        let s2 = h2.udp_socket(([0, 0, 0, 0], 0));
        let m1 = stun_binding(&s1, server, Duration::from_secs(2)).expect("h1 mapping");
        let m2 = stun_binding(&s2, server, Duration::from_secs(2)).expect("h2 mapping");
        s2.send_to(b"hi neighbour", m1).unwrap();
        let got = recv_from(&s1, Duration::from_millis(if hairpin { 2000 } else { 300 }));
        if hairpin {
            let (msg, from) = got.unwrap_or_else(|| panic!("hairpin: nothing arrived\n{}", nat.conntrack_table()));
            assert_eq!(msg, b"hi neighbour");
            assert_eq!(from, SocketAddr::V4(m2), "the receiver must see the sender's public mapping");
            s1.send_to(b"hi back", from).unwrap();
            let (msg, from) = recv_from(&s2, Duration::from_secs(2)).expect("hairpin reply");
            assert_eq!((msg.as_slice(), from), (&b"hi back"[..], SocketAddr::V4(m1)));
        } else {
            assert!(got.is_none(), "hairpin is off but {got:?} arrived");
        }
        let d = natdiscovery(&h1, &["-H"]);
        assert_eq!(d.hairpin, Some(hairpin), "coturn's hairpin verdict\n{}", d.output);
    }
}

/// The trap from the lab's docs: a peer's packet reaching the router before the inside host
/// has sent to that peer must neither get in (port-restricted) nor take the host's port.
#[test]
fn early_inbound_packets_do_not_move_the_mapping() {
    let s = Standard::new("early-inbound", INTRODUCER);
    let (nat, host) = s.natted_host("h", NatBehavior::PORT_RESTRICTED);
    let inside = host.udp_socket(([0, 0, 0, 0], 40000));
    let peer = s.b.udp_socket((B_IP, 7000));
    let public = SocketAddr::from((nat.wan_ip(), 40000));
    peer.send_to(b"too early", public).unwrap();
    peer.send_to(b"too early", public).unwrap();
    assert!(recv_from(&inside, Duration::from_millis(300)).is_none(), "unsolicited packet got through");
    let src = observed_source(&inside, &peer, b"punch");
    assert_eq!(src, public, "the mapping moved because of the early packets\n{}", nat.conntrack_table());
    peer.send_to(b"welcome", src).unwrap();
    let (msg, from) = recv_from(&inside, Duration::from_secs(2)).expect("reply after punching");
    assert_eq!((msg.as_slice(), from), (&b"welcome"[..], peer.local_addr().unwrap()));
}

/// `mapping_lifetime` is what the router remembers: kept while used, gone when idle longer.
#[test]
fn mapping_lifetime_is_enforced() {
    let s = Standard::new("lifetime", INTRODUCER);
    let behavior = NatBehavior::EIM_RANDOM_PORT.with_mapping_lifetime(Duration::from_secs(1));
    let (nat, host) = s.natted_host("h", behavior);
    let inside = host.udp_socket(([0, 0, 0, 0], 0));
    let peer = s.b.udp_socket((B_IP, 7000));
    let first = observed_source(&inside, &peer, b"1");
    for _ in 0..4 {
        // Traffic every 400 ms keeps a 1 s mapping alive.
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(observed_source(&inside, &peer, b"keepalive"), first, "mapping lost while in use");
    }
    std::thread::sleep(Duration::from_millis(2500)); // idle past the lifetime: that is the test
    let later = observed_source(&inside, &peer, b"2");
    assert_ne!(later, first, "mapping outlived its lifetime\n{}", nat.conntrack_table());
}

/// `set_link_up(false)` pulls the cable; `set_link_up(true)` restores the host as it was.
#[test]
fn link_down_cuts_a_host_off() {
    let s = Standard::new("link", INTRODUCER);
    let (_nat, host) = s.natted_host("h", NatBehavior::PORT_RESTRICTED);
    let peer = s.b.udp_socket((B_IP, 7000));
    let inside = host.udp_socket(([0, 0, 0, 0], 0));
    for cut in [&host, &s.b] {
        cut.set_link_up(false);
        let _ = inside.send_to(b"lost", peer.local_addr().unwrap());
        assert!(recv_from(&peer, Duration::from_millis(300)).is_none(), "{} is still connected", cut.name());
        cut.set_link_up(true);
        observed_source(&inside, &peer, b"back");
    }
}

fn lab_namespaces(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// A test that panics still leaves no namespace and no process behind.
#[test]
fn lab_cleans_up_after_a_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let s = Standard::new("cleanup", INTRODUCER);
        let (_nat, host) = s.natted_host("h", NatBehavior::PORT_RESTRICTED);
        let child = host.spawn("sleep", ["600"]);
        tx.send((s.lab.prefix().to_string(), child.pid())).unwrap();
        assert_eq!(lab_namespaces(s.lab.prefix()).len(), 5, "inet, a, b, nat, h expected");
        panic!("deliberate failure");
    });
    let (prefix, pid) = rx.recv().expect("the lab was built");
    let msg = result.expect_err("the closure panics");
    let msg = msg.downcast_ref::<String>().cloned().or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()));
    assert_eq!(msg.as_deref(), Some("deliberate failure"));
    assert!(lab_namespaces(&prefix).is_empty(), "left behind: {:?}", lab_namespaces(&prefix));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child {pid} still running");
}
