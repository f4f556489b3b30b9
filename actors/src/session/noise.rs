//! Session keys: a Noise handshake between the two peers' identities, bound to the
//! introduction that paired them, and the AEAD that seals every session datagram.
//!
//! The handshake is Noise IK (`Noise_IK_25519_AESGCM_SHA256`, WireGuard's pattern) run by
//! `snow`: the initiator knows the responder's static key from its PeerId, and each side's
//! static X25519 key is its ed25519 identity key in Montgomery form. Both sides add fresh
//! ephemeral keys, so what a session sealed stays sealed when an identity key leaks later
//! (forward secrecy), and nothing recorded from one session opens in another. The prologue
//! binds the handshake to what it belongs to (a punch or a relay circuit of one
//! introduction, or a rekey of one key set), so a message replayed from elsewhere fails.
//!
//! Transport does not use Noise's own nonce-counting transport: datagrams are lost and
//! reordered, so each carries its key set's id and its counter, opened with a 64-datagram
//! replay window ([`Keyring`]). The two keys of the handshake's split seal with
//! AES-256-GCM from `ring` (assembly, AES-NI): 1000-byte datagrams seal at GB/s, where the
//! pure-Rust XChaCha20 that came before managed 150–190 MB/s.

use crate::identity::{inlined_ed25519_key, Identity};
use curve25519_dalek::edwards::CompressedEdwardsY;
use introducer_proto::pb;
use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha512};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const PATTERN: &str = "Noise_IK_25519_AESGCM_SHA256";
/// The initiator's message: its ephemeral key, its encrypted static key, an empty payload's tag.
pub const INITIATION_LEN: usize = 32 + 48 + 16;
/// The responder's answer: its ephemeral key, an empty payload's tag.
pub const ANSWER_LEN: usize = 32 + 16;
/// Bytes the AEAD adds to a sealed datagram.
pub const TAG_LEN: usize = 16;
/// Initiations a responder tries before it stops spending Diffie-Hellman on a handshake
/// (each costs four scalar multiplications; a forged one earns nothing but the work).
const MAX_FAILED: u32 = 8;
/// Counters below the highest seen that are still told apart.
const WINDOW: u64 = 64;
/// Key sets a session keeps at most: the one in use, its predecessor while datagrams
/// sealed with it are in flight, and one just made by a handshake.
const MAX_KEYSETS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    #[error("the peer's id carries no ed25519 key")]
    NoKey,
    #[error("handshake message does not authenticate")]
    Forged,
    #[error("handshake message from another identity than the peer's")]
    WrongPeer,
    #[error("handshake message out of turn")]
    Unexpected,
    #[error("too many handshake messages failed; no more are tried")]
    GaveUp,
}

/// What a handshake belongs to: its prologue, so that it completes nowhere else.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// The punch of the introduction with this nonce.
    Punch(&'a [u8]),
    /// The relay circuit of the introduction with this nonce.
    Relay(&'a [u8]),
    /// A new key set, asked for under the key set with this id.
    Rekey(u32),
}

impl Binding<'_> {
    fn prologue(self) -> Vec<u8> {
        match self {
            Binding::Punch(nonce) => [b"introducer/noise/v1/punch".as_slice(), nonce].concat(),
            Binding::Relay(nonce) => [b"introducer/noise/v1/relay".as_slice(), nonce].concat(),
            Binding::Rekey(id) => [b"introducer/noise/v1/rekey".as_slice(), &id.to_le_bytes()].concat(),
        }
    }
}

/// Our static X25519 secret and the peer's static X25519 public key.
#[derive(Clone)]
pub struct Statics {
    local: [u8; 32],
    remote: [u8; 32],
}

impl Statics {
    /// Both keys from the ed25519 identities: ours (hashed and clamped as ed25519 does) and
    /// the peer's, which its PeerId inlines.
    pub fn new(me: &Identity, peer: &PeerId) -> Result<Self, NoiseError> {
        let key = inlined_ed25519_key(&peer.to_bytes()).ok_or(NoiseError::NoKey)?;
        let point = CompressedEdwardsY(key).decompress().ok_or(NoiseError::NoKey)?;
        if point.is_small_order() {
            return Err(NoiseError::NoKey);
        }
        let hashed = Sha512::digest(me.keypair().secret().as_ref());
        let local = hashed[..32].try_into().expect("sha512 is 64 bytes");
        Ok(Statics { local, remote: point.to_montgomery().to_bytes() })
    }
}

