use super::*;
use crate::identity::Identity;
use introducer_proto::frame;
use rand::SeedableRng;

const INTRODUCER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)), 3478);

fn broker(now: Instant) -> Broker {
    Broker::new(Config::default(), now, StdRng::seed_from_u64(1))
}

fn decode(t: &Transmit) -> Kind {
    match frame::decode(&t.payload).unwrap() {
        frame::Decoded::Envelope(e) => e.kind.unwrap(),
        other => panic!("not an envelope: {other:?}"),
    }
}

fn register(id: &Identity, issued_ms: u64, cookie: u64) -> Kind {
    let record = pb::PeerRecord { issued_ms, ..Default::default() };
    let proof = id.register_proof(cookie, 5).into();
    Kind::Register(pb::Register { record: Some(id.sign_record(record)), cookie, nonce: 5, proof, topics: vec![] })
}

/// Runs the challenge round trip and returns the Registered reply.
fn register_fully(b: &mut Broker, now: Instant, id: &Identity, src: SocketAddr) -> pb::Registered {
    b.handle(now, SocketId::PRIMARY, src, register(id, 1, 0));
    let Kind::RegisterChallenge(ch) = decode(&b.poll_transmit().unwrap()) else { panic!("expected challenge") };
    b.handle(now, SocketId::PRIMARY, src, register(id, 1, ch.cookie));
    let t = b.poll_transmit().unwrap();
    assert_eq!(t.dst, src);
    let Kind::Registered(r) = decode(&t) else { panic!("expected registered") };
    r
}

/// Alice and Bob, registered from their addresses.
/// The cookie the peer registered from `src` proved its address with.
fn cookie_at(b: &Broker, src: SocketAddr) -> u64 {
    b.by_peer[&b.by_addr[&src]].cookie
}

/// An introduction request as its sender makes it: with its cookie's MAC.
fn ask(cookie: u64, target: impl Into<prost::bytes::Bytes>, request_id: u64) -> pb::IntroduceRequest {
    let mut request = pb::IntroduceRequest { target: target.into(), request_id, mac: 0 };
    request.mac = crate::cookie::request_mac(cookie, &request);
    request
}

fn alice_and_bob_registered(b: &mut Broker, now: Instant) -> (Identity, Identity, SocketAddr, SocketAddr) {
    let (alice, bob) = (Identity::from_seed(1), Identity::from_seed(2));
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        ("203.0.113.5:4000".parse().unwrap(), "203.0.113.9:5000".parse().unwrap());
    register_fully(b, now, &alice, a_addr);
    register_fully(b, now, &bob, b_addr);
    (alice, bob, a_addr, b_addr)
}

#[test]
fn registration_needs_the_cookie_and_the_challenge_is_smaller_than_the_request() {
    let now = Instant::now();
    let mut b = broker(now);
    let alice = Identity::from_seed(1);
    let src: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    let request = Transmit::envelope(SocketId::PRIMARY, INTRODUCER, register(&alice, 1, 0));
    b.handle(now, SocketId::PRIMARY, src, register(&alice, 1, 0));
    let challenge = b.poll_transmit().unwrap();
    assert!(challenge.payload.len() < request.payload.len());
    assert_eq!(b.registrations(), 0);

    // A cookie minted for another address does not register.
    let Kind::RegisterChallenge(ch) = decode(&challenge) else { panic!() };
    b.handle(now, SocketId::PRIMARY, "203.0.113.6:4000".parse().unwrap(), register(&alice, 1, ch.cookie));
    assert!(matches!(decode(&b.poll_transmit().unwrap()), Kind::RegisterChallenge(_)));
    assert_eq!(b.registrations(), 0);

    let registered = register_fully(&mut b, now, &alice, src);
    assert_eq!(SocketAddr::try_from(registered.observed.as_ref().unwrap()).unwrap(), src);
    assert_eq!(b.registrations(), 1);
    assert_eq!(b.poll_event(), Some(Event::Registered { peer: alice.peer_id(), addr: src }));
}

