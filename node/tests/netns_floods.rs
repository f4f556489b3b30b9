//! Floods of forged datagrams at a real introducer across real NATs, each while a real
//! client does what that flood would stop (issue 8's figures: "a real connect during each
//! flood"). The flood comes from an attacker's namespace with forged IP sources
//! (`introducer_lab::netns::spoof`), paced by rate on a thread of its own; the client is
//! the real `introducer` binary, measured once without the flood and once under it, in the
//! same lab.
//!
//! - Registers: 20,000 a second, signed by a few hundred throwaway keys, with no cookie or
//!   a guessed one, from thousands of addresses. A peer registers and a NATed pair
//!   registers, is introduced and punches meanwhile.
//! - STUN: 10,000 Binding requests a second from 6,000 addresses (each coming back every
//!   0.6 s, as a client does), and from one-off addresses, while `introducer nat`
//!   classifies a NAT.
//! - IntroduceRequests forged from a registered peer's public address (its NAT's mapping),
//!   with bad MACs, 20,000 a second, while that peer is introduced and punches: its own
//!   requests get through, the forged ones aim nothing at it.
//!
//! What is counted, and where: the flood's datagrams carry a DSCP mark, counted by nftables
//! as they reach the introducer's namespace (ahead of any socket); what the kernel dropped
//! there (UDP `InErrors`: full socket buffers); what the node read and did (its `stats`
//! events); its CPU time (`/proc/<pid>/task/*/schedstat`); and at the attacker, which the
//! introducer's namespace routes the forged networks to, everything answered to forged
//! sources.
//!
//! `-- --nocapture` prints each test's table. Needs root and scripts/install-deps.sh, like
//! every `netns_*` test; skipped, saying so, when not root.

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_lab::netns::counters::{delete_table, kernel_drops, load_counters, read_counters, Counts, Stats};
use introducer_lab::netns::spoof::Spoofer;
use introducer_lab::netns::{assert_classified, Host, LabChild, Standard, A_ALT_IP, A_IP, PORT};
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind};
use introducer_proto::stun::Message;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `introducer` binary the lab runs.
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");
/// Generous: another engineer's tests may share the machine's two cores.
const WAIT: Duration = Duration::from_secs(40);
/// `stats` events from the introducer this often (seconds, as given to `--stats-every`).
const STATS_EVERY: &str = "0.25";
/// The attacker: a host on the internet that sends the flood and, as the next hop the
/// introducer's namespace routes the forged networks to, receives (and counts) whatever
/// the introducer answers to forged sources.
const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
/// Forged sources live in RFC 2544's benchmarking network (198.18.0.0/15): enough
/// addresses, none of them the lab's.
const FORGED_NET: &str = "198.18.0.0/15";
/// The DSCP of every forged datagram, so the introducer's namespace counts them apart.
const MARK_DSCP: u8 = 0x16;
/// The nftables table of the test's counters, in every namespace that counts.
const TABLE: &str = "flood";
/// A flood stops by itself after this, should a test never stop it.
const MAX_FLOOD: Duration = Duration::from_secs(90);
/// Pings per `introducer ping`, and their spacing (seconds).
const PINGS: usize = 5;
const PING_INTERVAL: &str = "0.2";

fn forged_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------
// The lab: introducers A and B, an attacker, counters
// ---------------------------------------------------------------------------------------

/// The standard topology with A emitting `stats`, an attacker host, and counters at A (the
/// flood arriving) and at the attacker (what A answers to forged sources).
struct FloodLab {
    std: Standard,
    a: LabChild,
    _b: LabChild,
    attacker: Host,
}

impl FloodLab {
    fn new(name: &str) -> FloodLab {
        let std = Standard::new(name, INTRODUCER);
        let (a, b) = std.start_introducers_with(&["--stats-every", STATS_EVERY]);
        let attacker = std.lab.public_host("m", &[ATTACKER_IP]);
        // As the internet would carry them away, answers to forged sources leave A toward
        // one next hop; the attacker counts them and drops them.
        std.a.run_ok("ip", ["route", "add", FORGED_NET, "via", &ATTACKER_IP.to_string(), "dev", "eth0", "onlink"]);
        let rule = format!("ip daddr {FORGED_NET} counter name \"answered\" drop");
        load_counters(&attacker, TABLE, &["answered".into()], &[rule]);
        let rule = format!("ip dscp {MARK_DSCP:#x} counter name \"arrived\"");
        load_counters(&std.a, TABLE, &["arrived".into()], &[rule]);
        FloodLab { std, a, _b: b, attacker }
    }

    fn spoofer(&self) -> Spoofer {
        Spoofer::new(&self.attacker, MARK_DSCP)
    }

    /// A `run` node on `host`, registered with A; returns it, its PeerId and how long it
    /// took from start to registered (NAT probing included).
    fn peer(&self, host: &Host) -> (LabChild, String, Duration) {
        let started = Instant::now();
        let (node, id) = self.std.peer(host, &[]);
        (node, id, started.elapsed())
    }

