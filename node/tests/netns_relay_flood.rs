//! Bad input and abuse at the relay, with the real `introducer` binary across real Linux
//! NATs (network namespaces + nftables, see `introducer_lab::netns`).
//!
//! - A flood from one peer: two peers behind random-port symmetric NATs (hard × hard, so
//!   the introducer relays) connect with `introducer connect`, whose stdin is pumped far
//!   faster than the introducer's `--relay-circuit-packets` / `--relay-circuit-rate` allow.
//!   Every datagram the receiving peer prints is checked against the token bucket's bound
//!   at the moment it arrived, the steady rate against the configured one, and the
//!   introducer's `stats` must account for every flooded datagram as either forwarded (and
//!   delivered) or dropped over the limit. A third pair, also relayed, is introduced and
//!   pings through the same introducer while the flood runs.
//! - Garbage and unauthenticated relay frames from a host behind a NAT: undecodable
//!   datagrams, relay frames for circuits that do not exist, requests with bad keys, short
//!   nonces and bad signatures, data from an address that is no side of a circuit. None is
//!   answered with more bytes than it carried (only a cookie challenge, smaller than the
//!   request, comes back to an unproven address); the counters the `stats` event exports
//!   move by exactly what was sent.
//! - A flood of circuit requests from one address (ignored: a known gap, see the test).
//!
//! Needs root and scripts/install-deps.sh, like every `netns_*` test.

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::relay::server::RelayConfig;
use introducer_actors::relay::sign_request;
use introducer_lab::netns::counters::{udp_snmp, Stats};
use introducer_lab::netns::{Host, LabChild, Standard, A_IP, PORT};
use introducer_proto::frame::{self, Decoded, FRAME_BYTE};
use introducer_proto::pb::{self, envelope::Kind, RelayRefusedReason};
use introducer_proto::MAX_DATAGRAM;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// The `introducer` binary the lab runs.
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");
/// `stats` events from the introducer this often (seconds, as given to `--stats-every`).
const STATS_EVERY: &str = "0.25";

/// Introducer A (two IPs, RFC 5780, the relay) started with extra flags, and public node B
/// registered with it: `Standard::start_introducers` with a say in A's relay limits.
struct RelayLab {
    std: Standard,
    a: LabChild,
    _b: LabChild,
}

impl RelayLab {
    fn new(name: &str, relay_args: &[&str]) -> RelayLab {
        let std = Standard::new(name, INTRODUCER);
        let (a, b) = std.start_introducers_with(&[&["--stats-every", STATS_EVERY], relay_args].concat());
        RelayLab { std, a, _b: b }
    }

    /// `introducer run` on `host`, registered with A; returns it and its PeerId.
    fn peer(&self, host: &Host) -> (LabChild, String) {
        self.std.peer(host, &["--stats-every", STATS_EVERY])
    }

    /// The next `stats` event of A for which `pred` holds.
    fn stats(&mut self, mut pred: impl FnMut(&Stats) -> bool) -> Stats {
        let v = self.a.wait_json(|v| v["event"] == "stats" && pred(&Stats(v.clone())), WAIT);
        Stats(v)
    }

    /// The relay's address as peers see it.
    fn relay(&self) -> SocketAddr {
        SocketAddr::from((A_IP, PORT))
    }
}

// ---------------------------------------------------------------------------------------
// A flood from one peer
// ---------------------------------------------------------------------------------------

/// What the relay lets through one direction of one circuit between `t0` and `t0 + dt`, at
/// most, for datagrams whose relayed payload (the session frame) is `len` bytes: both
/// token buckets start at most full at `t0`.
fn bucket_bound(config: &RelayConfig, len: usize, dt: Duration) -> f64 {
    let dt = dt.as_secs_f64();
    let packets = config.packets_burst + config.packets_per_sec * dt;
    let bytes = (config.bytes_burst + config.bytes_per_sec * dt) / len as f64;
    packets.min(bytes)
}

