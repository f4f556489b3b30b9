//! The relay role on the simulated internet: two peers behind symmetric NATs (which no
//! punch gets through) talk through a public relay, with and without loss.

use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use introducer_actors::relay::client::{self, ClientConfig, RelayClient};
use introducer_actors::relay::server::{self, Relay, RelayConfig};
use introducer_actors::{Machine, SocketId, Transmit};
use introducer_sim::{for_each_seed, Link, Place, Sim};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const NONCE: [u8; 16] = [7; 16];
/// Lines each talker says.
const LINES: u32 = 10;

/// Two peers behind SYMMETRIC_RANDOM NATs (which no punch gets through) talk through a
/// relay host on the simulated internet.
#[test]
fn sim_two_symmetric_random_peers_talk_through_a_relay() {
    for_each_seed(0..8, |seed| {
        let (to_alice, to_bob, stats) = relay_sim(seed, 0.0);
        let expect = |who: &str| (0..LINES).map(|i| format!("{who} {i}").into_bytes()).collect::<Vec<_>>();
        assert_eq!(to_bob, expect("alice"));
        assert_eq!(to_alice, expect("bob"));
        assert_eq!(stats.forwarded_packets, 2 * u64::from(LINES), "{stats:?}");
        assert_eq!(stats.dropped_wrong_source + stats.dropped_unknown_circuit + stats.dropped_not_ready, 0);
    });
}

/// With 20 % loss on every internet link, set-up still completes (retransmission) and
/// what arrives arrives intact and in order; what is lost is lost, as over UDP.
#[test]
fn sim_relay_sets_up_through_loss() {
    for_each_seed(0..16, |seed| {
        let (to_alice, to_bob, _) = relay_sim(seed, 0.2);
        for (heard, who) in [(to_bob, "alice"), (to_alice, "bob")] {
            assert!(!heard.is_empty(), "nothing from {who}");
            let indices: Vec<u32> = heard
                .iter()
                .map(|d| std::str::from_utf8(d).unwrap().strip_prefix(&format!("{who} ")).unwrap().parse().unwrap())
                .collect();
            assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
        }
    });
}

/// Runs Alice and Bob (each behind its own SYMMETRIC_RANDOM NAT) through a public relay
/// for 10 s of virtual time with `loss` on the internet links; returns what each heard
/// and the relay's counters.
fn relay_sim(seed: u64, loss: f64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, server::Stats) {
    /// A relay client that says a line every 500 ms once ready and records what it hears.
    struct Talker {
        client: RelayClient,
        say: &'static str,
        said: u32,
        next: Option<Instant>,
        heard: Vec<Vec<u8>>,
        ready_at: Option<Instant>,
    }
    impl Talker {
        fn drain(&mut self, now: Instant) {
            while let Some(e) = self.client.poll_event() {
                match e {
                    client::Event::Ready { .. } => {
                        self.ready_at = Some(now);
                        self.next = Some(now);
                    }
                    client::Event::Data(d) => self.heard.push(d),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    impl Machine for Talker {
        fn handle_datagram(&mut self, now: Instant, socket: SocketId, src: SocketAddr, payload: &[u8]) {
            self.client.handle_datagram(now, socket, src, payload);
            self.drain(now);
        }
        fn handle_timeout(&mut self, now: Instant) {
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                Machine::handle_timeout(&mut self.client, now);
            }
            if self.next.is_some_and(|t| t <= now) && self.said < LINES {
                self.client.send(now, format!("{} {}", self.say, self.said).as_bytes()).unwrap();
                self.said += 1;
                self.next = Some(now + 500 * MS);
            }
            self.drain(now);
        }
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.client.poll_transmit()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            let next = self.next.filter(|_| self.said < LINES);
            match (self.client.poll_timeout(), next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }

    {
        let mut sim = Sim::new(seed);
        sim.set_internet_link(Link::INTERNET_DEFAULT.loss(loss));
        let relay_ip = "198.51.100.1".parse().unwrap();
        let now = sim.now();
        let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
        let mut machine = Relay::new(RelayConfig::default(), now, StdRng::seed_from_u64(seed));
        machine.authorize(now, &NONCE, [a.peer_id(), b.peer_id()]);
        let relay = sim.add_host(Place::Public(relay_ip), machine);
        let relay_addr = sim.bind(relay, SocketId::PRIMARY, 3478);
        let talker = |me: &Identity, peer: &Identity, say| Talker {
            client: RelayClient::new(
                ClientConfig::default(),
                me.clone(),
                SocketId::PRIMARY,
                relay_addr,
                peer.peer_id(),
                &NONCE,
                now,
            ),
            say,
            said: 0,
            next: None,
            heard: Vec::new(),
            ready_at: None,
        };
        let nat_a = sim.add_nat(NatBehavior::SYMMETRIC_RANDOM, "203.0.113.1".parse().unwrap(), None);
        let nat_b = sim.add_nat(NatBehavior::SYMMETRIC_RANDOM, "203.0.113.2".parse().unwrap(), None);
        let alice = sim.add_host(Place::Behind(nat_a), talker(&a, &b, "alice"));
        sim.bind(alice, SocketId::PRIMARY, 5000);
        let bob = sim.add_host(Place::Behind(nat_b), talker(&b, &a, "bob"));
        sim.bind(bob, SocketId::PRIMARY, 5000);
        sim.run_for(10 * SEC);
        for host in [alice, bob] {
            assert!(sim.machine::<Talker>(host).ready_at.is_some(), "a side never got ready");
        }
        let to_alice = std::mem::take(&mut sim.machine::<Talker>(alice).heard);
        let to_bob = std::mem::take(&mut sim.machine::<Talker>(bob).heard);
        (to_alice, to_bob, sim.machine::<Relay>(relay).stats())
    }
}
