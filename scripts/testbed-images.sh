#!/usr/bin/env bash
# Builds the docker-compose testbed's image, `introducer-testbed:local`, with no container
# registry: a Debian base made by debootstrap (minbase with iproute2, nftables and iptables;
# built once and kept as `introducer-testbed-base:local`, labelled with its package list so a
# list that changes rebuilds it), and on it the `introducer`, `introducer-lab-nft` and
# `introducer-lab-delay` binaries of this checkout (debug build, as the tests use; the base is
# the same Debian release as the build machine, so the dynamically linked binaries run).
#
#   scripts/testbed-images.sh            # build what is missing, always refresh the binaries
#   REBUILD_BASE=1 scripts/testbed-images.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BASE=introducer-testbed-base:local
IMAGE=introducer-testbed:local
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
# iptables: its legacy NFQUEUE target, for the delay (the kernel has no nft queue).
PACKAGES=iproute2,nftables,procps,iptables

have_base() {
  [ "$(docker image inspect -f '{{index .Config.Labels "introducer.packages"}}' "$BASE" 2>/dev/null)" = "$PACKAGES" ]
}

if [ "${REBUILD_BASE:-0}" = 1 ] || ! have_base; then
  if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    echo "testbed-images: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap </dev/null >/dev/null
  fi
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  echo "testbed-images: debootstrap $SUITE (a few minutes, once)"
  /usr/sbin/debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c "LABEL introducer.packages=$PACKAGES" - "$BASE" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

cargo build -q -p introducer-node -p introducer-lab --bins
target=${CARGO_TARGET_DIR:-target}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$target/debug/introducer" "$target/debug/introducer-lab-nft" "$target/debug/introducer-lab-delay" testbed/entry.sh "$context/"
cat >"$context/Dockerfile" <<EOF
FROM $BASE
LABEL introducer.testbed=1
COPY introducer introducer-lab-nft introducer-lab-delay entry.sh /usr/local/bin/
ENTRYPOINT ["/bin/bash", "/usr/local/bin/entry.sh"]
EOF
docker build -q -t "$IMAGE" "$context" >/dev/null
# The image it replaces, untagged now.
docker image prune -f --filter label=introducer.testbed=1 >/dev/null
echo "testbed-images: $IMAGE ready"
