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
import pyarrow.dataset as ds
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


def run_example(script, arg):
    """Runs examples/SCRIPT ARG with this interpreter; returns its stdout."""
    import sys

    res = subprocess.run(
        [sys.executable, f"examples/{script}", str(arg)],
        check=True,
        capture_output=True,
        text=True,
    )
    return res.stdout


def test_python_example_runs(session):
    out = run_example("pandas_polars_duckdb.py", session)
    assert "kv_max" in out
    assert "phase_transition" in out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, session):
    """Two sessions from two servers exported as one Hive-partitioned dataset."""
    root = tmp_path_factory.mktemp("lake")
    other = root / "other-session"
    subprocess.run(
        [BIN, "simulate", "--scenario", "kv-saturation", "--record-to", str(other),
         "--seed", "5", "--server-name", "gpu-b:8000"],
        check=True,
        capture_output=True,
    )
    subprocess.run([BIN, "analyze", str(other)], check=True, capture_output=True)
    out = root / "dataset"
    subprocess.run(
        [BIN, "export", str(session), str(other), "--out", str(out), "--partition-by", "server,date"],
        check=True,
        capture_output=True,
    )
    return out, [session, other]


def test_export_layout_and_types(dataset):
    out, sessions = dataset
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    # One file per (server, UTC date of the samples): a session recorded across
    # midnight has two.
    want = []
    for s in sessions:
        m = json.loads((s / "metadata.json").read_text())
        samples = pq.read_table(s / "samples.parquet", columns=["ts", "server"])
        ts = samples.column("ts").to_pylist()
        enc = samples.column("server")[0].as_py().replace(":", "%3A")
        for day in sorted({t.date().isoformat() for t in ts}):
            want.append(f"server={enc}/date={day}/part-{m['session_id']}.parquet")
    assert files == sorted(want)
    assert files[0].startswith("server=gpu-b%3A8000/date=")
    assert files[-1].startswith("server=sim%3A8000/date=")
    meta = json.loads((sessions[0] / "metadata.json").read_text())
    table = ds.dataset(out, partitioning="hive").to_table()
    assert table.num_rows == sum(
        json.loads((s / "metadata.json").read_text())["row_counts"]["samples"] for s in sessions
    )
    # Contract columns keep their names and types; session_id and model are added;
    # server and date come from the partition directories.
    for c in meta["columns"]:
        if c["name"] == "server":
            continue
        assert table.schema.field(c["name"]).type == ARROW_TYPES[c["type"]], c["name"]
    assert table.schema.field("session_id").type == pa.string()
    assert set(table.column("server").to_pylist()) == {"sim:8000", "gpu-b:8000"}
    assert set(table.column("model").to_pylist()) == {"sim-llama-8b"}
    kv = pq.ParquetFile(out / files[0]).metadata.metadata
    assert kv[b"schema_version"] == str(meta["schema_version"]).encode()


def test_export_pandas_and_polars(dataset):
    out, _ = dataset
    pdf = pd.read_parquet(out)
    assert str(pdf["ts"].dtype) == "datetime64[us, UTC]"
    assert set(pdf["server"].astype(str)) == {"sim:8000", "gpu-b:8000"}
    lf = pl.scan_parquet(str(out / "**/*.parquet"), hive_partitioning=True)
    got = lf.group_by("server").agg(pl.len().alias("n")).collect().sort("server")
    assert got["server"].to_list() == ["gpu-b:8000", "sim:8000"]
    assert got["n"].sum() == len(pdf)
    assert lf.collect_schema()["requests_running"] == pl.Int64