/// Cheap checks come first: a Register with no valid cookie earns a challenge (smaller
/// than itself) before any signature is verified — a flood of spoofed Registers costs the
/// introducer a hash each, not a verification (the audit saw 66–86 µs each, and a genuine
/// ping fail at 20,000/s). A forged signature is caught once the cookie is right.
#[test]
fn forged_records_are_challenged_first_then_dropped_and_counted() {
    let now = Instant::now();
    let mut b = broker(now);
    let src: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    let forged = |cookie| {
        let Kind::Register(mut reg) = register(&Identity::from_seed(1), 1, cookie) else { unreachable!() };
        reg.record.as_mut().unwrap().signature = vec![0; 64].into();
        reg
    };
    let first = forged(0);
    let first_len = frame::encode_envelope(&pb::Envelope { kind: Some(Kind::Register(first.clone())) }).len();
    b.handle(now, SocketId::PRIMARY, src, Kind::Register(first));
    let challenge = b.poll_transmit().expect("a challenge, no signature checked");
    assert!(challenge.payload.len() < first_len);
    let Kind::RegisterChallenge(ch) = decode(&challenge) else { panic!("expected a challenge") };
    assert_eq!((b.stats().challenged, b.stats().dropped_bad_signature), (1, 0));
    b.handle(now, SocketId::PRIMARY, src, Kind::Register(forged(ch.cookie)));
    assert_eq!(b.poll_transmit(), None);
    assert_eq!((b.stats().dropped_bad_signature, b.registrations()), (1, 0));
}

#[test]
fn introduction_goes_to_both_with_one_nonce() {
    let now = Instant::now();
    let mut b = broker(now);
    let (alice, bob, a_addr, b_addr) = alice_and_bob_registered(&mut b, now);
    let request = ask(cookie_at(&b, a_addr), bob.peer_id().to_bytes(), 42);
    b.handle(now, SocketId::PRIMARY, a_addr, Kind::IntroduceRequest(request));
    let (to_a, to_b) = (b.poll_transmit().unwrap(), b.poll_transmit().unwrap());
    assert_eq!((to_a.dst, to_b.dst), (a_addr, b_addr));
    let (Kind::Introduction(ia), Kind::Introduction(ib)) = (decode(&to_a), decode(&to_b)) else { panic!() };
    assert_eq!(ia.nonce, ib.nonce);
    assert_eq!(ia.nonce.len(), 16);
    assert!(ia.initiator && !ib.initiator);
    assert_eq!(SocketAddr::try_from(ia.peer_public.as_ref().unwrap()).unwrap(), b_addr);
    assert_eq!(SocketAddr::try_from(ib.peer_public.as_ref().unwrap()).unwrap(), a_addr);
    assert_eq!(verify_record(ia.peer.as_ref().unwrap()).unwrap().peer_id, bob.peer_id());
    assert_eq!(verify_record(ib.peer.as_ref().unwrap()).unwrap().peer_id, alice.peer_id());
}

#[test]
fn unknown_target_gets_a_clear_error_and_strangers_get_nothing() {
    let now = Instant::now();
    let mut b = broker(now);
    let alice = Identity::from_seed(1);
    let a_addr: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    register_fully(&mut b, now, &alice, a_addr);
    let ghost = Identity::from_seed(9).peer_id();
    let request = Kind::IntroduceRequest(ask(cookie_at(&b, a_addr), ghost.to_bytes(), 1));
    b.handle(now, SocketId::PRIMARY, a_addr, request.clone());
    // The directory is asked first, and finds nobody.
    assert_eq!(lookups(&mut b), vec![Key::Peer(ghost)]);
    assert_eq!(b.poll_transmit(), None, "the request waits for the directory");
    b.set_homes(now, &ghost, vec![]);
    let Kind::IntroduceError(e) = decode(&b.poll_transmit().unwrap()) else { panic!() };
    assert_eq!(e.reason(), IntroduceErrorReason::TargetNotRegistered);
    assert!(e.message.contains(&ghost.to_string()));

    let stranger: SocketAddr = "203.0.113.77:1".parse().unwrap();
    b.handle(now, SocketId::PRIMARY, stranger, request);
    assert_eq!(b.poll_transmit(), None, "an unproven address gets nothing");
    assert_eq!(b.stats().dropped_unregistered, 1);
}

