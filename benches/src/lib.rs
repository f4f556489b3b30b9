//! Shared set-up for the benchmarks.
