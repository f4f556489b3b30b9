//! `introducer`: run a node, classify your NAT, reach a peer through NATs.

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use introducer_actors::identity::Identity;
use introducer_bootstrap::{resolve, DEFAULT_PORT};
use introducer_node::config::Serve;
use introducer_node::event::{nat_json, to_json};
use introducer_node::identity::{DataDir, IdentityError};
use introducer_node::{identity, members, telemetry, Config, Node, NodeEvent};
use libp2p_identity::PeerId;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::time::{timeout_at, Instant};

#[derive(Parser)]
#[command(name = "introducer", version, about = "Peer-to-peer UDP through NATs: probe, introduce, punch")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// A node to join through, HOST[:PORT] (repeatable).
    #[arg(long, global = true, value_name = "ADDR")]
    bootstrap: Vec<String>,
    /// Where the node keeps its identity and its store (default: $XDG_DATA_HOME/introducer).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// One JSON object per line on stdout; logs stay on stderr.
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    verbose: bool,
}

/// What a public node gives away as a relay (on by default while it serves).
#[derive(Args)]
struct RelayLimits {
    /// Circuits carried at once (0: do not relay).
    #[arg(long, default_value_t = 256, value_name = "N")]
    relay_circuits: usize,
    /// Circuits one peer may be a side of.
    #[arg(long, default_value_t = 8, value_name = "N")]
    relay_circuits_per_peer: usize,
    /// Bytes per second each direction of a circuit may carry.
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    relay_circuit_rate: u64,
    /// Datagrams per second each direction of a circuit may carry.
    #[arg(long, default_value_t = 500, value_name = "N")]
    relay_circuit_packets: u64,
    /// Bytes per second all circuits together may carry.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    relay_total_rate: u64,
}

impl RelayLimits {
    fn apply(&self, relay: &mut introducer_actors::relay::server::RelayConfig) {
        relay.max_circuits = self.relay_circuits;
        relay.max_circuits_per_peer = self.relay_circuits_per_peer;
        relay.bytes_per_sec = self.relay_circuit_rate as f64;
        relay.packets_per_sec = self.relay_circuit_packets as f64;
        relay.total_bytes_per_sec = self.relay_total_rate as f64;
    }
}

#[derive(Subcommand)]
enum Command {
    /// Join the mesh (or start one); if reachable, serve as introducer for others.
    Run {
        /// IP[:PORT] to listen on (default 0.0.0.0:3478); the next port is bound too, if
        /// free, as STUN's alternate port. Twice, on two IPs with one port: a full
        /// RFC 5780 STUN server (the next port is bound on each).
        #[arg(long, value_name = "ADDR")]
        listen: Vec<String>,
        /// Never act as introducer, even when reachable.
        #[arg(long)]
        no_serve: bool,
        /// Seconds between `stats` events (0: never).
        #[arg(long, default_value_t = 60.0, value_name = "SECS")]
        stats_every: f64,
        /// Seconds between keepalives to introducers and peers; must stay below the NAT's
        /// mapping lifetime (default 15 s to introducers, 10 s to peers).
        #[arg(long, value_name = "SECS")]
        keepalive: Option<f64>,
        /// Behind a hard NAT: seconds the birthday pool (256 sockets) stays open unused
        /// before it is closed; it is bound again when a punch needs it.
        #[arg(long, default_value_t = 60.0, value_name = "SECS")]
        pool_idle: f64,
        #[command(flatten)]
        relay: RelayLimits,
    },
    /// What NAT am I behind? (mapping, filtering, port allocation)
    Nat {
        /// Probe with a standard STUN server instead of introducer nodes (repeatable).
        #[arg(long, value_name = "HOST:PORT")]
        stun: Vec<String>,
        #[arg(long, default_value_t = 15.0, value_name = "SECS")]
        timeout: f64,
    },
    /// Reach a peer through NATs; show the path and round-trip times.
    Ping {
        peer_id: String,
        #[arg(long, default_value_t = 3)]
        count: u32,
        /// Seconds to wait for the connection, and for each pong.
        #[arg(long, default_value_t = 15.0, value_name = "SECS")]
        timeout: f64,
        /// Seconds between pings.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
    },
    /// Talk to a peer: each stdin line goes out as a datagram, what arrives is printed.
    Connect {
        peer_id: String,
        #[arg(long, default_value_t = 15.0, value_name = "SECS")]
        timeout: f64,
    },
    /// Meet everyone on a topic: connect to each member; each stdin line goes to all of
    /// them, what arrives is printed.
    Join { topic: String },
    /// Print this node's PeerId (creating its identity if needed).
    Id,
    /// List the public members of the mesh (peer id, addresses, roles, state, relay load),
    /// as a member sees them: the first `--bootstrap` node that serves, or — without any —
    /// the first member kept in `--data-dir` that answers (when no node runs from it).
    Peers,
}

