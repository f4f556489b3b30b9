//! Two sessions of one pair of peers (A controlling, B following), exchanging genuine
//! traffic the input may delay or lose, while an attacker who can send from A's and B's
//! addresses sends each of them forged `Sealed` and `Handshake` envelopes, genuine ones
//! tampered with, and copies of genuine ones (a copy of one its side never took is that
//! datagram arriving late, not a forgery).
//!
//! Checked after every forgery: it authenticated nothing (`datagrams_in` and `handshakes`
//! unchanged, no event, the path unmoved) and was counted as dropped, once; and nothing
//! answered it but the copy of an answer the session had already given (a relayed
//! session's responder answers a copy of the initiation it answered, no larger). Checked
//! always: every datagram either side sends decodes and goes to an address its peer proved.
//! With the keys a punch made (the usual case), the pair still talks both ways at the end:
//! forgeries cannot break a session.

use crate::gen;
use arbitrary::{Result, Unstructured};
use introducer_actors::identity::Identity;
use introducer_actors::punch::{Path, Strategy};
use introducer_actors::session::noise::{Binding, Handshake, Keys, Statics};
use introducer_actors::session::{Config, Event, ProvenPath, Session, Stats};
use introducer_actors::{SocketId, Transmit};
use introducer_proto::frame::{self, Decoded};
use introducer_proto::pb::{self, envelope::Kind};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const A: &str = "203.0.113.1:1000";
/// A second path A proved itself over (its LAN address, say): B takes traffic from both.
const A_LAN: &str = "10.0.0.1:1000";
const B: &str = "198.51.100.2:2000";
const STRANGER: &str = "192.0.2.66:6666";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

fn statics(me: u64, peer: u64) -> Statics {
    Statics::new(&Identity::from_seed(me), &Identity::from_seed(peer).peer_id()).expect("ed25519 peers")
}

/// The keys a punch's handshake made between seeds 1 (initiator) and 2: made once, as
/// every input starts from them.
fn punch_keys() -> &'static (Keys, Keys) {
    static KEYS: OnceLock<(Keys, Keys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let binding = Binding::Punch(&[1; 16]);
        let mut i = Handshake::initiate(statics(1, 2), binding, StdRng::seed_from_u64(1));
        let mut r = Handshake::respond(statics(2, 1), binding, StdRng::seed_from_u64(2));
        let b = r.handle(i.message().expect("an initiation")).expect("genuine").expect("keys");
        let a = i.handle(r.message().expect("an answer")).expect("genuine").expect("keys");
        (a, b)
    })
}

/// One side: the session and what it has sent.
struct Side {
    session: Session,
    /// Where the other side's datagrams may come from.
    peer_addrs: Vec<SocketAddr>,
    /// The handshake messages this side has sent, for telling a repeated answer.
    handshakes_sent: Vec<Vec<u8>>,
}

/// A genuine datagram on its way to one side.
struct Genuine {
    to_b: bool,
    kind: Kind,
    /// Handed to its side (at least once).
    delivered: bool,
    /// Taken by its side: it authenticated, or made keys. A copy that arrives before the
    /// keys it was sealed with is dropped, and taken when it comes again after them: that
    /// is not a replay, as nothing took it before.
    accepted: bool,
}

pub struct Pair {
    a: Side,
    b: Side,
    now: Instant,
    /// Punched keys from the start (else the handshake runs over the path, as relayed).
    keyed: bool,
    /// Every genuine datagram, in the order sent.
    genuine: Vec<Genuine>,
}

fn drops(s: &Stats) -> u64 {
    s.dropped_wrong_source + s.dropped_forged + s.dropped_replayed + s.dropped_bad_handshake
}

fn kind_of(t: &Transmit) -> Kind {
    match frame::decode(&t.payload) {
        Ok(Decoded::Envelope(e)) => e.kind.expect("decode refuses empty envelopes"),
        other => panic!("a session sent what does not decode as an envelope: {other:?}"),
    }
}

