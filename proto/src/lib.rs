//! The introducer wire format.
//!
//! One UDP port carries both STUN and introducer frames; the first byte of a datagram
//! tells them apart ([`frame`]). Introducer frames carry a protobuf [`pb::Envelope`]
//! whose schema (`proto/introducer.proto`) is the single source of truth. STUN Binding
//! messages are handled by [`stun`], so standard STUN tools can talk to any node.

pub mod addr;
pub mod frame;
pub mod stun;

/// Types generated from `proto/introducer.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/introducer.v1.rs"));
}

pub use frame::{Frame, FrameError, MAX_DATAGRAM};
