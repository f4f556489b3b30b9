//! STUN codec against the RFC 5769 test vectors, plus round trips of everything we encode.

use introducer_proto::stun::{
    self, attr, is_binding_request, transaction_id, verify_message_integrity, ChangeRequest, Class, Message, StunError,
    TransactionId, BINDING, HEADER_LEN, MAGIC_COOKIE,
};
use std::net::SocketAddr;

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|byte| u8::from_str_radix(byte, 16).expect("hex byte")).collect()
}

/// RFC 5769 §2.1 Sample Request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
/// MESSAGE-INTEGRITY, FINGERPRINT).
const SAMPLE_REQUEST: &str = "
    00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
    00 24 00 04  6e 00 01 ff
    80 29 00 08  93 2f f9 b1  51 26 3b 36
    00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
    00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
    80 28 00 04  e5 7a 3b cf";

/// RFC 5769 §2.2 Sample IPv4 Response.
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 08  00 01 a1 47  e1 12 a6 43
    00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
    80 28 00 04  c0 7d 4c 96";

/// RFC 5769 §2.3 Sample IPv6 Response.
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
    00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
    80 28 00 04  c8 fb 0b 4c";

const SAMPLE_ID: TransactionId = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];
const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

fn all_vectors() -> [Vec<u8>; 3] {
    [hex(SAMPLE_REQUEST), hex(SAMPLE_IPV4_RESPONSE), hex(SAMPLE_IPV6_RESPONSE)]
}

#[test]
fn rfc5769_vectors_have_the_published_lengths() {
    let [req, v4, v6] = all_vectors();
    assert_eq!((req.len(), v4.len(), v6.len()), (108, 80, 92));
}

#[test]
fn rfc5769_sample_request() {
    let bytes = hex(SAMPLE_REQUEST);
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(msg.class, Class::Request);
    assert_eq!(msg.method, BINDING);
    assert_eq!(msg.transaction_id, SAMPLE_ID);
    assert_eq!(msg.software.as_deref(), Some("STUN test client"));
    assert!(msg.fingerprint);
    assert_eq!(msg.xor_mapped_address, None);
    assert_eq!(msg.change_request, None);
    assert!(is_binding_request(&bytes));
    assert_eq!(transaction_id(&bytes), Some(SAMPLE_ID));
}

#[test]
fn rfc5769_ipv4_response() {
    let bytes = hex(SAMPLE_IPV4_RESPONSE);
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(msg.class, Class::SuccessResponse);
    assert_eq!(msg.method, BINDING);
    assert_eq!(msg.transaction_id, SAMPLE_ID);
    assert_eq!(msg.software.as_deref(), Some("test vector"));
    assert_eq!(msg.xor_mapped_address, Some("192.0.2.1:32853".parse().unwrap()));
    assert!(msg.fingerprint);
    assert!(!is_binding_request(&bytes));
}

#[test]
fn rfc5769_ipv6_response() {
    let bytes = hex(SAMPLE_IPV6_RESPONSE);
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(msg.class, Class::SuccessResponse);
    assert_eq!(msg.transaction_id, SAMPLE_ID);
    assert_eq!(msg.software.as_deref(), Some("test vector"));
    assert_eq!(msg.xor_mapped_address, Some("[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap()));
    assert!(msg.fingerprint);
}

#[test]
fn rfc5769_message_integrity_verifies() {
    for bytes in all_vectors() {
        assert_eq!(verify_message_integrity(&bytes, PASSWORD), Ok(true));
        assert_eq!(verify_message_integrity(&bytes, b"VOkJxbRl1RmTxUk/WvJxBT"), Ok(false));
    }
}

#[test]
fn flipped_bit_fails_fingerprint() {
    for bytes in all_vectors() {
        // A bit of the SOFTWARE text: structure intact, only the CRC can notice.
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 4] ^= 0x01;
        assert_eq!(Message::decode(&bad), Err(StunError::BadFingerprint));
        assert_eq!(verify_message_integrity(&bad, PASSWORD), Ok(false));
        // Any single bit anywhere: never a message with a verified fingerprint.
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let decoded = Message::decode(&bad);
            assert!(!matches!(decoded, Ok(ref m) if m.fingerprint), "bit {i}: {decoded:?}");
        }
    }
}

