//! Relay data frames, read and turned around in place (smoltcp's `wire` style): the relay's
//! hot path forwards a `RelaySend` as the `RelayDeliver` it becomes without decoding it into
//! a message, allocating, or copying the payload.
//!
//! The two differ in one byte: the envelope's field number (17 and 18, both
//! length-delimited, both two-byte tags). Only the canonical encoding — what every node's
//! prost encoder writes — is read here; anything else (a field out of order, a zero circuit
//! left out) is not a fast frame and goes the slow way, through the decoder.

use introducer_proto::frame::FRAME_BYTE;

/// The envelope's tag for `relay_send` (field 17, length-delimited), and the first byte of
/// `relay_deliver`'s (field 18); the second byte (`0x01`) is the same.
const SEND_TAG: [u8; 2] = [0x8a, 0x01];
const DELIVER_TAG0: u8 = 0x92;
/// `RelayData.circuit` (field 1, fixed64) and `RelayData.payload` (field 2, bytes).
const CIRCUIT_TAG: u8 = 0x09;
const PAYLOAD_TAG: u8 = 0x12;

/// What a relay needs of a `RelaySend` to forward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame {
    pub circuit: u64,
    pub payload_len: usize,
}

/// A base-128 varint at the start of `bytes`: its value and length (at most 2 bytes: no
/// datagram is longer than 16 KiB).
fn varint2(bytes: &[u8]) -> Option<(usize, usize)> {
    match *bytes {
        [b0, ..] if b0 < 0x80 => Some((usize::from(b0), 1)),
        [b0, b1, ..] if b1 < 0x80 => Some((usize::from(b0 & 0x7f) | usize::from(b1) << 7, 2)),
        _ => None,
    }
}

/// The `RelaySend` in `datagram`, if it is one in canonical form and nothing else.
pub fn parse_send(datagram: &[u8]) -> Option<DataFrame> {
    let rest = datagram.strip_prefix(&[FRAME_BYTE])?.strip_prefix(&SEND_TAG)?;
    let (len, n) = varint2(rest)?;
    let data = &rest[n..];
    if data.len() != len {
        return None;
    }
    let (&tag, data) = data.split_first()?;
    if tag != CIRCUIT_TAG || data.len() < 8 {
        return None;
    }
    let circuit = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let (&tag, data) = data[8..].split_first()?;
    let (payload_len, n) = varint2(data)?;
    (tag == PAYLOAD_TAG && data.len() == n + payload_len).then_some(DataFrame { circuit, payload_len })
}

/// Turns a datagram [`parse_send`] accepted into the `RelayDeliver` of the same data.
pub fn turn_to_deliver(datagram: &mut [u8]) {
    datagram[1] = DELIVER_TAG0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use introducer_proto::frame::encode_envelope;
    use introducer_proto::pb::{self, envelope::Kind, Envelope};
    use introducer_proto::MAX_DATAGRAM;
    use proptest::prelude::*;

    fn frame(kind: Kind) -> Vec<u8> {
        encode_envelope(&Envelope { kind: Some(kind) })
    }

    proptest! {
        /// What prost writes is read, and turned into exactly what prost writes for the
        /// delivery.
        #[test]
        fn a_send_turns_into_the_delivery_prost_would_write(circuit in 1u64.., len in 1usize..MAX_DATAGRAM - 16) {
            let data = pb::RelayData { circuit, payload: vec![0xa5; len].into() };
            let mut datagram = frame(Kind::RelaySend(data.clone()));
            prop_assert_eq!(parse_send(&datagram), Some(DataFrame { circuit, payload_len: len }));
            turn_to_deliver(&mut datagram);
            prop_assert_eq!(datagram, frame(Kind::RelayDeliver(data)));
        }

        /// Anything cut short or grown is not a fast frame.
        #[test]
        fn a_truncated_or_padded_send_is_not_read(circuit in 1u64.., len in 1usize..300, cut in 1usize..8) {
            let datagram = frame(Kind::RelaySend(pb::RelayData { circuit, payload: vec![1; len].into() }));
            prop_assert_eq!(parse_send(&datagram[..datagram.len() - cut.min(datagram.len())]), None);
            let mut padded = datagram.clone();
            padded.push(0);
            prop_assert_eq!(parse_send(&padded), None);
        }
    }

    /// Other kinds, and sends in forms prost does not write, go the slow way.
    #[test]
    fn other_frames_are_not_read() {
        let data = pb::RelayData { circuit: 7, payload: vec![1, 2, 3].into() };
        assert_eq!(parse_send(&frame(Kind::RelayDeliver(data.clone()))), None);
        assert_eq!(parse_send(&frame(Kind::RelayClose(pb::RelayClose { circuit: 7 }))), None);
        // A zero circuit and an empty payload are left out by the encoder.
        assert_eq!(parse_send(&frame(Kind::RelaySend(pb::RelayData { circuit: 0, ..data.clone() }))), None);
        assert_eq!(parse_send(&frame(Kind::RelaySend(pb::RelayData { payload: Vec::new().into(), ..data }))), None);
        assert_eq!(parse_send(&[]), None);
        assert_eq!(parse_send(&[0x00, 0x01, 0x00, 0x00]), None);
    }
}
