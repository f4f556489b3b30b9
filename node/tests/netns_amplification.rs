//! The amplification table on real NATs: every kind of datagram (the simulator's list,
//! `introducer_lab::amplification`), sent with a forged source address from an attacker's
//! namespace to the real `introducer` binary, and every byte that then arrives at the
//! forged address, against the bytes that went in. Nothing may send an address that has
//! not proven it receives there more than it sent, except STUN (capped at 76 bytes and
//! rate-limited; see the README's "Wire").
//!
//! Two targets, as in `sim/tests/amplification.rs`: the introducer (public host A), and a
//! peer registered with it from behind a full-cone NAT (so that a stranger's datagrams
//! reach it). Two forged sources each: a stranger (a lab host that really receives at its
//! address), and an address the target knows — for the introducer a registered peer's
//! public address (its NAT's WAN IP:port), for the peer its introducer's. Not only the
//! answer counts: whatever arrives at the forged address during [`OBSERVE`] after the
//! datagram does (punches, registrations, retransmissions it set off).
//!
//! How it is counted: nftables counters in the raw prerouting hook of the namespace that
//! owns the forged address (the stranger's host, the registered peer's NAT router, the
//! introducer's host), ahead of conntrack and of any socket, so nothing arriving is
//! missed; the stranger's sockets read what arrives as a cross-check. Each forged datagram
//! carries a DSCP mark, and the target's namespace counts the marked arrivals: a datagram
//! lost on the way fails the test instead of passing as "answered with nothing". What the
//! kernel dropped on the way in (UDP receive errors, interface drops) is counted in every
//! counting namespace. At the end, a forged STUN request over every row's pair of
//! addresses must be answered and counted: no row passes on a counter that counts nothing
//! or a target that died.
//!
//! Rows run in rounds so the table takes seconds, not minutes: within a round every
//! forged address and every peer target is used once, so nothing one datagram sets off
//! can be counted against another. The introducer takes several datagrams per round, each
//! from its own address; the introduction and relay requests it gets name a registered
//! peer that is no row's address (the victim), so what they could set off lands only on
//! the row's own address.
//!
//! Not counted: what a datagram sets off toward addresses other than the forged one, and
//! STUN a target peer sends its introducer from sockets other than its registered one
//! (its NAT-lifetime measurement does so on its own, in the background).
//!
//! `-- --nocapture` prints the table. Needs root and scripts/install-deps.sh, like every
//! `netns_*` test; skipped, saying so, when not root.

use introducer_actors::nat::NatBehavior;
use introducer_lab::amplification::{answer_cap, datagrams};
use introducer_lab::netns::counters::{kernel_drops, load_counters, read_all, Counts};
use introducer_lab::netns::spoof::Spoofer;
use introducer_lab::netns::{Host, LabChild, Standard, A_IP, PORT};
use introducer_proto::stun::Message;
use libp2p_identity::PeerId;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// The `introducer` binary the lab runs.
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");
const WAIT: Duration = Duration::from_secs(20);
/// How long after a round's datagrams whatever arrives at the forged addresses is
/// counted: a reaction a datagram sets off (a punch every 50 ms, a registration's
/// retransmissions from 250 ms, an introduction repeated every 500 ms) shows within it.
const OBSERVE: Duration = Duration::from_secs(3);
/// Registered peers whose addresses are forged toward the introducer, and peers that are
/// targets: one of each per row in a round, so these set how many rounds there are.
const SOURCES: usize = 4;
const TARGETS: usize = 7;
/// Peers refresh their registrations this often (`--keepalive`, seconds; a refresh comes by
/// three quarters of the introducer's 60 s registration lifetime at the latest, so 45 s):
/// above the whole measurement, so no refresh (a Register and its answer) lands in a row's
/// count, and under the lifetime, so no registration lapses.
const KEEPALIVE_S: u64 = 45;
/// NAT mappings outlive the test without traffic: a mapping that timed out would drop the
/// forged datagrams (and the answers) at the NAT.
const MAPPING_LIFETIME: Duration = Duration::from_secs(300);
/// The DSCP of every forged datagram, so the target's namespace can count them.
const MARK_DSCP: u8 = 0x15;
const STRANGER_PORT: u16 = 40000;
/// IPv4 and UDP headers, which nftables counts and the table does not.
const HEADERS: u64 = 28;
/// The nftables table the test's counters live in, in every namespace that counts.
const TABLE: &str = "amp";

/// The stranger's `n`-th address: one per stranger row, so per-address state (rate
/// limits, cookies) of one row never shapes another's answer.
fn stranger_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, u8::try_from(n + 1).expect("fewer than 255 stranger rows"))
}

