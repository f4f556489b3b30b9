//! The STUN codec, both ways. Arbitrary bytes: no panic; what decodes encodes to exactly
//! `encoded_len` bytes that decode to the same message, as long as its texts fit what the
//! encoder keeps (it cuts SOFTWARE and reasons to `MAX_TEXT` bytes, PADDING to
//! `MAX_PADDING`); the header helpers agree with the decoder. Messages built from the
//! input: `encode` always gives a STUN message that decodes to them.
#![no_main]

use arbitrary::Unstructured;
use introducer_fuzz::gen;
use introducer_proto::stun::{self, Class, Message, MAX_PADDING, MAX_TEXT};
use libfuzzer_sys::fuzz_target;

/// What the encoder keeps of a text: its first `MAX_TEXT` bytes, cut at a character.
fn clipped(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `m` as it comes back from encoding and decoding.
fn kept(m: &Message) -> Message {
    Message {
        software: m.software.as_deref().map(clipped),
        error_code: m.error_code.as_ref().map(|(code, reason)| (*code, clipped(reason))),
        padding: m.padding.min(MAX_PADDING),
        ..m.clone()
    }
}

fn round_trip(m: &Message) {
    let bytes = m.encode();
    assert_eq!(bytes.len(), m.encoded_len());
    let back = Message::decode(&bytes).unwrap_or_else(|e| panic!("{m:?} encodes to {bytes:02x?}, which fails: {e}"));
    assert_eq!(back, kept(m));
    assert_eq!(back.encode(), bytes, "encoding is stable");
}

fuzz_target!(|data: &[u8]| {
    let decoded = Message::decode(data);
    let _ = stun::verify_message_integrity(data, b"key");
    if let Ok(m) = &decoded {
        assert_eq!(stun::is_binding_request(data), m.class == Class::Request && m.method == stun::BINDING);
        assert_eq!(stun::transaction_id(data), Some(m.transaction_id));
        round_trip(m);
    }
    // The generator keeps to what the codec promises for any message: error codes of
    // 300–699, addresses without IPv6 flow info or scope id.
    if let Ok(m) = gen::stun_message(&mut Unstructured::new(data)) {
        round_trip(&m);
    }
});