fn main() {
    let cli = Cli::parse();
    let (telemetry, error) = telemetry::init(cli.global.verbose);
    if let Some(e) = error {
        tracing::warn!("telemetry: {e}");
    }
    tracing::debug!("launched");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let json = cli.global.json;
    let result = runtime.block_on(run(cli));
    drop(runtime);
    // The node has stopped (its spans are closed): what they hold goes out before exit.
    telemetry.shutdown();
    if let Err(e) = result {
        // The contract: under --json, the error is one JSON line on stdout too.
        if json {
            println!(
                "{}",
                serde_json::json!({ "event": "error", "kind": error_kind(&e), "message": format!("{e:#}") })
            );
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Ctrl-C, or SIGTERM (what `docker stop` and service managers send): the node stops
/// cleanly either way, saying goodbye to the mesh and flushing its telemetry.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A short, stable word for what went wrong (`--json`'s `kind`), from the typed error
/// behind the message; `error` for the rest (usage mistakes the command caught itself).
fn error_kind(e: &anyhow::Error) -> &'static str {
    use introducer_bootstrap::BootstrapError;
    use introducer_node::members::PeersError;
    use introducer_node::FatalError;
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<PeersError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<FatalError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<BootstrapError>() {
            return match e {
                BootstrapError::BadAddress { .. } => "bad_address",
                BootstrapError::Unreachable { .. } => "unreachable",
            };
        }
        if let Some(e) = cause.downcast_ref::<IdentityError>() {
            return match e {
                IdentityError::InUse(_) => "data_dir_in_use",
                _ => "data_dir",
            };
        }
        if cause.downcast_ref::<introducer_node::NodeError>().is_some() {
            return "listen";
        }
    }
    "error"
}

async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let out = Output { json: g.json };
    let bootstrap = g.bootstrap.iter().map(|a| resolve(a)).collect::<Result<Vec<_>, _>>()?;
    match cli.command {
        Command::Id => {
            let id = identity::load_or_create(&g.data_dir.clone().unwrap_or_else(identity::default_data_dir))?;
            out.line(serde_json::json!({ "peer_id": id.peer_id().to_string() }), || id.peer_id().to_string());
            Ok(())
        }
        Command::Run { listen, no_serve, stats_every, keepalive, pool_idle, relay } => {
            let data_dir = DataDir::lock(&g.data_dir.clone().unwrap_or_else(identity::default_data_dir))?;
            let mut config = Config::new(data_dir.identity()?);
            config.data_dir = Some(data_dir);
            config.listen = if listen.is_empty() {
                vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))]
            } else {
                listen.iter().map(|a| parse_listen(a)).collect::<Result<_>>()?
            };
            config.bootstrap = bootstrap;
            config.serve = if no_serve { Serve::Never } else { Serve::Auto };
            relay.apply(&mut config.relay);
            config.stats_interval = (stats_every > 0.0).then(|| Duration::from_secs_f64(stats_every));
            if let Some(keepalive) = keepalive.map(secs).transpose()? {
                if keepalive.is_zero() {
                    bail!("--keepalive must be more than 0 seconds");
                }
                config.registration.keepalive = keepalive;
                config.session.keepalive = keepalive;
                config.adapt_keepalive = false;
            }
            config.punch.pool_idle = secs(pool_idle)?;
            let mut node = Node::start(config)?;
            loop {
                tokio::select! {
                    event = node.next_event() => match event {
                        Some(NodeEvent::Fatal(error)) => return Err(error.into()),
                        Some(event) => out.event(&event),
                        None => bail!("node stopped"),
                    },
                    _ = interrupted() => return Ok(()),
                }
            }
        }
        Command::Peers => {
            let seeds = match (&g.data_dir, bootstrap.is_empty()) {
                (_, false) => bootstrap,
                (Some(dir), true) => members::kept_members(dir)?,
                (None, true) => bail!(
                    "peers needs a member to ask: --bootstrap ADDR (any public node of the mesh), or --data-dir DIR of a node that kept members"
                ),
            };
            let listing = members::list(seeds).await?;
            if out.json {
                for member in listing.members.values() {
                    println!("{}", members::member_json(member));
                }
            } else {
                println!("{}", members::table(&listing));
            }
            Ok(())
        }
        Command::Nat { stun, timeout } => {
            if bootstrap.is_empty() && stun.is_empty() && g.data_dir.is_none() {
                bail!("nat needs a server to ask: --bootstrap ADDR (an introducer node) or --stun HOST:PORT");
            }
            let (identity, data_dir) = session_identity(g, !(bootstrap.is_empty() && stun.is_empty()))?;
            let mut config = Config::new(identity);
            config.data_dir = data_dir;
            config.stun = stun.iter().map(|a| resolve(a)).collect::<Result<_, _>>()?;
            config.bootstrap = bootstrap;
            config.register = false;
            config.serve = Serve::Never;
            let mut node = Node::start(config)?;
            let deadline = Instant::now() + secs(timeout)?;
            loop {
                match next(&mut node, deadline, "NAT probing").await? {
                    NodeEvent::Ready { nat: Some(report), .. } => {
                        out.line(nat_json(&report), || human_nat(&nat_json(&report)));
                        return Ok(());
                    }
                    NodeEvent::Ready { nat: None, .. } => bail!("no server to probe with"),
                    _ => {}
                }
            }
        }
        Command::Ping { peer_id, count, timeout, interval } => {
            let peer = parse_peer(&peer_id)?;
            let (mut node, mut keeping) = connect(g, bootstrap, peer, secs(timeout)?, &out).await?;
            let mut pongs = 0;
            for seq in 0..count {
                node.ping(peer);
                let deadline = Instant::now() + secs(timeout)?;
                let next_ping = Instant::now() + secs(interval)?;
                loop {
                    match timeout_at(deadline, node.next_event()).await {
                        Ok(Some(event @ NodeEvent::Pong { seq: s, .. })) if s == u64::from(seq) => {
                            out.event(&event);
                            pongs += 1;
                            break;
                        }
                        Ok(Some(NodeEvent::Disconnected { reason, .. })) => bail!("peer disconnected: {reason}"),
                        Ok(Some(event @ (NodeEvent::Moved { .. } | NodeEvent::Upgraded { .. }))) => out.event(&event),
                        Ok(Some(NodeEvent::Ready { .. })) => keeping.classified = true,
                        Ok(Some(_)) => {}
                        Ok(None) => bail!("node stopped"),
                        Err(_) => {
                            tracing::warn!(seq, "no pong within {timeout} s");
                            break;
                        }
                    }
                }
                if seq + 1 < count {
                    tokio::time::sleep_until(next_ping).await;
                }
            }
            if pongs == 0 {
                bail!("connected to {peer} but no pong came back");
            }
            keeping.wait(&mut node).await;
            Ok(())
        }
        Command::Join { topic } => join(g, bootstrap, topic, &out).await,
        Command::Connect { peer_id, timeout } => {
            let peer = parse_peer(&peer_id)?;
            let (mut node, mut keeping) = connect(g, bootstrap, peer, secs(timeout)?, &out).await?;
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            loop {
                tokio::select! {
                    line = stdin.next_line() => match line.context("reading stdin")? {
                        Some(line) => node.send(peer, line.into_bytes()),
                        None => {
                            keeping.wait(&mut node).await;
                            return Ok(());
                        }
                    },
                    event = node.next_event() => match event {
                        Some(NodeEvent::Data { payload, .. }) if !out.json => println!("{}", String::from_utf8_lossy(&payload)),
                        Some(NodeEvent::Disconnected { reason, .. }) => bail!("peer disconnected: {reason}"),
                        Some(event @ (NodeEvent::Data { .. } | NodeEvent::Moved { .. } | NodeEvent::Upgraded { .. })) => {
                            out.event(&event)
                        }
                        Some(NodeEvent::Ready { .. }) => keeping.classified = true,
                        Some(_) => {}
                        None => bail!("node stopped"),
                    },
                }
            }
        }
    }
}

