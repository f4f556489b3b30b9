//! What the CLI prints: one JSON object per line with `--json`, a readable line per event
//! otherwise — made from the JSON form, so the two never say different things.

use introducer_node::event::to_json;
use introducer_node::NodeEvent;
use serde_json::Value;

pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn line(&self, json: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{json}");
        } else {
            println!("{}", human());
        }
    }

    pub fn event(&self, event: &NodeEvent) {
        let json = to_json(event);
        self.line(json.clone(), || human(&json));
    }
}

/// The kind of NAT in one word for people: a host on its public address has none, whatever
/// its filtering (which planning counts as easy while it is unknown).
pub fn nat_kind(nat: &Value) -> &str {
    match (nat["no_nat"].as_bool(), nat["nat_type"].as_str().unwrap_or("unknown")) {
        (Some(true), _) | (_, "public") => "none/public",
        (_, other) => other,
    }
}

pub fn human_nat(nat: &Value) -> String {
    let step = nat["allocation_step"].as_i64().map_or(String::new(), |s| format!(" (step {s})"));
    let kind = nat_kind(nat);
    format!(
        "NAT: {kind}  public {}  mapping {}, filtering {}, allocation {}{step}",
        nat["public_addr"].as_str().unwrap_or("?"),
        nat["mapping"].as_str().unwrap_or("?"),
        nat["filtering"].as_str().unwrap_or("?"),
        nat["allocation"].as_str().unwrap_or("?"),
    )
}

/// "1 probe", "3 probes".
pub fn plural(n: u64, one: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        _ => format!("{n} {one}s"),
    }
}

fn secs(v: &Value) -> String {
    v.as_f64().map_or("?".into(), |s| format!("{s:.0} s"))
}

