//! A minimal STUN client (RFC 8489 Binding, RFC 5780 CHANGE-REQUEST), for tests that want
//! to see a mapping or a server's answering socket without depending on the codec under
//! test.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MAGIC: u32 = 0x2112_A442;

/// What a STUN server answered to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunAnswer {
    /// Where the answer came from: which of the server's sockets answered.
    pub from: SocketAddr,
    /// A success's XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS); `None` for an error.
    pub mapped: Option<SocketAddrV4>,
    /// An error's code (420: the server cannot make the change asked for).
    pub error: Option<u16>,
    /// OTHER-ADDRESS, if the answer advertises one (RFC 5780).
    pub other: Option<SocketAddrV4>,
}

/// Sends one Binding request to `server` and waits up to `timeout` for its answer;
/// returns the XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS). Other datagrams are skipped.
pub fn stun_binding(sock: &UdpSocket, server: SocketAddr, timeout: Duration) -> Option<SocketAddrV4> {
    stun_request(sock, server, (false, false), timeout)?.mapped
}

/// Sends one Binding request to `server`, with a CHANGE-REQUEST attribute asking it to
/// answer from its other IP and/or port when `(change_ip, change_port)` has either set, and
/// waits up to `timeout` for the answer to it, from wherever it comes. Other datagrams
/// are skipped.
pub fn stun_request(
    sock: &UdpSocket,
    server: SocketAddr,
    (change_ip, change_port): (bool, bool),
    timeout: Duration,
) -> Option<StunAnswer> {
    let mut txid = [0u8; 12];
    txid[..8].copy_from_slice(&rand_u64().to_be_bytes());
    txid[8..].copy_from_slice(&rand_u64().to_be_bytes()[..4]);
    let change = change_ip || change_port;
    let mut req = Vec::with_capacity(28);
    req.extend_from_slice(&0x0001u16.to_be_bytes());
    req.extend_from_slice(&(if change { 8u16 } else { 0 }).to_be_bytes());
    req.extend_from_slice(&MAGIC.to_be_bytes());
    req.extend_from_slice(&txid);
    if change {
        let flags = (u32::from(change_ip) << 2) | (u32::from(change_port) << 1);
        req.extend_from_slice(&0x0003u16.to_be_bytes());
        req.extend_from_slice(&4u16.to_be_bytes());
        req.extend_from_slice(&flags.to_be_bytes());
    }
    sock.send_to(&req, server).ok()?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => return None,
        };
        let m = &buf[..n];
        let success = m.get(0..2) == Some(&[0x01, 0x01]);
        let error = m.get(0..2) == Some(&[0x01, 0x11]);
        if n < 20 || !(success || error) || m[8..20] != txid {
            continue;
        }
        let mut answer = StunAnswer { from, mapped: None, error: None, other: None };
        let mut plain = None;
        let mut i = 20;
        while i + 4 <= n {
            let ty = u16::from_be_bytes([m[i], m[i + 1]]);
            let len = u16::from_be_bytes([m[i + 2], m[i + 3]]) as usize;
            let v = m.get(i + 4..i + 4 + len)?;
            let addr = |xor: bool| {
                (len >= 8 && v[1] == 0x01).then(|| {
                    let mut port = u16::from_be_bytes([v[2], v[3]]);
                    let mut ip = [v[4], v[5], v[6], v[7]];
                    if xor {
                        port ^= (MAGIC >> 16) as u16;
                        for (b, k) in ip.iter_mut().zip(MAGIC.to_be_bytes()) {
                            *b ^= k;
                        }
                    }
                    SocketAddrV4::new(ip.into(), port)
                })
            };
            match ty {
                0x0020 if success => answer.mapped = addr(true),
                0x0001 if success => plain = addr(false),
                0x802C => answer.other = addr(false),
                0x0009 if error && len >= 4 => answer.error = Some(u16::from(v[2] & 7) * 100 + u16::from(v[3])),
                _ => {}
            }
            i += 4 + len.div_ceil(4) * 4;
        }
        answer.mapped = answer.mapped.or(plain);
        return Some(answer);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}