/// The steady rate (datagrams per second) the relay should hold a flood of `len`-byte
/// session frames to.
fn steady_rate(config: &RelayConfig, len: usize) -> f64 {
    config.packets_per_sec.min(config.bytes_per_sec / len as f64)
}

/// What framing adds to a line on its way through the relay, at most: the relay counts
/// the whole session datagram (marker byte, envelope, `Data` with the sealed line, its tag,
/// epoch and counter) as the payload it forwards. Bounds only: the session's framing is
/// its own business, and the test holds for any framing within this.
const FRAMING_MAX: usize = 64;

fn flood_line(seq: u64, len: usize) -> String {
    let mut line = format!("flood {seq:07} ");
    while line.len() < len {
        line.push('x');
    }
    line
}

struct FloodReport {
    /// Flood lines written to the flooding `connect`.
    written: u64,
    /// Marker lines written after the flood.
    markers: u64,
    /// When the last flood line was written.
    flood_end: Instant,
}

/// Writes `rate` lines a second (in 10 ms batches) for `duration`, then one marker line
/// every 100 ms until `marker_seen`.
fn pump(
    stdin: &mut std::process::ChildStdin,
    line_len: usize,
    rate: u64,
    duration: Duration,
    t0: Instant,
    marker_seen: &AtomicBool,
) -> FloodReport {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let mut written = 0;
    let mut next = t0;
    while next < t0 + duration {
        let mut batch = String::new();
        for _ in 0..per_tick {
            batch.push_str(&flood_line(written, line_len));
            batch.push('\n');
            written += 1;
        }
        stdin.write_all(batch.as_bytes()).expect("the flooder reads its stdin");
        // Pacing a traffic generator, not synchronisation.
        next += TICK;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let flood_end = Instant::now();
    // The circuit's buckets refill after the flood; the first marker that finds a token is
    // forwarded behind everything forwarded before it, so its arrival says the receiver
    // has seen all of the flood that got through. One that finds none is dropped (and
    // counted) like the flood, and the next one follows. A marker is in the lab within a
    // millisecond, so 100 ms without it means it was dropped.
    let mut markers = 0;
    while !marker_seen.load(Ordering::SeqCst) {
        writeln!(stdin, "marker {markers}").expect("the flooder reads its stdin");
        markers += 1;
        assert!(markers < 100, "no marker got through the relay in 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    FloodReport { written, markers, flood_end }
}

/// A flood from one relayed peer: `flood_rate` lines of `line_len` bytes a second for
/// `duration` into `introducer connect`, against an introducer whose relay limits are
/// `config` (`relay_args` are the flags that set them).
fn flood(name: &str, relay_args: &[&str], config: RelayConfig, line_len: usize, flood_rate: u64) {
    let duration = Duration::from_secs(3);
    let mut lab = RelayLab::new(name, relay_args);
    let (_, h1) = lab.std.natted_host("p1", NatBehavior::SYMMETRIC_RANDOM);
    let (_, h2) = lab.std.natted_host("p2", NatBehavior::SYMMETRIC_RANDOM);
    let (_, h3) = lab.std.natted_host("p3", NatBehavior::SYMMETRIC_RANDOM);
    let (_, h4) = lab.std.natted_host("p4", NatBehavior::SYMMETRIC_RANDOM);
    let (mut receiver, receiver_id) = lab.peer(&h1);
    let (_third, third_id) = lab.peer(&h3);

    let mut cmd =
        h2.introducer_command(&["connect", &receiver_id, "--bootstrap", &lab.std.bootstrap(), "--timeout", "20"]);
    cmd.stdin(Stdio::piped());
    let mut flooder = h2.spawn_command("flooder", cmd);
    let connected = flooder.wait_json(|v| v["event"] == "connected", WAIT);
    assert_eq!((connected["path"].as_str(), connected["strategy"].as_str()), (Some("relayed"), Some("relay")));
    assert_eq!(connected["remote"], lab.relay().to_string(), "the introducer relays: {connected}");
    let on_receiver = receiver.wait_json(|v| v["event"] == "connected", WAIT);
    assert_eq!(on_receiver["path"], "relayed", "{on_receiver}");
    lab.a.wait_json(|v| v["event"] == "relaying", WAIT);
    let before = lab.stats(|_| true);

    // The relay counts a line as at least its own length and at most FRAMING_MAX more.
    let (shortest, longest) = (line_len, line_len + FRAMING_MAX);
    let (slowest, fastest) = (steady_rate(&config, longest), steady_rate(&config, shortest));
    let marker_seen = AtomicBool::new(false);
    let stdin = flooder.stdin().expect("stdin is piped");
    let bootstrap = lab.std.bootstrap();
    let t0 = Instant::now();
    // (seconds since t0, flood seq) of every flood line the receiver printed.
    let mut arrivals: Vec<(f64, u64)> = Vec::new();
    let mut markers_in = 0;
    // Datagrams the relay's kernel drops for a full socket buffer.
    let kernel_before = udp_snmp(&lab.std.a)["RcvbufErrors"];
    let (report, ping, ping_done) = std::thread::scope(|s| {
        let writer = s.spawn(|| pump(stdin, line_len, flood_rate, duration, t0, &marker_seen));
        // The third pair gets introduced, relayed and pings while the flood runs.
        let pinger = s.spawn(|| {
            let out = h4.run_timeout(
                INTRODUCER,
                ["ping", &third_id, "--bootstrap", &bootstrap, "--json", "--count", "5", "--interval", "0.2"],
                Duration::from_secs(30),
            );
            (out, Instant::now())
        });
        while !marker_seen.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < duration + Duration::from_secs(15), "the flood never ended");
            let Some(line) = receiver.next_line(Duration::from_millis(50)) else { continue };
            let v: Value = serde_json::from_str(&line).expect("stdout is JSON lines");
            if v["event"] != "data" {
                continue;
            }
            let data = v["data"].as_str().expect("data events carry data");
            if data.starts_with("marker ") {
                markers_in += 1;
                marker_seen.store(true, Ordering::SeqCst);
            } else {
                let seq = data.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a flood line");
                assert_eq!(data, flood_line(seq, line_len), "delivered intact");
                arrivals.push((t0.elapsed().as_secs_f64(), seq));
            }
        }
        let report = writer.join().expect("writer");
        let (ping, ping_done) = pinger.join().expect("pinger");
        (report, ping, ping_done)
    });
    let written = report.written;
    let delivered = arrivals.len() as u64;

    // Every flooded line, and every marker, was either forwarded or dropped over the limit,
    // and the relay counted it — or the relay's kernel dropped it before the node could
    // read it (its socket buffer overflows when the machine is busy), and the kernel counted
    // it. What the relay forwards also holds the other circuit's pings and both circuits'
    // keepalives: OTHER_TRAFFIC at most in these seconds. (Session keepalives from the
    // flooder share the direction and may be dropped too.)
    const OTHER_TRAFFIC: u64 = 20;
    let sent = written + report.markers;
    let through = delivered + markers_in;
    let kernel_dropped = || udp_snmp(&lab.std.a)["RcvbufErrors"] - kernel_before;
    let accounted = |s: &Stats| {
        let lost = kernel_dropped();
        s.since(&before, "relay_dropped_rate_limited") + s.since(&before, "relay_forwarded_packets") + lost >= sent
            && s.since(&before, "received") + lost >= sent
    };
    let after = match lab.a.try_wait_json(|v| v["event"] == "stats" && accounted(&Stats(v.clone())), WAIT) {
        Ok(v) => Stats(v),
        Err(e) => {
            let last = lab.a.json_lines().into_iter().rev().find(|v| v["event"] == "stats").map(Stats).unwrap();
            let receiver_stats = receiver.json_lines().into_iter().rev().find(|v| v["event"] == "stats");
            panic!(
                "the relay never accounted for the flood: sent {sent}, delivered {through}, received +{}, dropped over \
                 the limit +{}, dropped_overload +{}; kernel UDP counters on the relay {:?}, on the flooder {:?}; \
                 receiver {receiver_stats:?}; relay {}\n{e}",
                last.since(&before, "received"),
                last.since(&before, "relay_dropped_rate_limited"),
                last.since(&before, "dropped_overload"),
                udp_snmp(&lab.std.a),
                udp_snmp(&h2),
                last.0,
            )
        }
    };
    let kernel_dropped = kernel_dropped();
    // The node's own count of its socket's kernel drops (SO_RXQ_OVFL) sees no more than the
    // kernel's count for the whole namespace, and lags it by the drops after the last
    // datagram read.
    let node_kernel = after.since(&before, "dropped_kernel");
    assert!(node_kernel <= kernel_dropped, "the node counted {node_kernel} kernel drops, the kernel {kernel_dropped}");
    let dropped = after.since(&before, "relay_dropped_rate_limited");
    let forwarded = after.since(&before, "relay_forwarded_packets");
    let flood_secs = (report.flood_end - t0).as_secs_f64();
    let steady: Vec<f64> = arrivals.iter().map(|a| a.0).filter(|&t| t >= 0.5 && t <= flood_secs).collect();
    let measured = steady.len() as f64 / (flood_secs - 0.5);
    let mean_size = after.since(&before, "relay_forwarded_bytes") as f64 / forwarded as f64;
    println!(
        "{name}: wrote {written} lines of {line_len} B in {flood_secs:.2} s ({:.0}/s); delivered {delivered} \
         (+{markers_in} of {} markers); relay forwarded {forwarded} (both directions, all circuits, \
         {mean_size:.0} B on average), dropped over the limit {dropped}, lost in the relay's kernel buffer \
         {kernel_dropped}; steady rate {measured:.1}/s (limit {slowest:.1}..{fastest:.1}/s), burst {:.0}",
        written as f64 / flood_secs,
        report.markers,
        bucket_bound(&config, longest, Duration::ZERO),
    );

    // The flood was one: many times what the relay lets through.
    assert!(written as f64 > 10.0 * bucket_bound(&config, shortest, duration), "the flood was too thin: {written}");
    // Never more than the buckets hold at any moment: burst plus rate since t0 (the relay
    // forwarded each line before the receiver printed it, after t0).
    for (i, &(t, seq)) in arrivals.iter().enumerate() {
        let bound = bucket_bound(&config, shortest, Duration::from_secs_f64(t));
        assert!(
            (i + 1) as f64 <= bound + 1.0,
            "{} lines delivered {t:.3} s into the flood (line {seq}): the relay's bound is {bound:.1}",
            i + 1
        );
    }
    // And the limit throttles, it does not starve: the steady rate is the configured one.
    assert!(
        measured >= 0.85 * slowest && measured <= 1.15 * fastest,
        "steady relayed rate {measured:.1}/s, configured {slowest:.1}..{fastest:.1}/s"
    );
    let allowed = bucket_bound(&config, longest, report.flood_end - t0);
    assert!(delivered as f64 >= 0.85 * allowed, "delivered {delivered}, the buckets allowed at least {allowed:.0}");
    // Accounting: what was not forwarded was dropped over the limit (or by the relay's
    // kernel) and counted, and nothing was lost anywhere else in the relay (overloaded
    // mailboxes, send errors).
    let extra = (dropped + forwarded + kernel_dropped) as i64 - sent as i64;
    assert!(
        (0..=OTHER_TRAFFIC as i64).contains(&extra),
        "dropped {dropped} + forwarded {forwarded} + lost in the kernel {kernel_dropped} vs sent {sent}"
    );
    // The receiver got what the relay forwarded, but for what the lab's network lost on the
    // way under load (seen: a few, never counted by any kernel counter we can read).
    assert!(through + OTHER_TRAFFIC >= forwarded, "forwarded {forwarded}, delivered {through}");
    assert!(forwarded >= through, "forwarded {forwarded} < delivered {through}");
    assert_eq!(after.since(&before, "dropped_overload"), 0, "{}", after.0);
    assert_eq!(after.since(&before, "send_errors"), 0, "{}", after.0);
    // Delivered intact and in order.
    assert!(arrivals.windows(2).all(|w| w[0].1 < w[1].1), "relayed lines arrive in order");

    // The other circuit, set up and used during the flood, was not starved.
    let stdout = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "ping during the flood failed: {}\n{stdout}", String::from_utf8_lossy(&ping.stderr));
    assert!(ping_done < report.flood_end, "the third pair's ping ran during the flood");
    let events: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    assert_eq!((events[0]["event"].as_str(), events[0]["path"].as_str()), (Some("connected"), Some("relayed")));
    let rtts: Vec<f64> =
        events.iter().filter(|e| e["event"] == "pong").map(|e| e["rtt_ms"].as_f64().unwrap()).collect();
    assert_eq!(rtts.len(), 5, "every ping answered during the flood: {stdout}");
    assert!(rtts.iter().all(|&r| r < 250.0), "relayed pings stayed fast during the flood: {rtts:?} ms");
    assert_eq!(after.since(&before, "relay_circuits_ready"), 1, "the third pair's circuit: {}", after.0);
    println!("{name}: third pair connected in {} ms during the flood, ping rtts {rtts:?} ms", events[0]["connect_ms"]);
}

