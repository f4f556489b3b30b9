//! First-byte framing and the envelope decoder on arbitrary bytes: no panic, and an
//! envelope that decodes encodes back to one that decodes to the same value.
#![no_main]

use introducer_proto::frame::{self, Decoded, FRAME_BYTE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Envelope(envelope)) = frame::decode(data) {
        // The body alone: protobuf re-encoding is not always as short as what was decoded
        // (a negative int32 sent as a 5-byte varint comes back as 10 bytes), so the whole
        // datagram may exceed MAX_DATAGRAM.
        let again = frame::encode_envelope(&envelope);
        assert_eq!(again[0], FRAME_BYTE);
        assert_eq!(frame::decode_envelope(&again[1..]), Ok(envelope));
    }
});