def test_duckdb_over_export_matches_analyze(dataset):
    out, sessions = dataset
    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT server, session_id,
               SUM(generation_tokens_per_s * interval_s) AS gen,
               SUM(preemptions_per_s * interval_s) AS preempt,
               MAX(kv_cache_usage_pct) AS kv_max,
               MAX(requests_waiting) AS waiting_max,
               COUNT(*) AS n
        FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)
        GROUP BY server, session_id
        ORDER BY server
        """
    ).fetchall()
    assert len(rows) == 2
    by_server = {r[0]: r for r in rows}
    for s in sessions:
        summary = json.loads((s / "summary.json").read_text())
        srv = summary["servers"][0]
        row = by_server[srv["server"]]
        assert row[1] == json.loads((s / "metadata.json").read_text())["session_id"]
        assert abs(row[2] - srv["generation_tokens"]) < 1.0
        assert abs(row[3] - srv["preemptions"]) < 0.01
        assert abs(row[4] - srv["kv_max_pct"]) < 0.01
        assert row[5] == srv["waiting_max"]
        assert row[6] == srv["samples"]


def test_fleet_example_runs(dataset):
    out, _ = dataset
    stdout = run_example("fleet_dataset.py", out)
    assert "generation_tokens" in stdout
    assert "gpu-b:8000" in stdout


@pytest.mark.parametrize("partition_by", ["date", "server,date"])
def test_two_servers_across_days_round_trip_through_duckdb(tmp_path, partition_by):
    """Two servers over three UTC dates: every row of each server comes back (files are
    one per session, server and partition; no server's rows overwrite another's)."""
    session = tmp_path / "fleet"
    subprocess.run(
        [BIN, "simulate", "--fleet", "2", "--seconds", "200000", "--record-to", str(session)],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "lake"
    subprocess.run(
        [BIN, "export", str(session), "--out", str(out), "--partition-by", partition_by],
        check=True,
        capture_output=True,
    )
    files = list(out.rglob("*.parquet"))
    dates = {p.parent.name for p in files}
    assert len(dates) == 3, dates
    assert len(files) == 6, sorted(str(f.relative_to(out)) for f in files)
    rows = duckdb.sql(
        f"SELECT server, COUNT(*) AS n, COUNT(DISTINCT ts) AS t FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true) GROUP BY server ORDER BY server"
    ).fetchall()
    assert [r[1] for r in rows] == [200000, 200000], rows
    assert [r[2] for r in rows] == [200000, 200000], rows


@pytest.fixture(scope="module")
def telemetry_session(tmp_path_factory):
    """A session with a DCGM exporter and vLLM's residency histograms recorded."""
    out = tmp_path_factory.mktemp("t") / "session"
    subprocess.run(
        [BIN, "simulate", "--scenario", "kv-saturation", "--record-to", str(out), "--seed", "2",
         "--dcgm", "--kv-cache-metrics-sample", "0.2"],
        check=True,
        capture_output=True,
    )
    return out


def test_gpu_and_residency_columns_in_pandas_polars_duckdb(telemetry_session):
    df = pd.read_parquet(telemetry_session / "samples.parquet")
    # Percent, never a 0-1 ratio; vLLM reserves 90 % of the framebuffer at start.
    assert 0.0 <= df["gpu_sm_active_pct"].min() and df["gpu_sm_active_pct"].max() <= 100.0
    assert df["gpu_sm_active_pct"].max() > 1.0
    assert (df["gpu_mem_used_pct"].dropna().round(2) == 90.0).all()
    assert df["gpu_sm_clock_mhz"].max() == 1980.0
    assert df["gpu_throttle"].dtype.name == "Int64" or df["gpu_throttle"].dtype.kind in "if"
    assert df["api_cpu_util_pct"].notna().sum() > 50
    # Residency: counts are integers, rates and medians floats; the page's last count.
    pl_df = pl.read_parquet(telemetry_session / "samples.parquet")
    assert pl_df.schema["kv_evictions_sampled"] == pl.Int64
    assert pl_df.schema["kv_block_lifetime_p50_s"] == pl.Float64
    evicted = int(pl_df["kv_evictions_sampled"].sum())
    subprocess.run([BIN, "analyze", str(telemetry_session)], check=True, capture_output=True)
    summary = json.loads((telemetry_session / "summary.json").read_text())
    res = summary["servers"][0]["residency"]
    assert res["lifetime_s"]["count"] == evicted
    con = duckdb.connect()
    idle_le_life = con.execute(
        f"SELECT bool_and(kv_block_idle_p50_s <= kv_block_lifetime_p50_s + 1e-9) "
        f"FROM '{telemetry_session}/samples.parquet' WHERE kv_evictions_sampled > 0"
    ).fetchone()[0]
    assert idle_le_life
    hist = con.execute(
        f"SELECT count(*) FROM '{telemetry_session}/histograms.parquet' "
        f"WHERE metric = 'kv_block_lifetime_seconds'"
    ).fetchone()[0]
    assert hist > 0
