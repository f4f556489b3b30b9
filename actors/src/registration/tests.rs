use super::*;
use crate::broker::{self, Broker};
use crate::identity::Identity;
use introducer_proto::frame::{self, Decoded};
use rand::{rngs::StdRng, SeedableRng};

const INTRODUCER: &str = "198.51.100.1:3478";

fn kind(t: &Transmit) -> Kind {
    match frame::decode(&t.payload).unwrap() {
        Decoded::Envelope(e) => e.kind.unwrap(),
        other => panic!("not an envelope: {other:?}"),
    }
}

/// Carries every pending datagram between the clients and the broker until quiet.
fn exchange(now: Instant, broker: &mut Broker, clients: &mut [(&mut Registration, SocketAddr)]) {
    loop {
        let mut moved = false;
        for (client, addr) in clients.iter_mut() {
            while let Some(t) = client.poll_transmit() {
                broker.handle(now, SocketId::PRIMARY, *addr, kind(&t));
                moved = true;
            }
        }
        // A mesh of one: the directory knows of nobody registered elsewhere.
        while let Some(e) = broker.poll_event() {
            if let broker::Event::Lookup(crate::mesh::directory::Key::Peer(p)) = e {
                broker.set_homes(now, &p, Vec::new());
            }
        }
        while let Some(t) = broker.poll_transmit() {
            let (client, _) = clients.iter_mut().find(|(_, a)| *a == t.dst).expect("reply to a known client");
            client.handle(now, INTRODUCER.parse().unwrap(), kind(&t));
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// An introducer and Alice's (not yet registered) client, at her address.
fn alice_and_her_introducer(now: Instant) -> (Broker, Registration, SocketAddr) {
    let broker = Broker::new(broker::Config::default(), now, StdRng::seed_from_u64(3));
    (broker, client(&Identity::from_seed(1), now), "203.0.113.5:4000".parse().unwrap())
}

fn client(id: &Identity, now: Instant) -> Registration {
    let record = id.sign_record(pb::PeerRecord { issued_ms: 1, ..Default::default() });
    let rng = StdRng::seed_from_u64(id.peer_id().to_bytes().iter().map(|&b| u64::from(b)).sum());
    Registration::new(Config::default(), INTRODUCER.parse().unwrap(), SocketId::PRIMARY, (id.clone(), record), now, rng)
}

#[test]
fn registers_through_the_challenge_and_gets_introduced() {
    let now = Instant::now();
    let mut broker = Broker::new(broker::Config::default(), now, StdRng::seed_from_u64(3));
    let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
    let (mut a, mut b) = (client(&alice, now), client(&bob, now));
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        ("203.0.113.5:4000".parse().unwrap(), "203.0.113.9:5000".parse().unwrap());
    a.handle_timeout(now);
    b.handle_timeout(now);
    exchange(now, &mut broker, &mut [(&mut a, a_addr), (&mut b, b_addr)]);
    assert_eq!(a.poll_event(), Some(Event::Registered { observed: a_addr }));
    assert_eq!(b.poll_event(), Some(Event::Registered { observed: b_addr }));
    assert_eq!(a.poll_timeout(), Some(now + Config::default().keepalive));

    a.introduce(now, bob.peer_id());
    exchange(now, &mut broker, &mut [(&mut a, a_addr), (&mut b, b_addr)]);
    let Some(Event::Introduced(ia)) = a.poll_event() else { panic!("alice not introduced") };
    let Some(Event::Introduced(ib)) = b.poll_event() else { panic!("bob not introduced") };
    assert_eq!((ia.peer.peer_id, ia.peer_public, ia.initiator), (bob.peer_id(), b_addr, true));
    assert_eq!((ib.peer.peer_id, ib.peer_public, ib.initiator), (alice.peer_id(), a_addr, false));
    assert_eq!(ia.nonce, ib.nonce);

    let ghost = Identity::from_seed(7).peer_id();
    a.introduce(now, ghost);
    exchange(now, &mut broker, &mut [(&mut a, a_addr), (&mut b, b_addr)]);
    let Some(Event::IntroduceFailed { target, error }) = a.poll_event() else { panic!() };
    assert_eq!(target, ghost);
    assert!(matches!(error, IntroduceError::TargetNotRegistered { target, .. } if target == ghost), "{error}");
}

/// A public node asked for itself introduces itself "here": the requester punches to
/// where it registered with it.
#[test]
fn an_introducer_introducing_itself_is_reached_where_we_registered() {
    let now = Instant::now();
    let (mut broker, mut a, a_addr) = alice_and_her_introducer(now);
    let me = Identity::from_seed(9);
    broker.set_me(me.sign_record(pb::PeerRecord { issued_ms: 1, ..Default::default() }));
    a.handle_timeout(now);
    exchange(now, &mut broker, &mut [(&mut a, a_addr)]);
    assert_eq!(a.poll_event(), Some(Event::Registered { observed: a_addr }));
    a.introduce(now, me.peer_id());
    exchange(now, &mut broker, &mut [(&mut a, a_addr)]);
    let Some(Event::Introduced(intro)) = a.poll_event() else { panic!("not introduced") };
    assert_eq!((intro.peer.peer_id, intro.peer_public), (me.peer_id(), INTRODUCER.parse().unwrap()));
}

#[test]
fn unanswered_registration_backs_off_reports_once_and_keeps_trying_slowly() {
    let now = Instant::now();
    let config = Config::default();
    let mut a = client(&Identity::from_seed(1), now);
    let mut sends = vec![];
    while let Some(t) = a.poll_timeout().filter(|t| *t < now + 120 * config.keepalive / 15) {
        a.handle_timeout(t);
        while a.poll_transmit().is_some() {
            sends.push(t - now);
        }
    }
    let fast = config.max_tries as usize;
    assert!(sends[..fast].windows(3).all(|w| w[2] - w[1] == 2 * (w[1] - w[0])), "not doubling: {sends:?}");
    assert!(sends[fast..].windows(2).all(|w| w[1] - w[0] == config.keepalive), "then every keepalive: {sends:?}");
    assert!(sends.len() > fast + 3, "keeps trying: {sends:?}");
    assert_eq!(a.poll_event(), Some(Event::Unreachable));
    assert_eq!(a.poll_event(), None, "reported once");
}

#[test]
fn register_retries_at_250_500_1000_2000_4000_ms_and_a_challenge_starts_a_fresh_round() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut a = client(&Identity::from_seed(1), start);
    // (ms since start, what happened), until `until`.
    let run = |a: &mut Registration, until: Instant| {
        let mut log = vec![];
        while let Some(t) = a.poll_timeout().filter(|t| *t <= until) {
            a.handle_timeout(t);
            let ms = (t - start).as_millis();
            log.extend(std::iter::from_fn(|| a.poll_event()).map(|e| (ms, format!("{e:?}"))));
            log.extend(std::iter::from_fn(|| a.poll_transmit()).map(|t| (ms, format!("{:?}", kind(&t)))));
        }
        log.iter().map(|(ms, what)| (*ms, what.split([' ', '(']).next().unwrap().to_owned())).collect::<Vec<_>>()
    };
    let r = |ms| (ms, "Register".to_owned());
    let unreachable = |ms| (ms, "Unreachable".to_owned());
    // Five tries, the last one waited for in full, then one try per keepalive.
    let slow = [unreachable(7750), r(7750), r(22_750), r(37_750)];
    let expected: Vec<_> = [r(0), r(250), r(750), r(1750), r(3750)].into_iter().chain(slow).collect();
    assert_eq!(run(&mut a, at(40_000)), expected);

    // A challenge in the slow phase: fast tries again, and their end is reported again.
    let challenge = pb::RegisterChallenge { cookie: 7, nonce: a.nonce };
    a.handle(at(40_000), INTRODUCER.parse().unwrap(), Kind::RegisterChallenge(challenge));
    assert!(matches!(a.poll_transmit().map(|t| kind(&t)), Some(Kind::Register(pb::Register { cookie: 7, .. }))));
    let expected = [r(40_250), r(40_750), r(41_750), r(43_750), unreachable(47_750), r(47_750)];
    assert_eq!(run(&mut a, at(50_000)), expected);
}

#[test]
fn an_introducer_back_after_an_outage_is_registered_with_again() {
    let now = Instant::now();
    let (mut broker, mut a, a_addr) = alice_and_her_introducer(now);
    // The introducer is down: every try is lost, until the client reports it unreachable.
    while a.poll_event().is_none() {
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        while a.poll_transmit().is_some() {}
    }
    // Back up: the next slow retry registers again.
    let t = a.poll_timeout().unwrap();
    a.handle_timeout(t);
    exchange(t, &mut broker, &mut [(&mut a, a_addr)]);
    assert_eq!(a.poll_event(), Some(Event::Registered { observed: a_addr }));
}

#[test]
fn messages_from_others_than_the_introducer_are_dropped() {
    let now = Instant::now();
    let mut a = client(&Identity::from_seed(1), now);
    let observed = Some(pb::Addr::from("203.0.113.66:1".parse::<SocketAddr>().unwrap()));
    let registered = pb::Registered { observed, ttl_secs: 60, nonce: a.nonce, members: vec![] };
    a.handle(now, "203.0.113.66:1".parse().unwrap(), Kind::Registered(registered));
    assert_eq!(a.poll_event(), None);
    assert_eq!(a.stats().dropped_foreign, 1);
}

/// From the introducer's own address, but not answering our Register (spoofed: the audit
/// saw a 12-byte challenge replace the cookie and draw two Registers, a Registered with
/// another address make the node punch every session again, and an IntroduceError with a
/// guessed request id fail a connect): nothing changes, nothing is sent.
#[test]
fn spoofed_control_from_the_introducers_address_is_ignored() {
    let now = Instant::now();
    let (mut broker, mut a, a_addr) = alice_and_her_introducer(now);
    a.handle_timeout(now);
    exchange(now, &mut broker, &mut [(&mut a, a_addr)]);
    assert_eq!(a.poll_event(), Some(Event::Registered { observed: a_addr }));
    let cookie = a.cookie;
    let introducer: SocketAddr = INTRODUCER.parse().unwrap();
    for guess in [0, 1, 2, u64::MAX] {
        a.handle(now, introducer, Kind::RegisterChallenge(pb::RegisterChallenge { cookie: 99, nonce: guess }));
        let elsewhere = Some(pb::Addr::from("198.51.100.66:1".parse::<SocketAddr>().unwrap()));
        a.handle(
            now,
            introducer,
            Kind::Registered(pb::Registered { observed: elsewhere, ttl_secs: 60, nonce: guess, members: vec![] }),
        );
    }
    assert_eq!((a.cookie, a.poll_transmit(), a.poll_event()), (cookie, None, None));
    assert_eq!(a.stats().dropped_unanswered, 8);
    // Request ids are not counted up from 1: a guessed one fails nothing.
    let target = Identity::from_seed(7).peer_id();
    let id = a.introduce(now, target);
    while a.poll_transmit().is_some() {}
    for guess in (0..64).filter(|g| *g != id) {
        let error = pb::IntroduceError { request_id: guess, target: target.to_bytes().into(), ..Default::default() };
        a.handle(now, introducer, Kind::IntroduceError(error));
    }
    assert_eq!(a.poll_event(), None);
}

#[test]
fn an_introduction_nobody_asked_for_about_someone_else_is_dropped() {
    let now = Instant::now();
    let mut a = client(&Identity::from_seed(1), now);
    let intro = pb::Introduction {
        request_id: 99,
        peer: Some(Identity::from_seed(2).sign_record(Default::default())),
        peer_public: Some("203.0.113.9:1".parse::<SocketAddr>().unwrap().into()),
        nonce: vec![0; 16].into(),
        initiator: true,
        mac: 0,
        fresh: false,
    };
    a.handle(now, INTRODUCER.parse().unwrap(), Kind::Introduction(intro));
    assert_eq!(a.poll_event(), None);
    assert_eq!(a.stats().dropped_bad_introduction, 1);
}

#[test]
fn a_spoofed_introduction_without_our_cookies_mac_is_dropped() {
    let now = Instant::now();
    let (mut broker, mut a, a_addr) = alice_and_her_introducer(now);
    a.handle_timeout(now);
    exchange(now, &mut broker, &mut [(&mut a, a_addr)]);
    assert!(matches!(a.poll_event(), Some(Event::Registered { .. })));
    // From the introducer's address, well formed, signed by a real peer, aimed at a victim.
    let mallory = Identity::from_seed(66);
    let forged = pb::Introduction {
        request_id: 1,
        peer: Some(mallory.sign_record(Default::default())),
        peer_public: Some("192.0.2.99:80".parse::<SocketAddr>().unwrap().into()),
        nonce: vec![1; 16].into(),
        initiator: false,
        mac: 0x1234,
        fresh: false,
    };
    a.handle(now, INTRODUCER.parse().unwrap(), Kind::Introduction(forged));
    assert_eq!(a.poll_event(), None, "no punch toward the victim");
    assert_eq!(a.stats().dropped_bad_introduction, 1);
}

/// A record updated once registered (the node's NAT was classified after it registered
/// with a provisional report) goes out at once, cookie-proven, and the introducer
/// introduces us with it from then on; no second `Registered` is reported.
#[test]
fn an_updated_record_is_registered_at_once_and_introduced_from_then_on() {
    let now = Instant::now();
    let mut broker = Broker::new(broker::Config::default(), now, StdRng::seed_from_u64(3));
    let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
    let (mut a, mut b) = (client(&alice, now), client(&bob, now));
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        ("203.0.113.5:4000".parse().unwrap(), "203.0.113.9:5000".parse().unwrap());
    a.handle_timeout(now);
    b.handle_timeout(now);
    exchange(now, &mut broker, &mut [(&mut a, a_addr), (&mut b, b_addr)]);
    assert!(matches!(a.poll_event(), Some(Event::Registered { .. })));
    assert!(matches!(b.poll_event(), Some(Event::Registered { .. })));

    let later = now + Duration::from_millis(700);
    let nat = pb::NatReport { mapping: pb::Mapping::EndpointIndependent as i32, ..Default::default() };
    a.update_record(
        later,
        alice.sign_record(pb::PeerRecord { nat: Some(nat.clone()), issued_ms: 2, ..Default::default() }),
    );
    let register = a.poll_transmit().expect("a Register, now rather than at the next keepalive");
    match kind(&register) {
        Kind::Register(r) => assert!(r.cookie != 0 && !r.proof.is_empty(), "proven with the cookie it holds"),
        other => panic!("expected a Register, got {other:?}"),
    }
    broker.handle(later, SocketId::PRIMARY, a_addr, kind(&register));
    exchange(later, &mut broker, &mut [(&mut a, a_addr), (&mut b, b_addr)]);
    assert_eq!(a.poll_event(), None, "the same address: nothing new to report");
    assert_eq!(broker.stats().refreshed, 1);

    b.introduce(later, alice.peer_id());
    exchange(later, &mut broker, &mut [(&mut a, a_addr), (&mut b, b_addr)]);
    let Some(Event::Introduced(ib)) = b.poll_event() else { panic!("bob not introduced") };
    assert_eq!(ib.peer.record.nat, Some(nat), "bob hears of alice's new record");
}
