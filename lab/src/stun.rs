//! A minimal STUN client (RFC 8489 Binding), for tests that want to see a mapping without
//! depending on the codec under test.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Sends one Binding request to `server` and waits up to `timeout` for its answer;
/// returns the XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS). Other datagrams are skipped.
pub fn stun_binding(sock: &UdpSocket, server: SocketAddr, timeout: Duration) -> Option<SocketAddrV4> {
    const MAGIC: u32 = 0x2112_A442;
    let mut txid = [0u8; 12];
    txid[..8].copy_from_slice(&rand_u64().to_be_bytes());
    txid[8..].copy_from_slice(&rand_u64().to_be_bytes()[..4]);
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&0x0001u16.to_be_bytes());
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&MAGIC.to_be_bytes());
    req.extend_from_slice(&txid);
    sock.send_to(&req, server).ok()?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        let (n, _) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => return None,
        };
        let m = &buf[..n];
        if n < 20 || m[0..2] != [0x01, 0x01] || m[8..20] != txid {
            continue;
        }
        let mut i = 20;
        let mut plain = None;
        while i + 4 <= n {
            let ty = u16::from_be_bytes([m[i], m[i + 1]]);
            let len = u16::from_be_bytes([m[i + 2], m[i + 3]]) as usize;
            let v = m.get(i + 4..i + 4 + len)?;
            if (ty == 0x0020 || ty == 0x0001) && len >= 8 && v[1] == 0x01 {
                let mut port = u16::from_be_bytes([v[2], v[3]]);
                let mut ip = [v[4], v[5], v[6], v[7]];
                if ty == 0x0020 {
                    port ^= (MAGIC >> 16) as u16;
                    for (b, k) in ip.iter_mut().zip(MAGIC.to_be_bytes()) {
                        *b ^= k;
                    }
                    return Some(SocketAddrV4::new(ip.into(), port));
                }
                plain = Some(SocketAddrV4::new(ip.into(), port));
            }
            i += 4 + len.div_ceil(4) * 4;
        }
        return plain;
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}
