#!/usr/bin/env bash
# meshwire pub -> router -> meshwire sub throughput on loopback, with real
# processes. Usage: scripts/pubsub-throughput.sh [COUNT] [SIZE] [PIN]
#   PIN=split (default): router on CPU 1, pub and sub on CPU 0
#   PIN=same: everything on CPU 0;  PIN=none: no pinning
#   INSECURE=1: plaintext links (default: mutual TLS 1.3, keys made here)
# Prints one line per delivery level: published/s at the publisher (all
# acknowledged), and delivered/s end to end (first to last message at sub).
set -euo pipefail
count=${1:-1000000}
size=${2:-64}
pin=${3:-split}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/meshwire"
[ -x "$bin" ] || cargo build --release -q -p meshwire-cli --manifest-path "$root/Cargo.toml"
case $pin in
  split) on_router="taskset -c 1"; on_client="taskset -c 0" ;;
  same) on_router="taskset -c 0"; on_client="taskset -c 0" ;;
  none) on_router=""; on_client="" ;;
  *) echo "PIN must be split, same or none" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# Each process has its own key; one trust file lists them all.
sec() {
  if [ "${INSECURE:-0}" = 1 ]; then echo --insecure; else echo --key "$tmp/$1.key" --trust "$tmp/trust"; fi
}
if [ "${INSECURE:-0}" != 1 ]; then
  for n in router sub pub warm; do
    "$bin" keygen --out "$tmp/$n.key" --add-to "$tmp/trust" >/dev/null
  done
fi

$on_router "$bin" node --listen 127.0.0.1:0 $(sec router) >"$tmp/ready" 2>"$tmp/node.log" &
for _ in $(seq 100); do [ -s "$tmp/ready" ] && break; sleep 0.05; done
addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"])' "$tmp/ready")

run() {
  local level=$1; shift
  local topic="bench.$level"
  # The subscriber stamps its first and last line; arrival is what counts.
  $on_client "$bin" sub $(sec sub) --connect "$addr" --topic "$topic" \
    | python3 -c '
import sys, time
n = 0; first = last = None
for line in sys.stdin.buffer:
    t = time.monotonic()
    if line.startswith(b"warmup"): print("W", flush=True, file=sys.stderr); continue
    if first is None: first = t
    last = t; n += 1
print(n, first or 0, last or 0)
' >"$tmp/sub.$level" 2>"$tmp/warm.$level" &
  local subpid=$!
  # Warm up until the subscription is in place.
  for _ in $(seq 100); do
    echo warmup | "$bin" pub $(sec warm) --connect "$addr" --topic "$topic" >/dev/null
    [ -s "$tmp/warm.$level" ] && break
    sleep 0.05
  done
  local summary
  summary=$($on_client "$bin" pub $(sec pub) --connect "$addr" --topic "$topic" --count "$count" --size "$size" "$@")
  sleep 1 # let the tail of a best-effort stream arrive
  pkill -INT -f "sub .*--connect $addr --topic $topic" || true
  wait $subpid 2>/dev/null || true
  python3 - "$summary" "$tmp/sub.$level" "$level" "$pin" "$size" "${INSECURE:-0}" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); n, first, last = open(sys.argv[2]).read().split()
n = int(n); span = float(last) - float(first)
print(json.dumps({"level": sys.argv[3], "pin": sys.argv[4], "size": int(sys.argv[5]), "tls": sys.argv[6] != "1",
  "published": s["published"], "acked": s["acked"], "pub_msgs_per_sec": s["msgs_per_sec"],
  "delivered": n, "delivered_msgs_per_sec": round(n / span) if span > 0 else None}))
PY
}
run reliable
run best-effort --best-effort