/// A peer registered with A: its process, PeerId, and the address A sees it at.
struct Peer {
    _node: LabChild,
    id: PeerId,
    public: SocketAddrV4,
}

fn v4(addr: &str) -> SocketAddrV4 {
    match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => a,
        other => panic!("not an IPv4 address: {addr} ({other:?})"),
    }
}

/// A peer's NAT router and its own host.
struct Behind {
    router: Host,
    host: Host,
}

/// Starts `introducer run` behind a new full-cone NAT for each name; returns once every
/// one is registered with A.
fn peers(net: &Standard, names: &[String]) -> Vec<(Peer, Behind)> {
    let bootstrap = net.bootstrap();
    let keepalive = KEEPALIVE_S.to_string();
    let nat = NatBehavior::FULL_CONE.with_mapping_lifetime(MAPPING_LIFETIME);
    let started: Vec<(LabChild, Behind)> = names
        .iter()
        .map(|name| {
            let (router, host) = net.natted_host(name, nat);
            let node = host.introducer(&["run", "--bootstrap", &bootstrap, "--keepalive", &keepalive]);
            (node, Behind { router: router.router().clone(), host })
        })
        .collect();
    started
        .into_iter()
        .map(|(mut node, behind)| {
            let ready = node.wait_json(|v| v["event"] == "ready", WAIT);
            let registered = node.wait_json(|v| v["event"] == "registered", WAIT);
            assert_eq!(registered["introducer"], format!("{A_IP}:{PORT}"), "{registered}");
            let id = ready["peer_id"].as_str().expect("ready carries peer_id").parse().expect("a PeerId");
            let public = v4(registered["observed"].as_str().expect("registered carries observed"));
            (Peer { _node: node, id, public }, behind)
        })
        .collect()
}

/// Where the bytes arriving at a row's forged address are counted: a counter of one of
/// the counting hosts.
struct Counter {
    host: usize,
    name: String,
}

struct Row {
    node: &'static str,
    kind: &'static str,
    from: &'static str,
    datagram: Vec<u8>,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    counter: Counter,
    /// The counting host whose `spoofed` counter sees the datagram arrive at the target.
    target_host: usize,
    /// The stranger's socket at `src`, for stranger rows.
    stranger: Option<usize>,
    round: usize,
    /// Packets and payload bytes that arrived at `src` within the row's window.
    out: (u64, u64),
}

impl Row {
    fn ratio(&self) -> f64 {
        self.out.1 as f64 / self.datagram.len() as f64
    }
}

/// Packets and payload bytes a counter grew by.
fn grew(before: &[Counts], after: &[Counts], c: &Counter) -> (u64, u64) {
    let get =
        |counts: &[Counts]| counts[c.host].get(&c.name).copied().unwrap_or_else(|| panic!("no counter {}", c.name));
    let ((p0, b0), (p1, b1)) = (get(before), get(after));
    (p1 - p0, (b1 - b0) - HEADERS * (p1 - p0))
}