#[test]
fn xor_mapped_address_encoding_matches_rfc5769() {
    let v4 = Message::binding_success(SAMPLE_ID, "192.0.2.1:32853".parse().unwrap());
    let v4 = Message { fingerprint: false, ..v4 }.encode();
    assert_eq!(&v4[HEADER_LEN..], &hex("00 20 00 08 00 01 a1 47 e1 12 a6 43")[..]);
    let addr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap();
    let v6 = Message { fingerprint: false, ..Message::binding_success(SAMPLE_ID, addr) }.encode();
    let expected = hex("00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9");
    assert_eq!(&v6[HEADER_LEN..], &expected[..]);
}

/// Builds a message from raw attributes (type, value), padding each with zeros.
fn raw(msg_type: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&msg_type.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&SAMPLE_ID);
    for (kind, value) in attrs {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let len = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Appends a correct FINGERPRINT to a message built by [`raw`].
fn with_fingerprint(mut bytes: Vec<u8>) -> Vec<u8> {
    let len = (bytes.len() + 8 - HEADER_LEN) as u16;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&bytes) ^ 0x5354_554E;
    bytes.extend_from_slice(&[0x80, 0x28, 0, 4]);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn header_checks() {
    let good = Message::binding_request(SAMPLE_ID).encode();
    assert!(Message::decode(&good).is_ok());
    assert_eq!(Message::decode(&good[..19]), Err(StunError::Truncated));
    assert_eq!(Message::decode(&[]), Err(StunError::Truncated));

    let mut bad = good.clone();
    bad[0] |= 0x40;
    assert_eq!(Message::decode(&bad), Err(StunError::NotStun));
    let mut bad = good.clone();
    bad[4] ^= 1;
    assert_eq!(Message::decode(&bad), Err(StunError::BadMagic));
    // Length not a multiple of 4.
    let mut bad = good.clone();
    bad[3] = 7;
    assert_eq!(Message::decode(&bad), Err(StunError::BadLength));
    // Length disagreeing with the datagram either way.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(Message::decode(&longer), Err(StunError::BadLength));
    assert_eq!(Message::decode(&good[..24]), Err(StunError::BadLength));
}

#[test]
fn attribute_overrunning_the_message_is_truncated() {
    let mut bytes = raw(0x0001, &[(attr::SOFTWARE, b"abcd")]);
    bytes[HEADER_LEN + 3] = 5; // claims 5 bytes, padded to 8: past the end
    assert_eq!(Message::decode(&bytes), Err(StunError::Truncated));
}

#[test]
fn unknown_comprehension_required_attribute_rejects() {
    let bytes = raw(0x0001, &[(0x7777, b"x")]);
    assert_eq!(Message::decode(&bytes), Err(StunError::UnknownComprehensionRequired(0x7777)));
    // RFC 8489 discards responses with them too.
    let bytes = raw(0x0101, &[(0x0030, b"")]);
    assert_eq!(Message::decode(&bytes), Err(StunError::UnknownComprehensionRequired(0x0030)));
    // Comprehension-optional ones are skipped.
    let bytes = raw(0x0001, &[(0xC057, b"whatever"), (attr::SOFTWARE, b"ok")]);
    assert_eq!(Message::decode(&bytes).unwrap().software.as_deref(), Some("ok"));
}

#[test]
fn known_ice_and_auth_attributes_are_ignored() {
    let bytes = raw(
        0x0001,
        &[
            (attr::USERNAME, b"evtj:h6vY"),
            (attr::PRIORITY, &[0x6e, 0, 1, 0xff]),
            (attr::USE_CANDIDATE, b""),
            (attr::ICE_CONTROLLING, &[1; 8]),
            (attr::REALM, b"example.org"),
            (attr::NONCE, b"nonce"),
            (attr::USERHASH, &[2; 32]),
            (attr::RESPONSE_ADDRESS, &[0, 1, 0, 1, 1, 2, 3, 4]),
        ],
    );
    let msg = Message::decode(&with_fingerprint(bytes)).unwrap();
    assert_eq!(msg, Message::binding_request(SAMPLE_ID));
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let bytes = raw(
        0x0001,
        &[
            (attr::SOFTWARE, b"before"),
            (attr::MESSAGE_INTEGRITY, &[0; 20]),
            (attr::MESSAGE_INTEGRITY_SHA256, &[0; 32]),
            (0x7777, b"unknown but after integrity"),
            (attr::XOR_MAPPED_ADDRESS, b"garbage"),
        ],
    );
    let msg = Message::decode(&with_fingerprint(bytes)).unwrap();
    assert_eq!(msg.software.as_deref(), Some("before"));
    assert_eq!(msg.xor_mapped_address, None);
    assert!(msg.fingerprint);
}

#[test]
fn fingerprint_must_be_last() {
    let mut bytes = Message::binding_request(SAMPLE_ID).encode();
    bytes.extend_from_slice(&[0x80, 0x22, 0, 0]);
    let len = (bytes.len() - HEADER_LEN) as u16;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(Message::decode(&bytes), Err(StunError::FingerprintNotLast | StunError::BadFingerprint)));
    // Recompute the CRC over the new length so only the position is wrong.
    let mut bytes = raw(0x0001, &[]);
    bytes = with_fingerprint(bytes);
    bytes.extend_from_slice(&[0x80, 0x22, 0, 0]);
    let len = (bytes.len() - HEADER_LEN) as u16;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..HEADER_LEN]) ^ 0x5354_554E;
    bytes[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(Message::decode(&bytes), Err(StunError::FingerprintNotLast));
}

