//! STUN Binding codec: RFC 8489 plus the RFC 5780 NAT-behaviour-discovery attributes.
//!
//! Shaped like smoltcp's `wire` modules: no I/O, typed errors, and no panic on any input,
//! because every byte here comes from an untrusted socket. Decoding allocates only the
//! SOFTWARE and ERROR-CODE texts, which are bounded by the datagram itself.
//!
//! Only what a Binding client or server needs is modelled in [`Message`]; the other
//! attributes seen in the wild (ICE, authentication, legacy RFC 3489) are accepted and
//! ignored, so real STUN servers and the RFC 5769 vectors decode.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Fixed value in every RFC 5389+ header; tells STUN from other protocols on the port.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The only method a NAT-traversal node needs.
pub const BINDING: u16 = 0x0001;
/// Random per transaction; the only way to match a response to its request.
pub type TransactionId = [u8; 12];

/// Size of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// XORed into the CRC so FINGERPRINT differs from CRCs other protocols carry.
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// RFC 8489 caps SOFTWARE and the ERROR-CODE reason at 128 characters, which is at most
/// this many UTF-8 bytes; longer texts are cut when encoding.
pub const MAX_TEXT: usize = 763;
/// Largest PADDING [`Message::encode`] writes, so that the whole message always fits the
/// 16-bit length field whatever else it carries.
pub const MAX_PADDING: usize = 60_000;

/// Attribute types (RFC 8489 §18.3, RFC 5780 §7, RFC 3489 legacy, RFC 8445 ICE).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RFC 3489, deprecated; ignored.
    pub const RESPONSE_ADDRESS: u16 = 0x0002;
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// RFC 3489 predecessor of RESPONSE-ORIGIN; decoded into `response_origin`.
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// RFC 3489 predecessor of OTHER-ADDRESS; decoded into `other_address`.
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    pub const USERNAME: u16 = 0x0006;
    /// RFC 3489, deprecated; ignored.
    pub const PASSWORD: u16 = 0x0007;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// RFC 3489, deprecated; ignored.
    pub const REFLECTED_FROM: u16 = 0x000B;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const PADDING: u16 = 0x0026;
    pub const RESPONSE_PORT: u16 = 0x0027;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const CACHE_TIMEOUT: u16 = 0x8027;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    pub const OTHER_ADDRESS: u16 = 0x802C;
}

/// The two class bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

/// RFC 5780 CHANGE-REQUEST: asks the server to answer from its other IP and/or port,
/// which is how filtering behaviour is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeRequest {
    pub change_ip: bool,
    pub change_port: bool,
}

/// A decoded STUN message, reduced to what Binding and NAT discovery use.
///
/// Addresses carry no IPv6 flow info or scope id: the wire has neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub class: Class,
    /// 12-bit method; higher bits are dropped when encoding.
    pub method: u16,
    pub transaction_id: TransactionId,
    pub xor_mapped_address: Option<SocketAddr>,
    /// Legacy RFC 3489 attribute, decoded if present; old clients understand only this.
    pub mapped_address: Option<SocketAddr>,
    /// RFC 5780.
    pub change_request: Option<ChangeRequest>,
    /// RFC 5780 (legacy SOURCE-ADDRESS decodes here too).
    pub response_origin: Option<SocketAddr>,
    /// RFC 5780 (legacy CHANGED-ADDRESS decodes here too).
    pub other_address: Option<SocketAddr>,
    /// RFC 5780 RESPONSE-PORT.
    pub response_port: Option<u16>,
    /// RFC 5780 PADDING length: encode adds a PADDING attribute of this many zero bytes
    /// (capped at [`MAX_PADDING`], none if 0); decode reports its length.
    pub padding: usize,
    pub software: Option<String>,
    /// Code (300–699) and reason phrase.
    pub error_code: Option<(u16, String)>,
    /// Encode: append FINGERPRINT. Decode: present and verified (a wrong one is an error).
    pub fingerprint: bool,
}