impl Pair {
    pub fn new(keyed: bool) -> Self {
        let now = Instant::now();
        let side = |me: u64, peer: u64, remote: &str, controlling: bool, keys: Option<&Keys>| {
            let handshake = (!keyed).then(|| {
                let binding = Binding::Relay(&[3; 16]);
                Handshake::new(controlling, statics(me, peer), binding, StdRng::seed_from_u64(me))
            });
            let opened = ProvenPath {
                peer: Identity::from_seed(peer).peer_id(),
                socket: SocketId::PRIMARY,
                remote: addr(remote),
                proven: vec![],
                controlling,
                path: if keyed { Path::Direct } else { Path::Relayed },
                strategy: Strategy::Direct,
                keys: keys.cloned(),
            };
            let rng = StdRng::seed_from_u64(me + 100);
            Session::new(Config::default(), opened, handshake, statics(me, peer), rng, now)
        };
        let (ka, kb) = punch_keys();
        let (ka, kb) = if keyed { (Some(ka), Some(kb)) } else { (None, None) };
        let a = side(1, 2, B, true, ka);
        let mut b = side(2, 1, A, false, kb);
        b.add_path(addr(A_LAN));
        let mut pair = Pair {
            a: Side { session: a, peer_addrs: vec![addr(B)], handshakes_sent: vec![] },
            b: Side { session: b, peer_addrs: vec![addr(A), addr(A_LAN)], handshakes_sent: vec![] },
            now,
            keyed,
            genuine: vec![],
        };
        pair.collect();
        pair
    }

    fn side(&mut self, b: bool) -> &mut Side {
        if b {
            &mut self.b
        } else {
            &mut self.a
        }
    }

    /// Takes what both sides sent, checks it, and puts it on its way.
    fn collect(&mut self) {
        for to_b in [true, false] {
            let from = self.side(!to_b);
            let mut sent = Vec::new();
            while let Some(t) = from.session.poll_transmit() {
                assert!(t.payload.len() <= introducer_proto::MAX_DATAGRAM, "{} B sent", t.payload.len());
                // A's peer proved B; B's proved A over two paths.
                let proven = if to_b { vec![addr(B)] } else { vec![addr(A), addr(A_LAN)] };
                assert!(proven.contains(&t.dst), "sent to {}, which the peer never proved", t.dst);
                let kind = kind_of(&t);
                if let Kind::Handshake(h) = &kind {
                    from.handshakes_sent.push(h.message.to_vec());
                }
                sent.push(Genuine { to_b, kind, delivered: false, accepted: false });
            }
            self.genuine.extend(sent);
        }
    }

    /// Hands a genuine datagram to its side, from one of its sender's addresses.
    fn deliver(&mut self, i: usize, lan: bool) {
        let g = &mut self.genuine[i];
        g.delivered = true;
        let (to_b, kind) = (g.to_b, g.kind.clone());
        let src = if !to_b {
            addr(B)
        } else if lan {
            addr(A_LAN)
        } else {
            addr(A)
        };
        let now = self.now;
        let session = &mut self.side(to_b).session;
        let taken = |s: Stats| (s.datagrams_in, s.handshakes);
        let before = taken(session.stats());
        session.handle(now, src, kind);
        if taken(session.stats()) != before {
            self.genuine[i].accepted = true;
        }
        self.collect();
    }

    /// Delivers whatever is pending, each with a chance to be lost for now, until both
    /// sides are quiet (bounded: sessions answer pings, not pongs).
    fn exchange(&mut self, u: &mut Unstructured, lossless: bool) -> Result<()> {
        let mut from = self.genuine.iter().position(|g| !g.delivered).unwrap_or(self.genuine.len());
        for _ in 0..16 {
            let end = self.genuine.len();
            if from == end {
                break;
            }
            for i in from..end {
                if !self.genuine[i].delivered && (lossless || !u.ratio(1, 8)?) {
                    let lan = !lossless && u.ratio(1, 4)?;
                    self.deliver(i, lan);
                }
            }
            from = end;
        }
        Ok(())
    }

