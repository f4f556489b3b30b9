//! One-way link impairments: latency, jitter and loss.

use rand::rngs::StdRng;
use rand::Rng;
use std::time::Duration;

/// The impairments of one stretch of the virtual network, applied independently to every
/// datagram that crosses it: a fixed one-way `latency`, plus a uniform random extra delay
/// in `0..=jitter` (so datagrams can overtake each other), and a `loss` probability.
///
/// Where links apply (their delays add up and each rolls its own loss):
/// - the internet: every datagram that crosses it ([`Sim::set_internet_link`]);
/// - a NAT's inside network, between the NAT and its hosts or between two of its hosts
///   ([`Sim::set_lan_link`]);
/// - a host's own access link, on the way out and on the way in ([`Sim::set_host_link`]),
///   for making one host slow or lossy.
///
/// [`Sim::set_internet_link`]: super::Sim::set_internet_link
/// [`Sim::set_lan_link`]: super::Sim::set_lan_link
/// [`Sim::set_host_link`]: super::Sim::set_host_link
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub latency: Duration,
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a datagram is dropped on this link.
    pub loss: f64,
}

impl Link {
    /// No delay, no loss: what a host's own access link is unless set.
    pub const IDEAL: Link = Link::with_latency(Duration::ZERO);
    /// The internet between public hosts and NATs, unless set: 10 ms one way.
    pub const INTERNET_DEFAULT: Link = Link::with_latency(Duration::from_millis(10));
    /// A NAT's inside network, unless set: 1 ms one way.
    pub const LAN_DEFAULT: Link = Link::with_latency(Duration::from_millis(1));

    /// A link with this fixed one-way latency, no jitter and no loss.
    pub const fn with_latency(latency: Duration) -> Link {
        Link { latency, jitter: Duration::ZERO, loss: 0.0 }
    }

    pub const fn jitter(mut self, jitter: Duration) -> Link {
        self.jitter = jitter;
        self
    }

    pub fn loss(mut self, loss: f64) -> Link {
        assert!((0.0..=1.0).contains(&loss), "loss must be a probability, got {loss}");
        self.loss = loss;
        self
    }

    /// Rolls for loss. Draws from `rng` only when the link is lossy, so that making one
    /// link lossy doesn't reshuffle the randomness of an otherwise identical run more
    /// than necessary.
    pub(crate) fn drops(&self, rng: &mut StdRng) -> bool {
        self.loss > 0.0 && rng.gen::<f64>() < self.loss
    }

    /// This datagram's delay on the link. Draws from `rng` only when there is jitter.
    pub(crate) fn delay(&self, rng: &mut StdRng) -> Duration {
        if self.jitter.is_zero() {
            self.latency
        } else {
            let extra = rng.gen_range(0..=self.jitter.as_nanos().min(u64::MAX as u128) as u64);
            self.latency + Duration::from_nanos(extra)
        }
    }
}
