//! NAT probing: the client that classifies the NAT in front of a node ([`Probe`], RFC 5780 §4
//! style), and the STUN Binding responder every node runs ([`server::Responder`], RFC 8489
//! with the RFC 5780 attributes).
//!
//! Both are pure: [`Probe`] is a [`crate::Machine`] fed `(now, datagram)` and asked for
//! datagrams and deadlines; [`server::Responder::respond`] maps one request to at most one
//! response [`crate::Transmit`]. Neither does I/O or reads a clock.
//!
//! # What the probe sends, and in which order
//!
//! Servers are tried in order for *Test I* (a Binding request from the primary socket). The
//! first server that answers is "A"; its answer gives the public endpoint M1 and, from an
//! RFC 5780 server, OTHER-ADDRESS (the alternate IP *and* port; `Server::other` can supply it
//! in advance). Then, in one burst:
//!
//! 1. **Mapping** (primary socket): Binding to A's alternate IP with A's port, and to A's
//!    alternate IP with the alternate port (RFC 5780 tests II and III, sent together instead
//!    of one after the other: one RTT saved, one extra packet). Without an alternate IP, a
//!    second configured server with another IP stands in, and a one-IP server's alternate
//!    port (`Server::other` on its own IP) gives the two ports of one IP. Classification
//!    compares the mapped endpoints: same mapping towards two different IPs ⇒
//!    endpoint-independent; different mappings towards two ports of one IP ⇒
//!    address-and-port-dependent; different mappings towards different IPs but the same
//!    towards two ports of one IP ⇒ address-dependent; anything less conclusive ⇒ `None`,
//!    which counts as hard (`NatReport::nat_type`): different mappings towards two IPs
//!    without a port test, or one IP only (an address-dependent NAT keeps one mapping per
//!    IP, so one IP cannot prove endpoint-independence).
//! 2. **Filtering** (its own socket, `SocketId(1)`, which sends to A's primary address only,
//!    so no hole opened by another test can let an answer in): CHANGE-REQUEST ip+port and
//!    CHANGE-REQUEST port, both to A, in parallel. The ip+port answer arriving ⇒
//!    endpoint-independent; otherwise the port answer arriving ⇒ address-dependent; neither
//!    after every retransmission ⇒ address-and-port-dependent. An answer that does not come
//!    from the changed address, or an error, means the server did not honour the request:
//!    `None`. Without the extra socket the two requests go from the primary socket *before*
//!    the mapping tests (which would open holes), and the mapping tests wait for them.
//! 3. **Allocation** (`SocketId(2..)`): one Binding to A from each socket, each sent only
//!    after the previous one was answered or gave up, so the NAT allocates in our order.
//!    See [`classify::classify_allocation`] for the rule.
//!
//! Everything that creates a NAT mapping before the allocation samples is sent in the same
//! burst, before the first sample, so nothing of ours falls between two samples.
//!
//! # Timing
//!
//! Every request is retransmitted RFC 8489 style but briefly: `max_tries` transmissions
//! (default 3) waiting `rto`, `2·rto`, `4·rto` (default 100/200/400 ms), so "no answer" is
//! concluded 700 ms after the first transmission. Once Test I is answered on its first
//! transmission, `rto` becomes `max(config.rto, 2·RTT)`, so a far server is not mistaken for
//! a filtering NAT. The whole probe therefore takes about `RTT + 7·rto` behind a filtering
//! NAT, and `(1 + samples)·RTT` when every test is answered (Test I, then one sample per RTT).
//!
//! # Amplification
//!
//! Requests carry a PADDING attribute sized so that the *full* answer of a [`server`] (the
//! biggest it ever sends) is no larger than the request: probing never makes a server send
//! more than it received. A server that refuses PADDING with 420 gets the request again
//! without it. The responder's own bound is in [`server`].

pub mod actor;
pub mod classify;
pub mod lifetime;
pub mod server;

pub use classify::{classify_allocation, classify_mapping, LocalSockets, Probe, ProbeConfig, ProbeError, ProbeStats};
pub use lifetime::{Lifetime, LifetimeReport};
pub use server::{Layout, LayoutError, Responder};

use std::net::SocketAddr;

/// A STUN server to probe with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Server {
    /// Where Binding requests go (the server's primary address).
    pub addr: SocketAddr,
    /// Its RFC 5780 alternate address (other IP *and* other port), if known in advance.
    /// The OTHER-ADDRESS of its first answer takes precedence. An alternate with the same IP
    /// and another port is accepted too: a one-IP introducer node's alternate port, which
    /// it lists in its ServerInfo but cannot advertise in STUN (see [`server`]).
    pub other: Option<SocketAddr>,
}

impl Server {
    /// A server whose alternate address, if any, will be learned from its first answer.
    pub fn new(addr: SocketAddr) -> Self {
        Server { addr, other: None }
    }
}

impl From<SocketAddr> for Server {
    fn from(addr: SocketAddr) -> Self {
        Server::new(addr)
    }
}

/// IPv4-mapped IPv6 addresses (what a dual-stack socket reports for IPv4 peers) compare
/// equal to the IPv4 address they carry.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}