    /// The next `stats` event of A for which `pred` holds.
    fn stats(&mut self, mut pred: impl FnMut(&Stats) -> bool) -> Stats {
        Stats(self.a.wait_json(|v| v["event"] == "stats" && pred(&Stats(v.clone())), WAIT))
    }

    /// A's first `stats` event after everything it printed so far: its counters now, not
    /// when the oldest unread line was printed.
    fn stats_now(&mut self) -> Stats {
        while self.a.next_line(Duration::ZERO).is_some() {}
        self.stats(|_| true)
    }

    /// A's state now: its CPU time, the kernel's drops in its namespace, the counters.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            cpu_ns: cpu_ns(self.a.pid()),
            kernel_drops: kernel_drops(&self.std.a),
            arrived: read_counters(&self.std.a, TABLE)["arrived"].0,
            answered: read_counters(&self.attacker, TABLE)["answered"].0,
        }
    }
}

/// What A and the attacker counted at one moment.
struct Snapshot {
    at: Instant,
    cpu_ns: u64,
    kernel_drops: u64,
    /// Forged datagrams that reached A's namespace.
    arrived: u64,
    /// Datagrams A sent to forged sources.
    answered: u64,
}

impl Snapshot {
    /// The share of one core the node used between `self` and `later`, in percent.
    fn cpu_pct(&self, later: &Snapshot) -> f64 {
        let secs = (later.cpu_ns - self.cpu_ns) as f64 / 1e9;
        100.0 * secs / (later.at - self.at).as_secs_f64()
    }
}

/// CPU time of process `pid`, all its threads, in nanoseconds (`/proc/<pid>/task/*/schedstat`:
/// `stat`'s utime and stime count 10 ms ticks, too coarse for a classification that
/// takes 20 ms).
fn cpu_ns(pid: u32) -> u64 {
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(),
        "introducer",
        "`ip netns exec` execs the node, so its pid is the node's"
    );
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the node runs");
    tasks
        .map(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap_or_default();
            stat.split_whitespace().next().map_or(0, |ns| ns.parse::<u64>().unwrap())
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// The flood
// ---------------------------------------------------------------------------------------

/// A flood sending on a thread of its own until stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Sent>,
}

/// What a flood sent.
struct Sent {
    packets: u64,
    /// Sends the attacker's kernel refused (its queues full).
    refused: u64,
    /// Sends skipped because the thread fell behind more than a tick's worth (the machine
    /// was busy): a steady flood, not bursts to catch up.
    skipped: u64,
    secs: f64,
}

impl Flood {
    /// Sends `packets` round and round, `rate` a second, in 1 ms ticks.
    fn start(spoofer: Spoofer, packets: Vec<Vec<u8>>, rate: u64) -> Flood {
        const TICK: Duration = Duration::from_millis(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let (mut packets_sent, mut refused, mut skipped, mut next) = (0u64, 0u64, 0u64, 0usize);
            while !stopped.load(Ordering::Relaxed) && t0.elapsed() < MAX_FLOOD {
                let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
                let owed = due - (packets_sent + refused + skipped);
                let cap = (rate / 1000).max(1) * 10;
                skipped += owed.saturating_sub(cap);
                for _ in 0..owed.min(cap) {
                    match spoofer.send_packet(&packets[next]) {
                        Ok(()) => packets_sent += 1,
                        Err(_) => refused += 1,
                    }
                    next = (next + 1) % packets.len();
                }
                // Pacing a traffic generator, not synchronisation.
                std::thread::sleep(TICK);
            }
            Sent { packets: packets_sent, refused, skipped, secs: t0.elapsed().as_secs_f64() }
        });
        Flood { stop, thread }
    }

    fn stop(self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the flood thread")
    }
}

/// Waits until A has read `at_least` more datagrams than at `before`: the flood is on.
fn await_flood(lab: &mut FloodLab, before: &Stats, at_least: u64) {
    lab.stats(|s| s.since(before, "received") >= at_least);
}

/// What the flood delivered, for the table: sent, arrived at A's namespace, dropped by
/// A's kernel, read by A, answered to forged sources, with rates over the flood's time.
struct Delivered {
    sent: Sent,
    arrived: u64,
    kernel_drops: u64,
    read: u64,
    answered: u64,
    cpu_pct: f64,
    /// A's CPU time over the flood per datagram it read, in microseconds.
    cpu_us_per_read: f64,
}