/// Why a datagram is not a STUN message we accept. Every variant means "drop it".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("datagram ends inside the STUN header or an attribute")]
    Truncated,
    #[error("top two bits of a STUN message must be zero")]
    NotStun,
    #[error("magic cookie missing (RFC 3489 message or not STUN)")]
    BadMagic,
    #[error("STUN length field not a multiple of 4 or disagrees with the datagram")]
    BadLength,
    #[error("FINGERPRINT does not match the message")]
    BadFingerprint,
    #[error("attribute after FINGERPRINT")]
    FingerprintNotLast,
    #[error("unknown comprehension-required attribute {0:#06x}")]
    UnknownComprehensionRequired(u16),
    #[error("malformed attribute {0:#06x}")]
    MalformedAttribute(u16),
    #[error("attribute {0:#06x} missing")]
    MissingAttribute(u16),
}

impl Class {
    /// Class bits C1 (0x0100) and C0 (0x0010) of a message type.
    fn from_type(message_type: u16) -> Class {
        match (message_type & 0x0100 != 0, message_type & 0x0010 != 0) {
            (false, false) => Class::Request,
            (false, true) => Class::Indication,
            (true, false) => Class::SuccessResponse,
            (true, true) => Class::ErrorResponse,
        }
    }

    fn type_bits(self) -> u16 {
        match self {
            Class::Request => 0x0000,
            Class::Indication => 0x0010,
            Class::SuccessResponse => 0x0100,
            Class::ErrorResponse => 0x0110,
        }
    }
}

/// The method's 12 bits are interleaved around the two class bits.
fn message_type(class: Class, method: u16) -> u16 {
    (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | class.type_bits()
}

fn method_of(message_type: u16) -> u16 {
    (message_type & 0x000F) | ((message_type >> 1) & 0x0070) | ((message_type >> 2) & 0x0F80)
}

/// Values are padded to 4 bytes on the wire.
const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

struct Header {
    message_type: u16,
    transaction_id: TransactionId,
}

/// Checks everything the fixed header promises: zero top bits, cookie, and a length
/// that is aligned and exactly covers the datagram (UDP carries one message per datagram).
fn parse_header(datagram: &[u8]) -> Result<Header, StunError> {
    let Some((head, _)) = datagram.split_first_chunk::<HEADER_LEN>() else {
        return Err(StunError::Truncated);
    };
    let message_type = u16::from_be_bytes([head[0], head[1]]);
    if message_type & 0xC000 != 0 {
        return Err(StunError::NotStun);
    }
    if u32::from_be_bytes([head[4], head[5], head[6], head[7]]) != MAGIC_COOKIE {
        return Err(StunError::BadMagic);
    }
    let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if length % 4 != 0 || HEADER_LEN + length != datagram.len() {
        return Err(StunError::BadLength);
    }
    let mut transaction_id = [0; 12];
    transaction_id.copy_from_slice(&head[8..]);
    Ok(Header { message_type, transaction_id })
}

/// One attribute as found on the wire.
struct RawAttr<'a> {
    kind: u16,
    /// Offset of the attribute header in the datagram: integrity checks hash up to here.
    offset: usize,
    value: &'a [u8],
}

/// Walks the TLVs of a datagram whose header [`parse_header`] accepted; stops after the
/// first error.
struct Attributes<'a> {
    datagram: &'a [u8],
    pos: usize,
}

impl<'a> Attributes<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Attributes { datagram, pos: HEADER_LEN }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<RawAttr<'a>, StunError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.datagram.get(self.pos..).filter(|rest| !rest.is_empty())?;
        let offset = self.pos;
        let parsed = match rest {
            [t0, t1, l0, l1, tail @ ..] => {
                let len = usize::from(u16::from_be_bytes([*l0, *l1]));
                match tail.get(..len) {
                    Some(value) if padded(len) <= tail.len() => {
                        self.pos = offset + 4 + padded(len);
                        Ok(RawAttr { kind: u16::from_be_bytes([*t0, *t1]), offset, value })
                    }
                    _ => Err(StunError::Truncated),
                }
            }
            _ => Err(StunError::Truncated),
        };
        if parsed.is_err() {
            self.pos = self.datagram.len();
        }
        Some(parsed)
    }
}