/// 50 datagrams a second per direction (burst 100, the default): a flood of 5000 small
/// lines a second gets 50 a second through, the rest is dropped and counted.
#[test]
fn relay_packet_limit_holds_under_a_flood_from_one_peer() {
    let config = RelayConfig { packets_per_sec: 50.0, ..RelayConfig::default() };
    flood("fp", &["--relay-circuit-packets", "50"], config, 100, 5000)
}

/// 20 kB a second per direction (burst 64 KiB, the default): a flood of 1000-byte lines,
/// 2000 a second, gets about 20 a second through once the burst is spent.
#[test]
fn relay_byte_limit_holds_under_a_flood_from_one_peer() {
    let config = RelayConfig { bytes_per_sec: 20_000.0, ..RelayConfig::default() };
    flood("fb", &["--relay-circuit-rate", "20000"], config, 1000, 2000)
}

// ---------------------------------------------------------------------------------------
// Garbage and unauthenticated relay frames
// ---------------------------------------------------------------------------------------

fn datagram(kind: Kind) -> Vec<u8> {
    frame::encode_envelope(&pb::Envelope { kind: Some(kind) })
}

fn kind_of(datagram: &[u8]) -> Option<Kind> {
    match frame::decode(datagram).ok()? {
        Decoded::Envelope(envelope) => envelope.kind,
        Decoded::Stun(_) => None,
    }
}