/// A node that asks, never serves (`connect`, `ping`, `join`): it needs introducers, given
/// or kept in the data dir. With whether it keeps what it learns (see [`Keeping`]).
fn client(g: &Global, bootstrap: Vec<SocketAddr>, what: &str) -> Result<(Node, Keeping)> {
    if bootstrap.is_empty() && g.data_dir.is_none() {
        bail!("{what} needs an introducer: --bootstrap ADDR");
    }
    let (identity, data_dir) = session_identity(g, !bootstrap.is_empty())?;
    let mut config = Config::new(identity);
    let keeping = Keeping { store: data_dir.is_some(), classified: false };
    config.data_dir = data_dir;
    config.bootstrap = bootstrap;
    config.serve = Serve::Never;
    Ok((Node::start(config)?, keeping))
}

/// `join TOPIC`: connects to every member of the topic as it finds them, prints who
/// connects (and, pinged once, its round-trip time) and leaves and what they say, and sends
/// each stdin line to every member.
async fn join(g: &Global, bootstrap: Vec<SocketAddr>, topic: String, out: &Output) -> Result<()> {
    if topic.is_empty() || topic.len() > 64 {
        bail!("a topic is 1 to 64 bytes, not {}", topic.len());
    }
    let (mut node, _) = client(g, bootstrap, "joining a topic")?;
    node.join(topic.clone());
    let mut members = BTreeSet::new();
    let mut connected = BTreeSet::new();
    // Connections that came before we knew the peer is on the topic (it asked first).
    let mut early: std::collections::BTreeMap<PeerId, NodeEvent> = Default::default();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let with_topic = |event: &NodeEvent| {
        let mut json = to_json(event);
        json["topic"] = Value::from(topic.as_str());
        json
    };
    loop {
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line.context("reading stdin")? {
                Some(line) => {
                    for peer in &connected {
                        node.send(*peer, line.clone().into_bytes());
                    }
                }
                None => stdin_open = false,
            },
            event = node.next_event() => match event {
                Some(NodeEvent::Fatal(error)) => return Err(error.into()),
                Some(NodeEvent::TopicMember { peer, .. }) => {
                    members.insert(peer);
                    if let Some(event) = early.remove(&peer) {
                        connected.insert(peer);
                        let json = with_topic(&event);
                        out.line(json.clone(), || human(&json));
                        node.ping(peer);
                    }
                }
                Some(event @ NodeEvent::TopicLeft { peer, .. }) => {
                    members.remove(&peer);
                    connected.remove(&peer);
                    out.event(&event);
                }
                Some(event @ NodeEvent::Connected { peer, .. }) => {
                    if members.contains(&peer) {
                        connected.insert(peer);
                        let json = with_topic(&event);
                        out.line(json.clone(), || human(&json));
                        node.ping(peer);
                    } else {
                        early.insert(peer, event);
                    }
                }
                // Each member is pinged once as it connects: its round-trip time on this path.
                Some(event @ NodeEvent::Pong { peer, .. }) if connected.contains(&peer) => {
                    let json = with_topic(&event);
                    out.line(json.clone(), || human(&json));
                }
                Some(NodeEvent::Data { peer, payload }) if connected.contains(&peer) => {
                    let text = String::from_utf8_lossy(&payload);
                    let json = json!({"event": "data", "peer_id": peer.to_string(), "topic": topic, "data": text});
                    out.line(json, || format!("{peer}: {text}"));
                }
                Some(NodeEvent::Disconnected { peer, .. }) => {
                    connected.remove(&peer);
                    early.remove(&peer);
                }
                Some(_) => {}
                None => bail!("node stopped"),
            },
            // Dropping the node says goodbye to every member: they see us leave at once.
            _ = interrupted() => return Ok(()),
        }
    }
}