impl Delivered {
    /// The rows of the table; `forged_net`: the flood came from [`FORGED_NET`], whose
    /// answers the attacker counts.
    fn rows(&self, rows: &mut Vec<[String; 3]>, forged_net: bool) {
        let rate = |n: u64| format!("{n} ({:.0}/s)", n as f64 / self.sent.secs);
        rows.push(row("flood sent (/s)", "-", &rate(self.sent.packets)));
        rows.push(row(
            "  refused by its kernel, skipped",
            "-",
            &format!("{}, {}", self.sent.refused, self.sent.skipped),
        ));
        rows.push(row("arrived at A's namespace (/s)", "-", &rate(self.arrived)));
        rows.push(row("  dropped by A's kernel (UDP InErrors)", "-", &self.kernel_drops.to_string()));
        rows.push(row("read by A (`received`, all traffic)", "-", &rate(self.read)));
        if forged_net {
            rows.push(row("A answered forged sources (/s)", "-", &rate(self.answered)));
        }
        rows.push(row("flood duration (s)", "-", &format!("{:.2}", self.sent.secs)));
        rows.push(row("A's CPU per datagram read (us)", "-", &format!("{:.1}", self.cpu_us_per_read)));
    }
}

/// After `flood` stopped: what it delivered between `start` and `end`, once A's `stats`
/// account for every datagram that reached its namespace: dropped by its kernel, or read
/// and counted under one of `handled` (e.g. `broker_challenged`, `dropped_overload`). A
/// datagram neither dropped by the kernel nor counted by the node fails the test, after
/// [`WAIT`], saying so.
fn delivered(
    lab: &mut FloodLab,
    sent: Sent,
    (start, end): (&Snapshot, &Snapshot),
    before: &Stats,
    handled: &[&str],
) -> (Delivered, Stats) {
    let arrived = end.arrived - start.arrived;
    let drops = end.kernel_drops - start.kernel_drops;
    let counted = |s: &Stats| handled.iter().map(|key| s.since(before, key)).sum::<u64>();
    let after =
        match lab.a.try_wait_json(|v| v["event"] == "stats" && counted(&Stats(v.clone())) + drops >= arrived, WAIT) {
            Ok(v) => Stats(v),
            Err(e) => {
                let last = lab.a.json_lines().into_iter().rev().find(|v| v["event"] == "stats").map(Stats).unwrap();
                panic!(
                    "A never accounted for the flood: {arrived} forged datagrams reached its namespace, its kernel \
                 dropped {drops}, the node counted {} as {handled:?}\n{}\n{e}",
                    counted(&last),
                    last.0
                )
            }
        };
    let read = after.since(before, "received");
    let delivered = Delivered {
        arrived,
        kernel_drops: drops,
        read,
        answered: end.answered - start.answered,
        cpu_pct: start.cpu_pct(end),
        cpu_us_per_read: (end.cpu_ns - start.cpu_ns) as f64 / 1000.0 / read as f64,
        sent,
    };
    (delivered, after)
}

fn row(what: &str, without: &str, with: &str) -> [String; 3] {
    [what.to_owned(), without.to_owned(), with.to_owned()]
}

fn print_table(title: &str, rows: &[[String; 3]]) {
    let w = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let v = rows.iter().map(|r| r[1].len()).max().unwrap_or(0).max("without flood".len());
    println!("\n{title}");
    println!("{:<w$}  {:>v$}  with flood", "", "without flood");
    for r in rows {
        println!("{:<w$}  {:>v$}  {}", r[0], r[1], r[2]);
    }
}

// ---------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------

/// `introducer ping TARGET --count PINGS` on `host`, started now.
fn spawn_ping(lab: &FloodLab, host: &Host, target: &str) -> (LabChild, Instant) {
    let bootstrap = lab.std.bootstrap();
    let count = PINGS.to_string();
    let args =
        ["ping", target, "--bootstrap", &bootstrap, "--count", &count, "--interval", PING_INTERVAL, "--timeout", "20"];
    let cmd = host.introducer_command(&args);
    (host.spawn_command("ping", cmd), Instant::now())
}

/// A ping that succeeded: connected, every ping answered.
struct Ping {
    connected: Value,
    /// From the start of the process to `connected`: NAT probing, registering, being
    /// introduced and punching.
    to_connected: Duration,
    rtts: Vec<f64>,
}

impl Ping {
    fn connect_ms(&self) -> f64 {
        self.connected["connect_ms"].as_f64().expect("connected carries connect_ms")
    }

    fn rtt_median(&self) -> f64 {
        let mut rtts = self.rtts.clone();
        rtts.sort_by(f64::total_cmp);
        rtts[rtts.len() / 2]
    }

    fn path(&self) -> String {
        format!("{} / {}", self.connected["path"], self.connected["strategy"]).replace('"', "")
    }
}

