//! What a node reports, with typed reasons for what went wrong, and its JSON form (the
//! CLI contract's keys, exactly).

pub use crate::telemetry::stats::Stats;
use introducer_actors::nat::NatReport;
use introducer_actors::probe::ProbeError;
use introducer_actors::punch::{self, Path, Strategy, Unpunchable};
use introducer_actors::registration::IntroduceError;
use introducer_actors::session::{self, RelayError, SendError};
use introducer_bootstrap::BootstrapError;
use libp2p_identity::PeerId;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// How a connected peer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Heard from within the session's `inactive_after`.
    Active,
    /// Silent for longer: its path is being punched anew.
    Inactive,
    /// Silent past the idle timeout: the session is closed.
    Gone,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Active => "active",
            PeerState::Inactive => "inactive",
            PeerState::Gone => "gone",
        }
    }
}

/// What happened to a member of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshChange {
    Joined,
    Left,
    /// It did not answer a probe (ours or another member's): reported once per suspicion,
    /// which ends as `Left` or, if it answers again in time, `Alive`.
    Suspect,
    /// A suspect answered again.
    Alive,
}

impl MeshChange {
    pub fn as_str(self) -> &'static str {
        match self {
            MeshChange::Joined => "joined",
            MeshChange::Left => "left",
            MeshChange::Suspect => "suspect",
            MeshChange::Alive => "alive",
        }
    }
}

/// How far a connection the node makes has come: for whoever watches it wait (the CLI
/// shows it on stderr). Both sides see the punch; only the side that asked sees the
/// introduction asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The introduction is asked for: of `via`, or of the introducer we registered with
    /// that answers best.
    Introducing { via: Option<SocketAddr> },
    /// Introduced: punching by `strategy`, which the two NATs decided.
    Punching { strategy: Strategy, ours: NatReport, theirs: NatReport },
    /// Still punching: proofs sent so far (`sprayed` of them at guessed ports).
    Probes { sent: u32, sprayed: u32 },
    /// No direct path (yet, or at all: `why`): asking `relay` for a circuit.
    Relaying { relay: SocketAddr, why: String },
}

/// What a node reports to its user.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// NAT known (when it could be probed); `public` nodes serve as introducers.
    Ready {
        peer_id: PeerId,
        listen: Vec<SocketAddr>,
        public: bool,
        nat: Option<NatReport>,
    },
    /// An introducer accepted our registration (again, if our public address changed).
    Registered {
        introducer: SocketAddr,
        observed: SocketAddr,
    },
    IntroducerUnreachable {
        introducer: SocketAddr,
    },
    /// A peer is reachable over `remote`. `connect` runs from asking for the introduction
    /// (for the introduced side, from the introduction) to the first authenticated answer.
    Connected {
        peer: PeerId,
        remote: SocketAddr,
        path: Path,
        strategy: Strategy,
        connect: Duration,
        probes: u32,
    },
    ConnectFailed {
        peer: PeerId,
        error: ConnectError,
    },
    /// A connection under way took a step (see [`Progress`]).
    Progress {
        peer: PeerId,
        progress: Progress,
    },
    Pong {
        peer: PeerId,
        seq: u64,
        rtt: Duration,
        path: Path,
    },
    Data {
        peer: PeerId,
        payload: Vec<u8>,
    },
    /// A ping or datagram for `peer` could not be sent.
    NotSent {
        peer: PeerId,
        error: SendError,
    },
    Disconnected {
        peer: PeerId,
        reason: session::Closed,
    },
    /// Introducer role: a peer registered with us.
    PeerRegistered {
        peer: PeerId,
        addr: SocketAddr,
    },
    /// Introducer role: we introduced two peers.
    Introduced {
        requester: PeerId,
        target: PeerId,
    },
    /// Relay role: we carry a circuit between two peers.
    Relaying {
        peers: [PeerId; 2],
    },
    /// Someone is on a topic we joined (we connect to it, or it to us).
    TopicMember {
        peer: PeerId,
        topic: Vec<u8>,
    },
    /// A member of a topic we joined left it (or went silent).
    TopicLeft {
        peer: PeerId,
        topic: Vec<u8>,
    },
    /// The NAT was classified again (after a wakeup, a move, or our homes seeing us at
    /// another address): what it is now. The first classification is [`NodeEvent::Ready`].
    Nat {
        public: bool,
        nat: NatReport,
    },
    /// The node's tick came `late` after it was due: the machine slept. It registers and
    /// punches anew.
    Woke {
        late: Duration,
    },
    /// A connected peer became inactive, active again, or gone.
    PeerState {
        peer: PeerId,
        state: PeerState,
    },
    /// A public node joined or left the mesh this node is a member of, or is suspected of
    /// having gone (and perhaps answered again).
    Mesh {
        change: MeshChange,
        peer: PeerId,
    },
    /// Our NAT kept idle mappings `at_least` long, not `below`; `keepalive` is what
    /// registrations and sessions now use (`None`: left as configured).
    MappingLifetime {
        at_least: Option<Duration>,
        below: Option<Duration>,
        keepalive: Option<Duration>,
    },
    /// A session moved to a newly punched path: after our NAT mapped us anew (or the
    /// peer's did), or because the peer punched again.
    Moved {
        peer: PeerId,
        remote: SocketAddr,
        path: Path,
        strategy: Strategy,
    },
    /// A relayed peer became reachable directly: the session moved to the direct path.
    Upgraded {
        peer: PeerId,
        remote: SocketAddr,
        path: Path,
        strategy: Strategy,
    },
    /// Counters of what was received, sent and dropped, by every role.
    Stats(Box<Stats>),
    /// The node cannot go on.
    Fatal(FatalError),
}

