//! Runs the docker-compose testbed's scenario and reports it: brings the compose project up,
//! waits until every peer (a container labelled `introducer.nat`) has connected to every
//! other on the topic and timed one round trip, prints the grid (row connected to column:
//! path/strategy connect_ms and the round-trip time),
//! and tears the project down. Exit status 0 only when every pair connected as the strategy
//! table expects for the NATs the labels name; 1 when not; 2 for a usage or Docker error
//! (one line on stderr).
//!
//! ```text
//! introducer-testbed [--file docker-compose.yml] [--project introducer-testbed]
//!                    [--timeout SECS] [--scale SERVICE=N]... [--keep]
//! ```
//! `scripts/testbed.sh` builds the image first and calls this.

use introducer_actors::nat::{NatBehavior, NatReport};
use introducer_actors::punch;
use introducer_lab::nft::Kind;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

struct Args {
    file: String,
    project: String,
    timeout: Duration,
    scale: Vec<String>,
    keep: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        file: "docker-compose.yml".into(),
        project: "introducer-testbed".into(),
        timeout: Duration::from_secs(180),
        scale: Vec::new(),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--file" => args.file = value()?,
            "--project" => args.project = value()?,
            "--timeout" => {
                let v = value()?;
                args.timeout = Duration::from_secs(v.parse().map_err(|_| format!("--timeout {v}: not seconds"))?);
            }
            "--scale" => args.scale.push(value()?),
            "--keep" => args.keep = true,
            other => return Err(format!("unknown argument {other} (see the doc comment of introducer-testbed)")),
        }
    }
    Ok(args)
}

/// `docker-compose` (v1) if present, else `docker compose` (v2).
fn compose(args: &Args) -> Command {
    let v1 = Command::new("docker-compose").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    let mut c = match v1 {
        Ok(s) if s.success() => Command::new("docker-compose"),
        _ => {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        }
    };
    c.args(["-f", &args.file, "-p", &args.project]);
    c
}

