#!/bin/bash
# Entry point of every testbed container (see docker-compose.yml): one image, three roles.
#
#   router KIND WAN_IP [GATEWAY]   a NAT router of KIND (introducer-lab-nft --list): the
#                                  same nftables rules as the real-NAT lab; GATEWAY, if any,
#                                  is its own way out (a home router behind a carrier NAT)
#   seed IP [IP2] [-- RUN_ARGS]    a public node listening on IP (and IP2, added here: two
#                                  IPs make the first node a full RFC 5780 server)
#   peer GATEWAY [-- JOIN_ARGS]    a node behind the router at GATEWAY that joins a topic
set -euo pipefail

PORT=3478

# The interface that holds an address of the /24 of $1 (Docker names them in no fixed order).
iface_of() {
  local prefix=${1%.*}.
  ip -o -4 addr show | awk -v p="$prefix" 'index($4, p) == 1 { print $2; exit }'
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