/// Why a connection the user asked for was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("introducer {introducer} did not answer our registration")]
    IntroducerUnreachable { introducer: SocketAddr },
    #[error(transparent)]
    Introduce(IntroduceError),
    #[error(transparent)]
    Unpunchable(Unpunchable),
    #[error(transparent)]
    TimedOut(punch::TimedOut),
    #[error("no direct path, and the relay failed: {0}")]
    Relay(RelayError),
}

impl ConnectError {
    /// A short, stable word for scripts (`--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::IntroducerUnreachable { .. } => "introducer_unreachable",
            ConnectError::Introduce(IntroduceError::TargetNotRegistered { .. }) => "not_registered",
            ConnectError::Introduce(IntroduceError::NoAnswer { .. }) => "introducer_unreachable",
            ConnectError::Introduce(_) => "introduce_refused",
            ConnectError::Unpunchable(_) => "unpunchable",
            ConnectError::TimedOut(_) => "timed_out",
            ConnectError::Relay(RelayError::Refused(_)) => "relay_refused",
            ConnectError::Relay(_) => "relay_failed",
        }
    }
}

/// Why a node cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatalError {
    #[error(transparent)]
    Bootstrap(BootstrapError),
    /// Started without bootstrap nodes: none of the members kept in the store answered.
    #[error("cannot rejoin through the members kept in the data dir: {0}; pass --bootstrap ADDR to join through another node")]
    Rejoin(BootstrapError),
    /// Started without bootstrap nodes or stored members, and not allowed to serve.
    #[error("nobody to ask: no bootstrap node given and no members kept in the data dir (pass --bootstrap ADDR)")]
    NothingToJoin,
    #[error("NAT probing failed: {0}")]
    Probe(ProbeError),
}

impl FatalError {
    /// A short, stable word for scripts (`--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            FatalError::Bootstrap(e) | FatalError::Rejoin(e) => e.kind(),
            FatalError::NothingToJoin => "nothing_to_join",
            FatalError::Probe(_) => "probe_failed",
        }
    }
}

/// The JSON words of a NAT report, as `introducer nat` and the `ready` event print them.
pub fn nat_json(report: &NatReport) -> Value {
    json!({
        "nat_type": report.nat_type().as_str(),
        "mapping": report.mapping.map_or("unknown", |m| m.as_str()),
        "filtering": report.filtering.map_or("unknown", |f| f.as_str()),
        "allocation": report.allocation.map_or("unknown", |a| a.as_str()),
        "allocation_step": match report.allocation {
            Some(introducer_actors::nat::Allocation::Sequential { step }) => json!(step),
            _ => Value::Null,
        },
        "public_addr": report.public_addr.to_string(),
        // Nothing translates: the node is on its public address (though a firewall may
        // still filter, which `filtering` tells).
        "no_nat": report.no_nat,
    })
}