#[test]
fn malformed_attributes_are_typed() {
    let cases: [(u16, &[u8]); 7] = [
        (attr::XOR_MAPPED_ADDRESS, &[0, 1, 0, 1, 1, 2, 3]),
        (attr::MAPPED_ADDRESS, &[0, 3, 0, 1, 1, 2, 3, 4]),
        (attr::OTHER_ADDRESS, &[0, 2, 0, 1, 1, 2, 3, 4]),
        (attr::CHANGE_REQUEST, &[0, 0, 6]),
        (attr::RESPONSE_PORT, &[1]),
        (attr::ERROR_CODE, &[0, 0, 4, 100]),
        (attr::FINGERPRINT, &[1, 2]),
    ];
    for (kind, value) in cases {
        let bytes = raw(0x0001, &[(kind, value)]);
        assert_eq!(Message::decode(&bytes), Err(StunError::MalformedAttribute(kind)), "{kind:#x}");
    }
}

#[test]
fn legacy_rfc3489_addresses_fill_the_rfc5780_fields() {
    let bytes = raw(
        0x0101,
        &[
            (attr::MAPPED_ADDRESS, &[0, 1, 0x0d, 0x96, 198, 51, 100, 7]),
            (attr::SOURCE_ADDRESS, &[0, 1, 0x0d, 0x96, 203, 0, 113, 1]),
            (attr::CHANGED_ADDRESS, &[0, 1, 0x0d, 0x97, 203, 0, 113, 2]),
        ],
    );
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(msg.mapped_address, Some("198.51.100.7:3478".parse().unwrap()));
    assert_eq!(msg.response_origin, Some("203.0.113.1:3478".parse().unwrap()));
    assert_eq!(msg.other_address, Some("203.0.113.2:3479".parse().unwrap()));
    assert!(!msg.fingerprint);

    // The RFC 5780 attribute wins over its legacy twin, whatever the order.
    let bytes = raw(
        0x0101,
        &[
            (attr::CHANGED_ADDRESS, &[0, 1, 0x0d, 0x97, 203, 0, 113, 2]),
            (attr::OTHER_ADDRESS, &[0, 1, 0x0d, 0x97, 203, 0, 113, 9]),
        ],
    );
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(msg.other_address, Some("203.0.113.9:3479".parse().unwrap()));
}

#[test]
fn first_of_duplicate_attributes_wins() {
    let bytes = raw(0x0101, &[(attr::SOFTWARE, b"one"), (attr::SOFTWARE, b"two")]);
    assert_eq!(Message::decode(&bytes).unwrap().software.as_deref(), Some("one"));
}

#[test]
fn invalid_utf8_text_is_kept_lossily() {
    let bytes = raw(0x0101, &[(attr::SOFTWARE, &[b'a', 0xff, b'b'])]);
    assert_eq!(Message::decode(&bytes).unwrap().software.as_deref(), Some("a\u{fffd}b"));
}

#[test]
fn message_integrity_missing_or_malformed() {
    let plain = Message::binding_request(SAMPLE_ID).encode();
    assert_eq!(verify_message_integrity(&plain, PASSWORD), Err(StunError::MissingAttribute(attr::MESSAGE_INTEGRITY)));
    let short = raw(0x0001, &[(attr::MESSAGE_INTEGRITY, &[0; 16])]);
    assert_eq!(verify_message_integrity(&short, PASSWORD), Err(StunError::MalformedAttribute(attr::MESSAGE_INTEGRITY)));
    assert_eq!(verify_message_integrity(&plain[..10], PASSWORD), Err(StunError::Truncated));
}

