//! What the fuzz targets share: datagrams of every kind built from fuzz input ([`gen`]).
//! Each target in `fuzz_targets/` is a few lines over it.

pub mod gen;