/// Waits for a ping to connect and exit; asserts it exited 0 with every ping answered.
fn finish_ping(ping: &mut LabChild, started: Instant) -> Ping {
    let connected = ping.wait_json(|v| v["event"] == "connected", WAIT);
    let to_connected = started.elapsed();
    let status = ping.wait_exit(WAIT);
    assert!(status.success(), "ping failed: {status}\n{}", ping.context());
    let rtts: Vec<f64> = ping
        .json_lines()
        .iter()
        .filter(|v| v["event"] == "pong")
        .map(|v| v["rtt_ms"].as_f64().expect("pong carries rtt_ms"))
        .collect();
    assert_eq!(rtts.len(), PINGS, "every ping answered:\n{}", ping.context());
    Ping { connected, to_connected, rtts }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------
// 1. Registers
// ---------------------------------------------------------------------------------------

const REGISTER_RATE: u64 = 20_000;
/// Throwaway keys that sign the flood's records, and the addresses it comes from.
const REGISTER_KEYS: u64 = 300;
const REGISTER_SOURCES: u32 = 4096;

/// Registers as an attacker sends them: records of throwaway keys, as large as a real
/// peer's (an address, a NAT report), half without a cookie, half with a guessed one and
/// the key's signature over it; each from its own forged address and port.
fn register_flood(spoofer: &Spoofer, to: SocketAddrV4) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0xf100d);
    let keys: Vec<(Identity, pb::SignedPeerRecord)> = (0..REGISTER_KEYS)
        .map(|seed| {
            let identity = Identity::from_seed(10_000 + seed);
            let record = identity.sign_record(pb::PeerRecord {
                private_addrs: vec![SocketAddr::from(([10, 9, 0, 2], 3478)).into()],
                nat: Some(pb::NatReport {
                    mapping: pb::Mapping::EndpointIndependent as i32,
                    filtering: pb::Filtering::AddressAndPortDependent as i32,
                    allocation: pb::Allocation::Preserving as i32,
                    public_addr: Some(SocketAddr::from(([203, 0, 113, 200], 3478)).into()),
                    ..Default::default()
                }),
                issued_ms: 1_700_000_000_000 + seed,
                ..Default::default()
            });
            (identity, record)
        })
        .collect();
    (0..2 * REGISTER_SOURCES)
        .map(|n| {
            let (identity, record) = &keys[n as usize % keys.len()];
            let nonce = rng.gen();
            let register = if n % 2 == 0 {
                pb::Register { record: Some(record.clone()), nonce, ..Default::default() }
            } else {
                let cookie = rng.gen();
                let proof = identity.register_proof(cookie, nonce).into();
                pb::Register { record: Some(record.clone()), cookie, nonce, proof, topics: vec![] }
            };
            let src = SocketAddrV4::new(forged_ip(n % REGISTER_SOURCES), rng.gen_range(1024..=65535));
            spoofer.packet(src, to, n as u16, &encode_envelope(&pb::Envelope { kind: Some(Kind::Register(register)) }))
        })
        .collect()
}

/// 20,000 forged Registers a second at introducer A while a peer registers with it and a
/// NATed pair is introduced by it and punches: both must work, and what the flood cost is
/// printed next to the same without it.
#[test]
fn a_register_flood_does_not_stop_registering_introducing_and_punching() {
    if !is_root() {
        eprintln!("skipped: the register flood needs root (network namespaces, nftables, raw sockets)");
        return;
    }
    let t0 = Instant::now();
    let mut lab = FloodLab::new("fr");
    let (_, pinger) = lab.std.natted_host("p", NatBehavior::PORT_RESTRICTED);
    let (_, quiet_host) = lab.std.natted_host("t1", NatBehavior::PORT_RESTRICTED);
    let (_, flooded_host) = lab.std.natted_host("t2", NatBehavior::PORT_RESTRICTED);
    let introducer = SocketAddrV4::new(A_IP, PORT);
    let spoofer = lab.spoofer();
    let packets = register_flood(&spoofer, introducer);

    // Without the flood.
    let quiet_start = lab.snapshot();
    let (_quiet_target, quiet_id, quiet_registered) = lab.peer(&quiet_host);
    let (mut ping, started) = spawn_ping(&lab, &pinger, &quiet_id);
    let quiet = finish_ping(&mut ping, started);
    let quiet_cpu = quiet_start.cpu_pct(&lab.snapshot());

    // With it: the target registers, the pinger registers, both are introduced and punch.
    let before = lab.stats_now();
    let start = lab.snapshot();
    let flood = Flood::start(spoofer, packets, REGISTER_RATE);
    await_flood(&mut lab, &before, REGISTER_RATE / 10);
    let (_flooded_target, flooded_id, flooded_registered) = lab.peer(&flooded_host);
    let (mut ping, started) = spawn_ping(&lab, &pinger, &flooded_id);
    let flooded = finish_ping(&mut ping, started);
    let sent = flood.stop();
    let end = lab.snapshot();
    // Every forged Register that A read was answered with a challenge, smaller than
    // itself, and went no further (what the cookie costs shows as CPU per datagram).
    let handled = ["broker_challenged", "dropped_overload"];
    let (delivered, after) = delivered(&mut lab, sent, (&start, &end), &before, &handled);

    let mut rows = Vec::new();
    delivered.rows(&mut rows, true);
    rows.push(row("  Registers challenged", "-", &after.since(&before, "broker_challenged").to_string()));
    rows.push(row("  dropped_overload", "-", &after.since(&before, "dropped_overload").to_string()));
    rows.push(row("A's CPU (% of a core)", &format!("{quiet_cpu:.1}"), &format!("{:.1}", delivered.cpu_pct)));
    rows.push(row("target: start -> registered (ms)", &ms(quiet_registered), &ms(flooded_registered)));
    rows.push(row("ping: start -> connected (ms)", &ms(quiet.to_connected), &ms(flooded.to_connected)));
    rows.push(row("ping: connect_ms", &format!("{:.1}", quiet.connect_ms()), &format!("{:.1}", flooded.connect_ms())));
    rows.push(row(
        "ping: RTT median (ms)",
        &format!("{:.2}", quiet.rtt_median()),
        &format!("{:.2}", flooded.rtt_median()),
    ));
    rows.push(row("ping: path / strategy", &quiet.path(), &flooded.path()));
    print_table("Register flood (forged, no or guessed cookies) at introducer A", &rows);
    println!("whole test {:.1} s", t0.elapsed().as_secs_f64());

    for ping in [&quiet, &flooded] {
        assert_eq!(ping.path(), "direct / simultaneous-open", "punched through A's introduction: {}", ping.connected);
    }
    assert!(
        delivered.arrived as f64 >= 0.5 * REGISTER_RATE as f64 * delivered.sent.secs,
        "the flood was too thin to say anything: {} datagrams in {:.1} s",
        delivered.arrived,
        delivered.sent.secs
    );
    assert_eq!(after.since(&before, "broker_registered"), 2, "the target and the pinger registered: {}", after.0);
}

