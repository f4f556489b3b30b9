#!/bin/bash
# Entry point of every testbed container (see docker-compose.yml): one image, three roles.
#
#   router KIND WAN_IP [GATEWAY]   a NAT router of KIND (introducer-lab-nft --list): the
#                                  same nftables rules as the real-NAT lab; GATEWAY, if any,
#                                  is its own way out (a home router behind a carrier NAT)
#   seed IP [IP2] [-- RUN_ARGS]    a public node listening on IP (and IP2, added here: two
#                                  IPs make the first node a full RFC 5780 server)
#   peer GATEWAY [-- JOIN_ARGS]    a node behind the router at GATEWAY that joins a topic
#
# DELAY_MS (routers, seeds): what leaves through the interface toward the internet waits that
# long (NFQUEUE to introducer-lab-delay: this kernel has no netem). Routers delay 100 ms and
# seeds 50 ms by default (docker-compose.yml), so a relayed round trip (through a seed, twice)
# takes 100 ms longer than a direct one.
set -euo pipefail

PORT=3478

# The interface that holds an address of the /24 of $1 (Docker names them in no fixed order).
iface_of() {
  local prefix=${1%.*}.
  ip -o -4 addr show | awk -v p="$prefix" 'index($4, p) == 1 { print $2; exit }'
}

# Delays UDP leaving through interface $1 by $DELAY_MS, if set; in the background.
delay() {
  [ "${DELAY_MS:-0}" -gt 0 ] || return 0
  iptables-legacy -t mangle -A POSTROUTING -o "$1" -p udp -j NFQUEUE --queue-num 0 --queue-bypass
  introducer-lab-delay --queue 0 --ms "$DELAY_MS" &
  echo "delay: ${DELAY_MS} ms out of $1" >&2
}

role=${1:?usage: entry.sh router|seed|peer ...}
shift
case "$role" in
  router)
    kind=$1 wan_ip=$2 gateway=${3:-}
    wan=$(iface_of "$wan_ip")
    lan=$(ip -o -4 addr show | awk -v w="$wan" '$2 != "lo" && $2 != w { print $2; exit }')
    introducer-lab-nft --kind "$kind" --wan-ip "$wan_ip" --wan-if "$wan" --lan-if "$lan" | nft -f -
    if [ -n "$gateway" ]; then ip route replace default via "$gateway"; fi
    delay "$wan"
    echo "router: $kind, WAN $wan_ip on $wan, LAN on $lan"
    exec sleep infinity
    ;;
  seed)
    ip=$1
    shift
    listen=(--listen "$ip:$PORT")
    if [ $# -gt 0 ] && [ "$1" != -- ]; then
      ip addr add "$1/24" dev "$(iface_of "$ip")"
      listen+=(--listen "$1:$PORT")
      shift
    fi
    [ "${1:-}" = -- ] && shift
    delay "$(iface_of "$ip")"
    exec introducer run --json "${listen[@]}" "$@"
    ;;
  peer)
    gateway=$1
    shift
    [ "${1:-}" = -- ] && shift
    ip route replace default via "$gateway"
    # {"peer_id":…} first: the report needs to know who is who (one identity: a data dir).
    introducer id --json --data-dir /var/lib/introducer
    # join reads lines to send from stdin; a container's stdin is closed, so hold it open.
    exec introducer join --json --data-dir /var/lib/introducer "$@" < <(sleep infinity)
    ;;
  *)
    echo "entry.sh: unknown role $role (router, seed or peer)" >&2
    exit 2
    ;;
esac
