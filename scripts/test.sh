#!/usr/bin/env bash
# The one test command: installs what the tests need (Debian's prometheus for the
# import tests and chromium for the report tests; a Python venv with pyarrow, pandas, Polars, DuckDB, pytest), then runs
# every Rust test and the interop tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvscope-target}"
VENV="${KVSCOPE_VENV:-$HOME/.cache/kvscope-venv}"

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian's ${missing[*]} (import and report tests)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt

echo "== cargo test"
cargo test --locked

echo "== interop (pyarrow, pandas, Polars, DuckDB)"
# The binary `cargo test` built for the integration tests (CARGO_BIN_EXE_kvscope). A
# separate `cargo build` would resolve features without the dev-dependencies and build
# the whole stack a second time (~20 min cold on 2 cores).
test -x "$CARGO_TARGET_DIR/debug/kvscope"
KVSCOPE_BIN="$CARGO_TARGET_DIR/debug/kvscope" "$VENV/bin/python" -m pytest -q tests/interop
