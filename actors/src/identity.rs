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
const REGISTER_DOMAIN: &[u8] = b"introducer/register/v1";
const GOSSIP_DOMAIN: &[u8] = b"introducer/gossip/v1";
const NODE_RECORD_DOMAIN: &[u8] = b"introducer/node-record/v1";
const HOSTING_DOMAIN: &[u8] = b"introducer/hosting/v1";

fn register_message(cookie: u64, nonce: u64) -> Vec<u8> {
    [REGISTER_DOMAIN, &cookie.to_le_bytes(), &nonce.to_le_bytes()].concat()
}

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
    #[error("record exceeds its bounds (size or private addresses)")]
    Oversized,
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

    /// Proves we hold our key now, for the registration cookie an introducer gave us.
    pub fn register_proof(&self, cookie: u64, nonce: u64) -> Vec<u8> {
        self.keypair.sign(&register_message(cookie, nonce))
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
            ..Default::default()
        }
    }
}

impl Identity {
    /// Shows the introducer a fresh mapping for the introduction `nonce` with `peer`.
    pub fn new_mapping(&self, nonce: &[u8], peer: &PeerId) -> pb::NewMapping {
        let signature = self.keypair.sign(&[NEW_MAPPING_DOMAIN, nonce].concat());
        pb::NewMapping {
            nonce: nonce.to_vec().into(),
            public_key: self.public_key.clone().into(),
            signature: signature.into(),
            peer: peer.to_bytes().into(),
        }
    }
}

impl Identity {
    /// Signs a mesh datagram for member `to`; its `token` and `echo` are set after (they
    /// are not signed: they bind to addresses, not to the sender).
    pub fn sign_gossip(&self, to: &PeerId, sent_ms: u64, content: pb::Gossip) -> pb::Gossip {
        let mut gossip = pb::Gossip {
            public_key: self.public_key.clone().into(),
            to: to.to_bytes().into(),
            sent_ms,
            token: None,
            echo: None,
            signature: Default::default(),
            ..content
        };
        gossip.signature = self.keypair.sign(&gossip_message(&gossip)).into();
        gossip
    }

    /// Signs what this node says about itself to the mesh; `peer_id` is set to ours.
    pub fn sign_node_record(&self, mut record: pb::NodeRecord) -> pb::SignedNodeRecord {
        record.peer_id = self.peer_id.to_bytes().into();
        let record = record.encode_to_vec();
        let signature = self.keypair.sign(&[NODE_RECORD_DOMAIN, &record].concat());
        pb::SignedNodeRecord {
            public_key: self.public_key.clone().into(),
            record: record.into(),
            signature: signature.into(),
        }
    }
}

impl Identity {
    /// Claims, as a home, that `peer` is registered with us until `expires_ms`.
    pub fn sign_hosting(
        &self,
        peer: &PeerId,
        issued_ms: u64,
        expires_ms: u64,
        topics: &[Vec<u8>],
    ) -> pb::SignedHosting {
        let topics = topics.iter().map(|t| t.clone().into()).collect();
        let hosting = pb::Hosting { peer_id: peer.to_bytes().into(), issued_ms, expires_ms, topics }.encode_to_vec();
        let signature = self.keypair.sign(&[HOSTING_DOMAIN, &hosting].concat());
        pb::SignedHosting {
            public_key: self.public_key.clone().into(),
            hosting: hosting.into(),
            signature: signature.into(),
        }
    }
}