fn lookups(b: &mut Broker) -> Vec<Key> {
    std::iter::from_fn(|| b.poll_event())
        .filter_map(|e| if let Event::Lookup(k) = e { Some(k) } else { None })
        .collect()
}

/// A request for a peer registered elsewhere waits for the directory's answer (not
/// "not registered" before the mesh could say), repeats are answered from it for a while
/// without asking again, and a directory that never answers counts as "nobody".
#[test]
fn a_peer_registered_elsewhere_is_looked_up_once_and_the_request_waits() {
    let now = Instant::now();
    let mut b = broker(now);
    let alice = Identity::from_seed(1);
    let a_addr: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    register_fully(&mut b, now, &alice, a_addr);
    lookups(&mut b);
    let carol = Identity::from_seed(9).peer_id();
    let cookie = cookie_at(&b, a_addr);
    let request = |id| Kind::IntroduceRequest(ask(cookie, carol.to_bytes(), id));
    let (r1, r2) = (request(1), request(2));
    b.handle(now, SocketId::PRIMARY, a_addr, r1.clone());
    b.handle(now, SocketId::PRIMARY, a_addr, r2);
    assert_eq!(lookups(&mut b), vec![Key::Peer(carol)], "asked once");
    assert_eq!(b.poll_transmit(), None);
    let homes: Vec<SocketAddr> = vec!["198.51.100.2:3478".parse().unwrap(), "198.51.100.3:3478".parse().unwrap()];
    b.set_homes(now, &carol, homes.clone());
    let answers: Vec<pb::IntroduceError> = std::iter::from_fn(|| b.poll_transmit())
        .map(|t| if let Kind::IntroduceError(e) = decode(&t) { e } else { panic!() })
        .collect();
    assert_eq!(answers.iter().map(|e| e.request_id).collect::<Vec<_>>(), vec![1, 2], "both waited");
    for e in &answers {
        assert_eq!(e.reason(), IntroduceErrorReason::TargetElsewhere);
        assert_eq!(e.homes.iter().map(|h| SocketAddr::try_from(h).unwrap()).collect::<Vec<_>>(), homes);
    }
    // Fresh: answered at once, nobody asked.
    let later = now + Duration::from_millis(1500);
    b.handle(later, SocketId::PRIMARY, a_addr, request(3));
    assert!(b.poll_transmit().is_some());
    assert!(lookups(&mut b).is_empty());
    // Older: answered at once, and asked again behind it.
    let later = now + Duration::from_millis(2500);
    b.handle(later, SocketId::PRIMARY, a_addr, request(4));
    assert!(b.poll_transmit().is_some());
    assert_eq!(lookups(&mut b), vec![Key::Peer(carol)]);

    // A directory that never answers: "not registered" after 3 s.
    let dave = Identity::from_seed(10).peer_id();
    let r = Kind::IntroduceRequest(ask(cookie, dave.to_bytes(), 5));
    b.handle(later, SocketId::PRIMARY, a_addr, r);
    assert_eq!(lookups(&mut b), vec![Key::Peer(dave)]);
    let mut t = later;
    while b.poll_transmit().is_none() {
        t = b.poll_timeout().expect("a sweep is due");
        b.handle_timeout(t);
    }
    assert!(t >= later + Duration::from_secs(3));
    assert_eq!(b.stats().unknown_target, 5);
}

#[test]
fn one_address_holds_one_registration() {
    let now = Instant::now();
    let mut b = broker(now);
    let src: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    for seed in 1..=50 {
        register_fully(&mut b, now, &Identity::from_seed(seed), src);
    }
    assert_eq!(b.registrations(), 1, "minting identities does not fill the table");
    assert_eq!(b.stats().replaced, 49);
}

