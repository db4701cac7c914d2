#!/usr/bin/env bash
# Side by side on the same files, in one run: KVScope `analyze` (release), the same logic
# hand-written in Polars and in DuckDB (fleet_logic.py, 2 threads), on a calm and a busy
# fleet of SERVERS × SECONDS samples. Engines take turns for ROUNDS rounds (default 3),
# so a slow minute on this machine (its speed varies ~2× from day to day, and within an
# hour) falls on all of them; prints each engine's median wall time and peak RSS over
# the rounds, with KVScope's ratio to each, then every round's figures.
#
# usage: benches/compare/run.sh [SERVERS=1000] [SECONDS=10000]   (env: ROUNDS)
set -euo pipefail
cd "$(dirname "$0")/../.."
SERVERS=${1:-1000}
SECS=${2:-10000}
ROUNDS=${ROUNDS:-3}
BIN=${KVSCOPE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kvscope-target}/release/kvscope}
PY=${KVSCOPE_PY:-$HOME/.cache/kvscope-venv/bin/python}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
measure() { # label, command… → appends "label seconds kilobytes" to $W/rounds
  local label=$1; shift
  /usr/bin/time -f "$label %e %M" -o "$W/t" "$@" >/dev/null 2>&1
  cat "$W/t" >>"$W/rounds"
}
median() { # engine field → the median of that engine's field over its rounds
  awk -v n="$1" -v f="$2" '$1 == n { print $f }' "$W/rounds" | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for profile in calm busy; do
  "$BIN" simulate --fleet "$SERVERS" --seconds "$SECS" --profile "$profile" --seed 1 \
    --record-to "$W/$profile" >/dev/null 2>&1
  : >"$W/rounds"
  for _ in $(seq "$ROUNDS"); do
    measure kvscope "$BIN" analyze "$W/$profile" --out "$W/out"
    measure polars "$PY" benches/compare/fleet_logic.py polars "$W/$profile"
    measure duckdb "$PY" benches/compare/fleet_logic.py duckdb "$W/$profile"
  done
  echo "$profile: median of $ROUNDS interleaved rounds"
  echo "engine wall_s peak_MB ratio_time ratio_rss"
  kt=$(median kvscope 2)
  km=$(median kvscope 3)
  for name in kvscope polars duckdb; do
    awk -v n="$name" -v t="$(median "$name" 2)" -v m="$(median "$name" 3)" -v kt="$kt" -v km="$km" \
      'BEGIN { printf "%s %.2f %.0f %.2f %.2f\n", n, t, m / 1024, kt / t, km / m }'
  done
  echo "rounds (engine wall_s peak_KB): $(paste -sd' ' "$W/rounds" | sed 's/ \(kvscope\|polars\|duckdb\)/, \1/g')"
  echo
done
