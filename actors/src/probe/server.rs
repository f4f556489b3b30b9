//! The STUN Binding responder every node runs (RFC 8489, plus RFC 5780 when the node listens
//! on two IPs × two ports).
//!
//! [`Responder::respond`] turns one received datagram into at most one [`Transmit`]: which
//! local socket answers (per CHANGE-REQUEST), to where, with which bytes. It is a pure
//! function of the [`Layout`] and its inputs.
//!
//! # What is answered
//!
//! - A Binding request gets a success response with XOR-MAPPED-ADDRESS and MAPPED-ADDRESS
//!   (the request's source; an IPv4-mapped IPv6 source is reported as IPv4),
//!   RESPONSE-ORIGIN (the address of the answering socket), OTHER-ADDRESS (only with two IPs
//!   and two ports: the address of the socket with the *other* IP and the *other* port than
//!   the one the request arrived on, RFC 5780 §6.1 Table 1) and FINGERPRINT. No SOFTWARE.
//! - CHANGE-REQUEST picks the answering socket: change IP flips the IP, change port flips the
//!   port, relative to the socket the request arrived on. If that socket does not exist,
//!   the answer is error 420 from the receiving socket. RFC 5780 §6.1 says a server without
//!   the full 2×2 layout answers 420 to *every* CHANGE-REQUEST; we deviate in two harmless
//!   ways: a CHANGE-REQUEST with no flag set (RFC 3489 clients send one in their test I) is
//!   answered normally, and with one IP and two ports a port-only change is honoured. No
//!   OTHER-ADDRESS is advertised then (RFC 5780 §7.4 allows it only with a second IP, and
//!   standard clients such as coturn's `turnutils_natdiscovery` would send their
//!   "alternate IP" mapping test to the primary address itself and call every NAT
//!   endpoint-independent), so RFC 5780 clients never ask; our own probe learns the
//!   alternate port from the node's ServerInfo.
//! - RESPONSE-PORT: the answer goes to the request's source IP at that port (same size
//!   bound). RESPONSE-PORT together with PADDING, or port 0, is answered with 400
//!   (RFC 5780 §6.1).
//! - Anything else (garbage, responses, indications, other methods, a request on a socket not
//!   in the layout, unknown comprehension-required attributes) gets `None`. RFC 8489 wants
//!   420 with UNKNOWN-ATTRIBUTES for the last case; the codec cannot encode that attribute,
//!   and silence is safer than a malformed error.
//!
//! # Amplification bound
//!
//! A response is never longer than `max(request length, base)`, where `base` is the answer
//! without PADDING: at most [`full_answer_len`]`(ipv6)` = **76 bytes for IPv4, 124 for
//! IPv6** (header 20, four address attributes of 12 or 24 bytes, FINGERPRINT 8). Error
//! answers are smaller (at most 20 + 8 + 20 + 8 = 56 bytes). In particular:
//! - a *padded* request at least as long as the full answer (which is what [`super::Probe`]
//!   sends) is answered with no more bytes than it had: the response's PADDING (RFC 5780 says
//!   include it, of the request's length if possible) is cut to fit the request's size;
//! - an unpadded request (e.g. 20 bytes from a plain STUN client, 28 from
//!   `turnutils_natdiscovery`-style clients with FINGERPRINT) is answered with the minimal
//!   RFC 5780 answer: at most 76/124 bytes, i.e. a factor ≤ 3.8 (IPv4) / 6.2 (IPv6) on a
//!   bare 20-byte header, and the same packet count.

use super::canonical;
use crate::{SocketId, Transmit};
use introducer_proto::stun::{self, ChangeRequest, Class, Message};
use std::net::{IpAddr, SocketAddr};

/// Where a node listens for STUN: up to two IPs × two ports, one socket each.
///
/// Index `[ip][port]`: `[0][0]` is the primary (ip0, port0), `[0][1]` the alternate port on
/// the primary IP, `[1][0]` and `[1][1]` the alternate IP. The addresses must be what clients
/// reach (the node's public addresses), not `0.0.0.0`: they are written into RESPONSE-ORIGIN
/// and OTHER-ADDRESS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    ips: [IpAddr; 2],
    ports: [u16; 2],
    sockets: [[Option<SocketId>; 2]; 2],
}

