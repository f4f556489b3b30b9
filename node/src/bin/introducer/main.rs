//! `introducer`: run a node, classify your NAT, reach a peer through NATs.

mod output;
mod ping;
mod progress;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use introducer_actors::identity::Identity;
use introducer_bootstrap::{resolve, DEFAULT_PORT};
use introducer_node::config::Serve;
use introducer_node::event::{nat_json, to_json};
use introducer_node::identity::{DataDir, IdentityError};
use introducer_node::{identity, members, telemetry, Config, Node, NodeEvent};
use libp2p_identity::PeerId;
use output::{human, human_nat, Output};
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
    /// Where the node keeps its identity and its store (default: $INTRODUCER_DATA_DIR, else
    /// $XDG_DATA_HOME/introducer, else ~/.local/share/introducer).
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
        /// Seconds to wait for the servers' answers.
        #[arg(long, default_value_t = 15.0, value_name = "SECS")]
        timeout: f64,
    },
    /// Reach a peer through NATs; show the path and round-trip times.
    ///
    /// Like ping(8): a ping every interval whatever comes back, a summary at the end (and
    /// on Ctrl-C); exits 0 if at least one pong came back.
    Ping {
        /// The peer's PeerId (`introducer id` prints it), behind a NAT or a public node.
        peer_id: String,
        /// Pings to send (0: until Ctrl-C).
        #[arg(short, long, default_value_t = 3, value_name = "N")]
        count: u32,
        /// Seconds between pings.
        #[arg(short, long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
        /// Seconds a pong may take before its ping counts as lost.
        #[arg(short = 'W', long, default_value_t = 5.0, value_name = "SECS")]
        wait: f64,
        /// Seconds to wait for the connection (introduction, punch or relay).
        #[arg(long, default_value_t = 15.0, value_name = "SECS")]
        timeout: f64,
    },
    /// Talk to a peer: each stdin line goes out as a datagram, what arrives is printed.
    Connect {
        /// The peer's PeerId (`introducer id` prints it).
        peer_id: String,
        /// Seconds to wait for the connection (introduction, punch or relay).
        #[arg(long, default_value_t = 15.0, value_name = "SECS")]
        timeout: f64,
        /// Drop datagrams from peers other than PEER_ID (by default they are shown with
        /// their sender).
        #[arg(long)]
        only_peer: bool,
    },
    /// Meet everyone on a topic: connect to each member; each stdin line goes to all of
    /// them, what arrives is printed.
    Join {
        /// The topic's name, 1 to 64 bytes.
        topic: String,
    },
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
        let message = message(&e);
        // The contract: under --json, the error is one JSON line on stdout too.
        if json {
            println!("{}", serde_json::json!({ "event": "error", "kind": error_kind(&e), "message": message }));
        }
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// The error and its causes in one line, each said once: an error whose text already
/// quotes its source is not followed by the source again.
fn message(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line += ": ";
            }
            line += &text;
        }
    }
    line
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
        if let Some(e) = cause.downcast_ref::<introducer_node::ConnectError>() {
            return e.kind();
        }
        if cause.downcast_ref::<TimedOut>().is_some() {
            return "timed_out";
        }
        if let Some(e) = cause.downcast_ref::<BootstrapError>() {
            return e.kind();
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
            if !g.bootstrap.is_empty() {
                bail!("id asks nobody: it takes no --bootstrap");
            }
            let id = identity::load_or_create(&data_dir(g)?)?;
            out.line(serde_json::json!({ "peer_id": id.peer_id().to_string() }), || id.peer_id().to_string());
            Ok(())
        }
        Command::Run { listen, no_serve, stats_every, keepalive, pool_idle, relay } => {
            let data_dir = DataDir::lock(&data_dir(g)?)?;
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
                        // How the connections others asked for go: a log line, not a result.
                        Some(event @ NodeEvent::Progress { .. }) => tracing::info!("{}", human(&to_json(&event))),
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
        Command::Ping { peer_id, count, interval, wait, timeout } => {
            let peer = parse_peer(&peer_id)?;
            let plan = ping::Plan { count, interval: secs(interval)?, wait: secs(wait)? };
            if plan.interval.is_zero() && count == 0 {
                bail!("--interval 0 with --count 0 would flood the peer: give one of them");
            }
            // Ctrl-C from here on ends with the summary (before the first ping: of nothing).
            let mut stop = std::pin::pin!(interrupted());
            let mut tally = ping::Tally::new(peer);
            let reached = tokio::select! {
                reached = connect(g, bootstrap, peer, secs(timeout)?, &out) => Some(reached?),
                _ = &mut stop => None,
            };
            let end = match reached {
                Some((mut node, mut keeping)) => {
                    let end = ping::run(&mut node, peer, &plan, &out, &mut tally, stop.as_mut(), |event| match event {
                        NodeEvent::Moved { .. } | NodeEvent::Upgraded { .. } => out.event(&event),
                        NodeEvent::Ready { .. } => keeping.classified = true,
                        _ => {}
                    })
                    .await?;
                    if !matches!(end, ping::End::Interrupted) {
                        keeping.wait(&mut node).await;
                    }
                    end
                }
                None => ping::End::Interrupted,
            };
            if let ping::End::Disconnected(reason) = &end {
                tracing::warn!("{peer} disconnected: {reason}");
            }
            let summary = tally.summary();
            out.line(summary.clone(), || format!("\n{}", ping::human_summary(&summary)));
            match (tally.received(), end) {
                (0, ping::End::Disconnected(reason)) => bail!("peer disconnected: {reason}"),
                (0, ping::End::Interrupted) if tally.transmitted() == 0 => {
                    bail!("interrupted before {peer} was reached")
                }
                (0, _) => bail!("no pong came back from {peer}"),
                _ => Ok(()),
            }
        }
        Command::Join { topic } => join(g, bootstrap, topic, &out).await,
        Command::Connect { peer_id, timeout, only_peer } => {
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
                        // What the connected peer says is shown as it is; anyone else who
                        // reached us is named (or refused), never taken for it.
                        Some(NodeEvent::Data { peer: from, payload }) if from == peer && !out.json => {
                            println!("{}", String::from_utf8_lossy(&payload))
                        }
                        Some(NodeEvent::Data { peer: from, .. }) if from != peer && only_peer => {
                            tracing::debug!(%from, "datagram from another peer dropped (--only-peer)")
                        }
                        Some(NodeEvent::Disconnected { peer: p, reason }) if p == peer => {
                            bail!("peer disconnected: {reason}")
                        }
                        Some(NodeEvent::Fatal(error)) => return Err(error.into()),
                        Some(event @ (NodeEvent::Data { .. } | NodeEvent::Moved { .. } | NodeEvent::Upgraded { .. })) => {
                            out.event(&event)
                        }
                        Some(event @ NodeEvent::Connected { .. }) if !only_peer => out.event(&event),
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
                // Several connections at once: one line each, and only when asked (-v).
                Some(event @ NodeEvent::Progress { .. }) if g.verbose => eprintln!("{}", human(&to_json(&event))),
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
    let mut status = progress::Status::new(g.verbose);
    let reached = loop {
        match next(&mut node, deadline, "connecting").await {
            Ok(NodeEvent::Progress { peer: p, progress }) if p == peer => status.show(&p, &progress),
            Ok(event @ NodeEvent::Connected { peer: p, .. }) if p == peer => break Ok(event),
            Ok(NodeEvent::ConnectFailed { peer: p, error }) if p == peer => {
                break Err(anyhow::Error::new(error).context(format!("cannot reach {peer}")))
            }
            Ok(NodeEvent::Ready { .. }) => keeping.classified = true,
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    status.clear();
    out.event(&reached?);
    Ok((node, keeping))
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

/// A command waited as long as it was told to.
#[derive(Debug, thiserror::Error)]
#[error("timed out {0}")]
struct TimedOut(String);

async fn next(node: &mut Node, deadline: Instant, what: &str) -> Result<NodeEvent> {
    match timeout_at(deadline, node.next_event()).await {
        Ok(Some(NodeEvent::Fatal(error))) => Err(error.into()),
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("node stopped"),
        Err(_) => Err(TimedOut(what.to_owned()).into()),
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

/// `--data-dir`, or the default one.
fn data_dir(g: &Global) -> Result<PathBuf, IdentityError> {
    g.data_dir.clone().map_or_else(identity::default_data_dir, Ok)
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
