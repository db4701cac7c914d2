#!/usr/bin/env bash
# Times `kvscope import profilemate` of a session with ROWS KV usage rows (default 1 M, a
# per-step reading every 4 ms: ~67 minutes) and 20,000 evictions, release binary.
# Usage: benches/import_profilemate.sh [ROWS]
set -euo pipefail
ROWS="${1:-1000000}"
BIN=${KVSCOPE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kvscope-target}/release/kvscope}
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DIR="$WORK/session_20261123_120000"
mkdir -p "$DIR"
python3 - "$DIR" "$ROWS" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/kv_cache_usage.csv", "w") as o:
    o.write("timestamp_sec,usage_pct,num_blocks,total_blocks\n")
    for i in range(n):
        t = i * 0.004
        u = (int(t) * 7) % 100
        o.write(f"{t:.3f},{u:.2f},{round(u * 10.24)},1024\n")
with open(f"{d}/kv_cache_evictions.csv", "w") as o:
    o.write("timestamp_sec,lifetime_sec,idle_sec\n")
    for i in range(20000):
        t = i * n * 0.004 / 20000
        o.write(f"{t:.3f},{(i % 97) * 0.37:.3f},{(i % 13) * 0.11:.3f}\n")
PY
ls -la "$DIR"
/usr/bin/time -f "import profilemate ($ROWS usage rows): %e s wall, %M KB peak RSS" \
  "$BIN" import profilemate "$DIR" --out "$WORK/out" >/dev/null
