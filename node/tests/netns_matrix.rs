//! The NAT-pair matrix on real Linux NAT, with the real `introducer` binary, printed as a grid.
//!
//! One lab: introducer A on two IPs (a full RFC 5780 STUN server), public node B registered
//! with it, and for every NAT kind a "column" NAT with a target host running `introducer run`
//! and a separate "row" NAT of the same kind with a pinger host (so row X × column X are two
//! NATs of one kind, not one NAT). Every row host pings every column peer in turn; each cell
//! records the `connected` event (path, strategy, connect_ms, probes) or the one-line error,
//! the grid is printed (`-- --nocapture` shows it) and then every cell is checked against
//! [`expected`].

mod lab;

use introducer_actors::nat::NatBehavior;
use lab::{Host, LabChild, Standard};
use serde_json::Value;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// The NAT kinds of the matrix, in grid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A host directly on the internet.
    Public,
    PortRestricted,
    FullCone,
    RestrictedCone,
    EimRandomPort,
    SymmetricRandom,
    SymmetricSequential,
}

use Kind::*;

const KINDS: [Kind; 7] =
    [Public, PortRestricted, FullCone, RestrictedCone, EimRandomPort, SymmetricRandom, SymmetricSequential];

impl Kind {
    fn behavior(self) -> Option<NatBehavior> {
        Some(match self {
            Public => return None,
            PortRestricted => NatBehavior::PORT_RESTRICTED,
            FullCone => NatBehavior::FULL_CONE,
            RestrictedCone => NatBehavior::RESTRICTED_CONE,
            EimRandomPort => NatBehavior::EIM_RANDOM_PORT,
            SymmetricRandom => NatBehavior::SYMMETRIC_RANDOM,
            SymmetricSequential => NatBehavior::SYMMETRIC_SEQUENTIAL,
        })
    }

    /// Grid label (also part of namespace names, so short and plain).
    fn label(self) -> &'static str {
        match self {
            Public => "public",
            PortRestricted => "port-restr",
            FullCone => "full-cone",
            RestrictedCone => "restr-cone",
            EimRandomPort => "eim-random",
            SymmetricRandom => "sym-random",
            SymmetricSequential => "sym-seq",
        }
    }

    /// Address-and-port-dependent mapping.
    fn hard(self) -> bool {
        matches!(self, SymmetricRandom | SymmetricSequential)
    }
}

/// What a cell must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `connected` with this path and strategy, and both pongs back.
    Connects { path: &'static str, strategy: &'static str },
    /// Two hard NATs before relaying: a one-line error saying it is not available yet.
    #[allow(dead_code)]
    NotYet,
}

/// The matrix as the node does it today; row pings column (the relation is symmetric).
fn expected(row: Kind, col: Kind) -> Expect {
    let direct = |strategy| Expect::Connects { path: "direct", strategy };
    let (hard, other) = match (row.hard(), col.hard()) {
        _ if row == Public || col == Public => return direct("direct"),
        // Two hard NATs go through the introducer's relay. Before relaying was wired (HEAD
        // 288b8c2) this line was `(true, true) => return Expect::NotYet,`.
        (true, true) => return Expect::Connects { path: "relayed", strategy: "relay" },
        (true, false) => (row, col),
        (false, true) => (col, row),
        (false, false) => return direct("simultaneous-open"),
    };
    match (hard, other) {
        // A full cone admits anyone: the hard side just sends.
        (_, FullCone) => direct("direct"),
        (SymmetricRandom, _) => direct("birthday"),
        (SymmetricSequential, _) => direct("predict"),
        _ => unreachable!("{hard:?} is not hard"),
    }
}