/// Why a [`Layout`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the alternate IP must differ from the primary one")]
    SameIp,
    #[error("the alternate port must differ from the primary one")]
    SamePort,
    #[error("a one-IP alternate must be on the primary IP")]
    DifferentIp,
    #[error("primary and alternate addresses must be of the same family")]
    FamilyMismatch,
    #[error("one socket cannot serve two addresses")]
    DuplicateSocket,
}

impl Layout {
    /// One socket: plain RFC 8489 Binding; CHANGE-REQUEST asking for a change gets 420.
    pub fn single(socket: SocketId, addr: SocketAddr) -> Self {
        Layout { ips: [addr.ip(); 2], ports: [addr.port(); 2], sockets: [[Some(socket), None], [None, None]] }
    }

    /// One IP, two ports: change-port is honoured, change-IP gets 420, no OTHER-ADDRESS
    /// (see the module docs). What a node with one listen address serves.
    pub fn two_ports(primary: (SocketId, SocketAddr), alternate: (SocketId, SocketAddr)) -> Result<Self, LayoutError> {
        let ((s0, a0), (s1, a1)) = (primary, alternate);
        if a0.ip() != a1.ip() {
            return Err(LayoutError::DifferentIp);
        }
        if a0.port() == a1.port() {
            return Err(LayoutError::SamePort);
        }
        if s0 == s1 {
            return Err(LayoutError::DuplicateSocket);
        }
        Ok(Layout { ips: [a0.ip(); 2], ports: [a0.port(), a1.port()], sockets: [[Some(s0), Some(s1)], [None, None]] })
    }

    /// The full RFC 5780 layout: `primary` = (ip0, port0), `alternate` = (ip1, port1), and
    /// `sockets` bound to (ip0,port0), (ip0,port1), (ip1,port0), (ip1,port1) in that order.
    pub fn rfc5780(primary: SocketAddr, alternate: SocketAddr, sockets: [SocketId; 4]) -> Result<Self, LayoutError> {
        if primary.is_ipv4() != alternate.is_ipv4() {
            return Err(LayoutError::FamilyMismatch);
        }
        if primary.ip() == alternate.ip() {
            return Err(LayoutError::SameIp);
        }
        if primary.port() == alternate.port() {
            return Err(LayoutError::SamePort);
        }
        for (i, s) in sockets.iter().enumerate() {
            if sockets.iter().skip(i + 1).any(|t| t == s) {
                return Err(LayoutError::DuplicateSocket);
            }
        }
        let [s00, s01, s10, s11] = sockets;
        Ok(Layout {
            ips: [primary.ip(), alternate.ip()],
            ports: [primary.port(), alternate.port()],
            sockets: [[Some(s00), Some(s01)], [Some(s10), Some(s11)]],
        })
    }

    /// Every socket of the layout with the address it must be bound to (or reached at).
    pub fn sockets(&self) -> impl Iterator<Item = (SocketId, SocketAddr)> + '_ {
        (0..2).flat_map(move |i| (0..2).filter_map(move |p| Some((self.slot(i, p)?, self.addr_at(i, p)))))
    }

    /// The address served by `socket`, if it is part of the layout.
    pub fn addr(&self, socket: SocketId) -> Option<SocketAddr> {
        let (i, p) = self.position(socket)?;
        Some(self.addr_at(i, p))
    }

    /// Whether this layout is the full RFC 5780 one (two IPs × two ports).
    pub fn is_rfc5780(&self) -> bool {
        self.sockets.iter().flatten().all(Option::is_some)
    }

    /// OTHER-ADDRESS for a request that arrived on `socket`: the other IP and the other
    /// port, only in the full layout.
    pub fn other_address(&self, socket: SocketId) -> Option<SocketAddr> {
        let (i, p) = self.position(socket)?;
        if !self.is_rfc5780() {
            return None;
        }
        Some(self.addr_at(1 - i, 1 - p))
    }

    fn slot(&self, ip: usize, port: usize) -> Option<SocketId> {
        *self.sockets.get(ip)?.get(port)?
    }

    fn addr_at(&self, ip: usize, port: usize) -> SocketAddr {
        SocketAddr::new(self.ips[ip & 1], self.ports[port & 1])
    }

    fn position(&self, socket: SocketId) -> Option<(usize, usize)> {
        (0..2).flat_map(|i| (0..2).map(move |p| (i, p))).find(|&(i, p)| self.slot(i, p) == Some(socket))
    }
}

