//! The NAT-pair matrix on real Linux NAT, with the real `introducer` binary, printed as a grid.
//!
//! One lab: introducer A on two IPs (a full RFC 5780 STUN server), public node B registered
//! with it, and for every NAT kind a "column" NAT with a target host running `introducer run`
//! and a separate "row" NAT of the same kind with a pinger host (so row X × column X are two
//! NATs of one kind, not one NAT; a double-NAT kind gets its own CGNAT and home NAT on each
//! side). Every row host pings every column peer in turn, `MATRIX_RUNS` times (default 1);
//! `MATRIX_ROWS` and `MATRIX_COLS` (comma-separated kind labels, say `sym-seq,sym-random`)
//! keep only those rows and columns;
//! each run records the `connected` event (path, strategy, connect_ms, probes) or the
//! one-line error. The grid is printed (`-- --nocapture` shows it) and every run of every
//! cell must be what [`expected`] says.

use introducer_actors::nat::{NatBehavior, NatReport};
use introducer_actors::punch;
use introducer_lab::netns::{Host, LabChild, Standard};
use serde_json::Value;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// The `introducer` binary the lab runs.
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");

/// What stands between a matrix host and the internet.
#[derive(Debug, Clone, Copy)]
struct Kind {
    /// Grid label (also part of namespace names, so short and plain).
    label: &'static str,
    /// The NATs in the way, innermost first; none for a public host.
    layers: &'static [NatBehavior],
}

/// The kinds of the matrix, in grid order.
const KINDS: [Kind; 9] = [
    Kind { label: "public", layers: &[] },
    Kind { label: "port-restr", layers: &[NatBehavior::PORT_RESTRICTED] },
    Kind { label: "full-cone", layers: &[NatBehavior::FULL_CONE] },
    Kind { label: "restr-cone", layers: &[NatBehavior::RESTRICTED_CONE] },
    Kind { label: "eim-random", layers: &[NatBehavior::EIM_RANDOM_PORT] },
    Kind { label: "sym-random", layers: &[NatBehavior::SYMMETRIC_RANDOM] },
    Kind { label: "sym-seq", layers: &[NatBehavior::SYMMETRIC_SEQUENTIAL] },
    // A home router behind a carrier-grade NAT: easy through an easy CGNAT, hard through a
    // hard one.
    Kind { label: "dbl-easy", layers: &[NatBehavior::PORT_RESTRICTED, NatBehavior::EIM_RANDOM_PORT] },
    Kind { label: "dbl-hard", layers: &[NatBehavior::PORT_RESTRICTED, NatBehavior::SYMMETRIC_RANDOM] },
];

impl Kind {
    /// The NAT the internet sees, layers composed as [`NatBehavior::behind`] says; `None`
    /// for a public host.
    fn behavior(self) -> Option<NatBehavior> {
        self.layers.iter().copied().reduce(NatBehavior::behind)
    }

    /// A new host of this kind named `name`, behind NATs of its own; a public one at `public_ip`.
    fn host(self, std: &Standard, name: &str, public_ip: Ipv4Addr) -> Host {
        match *self.layers {
            [] => std.lab.public_host(name, &[public_ip]),
            [nat] => std.natted_host(name, nat).1,
            [home, cgnat] => std.double_natted_host(name, home, cgnat).2,
            _ => unimplemented!("{} NAT layers", self.layers.len()),
        }
    }
}

/// What a cell must show: `connected` with this path and strategy, and both pongs back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    path: &'static str,
    strategy: &'static str,
}

/// What the strategy table (the one the punch plans by) says, row pinging column. Decided
/// from what the internet sees of each side, so a double NAT is expected to behave like the
/// single NAT it composes to.
fn expected(row: Kind, col: Kind) -> Expect {
    let at: SocketAddr = "203.0.113.1:3478".parse().expect("literal");
    let report = |kind: Kind| kind.behavior().map_or(NatReport::public(at), |b| b.expected_report(at));
    let strategy = punch::strategy(&report(row), &report(col), false);
    Expect { path: strategy.path().as_str(), strategy: strategy.as_str() }
}