/// Starts a node, asks for `peer` and waits until a path is proven; prints `connected`.
/// The introduction is asked for before the NAT is fully classified (see `NodeCore`), so
/// the classification usually ends later: what [`Keeping`] waits for.
async fn connect(
    g: &Global,
    bootstrap: Vec<SocketAddr>,
    peer: PeerId,
    timeout: Duration,
    out: &Output,
) -> Result<(Node, Keeping)> {
    let (mut node, mut keeping) = client(g, bootstrap, "reaching a peer")?;
    node.connect(peer);
    let deadline = Instant::now() + timeout;
    loop {
        match next(&mut node, deadline, "connecting").await? {
            event @ NodeEvent::Connected { .. } => {
                out.event(&event);
                return Ok((node, keeping));
            }
            NodeEvent::ConnectFailed { error, .. } => bail!("cannot reach {peer}: {error}"),
            NodeEvent::Ready { .. } => keeping.classified = true,
            _ => {}
        }
    }
}

/// How long a one-shot command that is done waits, at most, for its NAT's classification
/// to end so that its store keeps the report (behind a filtering NAT it ends 0.7 s after
/// first contact, more on a slow link).
const KEEP_WAIT: Duration = Duration::from_secs(5);

/// Whether a one-shot command keeps what it learns (it holds its data dir's store), and
/// whether its NAT is classified yet.
struct Keeping {
    store: bool,
    classified: bool,
}

