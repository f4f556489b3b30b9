//! The spans of what a node does, for tracing backends: joining, NAT probing, registration,
//! lookups, and per peer a connection with its introduction, punch and relay circuit.
//!
//! [`Spans`] watches the core's orders and the roles' reports (it decides nothing), so the
//! simulator records the same spans the binary does, and the core stays free of tracing
//! calls. Span names are few and fixed (`introducer.punch`); what varies goes in namespaced
//! attributes (`introducer.strategy`), as the OpenTelemetry conventions ask. Without a
//! subscriber that wants [`TARGET`], every span is disabled and costs a branch.

use crate::core::{Order, Report};
use crate::event::NodeEvent;
use introducer_actors::mesh::{self, directory::Key};
use introducer_actors::nat::NatReport;
use introducer_actors::probe::actor::{self as probing, ProbeEvent};
use introducer_actors::punch;
use introducer_actors::registration::{self, actor::Command as Registering};
use introducer_actors::relay::server as relay;
use introducer_actors::session;
use introducer_bootstrap as bootstrap;
use libp2p_identity::PeerId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tracing::field::{display, Empty};
use tracing::{info_span, Span};

/// The target of every span here: what a telemetry layer filters on.
pub const TARGET: &str = "introducer::span";

/// The connection with one peer: the root span (ours, or the peer's introduction to us)
/// and the step under way.
struct Connection {
    root: Span,
    introduction: Option<Span>,
    punch: Option<Span>,
    relay: Option<Span>,
}

impl Connection {
    fn new(peer: PeerId, initiator: bool) -> Connection {
        let root = info_span!(target: TARGET, parent: None, "introducer.connect",
            introducer.peer_id = %peer, introducer.initiator = initiator,
            introducer.path = Empty, introducer.strategy = Empty, introducer.probes = Empty,
            introducer.nat.local = Empty, introducer.nat.remote = Empty,
            network.peer.address = Empty, introducer.error = Empty, otel.status_code = Empty);
        Connection { root, introduction: None, punch: None, relay: None }
    }

    /// Nothing is under way: the connection's outcome is known (or it was abandoned).
    fn idle(&self) -> bool {
        self.introduction.is_none() && self.punch.is_none() && self.relay.is_none()
    }
}

/// Opens and closes the node's spans as its orders and reports go by.
#[derive(Default)]
pub struct Spans {
    join: Option<Span>,
    probe: Option<Span>,
    registrations: BTreeMap<SocketAddr, Span>,
    lookups: BTreeMap<Key, Span>,
    connections: BTreeMap<PeerId, Connection>,
    circuits: BTreeMap<u64, Span>,
    /// Connections whose punch settled: closed once the orders of this step are drained,
    /// so that the event that reports the outcome still finds them.
    settled: BTreeMap<PeerId, Connection>,
}

// Numbers are recorded as i64: OpenTelemetry has no unsigned attribute, and a u64 would
// arrive as a string.

/// Spans kept open at most per kind: a peer that never answers must not grow them.
const MAX_OPEN: usize = 4096;

fn fail(span: &Span, error: impl std::fmt::Display) {
    span.record("introducer.error", display(error));
    span.record("otel.status_code", "ERROR");
}

fn nat_fields(span: &Span, side: &str, nat: &NatReport) {
    let value = format!("{}/{}", nat.nat_type().as_str(), nat.mapping.map_or("unknown", |m| m.as_str()));
    span.record(if side == "local" { "introducer.nat.local" } else { "introducer.nat.remote" }, value);
}

