//! Running a test over many seeds, and replaying the one that failed.

use std::any::Any;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f` once per seed in `seeds` — or only for the seed in the `SIM_SEED` environment
/// variable when it is set — and, when a run panics, panics again with the seed and the
/// command that replays just that run:
///
/// ```text
/// seed 17 failed: assertion failed: ...
/// replay: SIM_SEED=17 cargo test my_test
/// ```
///
/// Stops at the first failing seed. The test name is taken from the current thread's name,
/// which is what libtest names the thread running a test.
pub fn for_each_seed(seeds: Range<u64>, mut f: impl FnMut(u64)) {
    let only = match std::env::var("SIM_SEED") {
        Ok(s) => Some(s.trim().parse::<u64>().unwrap_or_else(|_| panic!("SIM_SEED must be a u64, got {s:?}"))),
        Err(_) => None,
    };
    let test = std::thread::current().name().filter(|n| *n != "main").unwrap_or("<test name>").to_owned();
    let run = |seed: u64, f: &mut dyn FnMut(u64)| {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(seed))) {
            panic!("seed {seed} failed: {}\nreplay: SIM_SEED={seed} cargo test {test}", panic_message(&*payload));
        }
    };
    match only {
        Some(seed) => run(seed, &mut f),
        None => seeds.for_each(|seed| run(seed, &mut f)),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

/// A seed for an independent random stream, derived from the simulation's seed: NAT boxes
/// and links draw from separate streams so that, say, adding loss to a link does not change
/// which ports a NAT allocates.
pub(crate) fn derive(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5EED)))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
