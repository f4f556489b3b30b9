//! What a node reports, and its JSON form (the CLI contract's keys, exactly).

use introducer_actors::nat::NatReport;
use introducer_actors::punch::{Path, Strategy};
use libp2p_identity::PeerId;
use serde_json::{json, Value};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Sockets bound, NAT known (when it could be probed).
    Ready { peer_id: PeerId, listen: Vec<SocketAddr>, public: bool, nat: Option<NatReport> },
    /// An introducer accepted our registration (again, if our public address changed).
    Registered { introducer: SocketAddr, observed: SocketAddr },
    IntroducerUnreachable { introducer: SocketAddr },
    /// A peer is reachable over `remote`; `connect_ms` runs from the introduction request
    /// (or, for the introduced side, from the introduction) to its first authenticated packet.
    Connected { peer: PeerId, remote: SocketAddr, path: Path, strategy: Strategy, connect_ms: f64, probes: u32 },
    ConnectFailed { peer: PeerId, reason: String },
    Pong { peer: PeerId, seq: u64, rtt_ms: f64, path: Path },
    Data { peer: PeerId, payload: Vec<u8> },
    Disconnected { peer: PeerId, reason: String },
    /// Introducer role: a peer registered with us.
    PeerRegistered { peer: PeerId, addr: SocketAddr },
    /// Introducer role: we introduced two peers.
    Introduced { requester: PeerId, target: PeerId },
    /// Counters of what was received, sent and dropped.
    Stats(Value),
    /// The node cannot go on (no bootstrap node answered, probing failed).
    Fatal { message: String },
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
    })
}

impl NodeEvent {
    pub fn to_json(&self) -> Value {
        match self {
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
            NodeEvent::Connected { peer, remote, path, strategy, connect_ms, probes } => json!({
                "event": "connected", "peer_id": peer.to_string(), "path": path.as_str(), "remote": remote.to_string(),
                "strategy": strategy.as_str(), "connect_ms": round(*connect_ms), "probes": probes,
            }),
            NodeEvent::ConnectFailed { peer, reason } => json!({
                "event": "connect_failed", "peer_id": peer.to_string(), "reason": reason,
            }),
            NodeEvent::Pong { peer, seq, rtt_ms, path } => json!({
                "event": "pong", "peer_id": peer.to_string(), "seq": seq, "rtt_ms": round(*rtt_ms), "path": path.as_str(),
            }),
            NodeEvent::Data { peer, payload } => json!({
                "event": "data", "peer_id": peer.to_string(), "data": String::from_utf8_lossy(payload),
            }),
            NodeEvent::Disconnected { peer, reason } => json!({
                "event": "disconnected", "peer_id": peer.to_string(), "reason": reason,
            }),
            NodeEvent::PeerRegistered { peer, addr } => json!({
                "event": "peer_registered", "peer_id": peer.to_string(), "addr": addr.to_string(),
            }),
            NodeEvent::Introduced { requester, target } => json!({
                "event": "introduced", "requester": requester.to_string(), "target": target.to_string(),
            }),
            NodeEvent::Stats(stats) => json!({ "event": "stats", "stats": stats }),
            NodeEvent::Fatal { message } => json!({ "event": "error", "message": message }),
        }
    }
}

/// Milliseconds to three decimals: enough for loopback, readable for people.
fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
