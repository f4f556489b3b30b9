//! What the fuzz targets share: datagrams of every kind built from fuzz input ([`gen`]),
//! a whole node under attack on the simulator ([`node`]), and a session pair fed forgeries
//! ([`session`]). Each target in `fuzz_targets/` is a few lines over these.

pub mod gen;
pub mod node;
pub mod session;
