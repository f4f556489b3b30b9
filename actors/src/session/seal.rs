//! End-to-end sealing of session data: only the two peers can read or forge it, whatever
//! carries it — a relay forwards sealed bytes and learns their size, nothing more.
//!
//! The keys come from the identities alone, so sealing costs no round trip and works the
//! same over a relay circuit as over a punched path: X25519 between the two ed25519 keys
//! (in Montgomery form), HKDF-SHA256 into one key per direction. Each [`Seal`] picks a random
//! 64-bit epoch; a datagram's XChaCha20-Poly1305 nonce is epoch ‖ counter, so no nonce ever
//! repeats under a key, across sessions and restarts alike. The receiver keeps a 64-datagram
//! replay window for the peer's current epoch and refuses the epochs it has left behind.
//! (Static keys: no forward secrecy. Pings and pongs travel in the clear; they carry
//! nothing but sequence numbers.)

use crate::identity::Identity;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use curve25519_dalek::edwards::CompressedEdwardsY;
use hkdf::Hkdf;
use libp2p_identity::{PeerId, PublicKey};
use sha2::{Digest, Sha256, Sha512};
use std::collections::VecDeque;

/// Bytes sealing adds to a payload: the tag, and the epoch and counter fields.
pub const OVERHEAD: usize = 16 + 2 * 9;
/// Epochs of the peer's left behind, remembered so their datagrams stay refused.
const RETIRED_EPOCHS: usize = 8;
const WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the peer's id carries no ed25519 key")]
    NoKey,
    #[error("the key exchange gave a weak secret")]
    Weak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("does not authenticate")]
    Forged,
    #[error("replayed")]
    Replayed,
}

/// A sealed payload, as the `Data` message carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub epoch: u64,
    pub counter: u64,
    pub bytes: Vec<u8>,
}

pub struct Seal {
    send: XChaCha20Poly1305,
    epoch: u64,
    counter: u64,
    receive: XChaCha20Poly1305,
    /// The peer's epoch, the highest counter seen in it, and which of the `WINDOW` counters
    /// below that were seen (bit i: highest − i).
    current: Option<(u64, u64, u64)>,
    retired: VecDeque<u64>,
}

impl Seal {
    /// Keys for the session between `me` and `peer`; `epoch` must be random.
    pub fn new(me: &Identity, peer: &PeerId, epoch: u64) -> Result<Self, SealError> {
        let shared = me.agree(peer)?;
        let hkdf = Hkdf::<Sha256>::new(Some(b"introducer/seal/v1"), &shared);
        let key = |from: &PeerId, to: &PeerId| {
            let mut key = [0u8; 32];
            let info = [from.to_bytes(), to.to_bytes()].concat();
            hkdf.expand(&info, &mut key).expect("32 bytes is a valid HKDF-SHA256 length");
            XChaCha20Poly1305::new(&key.into())
        };
        let me = me.peer_id();
        Ok(Seal {
            send: key(&me, peer),
            epoch,
            counter: 0,
            receive: key(peer, &me),
            current: None,
            retired: VecDeque::new(),
        })
    }

    pub fn seal(&mut self, payload: &[u8]) -> Sealed {
        let counter = self.counter;
        self.counter += 1;
        let bytes =
            self.send.encrypt(&nonce(self.epoch, counter), payload).expect("XChaCha20-Poly1305 seals any length");
        Sealed { epoch: self.epoch, counter, bytes }
    }

    /// The payload, if it authenticates and was not seen before.
    pub fn open(&mut self, sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
        let Sealed { epoch, counter, ref bytes } = *sealed;
        if self.retired.contains(&epoch) {
            return Err(OpenError::Replayed);
        }
        let (highest, seen) = match self.current {
            Some((e, highest, seen)) if e == epoch => (highest, seen),
            _ => (0, 0),
        };
        let fresh = self.current.is_none_or(|(e, ..)| e != epoch);
        let behind = highest.saturating_sub(counter);
        if !fresh && (behind >= WINDOW || (counter <= highest && seen & (1 << behind) != 0)) {
            return Err(OpenError::Replayed);
        }
        let payload = self.receive.decrypt(&nonce(epoch, counter), &bytes[..]).map_err(|_| OpenError::Forged)?;
        // Authentic: now it may move the window (or start the peer's new epoch).
        if fresh {
            if let Some((old, ..)) = self.current {
                if self.retired.len() == RETIRED_EPOCHS {
                    self.retired.pop_front();
                }
                self.retired.push_back(old);
            }
            self.current = Some((epoch, counter, 1));
        } else if counter > highest {
            let shift = counter - highest;
            let seen = if shift >= WINDOW { 0 } else { seen << shift };
            self.current = Some((epoch, counter, seen | 1));
        } else {
            self.current = Some((epoch, highest, seen | (1 << behind)));
        }
        Ok(payload)
    }
}