impl Keeping {
    /// With a store, waits (up to [`KEEP_WAIT`]) for the classification to end before the
    /// command exits: the next launch on this network then reuses the report and asks for
    /// its introduction right after first contact. Without one there is nothing to keep.
    async fn wait(&mut self, node: &mut Node) {
        if !self.store || self.classified {
            return;
        }
        let deadline = Instant::now() + KEEP_WAIT;
        while let Ok(Some(event)) = timeout_at(deadline, node.next_event()).await {
            if matches!(event, NodeEvent::Ready { .. } | NodeEvent::Fatal(_)) {
                self.classified = true;
                return;
            }
        }
        tracing::warn!("NAT not classified within {KEEP_WAIT:?}: the next launch probes it again");
    }
}

async fn next(node: &mut Node, deadline: Instant, what: &str) -> Result<NodeEvent> {
    match timeout_at(deadline, node.next_event()).await {
        Ok(Some(NodeEvent::Fatal(error))) => Err(error.into()),
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("node stopped"),
        Err(_) => bail!("timed out {what}"),
    }
}

/// One-shot commands use a throwaway identity unless a data dir is named, so they never
/// collide with a node running from the default one. With one, they use its identity and,
/// when no node runs from it, its store: the members kept there are their seeds if no
/// server is given (`has_servers`), and the members and NAT report they learn are kept.
/// A node running from it holds the store; they do without unless they need its members.
fn session_identity(g: &Global, has_servers: bool) -> Result<(Identity, Option<DataDir>)> {
    let Some(dir) = &g.data_dir else { return Ok((Identity::generate(), None)) };
    let identity = identity::load_or_create(dir)?;
    match DataDir::lock(dir) {
        Ok(held) => Ok((identity, Some(held))),
        Err(IdentityError::InUse(_)) if has_servers => Ok((identity, None)),
        Err(e @ IdentityError::InUse(_)) => {
            bail!("{e}; the members kept there cannot be read while it runs: pass --bootstrap ADDR")
        }
        Err(e) => Err(e.into()),
    }
}

