//! `introducer ping`, as ping(8) behaves: a ping every interval whatever comes back, each
//! one lost after `--wait`, a summary at the end and on Ctrl-C.

use crate::output::Output;
use introducer_node::{event::millis, Node, NodeEvent, Path, PeerId};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// How often and how long to ping.
pub struct Plan {
    /// Pings to send; 0: until interrupted.
    pub count: u32,
    pub interval: Duration,
    /// How long a pong may take before its ping counts as lost.
    pub wait: Duration,
}

/// What came back, for the summary.
pub struct Tally {
    peer: PeerId,
    transmitted: u64,
    rtts: Vec<f64>,
    paths: BTreeSet<&'static str>,
    started: Instant,
}

impl Tally {
    pub fn new(peer: PeerId) -> Self {
        Tally { peer, transmitted: 0, rtts: Vec::new(), paths: BTreeSet::new(), started: Instant::now() }
    }

    pub fn received(&self) -> usize {
        self.rtts.len()
    }

    pub fn transmitted(&self) -> u64 {
        self.transmitted
    }

    fn pong(&mut self, rtt: Duration, path: Path) {
        self.rtts.push(millis(rtt));
        self.paths.insert(path.as_str());
    }

    /// The summary line, with ping(8)'s figures (`mdev` is the standard deviation of the
    /// round-trip times, as iputils computes it).
    pub fn summary(&self) -> Value {
        let n = self.rtts.len() as f64;
        let loss = match self.transmitted {
            0 => 0.0,
            t => (t - self.rtts.len() as u64) as f64 * 100.0 / t as f64,
        };
        let (min, avg, max, mdev) = if self.rtts.is_empty() {
            (None, None, None, None)
        } else {
            let avg = self.rtts.iter().sum::<f64>() / n;
            let square = self.rtts.iter().map(|r| r * r).sum::<f64>() / n;
            let min = self.rtts.iter().copied().fold(f64::INFINITY, f64::min);
            let max = self.rtts.iter().copied().fold(0.0, f64::max);
            (Some(min), Some(avg), Some(max), Some((square - avg * avg).max(0.0).sqrt()))
        };
        let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        json!({
            "event": "summary",
            "peer_id": self.peer.to_string(),
            "transmitted": self.transmitted,
            "received": self.rtts.len(),
            "loss_pct": (loss * 10.0).round() / 10.0,
            "rtt_min_ms": round(min),
            "rtt_avg_ms": round(avg),
            "rtt_max_ms": round(max),
            "rtt_mdev_ms": round(mdev),
            "paths": self.paths,
            "time_ms": millis(self.started.elapsed()),
        })
    }
}