/// Attributes we know and deliberately ignore: the RFC 5769 vectors, ICE, long-term
/// authentication and RFC 3489 leftovers must not make a message undecodable.
fn ignored_known(kind: u16) -> bool {
    use attr::*;
    matches!(
        kind,
        RESPONSE_ADDRESS
            | USERNAME
            | PASSWORD
            | UNKNOWN_ATTRIBUTES
            | REFLECTED_FROM
            | REALM
            | NONCE
            | PASSWORD_ALGORITHM
            | USERHASH
            | PRIORITY
            | USE_CANDIDATE
    )
}

/// What an address attribute is XORed with: nothing for the plain ones; for
/// XOR-MAPPED-ADDRESS the cookie (port: its top half) and, for IPv6, the transaction id,
/// so that NATs rewriting addresses they recognise in payloads leave it alone.
#[derive(Clone, Copy)]
struct Mask {
    port: u16,
    v4: u32,
    v6: u128,
}

impl Mask {
    const NONE: Mask = Mask { port: 0, v4: 0, v6: 0 };

    fn xor(id: &TransactionId) -> Mask {
        let mut pad = [0u8; 16];
        let (cookie, rest) = pad.split_at_mut(4);
        cookie.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        rest.copy_from_slice(id);
        Mask { port: (MAGIC_COOKIE >> 16) as u16, v4: MAGIC_COOKIE, v6: u128::from_be_bytes(pad) }
    }
}

/// The value of a (XOR-)MAPPED-ADDRESS-style attribute. The reserved first byte is
/// ignored, as RFC 8489 says.
fn parse_address(value: &[u8], mask: Mask) -> Option<SocketAddr> {
    let [_, family, p0, p1, ip @ ..] = value else {
        return None;
    };
    let ip = match (*family, ip.len()) {
        (0x01, 4) => IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes(ip.try_into().ok()?) ^ mask.v4)),
        (0x02, 16) => IpAddr::V6(Ipv6Addr::from(u128::from_be_bytes(ip.try_into().ok()?) ^ mask.v6)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_be_bytes([*p0, *p1]) ^ mask.port))
}

fn address_value_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn put_attr_header(out: &mut Vec<u8>, kind: u16, len: usize) {
    out.extend_from_slice(&kind.to_be_bytes());
    // Every caller bounds `len` well below 64 KiB (see MAX_TEXT, MAX_PADDING).
    out.extend_from_slice(&(len as u16).to_be_bytes());
}

fn put_address(out: &mut Vec<u8>, kind: u16, addr: &SocketAddr, mask: Mask) {
    put_attr_header(out, kind, address_value_len(addr));
    let family = match addr {
        SocketAddr::V4(_) => 0x01,
        SocketAddr::V6(_) => 0x02,
    };
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&(addr.port() ^ mask.port).to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&(u32::from(ip) ^ mask.v4).to_be_bytes()),
        IpAddr::V6(ip) => out.extend_from_slice(&(u128::from(ip) ^ mask.v6).to_be_bytes()),
    }
}

fn put_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(out.len() + padded(bytes.len()) - bytes.len(), 0);
}