#[test]
fn nothing_answers_a_forged_source_with_more_bytes_than_it_sent_on_real_nats() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the real-NAT amplification table needs root (network namespaces, nftables, raw sockets)");
        return;
    }
    let t0 = Instant::now();
    let net = Standard::new("amp", INTRODUCER);
    let a_args = Standard::a_listen_args();
    let mut a = net.a.introducer(&["run", &a_args[0], &a_args[1], &a_args[2], &a_args[3]]);
    a.wait_json(|v| v["event"] == "ready", WAIT);
    let introducer = SocketAddrV4::new(A_IP, PORT);

    let kinds = datagrams(&PeerId::random()).len();
    let stranger_ips: Vec<Ipv4Addr> = (0..2 * kinds).map(stranger_ip).collect();
    let attacker = net.lab.public_host("m", &[Ipv4Addr::new(198, 51, 100, 66)]);
    let stranger = net.lab.public_host("s", &stranger_ips);
    let stranger_sockets: Vec<UdpSocket> = stranger_ips
        .iter()
        .map(|ip| {
            let socket = stranger.udp_socket((*ip, STRANGER_PORT));
            socket.set_nonblocking(true).unwrap();
            socket
        })
        .collect();

    // Registered peers: SOURCES whose addresses are forged toward A, TARGETS, and the
    // victim the introduction and relay requests to A name.
    let mut names: Vec<String> = (0..SOURCES).map(|i| format!("src{i}")).collect();
    names.extend((0..TARGETS).map(|i| format!("tgt{i}")));
    names.push("victim".into());
    // No peer's keepalive timer starts before this.
    let peers_started = Instant::now();
    let mut peers = peers(&net, &names);
    let (victim, _) = peers.pop().unwrap();
    let targets = peers.split_off(SOURCES);
    let sources = peers;

    // Counting hosts: the stranger, A, the sources' NAT routers, the targets' own hosts.
    let mut counting: Vec<Host> = vec![stranger.clone(), net.a.clone()];
    let (stranger_host, a_host) = (0, 1);
    counting.extend(sources.iter().map(|(_, b)| b.router.clone()));
    counting.extend(targets.iter().map(|(_, b)| b.host.clone()));
    let source_host = |i: usize| 2 + i;
    let target_host = |i: usize| 2 + SOURCES + i;
    let marked = format!("ip dscp {MARK_DSCP:#x} counter name \"spoofed\"");
    // At the stranger: everything arriving at each of its addresses.
    let names: Vec<String> = (0..stranger_ips.len()).map(|n| format!("s{n}")).collect();
    let rules: Vec<String> = stranger_ips
        .iter()
        .zip(&names)
        .map(|(ip, name)| format!("ip daddr {ip} meta l4proto udp counter name \"{name}\""))
        .collect();
    load_counters(&counting[stranger_host], TABLE, &names, &rules);
    // At A: the forged datagrams arriving, and each target's datagrams to A:3478 — from
    // its registered port, and from any other port but STUN (its NAT-lifetime probes
    // keep asking A on their own, in the background).
    let mut names = vec!["spoofed".to_string()];
    let mut rules = vec![marked.clone()];
    for (i, (peer, _)) in targets.iter().enumerate() {
        let (ip, port) = (peer.public.ip(), peer.public.port());
        let to_a = format!("ip saddr {ip} ip daddr {A_IP} udp dport {PORT}");
        rules.push(format!("{to_a} udp sport {port} counter name \"t{i}\""));
        rules.push(format!("{to_a} udp sport != {port} @th,96,32 != 0x2112a442 counter name \"t{i}\""));
        names.push(format!("t{i}"));
    }
    load_counters(&counting[a_host], TABLE, &names, &rules);
    // At each source's NAT router: everything arriving at its registered address.
    for (i, (peer, _)) in sources.iter().enumerate() {
        let (ip, port) = (peer.public.ip(), peer.public.port());
        let rule = format!("iifname \"wan\" ip daddr {ip} udp dport {port} counter name \"to_peer\"");
        load_counters(&counting[source_host(i)], TABLE, &["to_peer".into()], &[rule]);
    }
    // At each target's host: the forged datagrams arriving.
    for i in 0..TARGETS {
        load_counters(&counting[target_host(i)], TABLE, &["spoofed".into()], std::slice::from_ref(&marked));
    }

    // The rows and their rounds: per round, each forged address and each peer target once.
    let rounds = kinds.div_ceil(SOURCES).max((2 * kinds).div_ceil(TARGETS));
    let mut rows = Vec::new();
    let at_a = datagrams(&victim.id);
    for (i, (kind, datagram)) in at_a.iter().enumerate() {
        rows.push(Row {
            node: "introducer",
            kind,
            from: "a stranger",
            datagram: datagram.clone(),
            src: SocketAddrV4::new(stranger_ips[i], STRANGER_PORT),
            dst: introducer,
            counter: Counter { host: stranger_host, name: format!("s{i}") },
            target_host: a_host,
            stranger: Some(i),
            round: i % rounds,
            out: (0, 0),
        });
        let s = i % SOURCES;
        rows.push(Row {
            node: "introducer",
            kind,
            from: "a registered peer",
            datagram: datagram.clone(),
            src: sources[s].0.public,
            dst: introducer,
            counter: Counter { host: source_host(s), name: "to_peer".into() },
            target_host: a_host,
            stranger: None,
            round: i / SOURCES,
            out: (0, 0),
        });
    }
    for q in 0..2 * kinds {
        let (i, t) = (q / 2, q % TARGETS);
        let target = &targets[t].0;
        let (kind, datagram) = datagrams(&target.id).swap_remove(i);
        let row = Row {
            node: "peer",
            kind,
            from: "",
            datagram,
            src: introducer,
            dst: target.public,
            counter: Counter { host: a_host, name: format!("t{t}") },
            target_host: target_host(t),
            stranger: None,
            round: q / TARGETS,
            out: (0, 0),
        };
        rows.push(if q % 2 == 0 {
            let n = kinds + i;
            Row {
                from: "a stranger",
                src: SocketAddrV4::new(stranger_ips[n], STRANGER_PORT),
                counter: Counter { host: stranger_host, name: format!("s{n}") },
                stranger: Some(n),
                ..row
            }
        } else {
            Row { from: "its introducer", ..row }
        });
    }

    let spoofer = Spoofer::new(&attacker, MARK_DSCP);
    let drops_before: Vec<u64> = counting.iter().map(kernel_drops).collect();
    let mut problems = Vec::new();
    let measuring = Instant::now();
    let mut before = read_all(&counting, TABLE);
    for round in 0..rounds {
        let started = Instant::now();
        let mut sent_to: HashMap<usize, u64> = HashMap::new();
        for (n, row) in rows.iter().enumerate().filter(|(_, r)| r.round == round) {
            spoofer.send(row.src, row.dst, 0xa500 + n as u16, &row.datagram);
            *sent_to.entry(row.target_host).or_default() += 1;
        }
        // The observation window: a fixed time by design, nothing to wait for.
        std::thread::sleep(OBSERVE.saturating_sub(started.elapsed()));
        let after = read_all(&counting, TABLE);
        for (&host, &sent) in &sent_to {
            let arrived = grew(&before, &after, &Counter { host, name: "spoofed".into() }).0;
            if arrived != sent {
                problems.push(format!(
                    "round {round}: {sent} forged datagrams sent to {}, {arrived} arrived",
                    counting[host].name()
                ));
            }
        }
        for row in rows.iter_mut().filter(|r| r.round == round) {
            row.out = grew(&before, &after, &row.counter);
            if let Some(n) = row.stranger {
                let mut buf = [0u8; 2048];
                let mut read = 0;
                loop {
                    match stranger_sockets[n].recv_from(&mut buf) {
                        Ok((len, _)) => read += len as u64,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("stranger socket: {e}"),
                    }
                }
                if read != row.out.1 {
                    problems.push(format!(
                        "{} {} from {}: the stranger's socket read {read} B, nftables counted {} B",
                        row.node, row.kind, row.src, row.out.1
                    ));
                }
            }
        }
        before = after;
    }
    let measured = measuring.elapsed();
    // Controls: a forged STUN request over every row's pair of addresses, which every
    // node answers. Each row's counter must see its answer — a counter that counts nothing
    // would pass any row — and since a socket's datagrams are read in order, the answer
    // also says the target read every forged datagram queued before it.
    let stun = Message::binding_request([8; 12]).encode();
    let control_start = read_all(&counting, TABLE);
    let mut expected: HashMap<(usize, &str), u64> = HashMap::new();
    for (n, row) in rows.iter().enumerate() {
        spoofer.send(row.src, row.dst, 0xa600 + n as u16, &stun);
        // Paced: a node's STUN answers share a budget that refills one a millisecond, and
        // a burst from first-time sources is refused past half of it (by design).
        std::thread::sleep(Duration::from_millis(2));
        *expected.entry((row.counter.host, &row.counter.name)).or_default() += 1;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let now = read_all(&counting, TABLE);
        let silent: Vec<String> = expected
            .iter()
            .filter_map(|(&(host, name), &want)| {
                let got = grew(&control_start, &now, &Counter { host, name: name.into() }).0;
                (got < want).then(|| format!("{name} at {}: {got} of {want} answers", counting[host].name()))
            })
            .collect();
        if silent.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!("forged STUN requests went unanswered or uncounted: {}", silent.join(", ")));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let drops_after: Vec<u64> = counting.iter().map(kernel_drops).collect();
    for ((host, before), after) in counting.iter().zip(&drops_before).zip(&drops_after) {
        if after != before {
            problems.push(format!("{}: the kernel dropped {} datagrams on their way in", host.name(), after - before));
        }
    }
    if peers_started.elapsed() > Duration::from_secs(KEEPALIVE_S) {
        problems
            .push(format!("the measurement outlasted the peers' {KEEPALIVE_S} s keepalive: refreshes may be counted"));
    }

    println!(
        "{:<11} {:<30} {:<18} {:>5} {:>5} {:>5} {:>6}",
        "node", "datagram", "spoofed from", "in B", "out B", "pkts", "ratio"
    );
    for row in &rows {
        println!(
            "{:<11} {:<30} {:<18} {:>5} {:>5} {:>5} {:>6.2}",
            row.node,
            row.kind,
            row.from,
            row.datagram.len(),
            row.out.1,
            row.out.0,
            row.ratio()
        );
    }
    println!(
        "{} rows in {rounds} rounds of {OBSERVE:?}; setup {:.1} s, measuring {:.1} s, whole test {:.1} s",
        rows.len(),
        (measuring - t0).as_secs_f64(),
        measured.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "the table cannot be trusted:\n{}", problems.join("\n"));
    for row in &rows {
        let (sent, out) = (row.datagram.len(), row.out.1 as usize);
        assert!(
            out <= answer_cap(row.kind, sent),
            "{} answered {} from {} ({}) with {out} B in {} datagrams for {sent} B",
            row.node,
            row.kind,
            row.from,
            row.src,
            row.out.0
        );
    }
}
