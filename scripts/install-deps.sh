#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (the real-NAT lab of the
# `lab` crate and its coturn cross-checks). Idempotent: it does nothing when
# every tool is already there, and runs `apt-get update` only when something is
# missing. Needs root (or sudo) for the install; the lab itself needs root too.
#
#   iproute2   ip netns, veth, bridges
#   nftables   the NAT rules
#   conntrack  flushing NAT state between cases
#   coturn     turnserver (an RFC 5780 STUN server) and turnutils_natdiscovery,
#              the independent referee of the lab's NAT behaviours
#   procps     sysctl (per-namespace forwarding, rp_filter, conntrack timeouts)
#   util-linux setsid/kill used by the scripts (present on every Debian, listed for clarity)
#   g++        libFuzzer, which the fuzz targets link, is C++ (libfuzzer-sys compiles it)
#   python3    runs oteltap (PyPI), the real OTLP/HTTP receiver of the telemetry test,
#              installed in a venv of its own ($OTELTAP_VENV, default /opt/introducer/oteltap)
#
# And cargo-fuzz, for scripts/fuzz.sh (from crates.io, built with cargo), unless FUZZ=0.
#
# coturn's Debian package may start a system-wide turnserver on install; the lab
# starts its own inside network namespaces, so the service is kept from starting
# (policy-rc.d during the install) and disabled afterwards.
set -euo pipefail

# command -> package providing it
declare -A NEED=(
  [ip]=iproute2
  [nft]=nftables
  [conntrack]=conntrack
  [turnserver]=coturn
  [turnutils_natdiscovery]=coturn
  [sysctl]=procps
  [setsid]=util-linux
  [c++]=g++
  [python3]=python3
)

OTELTAP_VENV=${OTELTAP_VENV:-/opt/introducer/oteltap}
oteltap() {
  if "$OTELTAP_VENV/bin/python3" -c "import oteltap" 2>/dev/null; then return; fi
  echo "install-deps: installing oteltap in $OTELTAP_VENV"
  if ! python3 -m venv "$OTELTAP_VENV" 2>/dev/null; then
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends python3-venv </dev/null
    python3 -m venv "$OTELTAP_VENV"
  fi
  "$OTELTAP_VENV/bin/pip" install -q --disable-pip-version-check "oteltap==1.0.0"
}

if [ "${FUZZ:-1}" != 0 ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

have() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
for cmd in "${!NEED[@]}"; do
  if ! have "$cmd"; then
    pkg=${NEED[$cmd]}
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  fi
done

SUDO=()
if [ "${#missing[@]}" -eq 0 ]; then
  oteltap
  echo "install-deps: all test dependencies present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Keep coturn (or anything else) from being started as a service by the install.
# Docker images usually ship a policy-rc.d that says exit 101; add one only if
# there is none, and remove only our own.
POLICY=/usr/sbin/policy-rc.d
ours_policy=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# temporary, scripts/install-deps.sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  ours_policy=1
fi
cleanup() { if [ "$ours_policy" = 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" </dev/null

# Belt and braces: make sure no system turnserver runs now or starts at boot.
if [ -e /etc/init.d/coturn ] || [ -e /lib/systemd/system/coturn.service ]; then
  if command -v update-rc.d >/dev/null 2>&1; then
    "${SUDO[@]}" update-rc.d coturn disable >/dev/null 2>&1 || true   # also disables the systemd unit
  fi
  if command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]}" systemctl disable coturn.service >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then "${SUDO[@]}" systemctl stop coturn.service >/dev/null 2>&1 || true; fi
  fi
fi

for cmd in "${!NEED[@]}"; do
  if ! have "$cmd"; then
    echo "install-deps: $cmd still missing after install" >&2
    exit 1
  fi
done
oteltap
echo "install-deps: done"
