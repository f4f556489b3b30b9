//! Conversions between `std::net::SocketAddr` and the wire [`Addr`].

use crate::pb::Addr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        Addr { ip: ip.into(), port: addr.port().into() }
    }
}

/// A wire address that is not 4 or 16 bytes, or whose port does not fit 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed address on the wire")]
pub struct BadAddr;

impl TryFrom<&Addr> for SocketAddr {
    type Error = BadAddr;
    fn try_from(addr: &Addr) -> Result<Self, BadAddr> {
        let port = u16::try_from(addr.port).map_err(|_| BadAddr)?;
        let ip = if let Ok(v4) = <[u8; 4]>::try_from(&addr.ip[..]) {
            IpAddr::V4(Ipv4Addr::from(v4))
        } else if let Ok(v6) = <[u8; 16]>::try_from(&addr.ip[..]) {
            IpAddr::V6(Ipv6Addr::from(v6))
        } else {
            return Err(BadAddr);
        };
        Ok(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["198.51.100.7:3478", "[2001:db8::1]:9"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(SocketAddr::try_from(&Addr::from(a)), Ok(a));
        }
        assert_eq!(SocketAddr::try_from(&Addr { ip: vec![1, 2, 3].into(), port: 1 }), Err(BadAddr));
        assert_eq!(SocketAddr::try_from(&Addr { ip: vec![1, 2, 3, 4].into(), port: 70000 }), Err(BadAddr));
    }
}
