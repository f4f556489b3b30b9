//! Relaying: a public node carries datagrams between two peers that cannot punch
//! (random × random mapping, or a punch that failed).
//!
//! - [`server::Relay`] runs on public nodes. It forwards over a *circuit*: the pair of
//!   peers of one introduction, named by its nonce. Each peer asks for the circuit with a
//!   [`pb::RelayRequest`] signed by its key over the target, the nonce and a cookie; the
//!   first request from an address only earns a [`pb::RelayChallenge`] (smaller than the
//!   request), so the cookie proves the peer receives where it claims to be. Nothing is
//!   forwarded until *both* peers have asked from proven addresses, so the relay never
//!   sends to an address that did not ask. Limits (circuits in total, pending and per
//!   peer; bytes and packets per second per direction) are refused with a
//!   [`pb::RelayRefused`] naming the reason, never silently.
//! - [`client::RelayClient`] is one peer's side of one circuit: it sets the circuit up
//!   (retransmitting), keeps it alive, wraps outgoing session datagrams as
//!   `RelaySend { circuit, payload }` and unwraps `RelayDeliver`.
//!
//! The relay sees peer ids and sizes; payloads are opaque to it. They are not encrypted
//! yet: end-to-end encryption of session traffic (over keys the punch/relay request already
//! authenticate) is still to come, and until then the relay could read them.
//!
//! Wire kinds are split by direction ([`to_relay`]), so one route can carry both and a node
//! that is both relay and client tells them apart by kind alone.

use crate::identity::Identity;
use introducer_proto::pb::{self, envelope::Kind};
use libp2p_identity::{PeerId, PublicKey};

pub mod actor;
pub mod client;
pub mod server;
pub mod wire;

pub use client::{ClientConfig, RelayClient};
pub use server::{Relay, RelayConfig};

const RELAY_DOMAIN: &[u8] = b"introducer/relay/v1";

/// Introduction nonces are 16 bytes; the relay takes 8 to 32.
pub const MIN_NONCE: usize = 8;
pub const MAX_NONCE: usize = 32;

/// Whether a relay frame is for a relay (server side) rather than from one (client side);
/// `None` for kinds that are not relay frames.
pub fn to_relay(kind: &Kind) -> Option<bool> {
    match kind {
        Kind::RelayRequest(_) | Kind::RelaySend(_) | Kind::RelayClose(_) => Some(true),
        Kind::RelayChallenge(_)
        | Kind::RelayAccepted(_)
        | Kind::RelayRefused(_)
        | Kind::RelayDeliver(_)
        | Kind::RelayClosed(_) => Some(false),
        _ => None,
    }
}

fn request_message(target: &[u8], nonce: &[u8], cookie: u64) -> Vec<u8> {
    [RELAY_DOMAIN, target, nonce, &cookie.to_le_bytes()].concat()
}

/// A signed request for the circuit with `target` over the introduction `nonce`.
pub fn sign_request(identity: &Identity, target: &PeerId, nonce: &[u8], cookie: u64) -> pb::RelayRequest {
    let target = target.to_bytes();
    let signature = identity.keypair().sign(&request_message(&target, nonce, cookie));
    pb::RelayRequest {
        public_key: PublicKey::from(identity.keypair().public()).encode_protobuf().into(),
        target: target.into(),
        nonce: nonce.to_vec().into(),
        cookie,
        signature: signature.into(),
    }
}

/// The requester named by a request's key, unchecked (cheap: no signature verification).
pub(crate) fn requester_key(request: &pb::RelayRequest) -> Option<PublicKey> {
    PublicKey::try_decode_protobuf(&request.public_key).ok()
}

/// Checks a request's signature against the key it carries.
pub(crate) fn verify_request(key: &PublicKey, request: &pb::RelayRequest) -> bool {
    crate::identity::verify_strict(
        key,
        &request_message(&request.target, &request.nonce, request.cookie),
        &request.signature,
    )
}

/// Short text for a refusal reason, for events and logs.
pub fn reason_text(reason: pb::RelayRefusedReason) -> &'static str {
    use pb::RelayRefusedReason as R;
    match reason {
        R::Unknown => "refused",
        R::RelayFull => "relay is full",
        R::PeerLimit => "too many circuits for this peer",
        R::RateLimited => "rate limited",
        R::BadRequest => "bad request",
        R::TooManyPending => "too many circuits waiting for their second side",
        R::NotIntroduced => "this relay did not introduce us",
        R::HostLimit => "too many circuits for this host or network",
    }
}

#[cfg(test)]
mod tests;