/// A socket behind a NAT that talks to the relay and keeps score of bytes each way.
struct Prober {
    socket: UdpSocket,
    relay: SocketAddr,
    sent: u64,
    sent_bytes: u64,
    received_bytes: u64,
}

impl Prober {
    fn new(host: &Host, relay: SocketAddr) -> Prober {
        let socket = host.udp_socket((Ipv4Addr::UNSPECIFIED, 0));
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Prober { socket, relay, sent: 0, sent_bytes: 0, received_bytes: 0 }
    }

    fn send(&mut self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.relay).expect("send");
        self.sent += 1;
        self.sent_bytes += datagram.len() as u64;
    }

    /// Sends `fence` (a frame the relay answers) and returns every datagram that arrives up
    /// to and including its answer (`is_answer`). The relay handles datagrams from one
    /// address in order, so whatever the datagrams sent before the fence earned has
    /// arrived by then.
    fn fence(&mut self, fence: &[u8], is_answer: impl Fn(&Kind) -> bool) -> Vec<Vec<u8>> {
        self.send(fence);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, src)) = self.socket.recv_from(&mut buf) else { continue };
            assert_eq!(src, self.relay, "only the relay answers");
            self.received_bytes += n as u64;
            got.push(buf[..n].to_vec());
            if kind_of(&buf[..n]).as_ref().is_some_and(&is_answer) {
                return got;
            }
        }
        panic!("no answer to the fence within 5 s; got {} other datagrams", got.len());
    }
}

