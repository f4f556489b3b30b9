//! Two NATs in a row on real Linux NAT: a home router behind a carrier-grade NAT
//! ([`introducer_lab::netns::Lab::nat_behind`]). Probing sees one NAT, the pair's most
//! restrictive layer with the CGNAT's port allocation, which is what `NatBehavior::behind`
//! models; these tests hold the lab's nesting and that model to the real `introducer nat`,
//! and to coturn as a cross-check of the lab itself.

use introducer_actors::nat::NatBehavior;
use introducer_lab::netns::{Standard, PORT};
use introducer_lab::stun;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The `introducer` binary the lab runs.
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");

/// A host behind `home` behind `cgnat` is classified as `home.behind(cgnat)`, with the
/// CGNAT's address as its public one, by the introducer and by coturn.
fn classifies_double(name: &str, home: NatBehavior, cgnat: NatBehavior) {
    let std = Standard::new(name, INTRODUCER);
    let (_a, _b) = std.start_introducers();
    let coturn = std.lab.public_host("c", &[Ipv4Addr::new(198, 51, 100, 4), Ipv4Addr::new(198, 51, 100, 5)]);
    let _coturn = coturn.turnserver(PORT);
    let (outer, inner, host) = std.double_natted_host("h", home, cgnat);
    assert!(inner.wan_ip().is_private() && inner.public_ip() == outer.wan_ip(), "home router not on the CGNAT's LAN");

    let composite = home.behind(cgnat);
    let expected = composite.expected_report(SocketAddr::from((outer.wan_ip(), 0)));
    for (server, args) in
        [("introducer", ["--bootstrap", &std.bootstrap()]), ("coturn", ["--stun", "198.51.100.4:3478"])]
    {
        // Each probe starts from empty NATs, as the single-NAT classification tests do.
        outer.flush_conntrack();
        inner.flush_conntrack();
        let report = host.introducer_nat(&args);
        let field = |k: &str| report[k].as_str();
        let got = (field("mapping"), field("filtering"), field("allocation"), field("nat_type"));
        let want = (
            expected.mapping.map(|m| m.as_str()),
            expected.filtering.map(|f| f.as_str()),
            expected.allocation.map(|a| a.as_str()),
            Some(composite.nat_type().as_str()),
        );
        assert_eq!(got, want, "against {server}: {report}");
        let public: SocketAddr = report["public_addr"].as_str().unwrap().parse().unwrap();
        assert_eq!(public.ip(), outer.wan_ip(), "against {server}: {report}");
    }
}

#[test]
fn port_restricted_behind_eim_random_port_cgnat() {
    classifies_double("dbe", NatBehavior::PORT_RESTRICTED, NatBehavior::EIM_RANDOM_PORT);
}

#[test]
fn port_restricted_behind_symmetric_random_cgnat() {
    classifies_double("dbh", NatBehavior::PORT_RESTRICTED, NatBehavior::SYMMETRIC_RANDOM);
}

/// Pulling the home router's uplink cuts the host off; plugging it back restores the
/// default route via the CGNAT (a router behind a NAT routes via a gateway, not `dev wan`).
#[test]
fn home_router_uplink_can_be_cut_and_restored() {
    let std = Standard::new("dbl", INTRODUCER);
    let (_a, _b) = std.start_introducers();
    let (outer, inner, host) = std.double_natted_host("h", NatBehavior::PORT_RESTRICTED, NatBehavior::PORT_RESTRICTED);
    let a: SocketAddr = std.bootstrap().parse().unwrap();
    let reflexive = || {
        let sock = host.udp_socket(SocketAddr::from(([0, 0, 0, 0], 0)));
        stun::stun_binding(&sock, a, Duration::from_millis(500)).map(|m| *m.ip())
    };
    assert_eq!(reflexive(), Some(outer.wan_ip()));
    inner.router().set_link_up(false);
    assert_eq!(reflexive(), None, "answered with the home router's uplink down");
    inner.router().set_link_up(true);
    assert_eq!(reflexive(), Some(outer.wan_ip()));
}
