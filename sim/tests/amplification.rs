//! The amplification table: every kind of datagram, from a spoofed source, delivered to a
//! whole node (the introducer of the standard topology, and a peer registered with it),
//! and the bytes the node answers *to that source* with, against the bytes that came in.
//! Nothing may answer an address with more than it sent, except STUN (its answers are
//! capped at 76 bytes for IPv4 and rate-limited; see the README's "Wire").
//!
//! Two spoofed sources each: a stranger, and an address the node knows (for the
//! introducer, a registered peer's; for the peer, its introducer's). The first-order
//! answer is measured: what the node sends back at once. `-- --nocapture` prints the table.
//! The datagrams are the lab's list (`introducer_lab::amplification`), which the real-NAT
//! table (`node/tests/netns_amplification.rs`) sends too.

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::{Machine, SocketId};
use introducer_lab::amplification::{answer_cap, datagrams};
use introducer_node::NodeEvent;
use introducer_sim::node::SimNode;
use introducer_sim::standard::{Standard, NAT_IPS, PEER_PORT};
use introducer_sim::{Link, Place};
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn nothing_answers_a_spoofed_source_with_more_bytes_than_it_sent() {
    let mut standard = Standard::new(1, Link::INTERNET_DEFAULT, false);
    let introducer = standard.introducers[0];
    let introducer_addr = standard.introducer_addrs()[0];
    let peer = standard.peer(2);
    let victim = Identity::from_seed(2).peer_id();
    let nat = standard.sim.add_nat(NatBehavior::PORT_RESTRICTED, NAT_IPS[0], None);
    let peer = peer.spawn(&mut standard.sim, Place::Behind(nat), PEER_PORT);
    assert!(standard.run_until_registered(&[peer], Duration::from_secs(10)));
    let registered = standard.sim.machine_ref::<SimNode>(peer).events().iter().find_map(|(_, e)| match e {
        NodeEvent::Registered { observed, .. } => Some(*observed),
        _ => None,
    });
    let peer_public = registered.expect("registered");
    let stranger: SocketAddr = "192.0.2.99:40000".parse().unwrap();

    let mut rows = Vec::new();
    for (node, host, known) in [
        ("introducer", introducer, ("a registered peer", peer_public)),
        ("peer", peer, ("its introducer", introducer_addr)),
    ] {
        for (kind, datagram) in datagrams(&victim) {
            for (from, src) in [("a stranger", stranger), known] {
                let now = standard.sim.now();
                let machine = standard.sim.machine::<SimNode>(host);
                machine.handle_datagram(now, SocketId::PRIMARY, src, &datagram);
                let out: usize = std::iter::from_fn(|| machine.poll_transmit())
                    .filter(|t| t.dst == src)
                    .map(|t| t.payload.len())
                    .sum();
                rows.push((node, kind, from, datagram.len(), out));
            }
        }
    }
    println!("{:<11} {:<30} {:<18} {:>5} {:>5} {:>6}", "node", "datagram", "spoofed from", "in B", "out B", "ratio");
    for (node, kind, from, sent, out) in &rows {
        println!("{node:<11} {kind:<30} {from:<18} {sent:>5} {out:>5} {:>6.2}", *out as f64 / *sent as f64);
    }
    for (node, kind, from, sent, out) in rows {
        assert!(out <= answer_cap(kind, sent), "{node} answered {kind} from {from} with {out} B for {sent} B");
    }
}
