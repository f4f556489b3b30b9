//! First-byte demultiplexing (RFC 7983 style) and the envelope codec.
//!
//! RFC 7983 gives 0–3 to STUN, 16–19 to ZRTP, 20–63 to DTLS, 64–79 to TURN channels and
//! QUIC takes 64–127 and 192–255. Bytes 4–15 are unused by all of them, so introducer
//! frames take `0b0000_1vvv`: the high bits mark the frame, the low three bits carry the
//! wire version. Everything else is refused, so future protocols can share the port.

use crate::pb::Envelope;
use prost::Message;

/// Wire version spoken by this build.
pub const VERSION: u8 = 1;
/// First byte of every introducer frame of this version.
pub const FRAME_BYTE: u8 = 0x08 | VERSION;
/// Largest datagram a node accepts or sends: the IPv6 minimum MTU less headers, so
/// nothing it sends is ever fragmented.
pub const MAX_DATAGRAM: usize = 1232;

/// What a datagram is, judged by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A STUN message (first byte 0–3); decode with [`crate::stun`].
    Stun(&'a [u8]),
    /// An introducer envelope of this version, without its marker byte.
    Envelope(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty datagram")]
    Empty,
    #[error("datagram of {0} bytes exceeds the {MAX_DATAGRAM}-byte limit")]
    Oversized(usize),
    #[error("introducer frame of unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown first byte {0:#04x}")]
    UnknownProtocol(u8),
    #[error("malformed envelope: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("envelope carries no message")]
    EmptyEnvelope,
}

/// Classifies a datagram by its first byte.
pub fn classify(datagram: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (&first, rest) = datagram.split_first().ok_or(FrameError::Empty)?;
    if datagram.len() > MAX_DATAGRAM {
        return Err(FrameError::Oversized(datagram.len()));
    }
    match first {
        0..=3 => Ok(Frame::Stun(datagram)),
        FRAME_BYTE => Ok(Frame::Envelope(rest)),
        0x08..=0x0f => Err(FrameError::UnsupportedVersion(first & 0x07)),
        other => Err(FrameError::UnknownProtocol(other)),
    }
}

/// Encodes an envelope as a complete datagram (marker byte included).
pub fn encode_envelope(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + envelope.encoded_len());
    out.push(FRAME_BYTE);
    envelope.encode(&mut out).expect("a Vec grows as needed, so encoding cannot run out of space");
    out
}

/// Decodes the body of a [`Frame::Envelope`]. An envelope without a message is an error:
/// nothing valid is ever sent that way.
pub fn decode_envelope(body: &[u8]) -> Result<Envelope, FrameError> {
    let envelope = Envelope::decode(body)?;
    if envelope.kind.is_none() {
        return Err(FrameError::EmptyEnvelope);
    }
    Ok(envelope)
}

/// Classifies and decodes in one step; STUN datagrams come back undecoded for
/// [`crate::stun`].
pub fn decode(datagram: &[u8]) -> Result<Decoded<'_>, FrameError> {
    Ok(match classify(datagram)? {
        Frame::Stun(bytes) => Decoded::Stun(bytes),
        Frame::Envelope(body) => Decoded::Envelope(decode_envelope(body)?),
    })
}

/// A datagram after [`decode`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    Stun(&'a [u8]),
    Envelope(Envelope),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{envelope::Kind, Hello};

    #[test]
    fn envelope_round_trips_with_marker() {
        let env = Envelope { kind: Some(Kind::Hello(Hello { padding: vec![7; 4].into() })) };
        let bytes = encode_envelope(&env);
        assert_eq!(bytes[0], FRAME_BYTE);
        assert_eq!(decode(&bytes).unwrap(), Decoded::Envelope(env));
    }

    #[test]
    fn first_byte_routes() {
        assert!(matches!(classify(&[0x00, 1]), Ok(Frame::Stun(_))));
        assert!(matches!(classify(&[0x01, 1]), Ok(Frame::Stun(_))));
        assert_eq!(classify(&[0x0a]), Err(FrameError::UnsupportedVersion(2)));
        assert_eq!(classify(&[0x40]), Err(FrameError::UnknownProtocol(0x40)));
        assert_eq!(classify(&[]), Err(FrameError::Empty));
        assert_eq!(classify(&vec![0; MAX_DATAGRAM + 1]), Err(FrameError::Oversized(MAX_DATAGRAM + 1)));
    }

    #[test]
    fn empty_envelope_is_refused() {
        assert_eq!(decode(&[FRAME_BYTE]), Err(FrameError::EmptyEnvelope));
    }
}
