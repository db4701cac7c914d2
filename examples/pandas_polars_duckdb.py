"""Load a KVScope session in pandas, Polars and DuckDB.

    python examples/pandas_polars_duckdb.py results/sessions/<id>
"""

import sys

import duckdb
import pandas as pd
import polars as pl

session = sys.argv[1]

df = pd.read_parquet(f"{session}/samples.parquet")
print(df[["ts", "server", "kv_cache_usage_pct", "requests_running", "requests_waiting"]].tail())

pl_df = pl.read_parquet(f"{session}/samples.parquet")
print(pl_df.group_by("server").agg(pl.col("kv_cache_usage_pct").max(), pl.col("requests_waiting").max()))

print(duckdb.sql(f"SELECT server, MAX(kv_cache_usage_pct) AS kv_max FROM read_parquet('{session}/samples.parquet') GROUP BY server"))
# events.jsonl is written by `kvscope analyze`.
print(duckdb.sql(f"SELECT type, event, COUNT(*) AS n FROM read_json_auto('{session}/events.jsonl') GROUP BY ALL ORDER BY n DESC"))
