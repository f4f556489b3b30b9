//! Counting what arrives, where the kernel sees it: nftables counters in a namespace's raw
//! prerouting hook (ahead of conntrack and of any socket, so nothing arriving is missed),
//! the kernel's own drop counters, for what died before a program could count it, and the
//! node's counters (its `stats` events).

use super::Host;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;

/// Packets and bytes (IP headers included) of every named counter of one table.
pub type Counts = HashMap<String, (u64, u64)>;

/// Loads table `ip <table>` into `host`'s namespace: named `counters`, and one chain in the
/// raw prerouting hook with `rules` (e.g. `ip daddr 192.0.2.1 counter name "x"`; a rule
/// may end in `drop`).
pub fn load_counters(host: &Host, table: &str, counters: &[String], rules: &[String]) {
    let mut text = format!("table ip {table} {{\n");
    for c in counters {
        text.push_str(&format!("  counter {c} {{ }}\n"));
    }
    text.push_str("  chain count {\n    type filter hook prerouting priority raw; policy accept;\n");
    for r in rules {
        text.push_str(&format!("    {r}\n"));
    }
    text.push_str("  }\n}\n");
    let mut cmd = host.command("nft", ["-f", "-"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("nft runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft in {}: {}\n{text}", host.name(), String::from_utf8_lossy(&out.stderr));
}

/// Removes a table [`load_counters`] loaded, with its rules (a `drop` among them stops).
pub fn delete_table(host: &Host, table: &str) {
    host.run_ok("nft", ["delete", "table", "ip", table]);
}

/// Every counter of table `ip <table>` in `host`'s namespace.
pub fn read_counters(host: &Host, table: &str) -> Counts {
    let out = host.run_ok("nft", ["-j", "list", "counters", "table", "ip", table]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("nft -j in {}: {e}: {out}", host.name()));
    let objects = v["nftables"].as_array().cloned().unwrap_or_default();
    objects
        .iter()
        .filter_map(|o| {
            let c = &o["counter"];
            Some((c["name"].as_str()?.to_owned(), (c["packets"].as_u64()?, c["bytes"].as_u64()?)))
        })
        .collect()
}

/// Table `ip <table>` of every host, read at once (one `nft` each, in parallel), so that
/// the readings describe one moment.
pub fn read_all(hosts: &[Host], table: &str) -> Vec<Counts> {
    std::thread::scope(|s| {
        let reads: Vec<_> = hosts.iter().map(|h| s.spawn(move || read_counters(h, table))).collect();
        reads.into_iter().map(|r| r.join().expect("reading counters")).collect()
    })
}

/// The kernel's UDP counters in `host`'s namespace (`/proc/net/snmp`), e.g. `RcvbufErrors`:
/// datagrams that died in a full socket buffer before a program could see, or count, them.
pub fn udp_snmp(host: &Host) -> HashMap<String, u64> {
    let snmp = host.run_ok("cat", ["/proc/net/snmp"]);
    let mut rows = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (rows.next().expect("Udp header"), rows.next().expect("Udp values"));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .map(|(n, v)| (n.to_owned(), v.parse().unwrap()))
        .collect()
}

/// Packets the interfaces of `host`'s namespace dropped on receipt, before nftables saw them.
pub fn link_rx_drops(host: &Host) -> u64 {
    let links: Value = serde_json::from_str(&host.run_ok("ip", ["-j", "-s", "link", "show"])).expect("ip -j");
    links.as_array().into_iter().flatten().filter_map(|l| l["stats64"]["rx"]["dropped"].as_u64()).sum()
}

/// What the kernel dropped in `host`'s namespace: UDP datagrams that died on their way
/// into a socket (`InErrors`, which counts `RcvbufErrors` and `InCsumErrors` too) and
/// packets its interfaces dropped on receipt.
pub fn kernel_drops(host: &Host) -> u64 {
    udp_snmp(host)["InErrors"] + link_rx_drops(host)
}

/// One `stats` event of a node (`introducer run --stats-every SECS`).
#[derive(Clone)]
pub struct Stats(pub Value);

impl Stats {
    pub fn get(&self, key: &str) -> u64 {
        self.0["stats"][key].as_u64().unwrap_or_else(|| panic!("stats event without {key:?}: {}", self.0))
    }

    /// How much `key` grew since `before`.
    pub fn since(&self, before: &Stats, key: &str) -> u64 {
        self.get(key) - before.get(key)
    }
}