// ---------------------------------------------------------------------------------------
// 2. STUN
// ---------------------------------------------------------------------------------------

const STUN_RATE: u64 = 10_000;
/// How many forged datagrams A reads before `nat` starts: enough for every forged source
/// of the returning flood to have come back (a source's first request may not spend the
/// budget's last tokens, a returning one may), and for the one-off flood to churn the
/// table: the flood's steady state, not its first second.
const STUN_WARMUP: u64 = 12_000;

/// Binding requests from `sources` forged addresses, each in turn: every address comes
/// back every `sources / STUN_RATE` seconds (0.6 s for 6,000, as often as a probing client
/// retransmits; 13 s for the whole forged network, which the budget sees as one-off).
fn stun_flood(spoofer: &Spoofer, to: SocketAddrV4, sources: u32) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0x5700);
    (0..sources.max(2 * STUN_RATE as u32))
        .map(|n| {
            let src = SocketAddrV4::new(forged_ip(n % sources), rng.gen_range(1024..=65535));
            spoofer.packet(src, to, n as u16, &Message::binding_request(rng.gen()).encode())
        })
        .collect()
}

/// What `introducer nat --bootstrap A` on `host` said (its report, or why it failed), how
/// long it took, and the STUN requests its NAT let out to A and the answers it let in.
struct Classified {
    report: Result<Value, String>,
    took: Duration,
    requests: u64,
    answers: u64,
}