/// Cuts a text to [`MAX_TEXT`] bytes on a character boundary.
fn clip_text(text: &str) -> &str {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

fn text(value: &[u8]) -> String {
    // SOFTWARE and reason phrases are informative only: a stray byte is no reason to drop.
    String::from_utf8_lossy(value).into_owned()
}

/// Stores the first occurrence only: RFC 8489 says later duplicates may be ignored.
fn first<T>(slot: &mut Option<T>, kind: u16, parse: impl FnOnce() -> Option<T>) -> Result<(), StunError> {
    if slot.is_none() {
        *slot = Some(parse().ok_or(StunError::MalformedAttribute(kind))?);
    }
    Ok(())
}

impl Message {
    /// A message of any class and method with no attributes and no FINGERPRINT.
    pub fn new(class: Class, method: u16, transaction_id: TransactionId) -> Self {
        Message {
            class,
            method,
            transaction_id,
            xor_mapped_address: None,
            mapped_address: None,
            change_request: None,
            response_origin: None,
            other_address: None,
            response_port: None,
            padding: 0,
            software: None,
            error_code: None,
            fingerprint: false,
        }
    }

    /// A plain Binding request. FINGERPRINT is on so the request is recognisable as STUN
    /// on a port shared with other protocols.
    pub fn binding_request(transaction_id: TransactionId) -> Self {
        Message { fingerprint: true, ..Message::new(Class::Request, BINDING, transaction_id) }
    }

    /// The answer to a Binding request: where the request appeared to come from.
    pub fn binding_success(transaction_id: TransactionId, xor_mapped: SocketAddr) -> Self {
        Message {
            xor_mapped_address: Some(xor_mapped),
            fingerprint: true,
            ..Message::new(Class::SuccessResponse, BINDING, transaction_id)
        }
    }

    /// A Binding error response, e.g. 400 Bad Request.
    pub fn binding_error(transaction_id: TransactionId, code: u16, reason: &str) -> Self {
        Message {
            error_code: Some((code, reason.to_owned())),
            fingerprint: true,
            ..Message::new(Class::ErrorResponse, BINDING, transaction_id)
        }
    }

    /// Decodes and validates one datagram. FINGERPRINT, if present, must be last and
    /// correct; attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored;
    /// unknown comprehension-required attributes reject the message, since RFC 8489 has
    /// requests answered with 420 and responses and indications discarded.
    pub fn decode(datagram: &[u8]) -> Result<Message, StunError> {
        use attr::*;
        let header = parse_header(datagram)?;
        let id = header.transaction_id;
        let mut msg = Message::new(Class::from_type(header.message_type), method_of(header.message_type), id);
        let (mut source_address, mut changed_address) = (None, None);
        let (mut padding, mut integrity_seen) = (None, false);
        for raw in Attributes::new(datagram) {
            let RawAttr { kind, offset, value } = raw?;
            if msg.fingerprint {
                return Err(StunError::FingerprintNotLast);
            }
            if kind == FINGERPRINT {
                let crc = crc32fast::hash(datagram.get(..offset).unwrap_or_default());
                let expected = (crc ^ FINGERPRINT_XOR).to_be_bytes();
                match value {
                    [_, _, _, _] if value == expected => msg.fingerprint = true,
                    [_, _, _, _] => return Err(StunError::BadFingerprint),
                    _ => return Err(StunError::MalformedAttribute(kind)),
                }
                continue;
            }
            if integrity_seen {
                continue;
            }
            match kind {
                XOR_MAPPED_ADDRESS => {
                    first(&mut msg.xor_mapped_address, kind, || parse_address(value, Mask::xor(&id)))?
                }
                MAPPED_ADDRESS => first(&mut msg.mapped_address, kind, || parse_address(value, Mask::NONE))?,
                RESPONSE_ORIGIN => first(&mut msg.response_origin, kind, || parse_address(value, Mask::NONE))?,
                OTHER_ADDRESS => first(&mut msg.other_address, kind, || parse_address(value, Mask::NONE))?,
                SOURCE_ADDRESS => first(&mut source_address, kind, || parse_address(value, Mask::NONE))?,
                CHANGED_ADDRESS => first(&mut changed_address, kind, || parse_address(value, Mask::NONE))?,
                CHANGE_REQUEST => first(&mut msg.change_request, kind, || match value {
                    [_, _, _, flags] => {
                        Some(ChangeRequest { change_ip: flags & 0x04 != 0, change_port: flags & 0x02 != 0 })
                    }
                    _ => None,
                })?,
                // RFC 5780 gives it 2 bytes of padding; accept senders that leave it off.
                RESPONSE_PORT => first(&mut msg.response_port, kind, || match value {
                    [p0, p1] | [p0, p1, _, _] => Some(u16::from_be_bytes([*p0, *p1])),
                    _ => None,
                })?,
                PADDING => first(&mut padding, kind, || Some(value.len()))?,
                SOFTWARE => first(&mut msg.software, kind, || Some(text(value)))?,
                ERROR_CODE => first(&mut msg.error_code, kind, || match value {
                    [_, _, class, number, reason @ ..] if *number < 100 => {
                        Some((u16::from(class & 0x07) * 100 + u16::from(*number), text(reason)))
                    }
                    _ => None,
                })?,
                MESSAGE_INTEGRITY | MESSAGE_INTEGRITY_SHA256 => integrity_seen = true,
                _ if kind >= 0x8000 || ignored_known(kind) => {}
                _ => return Err(StunError::UnknownComprehensionRequired(kind)),
            }
        }
        msg.response_origin = msg.response_origin.or(source_address);
        msg.other_address = msg.other_address.or(changed_address);
        msg.padding = padding.unwrap_or(0);
        Ok(msg)
    }

    fn padding_len(&self) -> usize {
        self.padding.min(MAX_PADDING)
    }

    /// Exact length of [`Message::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        let addresses = [&self.xor_mapped_address, &self.mapped_address, &self.response_origin, &self.other_address];
        let mut len = HEADER_LEN;
        len += addresses.iter().flat_map(|a| a.as_ref()).map(|a| 4 + address_value_len(a)).sum::<usize>();
        len += self.change_request.map_or(0, |_| 8);
        len += self.response_port.map_or(0, |_| 8);
        len += self.error_code.as_ref().map_or(0, |(_, reason)| 4 + padded(4 + clip_text(reason).len()));
        len += self.software.as_ref().map_or(0, |s| 4 + padded(clip_text(s).len()));
        len += match self.padding_len() {
            0 => 0,
            n => 4 + padded(n),
        };
        len += if self.fingerprint { 8 } else { 0 };
        len
    }

    /// Encodes the message; texts longer than [`MAX_TEXT`] and padding beyond
    /// [`MAX_PADDING`] are cut so the result is always a valid STUN message.
    pub fn encode(&self) -> Vec<u8> {
        use attr::*;
        let len = self.encoded_len();
        let id = &self.transaction_id;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&message_type(self.class, self.method).to_be_bytes());
        // The length already counts FINGERPRINT, which its CRC must cover (RFC 8489 §14.7).
        out.extend_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(id);
        if let Some(a) = &self.xor_mapped_address {
            put_address(&mut out, XOR_MAPPED_ADDRESS, a, Mask::xor(id));
        }
        if let Some(a) = &self.mapped_address {
            put_address(&mut out, MAPPED_ADDRESS, a, Mask::NONE);
        }
        if let Some(a) = &self.response_origin {
            put_address(&mut out, RESPONSE_ORIGIN, a, Mask::NONE);
        }
        if let Some(a) = &self.other_address {
            put_address(&mut out, OTHER_ADDRESS, a, Mask::NONE);
        }
        if let Some(change) = self.change_request {
            put_attr_header(&mut out, CHANGE_REQUEST, 4);
            let flags = u8::from(change.change_ip) << 2 | u8::from(change.change_port) << 1;
            out.extend_from_slice(&[0, 0, 0, flags]);
        }
        if let Some(port) = self.response_port {
            put_attr_header(&mut out, RESPONSE_PORT, 4);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        if let Some((code, reason)) = &self.error_code {
            let reason = clip_text(reason);
            put_attr_header(&mut out, ERROR_CODE, 4 + reason.len());
            out.extend_from_slice(&[0, 0, ((code / 100) & 0x07) as u8, (code % 100) as u8]);
            put_padded(&mut out, reason.as_bytes());
        }
        if let Some(software) = &self.software {
            let software = clip_text(software);
            put_attr_header(&mut out, SOFTWARE, software.len());
            put_padded(&mut out, software.as_bytes());
        }
        let padding = self.padding_len();
        if padding > 0 {
            put_attr_header(&mut out, PADDING, padding);
            out.resize(out.len() + padded(padding), 0);
        }
        if self.fingerprint {
            let crc = crc32fast::hash(&out) ^ FINGERPRINT_XOR;
            put_attr_header(&mut out, FINGERPRINT, 4);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        debug_assert_eq!(out.len(), len);
        out
    }
}

/// Cheap test for "STUN Binding request": type, cookie and length only, no attribute walk.
/// Lets a socket loop pick out requests before paying for a full decode.
pub fn is_binding_request(datagram: &[u8]) -> bool {
    match datagram {
        [0x00, 0x01, l0, l1, 0x21, 0x12, 0xA4, 0x42, ..] => {
            let length = usize::from(u16::from_be_bytes([*l0, *l1]));
            length % 4 == 0 && HEADER_LEN + length == datagram.len()
        }
        _ => false,
    }
}

/// The transaction id of anything with a valid STUN header, without decoding attributes:
/// enough to route a response to the transaction waiting for it.
pub fn transaction_id(datagram: &[u8]) -> Option<TransactionId> {
    parse_header(datagram).ok().map(|h| h.transaction_id)
}

/// Checks MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) against `key`: the password for
/// short-term credentials, MD5(username ":" realm ":" password) for long-term ones.
/// `Ok(false)` means present but wrong; a message without it is an error.
pub fn verify_message_integrity(datagram: &[u8], key: &[u8]) -> Result<bool, StunError> {
    use hmac::{Hmac, Mac};
    parse_header(datagram)?;
    for raw in Attributes::new(datagram) {
        let RawAttr { kind, offset, value } = raw?;
        if kind != attr::MESSAGE_INTEGRITY {
            continue;
        }
        if value.len() != 20 {
            return Err(StunError::MalformedAttribute(kind));
        }
        // The HMAC covers the message up to the attribute, with the header length
        // rewritten to end right after it.
        let length = ((offset + 24 - HEADER_LEN) as u16).to_be_bytes();
        let (Some(message_type), Some(rest)) = (datagram.get(..2), datagram.get(4..offset)) else {
            return Err(StunError::Truncated);
        };
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).map_err(|_| StunError::MalformedAttribute(kind))?;
        mac.update(message_type);
        mac.update(&length);
        mac.update(rest);
        return Ok(mac.verify_slice(value).is_ok());
    }
    Err(StunError::MissingAttribute(attr::MESSAGE_INTEGRITY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_interleaves_class_bits() {
        assert_eq!(message_type(Class::Request, BINDING), 0x0001);
        assert_eq!(message_type(Class::SuccessResponse, BINDING), 0x0101);
        assert_eq!(message_type(Class::ErrorResponse, BINDING), 0x0111);
        assert_eq!(message_type(Class::Indication, BINDING), 0x0011);
        for method in [0u16, 1, 0x0F, 0x10, 0x7F, 0x80, 0xFFF] {
            for class in [Class::Request, Class::Indication, Class::SuccessResponse, Class::ErrorResponse] {
                let t = message_type(class, method);
                assert_eq!((Class::from_type(t), method_of(t)), (class, method));
                assert_eq!(t & 0xC000, 0);
            }
        }
    }

    #[test]
    fn clip_text_respects_char_boundaries() {
        let long = "é".repeat(500);
        let clipped = clip_text(&long);
        assert!(clipped.len() <= MAX_TEXT && clipped.len() == 762);
    }
}