    fn drain_events(&mut self) -> Vec<(bool, Event)> {
        let mut events = Vec::new();
        for b in [false, true] {
            while let Some(e) = self.side(b).session.poll_event() {
                events.push((b, e));
            }
        }
        events
    }

    /// Lets `d` pass, deadline by deadline, with traffic flowing in between.
    fn wait(&mut self, u: &mut Unstructured, d: Duration, lossless: bool) -> Result<()> {
        let end = self.now + d;
        let mut turns = 0;
        while let Some(next) =
            [self.a.session.poll_timeout(), self.b.session.poll_timeout()].into_iter().flatten().min()
        {
            if next > end {
                break;
            }
            turns += 1;
            assert!(turns < 100_000, "the sessions' deadlines do not move past {next:?}");
            self.now = self.now.max(next);
            let now = self.now;
            self.a.session.handle_timeout(now);
            self.b.session.handle_timeout(now);
            self.collect();
            self.exchange(u, lossless)?;
        }
        self.now = end;
        Ok(())
    }

    /// Something the attacker sends to one side, and what it must (not) cause.
    fn forge(&mut self, u: &mut Unstructured) -> Result<()> {
        let to_b: bool = u.arbitrary()?;
        let src = match u.int_in_range(0..=7u8)? {
            0 => addr(STRANGER),
            _ => *u.choose(&self.side(to_b).peer_addrs)?,
        };
        let kind = match u.int_in_range(0..=4u8)? {
            0 => Kind::Sealed(gen::sealed(u)?),
            1 => Kind::Handshake(gen::handshake(u)?),
            _ if self.genuine.is_empty() => Kind::Sealed(gen::sealed(u)?),
            2 | 3 => u.choose(&self.genuine)?.kind.clone(),
            _ => {
                let i = u.choose_index(self.genuine.len())?;
                tamper(u, self.genuine[i].kind.clone())?
            }
        };
        // A copy of a genuine datagram that its side never took is that datagram, late: not
        // a forgery.
        let same = |g: &&Genuine| g.to_b == to_b && same_datagram(&g.kind, &kind);
        if !self.genuine.iter().filter(same).any(|g| g.accepted) {
            if let Some(i) = self.genuine.iter().position(|g| same(&g)) {
                self.deliver(i, src == addr(A_LAN));
                self.drain_events();
                return Ok(());
            }
        }
        self.drain_events();
        let incoming = frame::encode_envelope(&pb::Envelope { kind: Some(kind.clone()) }).len();
        let now = self.now;
        let side = self.side(to_b);
        let (before, remote) = (side.session.stats(), side.session.remote());
        side.session.handle(now, src, kind.clone());
        let after = side.session.stats();
        let answers: Vec<Transmit> = std::iter::from_fn(|| side.session.poll_transmit()).collect();
        let who = if to_b { "B" } else { "A" };
        assert_eq!(after.datagrams_in, before.datagrams_in, "{who} took a forgery from {src}: {kind:?}");
        assert_eq!(after.handshakes, before.handshakes, "{who} made keys from a forgery: {kind:?}");
        assert_eq!(side.session.remote(), remote, "a forgery moved {who}'s path: {kind:?}");
        let dropped = drops(&after) - drops(&before);
        match answers.as_slice() {
            [] => assert_eq!(dropped, 1, "{who} counted {dropped} drops for {kind:?}"),
            [answer] => {
                assert!(is_repeat(&kind) && dropped == 0, "{who} answered {kind:?} (and counted {dropped} drops)");
                let Kind::Handshake(h) = kind_of(answer) else { panic!("{who} answered a forgery with {answer:?}") };
                assert!(
                    side.handshakes_sent.iter().any(|m| m[..] == h.message[..]),
                    "{who} answered a forgery with a new handshake message"
                );
                assert!(answer.payload.len() <= incoming, "{who}'s answer to a forgery is the larger");
            }
            more => panic!("{who} answered a forgery with {} datagrams", more.len()),
        }
        let events = self.drain_events();
        assert!(events.is_empty(), "a forgery made the sessions report {events:?}");
        // Whatever was sent is on its way like any other datagram.
        for t in answers {
            let kind = kind_of(&t);
            self.genuine.push(Genuine { to_b: !to_b, kind, delivered: false, accepted: false });
        }
        Ok(())
    }

