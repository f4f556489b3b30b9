use super::client::{self, ClientConfig, RelayClient, State};
use super::server::{self, CloseReason, Relay, RelayConfig};
use super::sign_request;
use crate::identity::Identity;
use crate::socket::Fast;
use crate::{Machine, SocketId, Transmit};
use introducer_proto::frame;
use introducer_proto::pb::{self, envelope::Kind, RelayRefusedReason};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const RELAY: &str = "198.51.100.1:3478";
const ALICE: &str = "203.0.113.5:4000";
const BOB: &str = "203.0.113.9:5000";
const MALLORY: &str = "192.0.2.66:6666";
const NONCE: [u8; 16] = [7; 16];
const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn decode(t: &Transmit) -> Kind {
    match frame::decode(&t.payload).unwrap() {
        frame::Decoded::Envelope(e) => e.kind.unwrap(),
        other => panic!("not an envelope: {other:?}"),
    }
}

fn frame_of(kind: Kind) -> Vec<u8> {
    Transmit::envelope(SocketId::PRIMARY, addr(RELAY), kind).payload
}

/// A relay and its clients on a lossless wire with no NATs; everything the relay sends is
/// kept in `sent` for inspection.
struct Net {
    now: Instant,
    relay: Relay,
    clients: Vec<(SocketAddr, RelayClient, Vec<client::Event>)>,
    /// Every datagram the relay sent, in order.
    sent: Vec<Transmit>,
    /// Clients' datagrams go through the socket's fast path first ([`Relay::take_fast`]),
    /// as in the node: what it sends on is rewritten in place.
    fast: bool,
    /// Datagrams the fast path took (sent on or dropped).
    taken: u64,
}

impl Net {
    fn new(config: RelayConfig) -> Net {
        let now = Instant::now();
        let relay = Relay::new(config, now, StdRng::seed_from_u64(1));
        Net { now, relay, clients: Vec::new(), sent: Vec::new(), fast: false, taken: 0 }
    }

    /// Alice and Bob, each asking for the circuit of the same introduction.
    fn alice_and_bob(config: RelayConfig) -> Net {
        Self::alice_and_bob_via(config, false)
    }

    /// Alice and Bob; `fast`: the relay's fast path takes their datagrams first.
    fn alice_and_bob_via(config: RelayConfig, fast: bool) -> Net {
        let mut net = Net::new(config);
        net.fast = fast;
        let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
        net.client(ALICE, a.clone(), &b, &NONCE);
        net.client(BOB, b, &a, &NONCE);
        net.pump();
        net
    }

    /// A client asking for the circuit of an introduction the relay made.
    fn client(&mut self, at: &str, me: Identity, peer: &Identity, nonce: &[u8]) -> usize {
        self.relay.authorize(self.now, nonce, [me.peer_id(), peer.peer_id()]);
        self.stranger(at, me, peer, nonce)
    }

    /// A client asking for a circuit, introduced or not.
    fn stranger(&mut self, at: &str, me: Identity, peer: &Identity, nonce: &[u8]) -> usize {
        let c = RelayClient::new(
            ClientConfig::default(),
            me,
            SocketId::PRIMARY,
            addr(RELAY),
            peer.peer_id(),
            nonce,
            self.now,
        );
        self.clients.push((addr(at), c, Vec::new()));
        self.clients.len() - 1
    }

    fn pump(&mut self) {
        let mut forwarded: Vec<Transmit> = Vec::new();
        loop {
            let mut moved = false;
            let out: Vec<Transmit> =
                forwarded.drain(..).chain(std::iter::from_fn(|| self.relay.poll_transmit())).collect();
            for t in out {
                moved = true;
                // Clients sharing an address (one peer, several circuits) each take their own.
                for (_, c, _) in self.clients.iter_mut().filter(|(a, _, _)| *a == t.dst) {
                    c.handle_datagram(self.now, SocketId::PRIMARY, addr(RELAY), &t.payload);
                }
                self.sent.push(t);
            }
            for (at, c, events) in &mut self.clients {
                while let Some(t) = c.poll_transmit() {
                    moved = true;
                    assert_eq!(t.dst, addr(RELAY));
                    let mut datagram = t.payload.clone();
                    match if self.fast { self.relay.take_fast(self.now, *at, &mut datagram) } else { Fast::Pass } {
                        Fast::Pass => self.relay.handle_datagram(self.now, t.socket, *at, &t.payload),
                        Fast::Done => self.taken += 1,
                        Fast::Send(socket, dst) => {
                            self.taken += 1;
                            forwarded.push(Transmit { socket, dst, payload: datagram });
                        }
                    }
                }
                events.extend(std::iter::from_fn(|| c.poll_event()));
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves time on in steps of at most `step`, firing due timers.
    fn advance(&mut self, by: Duration, step: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + step).min(end);
            if self.relay.poll_timeout().is_some_and(|t| t <= self.now) {
                self.relay.handle_timeout(self.now);
            }
            for (_, c, _) in &mut self.clients {
                if c.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.handle_timeout(self.now);
                }
            }
            self.pump();
        }
    }