impl Spans {
    /// An order the core gave.
    pub fn order(&mut self, order: &Order) {
        match order {
            Order::FirstContact(bootstrap::Command::Join { seeds, .. }) => {
                self.join = Some(info_span!(target: TARGET, parent: None, "introducer.join",
                    introducer.seeds = seeds.len() as i64, introducer.answered = Empty,
                    introducer.error = Empty, otel.status_code = Empty));
            }
            Order::Probe(probing::Command::Start { config, .. }) => {
                self.probe = Some(info_span!(target: TARGET, parent: None, "introducer.probe",
                    introducer.servers = config.servers.len() as i64, introducer.nat.mapping = Empty,
                    introducer.nat.filtering = Empty, introducer.nat.allocation = Empty,
                    introducer.nat.type = Empty, introducer.public_addr = Empty,
                    introducer.error = Empty, otel.status_code = Empty));
            }
            Order::Registration(Registering::Register { introducers, .. }) => {
                for introducer in introducers {
                    if self.registrations.len() < MAX_OPEN {
                        self.registrations.entry(*introducer).or_insert_with(|| {
                            info_span!(target: TARGET, parent: None, "introducer.register",
                                network.transport = "udp", network.peer.address = %introducer,
                                introducer.observed = Empty, introducer.error = Empty, otel.status_code = Empty)
                        });
                    }
                }
            }
            Order::Registration(Registering::Introduce(peer)) => self.asked(*peer, None),
            Order::Registration(Registering::IntroduceVia(peer, via)) => self.asked(*peer, Some(*via)),
            Order::Registration(Registering::Settle(peer)) => {
                if let Some(c) = self.connections.remove(peer) {
                    self.settled.insert(*peer, c);
                }
            }
            Order::Punch(punch::actor::Command::Start { nat, introduced }) => {
                let peer = introduced.peer.peer_id;
                // A repeat of the introduction restarts nothing: the punch under way goes on.
                let Some(c) = self.connections.get_mut(&peer).filter(|c| c.punch.is_none()) else { return };
                let span = info_span!(target: TARGET, parent: &c.root, "introducer.punch",
                    network.transport = "udp", network.peer.address = %introduced.peer_public,
                    introducer.nat.local = Empty, introducer.nat.remote = Empty,
                    introducer.strategy = Empty, introducer.probes = Empty, introducer.path = Empty,
                    introducer.outcome = Empty, introducer.error = Empty, otel.status_code = Empty);
                nat_fields(&span, "local", nat);
                nat_fields(&c.root, "local", nat);
                if let Some(remote) = introduced.peer.record.nat.as_ref().and_then(|n| NatReport::try_from(n).ok()) {
                    nat_fields(&span, "remote", &remote);
                    nat_fields(&c.root, "remote", &remote);
                }
                c.punch = Some(span);
            }
            Order::Session(session::actor::Command::OpenRelayed { peer, relay, .. }) => {
                let Some(c) = self.connections.get_mut(peer) else { return };
                c.relay = Some(info_span!(target: TARGET, parent: &c.root, "introducer.relay",
                    network.transport = "udp", network.peer.address = %relay,
                    introducer.outcome = Empty, introducer.error = Empty, otel.status_code = Empty));
            }
            Order::Mesh(mesh::Command::Lookup(key)) if self.lookups.len() < MAX_OPEN => {
                let kind = match key {
                    Key::Peer(_) => "peer",
                    Key::Topic(_) => "topic",
                };
                self.lookups.entry(key.clone()).or_insert_with(|| {
                    info_span!(target: TARGET, parent: None, "introducer.lookup",
                        introducer.key = kind, introducer.found = Empty)
                });
            }
            Order::Emit(event) => self.emitted(event),
            _ => {}
        }
    }

    /// The core's orders are drained: connections that ended end their spans now.
    pub fn drained(&mut self) {
        self.settled.clear();
        self.connections.retain(|_, c| !c.idle());
    }

    /// We ask an introducer (`via`, or one we are registered with) for `peer`.
    fn asked(&mut self, peer: PeerId, via: Option<SocketAddr>) {
        if !self.connections.contains_key(&peer) && self.connections.len() >= MAX_OPEN {
            return;
        }
        let c = self.connections.entry(peer).or_insert_with(|| Connection::new(peer, true));
        if c.introduction.is_none() {
            let span = info_span!(target: TARGET, parent: &c.root, "introducer.introduction",
                introducer.role = "requester", network.peer.address = Empty);
            if let Some(via) = via {
                span.record("network.peer.address", display(via));
            }
            c.introduction = Some(span);
        }
    }

    fn emitted(&mut self, event: &NodeEvent) {
        match event {
            NodeEvent::ConnectFailed { peer, error } => {
                if let Some(c) = self.settled.get(peer).or(self.connections.get(peer)) {
                    fail(&c.root, error);
                }
            }
            NodeEvent::Upgraded { peer, remote, path, .. } | NodeEvent::Moved { peer, remote, path, .. } => {
                let parent = self.settled.get(peer).or(self.connections.get(peer)).and_then(|c| c.root.id());
                let kind = if matches!(event, NodeEvent::Upgraded { .. }) { "upgrade" } else { "move" };
                let _moved = info_span!(target: TARGET, parent: parent, "introducer.session.move",
                    introducer.peer_id = %peer, introducer.move = kind, introducer.path = path.as_str(),
                    network.peer.address = %remote);
            }
            _ => {}
        }
    }