/// ping(8)'s closing lines.
pub fn human_summary(v: &Value) -> String {
    let paths: Vec<&str> = v["paths"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let paths = match paths.len() {
        0 => String::new(),
        1 => format!(", path {}", paths[0]),
        _ => format!(", paths {}", paths.join(" and ")),
    };
    let mut text = format!(
        "--- {} ping statistics ---\n{} transmitted, {} received, {}% loss, time {:.0} ms{paths}",
        v["peer_id"].as_str().unwrap_or("?"),
        v["transmitted"],
        v["received"],
        v["loss_pct"].as_f64().unwrap_or(0.0),
        v["time_ms"].as_f64().unwrap_or(0.0),
    );
    if let (Some(min), Some(avg), Some(max), Some(mdev)) =
        (v["rtt_min_ms"].as_f64(), v["rtt_avg_ms"].as_f64(), v["rtt_max_ms"].as_f64(), v["rtt_mdev_ms"].as_f64())
    {
        text += &format!("\nrtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms");
    }
    text
}

/// How a ping run ended.
pub enum End {
    /// Every ping was sent and answered or given up on.
    Done,
    Interrupted,
    /// The session closed (the peer said goodbye, or went silent).
    Disconnected(String),
}

/// Pings `peer` (connected) by `plan` until done or `stop` resolves, printing each pong
/// and each lost ping; `tally` keeps the figures. A pong later than `wait` is not counted
/// (its ping was already reported lost).
pub async fn run(
    node: &mut Node,
    peer: PeerId,
    plan: &Plan,
    out: &Output,
    tally: &mut Tally,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    mut other: impl FnMut(NodeEvent),
) -> anyhow::Result<End> {
    // Sequence number → when its ping is given up on.
    let mut waiting: BTreeMap<u64, Instant> = BTreeMap::new();
    // The run's time, as ping(8)'s, counts from the first ping (not the connection).
    tally.started = Instant::now();
    let mut next_ping = Some(Instant::now());
    loop {
        let give_up = waiting.values().min().copied();
        if next_ping.is_none() && give_up.is_none() {
            return Ok(End::Done);
        }
        tokio::select! {
            _ = sleep_until(next_ping.unwrap_or_else(Instant::now)), if next_ping.is_some() => {
                let seq = node.ping(peer);
                let now = Instant::now();
                waiting.insert(seq, now + plan.wait);
                tally.transmitted += 1;
                let more = plan.count == 0 || tally.transmitted < u64::from(plan.count);
                next_ping = more.then(|| now + plan.interval);
            }
            _ = sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                let now = Instant::now();
                let lost: Vec<u64> = waiting.iter().filter(|(_, at)| **at <= now).map(|(seq, _)| *seq).collect();
                for seq in lost {
                    waiting.remove(&seq);
                    let json = json!({"event": "timeout", "peer_id": peer.to_string(), "seq": seq});
                    out.line(json, || format!("no pong for seq={seq} within {} s", plan.wait.as_secs_f64()));
                }
            }
            event = node.next_event() => match event {
                Some(event @ NodeEvent::Pong { peer: p, seq, rtt, path }) if p == peer => {
                    if waiting.remove(&seq).is_some() {
                        tally.pong(rtt, path);
                        out.event(&event);
                    } else {
                        tracing::debug!(seq, "pong after its ping was given up on: not counted");
                    }
                }
                Some(NodeEvent::Disconnected { peer: p, reason }) if p == peer => {
                    return Ok(End::Disconnected(reason.to_string()));
                }
                Some(NodeEvent::Fatal(error)) => return Err(error.into()),
                Some(event) => other(event),
                None => anyhow::bail!("node stopped"),
            },
            _ = &mut stop => return Ok(End::Interrupted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_has_ping8s_figures() {
        let mut tally = Tally::new(PeerId::random());
        tally.transmitted = 4;
        for ms in [10, 20, 30] {
            tally.pong(Duration::from_millis(ms), Path::Direct);
        }
        tally.pong(Duration::from_millis(40), Path::Relayed);
        tally.transmitted = 5;
        let s = tally.summary();
        assert_eq!(
            (s["transmitted"].as_u64(), s["received"].as_u64(), s["loss_pct"].as_f64()),
            (Some(5), Some(4), Some(20.0))
        );
        assert_eq!(
            [&s["rtt_min_ms"], &s["rtt_avg_ms"], &s["rtt_max_ms"], &s["rtt_mdev_ms"]].map(|v| v.as_f64().unwrap()),
            [10.0, 25.0, 40.0, 11.18]
        );
        assert_eq!(s["paths"], json!(["direct", "relayed"]));
        let text = human_summary(&s);
        assert!(text.contains("5 transmitted, 4 received, 20% loss"), "{text}");
        assert!(text.contains("paths direct and relayed"), "{text}");
        assert!(text.ends_with("rtt min/avg/max/mdev = 10.000/25.000/40.000/11.180 ms"), "{text}");
        // Nothing came back: no round-trip figures, all lost.
        let mut none = Tally::new(PeerId::random());
        none.transmitted = 3;
        let s = none.summary();
        assert_eq!((s["loss_pct"].as_f64(), s["rtt_avg_ms"].is_null()), (Some(100.0), true));
        assert!(!human_summary(&s).contains("rtt"));
    }
}
