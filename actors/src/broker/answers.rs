//! What the mesh's directory said about peers registered elsewhere and about topics, kept
//! briefly so that repeated requests cost no lookup; and the requests that wait for an
//! answer while the directory is asked (held, then handled again, rather than answered
//! "not registered" before the mesh had a chance to say where the peer is).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// An answer older than this is still given, but the directory is asked again.
const FRESH: Duration = Duration::from_secs(2);
/// Answers are forgotten this long after they came.
const KEPT: Duration = Duration::from_secs(60);
/// A lookup the mesh has not answered by then counts as answered empty.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Requests held per key, at most (a requester repeats its own until answered).
const MAX_WAITING: usize = 8;
/// How often answers are swept.
const SWEEP: Duration = Duration::from_secs(1);

enum Answer<T, W> {
    /// The directory is being asked; these requests wait for it.
    Asking { since: Instant, waiting: Vec<W> },
    /// Its answer (empty: nobody), when it came, and whether it is being asked again.
    Known { value: T, at: Instant, asking: bool },
}

/// What a request for a key gets.
pub enum Outcome<T> {
    /// The answer, and whether to ask the directory again (it is getting old).
    Known(T, bool),
    /// Nothing known: ask the directory (the request is held).
    Ask,
    /// Held until the answer already asked for comes (or dropped, beyond the few held).
    Wait,
}

pub struct Answers<K, T, W> {
    map: BTreeMap<K, Answer<T, W>>,
    max: usize,
    next_sweep: Option<Instant>,
    /// Answers not kept because the table was full.
    pub dropped_full: u64,
}

impl<K: Ord + Clone, T: Clone + Default + PartialEq, W> Answers<K, T, W> {
    pub fn new(max: usize) -> Self {
        Answers { map: BTreeMap::new(), max, next_sweep: None, dropped_full: 0 }
    }

    /// A request for `key`; `waiter` is what to handle again once the answer comes.
    pub fn request(&mut self, now: Instant, key: &K, waiter: W) -> Outcome<T> {
        let full = self.map.len() >= self.max;
        match self.map.get_mut(key) {
            Some(Answer::Known { value, at, asking }) => {
                let again = !*asking && now >= *at + FRESH;
                *asking |= again;
                Outcome::Known(value.clone(), again)
            }
            Some(Answer::Asking { waiting, .. }) => {
                if waiting.len() < MAX_WAITING {
                    waiting.push(waiter);
                }
                Outcome::Wait
            }
            None if full => {
                self.dropped_full += 1;
                Outcome::Known(T::default(), false)
            }
            None => {
                self.map.insert(key.clone(), Answer::Asking { since: now, waiting: vec![waiter] });
                self.next_sweep.get_or_insert(now + SWEEP);
                Outcome::Ask
            }
        }
    }

    /// The mesh's answer on `key` (asked for, or news from our own table): the requests
    /// that waited for it, to handle again.
    pub fn answer(&mut self, now: Instant, key: K, value: T) -> Vec<W> {
        let known = Answer::Known { value: value.clone(), at: now, asking: false };
        let full = self.map.len() >= self.max;
        match self.map.get_mut(&key) {
            Some(entry) => match std::mem::replace(entry, known) {
                Answer::Asking { waiting, .. } => waiting,
                Answer::Known { .. } => Vec::new(),
            },
            // Unasked news that there is nothing to know is not worth a slot.
            None if value == T::default() => Vec::new(),
            None if full => {
                self.dropped_full += 1;
                Vec::new()
            }
            None => {
                self.map.insert(key, known);
                self.next_sweep.get_or_insert(now + SWEEP);
                Vec::new()
            }
        }
    }

    /// Forgets old answers; lookups the mesh never answered count as empty, and their
    /// waiting requests are returned to be handled again.
    pub fn sweep(&mut self, now: Instant) -> Vec<W> {
        if self.next_sweep.is_none_or(|t| now < t) {
            return Vec::new();
        }
        let mut woken = Vec::new();
        self.map.retain(|_, answer| match answer {
            Answer::Known { at, .. } => now < *at + KEPT,
            Answer::Asking { since, waiting } => {
                if now < *since + ASK_TIMEOUT {
                    return true;
                }
                woken.append(waiting);
                *answer = Answer::Known { value: T::default(), at: now, asking: false };
                true
            }
        });
        self.next_sweep = (!self.map.is_empty()).then_some(now + SWEEP);
        woken
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }
}