/// A readable line for an event, from its JSON form.
pub fn human(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match v["event"].as_str().unwrap_or("") {
        "ready" => {
            let nat = if v["nat"]["nat_type"].is_null() { "NAT: not probed".to_owned() } else { human_nat(&v["nat"]) };
            let listen: Vec<&str> = v["listen"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let role = match (v["public"].as_bool(), v["nat"]["no_nat"].as_bool()) {
                (Some(true), _) => "public: serves as introducer and relay",
                (_, Some(true)) => "not serving",
                _ => "behind NAT",
            };
            format!("ready: peer {}  listening on {}  ({role})\n{nat}", s("peer_id"), listen.join(", "))
        }
        "nat" => format!("NAT classified again: {}", human_nat(&v["nat"])),
        "registered" => format!("registered with {} (seen as {})", s("introducer"), s("observed")),
        "introducer_unreachable" => format!("introducer {} does not answer", s("introducer")),
        "connected" => format!(
            "connected to {} via {} path {} (strategy {}, {} ms, {})",
            s("peer_id"),
            s("path"),
            s("remote"),
            s("strategy"),
            v["connect_ms"],
            plural(v["probes"].as_u64().unwrap_or(0), "probe")
        ),
        "connect_failed" => format!("cannot reach {}: {}", s("peer_id"), s("reason")),
        "disconnected" => format!("{} disconnected: {}", s("peer_id"), s("reason")),
        "not_sent" => format!("not sent to {}: {}", s("peer_id"), s("reason")),
        "peer" => match s("state").as_str() {
            "inactive" => format!("{} is silent: punching its path anew", s("peer_id")),
            "active" => format!("{} answers again", s("peer_id")),
            _ => format!("{} is gone", s("peer_id")),
        },
        "moved" | "upgraded" => {
            format!("{} now via {} path {} ({})", s("peer_id"), s("path"), s("remote"), s("strategy"))
        }
        "pong" => format!("pong seq={} rtt={} ms ({})", v["seq"], v["rtt_ms"], s("path")),
        "data" => format!("{}: {}", s("peer_id"), s("data")),
        "member" => format!("{} is on {}", s("peer_id"), s("topic")),
        "left" => format!("{} left {}", s("peer_id"), s("topic")),
        "peer_registered" => format!("peer {} registered from {}", s("peer_id"), s("addr")),
        "introduced" => format!("introduced {} to {}", s("requester"), s("target")),
        "relaying" => {
            let peers: Vec<&str> = v["peers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!("relaying between {}", peers.join(" and "))
        }
        "mesh" => match s("change").as_str() {
            "joined" => format!("member {} joined the mesh", s("peer_id")),
            "left" => format!("member {} left the mesh", s("peer_id")),
            "suspect" => format!("member {} is suspect (did not answer a probe)", s("peer_id")),
            "alive" => format!("member {} answers again", s("peer_id")),
            _ => v.to_string(),
        },
        "woke" => format!("woke up {} late: registering and punching anew", secs(&v["late_s"])),
        "mapping_lifetime" => {
            let kept = match (v["at_least_s"].as_f64(), v["below_s"].as_f64()) {
                (Some(lo), Some(hi)) => format!("between {lo:.0} and {hi:.0} s"),
                (Some(lo), None) => format!("at least {lo:.0} s"),
                (None, Some(hi)) => format!("less than {hi:.0} s"),
                (None, None) => "an unknown time".into(),
            };
            let keepalive = match v["keepalive_s"].as_f64() {
                Some(k) => format!("keepalives every {k:.0} s"),
                None => "keepalives as configured".into(),
            };
            format!("the NAT keeps idle mappings {kept}: {keepalive}")
        }
        "progress" => match s("step").as_str() {
            "introducing" => format!("{}: asking for an introduction", s("peer_id")),
            "punching" => format!("{}: punching ({})", s("peer_id"), s("strategy")),
            "probes" => format!("{}: {} sent", s("peer_id"), plural(v["sent"].as_u64().unwrap_or(0), "probe")),
            _ => format!("{}: asking relay {} for a circuit ({})", s("peer_id"), s("relay"), s("why")),
        },
        "stats" => human_stats(&v["stats"]),
        "error" => format!("error: {}", s("message")),
        _ => v.to_string(),
    }
}

/// `stats` in one line: the traffic, what the node did for others, and the drops that
/// matter most (the JSON form has every counter).
fn human_stats(stats: &Value) -> String {
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    let mut drops: Vec<(&str, u64)> = stats
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.contains("dropped") || *name == "relay_refused")
        .filter_map(|(name, v)| Some((name.as_str(), v.as_u64().filter(|&v| v > 0)?)))
        .collect();
    drops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: u64 = drops.iter().map(|d| d.1).sum();
    let mut line = format!("stats: {} datagrams in, {} out", n("received"), n("sent"));
    if n("broker_registered") + n("broker_introduced") > 0 {
        line += &format!(", {} registered, {} introduced", n("broker_registered"), n("broker_introduced"));
    }
    if n("relay_forwarded_packets") > 0 {
        line += &format!(
            ", relayed {} datagrams ({} bytes) on {} circuits",
            n("relay_forwarded_packets"),
            n("relay_forwarded_bytes"),
            n("relay_circuits_opened")
        );
    }
    if total > 0 {
        let top: Vec<String> = drops.iter().take(3).map(|(name, v)| format!("{name} {v}")).collect();
        line += &format!("; {total} dropped ({})", top.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use introducer_node::PeerId;

    /// A host on its public address has no NAT, whatever its filtering (unknown against
    /// one server IP): "none/public", not "easy".
    #[test]
    fn a_host_without_nat_reads_as_public() {
        let addr = "198.51.100.7:3478".parse().unwrap();
        let mut report = introducer_node::NatReport::public(addr);
        report.filtering = None;
        assert_eq!(report.nat_type(), introducer_node::NatType::Easy, "planned as easy, rightly");
        let line = human_nat(&introducer_node::event::nat_json(&report));
        assert!(line.starts_with("NAT: none/public  public 198.51.100.7:3478"), "{line}");
    }

    /// Every event the node emits has a line of its own: none falls back to JSON.
    #[test]
    fn every_event_reads_as_a_sentence() {
        use introducer_node::event::*;
        use std::time::Duration;
        let peer = PeerId::random();
        let addr = "192.0.2.1:3478".parse().unwrap();
        let mut stats = Stats::default();
        stats.socket.received = 120;
        stats.socket.sent = 80;
        stats.broker_dropped_bad_mac = 7;
        stats.relay_dropped_rate_limited = 2;
        let events = [
            NodeEvent::IntroducerUnreachable { introducer: addr },
            NodeEvent::Disconnected { peer, reason: introducer_actors::session::Closed::ByPeer },
            NodeEvent::Relaying { peers: [peer, PeerId::random()] },
            NodeEvent::MappingLifetime {
                at_least: Some(Duration::from_secs(30)),
                below: Some(Duration::from_secs(60)),
                keepalive: Some(Duration::from_secs(20)),
            },
            NodeEvent::Woke { late: Duration::from_secs(300) },
            NodeEvent::PeerState { peer, state: PeerState::Inactive },
            NodeEvent::Mesh { change: MeshChange::Suspect, peer },
            NodeEvent::TopicMember { peer, topic: b"chat".to_vec() },
            NodeEvent::ConnectFailed { peer, error: ConnectError::IntroducerUnreachable { introducer: addr } },
            NodeEvent::NotSent { peer, error: introducer_actors::session::SendError::Closed },
            NodeEvent::Stats(Box::new(stats.clone())),
        ];
        for event in events {
            let line = human(&to_json(&event));
            assert!(!line.contains('{') && !line.is_empty(), "{event:?} reads as {line}");
        }
        let line = human(&to_json(&NodeEvent::Stats(Box::new(stats))));
        assert_eq!(
            line,
            "stats: 120 datagrams in, 80 out; 9 dropped (broker_dropped_bad_mac 7, relay_dropped_rate_limited 2)"
        );
        assert!(line.len() < 200);
    }
}