    /// One step of the input: time passes, a side sends, or the attacker does.
    pub fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.int_in_range(0..=5u8)? {
            0 => {
                let d = Duration::from_millis(u.int_in_range(0..=20_000)?);
                self.wait(u, d, false)?;
            }
            1 => {
                let to_b: bool = u.arbitrary()?;
                let now = self.now;
                let side = self.side(!to_b);
                let _ = if u.arbitrary()? {
                    side.session.ping(now, u.arbitrary()?)
                } else {
                    side.session.send_data(now, &gen::bytes(u, 100)?)
                };
                self.collect();
                self.exchange(u, false)?;
            }
            _ => self.forge(u)?,
        }
        Ok(())
    }

    /// With punched keys, and neither side closed: the pair still talks, both ways.
    pub fn finish(&mut self) {
        let mut none = Unstructured::new(&[]);
        for i in 0..self.genuine.len() {
            if !self.genuine[i].delivered {
                self.deliver(i, false);
            }
        }
        let _ = self.exchange(&mut none, true);
        if !self.keyed || self.a.session.is_closed() || self.b.session.is_closed() {
            return;
        }
        for to_b in [true, false] {
            self.drain_events();
            let now = self.now;
            self.side(!to_b).session.send_data(now, b"still there?").expect("an open session sends");
            self.collect();
            let _ = self.exchange(&mut none, true);
            let events = self.drain_events();
            assert!(
                events.iter().any(|(b, e)| *b == to_b && *e == Event::Data(b"still there?".to_vec())),
                "the session no longer carries data {}: {events:?}",
                if to_b { "A to B" } else { "B to A" }
            );
        }
    }
}

/// Whether two datagrams are the same to a session. A cleartext handshake's `under` is
/// bound to nothing (only a rekey's, which travels sealed, is): changing it leaves the
/// handshake message what it was.
fn same_datagram(a: &Kind, b: &Kind) -> bool {
    match (a, b) {
        (Kind::Handshake(a), Kind::Handshake(b)) => (&a.message, a.answer) == (&b.message, b.answer),
        _ => a == b,
    }
}

/// A cleartext handshake message: copies of an initiation already answered are answered
/// again rather than counted as dropped.
fn is_repeat(kind: &Kind) -> bool {
    matches!(kind, Kind::Handshake(h) if !h.answer)
}

/// A genuine datagram with one thing changed.
fn tamper(u: &mut Unstructured, kind: Kind) -> Result<Kind> {
    Ok(match kind {
        Kind::Sealed(mut s) => {
            match u.int_in_range(0..=2u8)? {
                0 => s.key ^= u.int_in_range(1..=u32::MAX)?,
                1 => s.counter = u.arbitrary()?,
                _ => s.ciphertext = flip(u, &s.ciphertext)?.into(),
            }
            Kind::Sealed(s)
        }
        Kind::Handshake(mut h) => {
            match u.int_in_range(0..=2u8)? {
                0 => h.answer = !h.answer,
                1 => h.under = u.arbitrary()?,
                _ => h.message = flip(u, &h.message)?.into(),
            }
            Kind::Handshake(h)
        }
        other => other,
    })
}

/// `bytes` with one byte changed (or one added, if empty).
fn flip(u: &mut Unstructured, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut bytes = bytes.to_vec();
    if bytes.is_empty() {
        bytes.push(u.arbitrary()?);
    } else {
        let at = u.choose_index(bytes.len())?;
        bytes[at] ^= u.int_in_range(1..=255)?;
    }
    Ok(bytes)
}

/// The body of the `session` target.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(keyed) = u.ratio(3, 4) else { return };
    let mut pair = Pair::new(keyed);
    while !u.is_empty() {
        if pair.step(&mut u).is_err() {
            break;
        }
    }
    pair.finish();
}
