//! Node configuration: where to listen, whom to ask, and every protocol timing.

use crate::identity::DataDir;
use introducer_actors::identity::Identity;

// Each role's settings, by the name a `Config` field gives them.
pub use introducer_actors::broker::Config as BrokerConfig;
pub use introducer_actors::mesh::Config as MeshConfig;
pub use introducer_actors::punch::Config as PunchConfig;
pub use introducer_actors::registration::Config as RegistrationConfig;
pub use introducer_actors::relay::server::RelayConfig;
pub use introducer_actors::session::Config as SessionConfig;
pub use introducer_bootstrap::Config as BootstrapConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Whether the node serves as introducer and relay for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Once probing shows the node publicly reachable, or right away when it has nobody
    /// to ask (the first node of a new mesh).
    Auto,
    Never,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    /// Where the node keeps its store (`DIR/store`: the members it met, its NAT report
    /// per network, …), held for as long as the node runs. `None`: nothing is kept
    /// across restarts.
    pub data_dir: Option<DataDir>,
    /// Up to two addresses. One address with a fixed port P also gets P+1 if it is free,
    /// as the STUN alternate port: clients probing against one-IP nodes then see filtering
    /// and port-dependent mapping. Two addresses on different IPs (same port) make the node
    /// a full RFC 5780 STUN server: it also binds the next port on each. Empty: an
    /// ephemeral port on every interface.
    pub listen: Vec<SocketAddr>,
    /// The nodes to join through. None: the members kept in the store, if any (a restart
    /// rejoins the mesh it was in); else this node starts a new mesh.
    pub bootstrap: Vec<SocketAddr>,
    /// Standard STUN servers to probe with instead of the bootstrap nodes.
    pub stun: Vec<SocketAddr>,
    /// Register with the bootstrap nodes that introduce, so peers can reach us.
    pub register: bool,
    pub serve: Serve,
    /// Never punch: reach every peer through the introducer's relay.
    pub relay_only: bool,
    /// A punch not connected after this long also gets a relay circuit (and a later direct
    /// path takes the session over).
    pub relay_after: Duration,
    /// Keep mappings alive within the lifetime NAT probing measures; off when the user
    /// sets the keepalive.
    pub adapt_keepalive: bool,
    /// How often a `stats` event is emitted (`None`: never).
    pub stats_interval: Option<Duration>,
    /// A connect before probing ends is introduced with the NAT report stored for the
    /// network the node is on (easy or public ones) if it was measured within this long
    /// (default 7 days); probing goes on and its report replaces it.
    pub stored_nat_max_age: Duration,
    pub registration: RegistrationConfig,
    pub broker: BrokerConfig,
    pub punch: PunchConfig,
    pub session: SessionConfig,
    /// Limits of the relay this node runs when it serves.
    pub relay: RelayConfig,
    /// Membership of the public nodes (when this node serves).
    pub mesh: MeshConfig,
    pub bootstrap_timing: BootstrapConfig,
}

impl Config {
    pub fn new(identity: Identity) -> Self {
        Config {
            identity,
            data_dir: None,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            stun: Vec::new(),
            register: true,
            serve: Serve::Auto,
            relay_only: false,
            relay_after: Duration::from_secs(5),
            adapt_keepalive: true,
            stats_interval: None,
            stored_nat_max_age: Duration::from_secs(7 * 24 * 3600),
            registration: Default::default(),
            broker: Default::default(),
            punch: Default::default(),
            session: Default::default(),
            relay: Default::default(),
            mesh: Default::default(),
            bootstrap_timing: Default::default(),
        }
    }
}