/// The keys one handshake made: one per direction, and the id both sides know them by.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub id: u32,
    /// We sent the initiation, so the peer has these keys too (it answered).
    pub initiator: bool,
    send: [u8; 32],
    receive: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("id", &self.id).field("initiator", &self.initiator).finish_non_exhaustive()
    }
}

/// One handshake, either side. The initiator's message goes out until an answer finishes
/// it; the responder answers the first initiation that authenticates, and repeats that
/// answer to copies of it (its first answer may be lost).
pub struct Handshake {
    statics: Statics,
    prologue: Vec<u8>,
    rng: StdRng,
    state: State,
    failed: u32,
}

enum State {
    Initiating { noise: Box<snow::HandshakeState>, message: Vec<u8> },
    Awaiting,
    Done { keys: Keys, initiation: Vec<u8>, answer: Option<Vec<u8>> },
}

impl Handshake {
    /// The initiator's side or the responder's.
    pub fn new(initiator: bool, statics: Statics, binding: Binding, rng: StdRng) -> Self {
        match initiator {
            true => Self::initiate(statics, binding, rng),
            false => Self::respond(statics, binding, rng),
        }
    }

    /// The handshake a punch carries between `me` and `peer`, bound to its introduction.
    pub fn punch(me: &Identity, peer: &PeerId, nonce: &[u8], initiator: bool, rng: StdRng) -> Result<Self, NoiseError> {
        Ok(Self::new(initiator, Statics::new(me, peer)?, Binding::Punch(nonce), rng))
    }

    /// Starts a handshake: [`Handshake::message`] is the initiation. `rng` draws the
    /// ephemeral key (from the OS on a real node).
    pub fn initiate(statics: Statics, binding: Binding, mut rng: StdRng) -> Self {
        let prologue = binding.prologue();
        let mut noise = build(&statics, &prologue, &mut rng, true);
        let mut message = vec![0; INITIATION_LEN];
        let n = noise.write_message(&[], &mut message).expect("an empty payload fits the first IK message");
        message.truncate(n);
        Handshake { statics, prologue, rng, state: State::Initiating { noise, message }, failed: 0 }
    }

    /// Waits for the peer's initiation.
    pub fn respond(statics: Statics, binding: Binding, rng: StdRng) -> Self {
        Handshake { statics, prologue: binding.prologue(), rng, state: State::Awaiting, failed: 0 }
    }

    /// What this side sends: the initiator its initiation (whoever asks again: it stays
    /// the same), the responder its answer once made.
    pub fn message(&self) -> Option<&[u8]> {
        match &self.state {
            State::Initiating { message, .. } => Some(message),
            State::Done { answer: Some(answer), .. } => Some(answer),
            State::Done { initiation, answer: None, .. } => Some(initiation),
            State::Awaiting => None,
        }
    }

    /// Whether this is the responder that answered `initiation` (a copy of it is answered
    /// again, not taken for a new handshake).
    pub fn answers(&self, initiation: &[u8]) -> bool {
        matches!(&self.state, State::Done { initiation: i, answer: Some(_), .. } if i.as_slice() == initiation)
    }

    pub fn keys(&self) -> Option<&Keys> {
        match &self.state {
            State::Done { keys, .. } => Some(keys),
            _ => None,
        }
    }