/// Length of the biggest success answer a [`Responder`] sends to an unpadded request:
/// XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS and FINGERPRINT, all
/// of one family. 76 bytes for IPv4, 124 for IPv6. [`super::Probe`] pads its requests to
/// this size.
pub fn full_answer_len(ipv6: bool) -> usize {
    let addr: SocketAddr =
        if ipv6 { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv4Addr::UNSPECIFIED, 0).into() };
    Message {
        mapped_address: Some(addr),
        response_origin: Some(addr),
        other_address: Some(addr),
        ..Message::binding_success([0; 12], addr)
    }
    .encoded_len()
}

/// The bound [`Responder::respond`] keeps: no response to a request of `request_len` bytes
/// is longer than this.
pub fn response_bound(request_len: usize, ipv6: bool) -> usize {
    request_len.max(full_answer_len(ipv6))
}

/// Answers STUN Binding requests for one [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responder {
    layout: Layout,
}

impl Responder {
    pub fn new(layout: Layout) -> Self {
        Responder { layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The answer to `datagram`, received on `socket` from `src`, or `None` if it is not a
    /// Binding request this responder should answer (see the module docs).
    pub fn respond(&self, socket: SocketId, src: SocketAddr, datagram: &[u8]) -> Option<Transmit> {
        if !stun::is_binding_request(datagram) {
            return None;
        }
        let request = Message::decode(datagram).ok()?;
        if request.class != Class::Request || request.method != stun::BINDING {
            return None;
        }
        let (ip, port) = self.layout.position(socket)?;
        let tid = request.transaction_id;
        let error = |code: u16, reason: &str| Transmit {
            socket,
            dst: src,
            payload: Message::binding_error(tid, code, reason).encode(),
        };

        if request.response_port.is_some() && request.padding > 0 {
            return Some(error(400, "Bad Request"));
        }
        let dst = match request.response_port {
            Some(0) => return Some(error(400, "Bad Request")),
            Some(p) => SocketAddr::new(src.ip(), p),
            None => src,
        };
        let ChangeRequest { change_ip, change_port } = request.change_request.unwrap_or_default();
        let (to_ip, to_port) = (ip ^ usize::from(change_ip), port ^ usize::from(change_port));
        let Some(from) = self.layout.slot(to_ip, to_port) else {
            return Some(error(420, "Unknown Attribute"));
        };

        let observed = canonical(src);
        // Only addresses of the client's family: an IPv4 client (IPv4-mapped on a dual-stack
        // IPv6 socket) cannot use the server's IPv6 addresses, and they would swell the
        // answer past the IPv4 bound (100 bytes for a 20-byte request, not 76).
        let same_family = |a: &SocketAddr| a.is_ipv4() == observed.is_ipv4();
        let mut response = Message {
            mapped_address: Some(observed),
            response_origin: Some(self.layout.addr_at(to_ip, to_port)).filter(same_family),
            other_address: self.layout.other_address(socket).filter(same_family),
            ..Message::binding_success(tid, observed)
        };
        if request.padding > 0 {
            // RFC 5780: echo PADDING, of the request's length where possible — here, as much
            // as keeps the answer within the request's size (a value is a multiple of 4).
            let room = datagram.len().saturating_sub(response.encoded_len() + 4) & !3;
            response.padding = room.min(request.padding.next_multiple_of(4));
        }
        Some(Transmit { socket: from, dst, payload: response.encode() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S00: SocketId = SocketId(0);
    const S01: SocketId = SocketId(1);
    const S10: SocketId = SocketId(2);
    const S11: SocketId = SocketId(3);

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn full() -> Responder {
        Responder::new(Layout::rfc5780(a("198.51.100.1:3478"), a("198.51.100.2:3479"), [S00, S01, S10, S11]).unwrap())
    }

    fn request(tid: u8, change: Option<(bool, bool)>, padding: usize) -> Vec<u8> {
        Message {
            change_request: change.map(|(change_ip, change_port)| ChangeRequest { change_ip, change_port }),
            padding,
            ..Message::binding_request([tid; 12])
        }
        .encode()
    }

    fn decode(t: &Transmit) -> Message {
        Message::decode(&t.payload).unwrap()
    }

    const CLIENT: &str = "203.0.113.7:40000";

    #[test]
    fn change_request_picks_the_answering_socket() {
        let r = full();
        let cases = [
            (None, S00, "198.51.100.1:3478"),
            (Some((false, false)), S00, "198.51.100.1:3478"),
            (Some((false, true)), S01, "198.51.100.1:3479"),
            (Some((true, false)), S10, "198.51.100.2:3478"),
            (Some((true, true)), S11, "198.51.100.2:3479"),
        ];
        for (change, socket, origin) in cases {
            let t = r.respond(S00, a(CLIENT), &request(1, change, 0)).unwrap();
            assert_eq!(t.socket, socket, "{change:?}");
            assert_eq!(t.dst, a(CLIENT));
            let m = decode(&t);
            assert_eq!(m.class, Class::SuccessResponse);
            assert_eq!(m.transaction_id, [1; 12]);
            assert_eq!(m.xor_mapped_address, Some(a(CLIENT)));
            assert_eq!(m.mapped_address, Some(a(CLIENT)));
            assert_eq!(m.response_origin, Some(a(origin)), "{change:?}");
            assert_eq!(m.other_address, Some(a("198.51.100.2:3479")));
            assert!(m.fingerprint);
        }
    }

    #[test]
    fn change_is_relative_to_the_receiving_socket() {
        let r = full();
        // Arrived on (ip1, port0): change port answers from (ip1, port1), change IP from
        // (ip0, port0); OTHER-ADDRESS is (ip0, port1).
        let t = r.respond(S10, a(CLIENT), &request(2, Some((false, true)), 0)).unwrap();
        assert_eq!(t.socket, S11);
        assert_eq!(decode(&t).response_origin, Some(a("198.51.100.2:3479")));
        assert_eq!(decode(&t).other_address, Some(a("198.51.100.1:3479")));
        let t = r.respond(S10, a(CLIENT), &request(3, Some((true, false)), 0)).unwrap();
        assert_eq!(t.socket, S00);
        assert_eq!(decode(&t).response_origin, Some(a("198.51.100.1:3478")));
        let t = r.respond(S11, a(CLIENT), &request(4, Some((true, true)), 0)).unwrap();
        assert_eq!(t.socket, S00);
        assert_eq!(decode(&t).other_address, Some(a("198.51.100.1:3478")));
    }

    #[test]
    fn impossible_change_is_answered_420_from_the_receiving_socket() {
        let single = Responder::new(Layout::single(S00, a("198.51.100.1:3478")));
        let ports =
            Responder::new(Layout::two_ports((S00, a("198.51.100.1:3478")), (S01, a("198.51.100.1:3479"))).unwrap());
        for (r, change) in [
            (&single, (false, true)),
            (&single, (true, false)),
            (&single, (true, true)),
            (&ports, (true, false)),
            (&ports, (true, true)),
        ] {
            let t = r.respond(S00, a(CLIENT), &request(5, Some(change), 0)).unwrap();
            assert_eq!((t.socket, t.dst), (S00, a(CLIENT)));
            let m = decode(&t);
            assert_eq!(m.class, Class::ErrorResponse);
            assert_eq!(m.error_code.as_ref().map(|e| e.0), Some(420));
            assert_eq!(m.transaction_id, [5; 12]);
        }
        // One IP, two ports: port changes work, and no OTHER-ADDRESS is advertised.
        let t = ports.respond(S00, a(CLIENT), &request(6, Some((false, true)), 0)).unwrap();
        assert_eq!(t.socket, S01);
        let m = decode(&t);
        assert_eq!(m.response_origin, Some(a("198.51.100.1:3479")));
        assert_eq!(m.other_address, None);
        // Arrived on the alternate port: a port change answers from the primary one.
        let t = ports.respond(S01, a(CLIENT), &request(14, Some((false, true)), 0)).unwrap();
        assert_eq!((t.socket, decode(&t).response_origin), (S00, Some(a("198.51.100.1:3478"))));
        let t = ports.respond(S01, a(CLIENT), &request(15, None, 0)).unwrap();
        assert_eq!((t.socket, decode(&t).response_origin), (S01, Some(a("198.51.100.1:3479"))));
        assert_eq!(decode(&t).other_address, None);
        // A no-op CHANGE-REQUEST is answered even by a single socket.
        let t = single.respond(S00, a(CLIENT), &request(7, Some((false, false)), 0)).unwrap();
        assert_eq!(decode(&t).class, Class::SuccessResponse);
        assert_eq!(decode(&t).other_address, None);
    }

    #[test]
    fn padded_requests_are_never_outgrown() {
        for (server, client) in [
            (full(), a(CLIENT)),
            (
                Responder::new(
                    Layout::rfc5780(a("[2001:db8::1]:3478"), a("[2001:db8::2]:3479"), [S00, S01, S10, S11]).unwrap(),
                ),
                a("[2001:db8:9::7]:40000"),
            ),
        ] {
            let v6 = client.is_ipv6();
            for padding in (4..400).step_by(4).chain([1, 2, 3, 5, 7, 13, 1000]) {
                for change in [None, Some((true, true)), Some((false, true))] {
                    let req = request(8, change, padding);
                    let t = server.respond(S00, client, &req).unwrap();
                    assert!(t.payload.len() <= response_bound(req.len(), v6));
                    if req.len() >= full_answer_len(v6) {
                        assert!(t.payload.len() <= req.len(), "{} > {}", t.payload.len(), req.len());
                    }
                    let m = decode(&t);
                    assert_eq!(m.xor_mapped_address, Some(client));
                    assert!(m.padding <= padding.next_multiple_of(4));
                }
            }
        }
    }

    #[test]
    fn unpadded_requests_get_at_most_the_minimal_answer() {
        assert_eq!(full_answer_len(false), 76);
        assert_eq!(full_answer_len(true), 124);
        let r = full();
        // A bare 20-byte header (no FINGERPRINT), as the smallest clients send.
        let bare = Message::new(Class::Request, stun::BINDING, [9; 12]).encode();
        assert_eq!(bare.len(), 20);
        let t = r.respond(S00, a(CLIENT), &bare).unwrap();
        assert_eq!(t.payload.len(), 76);
        assert_eq!(decode(&t).padding, 0);
        // Our own probe's request is padded to exactly the full answer: equal sizes.
        let probe_like = request(9, None, 76 - 20 - 8 - 4);
        assert_eq!(probe_like.len(), 76);
        assert_eq!(r.respond(S00, a(CLIENT), &probe_like).unwrap().payload.len(), 76);
    }

    #[test]
    fn response_port_is_honoured_but_not_with_padding() {
        let r = full();
        let req = Message { response_port: Some(5000), ..Message::binding_request([10; 12]) };
        let t = r.respond(S00, a(CLIENT), &req.encode()).unwrap();
        assert_eq!(t.dst, a("203.0.113.7:5000"));
        assert_eq!(decode(&t).xor_mapped_address, Some(a(CLIENT)));
        let padded = Message { padding: 64, ..req.clone() };
        let t = r.respond(S00, a(CLIENT), &padded.encode()).unwrap();
        assert_eq!(t.dst, a(CLIENT));
        assert_eq!(decode(&t).error_code.map(|e| e.0), Some(400));
        let zero = Message { response_port: Some(0), ..req };
        let t = r.respond(S00, a(CLIENT), &zero.encode()).unwrap();
        assert_eq!(decode(&t).error_code.map(|e| e.0), Some(400));
    }

    #[test]
    fn ipv4_mapped_sources_are_reported_as_ipv4() {
        let r = full();
        let t = r.respond(S00, a("[::ffff:203.0.113.7]:40000"), &request(11, None, 0)).unwrap();
        assert_eq!(t.dst, a("[::ffff:203.0.113.7]:40000"));
        assert_eq!(decode(&t).xor_mapped_address, Some(a(CLIENT)));
    }

    /// An IPv4 client of a dual-stack IPv6 server gets an IPv4-sized answer: the server's
    /// IPv6 addresses are of no use to it (the audit saw 100 bytes for 20).
    #[test]
    fn ipv4_mapped_clients_of_an_ipv6_server_get_no_more_than_the_ipv4_bound() {
        let layout = Layout::rfc5780(a("[2001:db8::1]:3478"), a("[2001:db8::2]:3479"), [S00, S01, S10, S11]).unwrap();
        let r = Responder::new(layout);
        let bare = request(13, None, 0);
        let t = r.respond(S00, a("[::ffff:203.0.113.7]:40000"), &bare).unwrap();
        assert!(t.payload.len() <= full_answer_len(false), "{} bytes for {}", t.payload.len(), bare.len());
        let m = decode(&t);
        assert_eq!((m.xor_mapped_address, m.other_address, m.response_origin), (Some(a(CLIENT)), None, None));
        // Native IPv6 clients still learn the other address.
        let t = r.respond(S00, a("[2001:db8:9::7]:40000"), &bare).unwrap();
        assert_eq!(decode(&t).other_address, Some(a("[2001:db8::2]:3479")));
    }

    #[test]
    fn non_requests_and_garbage_get_nothing() {
        let r = full();
        let ok = request(12, None, 0);
        let response = Message::binding_success([12; 12], a(CLIENT)).encode();
        let indication = Message::new(Class::Indication, stun::BINDING, [12; 12]).encode();
        let other_method = Message::new(Class::Request, 0x003, [12; 12]).encode();
        let mut bad_fingerprint = ok.clone();
        if let Some(last) = bad_fingerprint.last_mut() {
            *last ^= 1;
        }
        for junk in [
            &[][..],
            &[0u8; 3][..],
            &ok[..19],
            &response,
            &indication,
            &other_method,
            &bad_fingerprint,
            b"\x09hello introducer frame",
        ] {
            assert_eq!(r.respond(S00, a(CLIENT), junk), None, "{junk:?}");
        }
        // A socket outside the layout does not answer.
        assert_eq!(r.respond(SocketId(9), a(CLIENT), &ok), None);
    }

    #[test]
    fn layouts_are_validated() {
        let p = a("198.51.100.1:3478");
        assert_eq!(Layout::rfc5780(p, a("198.51.100.1:3479"), [S00, S01, S10, S11]), Err(LayoutError::SameIp));
        assert_eq!(Layout::rfc5780(p, a("198.51.100.2:3478"), [S00, S01, S10, S11]), Err(LayoutError::SamePort));
        assert_eq!(Layout::rfc5780(p, a("[2001:db8::1]:1"), [S00, S01, S10, S11]), Err(LayoutError::FamilyMismatch));
        assert_eq!(Layout::rfc5780(p, a("198.51.100.2:1"), [S00, S01, S10, S00]), Err(LayoutError::DuplicateSocket));
        assert_eq!(Layout::two_ports((S00, p), (S01, a("198.51.100.2:1"))), Err(LayoutError::DifferentIp));
        let layout = Layout::rfc5780(p, a("198.51.100.2:3479"), [S00, S01, S10, S11]).unwrap();
        let all: Vec<_> = layout.sockets().collect();
        assert_eq!(
            all,
            vec![(S00, p), (S01, a("198.51.100.1:3479")), (S10, a("198.51.100.2:3478")), (S11, a("198.51.100.2:3479")),]
        );
        assert_eq!(layout.addr(S10), Some(a("198.51.100.2:3478")));
        assert_eq!(layout.addr(SocketId(7)), None);
    }
}