fn nonce(epoch: u64, counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&epoch.to_le_bytes());
    n[8..16].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

impl Identity {
    /// X25519 between our key and `peer`'s (both ed25519, taken to Montgomery form).
    fn agree(&self, peer: &PeerId) -> Result<[u8; 32], SealError> {
        // An ed25519 PeerId inlines its public key: identity multihash, protobuf-encoded key.
        let bytes = peer.to_bytes();
        let key = match bytes.as_slice() {
            [0, len, key @ ..] if usize::from(*len) == key.len() => PublicKey::try_decode_protobuf(key).ok(),
            _ => None,
        };
        let key = key.and_then(|k| k.try_into_ed25519().ok()).ok_or(SealError::NoKey)?;
        let point = CompressedEdwardsY(key.to_bytes()).decompress().ok_or(SealError::NoKey)?;
        let hashed = Sha512::digest(self.keypair().secret().as_ref());
        let scalar: [u8; 32] = hashed[..32].try_into().expect("sha512 is 64 bytes");
        let shared = point.to_montgomery().mul_clamped(scalar).to_bytes();
        if shared == [0; 32] {
            return Err(SealError::Weak);
        }
        Ok(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Seal, Seal) {
        let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
        (Seal::new(&a, &b.peer_id(), 7).unwrap(), Seal::new(&b, &a.peer_id(), 9).unwrap())
    }

    #[test]
    fn only_the_peer_opens_what_was_sealed_for_it() {
        let (mut a, mut b) = pair();
        let sealed = a.seal(b"hello");
        assert_eq!(sealed.bytes.len(), 5 + 16);
        assert!(!sealed.bytes.windows(5).any(|w| w == b"hello"), "sealed, not in the clear");
        assert_eq!(b.open(&sealed), Ok(b"hello".to_vec()));
        // Back the other way, with the other direction's key.
        assert_eq!(a.open(&b.seal(b"hi")), Ok(b"hi".to_vec()));
        // A third identity cannot read it or forge one.
        let mallory = Identity::from_seed(3);
        let mut m = Seal::new(&mallory, &Identity::from_seed(2).peer_id(), 70).unwrap();
        assert_eq!(m.open(&a.seal(b"secret")), Err(OpenError::Forged));
        assert_eq!(b.open(&m.seal(b"forged")), Err(OpenError::Forged));
        // Nor can anyone flip a bit.
        let mut tampered = a.seal(b"pay 1");
        tampered.bytes[0] ^= 1;
        assert_eq!(b.open(&tampered), Err(OpenError::Forged));
    }

    #[test]
    fn replays_and_left_behind_epochs_are_refused_out_of_order_is_fine() {
        let (mut a, mut b) = pair();
        let sealed: Vec<Sealed> = (0..100u8).map(|i| a.seal(&[i])).collect();
        assert_eq!(b.open(&sealed[10]), Ok(vec![10]));
        assert_eq!(b.open(&sealed[5]), Ok(vec![5]), "late, within the window");
        assert_eq!(b.open(&sealed[5]), Err(OpenError::Replayed));
        assert_eq!(b.open(&sealed[99]), Ok(vec![99]));
        assert_eq!(b.open(&sealed[20]), Err(OpenError::Replayed), "too far behind to tell");
        assert_eq!(b.open(&sealed[99]), Err(OpenError::Replayed));
        // A's session restarts with a new epoch: its datagrams open, the old ones no more.
        let mut a2 = Seal::new(&Identity::from_seed(1), &Identity::from_seed(2).peer_id(), 8).unwrap();
        assert_eq!(b.open(&a2.seal(b"again")), Ok(b"again".to_vec()));
        assert_eq!(b.open(&sealed[98]), Err(OpenError::Replayed));
    }
}