    /// A handshake message from the peer: the keys, when it completes the handshake.
    /// Anything that does not authenticate leaves the handshake as it was. A copy of the
    /// initiation already answered is `Ok(None)`: answer it again with [`Handshake::message`].
    pub fn handle(&mut self, message: &[u8]) -> Result<Option<Keys>, NoiseError> {
        match &mut self.state {
            State::Done { initiation, answer: Some(_), .. } if initiation.as_slice() == message => Ok(None),
            State::Done { .. } => Err(NoiseError::Unexpected),
            _ if self.failed >= MAX_FAILED => Err(NoiseError::GaveUp),
            State::Initiating { noise, message: initiation } if message.len() == ANSWER_LEN => {
                if noise.read_message(message, &mut []).is_err() {
                    self.failed += 1;
                    return Err(NoiseError::Forged);
                }
                let keys = split(noise, true);
                let initiation = std::mem::take(initiation);
                self.state = State::Done { keys: keys.clone(), initiation, answer: None };
                Ok(Some(keys))
            }
            State::Awaiting if message.len() == INITIATION_LEN => {
                let mut noise = build(&self.statics, &self.prologue, &mut self.rng, false);
                if noise.read_message(message, &mut []).is_err() {
                    self.failed += 1;
                    return Err(NoiseError::Forged);
                }
                if noise.get_remote_static() != Some(&self.statics.remote[..]) {
                    self.failed += 1;
                    return Err(NoiseError::WrongPeer);
                }
                let mut answer = vec![0; ANSWER_LEN];
                let n = noise.write_message(&[], &mut answer).expect("an empty payload fits the IK answer");
                answer.truncate(n);
                let keys = split(&mut noise, false);
                self.state = State::Done { keys: keys.clone(), initiation: message.to_vec(), answer: Some(answer) };
                Ok(Some(keys))
            }
            _ => Err(NoiseError::Unexpected),
        }
    }
}

fn build(statics: &Statics, prologue: &[u8], rng: &mut StdRng, initiator: bool) -> Box<snow::HandshakeState> {
    let mut seed = [0; 32];
    rng.fill_bytes(&mut seed);
    let params = PATTERN.parse().expect("a valid Noise pattern name");
    let builder = snow::Builder::with_resolver(params, Box::new(Resolver { seed }))
        .local_private_key(&statics.local)
        .and_then(|b| b.prologue(prologue))
        .expect("32-byte keys and a prologue build a handshake");
    let state = if initiator {
        builder.remote_public_key(&statics.remote).and_then(|b| b.build_initiator())
    } else {
        builder.build_responder()
    };
    Box::new(state.expect("every key an IK handshake needs is set"))
}

/// The keys of a finished handshake, named by the first bytes of its handshake hash
/// (which both sides computed alike).
fn split(noise: &mut snow::HandshakeState, initiator: bool) -> Keys {
    let id = u32::from_le_bytes(noise.get_handshake_hash()[..4].try_into().expect("a hash is 32 bytes"));
    let (to_responder, to_initiator) = noise.dangerously_get_raw_split();
    let (send, receive) = if initiator { (to_responder, to_initiator) } else { (to_initiator, to_responder) };
    Keys { id, initiator, send, receive }
}

/// snow's primitives (ring's AES-GCM and SHA-256, dalek's X25519) with ephemeral keys drawn
/// from our generator, so that a seeded simulation replays byte for byte.
struct Resolver {
    seed: [u8; 32],
}

struct Seeded(StdRng);

