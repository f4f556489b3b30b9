//! The real-NAT lab of introducer.
//!
//! - [`nft`]: the nftables rulesets (and sysctls) that make a Linux router behave like a
//!   [`NatBehavior`](introducer_actors::nat::NatBehavior). Pure text, so any testbed can use
//!   it: router containers through the `introducer-lab-nft` binary
//!   (`introducer-lab-nft --kind sym-seq --wan-ip 203.0.113.1 | nft -f -`).

pub mod nft;
