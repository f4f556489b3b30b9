#!/usr/bin/env bash
# The project's one test command (README, CI): installs the Debian packages the tests need
# (scripts/install-deps.sh; the real-NAT lab tests need root), checks formatting and lints
# (clippy, warnings are errors; rustdoc, broken links are errors), then runs every test of
# the workspace. Extra arguments go to `cargo test` and skip the lints, e.g.
# `scripts/test.sh -p introducer-node --test netns_lab -- --nocapture`.
#
# Then, without extra arguments, the docker-compose testbed runs once (scripts/testbed.sh:
# builds its image, brings it up, checks every pair, tears it down; it says so and skips
# where no Docker daemon runs; TESTBED=0 skips it), and every fuzz target runs briefly on
# its corpus (scripts/fuzz.sh, FUZZ_SECONDS each, default 10); FUZZ=0 skips that.
#
# Debug profile on purpose: on a 2-core machine an optimised build of the whole workspace
# costs more than the tests gain (dependencies are built at opt-level 1, see Cargo.toml).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
if [ $# -eq 0 ]; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
  # The library's docs render with every link resolved (`cargo doc` is how users meet it).
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --lib --quiet
fi
cargo test --workspace "$@"
if [ $# -eq 0 ] && [ "${TESTBED:-1}" != 0 ]; then
  timeout 1200 bash scripts/testbed.sh --timeout 180
fi
if [ $# -eq 0 ] && [ "${FUZZ:-1}" != 0 ]; then
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
fi