fn parse_peer(s: &str) -> Result<PeerId> {
    s.parse().map_err(|e| anyhow!("{s:?} is not a PeerId: {e}"))
}

fn parse_listen(s: &str) -> Result<SocketAddr> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, DEFAULT_PORT)))
        .map_err(|_| anyhow!("bad --listen address {s:?}: expected IP or IP:PORT"))
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow!("{s} is not a valid number of seconds"))
}

struct Output {
    json: bool,
}

impl Output {
    fn line(&self, json: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{json}");
        } else {
            println!("{}", human());
        }
    }

    fn event(&self, event: &NodeEvent) {
        let json = to_json(event);
        self.line(json.clone(), || human(&json));
    }
}

fn human_nat(nat: &Value) -> String {
    let step = nat["allocation_step"].as_i64().map_or(String::new(), |s| format!(" (step {s})"));
    format!(
        "NAT: {}  public {}  mapping {}, filtering {}, allocation {}{step}",
        nat["nat_type"].as_str().unwrap_or("unknown"),
        nat["public_addr"].as_str().unwrap_or("?"),
        nat["mapping"].as_str().unwrap_or("?"),
        nat["filtering"].as_str().unwrap_or("?"),
        nat["allocation"].as_str().unwrap_or("?"),
    )
}

/// A readable line for an event, from its JSON form (one source for both outputs).
fn human(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match v["event"].as_str().unwrap_or("") {
        "ready" => {
            let nat = if v["nat"]["nat_type"].is_null() { "NAT: not probed".to_owned() } else { human_nat(&v["nat"]) };
            let listen: Vec<&str> = v["listen"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let role = if v["public"].as_bool() == Some(true) { "public" } else { "behind NAT" };
            format!("ready: peer {}  listening on {}  ({role})\n{nat}", s("peer_id"), listen.join(", "))
        }
        "nat" => format!("NAT classified again: {}", human_nat(&v["nat"])),
        "registered" => format!("registered with {} (seen as {})", s("introducer"), s("observed")),
        "connected" => format!(
            "connected to {} via {} path {} (strategy {}, {} ms, {} probes)",
            s("peer_id"),
            s("path"),
            s("remote"),
            s("strategy"),
            v["connect_ms"],
            v["probes"]
        ),
        "moved" | "upgraded" => {
            format!("{} now via {} path {} ({})", s("peer_id"), s("path"), s("remote"), s("strategy"))
        }
        "pong" => format!("pong seq={} rtt={} ms ({})", v["seq"], v["rtt_ms"], s("path")),
        "data" => format!("{}: {}", s("peer_id"), s("data")),
        "left" => format!("{} left {}", s("peer_id"), s("topic")),
        "peer_registered" => format!("peer {} registered from {}", s("peer_id"), s("addr")),
        "introduced" => format!("introduced {} to {}", s("requester"), s("target")),
        "mesh" => match s("change").as_str() {
            "joined" => format!("member {} joined the mesh", s("peer_id")),
            "left" => format!("member {} left the mesh", s("peer_id")),
            "suspect" => format!("member {} is suspect (did not answer a probe)", s("peer_id")),
            "alive" => format!("member {} answers again", s("peer_id")),
            _ => v.to_string(),
        },
        _ => v.to_string(),
    }
}