fn request(identity: &Identity, target: &PeerId, nonce: &[u8], cookie: u64) -> pb::RelayRequest {
    sign_request(identity, target, nonce, cookie)
}

fn is_challenge_for(nonce: &[u8]) -> impl Fn(&Kind) -> bool + '_ {
    move |k| matches!(k, Kind::RelayChallenge(c) if c.nonce[..] == *nonce)
}

/// Sends an unsigned-for-this-address request (cookie 0) for `nonce` as a fence; asserts
/// the only answer is a challenge smaller than the request, and returns its cookie.
fn challenge(prober: &mut Prober, identity: &Identity, nonce: &[u8]) -> u64 {
    let ask = datagram(Kind::RelayRequest(request(identity, &PeerId::random(), nonce, 0)));
    let got = prober.fence(&ask, is_challenge_for(nonce));
    assert_eq!(got.len(), 1, "nothing but the challenge came back: {got:?}");
    assert!(got[0].len() < ask.len(), "challenge {} B, request {} B", got[0].len(), ask.len());
    match kind_of(&got[0]) {
        Some(Kind::RelayChallenge(c)) => c.cookie,
        other => unreachable!("{other:?}"),
    }
}

/// Undecodable datagrams, relay frames for unknown circuits, requests with bad keys, short
/// nonces or bad signatures, and data from no side of a circuit, all from behind a NAT:
/// dropped, answered with nothing bigger than they carried, and counted.
#[test]
fn garbage_and_unauthenticated_relay_frames_are_dropped_and_counted() {
    let per_peer = 3;
    let mut lab = RelayLab::new("rg", &["--relay-circuits-per-peer", &per_peer.to_string()]);
    let (_, host) = lab.std.natted_host("g", NatBehavior::SYMMETRIC_RANDOM);
    let relay = lab.relay();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let before = lab.stats(|_| true);
    let mut p = Prober::new(&host, relay);
    let mut other = Prober::new(&host, relay); // another socket: another NAT mapping
    let me = Identity::generate();

    // Undecodable: random bytes after the introducer's first byte (those that happen to
    // decode are skipped), other versions and protocols, empty and oversized datagrams.
    let mut malformed = 0;
    while malformed < 50 {
        let len = rng.gen_range(1..=MAX_DATAGRAM);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        bytes[0] = FRAME_BYTE;
        if frame::decode(&bytes).is_err() {
            p.send(&bytes);
            malformed += 1;
        }
    }
    for bytes in [vec![], vec![FRAME_BYTE], vec![0x0a; 100], vec![0x40; 100], vec![FRAME_BYTE; MAX_DATAGRAM + 1]] {
        assert!(frame::decode(&bytes).is_err());
        p.send(&bytes);
        malformed += 1;
    }
    // Relay frames for circuits that do not exist (64-bit ids nobody was given).
    let unknown_circuit = 40;
    for _ in 0..20 {
        let payload: Vec<u8> = (0..1000).map(|_| rng.gen()).collect();
        p.send(&datagram(Kind::RelaySend(pb::RelayData { circuit: rng.gen(), payload: payload.into() })));
        p.send(&datagram(Kind::RelayClose(pb::RelayClose { circuit: rng.gen() })));
    }
    // Requests the relay cannot even read: a key that is no key, a nonce too short.
    let malformed_requests = 10;
    for _ in 0..5 {
        let mut bad_key = request(&me, &PeerId::random(), &[1; 16], 0);
        bad_key.public_key = (0..36).map(|_| rng.gen()).collect::<Vec<u8>>().into();
        p.send(&datagram(Kind::RelayRequest(bad_key)));
        p.send(&datagram(Kind::RelayRequest(request(&me, &PeerId::random(), &[2; 4], 0))));
    }
    // A request without a cookie, as the fence: its challenge is all that came back.
    let cookie = challenge(&mut p, &me, &[3; 16]);

    // With the cookie of this address but signatures that do not verify: by another key
    // over the same content, and by our key over another cookie.
    let target = PeerId::random();
    let mut bad_signatures = 0;
    for i in 0..5u8 {
        let mut forged = request(&me, &target, &[4 + i; 16], cookie);
        forged.signature = request(&Identity::generate(), &target, &[4 + i; 16], cookie).signature;
        p.send(&datagram(Kind::RelayRequest(forged)));
        let mut stale = request(&me, &target, &[4 + i; 16], cookie ^ 1);
        stale.cookie = cookie;
        p.send(&datagram(Kind::RelayRequest(stale)));
        bad_signatures += 2;
    }
    challenge(&mut p, &me, &[10; 16]);

    // Authenticated from a proven address, but for introductions this relay never made
    // (made-up nonces, made-up targets), and a circuit with oneself: refused, each answer
    // no bigger than its request, and no circuit is created.
    let mut refused = 0;
    let mut not_introduced = 0;
    for i in 0..5u8 {
        let nonce = [20 + i; 16];
        let ask = datagram(Kind::RelayRequest(request(&me, &PeerId::random(), &nonce, cookie)));
        let got = p.fence(&ask, |k| matches!(k, Kind::RelayRefused(r) if r.nonce[..] == nonce));
        assert_eq!(got.len(), 1, "one answer: {got:?}");
        assert!(got[0].len() <= ask.len(), "answer {} B, request {} B", got[0].len(), ask.len());
        match kind_of(&got[0]) {
            Some(Kind::RelayRefused(r)) => assert_eq!(r.reason, RelayRefusedReason::NotIntroduced as i32, "{r:?}"),
            other => panic!("request {i} answered {other:?}"),
        }
        (refused, not_introduced) = (refused + 1, not_introduced + 1);
    }
    let ask = datagram(Kind::RelayRequest(request(&me, &me.peer_id(), &[30; 16], cookie)));
    let got = p.fence(&ask, |k| matches!(k, Kind::RelayRefused(r) if r.nonce[..] == [30; 16]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].len() <= ask.len());
    refused += 1;

    challenge(&mut p, &me, &[40; 16]);
    challenge(&mut other, &me, &[41; 16]);

    let sent = p.sent + other.sent;
    let after = lab.stats(|s| {
        s.since(&before, "received") >= sent
            && s.since(&before, "dropped_malformed") >= malformed
            && s.since(&before, "relay_dropped_bad_signature") >= bad_signatures
            && s.since(&before, "relay_refused") >= refused
            && s.since(&before, "relay_dropped_unknown_circuit") >= unknown_circuit
            && s.since(&before, "relay_dropped_malformed") >= malformed_requests
    });
    println!(
        "garbage: sent {sent} datagrams, {} B; got back {} B (challenges and authenticated answers); \
         stats delta: dropped_malformed {}, relay_dropped_bad_signature {}, relay_refused {}, \
         relay_forwarded_packets {}, relay_circuits_ready {}",
        p.sent_bytes + other.sent_bytes,
        p.received_bytes + other.received_bytes,
        after.since(&before, "dropped_malformed"),
        after.since(&before, "relay_dropped_bad_signature"),
        after.since(&before, "relay_refused"),
        after.since(&before, "relay_forwarded_packets"),
        after.since(&before, "relay_circuits_ready"),
    );
    assert_eq!(after.since(&before, "dropped_malformed"), malformed, "{}", after.0);
    assert_eq!(after.since(&before, "relay_dropped_bad_signature"), bad_signatures, "{}", after.0);
    assert_eq!(after.since(&before, "relay_refused"), refused, "{}", after.0);
    assert_eq!(after.since(&before, "relay_refused_not_introduced"), not_introduced, "{}", after.0);
    assert_eq!(after.since(&before, "relay_dropped_unknown_circuit"), unknown_circuit, "{}", after.0);
    assert_eq!(after.since(&before, "relay_dropped_malformed"), malformed_requests, "{}", after.0);
    assert_eq!(after.since(&before, "relay_circuits_opened"), 0, "no circuit was created: {}", after.0);
    assert_eq!(after.since(&before, "relay_forwarded_packets"), 0, "nothing was forwarded: {}", after.0);
    assert_eq!(after.since(&before, "relay_circuits_ready"), 0, "no circuit became ready: {}", after.0);
    assert_eq!(after.since(&before, "dropped_overload"), 0, "{}", after.0);
    assert!(
        (p.received_bytes + other.received_bytes) * 4 < p.sent_bytes + other.sent_bytes,
        "the relay answered {} B to {} B",
        p.received_bytes + other.received_bytes,
        p.sent_bytes + other.sent_bytes
    );
}

