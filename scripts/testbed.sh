#!/usr/bin/env bash
# The docker-compose testbed, in one command: builds the image (scripts/testbed-images.sh,
# no registry needed), brings docker-compose.yml up, waits until every peer has connected
# to every other on the topic, prints the grid, tears everything down. Exit status 0 only
# when every pair connected as the strategy table expects.
#
#   scripts/testbed.sh                       # the scenario as the file describes it
#   scripts/testbed.sh --scale peer-pr=3     # more peers behind one NAT
#   scripts/testbed.sh --keep                # leave it running (docker-compose down after)
#
# Without a Docker daemon it says so and exits 0 (TESTBED_REQUIRED=1 makes that an error).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! docker info >/dev/null 2>&1; then
  echo "testbed: no Docker daemon here, skipped"
  [ "${TESTBED_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
fi
bash scripts/testbed-images.sh
target=${CARGO_TARGET_DIR:-target}
exec "$target/debug/introducer-testbed" --file docker-compose.yml "$@"