/// The JSON line of an event (the CLI contract's keys, exactly).
pub fn to_json(event: &NodeEvent) -> Value {
    match event {
        NodeEvent::Ready { peer_id, listen, public, nat } => json!({
            "event": "ready",
            "peer_id": peer_id.to_string(),
            "listen": listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "public": public,
            "nat": nat.as_ref().map_or(json!({}), nat_json),
        }),
        NodeEvent::Registered { introducer, observed } => json!({
            "event": "registered", "introducer": introducer.to_string(), "observed": observed.to_string(),
        }),
        NodeEvent::IntroducerUnreachable { introducer } => json!({
            "event": "introducer_unreachable", "introducer": introducer.to_string(),
        }),
        NodeEvent::Connected { peer, remote, path, strategy, connect, probes } => json!({
            "event": "connected", "peer_id": peer.to_string(), "path": path.as_str(), "remote": remote.to_string(),
            "strategy": strategy.as_str(), "connect_ms": millis(*connect), "probes": probes,
        }),
        NodeEvent::ConnectFailed { peer, error } => json!({
            "event": "connect_failed", "peer_id": peer.to_string(), "kind": error.kind(), "reason": error.to_string(),
        }),
        NodeEvent::Progress { peer, progress } => {
            let mut json = match progress {
                Progress::Introducing { via } => json!({ "step": "introducing", "via": via.map(|a| a.to_string()) }),
                Progress::Punching { strategy, ours, theirs } => json!({
                    "step": "punching", "strategy": strategy.as_str(), "nat": nat_json(ours), "peer_nat": nat_json(theirs),
                }),
                Progress::Probes { sent, sprayed } => json!({ "step": "probes", "sent": sent, "sprayed": sprayed }),
                Progress::Relaying { relay, why } => {
                    json!({ "step": "relaying", "relay": relay.to_string(), "why": why })
                }
            };
            json["event"] = json!("progress");
            json["peer_id"] = json!(peer.to_string());
            json
        }
        NodeEvent::NotSent { peer, error } => json!({
            "event": "not_sent", "peer_id": peer.to_string(), "reason": error.to_string(),
        }),
        NodeEvent::Pong { peer, seq, rtt, path } => json!({
            "event": "pong", "peer_id": peer.to_string(), "seq": seq, "rtt_ms": millis(*rtt), "path": path.as_str(),
        }),
        NodeEvent::Data { peer, payload } => json!({
            "event": "data", "peer_id": peer.to_string(), "data": String::from_utf8_lossy(payload),
        }),
        NodeEvent::Disconnected { peer, reason } => json!({
            "event": "disconnected", "peer_id": peer.to_string(), "reason": reason.to_string(),
        }),
        NodeEvent::PeerRegistered { peer, addr } => json!({
            "event": "peer_registered", "peer_id": peer.to_string(), "addr": addr.to_string(),
        }),
        NodeEvent::Introduced { requester, target } => json!({
            "event": "introduced", "requester": requester.to_string(), "target": target.to_string(),
        }),
        NodeEvent::Upgraded { peer, remote, path, strategy } => json!({
            "event": "upgraded", "peer_id": peer.to_string(), "path": path.as_str(), "remote": remote.to_string(),
            "strategy": strategy.as_str(),
        }),
        NodeEvent::Moved { peer, remote, path, strategy } => json!({
            "event": "moved", "peer_id": peer.to_string(), "path": path.as_str(), "remote": remote.to_string(),
            "strategy": strategy.as_str(),
        }),
        NodeEvent::Relaying { peers } => json!({
            "event": "relaying", "peers": [peers[0].to_string(), peers[1].to_string()],
        }),
        NodeEvent::TopicMember { peer, topic } => json!({
            "event": "member", "peer_id": peer.to_string(), "topic": String::from_utf8_lossy(topic),
        }),
        NodeEvent::TopicLeft { peer, topic } => json!({
            "event": "left", "peer_id": peer.to_string(), "topic": String::from_utf8_lossy(topic),
        }),
        NodeEvent::Nat { public, nat } => json!({ "event": "nat", "public": public, "nat": nat_json(nat) }),
        NodeEvent::Woke { late } => json!({ "event": "woke", "late_s": late.as_secs_f64() }),
        NodeEvent::PeerState { peer, state } => json!({
            "event": "peer", "peer_id": peer.to_string(), "state": state.as_str(),
        }),
        NodeEvent::Mesh { change, peer } => json!({
            "event": "mesh", "change": change.as_str(), "peer_id": peer.to_string(),
        }),
        NodeEvent::MappingLifetime { at_least, below, keepalive } => json!({
            "event": "mapping_lifetime",
            "at_least_s": at_least.map(|d| d.as_secs_f64()),
            "below_s": below.map(|d| d.as_secs_f64()),
            "keepalive_s": keepalive.map(|d| d.as_secs_f64()),
        }),
        NodeEvent::Stats(stats) => json!({ "event": "stats", "stats": stats }),
        NodeEvent::Fatal(error) => json!({ "event": "error", "kind": error.kind(), "message": error.to_string() }),
    }
}

/// Milliseconds to three decimals: enough for loopback, readable for people.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