#[test]
fn registrations_expire_without_refresh_and_stale_records_lose() {
    let now = Instant::now();
    let mut b = broker(now);
    let alice = Identity::from_seed(1);
    let src: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    let ttl = Config::default().registration_ttl;
    let reg = register_fully(&mut b, now, &alice, src);
    assert_eq!(reg.ttl_secs as u64, ttl.as_secs());

    // An older record (replayed) does not replace the current one.
    b.handle(now, SocketId::PRIMARY, src, register(&alice, 0, 0));
    let Kind::RegisterChallenge(ch) = decode(&b.poll_transmit().unwrap()) else { panic!() };
    b.handle(now, SocketId::PRIMARY, src, register(&alice, 0, ch.cookie));
    assert_eq!(b.stats().dropped_stale_record, 1);

    let mut t = now;
    while b.registrations() > 0 {
        t = b.poll_timeout().expect("a sweep is due while registrations exist");
        b.handle_timeout(t);
    }
    assert!(t >= now + ttl && t <= now + ttl + ttl / 2, "expired after {:?}", t - now);
    assert_eq!(b.stats().expired, 1);
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn introduction_requests_are_rate_limited_per_requester() {
    let now = Instant::now();
    let mut b = broker(now);
    let (_, bob, a_addr, b_addr) = alice_and_bob_registered(&mut b, now);
    let cookie = cookie_at(&b, a_addr);
    let request = || Kind::IntroduceRequest(ask(cookie, bob.peer_id().to_bytes(), 1));
    let burst = Config::default().introduction_burst as usize;
    for _ in 0..burst + 5 {
        b.handle(now, SocketId::PRIMARY, a_addr, request());
    }
    let to_bob = std::iter::from_fn(|| b.poll_transmit()).filter(|t| t.dst == b_addr).count();
    assert_eq!(to_bob, burst, "the target hears of at most a burst of introductions");
    assert_eq!(b.stats().dropped_rate_limited, 5);
    // Tokens come back with time.
    b.handle(now + Duration::from_secs(1), SocketId::PRIMARY, a_addr, request());
    assert_eq!(std::iter::from_fn(|| b.poll_transmit()).filter(|t| t.dst == b_addr).count(), 1);
}

/// A public node asked for by its PeerId introduces itself: the requester hears of it
/// "here" (where it reached it), the node hears of the requester as it registered, both
/// with one nonce, which a repeat keeps and a new request changes.
#[test]
fn asked_for_itself_a_node_introduces_itself() {
    let now = Instant::now();
    let mut b = broker(now);
    let (alice, _, a_addr, _) = alice_and_bob_registered(&mut b, now);
    let me = Identity::from_seed(9);
    b.set_me(me.sign_record(pb::PeerRecord { issued_ms: 1, ..Default::default() }));
    let cookie = cookie_at(&b, a_addr);
    let mut ask_me = |request_id| {
        b.handle(
            now,
            SocketId::PRIMARY,
            a_addr,
            Kind::IntroduceRequest(ask(cookie, me.peer_id().to_bytes(), request_id)),
        );
        let sent: Vec<Transmit> = std::iter::from_fn(|| b.poll_transmit()).collect();
        assert_eq!(sent.len(), 1, "only the requester hears: {sent:?}");
        let Kind::Introduction(i) = decode(&sent[0]) else { panic!("{sent:?}") };
        assert_eq!(sent[0].dst, a_addr);
        assert_eq!(i.mac, introduction_mac(cookie, &i), "it can tell the introduction is its introducer's");
        let here = SocketAddr::try_from(i.peer_public.as_ref().unwrap()).unwrap();
        assert!(i.initiator && here.ip().is_unspecified(), "{i:?}");
        assert_eq!(verify_record(i.peer.as_ref().unwrap()).unwrap().peer_id, me.peer_id());
        let ours = std::iter::from_fn(|| b.poll_event()).find_map(|e| match e {
            Event::IntroducedToUs { peer, public, nonce, .. } => Some((peer.peer_id, public, nonce)),
            _ => None,
        });
        let (peer, public, nonce) = ours.expect("we hear of the requester");
        assert_eq!((peer, public, &nonce[..]), (alice.peer_id(), a_addr, &i.nonce[..]));
        nonce
    };
    let first = ask_me(7);
    assert_eq!(ask_me(7), first);
    assert_ne!(ask_me(8), first);
}

#[test]
fn a_repeated_request_gets_the_same_nonce_and_a_new_one_a_fresh_nonce() {
    let now = Instant::now();
    let mut b = broker(now);
    let (_, bob, a_addr, b_addr) = alice_and_bob_registered(&mut b, now);
    let cookie = cookie_at(&b, a_addr);
    let mut nonce_to_bob = |request_id| {
        let request = ask(cookie, bob.peer_id().to_bytes(), request_id);
        b.handle(now, SocketId::PRIMARY, a_addr, Kind::IntroduceRequest(request));
        let to_bob = std::iter::from_fn(|| b.poll_transmit()).find(|t| t.dst == b_addr).unwrap();
        let Kind::Introduction(i) = decode(&to_bob) else { panic!() };
        i.nonce
    };
    let first = nonce_to_bob(7);
    assert_eq!(nonce_to_bob(7), first);
    assert_ne!(nonce_to_bob(8), first);
}

#[test]
fn a_new_mapping_is_passed_on_to_the_other_side_only_from_the_registered_ip_and_a_few_times() {
    let now = Instant::now();
    let mut b = broker(now);
    let (alice, bob, a_addr, b_addr) = alice_and_bob_registered(&mut b, now);
    let cookie = cookie_at(&b, a_addr);
    let ask = |id| Kind::IntroduceRequest(ask(cookie, bob.peer_id().to_bytes(), id));
    b.handle(now, SocketId::PRIMARY, a_addr, ask(7));
    let Kind::Introduction(first) = decode(&b.poll_transmit().unwrap()) else { panic!() };
    b.poll_transmit().unwrap();
    let moved: SocketAddr = "203.0.113.9:5017".parse().unwrap();
    let shown = Kind::NewMapping(bob.new_mapping(&first.nonce, &alice.peer_id()));

    // From another IP, forged, or for no introduction: nothing.
    b.handle(now, SocketId::PRIMARY, "203.0.113.10:5017".parse().unwrap(), shown.clone());
    let Kind::NewMapping(mut forged) = shown.clone() else { unreachable!() };
    forged.signature = vec![0; 64].into();
    b.handle(now, SocketId::PRIMARY, moved, Kind::NewMapping(forged));
    b.handle(now, SocketId::PRIMARY, moved, Kind::NewMapping(bob.new_mapping(&[9; 16], &alice.peer_id())));
    // Naming a peer that was not the other side: the introduction is not found.
    let elsewhere = Kind::NewMapping(bob.new_mapping(&first.nonce, &Identity::from_seed(66).peer_id()));
    b.handle(now, SocketId::PRIMARY, moved, elsewhere);
    assert_eq!(b.poll_transmit(), None);
    assert_eq!(b.stats().dropped_new_mapping, 4);

    // Bob's new mapping reaches Alice, in an introduction like the first, marked fresh.
    b.handle(now, SocketId::PRIMARY, moved, shown.clone());
    let t = b.poll_transmit().unwrap();
    assert_eq!(t.dst, a_addr);
    let Kind::Introduction(update) = decode(&t) else { panic!() };
    assert_eq!(SocketAddr::try_from(update.peer_public.as_ref().unwrap()).unwrap(), moved);
    assert!(update.fresh && update.initiator);
    assert_eq!((update.nonce.clone(), update.request_id), (first.nonce.clone(), first.request_id));
    assert_eq!(
        update.mac,
        crate::cookie::introduction_mac(b.by_peer[&PeerKey::of(&alice.peer_id()).unwrap()].cookie, &update)
    );
    assert_eq!(b.poll_transmit(), None, "nothing back to Bob's new mapping");
    // Repeats of the request name Bob at his new mapping from now on; Alice is unmoved.
    b.handle(now, SocketId::PRIMARY, a_addr, ask(7));
    let Kind::Introduction(repeat) = decode(&b.poll_transmit().unwrap()) else { panic!() };
    assert_eq!(repeat.peer_public, update.peer_public);
    let Kind::Introduction(to_bob) = decode(&b.poll_transmit().unwrap()) else { panic!() };
    assert!(!to_bob.fresh);
    assert_eq!(SocketAddr::try_from(to_bob.peer_public.as_ref().unwrap()).unwrap(), a_addr);

    // A few per introduction, then no more.
    for _ in 1..MOVES_PER_INTRODUCTION {
        b.handle(now, SocketId::PRIMARY, moved, shown.clone());
        assert!(b.poll_transmit().is_some());
    }
    b.handle(now, SocketId::PRIMARY, moved, shown);
    assert_eq!(b.poll_transmit(), None);
    assert_eq!((b.stats().new_mappings, b.stats().dropped_new_mapping), (4, 5));
    let _ = b_addr;
}

mod measure {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts the bytes this thread holds through the global allocator, so that a test can
    /// measure what a structure really allocates (tests run on threads of their own).
    struct Counting;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    fn add(bytes: isize) {
        let _ = HELD.try_with(|held| held.set(held.get() + bytes));
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            unsafe { System.dealloc(p, layout) };
            add(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let q = unsafe { System.realloc(p, layout, new_size) };
            if !q.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Bytes this thread holds on the heap now.
    pub fn held() -> isize {
        HELD.with(|held| held.get())
    }
}

/// Registers `record` from `src`, answering the challenge if one comes.
fn register_record(b: &mut Broker, now: Instant, src: SocketAddr, id: &Identity, record: &pb::SignedPeerRecord) {
    let register = |cookie| {
        let proof = id.register_proof(cookie, 5).into();
        Kind::Register(pb::Register { record: Some(record.clone()), cookie, nonce: 5, proof, topics: vec![] })
    };
    b.handle(now, SocketId::PRIMARY, src, register(0));
    if let Some(Kind::RegisterChallenge(ch)) = b.poll_transmit().as_ref().map(decode) {
        b.handle(now, SocketId::PRIMARY, src, register(ch.cookie));
    }
    while b.poll_transmit().is_some() {}
    while b.poll_event().is_some() {}
}

/// A distinct source address per peer.
fn source(i: usize) -> SocketAddr {
    SocketAddr::new(std::net::Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8).into(), 4000)
}

#[test]
fn a_padded_record_is_refused_and_counted_and_never_registered() {
    let now = Instant::now();
    let mut b = broker(now);
    let alice = Identity::from_seed(1);
    // The audit's record: validly signed, padded with 533 empty private addresses.
    let padded = pb::PeerRecord { private_addrs: vec![pb::Addr::default(); 533], issued_ms: 1, ..Default::default() };
    let signed = alice.sign_record(padded);
    register_record(&mut b, now, source(1), &alice, &signed);
    register_record(&mut b, now, source(1), &alice, &signed);
    assert_eq!(b.registrations(), 0);
    assert_eq!(b.stats().dropped_oversized, 2);
    assert_eq!((b.stats().challenged, b.stats().dropped_bad_signature), (0, 0), "refused before anything else");

    // One private address more than a punch tries is refused as well; as many is fine.
    let addrs = |n: u16| (1..=n).map(|i| SocketAddr::from(([192, 168, 1, i as u8], 4000)).into()).collect();
    let five = pb::PeerRecord { private_addrs: addrs(5), issued_ms: 1, ..Default::default() };
    register_record(&mut b, now, source(1), &alice, &alice.sign_record(five));
    assert_eq!((b.registrations(), b.stats().dropped_oversized), (0, 3));
    let four = pb::PeerRecord { private_addrs: addrs(4), issued_ms: 1, ..Default::default() };
    register_record(&mut b, now, source(1), &alice, &alice.sign_record(four));
    assert_eq!(b.registrations(), 1);
}

/// A record as a node signs it: `private` private addresses (IPv6 when `v6`) and a NAT
/// report with every field set.
fn honest_record(i: usize, private: u16, v6: bool) -> pb::PeerRecord {
    let addr = |n: u16| -> pb::Addr {
        match v6 {
            true => SocketAddr::new([0xfd00, 0, 0, 0, 0, 0, i as u16, n].into(), 50_000).into(),
            false => SocketAddr::from(([192, 168, i as u8, n as u8], 50_000)).into(),
        }
    };
    let public: SocketAddr =
        if v6 { "[2001:db8::1]:65000".parse().unwrap() } else { "203.0.113.1:65000".parse().unwrap() };
    let nat = crate::nat::NatReport {
        public_addr: public,
        no_nat: false,
        mapping: Some(crate::nat::Mapping::AddressAndPortDependent),
        filtering: Some(crate::nat::Filtering::AddressAndPortDependent),
        allocation: Some(crate::nat::Allocation::Sequential { step: -1 }),
    };
    pb::PeerRecord {
        peer_id: Default::default(),
        private_addrs: (1..=private).map(addr).collect(),
        nat: Some((&nat).into()),
        issued_ms: 1_700_000_000_000 + i as u64,
    }
}

/// Registers `n` peers with records made by `record`, measuring the heap they take (by the
/// counting allocator of this test binary); returns the broker and the bytes per peer.
fn measured(n: usize, record: impl Fn(usize) -> pb::PeerRecord) -> (Broker, Instant, usize) {
    let now = Instant::now();
    let mut b = broker(now);
    let ids: Vec<_> = (0..n).map(|i| Identity::from_seed(1000 + i as u64)).collect();
    let signed: Vec<_> = ids.iter().enumerate().map(|(i, id)| id.sign_record(record(i))).collect();
    // A first clone turns a record's `Bytes` into shared ones, allocating: not the broker's.
    signed.iter().for_each(|r| drop(r.clone()));
    let before = measure::held();
    for (i, record) in signed.iter().enumerate() {
        register_record(&mut b, now, source(i), &ids[i], record);
    }
    let held = measure::held() - before;
    assert_eq!(b.registrations(), n);
    (b, now, held as usize / n)
}

#[test]
fn a_registered_peer_costs_under_a_kibibyte() {
    for (private, v6) in [(1, false), (4, true)] {
        let (b, _, allocated) = measured(1000, |i| honest_record(i, private, v6));
        let computed = b.memory_per_registration();
        println!("{private} private addresses (IPv6: {v6}): {computed} B computed, {allocated} B allocated");
        assert!(computed <= 1024, "{computed} B per registered peer");
        assert!(allocated <= 1024, "{allocated} B allocated per registered peer");
        // The figure accounts for what is allocated (the queues' few hundred bytes aside).
        assert!(computed.abs_diff(allocated) * 20 <= allocated, "{computed} B computed, {allocated} B allocated");
    }
}

#[test]
fn lapsed_registrations_give_their_memory_back() {
    let largest = |i| honest_record(i, crate::identity::MAX_PRIVATE_ADDRS as u16, true);
    let (mut b, now, _) = measured(2000, largest);
    assert!(b.registration_memory() > 2000 * 500);
    // Every peer asks for introductions: remembered in its registration, at no extra cost.
    let idle = b.memory_per_registration();
    for i in 0..2000 {
        let target: prost::bytes::Bytes =
            Identity::from_seed(1000 + ((i + 1) % 2000) as u64).peer_id().to_bytes().into();
        let cookie = cookie_at(&b, source(i));
        for request_id in 0..RECENT_INTRODUCTIONS as u64 + 1 {
            let request = ask(cookie, target.clone(), request_id);
            b.handle(now, SocketId::PRIMARY, source(i), Kind::IntroduceRequest(request));
        }
    }
    let busy = b.memory_per_registration();
    println!(
        "largest honest record: {idle} B per registered peer, {busy} B after {RECENT_INTRODUCTIONS} introductions"
    );
    assert!(busy <= 1024 && busy == idle, "{busy} B per peer that asked for introductions ({idle} B idle)");
    while b.poll_transmit().is_some() {}
    while b.poll_event().is_some() {}

    let mut t = now;
    while let Some(next) = b.poll_timeout() {
        t = next;
        b.handle_timeout(t);
    }
    assert!(t <= now + Config::default().registration_ttl * 2);
    assert_eq!(b.stats().expired, 2000);
    assert_eq!((b.registrations(), b.by_addr.len()), (0, 0));
    assert_eq!(b.registration_memory(), 0, "the tables let their memory go");
}

/// Anybody introduced to a peer holds its signed record. Registering it from another
/// address takes a signature over that address's cookie too, which only the key's owner can
/// make: the copy registers nobody, and the owner stays where it is (the audit saw every
/// introduction meant for the victim go to the attacker).
#[test]
fn a_copied_record_does_not_hijack_a_registration() {
    let now = Instant::now();
    let mut b = broker(now);
    let (alice, _, a_addr, _) = alice_and_bob_registered(&mut b, now);
    let copied = alice.sign_record(pb::PeerRecord { issued_ms: 1, ..Default::default() });
    let mallory = Identity::from_seed(66);
    let m_addr: SocketAddr = "198.51.100.66:6666".parse().unwrap();
    register_record(&mut b, now, m_addr, &mallory, &copied);
    assert_eq!(b.stats().dropped_no_possession, 1);
    assert_eq!(b.by_addr.get(&m_addr), None);
    assert!(b.by_addr.contains_key(&a_addr), "alice is still registered where she is");
}

/// A request spoofed from a registered peer's address lacks its cookie's MAC: it aims no
/// introduction (the audit saw 20 spoofed 46-byte requests make a target send 374 kB).
#[test]
fn a_spoofed_introduction_request_is_dropped() {
    let now = Instant::now();
    let mut b = broker(now);
    let (_, bob, a_addr, _) = alice_and_bob_registered(&mut b, now);
    for guess in [0, 1, cookie_at(&b, a_addr) ^ 1] {
        b.handle(now, SocketId::PRIMARY, a_addr, Kind::IntroduceRequest(ask(guess, bob.peer_id().to_bytes(), 1)));
    }
    assert_eq!(b.poll_transmit(), None);
    assert_eq!((b.stats().dropped_bad_mac, b.stats().introduced), (3, 0));
    b.handle(
        now,
        SocketId::PRIMARY,
        a_addr,
        Kind::IntroduceRequest(ask(cookie_at(&b, a_addr), bob.peer_id().to_bytes(), 1)),
    );
    assert_eq!(b.stats().introduced, 1);
}

/// Identities and ports cost nothing: one host registering hundreds of names gets its
/// share, its network a bigger one, and nobody else is locked out (the audit reached the
/// 100,000-registration cap from 2 IPs).
#[test]
fn one_host_or_network_takes_only_its_share_of_registrations() {
    let now = Instant::now();
    let mut b = broker(now);
    let config = Config::default();
    let id = |n: u64| Identity::from_seed(5000 + n);
    let register = |b: &mut Broker, n: u64, src: SocketAddr| {
        register_record(b, now, src, &id(n), &id(n).sign_record(pb::PeerRecord { issued_ms: 1, ..Default::default() }))
    };
    for n in 0..300 {
        register(&mut b, n, SocketAddr::from(([198, 51, 100, 7], 10_000 + n as u16)));
    }
    assert_eq!(b.registrations(), config.max_registrations_per_ip as usize);
    for n in 300..700 {
        register(&mut b, n, SocketAddr::from(([198, 51, 100, (n % 240) as u8 + 8], 20_000 + n as u16)));
    }
    assert_eq!(b.registrations(), config.max_registrations_per_network as usize);
    assert_eq!(b.stats().dropped_host_full, 300 - 64 + 400 - (256 - 64));
    register(&mut b, 999, "192.0.2.44:5000".parse().unwrap());
    assert_eq!(b.registrations(), config.max_registrations_per_network as usize + 1, "others still register");
    // Once they lapse, the shares are free again.
    let later = now + config.registration_ttl * 2;
    b.handle_timeout(later);
    assert_eq!((b.registrations(), b.hosts.per_ip.len(), b.hosts.per_network.len()), (0, 0, 0));
}
