use super::*;
use crate::nat::{Allocation, Filtering, Mapping};
use crate::nat::{NatReport, NatType};
use introducer_proto::frame::{self, Decoded};

fn report(addr: &str, nat: NatType) -> NatReport {
    let (no_nat, mapping, filtering) = match nat {
        NatType::Public => (true, Mapping::EndpointIndependent, Filtering::EndpointIndependent),
        NatType::Easy => (false, Mapping::EndpointIndependent, Filtering::AddressAndPortDependent),
        NatType::Hard => (false, Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent),
    };
    NatReport {
        public_addr: addr.parse().unwrap(),
        no_nat,
        mapping: Some(mapping),
        filtering: Some(filtering),
        allocation: Some(Allocation::Random),
    }
}

/// The handshake `me`'s attempt toward `peer` carries.
fn handshake(me: &Identity, peer: &Identity, nonce: &[u8], initiator: bool) -> Handshake {
    let rng = rand::SeedableRng::seed_from_u64(u64::from(initiator));
    Handshake::punch(me, &peer.peer_id(), nonce, initiator, rng).unwrap()
}

/// Seed 1's attempt toward seed 2 over the introduction `[5; 16]`.
fn alice_to_bob(config: Config, initiator: bool, plan: Plan, now: Instant) -> Attempt {
    let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
    let nonce = vec![5u8; 16];
    let handshake = handshake(&alice, &bob, &nonce, initiator);
    Attempt::new(config, &alice, bob.peer_id(), nonce, initiator, plan, &[], &[1; 32], handshake, now)
}

fn punch_of(t: &Transmit) -> pb::Punch {
    match frame::decode(&t.payload).unwrap() {
        Decoded::Envelope(pb::Envelope { kind: Some(Kind::Punch(p)) }) => p,
        other => panic!("not a punch: {other:?}"),
    }
}

#[test]
fn plan_follows_the_strategy_table() {
    use NatType::*;
    let a = "203.0.113.1:1000";
    let b: SocketAddr = "198.51.100.9:2000".parse().unwrap();
    let cases = [
        (Public, Easy, Ok((Strategy::Direct, false))),
        (Easy, Public, Ok((Strategy::Direct, true))),
        (Public, Hard, Ok((Strategy::Direct, false))),
        (Hard, Public, Ok((Strategy::Direct, true))),
        (Public, Public, Ok((Strategy::Direct, true))),
        (Easy, Easy, Ok((Strategy::SimultaneousOpen, true))),
        (Easy, Hard, Ok((Strategy::Birthday, true))),
        (Hard, Easy, Ok((Strategy::Birthday, true))),
        // Random allocation (as `report` says): only a relay; both sequential is below.
        (Hard, Hard, Err(Unpunchable::BothHard { ours: Some(Allocation::Random), theirs: Some(Allocation::Random) })),
    ];
    for (mine, theirs, want) in cases {
        let got = plan(&report(a, mine), &report(&b.to_string(), theirs), b, &[]).map(|p| {
            assert_eq!(p.candidates, vec![Candidate { addr: b, path: Path::Direct }]);
            (p.strategy, p.send_first)
        });
        assert_eq!(got, want, "{mine:?} x {theirs:?}");
    }
}

#[test]
fn same_public_ip_tries_private_addresses_first_even_when_hard() {
    let lan: SocketAddr = "10.0.0.7:4000".parse().unwrap();
    let peer_public: SocketAddr = "203.0.113.1:5000".parse().unwrap();
    let p = plan(
        &report("203.0.113.1:1000", NatType::Hard),
        &report("203.0.113.1:5000", NatType::Hard),
        peer_public,
        &[lan],
    )
    .unwrap();
    assert_eq!(p.strategy, Strategy::Local);
    assert_eq!(p.candidates[0], Candidate { addr: lan, path: Path::Local });
    assert_eq!(p.candidates[1], Candidate { addr: peer_public, path: Path::Direct });
}

