#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo-fuzz over libFuzzer) and runs each for SECONDS
# (default 15): `scripts/fuzz.sh [SECONDS] [TARGET...]`. Exits non-zero if any target
# crashed (a panic, a failed invariant, a timeout) and prints where the crashing input is
# and how to replay it. A longer hunt on one target: `scripts/fuzz.sh 600 introducer`.
#
# Stable rustc: cargo-fuzz passes nightly-only flags (sanitizer coverage, -Zsanitizer),
# which RUSTC_BOOTSTRAP=1 lets a stable compiler take. No sanitizer by default: every
# target is safe Rust, so AddressSanitizer adds little that Rust's own checks do not, and
# costs 3-8x the executions (FUZZ_SANITIZER=address turns it on; it works here). Debug
# assertions and overflow checks are on, as cargo-fuzz builds by default.
#
# What libFuzzer finds goes to a working corpus, fuzz/target/corpus/TARGET (kept between
# runs, not committed); the seeds in fuzz/corpus/TARGET are only read.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-15}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

start=$SECONDS
cargo fuzz build --sanitizer "$sanitizer"
echo "fuzz: built in $((SECONDS - start)) s; ${seconds} s per target (sanitizer: $sanitizer)"

failed=()
for t in "${targets[@]}"; do
  work=fuzz/target/corpus/$t
  log=fuzz/target/logs/$t.log
  mkdir -p "$work" "$(dirname "$log")"
  # -timeout: an input that runs this long is a hang (the machine targets take milliseconds).
  if cargo fuzz run --sanitizer "$sanitizer" "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    printf 'fuzz: %-12s ok  %8s runs  %6s/s  %s\n' "$t" "$runs" "$rate" "$cov"
  else
    failed+=("$t")
    echo "fuzz: $t FAILED (log: $log):"
    # The panic and its message, else (a timeout, running out of memory) the log's end.
    if grep -q 'panicked at' "$log"; then
      grep -m1 -A8 'panicked at' "$log" | sed '/^stack backtrace:/,$d'
    else
      tail -n 20 "$log"
    fi
    grep -m1 '^SUMMARY' "$log" || true
    input=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
    if [ -n "$input" ]; then
      echo "fuzz: $t crashing input: $input"
      echo "fuzz: replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $t $input"
    fi
  fi
done

echo "fuzz: done in $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