/// Checks a hosting claim's signature; returns the home and the claim.
pub fn verify_hosting(signed: &pb::SignedHosting) -> Result<(PeerId, pb::Hosting), SignatureError> {
    let key = decode_key(&signed.public_key)?;
    let hosting = pb::Hosting::decode(&signed.hosting[..]).map_err(|_| SignatureError::Malformed)?;
    if !verify_strict(&key, &[HOSTING_DOMAIN, &signed.hosting].concat(), &signed.signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok((key.to_peer_id(), hosting))
}

fn gossip_message(gossip: &pb::Gossip) -> Vec<u8> {
    let unsigned = pb::Gossip { signature: Default::default(), token: None, echo: None, ..gossip.clone() };
    [GOSSIP_DOMAIN, &unsigned.encode_to_vec()].concat()
}

/// Checks a mesh datagram's signature; returns the sender.
pub fn verify_gossip(g: &pb::Gossip) -> Result<PeerId, SignatureError> {
    let key = decode_key(&g.public_key)?;
    if !verify_strict(&key, &gossip_message(g), &g.signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok(key.to_peer_id())
}

/// Checks a node record's signature and that it names its signer; returns both.
pub fn verify_node_record(signed: &pb::SignedNodeRecord) -> Result<(PeerId, pb::NodeRecord), SignatureError> {
    let key = decode_key(&signed.public_key)?;
    let record = pb::NodeRecord::decode(&signed.record[..]).map_err(|_| SignatureError::Malformed)?;
    let peer_id = key.to_peer_id();
    if record.peer_id[..] != peer_id.to_bytes()[..] {
        return Err(SignatureError::PeerMismatch);
    }
    if !verify_strict(&key, &[NODE_RECORD_DOMAIN, &signed.record].concat(), &signed.signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok((peer_id, record))
}

/// Checks a [`pb::NewMapping`]'s signature; returns the signer.
pub fn verify_new_mapping(m: &pb::NewMapping) -> Result<PeerId, SignatureError> {
    let key = decode_key(&m.public_key)?;
    if !verify_strict(&key, &[NEW_MAPPING_DOMAIN, &m.nonce[..]].concat(), &m.signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok(key.to_peer_id())
}

/// What precedes the key in every ed25519 PeerId: identity multihash of 36 bytes, then the
/// protobuf key header (type Ed25519, 32 bytes of data).
const ED25519_PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// The ed25519 key that the bytes of an ed25519 PeerId inline (None for any other id).
/// Not checked to be a valid point.
pub fn inlined_ed25519_key(peer_id: &[u8]) -> Option<[u8; 32]> {
    peer_id.strip_prefix(&ED25519_PEER_ID_PREFIX)?.try_into().ok()
}

/// The key of a libp2p protobuf-encoded ed25519 public key, as a signed message names its
/// signer. Not checked to be a valid point, nor the signature: that comes later, if worth it.
pub fn encoded_ed25519_key(public_key: &[u8]) -> Option<[u8; 32]> {
    public_key.strip_prefix(&ED25519_PEER_ID_PREFIX[2..])?.try_into().ok()
}

/// The PeerId that inlines the ed25519 key `key`.
pub fn ed25519_peer_id(key: &[u8; 32]) -> PeerId {
    PeerId::from_bytes(&[&ED25519_PEER_ID_PREFIX[..], key].concat()).expect("an ed25519 PeerId")
}

fn punch_message(nonce: &[u8], to: &PeerId) -> Vec<u8> {
    [PUNCH_DOMAIN, nonce, &to.to_bytes()].concat()
}

fn decode_key(bytes: &[u8]) -> Result<PublicKey, SignatureError> {
    PublicKey::try_decode_protobuf(bytes).map_err(|_| SignatureError::BadKey)
}

/// Checks `signature` over `message` by ed25519's strict rules (canonical encodings, no
/// small-order key or R). libp2p's `verify` is the permissive one: for a small-order key,
/// R = identity and s = 0 "sign" every message.
pub fn verify_strict(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(ed) = key.clone().try_into_ed25519() else { return false };
    let (Ok(key), Ok(signature)) =
        (ed25519_dalek::VerifyingKey::from_bytes(&ed.to_bytes()), ed25519_dalek::Signature::from_slice(signature))
    else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

/// A record whose signature checked out, with the signer's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRecord {
    pub peer_id: PeerId,
    pub record: pb::PeerRecord,
    pub signed: pb::SignedPeerRecord,
}

/// Private addresses a record may list: a punch tries at most four (`MAX_PRIVATE` in
/// `punch/plan.rs`), so more would only cost whoever stores or relays the record.
pub const MAX_PRIVATE_ADDRS: usize = 4;

/// The largest encoded [`pb::SignedPeerRecord`] accepted, so that what an introducer keeps
/// per registration is not the registrant's choice. An honest record at its largest (four
/// IPv6 private addresses, a full NAT report with an IPv6 public address) takes, in bytes
/// (tag + length + content for each field):
///
/// ```text
/// Addr, IPv6:    ip 1+1+16, port 1+3 (65535)                               = 22
/// NatReport:     no_nat, mapping, filtering, allocation 4 × 2,
///                allocation_step 1+5 (sint32), public_addr 1+1+22           = 38
/// PeerRecord:    peer_id 1+1+38, private_addrs 4 × (1+1+22),
///                nat 1+1+38, issued_ms 1+10 (u64)                           = 187
/// signed:        public_key 1+1+36, record 1+2+187, signature 1+1+64        = 294
/// ```
///
/// 320 leaves room for a small field added later. Scalars are fixed-size by type (a
/// varint is at most 10 bytes), so this and the address bounds bound every field.
pub const MAX_SIGNED_RECORD: usize = 320;

/// The bounds on a record, checked before its signature (they are cheap, a signature is
/// not): its size, its private addresses' count, and every address 4 or 16 bytes and a
/// 16-bit port.
fn bounded_record(signed: &pb::SignedPeerRecord) -> Result<pb::PeerRecord, SignatureError> {
    if signed.encoded_len() > MAX_SIGNED_RECORD {
        return Err(SignatureError::Oversized);
    }
    let record = pb::PeerRecord::decode(&signed.record[..]).map_err(|_| SignatureError::Malformed)?;
    if record.private_addrs.len() > MAX_PRIVATE_ADDRS {
        return Err(SignatureError::Oversized);
    }
    let public = record.nat.as_ref().and_then(|nat| nat.public_addr.as_ref());
    if record.private_addrs.iter().chain(public).any(|a| std::net::SocketAddr::try_from(a).is_err()) {
        return Err(SignatureError::Malformed);
    }
    Ok(record)
}

/// Checks that a record keeps within its bounds ([`MAX_SIGNED_RECORD`],
/// [`MAX_PRIVATE_ADDRS`]), was signed by the key it carries and names that key's PeerId.
pub fn verify_record(signed: &pb::SignedPeerRecord) -> Result<VerifiedRecord, SignatureError> {
    let (peer_id, key, record) = claimed_record(signed)?;
    if !verify_strict(&key, &[RECORD_DOMAIN, &signed.record].concat(), &signed.signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok(VerifiedRecord { peer_id, record, signed: signed.clone() })
}

/// Whether `proof` is the record's key's signature over a registration's cookie and nonce
/// ([`Identity::register_proof`]).
pub fn verify_register_proof(signed: &pb::SignedPeerRecord, cookie: u64, nonce: u64, proof: &[u8]) -> bool {
    decode_key(&signed.public_key).is_ok_and(|key| verify_strict(&key, &register_message(cookie, nonce), proof))
}

/// Whom a record claims to be from, its bounds and key checked but not its signature: the
/// cheap part, so that an introducer can check a cookie before it spends a signature
/// verification on a stranger.
pub fn record_signer(signed: &pb::SignedPeerRecord) -> Result<PeerId, SignatureError> {
    claimed_record(signed).map(|(peer_id, ..)| peer_id)
}

/// A record whose signature was verified when it arrived, kept as it came (a
/// registration's): read again without verifying it again.
pub(crate) fn reread_record(signed: &pb::SignedPeerRecord) -> Option<VerifiedRecord> {
    let (peer_id, _, record) = claimed_record(signed).ok()?;
    Some(VerifiedRecord { peer_id, record, signed: signed.clone() })
}

fn claimed_record(signed: &pb::SignedPeerRecord) -> Result<(PeerId, PublicKey, pb::PeerRecord), SignatureError> {
    let record = bounded_record(signed)?;
    let key = decode_key(&signed.public_key)?;
    let peer_id = key.to_peer_id();
    if record.peer_id[..] != peer_id.to_bytes()[..] {
        return Err(SignatureError::PeerMismatch);
    }
    Ok((peer_id, key, record))
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
    if !verify_strict(&key, &punch_message(nonce, me), &punch.signature) {
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

        // Another key than the record names: refused before any signature is checked.
        let mallory = Identity::from_seed(2);
        let mut stolen = signed;
        stolen.public_key = mallory.sign_record(Default::default()).public_key;
        assert_eq!(verify_record(&stolen), Err(SignatureError::PeerMismatch));
    }

    /// A small-order public key with R = identity and s = 0 "signs" every message under
    /// ed25519's permissive rules (libp2p's `verify`); the strict ones refuse it.
    #[test]
    fn a_small_order_key_signs_nothing() {
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let key: PublicKey = ed25519::PublicKey::try_from_bytes(&identity_point).expect("a point").into();
        let mut weak = [0u8; 64];
        weak[0] = 1;
        assert!(key.verify(b"anything at all", &weak), "the permissive check is fooled");
        assert!(!verify_strict(&key, b"anything at all", &weak));
        let record = pb::PeerRecord { peer_id: key.to_peer_id().to_bytes().into(), ..Default::default() };
        let signed = pb::SignedPeerRecord {
            public_key: key.encode_protobuf().into(),
            record: record.encode_to_vec().into(),
            signature: weak.to_vec().into(),
        };
        assert_eq!(verify_record(&signed).map(|r| r.peer_id), Err(SignatureError::BadSignature));
    }

    /// The largest record an honest node signs: four IPv6 private addresses and a NAT
    /// report with every field at its widest.
    fn largest_honest_record() -> pb::PeerRecord {
        let v6 = |n: u16| -> pb::Addr { std::net::SocketAddr::new([0xfd00, 0, 0, 0, 0, 0, 0, n].into(), 65535).into() };
        let nat = pb::NatReport {
            no_nat: true,
            mapping: pb::Mapping::AddressAndPortDependent as i32,
            filtering: pb::Filtering::AddressAndPortDependent as i32,
            allocation: pb::Allocation::Random as i32,
            allocation_step: i32::MIN,
            public_addr: Some(v6(0xffff)),
        };
        pb::PeerRecord {
            peer_id: Default::default(),
            private_addrs: (1..=4).map(v6).collect(),
            nat: Some(nat),
            issued_ms: u64::MAX,
        }
    }

    #[test]
    fn an_honest_record_at_its_largest_fits_the_bound() {
        let signed = Identity::from_seed(1).sign_record(largest_honest_record());
        assert_eq!(signed.encoded_len(), 294, "the arithmetic in MAX_SIGNED_RECORD's comment");
        assert!(signed.encoded_len() <= MAX_SIGNED_RECORD);
        assert_eq!(verify_record(&signed).unwrap().record.private_addrs.len(), MAX_PRIVATE_ADDRS);
    }

    #[test]
    fn oversized_and_malformed_records_are_refused_though_signed() {
        let alice = Identity::from_seed(1);
        // The audit's record: 533 empty private addresses, validly signed.
        let padded = pb::PeerRecord { private_addrs: vec![pb::Addr::default(); 533], ..Default::default() };
        assert_eq!(verify_record(&alice.sign_record(padded)), Err(SignatureError::Oversized));

        let mut five = largest_honest_record();
        five.nat = None;
        five.private_addrs.push(five.private_addrs[0].clone());
        let five = alice.sign_record(five);
        assert!(five.encoded_len() <= MAX_SIGNED_RECORD, "refused for its count, not its size");
        assert_eq!(verify_record(&five), Err(SignatureError::Oversized));

        let empty_addr = pb::PeerRecord { private_addrs: vec![pb::Addr::default()], ..Default::default() };
        assert_eq!(verify_record(&alice.sign_record(empty_addr)), Err(SignatureError::Malformed));
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
