#!/usr/bin/env bash
# Side by side on the same files, in one run: KVScope `analyze` (release), the same logic
# hand-written in Polars and in DuckDB (fleet_logic.py, 2 threads), on a calm and a busy
# fleet of SERVERS × SECONDS samples. Prints wall time, peak RSS and KVScope's ratio to
# each peer. This machine's speed varies ~2× from day to day: compare within one run.
#
# usage: benches/compare/run.sh [SERVERS=1000] [SECONDS=10000]
set -euo pipefail
cd "$(dirname "$0")/../.."
SERVERS=${1:-1000}
SECS=${2:-10000}
BIN=${KVSCOPE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kvscope-target}/release/kvscope}
PY=${KVSCOPE_PY:-$HOME/.cache/kvscope-venv/bin/python}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
measure() { # label, command… → "label seconds kilobytes"
  local label=$1; shift
  /usr/bin/time -f "$label %e %M" -o "$W/t" "$@" >/dev/null 2>&1
  cat "$W/t"
}
echo "profile engine wall_s peak_MB ratio_time ratio_rss"
for profile in calm busy; do
  "$BIN" simulate --fleet "$SERVERS" --seconds "$SECS" --profile "$profile" --seed 1 \
    --record-to "$W/$profile" >/dev/null 2>&1
  k=$(measure kvscope "$BIN" analyze "$W/$profile")
  p=$(measure polars "$PY" benches/compare/fleet_logic.py polars "$W/$profile")
  d=$(measure duckdb "$PY" benches/compare/fleet_logic.py duckdb "$W/$profile")
  read -r _ kt km <<<"$k"
  for line in "$k" "$p" "$d"; do
    read -r name t m <<<"$line"
    awk -v p="$profile" -v n="$name" -v t="$t" -v m="$m" -v kt="$kt" -v km="$km" \
      'BEGIN { printf "%s %s %.2f %.0f %.2f %.2f\n", p, n, t, m / 1024, kt / t, km / m }'
  done
done