#[test]
fn binding_request_encodes_exactly() {
    let bytes = Message::binding_request(SAMPLE_ID).encode();
    assert_eq!(bytes.len(), 28);
    assert_eq!(&bytes[..HEADER_LEN], &hex("00 01 00 08 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")[..]);
    assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 4], &[0x80, 0x28, 0, 4]);
    assert!(is_binding_request(&bytes));
    assert_eq!(Message::decode(&bytes).unwrap(), Message::binding_request(SAMPLE_ID));
}

fn round_trip(msg: &Message) {
    let bytes = msg.encode();
    assert_eq!(bytes.len(), msg.encoded_len(), "{msg:?}");
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(msg));
}

#[test]
fn every_attribute_round_trips_ipv4_and_ipv6() {
    let addrs: [[SocketAddr; 4]; 2] = [
        ["192.0.2.1:32853", "198.51.100.7:1", "203.0.113.1:3478", "203.0.113.2:3479"].map(|s| s.parse().unwrap()),
        [
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            "[::1]:65535",
            "[2001:db8::1]:3478",
            "[::ffff:192.0.2.9]:3479",
        ]
        .map(|s| s.parse().unwrap()),
    ];
    for [xor, mapped, origin, other] in addrs {
        let base = Message::binding_success(SAMPLE_ID, xor);
        round_trip(&base);
        round_trip(&Message { fingerprint: false, ..base.clone() });
        round_trip(&Message { mapped_address: Some(mapped), ..base.clone() });
        round_trip(&Message { response_origin: Some(origin), ..base.clone() });
        round_trip(&Message { other_address: Some(other), ..base.clone() });
        let full = Message {
            mapped_address: Some(mapped),
            response_origin: Some(origin),
            other_address: Some(other),
            software: Some("introducer".into()),
            ..base.clone()
        };
        round_trip(&full);
    }
    let request = Message::binding_request(SAMPLE_ID);
    for (change_ip, change_port) in [(false, false), (true, false), (false, true), (true, true)] {
        round_trip(&Message { change_request: Some(ChangeRequest { change_ip, change_port }), ..request.clone() });
    }
    round_trip(&Message { response_port: Some(40000), ..request.clone() });
    for padding in [1, 2, 3, 4, 5, 548, 1400] {
        round_trip(&Message { padding, ..request.clone() });
    }
    for software in ["", "a", "ab", "abc", "abcd", "ünïcødé 🚀"] {
        round_trip(&Message { software: Some(software.into()), ..request.clone() });
    }
    for (code, reason) in [(300, "Try Alternate"), (400, "Bad Request"), (420, ""), (699, "x")] {
        round_trip(&Message::binding_error(SAMPLE_ID, code, reason));
    }
    round_trip(&Message::new(Class::Indication, BINDING, SAMPLE_ID));
}

#[test]
fn rfc5780_binding_success_sizes() {
    let v4 = Message {
        response_origin: Some("203.0.113.1:3478".parse().unwrap()),
        other_address: Some("203.0.113.2:3479".parse().unwrap()),
        ..Message::binding_success(SAMPLE_ID, "192.0.2.1:32853".parse().unwrap())
    };
    assert_eq!(v4.encoded_len(), 64);
    let v6 = Message {
        response_origin: Some("[2001:db8::1]:3478".parse().unwrap()),
        other_address: Some("[2001:db8::2]:3479".parse().unwrap()),
        ..Message::binding_success(SAMPLE_ID, "[2001:db8::3]:1".parse().unwrap())
    };
    assert_eq!(v6.encoded_len(), 100);
    round_trip(&v4);
    round_trip(&v6);
}

#[test]
fn oversized_fields_are_clipped_to_valid_messages() {
    let msg = Message {
        software: Some("x".repeat(2000)),
        error_code: Some((500, "é".repeat(1000))),
        padding: 1_000_000,
        ..Message::new(Class::ErrorResponse, BINDING, SAMPLE_ID)
    };
    let bytes = msg.encode();
    assert_eq!(bytes.len(), msg.encoded_len());
    let back = Message::decode(&bytes).unwrap();
    assert_eq!(back.software.unwrap().len(), stun::MAX_TEXT);
    assert_eq!(back.error_code.unwrap().1.len(), 762);
    assert_eq!(back.padding, stun::MAX_PADDING);
}

#[test]
fn cheap_checks_reject_non_requests() {
    assert!(!is_binding_request(&[]));
    assert!(!is_binding_request(&hex(SAMPLE_IPV4_RESPONSE)));
    let mut odd = Message::binding_request(SAMPLE_ID).encode();
    odd.push(0);
    assert!(!is_binding_request(&odd));
    assert_eq!(transaction_id(&odd), None);
}
