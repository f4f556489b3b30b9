//! The introducer node: the embeddable [`Node`] API, its configuration, and the pieces
//! the `introducer` binary is made of.
//!
//! A `Node` runs its actors (socket, NAT probing, broker, registration, punch, session,
//! first contact) on an actix system in a thread of its own, so any tokio program — or
//! none — can embed it: commands go in through [`Node`]'s methods, [`NodeEvent`]s come out.

pub mod config;
pub mod core;
pub mod event;
pub mod identity;
pub mod members;
mod node;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use event::{ConnectError, FatalError, NodeEvent};
pub use node::{Node, NodeError};
