//! Who a node is, and the two signatures that make claims checkable.
//!
//! A node is named by the libp2p `PeerId` of an ed25519 key. Two things are signed:
//! the record a peer registers about itself (so an introducer can pass it on but not
//! forge it), and a punch proof over an introduction nonce (so a path counts only once
//! the peer at its far end proved who it is over that very path).

use introducer_proto::pb;
use libp2p_identity::{ed25519, PeerId, PublicKey};
use prost::Message;

const RECORD_DOMAIN: &[u8] = b"introducer/peer-record/v1";
const PUNCH_DOMAIN: &[u8] = b"introducer/punch/v1";
const NEW_MAPPING_DOMAIN: &[u8] = b"introducer/new-mapping/v1";

/// A node's keypair with its derived names, computed once.
#[derive(Clone)]
pub struct Identity {
    keypair: ed25519::Keypair,
    peer_id: PeerId,
    public_key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("public key is not a valid libp2p key")]
    BadKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("signed by a different peer than claimed")]
    PeerMismatch,
    #[error("signed content is malformed")]
    Malformed,
}

impl Identity {
    pub fn generate() -> Self {
        Self::from_keypair(ed25519::Keypair::generate())
    }

    /// Deterministic identity for simulations and tests.
    pub fn from_seed(seed: u64) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8] = 1; // never the all-zero key
        let secret = ed25519::SecretKey::try_from_bytes(&mut secret).expect("32 bytes is a valid ed25519 secret");
        Self::from_keypair(ed25519::Keypair::from(secret))
    }

    pub fn from_keypair(keypair: ed25519::Keypair) -> Self {
        let public = PublicKey::from(keypair.public());
        Identity { peer_id: public.to_peer_id(), public_key: public.encode_protobuf(), keypair }
    }

    pub fn keypair(&self) -> &ed25519::Keypair {
        &self.keypair
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs a record about ourselves; the record's `peer_id` is set to ours.
    pub fn sign_record(&self, mut record: pb::PeerRecord) -> pb::SignedPeerRecord {
        record.peer_id = self.peer_id.to_bytes().into();
        let record = record.encode_to_vec();
        let signature = self.keypair.sign(&[RECORD_DOMAIN, &record].concat());
        pb::SignedPeerRecord {
            public_key: self.public_key.clone().into(),
            record: record.into(),
            signature: signature.into(),
        }
    }

    /// The proof we send over a candidate path: our key and a signature over the nonce
    /// and the recipient, so it cannot be replayed to anyone else.
    pub fn punch(&self, nonce: &[u8], to: &PeerId, ack: bool) -> pb::Punch {
        let signature = self.keypair.sign(&punch_message(nonce, to));
        pb::Punch {
            nonce: nonce.to_vec().into(),
            public_key: self.public_key.clone().into(),
            signature: signature.into(),
            ack: Some(ack),
            token: None,
            echo: None,
        }
    }
}

impl Identity {
    /// Shows the introducer a fresh mapping for the introduction `nonce`.
    pub fn new_mapping(&self, nonce: &[u8]) -> pb::NewMapping {
        let signature = self.keypair.sign(&[NEW_MAPPING_DOMAIN, nonce].concat());
        pb::NewMapping {
            nonce: nonce.to_vec().into(),
            public_key: self.public_key.clone().into(),
            signature: signature.into(),
        }
    }
}

/// Checks a [`pb::NewMapping`]'s signature; returns the signer.
pub fn verify_new_mapping(m: &pb::NewMapping) -> Result<PeerId, SignatureError> {
    let key = decode_key(&m.public_key)?;
    if !key.verify(&[NEW_MAPPING_DOMAIN, &m.nonce[..]].concat(), &m.signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok(key.to_peer_id())
}

fn punch_message(nonce: &[u8], to: &PeerId) -> Vec<u8> {
    [PUNCH_DOMAIN, nonce, &to.to_bytes()].concat()
}

fn decode_key(bytes: &[u8]) -> Result<PublicKey, SignatureError> {
    PublicKey::try_decode_protobuf(bytes).map_err(|_| SignatureError::BadKey)
}

/// A record whose signature checked out, with the signer's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRecord {
    pub peer_id: PeerId,
    pub record: pb::PeerRecord,
    pub signed: pb::SignedPeerRecord,
}

/// Checks that a record was signed by the key it carries and names that key's PeerId.
pub fn verify_record(signed: &pb::SignedPeerRecord) -> Result<VerifiedRecord, SignatureError> {
    let key = decode_key(&signed.public_key)?;
    if !key.verify(&[RECORD_DOMAIN, &signed.record].concat(), &signed.signature) {
        return Err(SignatureError::BadSignature);
    }
    let record = pb::PeerRecord::decode(&signed.record[..]).map_err(|_| SignatureError::Malformed)?;
    let peer_id = key.to_peer_id();
    if record.peer_id[..] != peer_id.to_bytes()[..] {
        return Err(SignatureError::PeerMismatch);
    }
    Ok(VerifiedRecord { peer_id, record, signed: signed.clone() })
}

/// Checks a punch proof: signed by `from` over `nonce`, addressed to `me`.
pub fn verify_punch(punch: &pb::Punch, from: &PeerId, me: &PeerId, nonce: &[u8]) -> Result<(), SignatureError> {
    if punch.nonce[..] != *nonce {
        return Err(SignatureError::Malformed);
    }
    let key = decode_key(&punch.public_key)?;
    if key.to_peer_id() != *from {
        return Err(SignatureError::PeerMismatch);
    }
    if !key.verify(&punch_message(nonce, me), &punch.signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_signature_binds_content_and_key() {
        let alice = Identity::from_seed(1);
        let signed = alice.sign_record(pb::PeerRecord { issued_ms: 5, ..Default::default() });
        let verified = verify_record(&signed).unwrap();
        assert_eq!(verified.peer_id, alice.peer_id());
        assert_eq!(verified.record.issued_ms, 5);

        let mut tampered = signed.clone();
        let mut bytes = tampered.record.to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        tampered.record = bytes.into();
        assert_eq!(verify_record(&tampered), Err(SignatureError::BadSignature));

        let mallory = Identity::from_seed(2);
        let mut stolen = signed;
        stolen.public_key = mallory.sign_record(Default::default()).public_key;
        assert_eq!(verify_record(&stolen), Err(SignatureError::BadSignature));
    }

    #[test]
    fn punch_proof_is_bound_to_nonce_sender_and_recipient() {
        let (a, b, c) = (Identity::from_seed(1), Identity::from_seed(2), Identity::from_seed(3));
        let nonce = [7u8; 16];
        let p = a.punch(&nonce, &b.peer_id(), false);
        assert_eq!(verify_punch(&p, &a.peer_id(), &b.peer_id(), &nonce), Ok(()));
        assert_eq!(verify_punch(&p, &a.peer_id(), &c.peer_id(), &nonce), Err(SignatureError::BadSignature));
        assert_eq!(verify_punch(&p, &c.peer_id(), &b.peer_id(), &nonce), Err(SignatureError::PeerMismatch));
        assert_eq!(verify_punch(&p, &a.peer_id(), &b.peer_id(), &[8u8; 16]), Err(SignatureError::Malformed));
    }
}