fn run(mut c: Command) -> Result<String, String> {
    let out = c.stderr(Stdio::inherit()).output().map_err(|e| format!("{c:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{c:?} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A peer container: its name, its NAT layers (own router first), and what it printed.
struct Peer {
    name: String,
    nat: String,
    /// Peers of one service sit behind one router (`--scale`).
    service: String,
    peer_id: Option<String>,
    /// Connected events by the other side's PeerId, and the round-trip time of the one
    /// ping `join` sends each (ms).
    connected: BTreeMap<String, Value>,
    rtt: BTreeMap<String, f64>,
    stderr: String,
}

fn peers(args: &Args) -> Result<Vec<Peer>, String> {
    let mut ps = Command::new("docker");
    ps.args(["ps", "-a", "--filter", &format!("label=com.docker.compose.project={}", args.project)]);
    ps.args(["--format", "{{.Names}}\t{{.Label \"introducer.nat\"}}\t{{.Label \"com.docker.compose.service\"}}"]);
    let listing = run(ps)?;
    let mut peers: Vec<Peer> = listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .filter(|(_, nat, _)| !nat.is_empty())
        .map(|(name, nat, service)| Peer {
            name: name.to_owned(),
            nat: nat.to_owned(),
            service: service.to_owned(),
            peer_id: None,
            connected: BTreeMap::new(),
            rtt: BTreeMap::new(),
            stderr: String::new(),
        })
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(peers)
}

/// Reads what each peer printed so far.
fn read(peer: &mut Peer) {
    let Ok(out) = Command::new("docker").args(["logs", &peer.name]).output() else { return };
    peer.stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        match v["event"].as_str() {
            // `introducer id --json`, first thing.
            None => peer.peer_id = v["peer_id"].as_str().map(str::to_owned),
            Some("connected") => {
                if let Some(other) = v["peer_id"].as_str() {
                    peer.connected.insert(other.to_owned(), v.clone());
                }
            }
            Some("pong") => {
                if let (Some(other), Some(rtt)) = (v["peer_id"].as_str(), v["rtt_ms"].as_f64()) {
                    peer.rtt.insert(other.to_owned(), rtt);
                }
            }
            _ => {}
        }
    }
}

/// The NAT the internet sees for a label like `port-restr,eim-random`; `None`: public, or an
/// unknown kind.
fn behavior(label: &str) -> Result<Option<NatBehavior>, String> {
    let kinds: Result<Vec<Option<NatBehavior>>, String> = label
        .split(',')
        .map(|k| Kind::from_label(k.trim()).map(|k| k.nat).ok_or_else(|| format!("unknown NAT kind {k:?}")))
        .collect();
    Ok(kinds?.into_iter().flatten().reduce(NatBehavior::behind))
}

/// What the strategy table says for these two NATs, either side asking (in a topic the
/// smaller PeerId asks); `same_nat`: behind one router.
fn expected(a: &str, b: &str, same_nat: bool) -> Result<[(String, String); 2], String> {
    let at: SocketAddr = "203.0.113.11:3478".parse().expect("literal");
    let report = |l: &str| behavior(l).map(|b| b.map_or(NatReport::public(at), |b| b.expected_report(at)));
    let (ra, rb) = (report(a)?, report(b)?);
    let pair = |s: punch::Strategy| (s.path().as_str().to_owned(), s.as_str().to_owned());
    Ok([pair(punch::strategy(&ra, &rb, same_nat)), pair(punch::strategy(&rb, &ra, same_nat))])
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("introducer-testbed: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = scenario(&args);
    if !args.keep {
        let mut down = compose(&args);
        down.args(["down", "-v", "-t", "2"]).stdout(Stdio::null());
        if let Err(e) = run(down) {
            eprintln!("introducer-testbed: {e}");
        }
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("introducer-testbed: {e}");
            ExitCode::from(2)
        }
    }
}

/// Up, wait, report: whether every pair connected as expected.
fn scenario(args: &Args) -> Result<bool, String> {
    let mut up = compose(args);
    up.args(["up", "-d"]);
    for s in &args.scale {
        up.args(["--scale", s]);
    }
    run(up)?;
    let start = Instant::now();
    let mut peers = peers(args)?;
    if peers.len() < 2 {
        return Err(format!("{} peers (containers labelled introducer.nat): need two", peers.len()));
    }
    println!("testbed: {} peers up, waiting for each to connect to every other", peers.len());
    loop {
        peers.iter_mut().for_each(read);
        let ids: Vec<Option<String>> = peers.iter().map(|p| p.peer_id.clone()).collect();
        let done = peers.iter().all(|p| {
            let mut others = ids.iter().flatten().filter(|id| Some(*id) != p.peer_id.as_ref());
            others.all(|id| p.connected.contains_key(id) && p.rtt.contains_key(id))
        });
        if (done && ids.iter().all(Option::is_some)) || start.elapsed() > args.timeout {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    report(&peers, start.elapsed())
}

fn report(peers: &[Peer], took: Duration) -> Result<bool, String> {
    let width = 46;
    println!(
        "\ntestbed after {:.0} s: row connected to column (path/strategy connect_ms, then the round-trip time; ! = not what the strategy table expects)",
        took.as_secs_f64()
    );
    print!("{:<28}", "");
    for p in peers {
        print!(" {:<width$}", format!("{} ({})", short(&p.name), p.nat));
    }
    println!();
    let mut ok = true;
    for row in peers {
        print!("{:<28}", format!("{} ({})", short(&row.name), row.nat));
        for col in peers {
            if row.name == col.name {
                print!(" {:<width$}", "-");
                continue;
            }
            let expect = expected(&row.nat, &col.nat, row.service == col.service)?;
            let event = col.peer_id.as_ref().and_then(|id| row.connected.get(id));
            let cell = match event {
                None => {
                    ok = false;
                    "! not connected".to_owned()
                }
                Some(v) => {
                    let got = (
                        v["path"].as_str().unwrap_or("?").to_owned(),
                        v["strategy"].as_str().unwrap_or("?").to_owned(),
                    );
                    let good = expect.contains(&got);
                    ok &= good;
                    let rtt = col.peer_id.as_ref().and_then(|id| row.rtt.get(id));
                    let rtt = rtt.map_or("rtt ?".to_owned(), |ms| format!("rtt {ms:.0}ms"));
                    let connect = v["connect_ms"].as_f64().unwrap_or(f64::NAN);
                    format!("{}{}/{} {connect:.0}ms {rtt}", if good { "" } else { "! " }, got.0, got.1)
                }
            };
            print!(" {cell:<width$}");
        }
        println!();
    }
    if !ok {
        for p in peers {
            let tail: Vec<&str> = p.stderr.lines().rev().take(15).collect();
            println!("\n--- {} (last log lines)\n{}", p.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
    println!("\ntestbed: {}", if ok { "every pair connected as expected" } else { "FAILED" });
    Ok(ok)
}

/// `introducer-testbed_peer-pr_1` → `peer-pr_1`.
fn short(name: &str) -> &str {
    name.split_once('_').map_or(name, |(_, rest)| rest)
}
