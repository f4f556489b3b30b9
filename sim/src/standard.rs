//! The standard topology every whole-node simulation starts from: an RFC 5780 introducer
//! (two IPs × two ports), optionally a second one-IP introducer (its port and the next),
//! and peers on the internet or behind NATs of their own, at fixed documentation
//! addresses. The simulator's NAT matrix, its replay test and the punch benchmarks all
//! build on it.

use super::node::SimNode;
use super::{HostId, Link, Place, Sim};
use introducer_actors::identity::Identity;
use introducer_actors::SocketId;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The RFC 5780 introducer's two addresses.
pub const INTRODUCER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const INTRODUCER_ALT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The second introducer's one IP.
pub const SECOND_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// Where introducers listen.
pub const PORT: u16 = 3478;
/// Where peers bind their primary socket.
pub const PEER_PORT: u16 = 5000;
/// Peer `i`'s address on the internet, and its NAT's public address.
pub const PUBLIC_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20)];
pub const NAT_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(203, 0, 113, 20)];

/// The introducers on a fresh simulation; peers are added with [`Standard::peer`].
pub struct Standard {
    pub sim: Sim,
    pub introducers: Vec<HostId>,
}

impl Standard {
    /// The RFC 5780 introducer (identity seed 100) and, with `second`, the one-IP
    /// introducer (seed 101), on an internet of `internet` links.
    pub fn new(seed: u64, internet: Link, second: bool) -> Standard {
        let mut sim = Sim::new(seed);
        sim.set_internet_link(internet);
        let first = SimNode::introducer(Identity::from_seed(100)).alternate_ip(INTRODUCER_ALT_IP).spawn(
            &mut sim,
            Place::Public(INTRODUCER_IP),
            PORT,
        );
        let mut introducers = vec![first];
        if second {
            introducers.push(SimNode::introducer(Identity::from_seed(101)).spawn(
                &mut sim,
                Place::Public(SECOND_IP),
                PORT,
            ));
        }
        Standard { sim, introducers }
    }

    /// Where the introducers listen: a peer's seeds.
    pub fn introducer_addrs(&self) -> Vec<SocketAddr> {
        self.introducers.iter().map(|&h| self.sim.local_addr(h, SocketId::PRIMARY)).collect()
    }

    /// A peer (identity seed `n`) that joins every introducer; spawn it where it belongs.
    pub fn peer(&self, n: u64) -> SimNode {
        SimNode::peer(Identity::from_seed(n), self.introducer_addrs())
    }

    /// Runs until every one of `peers` is registered with every introducer, for at most
    /// `limit`; whether they are.
    pub fn run_until_registered(&mut self, peers: &[HostId], limit: Duration) -> bool {
        let all = self.introducers.len();
        let registered = |s: &Sim| peers.iter().all(|&h| s.machine_ref::<SimNode>(h).registered().len() == all);
        self.sim.run_until_cond(limit, registered)
    }
}
