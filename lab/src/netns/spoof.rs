//! Datagrams with forged source addresses, for the tests that hold a node to what spoofed
//! traffic may make it do (the amplification table, the floods). A raw socket in an
//! attacker's namespace writes whole IPv4 packets: nothing in the lab checks sources, as
//! nothing on the internet does.

use super::Host;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A raw IPv4 socket (IP_HDRINCL) in the attacker's namespace: it sends datagrams with
/// whatever source address it is given. Every packet carries `dscp`, so the target's
/// namespace can count forged arrivals with nftables (`ip dscp …`) apart from real traffic.
pub struct Spoofer {
    fd: OwnedFd,
    dscp: u8,
}

impl Spoofer {
    pub fn new(host: &Host, dscp: u8) -> Spoofer {
        assert!(dscp < 64, "a DSCP has six bits");
        let fd = host.in_netns(|| {
            // SAFETY: plain socket(2); the descriptor is owned right below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            assert!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
            // SAFETY: fd is a fresh descriptor nobody else owns.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        Spoofer { fd, dscp }
    }

    /// Sends one datagram from `src` to `dst`; panics if the kernel refuses it.
    pub fn send(&self, src: SocketAddrV4, dst: SocketAddrV4, id: u16, payload: &[u8]) {
        let packet = self.packet(src, dst, id, payload);
        self.send_packet(&packet).unwrap_or_else(|e| panic!("raw send {src} -> {dst}: {e}"));
    }

    /// The IPv4 packet carrying one UDP datagram from `src` to `dst` (IP id `id`): built
    /// once, it can be sent many times ([`Spoofer::send_packet`]), as a flood does.
    pub fn packet(&self, src: SocketAddrV4, dst: SocketAddrV4, id: u16, payload: &[u8]) -> Vec<u8> {
        ipv4_udp(src, dst, id, self.dscp, payload)
    }

    /// Sends a packet made by [`Spoofer::packet`] to its destination. A flood sees the
    /// kernel's refusals (a full queue: `ENOBUFS`) and counts them.
    pub fn send_packet(&self, packet: &[u8]) -> io::Result<()> {
        let dst: [u8; 4] = packet[16..20].try_into().expect("an IPv4 header");
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_be_bytes(dst).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        match sent {
            n if n == packet.len() as isize => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            n => Err(io::Error::other(format!("sent {n} of {} bytes", packet.len()))),
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying one UDP datagram from `src` to `dst`, marked with `dscp`.
fn ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, id: u16, dscp: u8, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("a datagram fits");
    let mut udp = Vec::with_capacity(udp_len.into());
    for field in [src.port(), dst.port(), udp_len, 0] {
        udp.extend_from_slice(&field.to_be_bytes());
    }
    udp.extend_from_slice(payload);
    let mut pseudo = [&src.ip().octets()[..], &dst.ip().octets()[..], &[0, libc::IPPROTO_UDP as u8]].concat();
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let sum = match checksum(&pseudo) {
        0 => 0xffff,
        sum => sum,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());

    let mut ip = vec![0x45, dscp << 2];
    ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 64, libc::IPPROTO_UDP as u8, 0, 0]);
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&udp);
    ip
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The checksums are what a receiving kernel checks: summed over with their own field,
    /// each comes out as zero (RFC 1071's test).
    #[test]
    fn headers_check_out() {
        let (src, dst) = (
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 5000),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 3478),
        );
        let packet = ipv4_udp(src, dst, 7, 0x15, b"hello, odd length");
        assert_eq!(checksum(&packet[..20]), 0, "IPv4 header checksum");
        assert_eq!(packet[1] >> 2, 0x15, "DSCP");
        let udp = &packet[20..];
        let mut pseudo = [&packet[12..20], &[0, libc::IPPROTO_UDP as u8], &udp[4..6]].concat();
        pseudo.extend_from_slice(udp);
        assert_eq!(checksum(&pseudo), 0, "UDP checksum over the pseudo-header");
        assert_eq!(&udp[8..], b"hello, odd length");
    }
}
