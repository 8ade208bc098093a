#!/usr/bin/env bash
# User-space instructions per request of one ring3 server, counted by valgrind's callgrind: a figure that
# does not move with the machine's fast and slow states (timings do, by 2x and more here), for comparing
# two builds or two commits of ring3 with each other, never with another server. System calls are not in
# it (the kernel's work is not counted): bench/run.py's strace figures are.
#
#   bench/instructions.sh NAME PATH REQUESTS [VAR=VALUE ...] -- RING3-SERVE-ARGUMENTS
#
# ring3 runs `python -m ring3 serve ARGUMENTS` under callgrind with the VAR=VALUE settings in its
# environment (RING3_PURE=1 for the pure build, PYTHONPATH=<checkout>/src for another commit); h2load sends
# 300 requests to warm it up (the file cache admits, the replay cache remembers), the counters are zeroed,
# h2load sends REQUESTS more over 16 connections (with HEADER="name: value" on each, if set), and the
# counters of that window are divided by REQUESTS. Examples (run from a directory holding site/1k.bin):
#
#   bench/instructions.sh pure /1k.bin 2000 RING3_PURE=1 -- site
#   HEADER="connection: close" bench/instructions.sh close /1k.bin 2000 -- site
#   bench/instructions.sh asgi / 2000 -- --app hello_asgi:app --app-dir bench/apps
#
# Needs valgrind and h2load (apt: valgrind, nghttp2-client). Loopback only; bounded by REQUESTS.
set -euo pipefail
name=$1 path=$2 requests=$3
shift 3
settings=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do settings+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
port=$((19000 + RANDOM % 900))
out=$(mktemp -d)/callgrind
python=${PYTHON:-python3}
env ${settings[@]+"${settings[@]}"} valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
  "$python" -m ring3 serve "$@" --listen "127.0.0.1:$port" --access-log off --log-level warning \
  > "$out.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  curl -s -o /dev/null "http://127.0.0.1:$port$path" && break
  sleep 0.5
done
header=(); [ -n "${HEADER:-}" ] && header=(-H "$HEADER")
h2load --h1 -n 300 -c 16 ${header[@]+"${header[@]}"} "http://127.0.0.1:$port$path" > /dev/null
callgrind_control --zero "$server" > /dev/null 2>&1
summary=$(h2load --h1 -n "$requests" -c 16 ${header[@]+"${header[@]}"} "http://127.0.0.1:$port$path" \
  | grep "^requests:")
callgrind_control --dump "$server" > /dev/null 2>&1
sleep 1
case "$summary" in
  *"$requests succeeded"*) ;;
  *) echo "$name: not every request succeeded: $summary" >&2; exit 1 ;;
esac
counted=$(awk '/^summary:/ {print $2}' "$out.$server.1")
echo "$name: $((counted / requests)) instructions per request ($requests requests)"