    /// A role's report, before the core reads it.
    pub fn report(&mut self, report: &Report) {
        match report {
            Report::FirstContact(bootstrap::Event::Joined(joined)) => {
                let Some(span) = self.join.take() else { return };
                match joined {
                    Ok(seeds) => {
                        span.record("introducer.answered", seeds.len() as i64);
                    }
                    Err(e) => fail(&span, e),
                }
            }
            Report::Probe(ProbeEvent::Mapped(nat)) => {
                if let Some(span) = &self.probe {
                    span.record("introducer.public_addr", display(nat.public_addr));
                }
            }
            Report::Probe(ProbeEvent::Classified(classified)) => {
                let Some(span) = self.probe.take() else { return };
                match classified {
                    Ok(nat) => {
                        span.record("introducer.nat.type", nat.nat_type().as_str());
                        span.record("introducer.public_addr", display(nat.public_addr));
                        span.record("introducer.nat.mapping", nat.mapping.map_or("unknown", |m| m.as_str()));
                        span.record("introducer.nat.filtering", nat.filtering.map_or("unknown", |f| f.as_str()));
                        span.record("introducer.nat.allocation", nat.allocation.map_or("unknown", |a| a.as_str()));
                    }
                    Err(e) => fail(&span, e),
                }
            }
            Report::Registration(introducer, event) => self.registration(*introducer, event),
            Report::Punch(event) => self.punch(event),
            Report::Session(peer, event) => self.session(*peer, event),
            Report::Mesh(mesh::Event::Homes { peer, homes }) => {
                if let Some(span) = self.lookups.remove(&Key::Peer(*peer)) {
                    span.record("introducer.found", homes.len() as i64);
                }
            }
            Report::Mesh(mesh::Event::Topic { topic, peers }) => {
                if let Some(span) = self.lookups.remove(&Key::Topic(topic.clone())) {
                    span.record("introducer.found", peers.len() as i64);
                }
            }
            Report::Broker(introducer_actors::broker::Event::Introduced {
                requester, target, repeat: false, ..
            }) => {
                let _introduced = info_span!(target: TARGET, parent: None, "introducer.introduction",
                    introducer.role = "introducer", introducer.requester = %requester, introducer.target = %target);
            }
            Report::Relay(relay::Event::Ready { circuit, peers }) if self.circuits.len() < MAX_OPEN => {
                let span = info_span!(target: TARGET, parent: None, "introducer.relay.circuit",
                    introducer.circuit = *circuit as i64, introducer.peers = %format_args!("{} {}", peers[0], peers[1]),
                    introducer.reason = Empty);
                self.circuits.insert(*circuit, span);
            }
            Report::Relay(relay::Event::Closed { circuit, reason, .. }) => {
                if let Some(span) = self.circuits.remove(circuit) {
                    span.record("introducer.reason", format_args!("{reason:?}"));
                }
            }
            _ => {}
        }
    }

    fn registration(&mut self, introducer: SocketAddr, event: &registration::Event) {
        use registration::Event as R;
        match event {
            R::Registered { observed } => {
                if let Some(span) = self.registrations.remove(&introducer) {
                    span.record("introducer.observed", display(observed));
                }
            }
            R::Unreachable => {
                if let Some(span) = self.registrations.remove(&introducer) {
                    fail(&span, "unreachable");
                }
            }
            R::Introduced(introduced) => {
                let peer = introduced.peer.peer_id;
                if !self.connections.contains_key(&peer) && self.connections.len() >= MAX_OPEN {
                    return;
                }
                let c = self.connections.entry(peer).or_insert_with(|| Connection::new(peer, false));
                let span = c.introduction.take().unwrap_or_else(|| {
                    info_span!(target: TARGET, parent: &c.root, "introducer.introduction",
                        introducer.role = "target", network.peer.address = Empty)
                });
                span.record("network.peer.address", display(introducer));
            }
            _ => {}
        }
    }

    fn punch(&mut self, event: &punch::Event) {
        match event {
            punch::Event::Connected { peer, remote, path, strategy, probes, .. } => {
                let Some(c) = self.connections.get_mut(peer) else { return };
                for span in [Some(&c.root), c.punch.as_ref()].into_iter().flatten() {
                    span.record("introducer.path", path.as_str());
                    span.record("introducer.strategy", strategy.as_str());
                    span.record("introducer.probes", i64::from(*probes));
                    span.record("network.peer.address", display(remote));
                }
                if let Some(span) = c.punch.take() {
                    span.record("introducer.outcome", "connected");
                }
            }
            punch::Event::Failed { peer, error } => self.punch_over(*peer, "timed-out", error),
            punch::Event::Refused { peer, why, .. } => self.punch_over(*peer, "refused", why),
            _ => {}
        }
    }

    fn punch_over(&mut self, peer: PeerId, outcome: &'static str, error: &dyn std::fmt::Display) {
        let Some(span) = self.connections.get_mut(&peer).and_then(|c| c.punch.take()) else { return };
        span.record("introducer.outcome", outcome);
        fail(&span, error);
    }

    fn session(&mut self, peer: PeerId, event: &session::Event) {
        let Some(c) = self.connections.get_mut(&peer) else { return };
        match event {
            session::Event::Relayed { relay } => {
                c.root.record("introducer.path", "relayed");
                c.root.record("introducer.strategy", "relay");
                c.root.record("network.peer.address", display(relay));
                if let Some(span) = c.relay.take() {
                    span.record("introducer.outcome", "connected");
                }
            }
            session::Event::RelayFailed { error } => {
                if let Some(span) = c.relay.take() {
                    span.record("introducer.outcome", "failed");
                    fail(&span, error);
                }
            }
            _ => {}
        }
    }
}