    fn c(&mut self, i: usize) -> &mut RelayClient {
        &mut self.clients[i].1
    }

    fn events(&mut self, i: usize) -> Vec<client::Event> {
        std::mem::take(&mut self.clients[i].2)
    }

    fn data(&mut self, i: usize) -> Vec<Vec<u8>> {
        self.events(i)
            .into_iter()
            .filter_map(|e| match e {
                client::Event::Data(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn send(&mut self, i: usize, payload: &[u8]) -> Result<(), client::SendError> {
        let now = self.now;
        let r = self.c(i).send(now, payload);
        self.pump();
        r
    }

    /// Feeds the relay a frame from `src` and returns what it answered.
    fn inject(&mut self, src: &str, kind: Kind) -> Vec<Transmit> {
        self.relay.handle_datagram(self.now, SocketId::PRIMARY, addr(src), &frame_of(kind));
        let out: Vec<Transmit> = std::iter::from_fn(|| self.relay.poll_transmit()).collect();
        self.sent.extend(out.iter().cloned());
        out
    }

    fn relay_events(&mut self) -> Vec<server::Event> {
        std::iter::from_fn(|| self.relay.poll_event()).collect()
    }
}

/// A proven, signed request from `src` by `me` (the cookie round trip done by hand).
fn proven_request(net: &mut Net, src: &str, me: &Identity, target: &Identity, nonce: &[u8]) -> Vec<Transmit> {
    let out = net.inject(src, Kind::RelayRequest(sign_request(me, &target.peer_id(), nonce, 0)));
    let [t] = &out[..] else { panic!("expected one challenge, got {out:?}") };
    let Kind::RelayChallenge(ch) = decode(t) else { panic!("expected a challenge") };
    net.inject(src, Kind::RelayRequest(sign_request(me, &target.peer_id(), nonce, ch.cookie)))
}

#[test]
fn circuit_is_ready_only_once_both_sides_asked() {
    let mut net = Net::new(RelayConfig::default());
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    let alice = net.client(ALICE, a.clone(), &b, &NONCE);
    net.pump();
    assert_eq!(net.c(alice).state(), State::Waiting);
    assert_eq!(net.relay.circuits(), 1);
    assert_eq!(net.relay.pending(), 1);
    let now = net.now;
    assert_eq!(net.c(alice).send(now, b"early"), Err(client::SendError::NotReady));
    // Even a hand-made data frame over the pending circuit goes nowhere.
    let circuit = net.c(alice).circuit().unwrap();
    let data = pb::RelayData { circuit, payload: b"early".to_vec().into() };
    assert!(net.inject(ALICE, Kind::RelaySend(data)).is_empty());
    assert_eq!(net.relay.stats().dropped_not_ready, 1);
    assert!(net.events(alice).is_empty());

    let bob = net.client(BOB, b, &a, &NONCE);
    net.pump();
    assert_eq!(net.c(alice).state(), State::Ready);
    assert_eq!(net.c(bob).state(), State::Ready);
    assert_eq!(net.c(alice).circuit(), net.c(bob).circuit());
    assert_eq!(net.events(alice), vec![client::Event::Ready { circuit }]);
    assert_eq!(net.events(bob), vec![client::Event::Ready { circuit }]);
    assert_eq!(net.relay.pending(), 0);
    let stats = net.relay.stats();
    assert_eq!((stats.circuits_opened, stats.circuits_ready, stats.challenged), (1, 1, 2));
    assert!(net
        .relay_events()
        .contains(&server::Event::Ready { circuit, peers: [a.peer_id(), Identity::from_seed(2).peer_id()] }));
}

#[test]
fn forwards_exact_bytes_both_ways() {
    forwards_exact_bytes_both_ways_via(false);
}

/// The fast path forwards the very bytes the usual path does, and counts them the same.
#[test]
fn the_fast_path_forwards_exact_bytes_both_ways() {
    forwards_exact_bytes_both_ways_via(true);
}

fn forwards_exact_bytes_both_ways_via(fast: bool) {
    let mut net = Net::alice_and_bob_via(RelayConfig::default(), fast);
    let (alice, bob) = (0, 1);
    net.events(alice);
    net.events(bob);
    let big: Vec<u8> = (0..client::MAX_PAYLOAD).map(|i| i as u8).collect();
    net.send(alice, b"hello bob").unwrap();
    net.send(alice, &big).unwrap();
    net.send(alice, b"").unwrap();
    net.send(bob, b"hello alice").unwrap();
    assert_eq!(net.data(bob), vec![b"hello bob".to_vec(), big.clone(), Vec::new()]);
    assert_eq!(net.data(alice), vec![b"hello alice".to_vec()]);
    // Every relayed frame fits a datagram.
    assert!(net.sent.iter().all(|t| t.payload.len() <= introducer_proto::MAX_DATAGRAM));
    assert_eq!(
        net.send(alice, &[0; client::MAX_PAYLOAD + 1]),
        Err(client::SendError::TooLarge(client::MAX_PAYLOAD + 1))
    );
    let stats = net.relay.stats();
    assert_eq!(stats.forwarded_packets, 4);
    // An empty payload is left out by the encoder: not a fast frame, decided the usual way.
    assert_eq!(net.taken, if fast { 3 } else { 0 });
    assert_eq!(stats.forwarded_bytes, (9 + big.len() + 11) as u64);
}

#[test]
fn third_parties_get_nothing_forwarded_and_are_counted() {
    let mut net = Net::alice_and_bob(RelayConfig::default());
    let (a, b, m) = (Identity::from_seed(1), Identity::from_seed(2), Identity::from_seed(66));
    let circuit = net.c(0).circuit().unwrap();
    net.events(0);
    net.events(1);
    let sent_before = net.sent.len();

    // Wrong key: Mallory's signature under Alice's key (cookie proven for Mallory's address).
    let mut forged = sign_request(&m, &b.peer_id(), &NONCE, 0);
    forged.public_key = sign_request(&a, &b.peer_id(), &NONCE, 0).public_key;
    let out = net.inject(MALLORY, Kind::RelayRequest(forged.clone()));
    let Kind::RelayChallenge(ch) = decode(&out[0]) else { panic!() };
    let mut forged = sign_request(&m, &b.peer_id(), &NONCE, ch.cookie);
    forged.public_key = sign_request(&a, &b.peer_id(), &NONCE, 0).public_key;
    assert!(net.inject(MALLORY, Kind::RelayRequest(forged)).is_empty());
    assert_eq!(net.relay.stats().dropped_bad_signature, 1);

    // Alice's genuine request replayed from Mallory's address: the cookie is bound to the
    // address, and re-signing needs Alice's key.
    let out = net.inject(ALICE, Kind::RelayRequest(sign_request(&a, &b.peer_id(), &NONCE, 0)));
    let Kind::RelayChallenge(alices) = decode(&out[0]) else { panic!() };
    let replay = sign_request(&a, &b.peer_id(), &NONCE, alices.cookie);
    let out = net.inject(MALLORY, Kind::RelayRequest(replay));
    assert!(matches!(decode(&out[0]), Kind::RelayChallenge(_)), "{out:?}");

    // Mallory with her own key, the right nonce (she overheard it) and Bob as target, or
    // another nonce: no such introduction was made here, so no circuit.
    for (peer, nonce) in [(&b, NONCE), (&a, [9; 16])] {
        let out = proven_request(&mut net, MALLORY, &m, peer, &nonce);
        let Kind::RelayRefused(refused) = decode(&out[0]) else { panic!("{out:?}") };
        assert_eq!(refused.reason, RelayRefusedReason::NotIntroduced as i32);
    }
    assert_eq!((net.relay.stats().refused_not_introduced, net.relay.circuits()), (2, 1));

    // Spoofed source: Alice and Bob's circuit id from Mallory's address.
    let data = pb::RelayData { circuit, payload: b"spoof".to_vec().into() };
    assert!(net.inject(MALLORY, Kind::RelaySend(data)).is_empty());
    assert!(net.inject(MALLORY, Kind::RelayClose(pb::RelayClose { circuit })).is_empty());
    assert_eq!(net.relay.stats().dropped_wrong_source, 2);
    // An unknown circuit.
    let data = pb::RelayData { circuit: circuit ^ 1, payload: b"guess".to_vec().into() };
    assert!(net.inject(MALLORY, Kind::RelaySend(data)).is_empty());
    assert_eq!(net.relay.stats().dropped_unknown_circuit, 1);
    // Garbage.
    net.relay.handle_datagram(net.now, SocketId::PRIMARY, addr(MALLORY), &[0x09, 0xff, 0xff]);
    let junk = pb::RelayRequest { public_key: vec![1, 2, 3].into(), ..Default::default() };
    assert!(net.inject(MALLORY, Kind::RelayRequest(junk)).is_empty());
    assert_eq!(net.relay.stats().dropped_malformed, 2);

    // Nothing reached Alice or Bob (but the challenge the test itself asked for); the
    // circuit still works.
    let stray: Vec<_> = net.sent[sent_before..].iter().filter(|t| t.dst != addr(MALLORY)).collect();
    assert!(matches!(&stray[..], [t] if t.dst == addr(ALICE) && matches!(decode(t), Kind::RelayChallenge(_))));
    assert_eq!(net.relay.stats().forwarded_packets, 0);
    net.pump();
    assert!(net.events(0).is_empty() && net.events(1).is_empty());
    net.send(0, b"still here").unwrap();
    assert_eq!(net.data(1), vec![b"still here".to_vec()]);
}

#[test]
fn packet_rate_limit_holds_under_a_flood_from_one_peer() {
    packet_rate_limit_holds_via(false);
}

/// Limits and paced refusals hold the same on the fast path (the refusals wait in the
/// relay's queue for its actor, which the socket wakes).
#[test]
fn the_fast_path_holds_the_packet_rate_limit() {
    packet_rate_limit_holds_via(true);
}

fn packet_rate_limit_holds_via(fast: bool) {
    let config = RelayConfig { packets_per_sec: 100.0, packets_burst: 10.0, ..RelayConfig::default() };
    let mut net = Net::alice_and_bob_via(config, fast);
    net.events(0);
    let flood = 10_000;
    let elapsed = SEC;
    for i in 0..flood {
        let at = net.clients[0].1.circuit();
        assert!(at.is_some());
        net.now += elapsed / flood;
        let now = net.now;
        net.c(0).send(now, format!("{i}").as_bytes()).unwrap();
        net.pump();
    }
    let stats = net.relay.stats();
    let budget = 10 + 100 * elapsed.as_secs() + 1;
    assert!(stats.forwarded_packets <= budget, "{stats:?}");
    assert!(stats.forwarded_packets >= budget - 2, "{stats:?}");
    assert_eq!(stats.forwarded_packets + stats.dropped_rate_limited, flood as u64);
    assert_eq!(net.taken, if fast { flood as u64 } else { 0 });
    assert_eq!(net.data(1).len() as u64, stats.forwarded_packets);
    // Refusals are paced: one per second of flood, at most.
    assert!((1..=2).contains(&stats.refusals_rate_limited), "{stats:?}");
    let events = net.events(0);
    assert!(events.iter().all(|e| *e == client::Event::Throttled), "{events:?}");
    assert_eq!(events.len() as u64, stats.refusals_rate_limited);
    assert_eq!(net.c(0).state(), State::Ready);
    // The other direction has its own budget.
    for _ in 0..5 {
        net.send(1, b"from bob").unwrap();
    }
    assert_eq!(net.data(0).len(), 5);
}

#[test]
fn byte_rate_limit_holds_under_a_flood_from_one_peer() {
    let config = RelayConfig { bytes_per_sec: 10_000.0, bytes_burst: 2_000.0, ..RelayConfig::default() };
    let mut net = Net::alice_and_bob(config);
    let payload = [0xaa; 1000];
    for _ in 0..1000 {
        net.now += 2 * MS;
        let now = net.now;
        net.c(0).send(now, &payload).unwrap();
        net.pump();
    }
    let stats = net.relay.stats();
    // 2 s of flood: the burst (clamped up to one full datagram) plus 10 kB/s.
    let budget = (introducer_proto::MAX_DATAGRAM as u64 + 2 * 10_000) / 1000 + 1;
    assert!(stats.forwarded_bytes <= budget * 1000, "{stats:?}");
    assert!(stats.forwarded_packets >= 19, "{stats:?}");
    assert_eq!(stats.forwarded_packets + stats.dropped_rate_limited, 1000);
}

#[test]
fn circuit_limits_refuse_with_a_clear_reason() {
    let config = RelayConfig { max_circuits: 3, max_circuits_per_peer: 2, max_pending: 2, ..RelayConfig::default() };
    let mut net = Net::new(config);
    let a = Identity::from_seed(1);
    let (p1, p2, p3, p4) =
        (Identity::from_seed(2), Identity::from_seed(3), Identity::from_seed(4), Identity::from_seed(5));
    // Alice: two circuits fine, the third refused for her peer limit.
    net.client(ALICE, a.clone(), &p1, &[1; 16]);
    net.client(ALICE, a.clone(), &p2, &[2; 16]);
    let third = net.client(ALICE, a.clone(), &p3, &[3; 16]);
    net.pump();
    let refused = |events: Vec<client::Event>| {
        events.into_iter().find_map(|e| match e {
            client::Event::Refused { reason, message } => Some((reason, message)),
            _ => None,
        })
    };
    let (reason, message) = refused(net.events(third)).expect("refused");
    assert_eq!(reason, RelayRefusedReason::PeerLimit);
    assert_eq!(message, "too many circuits for this peer");
    assert_eq!(net.c(third).state(), State::Refused);
    let now = net.now;
    assert_eq!(net.c(third).send(now, b"x"), Err(client::SendError::Closed));
    // Two pending already: a third pending circuit is refused.
    let pending = net.client(BOB, p3.clone(), &p4, &[4; 16]);
    net.pump();
    assert_eq!(refused(net.events(pending)).unwrap().0, RelayRefusedReason::TooManyPending);
    // p1 joins (ready: not pending any more), then p3–p4 fits as the third circuit.
    net.client("203.0.113.20:1", p1.clone(), &a, &[1; 16]);
    net.client(BOB, p3.clone(), &p4, &[5; 16]);
    net.pump();
    assert_eq!(net.relay.circuits(), 3);
    // Full: the fourth is refused, whoever asks.
    let full = net.client("203.0.113.21:1", p4.clone(), &p2, &[6; 16]);
    net.pump();
    assert_eq!(refused(net.events(full)).unwrap(), (RelayRefusedReason::RelayFull, "relay is full".to_owned()));
    let stats = net.relay.stats();
    assert_eq!((stats.refused_peer_limit, stats.refused_pending, stats.refused_full), (1, 1, 1));
    // A refused client stops asking.
    let before = net.c(full).stats().requests_sent;
    net.advance(5 * SEC, 100 * MS);
    assert_eq!(net.c(full).stats().requests_sent, before);
}

/// Identities cost nothing: one host asking for circuits under hundreds of names gets its
/// share of them, its network a bigger one, and a peer elsewhere still gets a circuit (the
/// audit filled all 256 from one host, and a real hard × hard pair found the relay full).
#[test]
fn one_host_or_network_takes_only_its_share_of_circuits() {
    let mut net = Net::new(RelayConfig::default());
    let config = RelayConfig::default();
    let refused_for_host = |net: &mut Net, c: usize| {
        net.events(c).iter().any(|e| matches!(e, client::Event::Refused { reason: RelayRefusedReason::HostLimit, .. }))
    };
    let mut asked = Vec::new();
    for n in 0..100u64 {
        let (me, peer) = (Identity::from_seed(1000 + n), Identity::from_seed(5000 + n));
        asked.push(net.client(&format!("192.0.2.66:{}", 10_000 + n), me, &peer, &(n as u128).to_le_bytes()));
    }
    net.pump();
    let refused = asked.iter().filter(|&&c| refused_for_host(&mut net, c)).count();
    assert_eq!((net.relay.circuits(), refused), (config.max_circuits_per_ip, 100 - config.max_circuits_per_ip));
    let mut asked = Vec::new();
    for n in 100..300u64 {
        let (me, peer) = (Identity::from_seed(1000 + n), Identity::from_seed(5000 + n));
        let at = format!("192.0.2.{}:{}", n % 200 + 1, 20_000 + n);
        asked.push(net.client(&at, me, &peer, &(n as u128).to_le_bytes()));
    }
    net.pump();
    assert_eq!(net.relay.circuits(), config.max_circuits_per_network);
    assert!(asked.iter().any(|&c| refused_for_host(&mut net, c)));
    let elsewhere = net.client(ALICE, Identity::from_seed(1), &Identity::from_seed(2), &[9; 16]);
    net.pump();
    assert!(!refused_for_host(&mut net, elsewhere));
    assert_eq!(net.relay.circuits(), config.max_circuits_per_network + 1, "a peer elsewhere gets its circuit");
    let (per_ip, per_network) = (config.max_circuits_per_ip, config.max_circuits_per_network);
    assert_eq!(net.relay.stats().refused_host_limit as usize, (100 - per_ip) + (200 - (per_network - per_ip)));
}

#[test]
fn joining_counts_against_the_joiners_peer_limit() {
    let config = RelayConfig { max_circuits_per_peer: 1, ..RelayConfig::default() };
    let mut net = Net::new(config);
    let (a, b, c) = (Identity::from_seed(1), Identity::from_seed(2), Identity::from_seed(3));
    net.client(ALICE, a.clone(), &c, &[1; 16]);
    net.client(BOB, b.clone(), &a, &[2; 16]);
    let join = net.client(ALICE, a.clone(), &b, &[2; 16]);
    net.pump();
    assert!(net
        .events(join)
        .iter()
        .any(|e| matches!(e, client::Event::Refused { reason: RelayRefusedReason::PeerLimit, .. })));
}

#[test]
fn idle_circuits_expire_and_both_sides_hear_it() {
    let config = RelayConfig { idle_timeout: 20 * SEC, ..RelayConfig::default() };
    let mut net = Net::alice_and_bob(config);
    net.events(0);
    net.events(1);
    // Keepalives (every 15 s) hold the circuit well past the idle timeout.
    net.advance(60 * SEC, 500 * MS);
    assert_eq!(net.relay.circuits(), 1);
    assert!(net.c(0).is_ready() && net.c(1).is_ready());
    net.send(0, b"after a minute").unwrap();
    assert_eq!(net.data(1), vec![b"after a minute".to_vec()]);

    // Bob's process goes away silently: the relay notices and tells Alice.
    net.clients.remove(1);
    net.advance(40 * SEC, 500 * MS);
    assert_eq!(net.relay.circuits(), 0);
    assert_eq!(net.relay.stats().circuits_expired, 1);
    assert!(net.relay_events().iter().any(|e| matches!(e, server::Event::Closed { reason: CloseReason::Idle, .. })));
    assert_eq!(net.c(0).state(), State::Closed);
    assert!(matches!(net.events(0).last(), Some(client::Event::Closed { .. })));
    assert_eq!(net.relay.poll_timeout(), None);
}

#[test]
fn pending_circuits_expire() {
    let mut net = Net::new(RelayConfig::default());
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    net.client(ALICE, a, &b, &NONCE);
    net.pump();
    assert_eq!(net.relay.pending(), 1);
    net.advance(40 * SEC, 500 * MS);
    assert_eq!(net.relay.circuits(), 0);
    assert_eq!(net.relay.pending(), 0);
    assert!(net
        .relay_events()
        .iter()
        .any(|e| matches!(e, server::Event::Closed { reason: CloseReason::PendingTimeout, .. })));
    // The client gave up by its own setup timeout (15 s) before the relay's 30 s.
    assert_eq!(net.c(0).state(), State::Closed);
    let events = net.events(0);
    let Some(client::Event::Closed { reason }) = events.last() else { panic!("{events:?}") };
    assert_eq!(*reason, client::CircuitClosed::PeerAbsent);
}

#[test]
fn closing_tells_the_other_side_and_frees_the_circuit() {
    let mut net = Net::alice_and_bob(RelayConfig::default());
    net.events(1);
    let now = net.now;
    net.c(0).close(now);
    net.pump();
    assert_eq!(net.relay.circuits(), 0);
    assert_eq!(net.relay.stats().circuits_closed, 1);
    assert_eq!(net.c(1).state(), State::Closed);
    assert!(matches!(&net.events(1)[..], [client::Event::Closed { .. }]));
    // The freed slot is reusable at once.
    assert_eq!(net.relay.pending(), 0);
}

#[test]
fn nothing_larger_than_the_request_goes_to_an_unproven_address() {
    let mut net = Net::alice_and_bob(RelayConfig::default());
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    let circuit = net.c(0).circuit().unwrap();
    let victim = "192.0.2.99:53";
    let mut requests = vec![
        Kind::RelayRequest(sign_request(&a, &b.peer_id(), &NONCE, 0)),
        Kind::RelayRequest(sign_request(&a, &b.peer_id(), &NONCE, 12345)),
        Kind::RelayRequest(sign_request(&a, &b.peer_id(), &[1; 32], 0)),
        Kind::RelayRequest(sign_request(&a, &a.peer_id(), &NONCE, 0)),
        Kind::RelaySend(pb::RelayData { circuit, payload: Vec::new().into() }),
        Kind::RelaySend(pb::RelayData { circuit: 1, payload: Vec::new().into() }),
        Kind::RelayClose(pb::RelayClose { circuit }),
    ];
    let mut no_key = sign_request(&a, &b.peer_id(), &NONCE, 0);
    no_key.signature = Vec::new().into();
    requests.push(Kind::RelayRequest(no_key));
    for kind in requests {
        let size = frame_of(kind.clone()).len();
        for t in net.inject(victim, kind.clone()) {
            assert!(t.payload.len() <= size, "{} bytes answered {size} ({kind:?})", t.payload.len());
            assert!(matches!(decode(&t), Kind::RelayChallenge(_)));
        }
    }
    assert_eq!(net.relay.stats().forwarded_packets, 0);
}

#[test]
fn client_retransmits_then_gives_up_on_a_silent_relay() {
    let now = Instant::now();
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    let mut c = RelayClient::new(ClientConfig::default(), a, SocketId::PRIMARY, addr(RELAY), b.peer_id(), &NONCE, now);
    let mut sent = Vec::new();
    let mut t = now;
    while c.state() == State::Requesting {
        sent.extend(std::iter::from_fn(|| c.poll_transmit()).map(|_| t));
        t = c.poll_timeout().expect("a deadline while requesting");
        c.handle_timeout(t);
    }
    // 0, 250 ms, 750 ms, 1.75 s, 3.75 s, 5.75 s ... capped at 2 s apart; gives up at 15 s.
    let offsets: Vec<Duration> = sent.iter().map(|s| *s - now).collect();
    assert_eq!(&offsets[..4], &[Duration::ZERO, 250 * MS, 750 * MS, 1750 * MS]);
    assert!(offsets.windows(2).all(|w| w[1] - w[0] <= 2 * SEC));
    assert_eq!(t - now, 15 * SEC);
    assert_eq!(c.poll_event(), Some(client::Event::Closed { reason: client::CircuitClosed::NoAnswer }));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn client_ignores_frames_that_are_not_its_relays() {
    let now = Instant::now();
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    let mut c = RelayClient::new(ClientConfig::default(), a, SocketId::PRIMARY, addr(RELAY), b.peer_id(), &NONCE, now);
    let accepted = |nonce: &[u8]| {
        Kind::RelayAccepted(pb::RelayAccepted { nonce: nonce.to_vec().into(), circuit: 5, ready: true, idle_secs: 60 })
    };
    c.handle(now, addr(MALLORY), accepted(&NONCE));
    c.handle(now, addr(RELAY), accepted(&[0; 16]));
    let refused = pb::RelayRefused { nonce: vec![0; 16].into(), circuit: 5, reason: 1, message: String::new() };
    c.handle(now, addr(RELAY), Kind::RelayRefused(refused));
    c.handle(now, addr(RELAY), Kind::RelayDeliver(pb::RelayData { circuit: 5, payload: b"x".to_vec().into() }));
    assert_eq!(c.state(), State::Requesting);
    assert_eq!(c.stats().dropped_foreign, 4);
    c.handle(now, addr(RELAY), accepted(&NONCE));
    assert!(c.is_ready());
}

#[test]
fn a_new_cookie_period_is_answered_with_a_fresh_signature() {
    let config = RelayConfig { cookie_period: Duration::from_secs(20), ..RelayConfig::default() };
    let mut net = Net::alice_and_bob(config);
    net.events(0);
    net.events(1);
    // Two periods on, the cookie is stale: the keepalive is challenged and re-signed.
    net.advance(50 * SEC, 500 * MS);
    assert!(net.c(0).stats().challenges >= 2, "{:?}", net.c(0).stats());
    assert!(net.c(0).is_ready() && net.c(1).is_ready());
    assert_eq!(net.relay.circuits(), 1);
    net.send(1, b"still").unwrap();
    assert_eq!(net.data(0), vec![b"still".to_vec()]);
}

#[test]
fn a_lost_ready_is_recovered_by_the_waiting_side() {
    let mut net = Net::new(RelayConfig::default());
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    net.client(ALICE, a.clone(), &b, &NONCE);
    net.pump();
    // Bob joins by hand; the relay's "ready" to Alice is lost.
    let _ = proven_request(&mut net, BOB, &b, &a, &NONCE);
    assert_eq!(net.c(0).state(), State::Waiting);
    net.advance(1500 * MS, 100 * MS);
    assert_eq!(net.c(0).state(), State::Ready);
}

#[test]
fn relay_wide_byte_budget_holds_across_circuits() {
    let config = RelayConfig { total_bytes_per_sec: 5_000.0, total_bytes_burst: 5_000.0, ..RelayConfig::default() };
    let mut net = Net::new(config);
    let ids: Vec<Identity> = (1..=4).map(Identity::from_seed).collect();
    let addrs = ["203.0.113.1:1", "203.0.113.2:1", "203.0.113.3:1", "203.0.113.4:1"];
    for (i, j, nonce) in [(0, 1, [1; 16]), (2, 3, [2; 16])] {
        net.client(addrs[i], ids[i].clone(), &ids[j], &nonce);
        net.client(addrs[j], ids[j].clone(), &ids[i], &nonce);
    }
    net.pump();
    assert!((0..4).all(|i| net.clients[i].1.is_ready()));
    // Two circuits, each well inside its own limits, together over the relay's budget.
    for _ in 0..20 {
        net.send(0, &[1; 500]).unwrap();
        net.send(2, &[2; 500]).unwrap();
    }
    let stats = net.relay.stats();
    assert_eq!(stats.forwarded_bytes, 5_000, "{stats:?}");
    assert_eq!(stats.dropped_relay_busy, 30);
    assert_eq!(stats.dropped_rate_limited, 0);
    assert!(net.events(0).contains(&client::Event::Throttled));
}

#[test]
fn a_side_that_moves_is_followed_after_its_next_signed_keepalive() {
    let mut net = Net::alice_and_bob(RelayConfig::default());
    net.events(0);
    // Alice's NAT rebinds: she now appears from another address.
    net.clients[0].0 = addr("203.0.113.5:4999");
    net.send(0, b"lost").unwrap();
    assert_eq!(net.relay.stats().dropped_wrong_source, 1);
    assert!(net.data(1).is_empty());
    // Her next keepalive is challenged at the new address, re-signed, and moves her side.
    net.advance(16 * SEC, 500 * MS);
    assert!(net.c(0).stats().challenges >= 1);
    net.send(0, b"moved").unwrap();
    net.send(1, b"followed").unwrap();
    assert_eq!(net.data(1), vec![b"moved".to_vec()]);
    assert_eq!(net.data(0), vec![b"followed".to_vec()]);
    assert!(net.sent.iter().rev().take(2).all(|t| t.dst != addr(ALICE)));
}

#[test]
fn a_stale_not_ready_answer_does_not_unready_a_ready_circuit() {
    use introducer_proto::pb::RelayAccepted;
    let now = Instant::now();
    let relay: SocketAddr = "198.51.100.1:3478".parse().unwrap();
    let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
    let nonce = vec![3u8; 16];
    let mut client =
        RelayClient::new(client::ClientConfig::default(), alice, SocketId::PRIMARY, relay, bob.peer_id(), &nonce, now);
    let accepted =
        |ready| Kind::RelayAccepted(RelayAccepted { nonce: nonce.clone().into(), circuit: 7, ready, idle_secs: 60 });
    client.handle(now, relay, accepted(true));
    assert!(client.is_ready());
    client.handle(now, relay, accepted(false));
    assert!(client.is_ready(), "a reordered answer about the same circuit changes nothing");
    assert!(client.send(now, b"still flowing").is_ok());
}

/// Keys cost nothing to make: a circuit is created only for an introduction this node made,
/// between exactly the two peers it introduced. Anything else is refused, and counted.
#[test]
fn circuits_only_for_introductions_made_here() {
    let mut net = Net::new(RelayConfig::default());
    let (alice, bob, mallory) = (Identity::from_seed(1), Identity::from_seed(2), Identity::from_seed(66));
    net.relay.authorize(net.now, &NONCE, [alice.peer_id(), bob.peer_id()]);
    let strangers = [
        (MALLORY, mallory.clone(), &bob, NONCE),       // the right nonce, the wrong pair
        (MALLORY, mallory.clone(), &mallory, [8; 16]), // an introduction nobody made
        (ALICE, alice.clone(), &bob, [9; 16]),         // the right pair, another nonce
    ];
    for (at, me, peer, nonce) in strangers {
        net.stranger(at, me, peer, &nonce);
    }
    net.pump();
    let refused = |net: &Net, i: usize| {
        net.clients[i]
            .2
            .iter()
            .any(|e| matches!(e, client::Event::Refused { reason: RelayRefusedReason::NotIntroduced, .. }))
    };
    assert!(refused(&net, 0) && refused(&net, 2), "asked and refused");
    assert_eq!(net.relay.circuits(), 0);
    assert_eq!(net.relay.stats().refused_not_introduced, 2, "the self-circuit is a bad request first");
    // The introduced pair gets its circuit.
    net.client(ALICE, alice.clone(), &bob, &NONCE);
    net.client(BOB, bob, &alice, &NONCE);
    net.pump();
    assert_eq!(net.relay.stats().circuits_ready, 1);
}