fn classify(lab: &FloodLab, host: &Host, nat: &Host) -> Classified {
    let before = read_counters(nat, TABLE);
    let started = Instant::now();
    let out = host.run_timeout(INTRODUCER, ["nat", "--json", "--bootstrap", &lab.std.bootstrap()], WAIT);
    let took = started.elapsed();
    let after = read_counters(nat, TABLE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = match out.status.success() {
        true => Ok(serde_json::from_str(stdout.trim()).expect("nat prints one JSON object")),
        false => Err(format!("{}: {}{stdout}", out.status, String::from_utf8_lossy(&out.stderr))),
    };
    let grew = |name: &str| after[name].0 - before[name].0;
    Classified { report, took, requests: grew("stun_out"), answers: grew("stun_in") }
}

/// 10,000 forged STUN Binding requests a second from `sources` addresses at introducer A
/// while `introducer nat` classifies a full-cone NAT against it (the behaviour whose
/// filtering tests need the most answers: a lost one reads as filtering).
fn stun_flood_during_classification(name: &str, sources: u32) {
    if !is_root() {
        eprintln!("skipped: the STUN flood needs root (network namespaces, nftables, raw sockets)");
        return;
    }
    let t0 = Instant::now();
    let behavior = NatBehavior::FULL_CONE;
    let mut lab = FloodLab::new(name);
    let (nat, host) = lab.std.natted_host("h", behavior);
    // At the client's NAT: its STUN requests to A's addresses, and their answers.
    let (a_ips, stun) = (format!("{{ {A_IP}, {A_ALT_IP} }}"), "@th,96,32 0x2112a442");
    let rules = [
        format!("iifname \"lan\" ip daddr {a_ips} {stun} counter name \"stun_out\""),
        format!("iifname \"wan\" ip saddr {a_ips} {stun} counter name \"stun_in\""),
    ];
    load_counters(nat.router(), TABLE, &["stun_out".into(), "stun_in".into()], &rules);
    let spoofer = lab.spoofer();
    let packets = stun_flood(&spoofer, SocketAddrV4::new(A_IP, PORT), sources);

    let quiet_start = lab.snapshot();
    let quiet = classify(&lab, &host, nat.router());
    let quiet_cpu = quiet_start.cpu_pct(&lab.snapshot());
    assert_classified(quiet.report.as_ref().expect("nat without a flood"), behavior, nat.wan_ip());
    nat.flush_conntrack();

    let before = lab.stats_now();
    let start = lab.snapshot();
    let flood = Flood::start(spoofer, packets, STUN_RATE);
    await_flood(&mut lab, &before, STUN_WARMUP);
    let flooded = classify(&lab, &host, nat.router());
    let sent = flood.stop();
    let end = lab.snapshot();
    // Answers are not counted per kind: all that A read, then.
    let (delivered, after) = delivered(&mut lab, sent, (&start, &end), &before, &["received"]);

    let mut rows = Vec::new();
    delivered.rows(&mut rows, true);
    rows.push(row("  stun_rate_limited", "-", &after.since(&before, "stun_rate_limited").to_string()));
    rows.push(row("A's CPU (% of a core)", &format!("{quiet_cpu:.1}"), &format!("{:.1}", delivered.cpu_pct)));
    rows.push(row("nat: duration (ms)", &ms(quiet.took), &ms(flooded.took)));
    let asked = |c: &Classified| format!("{} / {}", c.answers, c.requests);
    rows.push(row("nat: answers / requests", &asked(&quiet), &asked(&flooded)));
    for key in ["mapping", "filtering", "allocation"] {
        let said = |c: &Classified| match &c.report {
            Ok(r) => r[key].as_str().unwrap_or("?").to_owned(),
            Err(_) => "failed".to_owned(),
        };
        rows.push(row(&format!("nat: {key}"), &said(&quiet), &said(&flooded)));
    }
    print_table(&format!("STUN flood (forged Binding requests, {sources} sources) at introducer A"), &rows);
    println!("whole test {:.1} s", t0.elapsed().as_secs_f64());

    assert!(
        delivered.arrived as f64 >= 0.5 * STUN_RATE as f64 * delivered.sent.secs,
        "the flood was too thin to say anything: {} datagrams in {:.1} s",
        delivered.arrived,
        delivered.sent.secs
    );
    let report = flooded.report.unwrap_or_else(|e| panic!("nat failed during the flood: {e}"));
    assert_classified(&report, behavior, nat.wan_ip());
}

/// The flood: 6,000 addresses, each back every 0.6 s, as clients come back.
#[test]
fn a_stun_flood_from_6000_returning_sources_does_not_stop_nat_classification() {
    stun_flood_during_classification("fs", 6_000);
}

/// Every request from an address not seen for 13 s (the whole forged /15 in turn): what
/// the budget's reserve for returning sources is for.
#[test]
fn a_stun_flood_from_one_off_sources_does_not_stop_nat_classification() {
    stun_flood_during_classification("fo", 1 << 17);
}

// ---------------------------------------------------------------------------------------
// 3. IntroduceRequests forged from a registered peer's address
// ---------------------------------------------------------------------------------------

const INTRODUCE_RATE: u64 = 20_000;
/// The pair's introductions A makes before the punch is let through (see the test).
const HELD_INTRODUCTIONS: usize = 2;

/// IntroduceRequests from `from` with made-up MACs: half name `victim` (a registered peer,
/// which an introduction would make punch `from`'s NAT), half made-up peers (an error
/// would go to `from`).
fn introduce_flood(spoofer: &Spoofer, from: SocketAddrV4, to: SocketAddrV4, victim: &PeerId) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0x1a7d);
    (0..4096u32)
        .map(|n| {
            let target = if n % 2 == 0 { *victim } else { PeerId::random() };
            let request =
                pb::IntroduceRequest { target: target.to_bytes().into(), request_id: rng.gen(), mac: rng.gen() };
            let envelope = pb::Envelope { kind: Some(Kind::IntroduceRequest(request)) };
            spoofer.packet(from, to, n as u16, &encode_envelope(&envelope))
        })
        .collect()
}

/// One run of the third test: a ping from behind `pinger_nat` to `target`, held until A
/// introduced the pair [`HELD_INTRODUCTIONS`] times (with the flood, counted from when A
/// is seen dropping it), then let through.
struct Held {
    ping: Ping,
    /// From letting the punch through to `connected`.
    released_to_connected: Duration,
    /// The pinger's registered address, which the flood forges.
    pinger: SocketAddrV4,
    pinger_id: String,
    /// Datagrams from A to that address from when A reported it registered.
    from_a: u64,
    /// Introduction requests A took meanwhile (the pinger repeats its own until its punch
    /// settles): each earns the pinger one introduction.
    introduced: u64,
}

