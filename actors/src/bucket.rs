//! Rate limits: one token bucket for every budget a machine keeps (answers per source,
//! relayed packets and bytes, introductions per peer).

use std::time::Instant;

/// Tokens accrue at `rate` per second up to `burst`; the bucket starts full. Time is
/// passed in, and an earlier `now` than seen before adds nothing (and is not remembered:
/// the same span is never credited twice).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn full(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket { rate, burst, tokens: burst, refilled: now }
    }

    /// The tokens there are at `now` (those accrued since the last call are added).
    pub fn available(&mut self, now: Instant) -> f64 {
        let accrued = now.saturating_duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + accrued).min(self.burst);
        self.refilled = self.refilled.max(now);
        self.tokens
    }

    /// Takes `n` tokens if there are that many at `now`; takes nothing otherwise.
    pub fn try_take(&mut self, now: Instant, n: f64) -> bool {
        if self.available(now) < n {
            return false;
        }
        self.tokens -= n;
        true
    }

    /// Takes `n` tokens found [`available`](Self::available): for a charge that several
    /// buckets must all allow before any of them pays.
    pub fn take(&mut self, n: f64) {
        self.tokens -= n;
    }

    /// The latest `now` the bucket was refilled at: a bucket untouched for `burst / rate`
    /// is full again, and need not be remembered.
    pub fn refilled(&self) -> Instant {
        self.refilled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refuses() {
        let now = Instant::now();
        let mut b = TokenBucket::full(2.0, 3.0, now);
        assert_eq!((0..5).filter(|_| b.try_take(now, 1.0)).count(), 3);
        assert_eq!(b.available(now), 0.0);
    }

    #[test]
    fn tokens_accrue_at_the_rate_up_to_the_burst() {
        let start = Instant::now();
        let mut b = TokenBucket::full(2.0, 3.0, start);
        assert!(b.try_take(start, 3.0));
        assert_eq!(b.available(start + ms(500)), 1.0);
        assert!(!b.try_take(start + ms(750), 2.0), "1.5 tokens are not 2");
        assert_eq!(b.available(start + ms(750)), 1.5, "a refused take takes nothing");
        assert!(b.try_take(start + ms(1000), 2.0));
        assert_eq!(b.available(start + ms(1000)), 0.0);
        assert_eq!(b.available(start + Duration::from_secs(60)), 3.0, "capped at the burst");
        assert_eq!(b.refilled(), start + Duration::from_secs(60));
    }

    #[test]
    fn time_going_back_adds_nothing_and_credits_no_span_twice() {
        let start = Instant::now();
        let mut b = TokenBucket::full(1.0, 10.0, start);
        assert!(b.try_take(start + ms(2000), 10.0));
        assert_eq!(b.available(start + ms(1000)), 0.0);
        assert_eq!(b.refilled(), start + ms(2000));
        assert_eq!(b.available(start + ms(3000)), 1.0, "only the second after 2 s");
    }

    #[test]
    fn take_charges_what_available_showed() {
        let now = Instant::now();
        let (mut packets, mut bytes) = (TokenBucket::full(1.0, 1.0, now), TokenBucket::full(100.0, 100.0, now));
        let len = 60.0;
        assert!(packets.available(now) >= 1.0 && bytes.available(now) >= len);
        packets.take(1.0);
        bytes.take(len);
        assert_eq!((packets.available(now), bytes.available(now)), (0.0, 40.0));
    }
}
