//! `Probe` against `Responder` hosts on the simulator: behind every NAT behaviour the
//! simulator emulates, probing must report exactly what `NatBehavior::expected_report` says.

use introducer_actors::nat::{Allocation, Filtering, Mapping, NatBehavior, NatReport, NatType};
use introducer_actors::probe::{Layout, LocalSockets, Probe, ProbeConfig, Responder, Server};
use introducer_actors::{Machine, SocketId, Transmit};
use introducer_sim::{for_each_seed, standard, HostId, Link, Place, Sim};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// A node's STUN side: the responder and nothing else.
struct StunHost {
    responder: Responder,
    out: VecDeque<Transmit>,
    answered: u64,
}

impl Machine for StunHost {
    fn handle_datagram(&mut self, _: Instant, socket: SocketId, src: SocketAddr, payload: &[u8]) {
        if let Some(t) = self.responder.respond(socket, src, payload) {
            self.answered += 1;
            self.out.push_back(t);
        }
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// The standard topology's RFC 5780 introducer, with only its STUN side.
const IP0: Ipv4Addr = standard::INTRODUCER_IP;
const IP1: Ipv4Addr = standard::INTRODUCER_ALT_IP;
const PORT0: u16 = standard::PORT;
const PORT1: u16 = standard::PORT + 1;
const NAT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// An RFC 5780 server: two IPs × two ports.
fn add_server(sim: &mut Sim) -> HostId {
    let ids = [SocketId(0), SocketId(1), SocketId(2), SocketId(3)];
    let layout = Layout::rfc5780(SocketAddr::from((IP0, PORT0)), SocketAddr::from((IP1, PORT1)), ids).unwrap();
    let binds: Vec<_> = layout.sockets().collect();
    let host = sim.add_host(
        Place::Public(IP0),
        StunHost { responder: Responder::new(layout), out: VecDeque::new(), answered: 0 },
    );
    sim.add_ip(host, IP1);
    for (socket, addr) in binds {
        let SocketAddr::V4(v4) = addr else { unreachable!() };
        sim.bind_addr(host, socket, v4);
    }
    host
}

/// A probing client at `place`, its sockets bound to ports 5000.. so the probe knows them.
fn add_client(sim: &mut Sim, place: Place, seed: u64) -> HostId {
    let config = ProbeConfig::new(vec![Server::new(SocketAddr::from((IP0, PORT0)))]);
    let n = Probe::sockets_needed(&config);
    let now = sim.now();
    let host = sim.add_host_with(place, |ip| {
        let at = |i: u16| SocketAddr::from((ip, 5000 + 10 * i));
        let locals = LocalSockets { primary: Some(at(0)), extra: (1..=n).map(at).collect() };
        Probe::new(config, locals, now, seed)
    });
    let ip = sim.host_ip(host);
    for i in 0..=n {
        sim.bind_addr(host, SocketId(i), SocketAddrV4::new(ip, 5000 + 10 * i));
    }
    host
}

/// Runs one probe behind `behavior` (or on the internet with `None`); returns the report,
/// the virtual time it took, and the NAT's external port of the client's primary socket.
fn probe(behavior: Option<NatBehavior>, seed: u64, tweak: impl FnOnce(&mut Sim)) -> (NatReport, Duration, Option<u16>) {
    let mut sim = Sim::new(seed);
    tweak(&mut sim);
    add_server(&mut sim);
    let nat = behavior.map(|b| sim.add_nat(b, NAT_IP, None));
    let place = match nat {
        Some(nat) => Place::Behind(nat),
        None => Place::Public(Ipv4Addr::new(192, 0, 2, 77)),
    };
    let client = add_client(&mut sim, place, seed);
    let start = sim.now();
    let done = sim.run_until_cond(Duration::from_secs(30), |sim| sim.machine_ref::<Probe>(client).is_done());
    assert!(done, "probe did not finish");
    let elapsed = sim.now() - start;
    let primary = sim.local_addr(client, SocketId::PRIMARY);
    let external = nat.and_then(|nat| {
        sim.nat_mappings(nat).iter().find(|m| SocketAddr::V4(m.internal) == primary).map(|m| m.external.port())
    });
    let report = sim.machine_ref::<Probe>(client).result().unwrap().expect("a report");
    (report, elapsed, external)
}

fn check(behavior: NatBehavior, seed: u64) {
    let (report, _, external) = probe(Some(behavior), seed, |_| {});
    let expected = behavior.expected_report(report.public_addr);
    assert_eq!(
        (report.mapping, report.filtering, report.allocation, report.no_nat),
        (expected.mapping, expected.filtering, expected.allocation, expected.no_nat),
        "{behavior:?}"
    );
    assert_eq!(report.public_addr.ip(), NAT_IP);
    // Under an address(-and-port)-dependent NAT the primary socket has several mappings;
    // M1 is one of them, and for EIM the only one.
    if behavior.mapping == Mapping::EndpointIndependent {
        assert_eq!(Some(report.public_addr.port()), external, "{behavior:?}");
    }
    assert_eq!(report.nat_type(), behavior.nat_type(), "{behavior:?}");
}

const PRESETS: [NatBehavior; 6] = [
    NatBehavior::PORT_RESTRICTED,
    NatBehavior::FULL_CONE,
    NatBehavior::RESTRICTED_CONE,
    NatBehavior::EIM_RANDOM_PORT,
    NatBehavior::SYMMETRIC_RANDOM,
    NatBehavior::SYMMETRIC_SEQUENTIAL,
];

#[test]
fn every_preset_is_reported_as_emulated() {
    for behavior in PRESETS {
        for_each_seed(0..20, |seed| check(behavior, seed));
    }
}

#[test]
fn every_mapping_filtering_allocation_combination() {
    let mappings = [Mapping::EndpointIndependent, Mapping::AddressDependent, Mapping::AddressAndPortDependent];
    let filterings = [Filtering::EndpointIndependent, Filtering::AddressDependent, Filtering::AddressAndPortDependent];
    let allocations = [
        Allocation::Preserving,
        Allocation::Sequential { step: 1 },
        Allocation::Sequential { step: 2 },
        Allocation::Sequential { step: -3 },
        Allocation::Random,
    ];
    for mapping in mappings {
        for filtering in filterings {
            for allocation in allocations {
                let behavior = NatBehavior { mapping, filtering, allocation, ..NatBehavior::FULL_CONE };
                for_each_seed(0..4, |seed| check(behavior, seed));
            }
        }
    }
}

#[test]
fn timing_is_rtt_bound_when_answered_and_700ms_when_filtered() {
    // Internet 10 ms and LAN 1 ms one way: RTT 22 ms through the NAT.
    let (_, full_cone, _) = probe(Some(NatBehavior::FULL_CONE), 1, |_| {});
    // Test I, then four allocation samples one after another.
    assert_eq!(full_cone, Duration::from_millis(5 * 22));
    let (_, restricted, _) = probe(Some(NatBehavior::PORT_RESTRICTED), 1, |_| {});
    // Test I, then the filtering tests' 100 + 200 + 400 ms.
    assert_eq!(restricted, Duration::from_millis(22 + 700));
}

#[test]
fn a_public_host_is_public() {
    for_each_seed(0..5, |seed| {
        let (report, _, _) = probe(None, seed, |_| {});
        assert_eq!(report.public_addr, SocketAddr::from(([192, 0, 2, 77], 5000)));
        assert!(report.no_nat);
        assert_eq!(report.mapping, Some(Mapping::EndpointIndependent));
        assert_eq!(report.filtering, Some(Filtering::EndpointIndependent));
        assert_eq!(report.allocation, Some(Allocation::Preserving));
        assert_eq!(report.nat_type(), NatType::Public);
    });
}

#[test]
fn a_second_host_behind_the_nat_does_not_hide_sequential_allocation() {
    // Another host keeps opening mappings through the same sequential NAT while we probe:
    // one new mapping every 70 ms, at a seed-dependent phase, so at most one falls inside
    // the 66 ms over which our four samples are taken (22 ms apart).
    for_each_seed(0..10, |seed| {
        let mut sim = Sim::new(seed);
        add_server(&mut sim);
        let nat = sim.add_nat(NatBehavior::SYMMETRIC_SEQUENTIAL, NAT_IP, None);
        let every = Duration::from_millis(70);
        let first = sim.now() + Duration::from_millis(1 + seed * 7 % 70);
        let noisy = sim.add_host(Place::Behind(nat), Chatter { next: first, n: 0, sent: 0, every });
        sim.bind(noisy, SocketId::PRIMARY, 7000);
        let client = add_client(&mut sim, Place::Behind(nat), seed);
        assert!(sim.run_until_cond(Duration::from_secs(30), |sim| sim.machine_ref::<Probe>(client).is_done()));
        let report = sim.machine_ref::<Probe>(client).result().unwrap().unwrap();
        assert_eq!(report.allocation, Some(Allocation::Sequential { step: 1 }));
        assert_eq!(report.mapping, Some(Mapping::AddressAndPortDependent));
        assert_eq!(report.filtering, Some(Filtering::AddressAndPortDependent));
    });
}

/// Sends one datagram to a new destination every `every`: a new mapping each time under an
/// address-and-port-dependent NAT.
struct Chatter {
    next: Instant,
    n: u16,
    sent: u16,
    every: Duration,
}

impl Machine for Chatter {
    fn handle_datagram(&mut self, _: Instant, _: SocketId, _: SocketAddr, _: &[u8]) {}
    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next {
            self.next += self.every;
            self.n += 1;
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.n == 0 {
            return None;
        }
        self.n -= 1;
        self.sent += 1;
        Some(Transmit {
            socket: SocketId::PRIMARY,
            dst: SocketAddr::from(([192, 0, 2, 200], 9000 + self.sent)),
            payload: vec![0x09, 0],
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}

#[test]
fn light_loss_and_jitter_are_absorbed_by_retransmissions() {
    // 2 % loss each way on the internet and up to 4 ms of jitter: a wrong "no answer" needs
    // three lost round trips in a row, which these seeds do not roll.
    for behavior in PRESETS {
        for_each_seed(0..10, |seed| {
            let (report, _, _) = probe(Some(behavior), seed, |sim| {
                sim.set_internet_link(
                    Link::with_latency(Duration::from_millis(10)).jitter(Duration::from_millis(4)).loss(0.02),
                )
            });
            let expected = behavior.expected_report(report.public_addr);
            assert_eq!(
                (report.mapping, report.filtering, report.allocation),
                (expected.mapping, expected.filtering, expected.allocation),
                "{behavior:?}"
            );
        });
    }
}
