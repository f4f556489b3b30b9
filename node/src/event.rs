//! What a node reports, and its JSON form (the CLI contract's keys, exactly).

use introducer_actors::nat::NatReport;
use serde_json::{json, Value};
use std::time::Duration;

/// What a node reports: the coordinator's events, plus the driver's `Stats`.
pub use introducer_actors::coordinator::Event as NodeEvent;

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
        NodeEvent::ConnectFailed { peer, reason } => json!({
            "event": "connect_failed", "peer_id": peer.to_string(), "reason": reason,
        }),
        NodeEvent::Pong { peer, seq, rtt, path } => json!({
            "event": "pong", "peer_id": peer.to_string(), "seq": seq, "rtt_ms": millis(*rtt), "path": path.as_str(),
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
        NodeEvent::MappingLifetime { at_least, below, keepalive } => json!({
            "event": "mapping_lifetime",
            "at_least_s": at_least.map(|d| d.as_secs_f64()),
            "below_s": below.map(|d| d.as_secs_f64()),
            "keepalive_s": keepalive.map(|d| d.as_secs_f64()),
        }),
        NodeEvent::Stats(stats) => {
            let stats: serde_json::Map<String, Value> =
                stats.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            json!({ "event": "stats", "stats": stats })
        }
        NodeEvent::Fatal { message } => json!({ "event": "error", "message": message }),
    }
}

/// Milliseconds to three decimals: enough for loopback, readable for people.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