/// One `introducer ping` from a row host to a column peer.
struct Run {
    /// The `connected` event, if any.
    connected: Option<Value>,
    pongs: Vec<Value>,
    success: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// Whether the run is what `expect` says; `Err` says why not.
    fn check(&self, Expect { path, strategy }: Expect) -> Result<(), String> {
        let c = self.connected.as_ref().ok_or("no `connected` event")?;
        if !self.success {
            return Err("ping exited non-zero".into());
        }
        if (c["path"].as_str(), c["strategy"].as_str()) != (Some(path), Some(strategy)) {
            return Err(format!("expected {path}/{strategy}, got {}/{}", c["path"], c["strategy"]));
        }
        // Every ping answered, the first too: it goes out the moment the path is proven.
        if self.pongs.len() != 2 {
            return Err(format!("{} pongs, expected 2", self.pongs.len()));
        }
        if !self.pongs.iter().all(|p| p["path"] == c["path"] && p["rtt_ms"].as_f64().is_some_and(|r| r > 0.0)) {
            return Err("pongs with another path or without rtt".into());
        }
        Ok(())
    }

    /// What happened, short: `direct/birthday` or `FAIL`.
    fn outcome(&self) -> String {
        match &self.connected {
            Some(c) => {
                let strategy = match c["strategy"].as_str().unwrap_or("?") {
                    "simultaneous-open" => "sim-open",
                    s => s,
                };
                format!("{}/{strategy}", c["path"].as_str().unwrap_or("?"))
            }
            None => "FAIL".into(),
        }
    }

    /// The `connected` event's number `key` (connect_ms, probes).
    fn connected_f64(&self, key: &str) -> Option<f64> {
        self.connected.as_ref()?[key].as_f64()
    }

    /// The last line of stderr: the error of a run that did not connect.
    fn error_line(&self) -> &str {
        self.stderr.trim().lines().last().unwrap_or("no output")
    }
}

/// Every run of one row × column pair.
struct Cell {
    expect: Expect,
    runs: Vec<Run>,
    /// `run N: why` for every run that was not as expected.
    failures: Vec<String>,
    /// Pinger output and target state of the first unexpected run, taken right after it.
    first_failure: Option<String>,
}

impl Cell {
    /// The cell in the grid, two lines: the most common outcome (`!` in front when any run
    /// was unexpected) over `ok/runs median-connect_ms median-probes`; when nothing
    /// connected, the start of the last error instead of the medians.
    fn lines(&self) -> [String; 2] {
        let outcomes: Vec<String> = self.runs.iter().map(Run::outcome).collect();
        let most_common =
            outcomes.iter().max_by_key(|o| outcomes.iter().filter(|x| x == o).count()).map_or("-", |o| o.as_str());
        let mark = if self.failures.is_empty() { "" } else { "!" };
        let ok = format!("{}/{}", self.runs.len() - self.failures.len(), self.runs.len());
        let stats = match (self.median("connect_ms"), self.median("probes")) {
            (Some(ms), Some(probes)) => format!("{ok} {ms:.0}ms {probes:.0}p"),
            _ => {
                let err = self.runs.last().map_or("", Run::error_line);
                format!("{ok} {err}").chars().take(CELL - 1).collect()
            }
        };
        [format!("{mark}{most_common}"), stats]
    }

    /// The median (the lower one of an even count) of `key` over the runs that connected.
    fn median(&self, key: &str) -> Option<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter_map(|r| r.connected_f64(key)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len().checked_sub(1)? / 2).copied()
    }
}

/// Grid column width: `!direct/sim-open` over `10/10 9999ms 999p`, plus a space.
const CELL: usize = 18;
/// Width of the grid's first column (the row labels).
const LABEL: usize = 11;

/// A column: one target peer of one NAT kind.
struct Column {
    kind: Kind,
    node: LabChild,
    peer_id: String,
}

impl Column {
    /// The target's state for a failure report: reads what it printed so far first, so the
    /// report shows the target as it was right after the failing run.
    fn context(&mut self) -> String {
        while self.node.next_line(Duration::ZERO).is_some() {}
        self.node.context()
    }
}

