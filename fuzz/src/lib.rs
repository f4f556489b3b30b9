//! What the fuzz targets share: datagrams of every kind built from fuzz input ([`gen`]),
//! and a whole node under attack on the simulator ([`node`]). Each target in
//! `fuzz_targets/` is a few lines over these.

pub mod gen;
pub mod node;
