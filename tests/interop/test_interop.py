"""pyarrow, pandas, Polars and DuckDB read a recorded KVScope session.

Run by scripts/test.sh with KVSCOPE_BIN pointing at the built binary.
"""

import json
import os
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

BIN = os.environ.get("KVSCOPE_BIN", "target/debug/kvscope")

ARROW_TYPES = {
    "timestamp_us": pa.timestamp("us", tz="UTC"),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "utf8": pa.string(),
    "boolean": pa.bool_(),
}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "session"
    subprocess.run(
        [BIN, "simulate", "--scenario", "mixed-incident", "--record-to", str(out), "--seed", "3"],
        check=True,
        capture_output=True,
    )
    subprocess.run([BIN, "analyze", str(out)], check=True, capture_output=True)
    return out


def test_pyarrow_schema_matches_metadata(session):
    meta = json.loads((session / "metadata.json").read_text())
    table = pq.read_table(session / "samples.parquet")
    assert table.num_rows == meta["row_counts"]["samples"] == 91
    names = [c["name"] for c in meta["columns"]]
    assert table.column_names == names
    for c in meta["columns"]:
        assert table.schema.field(c["name"]).type == ARROW_TYPES[c["type"]], c["name"]
    kv = pq.ParquetFile(session / "samples.parquet").metadata.metadata
    assert kv[b"schema_version"] == str(meta["schema_version"]).encode()


def test_pandas_reads_units(session):
    df = pd.read_parquet(session / "samples.parquet")
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    assert df["kv_cache_usage_pct"].max() <= 100.0
    assert df["kv_cache_usage_pct"].max() > 95.0
    assert df["requests_running"].dtype.name.lower().startswith("int")
    csv = pd.read_csv(session / "metrics.csv")
    assert len(csv) == len(df)
    assert list(csv.columns) == list(df.columns)


def test_polars_reads_parquet_and_jsonl(session):
    df = pl.read_parquet(session / "samples.parquet")
    assert df.schema["ts"] == pl.Datetime("us", "UTC")
    assert df.schema["requests_waiting"] == pl.Int64
    lines = pl.read_ndjson(session / "samples.jsonl")
    assert lines.height == df.height
    hist = pl.read_parquet(session / "histograms.parquet")
    assert set(hist["metric"].unique()) >= {"time_to_first_token_seconds", "e2e_request_latency_seconds"}


def test_duckdb_totals_match_analyze(session):
    summary = json.loads((session / "summary.json").read_text())
    server = summary["servers"][0]
    con = duckdb.connect()
    row = con.execute(
        f"""
        SELECT server,
               SUM(generation_tokens_per_s * interval_s) AS gen,
               SUM(preemptions_per_s * interval_s) AS preempt,
               MAX(kv_cache_usage_pct) AS kv_max,
               MAX(requests_waiting) AS waiting_max
        FROM read_parquet('{session / "samples.parquet"}')
        GROUP BY server
        """
    ).fetchone()
    assert row[0] == server["server"]
    assert abs(row[1] - server["generation_tokens"]) < 1.0
    assert abs(row[2] - server["preemptions"]) < 0.01
    assert abs(row[3] - server["kv_max_pct"]) < 0.01
    assert row[4] == server["waiting_max"]


def test_python_example_runs(session):
    import sys

    out = subprocess.run(
        [sys.executable, "examples/pandas_polars_duckdb.py", str(session)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "kv_max" in out.stdout
    assert "phase_transition" in out.stdout
