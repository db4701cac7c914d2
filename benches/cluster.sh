#!/usr/bin/env bash
# `analyze` of one busy fleet on this machine alone and on local clusters of 1, 2 and 4
# `kvscope worker` processes (all on 127.0.0.1, so they share this machine's cores: the
# figures show the overhead and the scaling shape, not a real cluster's speed-up). Checks
# that every run writes the same events.jsonl and summary.json as the local run.
#
# Prints wall time and the coordinator's peak RSS per run, and each worker's peak RSS.
#
# usage: benches/cluster.sh [SERVERS=5000] [SECONDS=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${1:-5000}
SECS=${2:-10000}
BIN=${KVSCOPE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kvscope-target}/release/kvscope}
W=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
# KVSCOPE_FLEET=DIR reuses a fleet already generated (a 5 × 10⁷ fleet is 1.8 GB).
FLEET=${KVSCOPE_FLEET:-$W/fleet}
if [ -z "${KVSCOPE_FLEET:-}" ]; then
  "$BIN" simulate --fleet "$SERVERS" --seconds "$SECS" --profile busy --seed 1 \
    --record-to "$FLEET" >/dev/null 2>&1
fi
measure() { # label, command…
  local label=$1; shift
  /usr/bin/time -f "$label %e s %M KB" -o "$W/t" "$@" >/dev/null
  cat "$W/t"
}
measure local "$BIN" analyze "$FLEET" --out "$W/local"
for n in 1 2 4; do
  urls=()
  for _ in $(seq "$n"); do
    "$BIN" worker --listen 127.0.0.1:0 >"$W/w.out" 2>/dev/null &
    pids+=($!)
    until grep -q listening "$W/w.out" 2>/dev/null; do sleep 0.1; done
    urls+=("$(sed 's/listening on //' "$W/w.out")")
    : >"$W/w.out"
  done
  list=$(IFS=,; echo "${urls[*]}")
  measure "cluster-$n" "$BIN" analyze "$FLEET" --out "$W/c$n" --cluster "$list"
  cmp "$W/local/events.jsonl" "$W/c$n/events.jsonl"
  cmp "$W/local/summary.json" "$W/c$n/summary.json"
  for pid in "${pids[@]}"; do # each worker's peak RSS
    echo "  worker $pid peak $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")"
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
  rm -rf "$W/c$n"
done