/// One `introducer ping` from a row host to a column peer.
struct Cell {
    /// The `connected` event, if any.
    connected: Option<Value>,
    pongs: Vec<Value>,
    success: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Cell {
    /// Whether the cell is what `expect` says; `Err` says why not.
    fn check(&self, expect: Expect) -> Result<(), String> {
        match expect {
            Expect::Connects { path, strategy } => {
                let c = self.connected.as_ref().ok_or("no `connected` event")?;
                if !self.success {
                    return Err("ping exited non-zero".into());
                }
                if (c["path"].as_str(), c["strategy"].as_str()) != (Some(path), Some(strategy)) {
                    return Err(format!("expected {path}/{strategy}, got {}/{}", c["path"], c["strategy"]));
                }
                if self.pongs.len() != 2 {
                    return Err(format!("{} pongs, expected 2", self.pongs.len()));
                }
                if !self.pongs.iter().all(|p| p["path"] == c["path"] && p["rtt_ms"].as_f64().is_some_and(|r| r > 0.0)) {
                    return Err("pongs with another path or without rtt".into());
                }
                Ok(())
            }
            Expect::NotYet => {
                if self.success || self.connected.is_some() {
                    return Err("expected a refusal, but it connected".into());
                }
                let err = self.stderr.trim();
                if !(err.contains("hard NAT") && err.contains("not available yet")) {
                    return Err("error does not say `hard NAT` … `not available yet`".into());
                }
                if err.lines().count() != 1 {
                    return Err("error is not one line".into());
                }
                Ok(())
            }
        }
    }

    /// The cell in the grid, two lines: `direct/birthday` over `312ms 180p`; `not-yet`; or
    /// `FAIL` over the start of the error.
    fn lines(&self) -> [String; 2] {
        match &self.connected {
            Some(c) => {
                let strategy = match c["strategy"].as_str().unwrap_or("?") {
                    "simultaneous-open" => "sim-open",
                    s => s,
                };
                let path = c["path"].as_str().unwrap_or("?");
                let ms = c["connect_ms"].as_f64().map_or("?".into(), |m| format!("{m:.0}"));
                let probes = c["probes"].as_u64().map_or("?".into(), |p| p.to_string());
                let pongs = if self.pongs.len() == 2 { "" } else { " nopong" };
                [format!("{path}/{strategy}"), format!("{ms}ms {probes}p{pongs}")]
            }
            None if self.stderr.contains("hard NAT") && self.stderr.contains("not available yet") => {
                ["not-yet".into(), String::new()]
            }
            None => {
                let line = self.stderr.trim().lines().last().unwrap_or("no output");
                ["FAIL".into(), line.chars().take(CELL - 2).collect()]
            }
        }
    }
}

/// Grid column width (the widest cell line, `direct/birthday 9999ms 2048p` split in two, fits).
const CELL: usize = 17;

/// A column: one target peer of one NAT kind.
struct Column {
    kind: Kind,
    node: LabChild,
    peer_id: String,
}

fn ping(std: &Standard, host: &Host, peer_id: &str) -> Cell {
    let start = Instant::now();
    let bootstrap = std.bootstrap();
    let args =
        ["ping", peer_id, "--bootstrap", &bootstrap, "--json", "--count", "2", "--interval", "0.1", "--timeout", "15"];
    let out = host.run_timeout(env!("CARGO_BIN_EXE_introducer"), args, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let events: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    Cell {
        connected: events.iter().find(|e| e["event"] == "connected").cloned(),
        pongs: events.iter().filter(|e| e["event"] == "pong").cloned().collect(),
        success: out.status.success(),
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

#[test]
fn nat_pair_matrix() {
    let t0 = Instant::now();
    let std = Standard::new("mx");
    let (_a, _b) = std.start_introducers();

    // One host per row and per column; public ones get addresses of their own.
    let host = |prefix: &str, kind: Kind, public_ip: Ipv4Addr| -> Host {
        let name = format!("{prefix}-{}", kind.label());
        match kind.behavior() {
            None => std.lab.public_host(&name, &[public_ip]),
            Some(behavior) => std.natted_host(&name, behavior).1,
        }
    };
    let rows: Vec<(Kind, Host)> = KINDS.iter().map(|&k| (k, host("r", k, Ipv4Addr::new(198, 51, 100, 10)))).collect();
    let mut columns: Vec<Column> = KINDS
        .iter()
        .map(|&kind| {
            let h = host("c", kind, Ipv4Addr::new(198, 51, 100, 11));
            let bootstrap = std.bootstrap();
            let mut node = h.introducer(&["run", "--bootstrap", &bootstrap]);
            let ready = node.wait_json(|v| v["event"] == "ready", WAIT);
            let peer_id = ready["peer_id"].as_str().expect("ready carries peer_id").to_owned();
            Column { kind, node, peer_id }
        })
        .collect();
    for c in &mut columns {
        c.node.wait_json(|v| v["event"] == "registered", WAIT);
    }
    let setup = t0.elapsed();

    // Sequentially: a pinger or a target in two cells at once would share its NAT's ports.
    let mut cells: Vec<Vec<Cell>> = vec![];
    for (row, host) in &rows {
        let mut line = vec![];
        for col in &columns {
            let cell = ping(&std, host, &col.peer_id);
            let [what, how] = cell.lines();
            let secs = cell.elapsed.as_secs_f64();
            println!("{:>10} -> {:<10} {what:<16} {how:<20} ({secs:.1} s)", row.label(), col.kind.label());
            line.push(cell);
        }
        cells.push(line);
    }

    // The grid: two text lines per row, `path/strategy` over `connect_ms probes`.
    let mut grid = format!(
        "\nNAT pair matrix: row pings column; each cell path/strategy over connect_ms probes; ! = unexpected\n{:<11}",
        ""
    );
    for c in &columns {
        write!(grid, "{:<CELL$}", c.kind.label()).unwrap();
    }
    let mut failures = String::new();
    for ((row, _), line) in rows.iter().zip(&cells) {
        let mut text = [format!("\n{:<11}", row.label()), format!("\n{:<11}", "")];
        for (col, cell) in columns.iter().zip(line) {
            let verdict = cell.check(expected(*row, col.kind));
            let [what, how] = cell.lines();
            let mark = if verdict.is_ok() { "" } else { "!" };
            write!(text[0], "{:<CELL$}", format!("{mark}{what}")).unwrap();
            write!(text[1], "{how:<CELL$}").unwrap();
            if let Err(why) = verdict {
                writeln!(
                    failures,
                    "\n=== {} -> {}: {why} (expected {:?})\n--- pinger stdout:\n{}--- pinger stderr:\n{}--- target {}:\n{}",
                    row.label(),
                    col.kind.label(),
                    expected(*row, col.kind),
                    cell.stdout,
                    cell.stderr,
                    col.kind.label(),
                    col.node.context(),
                )
                .unwrap();
            }
        }
        grid.push_str(text[0].trim_end());
        grid.push_str(text[1].trim_end());
    }
    println!("{grid}\n\nsetup {:.1} s, total {:.1} s", setup.as_secs_f64(), t0.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "cells differ from `expected`:{failures}");
}
