//! The real-NAT lab of introducer.
//!
//! - [`nft`]: the nftables rulesets (and sysctls) that make a Linux router behave like a
//!   [`NatBehavior`](introducer_actors::nat::NatBehavior). Pure text, so any testbed can use
//!   it: the namespace lab below, and router containers through the `introducer-lab-nft`
//!   binary (`introducer-lab-nft --kind sym-seq --wan-ip 203.0.113.1 | nft -f -`).
//! - [`netns`]: the harness the node's integration tests run in: network namespaces, veths
//!   and bridges with those routers between real processes. Needs root.
//! - [`stun`]: a minimal STUN Binding client for looking at a mapping from inside.
//! - [`amplification`]: one datagram of every kind, for the amplification tables (the
//!   simulator's and the real-NAT one).

pub mod amplification;
pub mod netns;
pub mod nft;
pub mod stun;
