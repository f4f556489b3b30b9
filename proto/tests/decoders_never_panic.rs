//! Every decoder faces the open internet: arbitrary bytes must give an error, never a panic.

use introducer_proto::frame::{self, FRAME_BYTE};
use introducer_proto::stun::{
    self, attr, verify_message_integrity, ChangeRequest, Class, Message, HEADER_LEN, MAGIC_COOKIE,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Runs every decoder on the bytes; only panics count as failures.
fn decode_all(bytes: &[u8]) {
    let _ = Message::decode(bytes);
    let _ = verify_message_integrity(bytes, b"key");
    let _ = stun::is_binding_request(bytes);
    let _ = stun::transaction_id(bytes);
    let _ = frame::decode(bytes);
}

/// A header that passes every check, so the attribute walker sees the body.
fn stun_header(msg_type: u16, body_len: usize, id: [u8; 12]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.extend_from_slice(&(msg_type & 0x3FFF).to_be_bytes());
    out.extend_from_slice(&(body_len as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&id);
    out
}

/// Attribute types worth hitting: every one the decoder knows, plus random ones.
fn attr_type() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            attr::MAPPED_ADDRESS,
            attr::CHANGE_REQUEST,
            attr::SOURCE_ADDRESS,
            attr::CHANGED_ADDRESS,
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY,
            attr::ERROR_CODE,
            attr::MESSAGE_INTEGRITY_SHA256,
            attr::XOR_MAPPED_ADDRESS,
            attr::PADDING,
            attr::RESPONSE_PORT,
            attr::SOFTWARE,
            attr::FINGERPRINT,
            attr::RESPONSE_ORIGIN,
            attr::OTHER_ADDRESS,
        ]),
        any::<u16>(),
    ]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop::sample::select(vec![Class::Request, Class::Indication, Class::SuccessResponse, Class::ErrorResponse])
}

/// Any message [`Message::encode`] can produce without clipping.
fn message() -> impl Strategy<Value = Message> {
    let head = (class(), 0u16..0x1000, any::<[u8; 12]>());
    let addrs = (
        prop::option::of(socket_addr()),
        prop::option::of(socket_addr()),
        prop::option::of(socket_addr()),
        prop::option::of(socket_addr()),
    );
    let rest = (
        prop::option::of((any::<bool>(), any::<bool>())),
        prop::option::of(any::<u16>()),
        0usize..1500,
        prop::option::of("\\PC{0,128}"),
        prop::option::of((300u16..700, "\\PC{0,128}")),
        any::<bool>(),
    );
    (head, addrs, rest).prop_map(
        |((class, method, id), (xor, mapped, origin, other), (change, port, padding, software, error, fp))| Message {
            class,
            method,
            transaction_id: id,
            xor_mapped_address: xor,
            mapped_address: mapped,
            change_request: change.map(|(change_ip, change_port)| ChangeRequest { change_ip, change_port }),
            response_origin: origin,
            other_address: other,
            response_port: port,
            padding,
            software,
            error_code: error,
            fingerprint: fp,
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_body_behind_valid_stun_header(
        msg_type in any::<u16>(),
        id in any::<[u8; 12]>(),
        words in prop::collection::vec(any::<[u8; 4]>(), 0..300),
    ) {
        let mut bytes = stun_header(msg_type, words.len() * 4, id);
        bytes.extend(words.iter().flatten());
        decode_all(&bytes);
    }

    #[test]
    fn well_formed_tlvs_with_arbitrary_values(
        msg_type in any::<u16>(),
        id in any::<[u8; 12]>(),
        attrs in prop::collection::vec((attr_type(), prop::collection::vec(any::<u8>(), 0..40)), 0..12),
        lie in prop::option::of((any::<usize>(), any::<u16>())),
    ) {
        let mut body = Vec::new();
        for (kind, value) in &attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        // Optionally corrupt one attribute length so it points somewhere odd.
        if let Some((at, len)) = lie {
            if body.len() >= 4 {
                let at = (at % (body.len() / 4)) * 4;
                body[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        let mut bytes = stun_header(msg_type, body.len(), id);
        bytes.extend_from_slice(&body);
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_frame_byte(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        let mut datagram = vec![FRAME_BYTE];
        datagram.extend_from_slice(&bytes);
        decode_all(&datagram);
    }

    #[test]
    fn encode_decode_round_trips(msg in message()) {
        let bytes = msg.encode();
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        prop_assert_eq!(Message::decode(&bytes), Ok(msg.clone()));
        prop_assert_eq!(
            stun::is_binding_request(&bytes),
            msg.class == Class::Request && msg.method == stun::BINDING
        );
        prop_assert_eq!(stun::transaction_id(&bytes), Some(msg.transaction_id));
        // Truncating an encoded message never panics either.
        for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            let _ = Message::decode(&bytes[..cut.min(bytes.len())]);
        }
    }
}
