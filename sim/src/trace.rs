//! What the simulator counts and, optionally, records per datagram.

use super::{HostId, NatId};
use introducer_actors::SocketId;
use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

/// Network-wide datagram counts. Every datagram a host sends ends up in exactly one of
/// `delivered` or a `dropped_*` counter once it has arrived or been dropped, so
/// `sent == delivered + dropped()` when nothing is in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams hosts handed to the network.
    pub sent: u64,
    /// Datagrams handed to a machine.
    pub delivered: u64,
    /// Dropped by a lossy link.
    pub dropped_loss: u64,
    /// Dropped by a NAT's filtering: a mapping existed but the sender was not allowed.
    pub dropped_filtered: u64,
    /// Dropped by a NAT: no live mapping for the destination port.
    pub dropped_no_mapping: u64,
    /// Dropped by a NAT without hairpinning: sent from inside to its own public address.
    pub dropped_hairpin: u64,
    /// Dropped by a NAT that had no free external port left.
    pub dropped_ports_exhausted: u64,
    /// No host or NAT has the destination IP where the datagram was (for example a
    /// private address sent across the internet, or an IPv6 destination).
    pub dropped_no_route: u64,
    /// Reached the destination host, but nothing is bound to the destination port
    /// (a real host would answer with ICMP port unreachable; nothing is sent here).
    pub dropped_no_socket: u64,
    /// Reached a slow receiver whose socket buffer was full ([`Sim::set_receiver`]).
    ///
    /// [`Sim::set_receiver`]: super::Sim::set_receiver
    pub dropped_overflow: u64,
    /// Mappings created, summed over all NATs.
    pub mappings_created: u64,
    /// Mappings found expired, summed over all NATs (counted when the NAT notices: on a
    /// lookup or when it reuses the port).
    pub mappings_expired: u64,
}

impl Counters {
    /// All datagrams dropped, for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss
            + self.dropped_filtered
            + self.dropped_no_mapping
            + self.dropped_hairpin
            + self.dropped_ports_exhausted
            + self.dropped_no_route
            + self.dropped_no_socket
            + self.dropped_overflow
    }
}

/// Counts for one NAT box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Datagrams translated on the way out (hairpinned ones included).
    pub outbound: u64,
    /// Datagrams translated on the way in (hairpinned ones included).
    pub inbound: u64,
    /// Datagrams turned back inside at the public address.
    pub hairpinned: u64,
    pub dropped_filtered: u64,
    pub dropped_no_mapping: u64,
    pub dropped_hairpin: u64,
    pub dropped_ports_exhausted: u64,
    /// Lost on this NAT's inside network (its LAN link or the access link of a host on it).
    pub dropped_loss: u64,
    pub mappings_created: u64,
    pub mappings_expired: u64,
}

/// Counts for one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    pub sent: u64,
    pub received: u64,
}

/// What became of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Handed to `host`'s machine on `socket`, which saw it come from `src`.
    Delivered {
        host: HostId,
        socket: SocketId,
        src: SocketAddrV4,
    },
    Lost,
    Filtered(NatId),
    NoMapping(NatId),
    HairpinOff(NatId),
    PortsExhausted(NatId),
    NoRoute,
    NoSocket(HostId),
    /// A slow receiver's socket buffer was full.
    Overflow(HostId),
}

/// One datagram's journey, recorded when its fate is known (see [`Sim::enable_trace`]).
/// Times are offsets from the simulation's start, so traces of two runs compare equal
/// exactly when the runs were the same.
///
/// [`Sim::enable_trace`]: super::Sim::enable_trace
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// When the sending machine emitted it.
    pub sent: Duration,
    /// When it was delivered or dropped.
    pub at: Duration,
    pub from: HostId,
    /// The source and destination the sender used (before any translation).
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub len: usize,
    /// FNV-1a of the payload, for the printed trace.
    pub digest: u64,
    /// The bytes themselves: two traces are equal only if every datagram was.
    pub payload: Vec<u8>,
    pub fate: Fate,
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>11.3}ms {:>11.3}ms  {} {} -> {}  {} B #{:016x}  ",
            ms(self.sent),
            ms(self.at),
            self.from,
            self.src,
            self.dst,
            self.len,
            self.digest
        )?;
        match self.fate {
            Fate::Delivered { host, socket, src } => {
                write!(f, "delivered to {host} socket {} from {src}", socket.0)
            }
            Fate::Lost => write!(f, "lost"),
            Fate::Filtered(n) => write!(f, "filtered by {n}"),
            Fate::NoMapping(n) => write!(f, "no mapping at {n}"),
            Fate::HairpinOff(n) => write!(f, "hairpin off at {n}"),
            Fate::PortsExhausted(n) => write!(f, "no free port at {n}"),
            Fate::NoRoute => write!(f, "no route"),
            Fate::NoSocket(h) => write!(f, "port closed on {h}"),
            Fate::Overflow(h) => write!(f, "receive buffer full on {h}"),
        }
    }
}