impl snow::types::Random for Seeded {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(Seeded(StdRng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        RingResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn snow::types::Cipher>> {
        RingResolver.resolve_cipher(choice)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed under a key set this session does not hold")]
    UnknownKey,
    #[error("does not authenticate")]
    Forged,
    #[error("replayed")]
    Replayed,
}

/// A session's key sets: it seals with the newest one the peer is known to hold and opens
/// with whichever a datagram names.
#[derive(Default)]
pub struct Keyring {
    /// Oldest first.
    sets: VecDeque<Keyset>,
}

struct Keyset {
    id: u32,
    send: LessSafeKey,
    receive: LessSafeKey,
    next: u64,
    /// The highest counter opened, and which of the `WINDOW` below it were (bit i: highest − i).
    highest: Option<u64>,
    seen: u64,
    created: Instant,
    /// When the peer was first seen to hold it: we initiated its handshake, or a datagram
    /// sealed with it opened. Until then we seal with an older set, if we have one.
    confirmed: Option<Instant>,
}

impl Keyring {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Adds a handshake's keys (again: nothing changes).
    pub fn install(&mut self, keys: &Keys, now: Instant) {
        if self.sets.iter().any(|s| s.id == keys.id) {
            return;
        }
        if self.sets.len() == MAX_KEYSETS {
            self.sets.pop_front();
        }
        let key = |bytes: &[u8; 32]| LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"));
        self.sets.push_back(Keyset {
            id: keys.id,
            send: key(&keys.send),
            receive: key(&keys.receive),
            next: 0,
            highest: None,
            seen: 0,
            created: now,
            confirmed: keys.initiator.then_some(now),
        });
    }

    /// The id and age of the newest key set: rekeying is due from it.
    pub fn newest(&self) -> Option<(u32, Instant)> {
        self.sets.back().map(|s| (s.id, s.created))
    }

    /// Seals `plaintext` with the newest key set the peer holds (or the only one there is).
    pub fn seal(&mut self, plaintext: &[u8]) -> Option<pb::Sealed> {
        let set = match self.sets.iter().rposition(|s| s.confirmed.is_some()) {
            Some(i) => &mut self.sets[i],
            None => self.sets.back_mut()?,
        };
        let counter = set.next;
        set.next += 1;
        let mut ciphertext = Vec::with_capacity(plaintext.len() + TAG_LEN);
        ciphertext.extend_from_slice(plaintext);
        let tag = set
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), &mut ciphertext)
            .expect("AES-GCM seals any datagram");
        ciphertext.extend_from_slice(tag.as_ref());
        Some(pb::Sealed { key: set.id, counter, ciphertext: ciphertext.into() })
    }

    /// The plaintext, if it authenticates and was not opened before.
    pub fn open(&mut self, now: Instant, sealed: &pb::Sealed) -> Result<Vec<u8>, OpenError> {
        let set = self.sets.iter_mut().find(|s| s.id == sealed.key).ok_or(OpenError::UnknownKey)?;
        let counter = sealed.counter;
        if let Some(highest) = set.highest {
            let behind = highest.saturating_sub(counter);
            if counter <= highest && (behind >= WINDOW || set.seen & (1 << behind) != 0) {
                return Err(OpenError::Replayed);
            }
        }
        let mut plaintext = sealed.ciphertext.to_vec();
        let n = set
            .receive
            .open_in_place(nonce(counter), Aad::empty(), &mut plaintext)
            .map_err(|_| OpenError::Forged)?
            .len();
        plaintext.truncate(n);
        // Authentic: now it may move the window.
        match set.highest {
            Some(highest) if counter <= highest => set.seen |= 1 << (highest - counter),
            Some(highest) => {
                let shift = counter - highest;
                set.seen = if shift >= WINDOW { 1 } else { set.seen << shift | 1 };
                set.highest = Some(counter);
            }
            None => (set.highest, set.seen) = (Some(counter), 1),
        }
        set.confirmed.get_or_insert(now);
        Ok(plaintext)
    }

    /// When [`Keyring::expire`] will next forget a key set.
    pub fn expiry(&self, grace: Duration) -> Option<Instant> {
        let newest_held = self.sets.iter().rposition(|s| s.confirmed.is_some())?;
        self.sets.iter().take(newest_held + 1).skip(1).filter_map(|s| s.confirmed).map(|t| t + grace).min()
    }

    /// Forgets the key sets older than one the peer has held for `grace`: what was sealed
    /// with them has arrived by now, and forgotten keys open nothing recorded.
    pub fn expire(&mut self, now: Instant, grace: Duration) {
        let settled = self.sets.iter().rposition(|s| s.confirmed.is_some_and(|t| now >= t + grace));
        if let Some(i) = settled {
            self.sets.drain(..i);
        }
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Keys of a finished handshake between the identities of seeds `a` (the initiator) and
/// `b`, with ephemeral keys drawn from `seed`: `a`'s, then `b`'s.
#[cfg(test)]
pub(crate) fn test_keys(a: u64, b: u64, binding: Binding, seed: u64) -> (Keys, Keys) {
    let statics = |me, peer| Statics::new(&Identity::from_seed(me), &Identity::from_seed(peer).peer_id()).unwrap();
    let mut i = Handshake::initiate(statics(a, b), binding, StdRng::seed_from_u64(seed));
    let mut r = Handshake::respond(statics(b, a), binding, StdRng::seed_from_u64(seed + 1));
    let theirs = r.handle(i.message().unwrap()).unwrap().unwrap();
    (i.handle(r.message().unwrap()).unwrap().unwrap(), theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statics(me: u64, peer: u64) -> Statics {
        Statics::new(&Identity::from_seed(me), &Identity::from_seed(peer).peer_id()).unwrap()
    }

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// A finished handshake between seeds 1 (initiator) and 2, bound to `binding`.
    fn handshake(binding: Binding) -> (Keys, Keys) {
        let mut i = Handshake::initiate(statics(1, 2), binding, rng(1));
        let mut r = Handshake::respond(statics(2, 1), binding, rng(2));
        let initiation = i.message().unwrap().to_vec();
        assert_eq!(initiation.len(), INITIATION_LEN);
        let theirs = r.handle(&initiation).unwrap().unwrap();
        let answer = r.message().unwrap().to_vec();
        assert_eq!(answer.len(), ANSWER_LEN);
        (i.handle(&answer).unwrap().unwrap(), theirs)
    }

    #[test]
    fn both_sides_agree_and_only_they_open_what_was_sealed() {
        let (a, b) = handshake(Binding::Punch(&[7; 16]));
        assert_eq!(a.id, b.id);
        assert_eq!((a.send, a.receive), (b.receive, b.send));
        let now = Instant::now();
        let (mut ra, mut rb) = (Keyring::default(), Keyring::default());
        ra.install(&a, now);
        rb.install(&b, now);
        let sealed = ra.seal(b"hello").unwrap();
        assert_eq!(sealed.ciphertext.len(), 5 + TAG_LEN);
        assert!(!sealed.ciphertext.windows(5).any(|w| w == b"hello"));
        assert_eq!(rb.open(now, &sealed), Ok(b"hello".to_vec()));
        assert_eq!(ra.open(now, &rb.seal(b"hi").unwrap()), Ok(b"hi".to_vec()));
        let mut tampered = ra.seal(b"pay 1").unwrap();
        let mut bytes = tampered.ciphertext.to_vec();
        bytes[0] ^= 1;
        tampered.ciphertext = bytes.into();
        assert_eq!(rb.open(now, &tampered), Err(OpenError::Forged));
        // Fresh ephemeral keys: the same two identities make other keys next time.
        let (again, _) = test_keys(1, 2, Binding::Punch(&[8; 16]), 3);
        assert_ne!(again.send, a.send);
        let mut other = Keyring::default();
        other.install(&again, now);
        assert_eq!(other.open(now, &pb::Sealed { key: again.id, ..ra.seal(b"old").unwrap() }), Err(OpenError::Forged));
    }

    #[test]
    fn a_handshake_completes_only_with_the_introduced_peer_under_its_binding() {
        let initiation =
            |me, peer, binding| Handshake::initiate(statics(me, peer), binding, rng(me)).message().unwrap().to_vec();
        let another = Handshake::initiate(statics(1, 2), Binding::Punch(&[7; 16]), rng(10)).message().unwrap().to_vec();
        let nonce = [7; 16];
        // Bound to another introduction, or to the relay of this one: refused.
        let mut r = Handshake::respond(statics(2, 1), Binding::Punch(&nonce), rng(2));
        assert_eq!(r.handle(&initiation(1, 2, Binding::Punch(&[6; 16]))), Err(NoiseError::Forged));
        assert_eq!(r.handle(&initiation(1, 2, Binding::Relay(&nonce))), Err(NoiseError::Forged));
        // From a third identity that knows our key: authenticates, but is not the peer.
        assert_eq!(r.handle(&initiation(3, 2, Binding::Punch(&nonce))), Err(NoiseError::WrongPeer));
        // The real one still completes, and a copy of it gets the same answer.
        let real = initiation(1, 2, Binding::Punch(&nonce));
        assert!(r.handle(&real).unwrap().is_some());
        let answer = r.message().unwrap().to_vec();
        assert_eq!(r.handle(&real), Ok(None));
        assert_eq!(r.message().unwrap(), answer);
        assert_eq!(r.handle(&another), Err(NoiseError::Unexpected), "one handshake answers one initiation");
        // A forged answer leaves the initiator waiting for the real one.
        let mut i = Handshake::initiate(statics(1, 2), Binding::Punch(&nonce), rng(1));
        assert_eq!(i.handle(&[9; ANSWER_LEN]), Err(NoiseError::Forged));
        let mut r = Handshake::respond(statics(2, 1), Binding::Punch(&nonce), rng(2));
        r.handle(i.message().unwrap()).unwrap();
        assert!(i.handle(r.message().unwrap()).unwrap().is_some());
    }

    #[test]
    fn a_responder_stops_spending_work_on_forgeries() {
        let mut r = Handshake::respond(statics(2, 1), Binding::Punch(&[7; 16]), rng(2));
        for _ in 0..MAX_FAILED {
            assert_eq!(r.handle(&[1; INITIATION_LEN]), Err(NoiseError::Forged));
        }
        let real = Handshake::initiate(statics(1, 2), Binding::Punch(&[7; 16]), rng(1));
        assert_eq!(r.handle(real.message().unwrap()), Err(NoiseError::GaveUp));
    }

    #[test]
    fn replays_are_refused_out_of_order_is_fine() {
        let (a, b) = handshake(Binding::Relay(&[1; 16]));
        let now = Instant::now();
        let (mut ra, mut rb) = (Keyring::default(), Keyring::default());
        ra.install(&a, now);
        rb.install(&b, now);
        let sealed: Vec<pb::Sealed> = (0..100u8).map(|i| ra.seal(&[i]).unwrap()).collect();
        assert_eq!(rb.open(now, &sealed[10]), Ok(vec![10]));
        assert_eq!(rb.open(now, &sealed[5]), Ok(vec![5]), "late, within the window");
        assert_eq!(rb.open(now, &sealed[5]), Err(OpenError::Replayed));
        assert_eq!(rb.open(now, &sealed[99]), Ok(vec![99]));
        assert_eq!(rb.open(now, &sealed[20]), Err(OpenError::Replayed), "too far behind to tell");
        assert_eq!(rb.open(now, &sealed[99]), Err(OpenError::Replayed));
        assert_eq!(rb.open(now, &pb::Sealed { key: a.id ^ 1, ..sealed[0].clone() }), Err(OpenError::UnknownKey));
    }

    #[test]
    fn a_new_key_set_is_used_once_the_peer_holds_it_and_the_old_one_is_forgotten() {
        let now = Instant::now();
        let (a1, b1) = handshake(Binding::Punch(&[1; 16]));
        let (mut ra, mut rb) = (Keyring::default(), Keyring::default());
        ra.install(&a1, now);
        rb.install(&b1, now);
        assert!(rb.open(now, &ra.seal(b"first").unwrap()).is_ok());
        let (a2, b2) = handshake(Binding::Rekey(a1.id));
        ra.install(&a2, now);
        rb.install(&b2, now);
        let old = rb.seal(b"x").unwrap();
        assert_eq!(old.key, b1.id, "the responder waits until the initiator uses the new keys");
        assert_eq!(ra.seal(b"y").unwrap().key, a2.id, "the initiator knows the responder has them");
        assert_eq!(rb.open(now, &ra.seal(b"z").unwrap()), Ok(b"z".to_vec()));
        assert_eq!(rb.seal(b"x").unwrap().key, b2.id);
        // In flight under the old keys: still opens for a while, then nothing does.
        assert_eq!(ra.open(now, &old), Ok(b"x".to_vec()));
        let grace = Duration::from_secs(10);
        rb.expire(now + grace, grace);
        let late = ra.seal(b"late").unwrap();
        assert_eq!(rb.open(now, &pb::Sealed { key: b1.id, ..late }), Err(OpenError::UnknownKey));
    }
}
