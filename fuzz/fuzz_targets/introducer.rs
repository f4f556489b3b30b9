//! A whole introducer fed datagrams from spoofed sources while virtual time runs; see
//! `introducer_fuzz::node` for the fixture and the invariants checked.
#![no_main]

use introducer_fuzz::node::{run, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| run(Target::Introducer, data));