/// A flood of circuit requests from one address with throwaway keys and made-up nonces:
/// keys cost nothing, so circuits are created only for introductions the relay made (a
/// squatter cannot hold the pending slots). A hard × hard pair introduced during the flood
/// gets its circuit.
#[test]
fn a_circuit_flood_from_one_address_does_not_lock_out_other_peers() {
    let config = RelayConfig::default();
    let mut lab = RelayLab::new("cf", &[]);
    let (_, squatter) = lab.std.natted_host("s", NatBehavior::SYMMETRIC_RANDOM);
    let (_, h1) = lab.std.natted_host("p1", NatBehavior::SYMMETRIC_RANDOM);
    let (_, h2) = lab.std.natted_host("p2", NatBehavior::SYMMETRIC_RANDOM);
    let (_target, target_id) = lab.peer(&h1);
    let before = lab.stats(|_| true);
    let mut p = Prober::new(&squatter, lab.relay());
    let mut refused = 0u64;
    let mut seq = 0u64;
    // More requests than there are pending slots.
    for _ in 0..config.max_pending / config.max_circuits_per_peer + 2 {
        let me = Identity::generate();
        let cookie = challenge(&mut p, &me, &[0; 16]);
        for _ in 0..config.max_circuits_per_peer {
            seq += 1;
            let nonce = seq.to_le_bytes().repeat(2);
            let ask = datagram(Kind::RelayRequest(request(&me, &PeerId::random(), &nonce, cookie)));
            let got = p.fence(&ask, |k| match k {
                Kind::RelayAccepted(a) => a.nonce[..] == nonce[..],
                Kind::RelayRefused(r) => r.nonce[..] == nonce[..],
                _ => false,
            });
            match kind_of(got.last().unwrap()) {
                Some(Kind::RelayRefused(r)) if r.reason == RelayRefusedReason::NotIntroduced as i32 => refused += 1,
                other => panic!("a made-up circuit was answered {other:?}"),
            }
        }
    }
    let after = lab.stats(|s| s.since(&before, "relay_refused_not_introduced") >= refused);
    println!("{refused} made-up circuits refused (max_pending {}): {}", config.max_pending, after.0);
    assert!(refused > config.max_pending as u64);
    assert_eq!(after.since(&before, "relay_circuits_opened"), 0);
    let out = h2.run_timeout(
        INTRODUCER,
        ["ping", &target_id, "--bootstrap", &lab.std.bootstrap(), "--json", "--count", "1", "--timeout", "10"],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the relayed pair was refused: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#""path":"relayed""#), "{stdout}");
}
