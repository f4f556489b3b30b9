//! Retransmission schedules: one doubling backoff for every machine that asks and waits.
//!
//! Each transmission is counted with [`Backoff::next`], which says when to retransmit (or,
//! once [`Backoff::exhausted`], to give up): `first` after the first transmission, twice as
//! long after each one since, never longer than the cap. The wait is measured from the
//! `now` of the transmission, so a late timer delays the rest of the schedule rather than
//! bunching it up.

use std::time::{Duration, Instant};

/// Doubling stops here (65 536 × `first`): beyond any schedule in use, and it keeps the
/// arithmetic in range.
const MAX_DOUBLINGS: u32 = 16;

/// A request's retransmission schedule and the transmissions counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Option<Duration>,
    max_tries: Option<u32>,
    tries: u32,
    waited: Duration,
}

impl Backoff {
    /// Waits `first` after the first transmission and doubles after each: no cap, no limit.
    pub fn new(first: Duration) -> Self {
        Backoff { first, max: None, max_tries: None, tries: 0, waited: Duration::ZERO }
    }

    /// The same wait after every transmission.
    pub fn fixed(every: Duration) -> Self {
        Backoff::new(every).capped(every)
    }

    /// No wait longer than `max`.
    pub fn capped(self, max: Duration) -> Self {
        Backoff { max: Some(max), ..self }
    }

    /// Exhausted after `max_tries` transmissions.
    pub fn give_up_after(self, max_tries: u32) -> Self {
        Backoff { max_tries: Some(max_tries), ..self }
    }

    /// Counts a transmission made at `now` and returns when to retransmit (or, once
    /// exhausted, to give up). Counts even past `max_tries`, for callers that keep
    /// sending on their own terms.
    pub fn next(&mut self, now: Instant) -> Instant {
        self.tries = self.tries.saturating_add(1);
        let doublings = (self.tries - 1).min(MAX_DOUBLINGS);
        let mut wait = self.first.saturating_mul(1 << doublings);
        if let Some(max) = self.max {
            wait = wait.min(max);
        }
        self.waited = self.waited.saturating_add(wait);
        later(now, wait)
    }

    /// [`Backoff::next`], unless exhausted: then `None`, and nothing is counted.
    pub fn retry(&mut self, now: Instant) -> Option<Instant> {
        (!self.exhausted()).then(|| self.next(now))
    }

    /// Whether `max_tries` transmissions were made.
    pub fn exhausted(&self) -> bool {
        self.max_tries.is_some_and(|max| self.tries >= max)
    }

    /// Transmissions counted since the start (or the last reset).
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// The sum of the waits handed out: how long the schedule took, had every timer fired
    /// on time.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Starts over (an answer came): the next transmission is a first one again.
    pub fn reset(&mut self) {
        self.tries = 0;
        self.waited = Duration::ZERO;
    }
}

/// `now + d`, capped instead of panicking on absurd durations.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).or_else(|| now.checked_add(Duration::from_secs(3600))).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The waits of `n` transmissions, each sent when the previous deadline came.
    fn waits(backoff: &mut Backoff, n: usize) -> Vec<Duration> {
        let mut now = Instant::now();
        (0..n)
            .map(|_| {
                let deadline = backoff.next(now);
                let wait = deadline - now;
                now = deadline;
                wait
            })
            .collect()
    }

    #[test]
    fn waits_double_from_the_first() {
        let mut b = Backoff::new(ms(100));
        assert_eq!(waits(&mut b, 5), [ms(100), ms(200), ms(400), ms(800), ms(1600)]);
        assert_eq!(b.tries(), 5);
        assert_eq!(b.waited(), ms(3100));
        assert!(!b.exhausted(), "no limit given");
    }

    #[test]
    fn each_wait_counts_from_the_transmission_not_the_last_deadline() {
        let start = Instant::now();
        let mut b = Backoff::new(ms(100));
        assert_eq!(b.next(start), start + ms(100));
        // The timer fired 50 ms late: the retransmission waits its full 200 ms from then.
        assert_eq!(b.next(start + ms(150)), start + ms(350));
    }

    #[test]
    fn the_cap_bounds_each_wait() {
        let mut b = Backoff::new(ms(250)).capped(ms(2000));
        assert_eq!(waits(&mut b, 6), [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]);
        let mut b = Backoff::fixed(ms(400));
        assert_eq!(waits(&mut b, 4), [ms(400); 4]);
    }

    #[test]
    fn doubling_stops_after_sixteen() {
        let mut b = Backoff::new(ms(1));
        let w = waits(&mut b, 20);
        assert_eq!(w[16], ms(65_536));
        assert_eq!(w[17..], [ms(65_536); 3]);
        // Absurd durations neither overflow nor panic.
        let mut b = Backoff::new(Duration::MAX);
        let now = Instant::now();
        assert!(b.next(now) >= now);
        assert!(b.next(now) >= now);
        assert_eq!(b.waited(), Duration::MAX);
    }

    #[test]
    fn exhausted_after_max_tries() {
        let now = Instant::now();
        let mut b = Backoff::new(ms(100)).give_up_after(3);
        assert_eq!(b.retry(now), Some(now + ms(100)));
        assert_eq!(b.retry(now), Some(now + ms(200)));
        assert!(!b.exhausted());
        assert_eq!(b.retry(now), Some(now + ms(400)));
        assert!(b.exhausted());
        assert_eq!(b.retry(now), None);
        assert_eq!((b.tries(), b.waited()), (3, ms(700)), "a refused retry counts nothing");
        // `next` still counts, past the limit.
        assert_eq!(b.next(now), now + ms(800));
        assert_eq!(b.tries(), 4);

        let mut none = Backoff::new(ms(100)).give_up_after(0);
        assert!(none.exhausted());
        assert_eq!(none.retry(now), None);
    }

    #[test]
    fn reset_starts_over() {
        let now = Instant::now();
        let mut b = Backoff::new(ms(100)).capped(ms(300)).give_up_after(2);
        waits(&mut b, 2);
        assert!(b.exhausted());
        b.reset();
        assert_eq!((b.tries(), b.waited(), b.exhausted()), (0, Duration::ZERO, false));
        assert_eq!(b.retry(now), Some(now + ms(100)));
        assert_eq!(b.retry(now), Some(now + ms(200)));
        assert_eq!(b.retry(now), None, "the limit survives a reset");
    }
}
