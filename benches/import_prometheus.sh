#!/usr/bin/env bash
# Import speed and memory against a real local Prometheus (Debian's package): one hour of
# the simulator's pages at 1 s (every vLLM series) backfilled with promtool, then
# `kvscope import prometheus` of that hour, timed with peak RSS; then the same hour for
# SERVERS identical servers (memory must not grow with the window or the fleet: the
# import streams per server and per chunk).
#
# usage: benches/import_prometheus.sh [SECONDS=3600] [SERVERS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=${1:-3600}
SERVERS=${2:-10}
BIN=${KVSCOPE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kvscope-target}/release/kvscope}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
"$BIN" simulate --scenario mixed-incident --record-to "$W/sim" --seconds "$SECONDS_" --raw >/dev/null
T0=$(python3 -c "import json;print(json.load(open('$W/sim/metadata.json'))['started_at'])")
insts=(); for i in $(seq 1 "$SERVERS"); do insts+=("10.0.0.$i:8000"); done
python3 benches/compare/raw_to_openmetrics.py "$W/sim/raw_pages.jsonl.gz" "$W/one.om" sim:8000
python3 benches/compare/raw_to_openmetrics.py "$W/sim/raw_pages.jsonl.gz" "$W/fleet.om" "${insts[@]}"
promtool tsdb create-blocks-from openmetrics "$W/one.om" "$W/tsdb" >/dev/null
promtool tsdb create-blocks-from openmetrics "$W/fleet.om" "$W/tsdb" >/dev/null
printf 'global:\n  scrape_interval: 1s\n' > "$W/prom.yml"
prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/tsdb" \
  --storage.tsdb.retention.time=100y --web.listen-address=127.0.0.1:19191 >/dev/null 2>&1 &
sleep 5
START=$(python3 -c "import datetime;print(datetime.datetime.fromisoformat('$T0'.replace('Z','+00:00')).timestamp())")
END=$(python3 -c "print($START + $SECONDS_)")
run() {
  /usr/bin/time -f "%e s wall, %M KB peak RSS" "$BIN" import prometheus --url http://127.0.0.1:19191 \
    --start "$START" --end "$END" --step 1s --match "$1" --out "$W/$2" 2>&1 | grep -v '^/' | sed "s/^/$2: /"
}
echo "== $(nproc) cores, $(date -u +%F), ${SECONDS_} s at 1 s"
run '{instance="sim:8000"}' one
run '{instance=~"10\\.0\\.0\\..+"}' fleet
