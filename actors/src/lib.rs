//! introducer's protocol logic and the actors that drive it.
//!
//! Every protocol decision lives in a state machine that does no I/O and reads no clock:
//! it is fed `(now, input)` and asked for output — datagrams to send ([`Transmit`]),
//! events, and its next deadline. The actix actor around each machine only moves bytes
//! and timers (the quinn-proto / str0m split). The same machines run on virtual time in
//! the simulator (the `introducer-sim` crate), which is what lets the NAT matrix run in
//! milliseconds, deterministically.

pub mod backoff;
pub mod broker;
pub mod bucket;
pub mod cookie;
pub mod driver;
pub mod identity;
pub mod mesh;
pub mod nat;
pub mod probe;
pub mod punch;
pub mod registration;
pub mod relay;
pub mod session;
pub mod socket;

use introducer_proto::{frame, pb};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The network an address is in, for limits that a host with many addresses must not
/// escape (identities and ports cost nothing, a network does): its /24, or /48 for IPv6.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => Ipv4Addr::from(u32::from(v4) & 0xffff_ff00).into(),
        IpAddr::V6(v6) => Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1)).into(),
    }
}
use std::time::Instant;

/// Which of a node's local UDP sockets a datagram leaves from or arrived on.
/// `PRIMARY` is the node's main socket; others are alternates (RFC 5780) or probe sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u16);

impl SocketId {
    pub const PRIMARY: SocketId = SocketId(0);
}

/// A datagram a state machine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub socket: SocketId,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// The sans-I/O contract shared by every protocol machine, and all that a driver — an
/// actix actor over real sockets, or the simulator over virtual ones — needs to know.
///
/// Drivers call `handle_*` with the current time, then drain `poll_transmit` and re-arm
/// a timer at `poll_timeout`. Machines never block and never look at a clock.
pub trait Machine {
    /// A datagram arrived on `socket` from `src`.
    fn handle_datagram(&mut self, now: Instant, socket: SocketId, src: SocketAddr, payload: &[u8]);
    /// The deadline from `poll_timeout` has passed (spurious calls must be harmless).
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When `handle_timeout` wants to be called next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// A socket the machine wants bound or closed; the driver answers a bind with
    /// [`Machine::handle_socket_event`].
    fn poll_socket_command(&mut self) -> Option<socket::Command> {
        None
    }
    fn handle_socket_event(&mut self, _now: Instant, _event: socket::Event) {}
}

impl Transmit {
    /// An introducer frame carrying one envelope message.
    pub fn envelope(socket: SocketId, dst: SocketAddr, kind: pb::envelope::Kind) -> Self {
        Transmit { socket, dst, payload: frame::encode_envelope(&pb::Envelope { kind: Some(kind) }) }
    }
}
