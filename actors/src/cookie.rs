//! Stateless proof that a sender receives at its source address.
//!
//! A first request from an address earns only a cookie — a keyed hash of the address, the
//! claimed PeerId and the time period — in a reply smaller than the request. Only a request
//! that echoes it is acted on, so nobody can make a node send registrations, relayed data
//! or introductions to an address that did not ask (QUIC's Retry token, in short).

use introducer_proto::pb;
use libp2p_identity::PeerId;
use prost::Message;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct Cookies {
    /// Keeps one service's cookies from being valid at another on the same node.
    domain: &'static [u8],
    key: [u8; 32],
    epoch: Instant,
    period: Duration,
}

impl Cookies {
    /// Cookies rotate every `period`; one from the previous period is still accepted.
    pub fn new(domain: &'static [u8], rng: &mut impl RngCore, now: Instant, period: Duration) -> Self {
        let mut key = [0; 32];
        rng.fill_bytes(&mut key);
        Cookies { domain, key, epoch: now, period: period.max(Duration::from_secs(1)) }
    }

    fn period(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / self.period.as_secs()
    }

    fn at(&self, period: u64, src: SocketAddr, peer: &PeerId) -> u64 {
        let digest = Sha256::new()
            .chain_update(self.domain)
            .chain_update(self.key)
            .chain_update(src.to_string())
            .chain_update(peer.to_bytes())
            .chain_update(period.to_le_bytes())
            .finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
    }

    /// The cookie to send `src`, claiming to be `peer`, now.
    pub fn mint(&self, now: Instant, src: SocketAddr, peer: &PeerId) -> u64 {
        self.at(self.period(now), src, peer)
    }

    /// Whether `cookie` proves that `src` (as `peer`) received one of ours lately.
    pub fn check(&self, now: Instant, src: SocketAddr, peer: &PeerId, cookie: u64) -> bool {
        let period = self.period(now);
        cookie != 0 && [period, period.wrapping_sub(1)].iter().any(|&p| cookie == self.at(p, src, peer))
    }
}

/// The MAC a peer that registered with `cookie` puts on its introduction requests.
pub fn request_mac(cookie: u64, request: &pb::IntroduceRequest) -> u64 {
    mac(b"introducer/introduce-request", cookie, &pb::IntroduceRequest { mac: 0, ..request.clone() })
}

/// The MAC a peer that registered with `cookie` puts on its topic requests.
pub fn topic_mac(cookie: u64, request: &pb::TopicRequest) -> u64 {
    mac(b"introducer/topic-request", cookie, &pb::TopicRequest { mac: 0, ..request.clone() })
}

/// The MAC an introducer puts on an introduction for a peer that registered with `cookie`.
pub fn introduction_mac(cookie: u64, introduction: &pb::Introduction) -> u64 {
    mac(b"introducer/introduction", cookie, &pb::Introduction { mac: 0, ..introduction.clone() })
}

/// A message's MAC keyed by a registration cookie (which only the peer and its introducer
/// know), over the message with its own MAC field zeroed.
fn mac(domain: &[u8], cookie: u64, unsigned: &impl Message) -> u64 {
    let digest = Sha256::new()
        .chain_update(domain)
        .chain_update(cookie.to_le_bytes())
        .chain_update(unsigned.encode_to_vec())
        .finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn a_cookie_is_bound_to_address_peer_domain_and_time() {
        let now = Instant::now();
        let period = Duration::from_secs(60);
        let cookies = Cookies::new(b"test", &mut StdRng::seed_from_u64(1), now, period);
        let (src, other): (SocketAddr, SocketAddr) =
            ("203.0.113.5:1".parse().unwrap(), "203.0.113.6:1".parse().unwrap());
        let (peer, mallory) = (Identity::from_seed(1).peer_id(), Identity::from_seed(2).peer_id());
        let cookie = cookies.mint(now, src, &peer);
        assert!(cookies.check(now, src, &peer, cookie));
        assert!(cookies.check(now + period, src, &peer, cookie), "the previous period still counts");
        assert!(!cookies.check(now + 2 * period, src, &peer, cookie), "then it expires");
        assert!(!cookies.check(now, other, &peer, cookie));
        assert!(!cookies.check(now, src, &mallory, cookie));
        assert!(!cookies.check(now, src, &peer, 0));
        let elsewhere = Cookies::new(b"other", &mut StdRng::seed_from_u64(1), now, period);
        assert!(!elsewhere.check(now, src, &peer, cookie));
    }
}
