//! The introducer node: the embeddable [`Node`] API, its configuration, and the pieces
//! the `introducer` binary is made of.
//!
//! A `Node` runs its actors (socket, NAT probing, broker, registration, punch, session,
//! first contact) on an actix system in a thread of its own, so any tokio program — or
//! none — can embed it: commands go in through [`Node`]'s methods, [`NodeEvent`]s come out.
//!
//! Everything a user needs is here: [`Node`] and its [`Config`], the [`Identity`] a node
//! is known by (its [`PeerId`]), the events with their [`Path`], [`Strategy`] and
//! [`NatReport`], and the typed errors ([`ConnectError`], [`FatalError`], [`NodeError`]).
//!
//! # Example
//!
//! Two peers and a seed in one process: the seed introduces them, they punch, ping and
//! talk (`node/examples/two_peers.rs`, run by this doc test and shown in the README):
//!
#![doc = concat!("```\n", include_str!("../examples/two_peers.rs"), "```")]

pub mod config;
pub mod core;
pub mod event;
pub mod identity;
pub mod members;
mod node;
pub mod store;
pub mod telemetry;

pub use config::{Config, Serve};
pub use event::{ConnectError, FatalError, MeshChange, NodeEvent, PeerState, Progress, Stats};
pub use identity::{DataDir, IdentityError};
pub use node::{Node, NodeError};

// The types a user of `Node` meets, re-exported so that one dependency is enough.
pub use introducer_actors::identity::Identity;
pub use introducer_actors::nat::{Allocation, Filtering, Mapping, NatReport, NatType};
pub use introducer_actors::punch::{Path, Strategy};
pub use libp2p_identity::PeerId;
