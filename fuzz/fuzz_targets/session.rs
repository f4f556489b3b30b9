//! Two sessions of one pair of peers, one of them fed forged, tampered and replayed
//! `Sealed` and `Handshake` envelopes from its peer's addresses; see
//! `introducer_fuzz::session` for the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| introducer_fuzz::session::run(data));