fn ping(std: &Standard, host: &Host, peer_id: &str) -> Run {
    let start = Instant::now();
    let bootstrap = std.bootstrap();
    let args =
        ["ping", peer_id, "--bootstrap", &bootstrap, "--json", "--count", "2", "--interval", "0.1", "--timeout", "15"];
    let out = host.run_timeout(INTRODUCER, args, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let events: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    Run {
        connected: events.iter().find(|e| e["event"] == "connected").cloned(),
        pongs: events.iter().filter(|e| e["event"] == "pong").cloned().collect(),
        success: out.status.success(),
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

/// `MATRIX_RUNS`, how often every cell is run (default 1).
fn runs_per_cell() -> usize {
    match std::env::var("MATRIX_RUNS") {
        Err(_) => 1,
        Ok(v) => {
            v.trim().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| panic!("MATRIX_RUNS={v:?}: want a count > 0"))
        }
    }
}

/// The kinds named in `var` (comma-separated labels), in grid order; every kind when unset.
fn kinds_from_env(var: &str) -> Vec<Kind> {
    let Ok(v) = std::env::var(var) else { return KINDS.to_vec() };
    let labels: Vec<&str> = v.split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
    for l in &labels {
        assert!(KINDS.iter().any(|k| k.label == *l), "{var}: unknown kind {l:?}");
    }
    KINDS.iter().copied().filter(|k| labels.contains(&k.label)).collect()
}

#[test]
fn nat_pair_matrix() {
    let runs = runs_per_cell();
    let (row_kinds, col_kinds) = (kinds_from_env("MATRIX_ROWS"), kinds_from_env("MATRIX_COLS"));
    let t0 = Instant::now();
    let std = Standard::new("mx", INTRODUCER);
    let (_a, _b) = std.start_introducers();

    // One host per row and per column; public ones get addresses of their own.
    let rows: Vec<(Kind, Host)> = row_kinds
        .iter()
        .map(|&k| (k, k.host(&std, &format!("r-{}", k.label), Ipv4Addr::new(198, 51, 100, 10))))
        .collect();
    let mut columns: Vec<Column> = col_kinds
        .iter()
        .map(|&kind| {
            let h = kind.host(&std, &format!("c-{}", kind.label), Ipv4Addr::new(198, 51, 100, 11));
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

    let mut cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|(row, _)| {
            let cell = |col: &Column| Cell {
                expect: expected(*row, col.kind),
                runs: vec![],
                failures: vec![],
                first_failure: None,
            };
            columns.iter().map(cell).collect()
        })
        .collect();
    // Sequentially: a pinger or a target in two cells at once would share its NAT's ports.
    // Whole passes over the grid rather than one cell's runs back to back, so a cell's runs
    // are spread over the test, not bunched in one moment of its NATs.
    for n in 1..=runs {
        for ((row, host), line) in rows.iter().zip(&mut cells) {
            for (col, cell) in columns.iter_mut().zip(line) {
                let run = ping(&std, host, &col.peer_id);
                let verdict = run.check(cell.expect);
                let secs = run.elapsed.as_secs_f64();
                let (what, ms, probes) = (run.outcome(), run.connected_f64("connect_ms"), run.connected_f64("probes"));
                let how = match (ms, probes) {
                    (Some(ms), Some(p)) => format!("{ms:.0}ms {p:.0}p"),
                    _ => run.error_line().to_owned(),
                };
                let mark = if verdict.is_ok() { "" } else { "!" };
                println!(
                    "run {n}/{runs} {:>10} -> {:<10} {mark}{what:<17} {how:<20} ({secs:.1} s)",
                    row.label, col.kind.label
                );
                if let Err(why) = verdict {
                    cell.failures.push(format!("run {n}: {why}"));
                    if cell.first_failure.is_none() {
                        let target = col.context();
                        cell.first_failure = Some(format!(
                            "--- pinger stdout (run {n}):\n{}--- pinger stderr:\n{}--- target {}:\n{target}",
                            run.stdout, run.stderr, col.kind.label,
                        ));
                    }
                }
                cell.runs.push(run);
            }
        }
    }

    let mut header = format!("{:<LABEL$}", "");
    for c in &columns {
        write!(header, "{:<CELL$}", c.kind.label).unwrap();
    }
    let mut grid = format!(
        "\nNAT pair matrix, {runs} run(s) per cell: row pings column; each cell the most common path/strategy \
         over ok/runs, median connect_ms and median probes; ! = unexpected\n{}",
        header.trim_end()
    );
    let mut failures = String::new();
    for ((row, _), line) in rows.iter().zip(&cells) {
        let mut text = [format!("\n{:<LABEL$}", row.label), format!("\n{:<LABEL$}", "")];
        for (col, cell) in columns.iter().zip(line) {
            for (t, l) in text.iter_mut().zip(cell.lines()) {
                write!(t, "{l:<CELL$}").unwrap();
            }
            if let Some(first) = &cell.first_failure {
                writeln!(
                    failures,
                    "\n=== {} -> {}: {}/{runs} runs unexpected (expected {:?})\n{}\n{first}",
                    row.label,
                    col.kind.label,
                    cell.failures.len(),
                    cell.expect,
                    cell.failures.join("\n"),
                )
                .unwrap();
            }
        }
        for t in text {
            grid.push_str(t.trim_end());
        }
    }
    println!("{grid}\n\nsetup {:.1} s, total {:.1} s", setup.as_secs_f64(), t0.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "cells differ from `expected`:{failures}");
}