/// 20,000 IntroduceRequests a second with bad MACs, forged from the public address of a
/// registered peer (its NAT's mapping), while that very peer is introduced and punches.
///
/// `introducer ping` registers from an ephemeral port, so the address to forge is known
/// only once A reports the registration, and its first request follows at once. So that
/// its requests meet the flood, the punch is held (the target's NAT drops the pinger's
/// datagrams) until A has introduced the pair twice more with the flood running: the
/// pinger repeats its request every 500 ms until the punch settles. Then the punch is let
/// through. The run without the flood is held the same way.
#[test]
fn an_introduce_request_flood_from_a_peers_address_aims_nothing_and_does_not_stop_it() {
    if !is_root() {
        eprintln!("skipped: the IntroduceRequest flood needs root (network namespaces, nftables, raw sockets)");
        return;
    }
    let t0 = Instant::now();
    let mut lab = FloodLab::new("fi");
    let (pinger_nat, pinger) = lab.std.natted_host("p", NatBehavior::PORT_RESTRICTED);
    let (target_nat, target_host) = lab.std.natted_host("t", NatBehavior::PORT_RESTRICTED);
    let (victim_nat, victim_host) = lab.std.natted_host("v", NatBehavior::PORT_RESTRICTED);
    let (_target, target_id, _) = lab.peer(&target_host);
    let (mut victim, victim_id, _) = lab.peer(&victim_host);
    let victim_peer: PeerId = victim_id.parse().unwrap();
    let introducer = SocketAddrV4::new(A_IP, PORT);
    let pinger_wan = pinger_nat.wan_ip();

    // At the pinger's NAT: whatever the victim sends it (punches, had the flood made A
    // introduce them). At the victim's NAT: the pinger's punches.
    let from_victim = format!("iifname \"wan\" ip saddr {} counter name \"from_victim\"", victim_nat.wan_ip());
    load_counters(pinger_nat.router(), TABLE, &["from_victim".into()], &[from_victim]);
    let from_pinger = format!("iifname \"wan\" ip saddr {pinger_wan} counter name \"from_pinger\"");
    load_counters(victim_nat.router(), TABLE, &["from_pinger".into()], &[from_pinger]);
    let counts = || -> (Counts, Counts) {
        (read_counters(pinger_nat.router(), TABLE), read_counters(victim_nat.router(), TABLE))
    };

    // One held ping; `flood` starts the flood at the pinger's address once it is known.
    let run = |lab: &mut FloodLab, flood: Option<Spoofer>| -> (Held, Option<(Flood, Stats)>) {
        let hold = format!("iifname \"wan\" ip saddr {pinger_wan} meta l4proto udp counter name \"held\" drop");
        load_counters(target_nat.router(), "hold", &["held".into()], &[hold]);
        let before_ping = lab.stats_now();
        let (mut ping, started) = spawn_ping(lab, &pinger, &target_id);
        let registered = lab.a.wait_json(
            |v| {
                v["event"] == "peer_registered"
                    && v["addr"].as_str().is_some_and(|a| a.starts_with(&format!("{pinger_wan}:")))
            },
            WAIT,
        );
        let pinger_addr = match registered["addr"].as_str().unwrap().parse() {
            Ok(SocketAddr::V4(a)) => a,
            other => panic!("{other:?}"),
        };
        let pinger_id = registered["peer_id"].as_str().unwrap().to_owned();
        // Everything A sends the registered address from now on.
        let (ip, port) = (pinger_addr.ip(), pinger_addr.port());
        let from_a = format!(
            "iifname \"wan\" ip saddr {A_IP} udp sport {PORT} ip daddr {ip} udp dport {port} counter name \"from_a\""
        );
        load_counters(pinger_nat.router(), "to_pinger", &["from_a".into()], &[from_a]);
        let flooding = flood.map(|spoofer| {
            let before = lab.stats_now();
            let packets = introduce_flood(&spoofer, pinger_addr, introducer, &victim_peer);
            let flood = Flood::start(spoofer, packets, INTRODUCE_RATE);
            (flood, before)
        });
        // Hold the punch until A introduced the pair HELD_INTRODUCTIONS times (the pinger
        // repeats its request while its punch goes on; the only introductions here, A
        // counts each) since the flood showed (its bad MACs counted), or since the pinger
        // registered.
        let mut since = flooding.is_none().then(|| lab.stats_now());
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stats = Stats(lab.a.wait_json(|v| v["event"] == "stats", left));
            match (&since, &flooding) {
                (Some(from), _) if stats.since(from, "broker_introduced") >= HELD_INTRODUCTIONS as u64 => break,
                (None, Some((_, before))) if stats.since(before, "broker_dropped_bad_mac") >= INTRODUCE_RATE / 20 => {
                    since = Some(stats)
                }
                _ => {}
            }
        }
        let released = Instant::now();
        delete_table(target_nat.router(), "hold");
        let ping_done = finish_ping(&mut ping, started);
        let released_to_connected = (started + ping_done.to_connected).saturating_duration_since(released);
        let from_a = read_counters(pinger_nat.router(), "to_pinger")["from_a"].0;
        delete_table(pinger_nat.router(), "to_pinger");
        let introduced = lab.stats_now().since(&before_ping, "broker_introduced");
        (Held { ping: ping_done, released_to_connected, pinger: pinger_addr, pinger_id, from_a, introduced }, flooding)
    };

    let quiet_start = lab.snapshot();
    let (quiet, _) = run(&mut lab, None);
    let quiet_cpu = quiet_start.cpu_pct(&lab.snapshot());
    let (quiet_at_pinger, quiet_at_victim) = counts();

    let spoofer = lab.spoofer();
    let start = lab.snapshot();
    let (flooded, flooding) = run(&mut lab, Some(spoofer));
    let (flood, before) = flooding.expect("flooded");
    let sent = flood.stop();
    let end = lab.snapshot();
    let (flooded_at_pinger, flooded_at_victim) = counts();
    // Counted: every forged request A read was dropped for its MAC.
    let handled = ["broker_dropped_bad_mac", "dropped_overload"];
    let (delivered, after) = delivered(&mut lab, sent, (&start, &end), &before, &handled);
    // Every `introduced` A printed in the whole test: the pair's only.
    while lab.a.next_line(Duration::ZERO).is_some() {}
    let introduced: Vec<Value> = lab.a.json_lines().into_iter().filter(|v| v["event"] == "introduced").collect();
    // One line per introduction, however often its request was repeated.
    for run in [&quiet, &flooded] {
        assert_eq!(introduced.iter().filter(|v| v["requester"] == run.pinger_id.as_str()).count(), 1);
    }
    // The victim connected to nobody (it would, had A introduced it to the pinger).
    while victim.next_line(Duration::ZERO).is_some() {}
    let victim_connected: Vec<Value> = victim.json_lines().into_iter().filter(|v| v["event"] == "connected").collect();

    let grew = |a: &Counts, b: &Counts, name: &str| b[name].0 - a[name].0;
    let mut rows = Vec::new();
    delivered.rows(&mut rows, false);
    rows.push(row("  broker_dropped_bad_mac", "-", &after.since(&before, "broker_dropped_bad_mac").to_string()));
    rows.push(row("  dropped_overload", "-", &after.since(&before, "dropped_overload").to_string()));
    rows.push(row("A's CPU (% of a core)", &format!("{quiet_cpu:.1}"), &format!("{:.1}", delivered.cpu_pct)));
    rows.push(row("ping: start -> connected (ms, held)", &ms(quiet.ping.to_connected), &ms(flooded.ping.to_connected)));
    rows.push(row(
        "ping: let through -> connected (ms)",
        &ms(quiet.released_to_connected),
        &ms(flooded.released_to_connected),
    ));
    rows.push(row(
        "ping: RTT median (ms)",
        &format!("{:.2}", quiet.ping.rtt_median()),
        &format!("{:.2}", flooded.ping.rtt_median()),
    ));
    rows.push(row("ping: path / strategy", &quiet.ping.path(), &flooded.ping.path()));
    rows.push(row(
        "A -> the pinger's address: datagrams / introductions",
        &format!("{} / {}", quiet.from_a, quiet.introduced),
        &format!("{} / {}", flooded.from_a, flooded.introduced),
    ));
    rows.push(row(
        "at the pinger's NAT: from the victim",
        &quiet_at_pinger["from_victim"].0.to_string(),
        &grew(&quiet_at_pinger, &flooded_at_pinger, "from_victim").to_string(),
    ));
    rows.push(row(
        "at the victim's NAT: from the pinger",
        &quiet_at_victim["from_pinger"].0.to_string(),
        &grew(&quiet_at_victim, &flooded_at_victim, "from_pinger").to_string(),
    ));
    print_table(
        &format!("IntroduceRequest flood (bad MACs) forged from the pinger's address {}", flooded.pinger),
        &rows,
    );
    println!("quiet run's pinger address {}; whole test {:.1} s", quiet.pinger, t0.elapsed().as_secs_f64());

    assert!(
        delivered.arrived as f64 >= 0.5 * INTRODUCE_RATE as f64 * delivered.sent.secs,
        "the flood was too thin to say anything: {} datagrams in {:.1} s",
        delivered.arrived,
        delivered.sent.secs
    );
    // Aimed nothing: no introduction but the pair's, no error for a made-up target, nothing
    // between the victim and the pinger's NAT.
    assert_eq!(after.since(&before, "broker_unknown_target"), 0, "{}", after.0);
    for v in &introduced {
        assert_eq!(v["target"], target_id.as_str(), "A introduced only the pair: {v}");
    }
    // After it registered, A sent the pinger's address nothing but the pair's introductions
    // (one per request A took: its `broker_introduced` count).
    for run in [&quiet, &flooded] {
        assert!(run.from_a <= run.introduced, "A sent {} more: {} datagrams", run.pinger, run.from_a);
    }
    assert_eq!(quiet_at_pinger["from_victim"].0, 0, "the victim never sends the pinger's NAT anything");
    assert_eq!(flooded_at_pinger["from_victim"].0, 0, "the victim punched the pinger's NAT");
    assert_eq!(flooded_at_victim["from_pinger"].0, 0, "the pinger punched the victim's NAT");
    assert!(victim_connected.is_empty(), "the victim was introduced to someone: {victim_connected:?}");
}
