//! The node's counters: one typed struct, shown by `stats` (its field names are the JSON
//! keys scripts read) and exported as OpenTelemetry counters named `introducer.<field>`.

use introducer_actors::{broker, relay::server as relay, socket};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What was received, sent and dropped (and why), by every role of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The socket's: received, sent, dropped (malformed, unrouted, overload, by the kernel).
    #[serde(flatten)]
    pub socket: socket::Stats,
    #[serde(flatten)]
    pub driver: Driver,
    pub broker_registered: u64,
    pub broker_refreshed: u64,
    pub broker_challenged: u64,
    pub broker_introduced: u64,
    pub broker_unknown_target: u64,
    pub broker_dropped_bad_signature: u64,
    pub broker_dropped_oversized: u64,
    pub broker_dropped_unregistered: u64,
    pub broker_dropped_rate_limited: u64,
    pub broker_dropped_not_serving: u64,
    pub broker_dropped_no_possession: u64,
    pub broker_dropped_bad_mac: u64,
    pub broker_dropped_host_full: u64,
    pub relay_challenged: u64,
    pub relay_circuits_opened: u64,
    pub relay_circuits_ready: u64,
    pub relay_circuits_closed: u64,
    pub relay_circuits_expired: u64,
    pub relay_forwarded_packets: u64,
    pub relay_forwarded_bytes: u64,
    pub relay_dropped_rate_limited: u64,
    pub relay_dropped_relay_busy: u64,
    pub relay_dropped_bad_signature: u64,
    pub relay_dropped_malformed: u64,
    pub relay_dropped_unknown_circuit: u64,
    pub relay_dropped_wrong_source: u64,
    pub relay_dropped_not_ready: u64,
    pub relay_dropped_not_serving: u64,
    pub relay_refused_not_introduced: u64,
    pub relay_refused_host_limit: u64,
    /// Circuits refused, whatever the reason.
    pub relay_refused: u64,
}

/// The counters the node's driver gathers from the other roles, and its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Driver {
    pub dropped_punch_unknown_nonce: u64,
    pub dropped_session_unknown_source: u64,
    pub dropped_data_forged: u64,
    pub dropped_data_replayed: u64,
    pub stun_unanswered: u64,
    pub stun_rate_limited: u64,
    /// Events the user did not take in time.
    pub dropped_events: u64,
    pub store_skipped: u64,
    pub store_errors: u64,
}

impl Stats {
    pub fn new(s: socket::Stats, b: broker::Stats, r: relay::Stats, d: Driver) -> Stats {
        Stats {
            socket: s,
            driver: d,
            broker_registered: b.registered,
            broker_refreshed: b.refreshed,
            broker_challenged: b.challenged,
            broker_introduced: b.introduced,
            broker_unknown_target: b.unknown_target,
            broker_dropped_bad_signature: b.dropped_bad_signature,
            broker_dropped_oversized: b.dropped_oversized,
            broker_dropped_unregistered: b.dropped_unregistered,
            broker_dropped_rate_limited: b.dropped_rate_limited,
            broker_dropped_not_serving: b.dropped_not_serving,
            broker_dropped_no_possession: b.dropped_no_possession,
            broker_dropped_bad_mac: b.dropped_bad_mac,
            broker_dropped_host_full: b.dropped_host_full,
            relay_challenged: r.challenged,
            relay_circuits_opened: r.circuits_opened,
            relay_circuits_ready: r.circuits_ready,
            relay_circuits_closed: r.circuits_closed,
            relay_circuits_expired: r.circuits_expired,
            relay_forwarded_packets: r.forwarded_packets,
            relay_forwarded_bytes: r.forwarded_bytes,
            relay_dropped_rate_limited: r.dropped_rate_limited,
            relay_dropped_relay_busy: r.dropped_relay_busy,
            relay_dropped_bad_signature: r.dropped_bad_signature,
            relay_dropped_malformed: r.dropped_malformed,
            relay_dropped_unknown_circuit: r.dropped_unknown_circuit,
            relay_dropped_wrong_source: r.dropped_wrong_source,
            relay_dropped_not_ready: r.dropped_not_ready,
            relay_dropped_not_serving: r.dropped_not_serving,
            relay_refused_not_introduced: r.refused_not_introduced,
            relay_refused_host_limit: r.refused_host_limit,
            relay_refused: r.refused_full
                + r.refused_pending
                + r.refused_peer_limit
                + r.refused_bad_request
                + r.refused_not_introduced
                + r.refused_host_limit,
        }
    }

    /// Each counter by name, sorted by name (the names are the struct's fields).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) else { return Vec::new() };
        fields.into_iter().filter_map(|(name, v)| Some((name, v.as_u64()?))).collect()
    }
}

/// The last counters each running node published (by PeerId), read by the metric
/// exporter when it collects. Empty unless metrics are exported.
static PUBLISHED: Mutex<BTreeMap<String, Vec<u64>>> = Mutex::new(BTreeMap::new());
static EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the counters are exported: the node then gathers them on its own, periodically.
pub fn exported() -> bool {
    EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The node `peer_id` counted this much so far.
pub fn publish(peer_id: &str, stats: &Stats) {
    if let Ok(mut published) = PUBLISHED.lock() {
        published.insert(peer_id.to_owned(), stats.counters().into_iter().map(|(_, v)| v).collect());
    }
}

/// One observable counter per field of [`Stats`], reporting each node's last published
/// value with its `introducer.peer_id`.
pub(super) fn export(meter: &Meter) {
    EXPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
    for (index, (name, _)) in Stats::default().counters().into_iter().enumerate() {
        meter
            .u64_observable_counter(format!("introducer.{name}"))
            .with_callback(move |observer| {
                let Ok(published) = PUBLISHED.lock() else { return };
                for (peer, values) in published.iter() {
                    if let Some(value) = values.get(index) {
                        observer.observe(*value, &[KeyValue::new("introducer.peer_id", peer.clone())]);
                    }
                }
            })
            .build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names scripts and tests read are the fields', each once; the sums are sums.
    #[test]
    fn counters_are_the_fields_by_name() {
        let relay = relay::Stats { refused_full: 2, refused_host_limit: 3, forwarded_bytes: 7, ..Default::default() };
        let socket = socket::Stats { received: 5, dropped_kernel: 1, ..Default::default() };
        let stats =
            Stats::new(socket, broker::Stats::default(), relay, Driver { store_errors: 4, ..Default::default() });
        let counters = stats.counters();
        let names: Vec<&str> = counters.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, each once: {names:?}");
        assert_eq!(names.len(), 47);
        let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(get("received"), Some(5));
        assert_eq!(get("dropped_kernel"), Some(1));
        assert_eq!(get("store_errors"), Some(4));
        assert_eq!(get("relay_forwarded_bytes"), Some(7));
        assert_eq!(get("relay_refused"), Some(5));
        assert_eq!(get("relay_refused_host_limit"), Some(3));
    }
}