struct Pair {
    a: Attempt,
    b: Attempt,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
}

fn pair(now: Instant, b_sends_first: bool) -> Pair {
    let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        ("203.0.113.1:1000".parse().unwrap(), "198.51.100.9:2000".parse().unwrap());
    let nonce = vec![5u8; 16];
    let plan_to = |addr, send_first| Plan {
        strategy: Strategy::Direct,
        candidates: vec![Candidate { addr, path: Path::Direct }],
        send_first,
        birthday: None,
    };
    Pair {
        a: Attempt::new(
            Config::default(),
            &alice,
            bob.peer_id(),
            nonce.clone(),
            true,
            plan_to(b_addr, true),
            &[],
            &[1; 32],
            handshake(&alice, &bob, &nonce, true),
            now,
        ),
        b: Attempt::new(
            Config::default(),
            &bob,
            alice.peer_id(),
            nonce.clone(),
            false,
            plan_to(a_addr, b_sends_first),
            &[],
            &[1; 32],
            handshake(&bob, &alice, &nonce, false),
            now,
        ),
        a_addr,
        b_addr,
    }
}

/// Delivers every queued datagram (losslessly, instantly) until quiet.
fn deliver(now: Instant, p: &mut Pair) {
    loop {
        let mut moved = false;
        while let Some(t) = p.a.poll_transmit() {
            assert_eq!(t.dst, p.b_addr);
            p.b.handle_punch(now, SocketId::PRIMARY, p.a_addr, &punch_of(&t));
            moved = true;
        }
        while let Some(t) = p.b.poll_transmit() {
            assert_eq!(t.dst, p.a_addr);
            p.a.handle_punch(now, SocketId::PRIMARY, p.b_addr, &punch_of(&t));
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn both_sides_connect_only_after_an_acknowledged_proof() {
    let now = Instant::now();
    let mut p = pair(now, false);
    p.a.handle_timeout(now);
    p.b.handle_timeout(now);
    // The responder (b) waits; alice's first probe reaches it.
    let probe = p.a.poll_transmit().unwrap();
    assert!(p.b.poll_transmit().is_none());
    p.b.handle_punch(now, SocketId::PRIMARY, p.a_addr, &punch_of(&probe));
    assert!(p.b.poll_event().is_none(), "b must not count a path before its own proof is acknowledged");
    deliver(now, &mut p);
    let Some(Event::Connected { remote, probes, path, proven, initiator, .. }) = p.a.poll_event() else {
        panic!("a not connected")
    };
    assert_eq!((remote, probes, path, initiator), (p.b_addr, 1, Path::Direct, true));
    assert_eq!(proven, vec![p.b_addr]);
    // b's own probe goes out immediately once it heard from a, and a's ack connects it.
    let b_t = now + Duration::from_millis(1);
    p.b.handle_timeout(b_t);
    deliver(b_t, &mut p);
    let Some(Event::Connected { remote, .. }) = p.b.poll_event() else { panic!("b not connected") };
    assert_eq!(remote, p.a_addr);
}

#[test]
fn forged_and_replayed_proofs_are_dropped() {
    let now = Instant::now();
    let mut p = pair(now, true);
    let mallory = Identity::from_seed(3);
    let forged = mallory.punch(&[5u8; 16], &Identity::from_seed(1).peer_id(), true);
    p.a.handle_punch(now, SocketId::PRIMARY, p.b_addr, &forged);
    let wrong_nonce = Identity::from_seed(2).punch(&[6u8; 16], &Identity::from_seed(1).peer_id(), true);
    p.a.handle_punch(now, SocketId::PRIMARY, p.b_addr, &wrong_nonce);
    assert_eq!(p.a.stats().dropped_bad_proof, 2);
    assert!(p.a.poll_event().is_none());
    assert!(p.a.poll_transmit().is_none());

    // A valid proof (as peers send them: every field present) replayed many times earns
    // at most max_acks answers, each no larger than the proof.
    let valid = pb::Punch {
        token: Some(u64::MAX),
        echo: Some(u64::MAX),
        padding: vec![0; INITIATION_LEN].into(),
        ..Identity::from_seed(2).punch(&[5u8; 16], &Identity::from_seed(1).peer_id(), false)
    };
    for _ in 0..Config::default().max_acks + 10 {
        p.a.handle_punch(now, SocketId::PRIMARY, "192.0.2.1:9".parse().unwrap(), &valid);
    }
    let answers: Vec<Transmit> = std::iter::from_fn(|| p.a.poll_transmit()).collect();
    assert_eq!(answers.len() as u32, Config::default().max_acks);
    let proof_len = frame::encode_envelope(&pb::Envelope { kind: Some(Kind::Punch(valid)) }).len();
    assert!(answers.iter().all(|a| a.payload.len() <= proof_len), "answers larger than the {proof_len} B proof");
    assert_eq!(p.a.stats().dropped_over_ack_limit, 10);
}

/// A captured proof with its optional fields stripped is smaller than our answer would be:
/// it earns no answer at all (the audit saw 1.17× the bytes come back).
#[test]
fn a_stripped_proof_earns_no_larger_answer() {
    let now = Instant::now();
    let mut p = pair(now, true);
    let stripped = Identity::from_seed(2).punch(&[5u8; 16], &Identity::from_seed(1).peer_id(), false);
    assert_eq!((stripped.token, stripped.echo), (None, None));
    p.a.handle_punch(now, SocketId::PRIMARY, "192.0.2.1:9".parse().unwrap(), &stripped);
    assert_eq!(p.a.poll_transmit(), None);
    assert_eq!(p.a.stats().dropped_short_proof, 1);
}

#[test]
fn gives_up_at_the_timeout_with_a_bounded_probe_count() {
    let now = Instant::now();
    let mut p = pair(now, true);
    let mut sent = 0;
    while let Some(t) = p.a.poll_timeout() {
        p.a.handle_timeout(t);
        sent += std::iter::from_fn(|| p.a.poll_transmit()).count();
    }
    let config = Config::default();
    assert_eq!(sent as u128, config.timeout.as_millis() / config.interval.as_millis());
    let events: Vec<Event> = std::iter::from_fn(|| p.a.poll_event()).collect();
    // Progress once a second while punching, then the failure.
    let progress = events.iter().filter(|e| matches!(e, Event::Probing { .. })).count() as u128;
    assert_eq!(progress, config.timeout.as_millis() / crate::punch::PROGRESS_EVERY.as_millis() - 1, "{events:?}");
    let Some(Event::Failed { error, .. }) = events.last() else { panic!("no failure event: {events:?}") };
    assert_eq!((error.after, error.probes as u128), (config.timeout, sent as u128), "{error}");
    assert!(p.a.is_done());
}

#[test]
fn a_later_path_counts_only_once_the_peer_echoes_our_token_from_it() {
    let now = Instant::now();
    let mut p = pair(now, true);
    p.a.handle_timeout(now);
    p.b.handle_timeout(now);
    deliver(now, &mut p);
    assert!(matches!(p.a.poll_event(), Some(Event::Connected { .. })));
    let other: SocketAddr = "10.0.0.9:2000".parse().unwrap();
    // A valid proof from another address — the peer's, or one replayed by anybody.
    let late = pb::Punch {
        token: Some(7),
        echo: Some(0),
        padding: vec![0; INITIATION_LEN].into(),
        ..Identity::from_seed(2).punch(&[5u8; 16], &Identity::from_seed(1).peer_id(), false)
    };
    p.a.handle_punch(now, SocketId::PRIMARY, other, &late);
    assert_eq!(p.a.poll_event(), None, "an unproven address is not a path");
    let answer = punch_of(&p.a.poll_transmit().expect("answered 1:1"));
    assert!(p.a.poll_transmit().is_none(), "and nothing else is sent there");
    // Whoever receives at that address can echo our token from it: that proves the path.
    let echoing = pb::Punch { echo: answer.token, ..late };
    p.a.handle_punch(now, SocketId::PRIMARY, other, &echoing);
    assert_eq!(p.a.poll_event(), Some(Event::PathProven { peer: Identity::from_seed(2).peer_id(), addr: other }));
    p.a.handle_punch(now, SocketId::PRIMARY, other, &echoing);
    assert_eq!(p.a.poll_event(), None, "reported once");
}

#[test]
fn a_sequential_hard_side_is_predicted_from_where_the_introducer_saw_it() {
    let peer_public: SocketAddr = "198.51.100.9:20007".parse().unwrap();
    let mut hard = report("198.51.100.9:20007", NatType::Hard);
    hard.allocation = Some(Allocation::Sequential { step: 1 });
    let p = plan(&report("203.0.113.1:1000", NatType::Easy), &hard, peer_public, &[]).unwrap();
    assert_eq!(p.strategy, Strategy::Predict);
    let ip = peer_public.ip();
    assert_eq!(
        p.birthday,
        Some(Birthday::Spray { ip, predict: Some(Prediction { last: 20007, step: 1, walk: Walk::Pool }) })
    );
    // And the first guesses stride through the ports after it, half a pool apart.
    let now = Instant::now();
    let mut a = alice_to_bob(Config::default(), true, p, now);
    a.handle_timeout(now);
    let guesses: Vec<u16> = std::iter::from_fn(|| a.poll_transmit()).map(|t| t.dst.port()).skip(1).take(3).collect();
    assert_eq!(guesses, vec![20008, 20008 + 128, 20008 + 256]);
}

#[test]
fn two_sequential_sides_walk_each_others_next_ports_one_and_two_apart_in_doubling_passes() {
    let (a_public, b_public): (SocketAddr, SocketAddr) =
        ("203.0.113.1:30000".parse().unwrap(), "198.51.100.9:20007".parse().unwrap());
    let sequential = |addr: SocketAddr, step| NatReport {
        allocation: Some(Allocation::Sequential { step }),
        ..report(&addr.to_string(), NatType::Hard)
    };
    let (a_nat, b_nat) = (sequential(a_public, 1), sequential(b_public, -2));
    let p = plan(&a_nat, &b_nat, b_public, &[]).unwrap();
    assert_eq!(p.strategy, Strategy::Predict);
    let predict = Some(Prediction { last: 20007, step: -2, walk: Walk::Both });
    assert_eq!(p.birthday, Some(Birthday::Spray { ip: b_public.ip(), predict }));
    let random = NatReport { allocation: Some(Allocation::Random), ..b_nat };
    let both_hard = Unpunchable::BothHard { ours: a_nat.allocation, theirs: Some(Allocation::Random) };
    assert_eq!(plan(&a_nat, &random, b_public, &[]), Err(both_hard.clone()));
    assert!(both_hard.to_string().contains("sequential here, random there"), "{both_hard}");

    // Guesses only, not the proofs to where the introducer saw the peer. The walk waits for
    // the peer's new mapping (`moved`), or a second.
    let guesses = |plan: Plan, initiator: bool, moved: Option<SocketAddr>, rounds: u32| -> Vec<u16> {
        let seen = plan.candidates[0].addr;
        let config = Config { spray_per_round: 32, ..Config::default() };
        let start = Instant::now();
        let mut a = alice_to_bob(config.clone(), initiator, plan, start);
        assert!(a.walks_both());
        if let Some(moved) = moved {
            a.peer_moved(start, moved);
        }
        let mut ports = Vec::new();
        for round in 0..rounds {
            a.handle_timeout(start + config.interval * round);
            let sent = std::iter::from_fn(|| a.poll_transmit());
            ports.extend(sent.filter(|t| t.dst != seen).map(|t| t.dst.port()));
        }
        ports
    };
    assert_eq!(guesses(p.clone(), true, None, 19), Vec::<u16>::new(), "waits for the new mapping");
    // The initiator: every next port of B's (step −2) from its new mapping, 64 of them,
    // then again 128.
    let walked = guesses(p, true, Some("198.51.100.9:20001".parse().unwrap()), 6);
    let every: Vec<u16> = (1..=64).chain(1..=128).map(|k| (20001 - 2 * k) as u16).collect();
    assert_eq!(walked, every);
    // The other side: every second port of A's (step 1).
    let p = plan(&b_nat, &a_nat, a_public, &[]).unwrap();
    let walked = guesses(p, false, Some(a_public), 2);
    assert_eq!(walked, (1..=64).map(|k| 30000 + 2 * k).collect::<Vec<u16>>());
}

#[test]
fn spraying_keeps_its_pace_and_cap_whatever_arrives() {
    let peer_public: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let p = plan(
        &report("203.0.113.1:1000", NatType::Easy),
        &report("198.51.100.9:40000", NatType::Hard),
        peer_public,
        &[],
    );
    let now = Instant::now();
    let mut a = alice_to_bob(Config::default(), true, p.unwrap(), now);
    let config = Config::default();
    let mut sent = 0;
    while let Some(t) = a.poll_timeout() {
        a.handle_timeout(t);
        let round = std::iter::from_fn(|| a.poll_transmit()).count() as u32;
        assert!(round <= config.spray_per_round + 1, "a round sent {round}");
        sent += round;
    }
    assert_eq!(a.stats().sprayed, config.spray_max);
    assert!(sent <= config.spray_max + (config.timeout.as_millis() / config.interval.as_millis()) as u32 + 1);
}

#[test]
fn only_a_few_attempts_spray_at_once() {
    use crate::registration::Introduced;
    let now = Instant::now();
    let me = Identity::from_seed(1);
    let mine = report("203.0.113.1:1000", NatType::Easy);
    let mut attempts = actor::Attempts::new(Config::default(), me.clone(), rand::SeedableRng::seed_from_u64(7));
    let hard = |n: u64| {
        let peer = Identity::from_seed(100 + n);
        let public: SocketAddr = format!("198.51.100.{n}:40000").parse().unwrap();
        let record = peer.sign_record(pb::PeerRecord {
            nat: Some((&report(&public.to_string(), NatType::Hard)).into()),
            ..Default::default()
        });
        Introduced {
            request_id: n,
            peer: crate::identity::verify_record(&record).unwrap(),
            peer_public: public,
            nonce: vec![n as u8; 16],
            initiator: true,
            fresh: false,
            introducer: "192.0.2.1:3478".parse().unwrap(),
        }
    };
    let max = Config::default().max_spraying as u64;
    for n in 1..=max {
        assert_eq!(attempts.start(now, &mine, hard(n)), Ok(()));
    }
    assert_eq!(attempts.start(now, &mine, hard(max + 1)), Err(Unpunchable::Busy(max as usize)));
}

#[test]
fn only_a_few_private_addresses_are_tried_and_only_private_ones() {
    let peer_public: SocketAddr = "203.0.113.1:5000".parse().unwrap();
    let claimed: Vec<SocketAddr> = [
        "198.51.100.66:80",
        "10.0.0.7:4000",
        "100.64.1.2:4000",
        "192.168.1.2:4000",
        "172.16.0.3:4000",
        "10.0.0.8:4000",
        "10.0.0.9:4000",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let me = report("203.0.113.1:1000", NatType::Easy);
    let p = plan(&me, &report("203.0.113.1:5000", NatType::Easy), peer_public, &claimed).unwrap();
    let local: Vec<SocketAddr> = p.candidates.iter().filter(|c| c.path == Path::Local).map(|c| c.addr).collect();
    assert_eq!(local, claimed[1..5].to_vec(), "a public victim is never a LAN candidate; at most four");
}

/// The handshake rides the proofs, and still no answer is larger than the proof it answers:
/// the responder's answer carries its shorter handshake message, and the responder's proofs
/// are padded to the initiation the initiator's answer carries.
#[test]
fn an_acknowledgement_is_never_larger_than_the_proof_it_answers() {
    let now = Instant::now();
    let mut p = pair(now, true);
    p.a.handle_timeout(now);
    p.b.handle_timeout(now);
    let (a_probe, b_probe) = (p.a.poll_transmit().unwrap(), p.b.poll_transmit().unwrap());
    assert_eq!(punch_of(&a_probe).handshake.len(), INITIATION_LEN);
    assert_eq!(punch_of(&b_probe).padding.len(), INITIATION_LEN, "nothing to answer yet: all padding");
    p.b.handle_punch(now, SocketId::PRIMARY, p.a_addr, &punch_of(&a_probe));
    let b_ack = p.b.poll_transmit().unwrap();
    assert_eq!(punch_of(&b_ack).ack, Some(true));
    assert!(b_ack.payload.len() < a_probe.payload.len(), "no amplification toward an unproven source");
    p.a.handle_punch(now, SocketId::PRIMARY, p.b_addr, &punch_of(&b_probe));
    let a_ack = p.a.poll_transmit().unwrap();
    assert_eq!(punch_of(&a_ack).handshake.len(), INITIATION_LEN, "the initiation rides the answer too");
    assert_eq!(a_ack.payload.len(), b_probe.payload.len());
    // Once B answered the handshake, its proofs carry the answer and less padding: same size.
    p.b.handle_timeout(now + Config::default().interval);
    let b_later = std::iter::from_fn(|| p.b.poll_transmit()).last().unwrap();
    assert_eq!(punch_of(&b_later).handshake.len(), crate::session::noise::ANSWER_LEN);
    assert!(b_later.payload.len() >= a_ack.payload.len());
}

/// A's first proof is lost (B had not started yet). B's first proof reaches A, A's answer
/// connects B, and B's proof back proves the path to A: A answers that with a proof of its
/// own at once, not with its next round, and both are connected within the same instant.
#[test]
fn a_lost_first_proof_costs_no_round() {
    let now = Instant::now();
    let mut p = pair(now, true);
    p.a.handle_timeout(now);
    while p.a.poll_transmit().is_some() {} // lost
    p.b.handle_timeout(now);
    deliver(now, &mut p);
    let connected =
        |a: &mut Attempt| std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::Connected { .. }));
    assert!(connected(&mut p.b), "B connected on A's answer");
    assert!(connected(&mut p.a), "A connected without waiting for its next round");
}

/// DESIGN.md's strategy table, row by row: public, endpoint-independent, sequential and
/// random destination-dependent mappings; a full cone facing a hard side is reached
/// directly.
#[test]
fn the_strategy_table_is_designs() {
    use crate::nat::NatBehavior as B;
    use Strategy::{Birthday as Bd, Direct as D, Predict as P, Relay as R, SimultaneousOpen as S};
    let addr: SocketAddr = "203.0.113.1:5000".parse().unwrap();
    let kinds = [None, Some(B::PORT_RESTRICTED), Some(B::SYMMETRIC_SEQUENTIAL), Some(B::SYMMETRIC_RANDOM)];
    let report = |k: Option<B>| k.map_or(NatReport::public(addr), |b| b.expected_report(addr));
    let table = [[D, D, D, D], [D, S, P, Bd], [D, P, P, R], [D, Bd, R, R]];
    for (row, me) in kinds.iter().enumerate() {
        for (col, peer) in kinds.iter().enumerate() {
            let got = strategy(&report(*me), &report(*peer), false);
            assert_eq!(got, table[row][col], "{me:?} × {peer:?}");
        }
    }
    let full_cone = report(Some(B::FULL_CONE));
    assert_eq!(strategy(&full_cone, &report(Some(B::SYMMETRIC_RANDOM)), false), D);
    assert_eq!(strategy(&report(Some(B::SYMMETRIC_RANDOM)), &full_cone, false), D);
    assert_eq!(strategy(&report(Some(B::SYMMETRIC_RANDOM)), &full_cone, true), Strategy::Local);
    assert_eq!(strategy(&report(None), &report(None), true), D, "two public hosts on one IP need no LAN");
}

/// A's first proof, B's acknowledgement: A connects. Returns the pair, B's acknowledgement
/// and the proof A then sends to prove the path to B.
fn a_connects(now: Instant) -> (Pair, Transmit, Transmit) {
    let mut p = pair(now, false);
    p.a.handle_timeout(now);
    let probe = p.a.poll_transmit().expect("a's first proof");
    p.b.handle_punch(now, SocketId::PRIMARY, p.a_addr, &punch_of(&probe));
    let ack = p.b.poll_transmit().expect("b acknowledges");
    p.a.handle_punch(now, SocketId::PRIMARY, p.b_addr, &punch_of(&ack));
    assert!(matches!(p.a.poll_event(), Some(Event::Connected { .. })));
    let proving = p.a.poll_transmit().expect("the proof that proves the path to b");
    (p, ack, proving)
}

/// The proof that lets the peer trust our winning path is sent again when it is lost (the
/// real-NAT grid saw a birthday burst overflow the peer's socket buffer): the peer then
/// connects over the path we chose, not over one it finds later by itself.
#[test]
fn a_lost_path_proving_proof_is_sent_again() {
    let now = Instant::now();
    let (mut p, _, lost) = a_connects(now);
    assert_eq!(lost.dst, p.b_addr);
    let again = p.a.poll_timeout().expect("a copy is due");
    assert!(again < now + Config::default().linger, "the copy comes long before the linger ends");
    p.a.handle_timeout(again);
    deliver(again, &mut p);
    let Some(Event::Connected { remote, .. }) = p.b.poll_event() else { panic!("b not connected") };
    assert_eq!(remote, p.a_addr);
}

/// Each socket of a birthday pool is another address to the peer, with a token of its own:
/// the proof that proves the winning path must echo the token sent to that socket, whatever
/// came to the pool's other sockets since (the real-NAT matrix connected one side only, with
/// the other's pings dropped, when the last token to arrive was echoed).
#[test]
fn each_socket_echoes_the_token_the_peer_sent_to_it() {
    let now = Instant::now();
    let (mut p, ack, proving) = a_connects(now);
    let proving = punch_of(&proving);
    assert_eq!(proving.echo, Some(p.b.token(p.a_addr)));
    // Meanwhile b's answer to another pool socket, seen by b at another address.
    let other_socket = SocketId(7);
    let elsewhere = pb::Punch { token: Some(p.b.token("203.0.113.1:1001".parse().unwrap())), ..punch_of(&ack) };
    p.a.handle_punch(now, other_socket, p.b_addr, &elsewhere);
    let again = p.a.poll_timeout().expect("a copy is due");
    p.a.handle_timeout(again);
    let copy = p.a.poll_transmit().expect("the copy");
    assert_eq!(copy.socket, SocketId::PRIMARY);
    assert_eq!(punch_of(&copy).echo, Some(p.b.token(p.a_addr)), "the winning socket's own token");
}

/// Identities cost nothing: one host introducing itself under hundreds of names gets a
/// few punch attempts, one network a few more, and a peer elsewhere still gets one (the
/// audit filled all 64 slots from one host, and a real connect failed).
#[test]
fn one_host_or_network_takes_only_its_share_of_punch_attempts() {
    use crate::registration::Introduced;
    let now = Instant::now();
    let mine = report("203.0.113.1:1000", NatType::Easy);
    let mut attempts =
        actor::Attempts::new(Config::default(), Identity::from_seed(1), rand::SeedableRng::seed_from_u64(7));
    let easy = |n: u64, public: SocketAddr| {
        let peer = Identity::from_seed(1000 + n);
        let record = peer.sign_record(pb::PeerRecord {
            nat: Some((&report(&public.to_string(), NatType::Easy)).into()),
            ..Default::default()
        });
        Introduced {
            request_id: n,
            peer: crate::identity::verify_record(&record).unwrap(),
            peer_public: public,
            nonce: (n as u128).to_le_bytes().to_vec(),
            initiator: false,
            fresh: false,
            introducer: "192.0.2.1:3478".parse().unwrap(),
        }
    };
    let config = Config::default();
    let from_one_host = (0..300).filter(|&n| {
        let public = SocketAddr::from(([198, 51, 100, 7], 10_000 + n as u16));
        attempts.start(now, &mine, easy(n, public)).is_ok()
    });
    assert_eq!(from_one_host.count(), config.max_attempts_per_ip);
    let from_its_network = (300..600).filter(|&n| {
        let public = SocketAddr::from(([198, 51, 100, (n % 250) as u8 + 1], 20_000));
        attempts.start(now, &mine, easy(n, public)).is_ok()
    });
    assert_eq!(from_its_network.count(), config.max_attempts_per_network - config.max_attempts_per_ip);
    let elsewhere = SocketAddr::from(([192, 0, 2, 44], 5000));
    assert_eq!(attempts.start(now, &mine, easy(999, elsewhere)), Ok(()), "a real peer is not locked out");
}

/// A birthday pool whose every proof reaches the peer's one socket (its NAT filters by
/// address only, so once it sent to our IP all our mappings get through) goes out a few
/// sockets at a time: the real-NAT grid's 256-proof burst overflowed a restricted-cone
/// peer's receive buffer and took the first ping after the punch with it, about 1 run in
/// 12. Against a port-restricted peer only the sprayed mapping gets through: the whole
/// pool opens at once, as the spray's first guesses expect.
#[test]
fn a_pool_the_peer_receives_whole_goes_a_few_sockets_at_a_time() {
    let config = Config::default();
    let pool: Vec<SocketId> = (0..config.pool_size).map(actor::pool_socket).collect();
    let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
    let peer_public: SocketAddr = "198.51.100.9:2000".parse().unwrap();
    let hard = report("203.0.113.1:1000", NatType::Hard);
    let cone = |filtering| NatReport { filtering: Some(filtering), ..report("198.51.100.9:2000", NatType::Easy) };
    // The pool's sends per instant over its first pass, and every socket it sent from.
    let first_pass = |filtering| {
        let plan = plan(&hard, &cone(filtering), peer_public, &[]).unwrap();
        let now = Instant::now();
        let nonce = vec![5u8; 16];
        let handshake = handshake(&alice, &bob, &nonce, true);
        let mut a =
            Attempt::new(config.clone(), &alice, bob.peer_id(), nonce, true, plan, &pool, &[1; 32], handshake, now);
        let (mut bursts, mut sockets) = (Vec::new(), HashSet::new());
        while let Some(t) = a.poll_timeout().filter(|&t| t < now + config.pool_refresh) {
            a.handle_timeout(t);
            let from_pool: Vec<Transmit> =
                std::iter::from_fn(|| a.poll_transmit()).filter(|x| x.socket != SocketId::PRIMARY).collect();
            assert!(from_pool.iter().all(|x| x.dst == peer_public));
            if !from_pool.is_empty() {
                bursts.push((t - now, from_pool.len()));
                sockets.extend(from_pool.iter().map(|x| x.socket));
            }
        }
        (bursts, sockets.len())
    };
    let (bursts, sockets) = first_pass(Filtering::AddressDependent);
    let burst = usize::from(config.pool_burst);
    assert!(bursts.iter().all(|&(_, n)| n <= burst), "{bursts:?}");
    assert_eq!(sockets, pool.len(), "every mapping opens within the pass");
    let last = bursts.last().unwrap().0;
    assert_eq!(last, config.pool_pace * (pool.len().div_ceil(burst) as u32 - 1), "{bursts:?}");
    let (bursts, sockets) = first_pass(Filtering::AddressAndPortDependent);
    assert_eq!((bursts, sockets), (vec![(Duration::ZERO, pool.len())], pool.len()));
}
