"""Query a dataset written by `kvscope export` in pandas, Polars and DuckDB.

    kvscope export results/sessions/ --out lake --partition-by server,date
    python examples/fleet_dataset.py lake
"""

import sys

import duckdb
import pandas as pd
import polars as pl

lake = sys.argv[1]

# pandas (through pyarrow) reads the Hive directories as `server` and `date` columns.
df = pd.read_parquet(lake)
print(df.groupby("server", observed=True)["kv_cache_usage_pct"].max())

# Polars: lazy scan; only the needed columns and partitions are read.
lf = pl.scan_parquet(f"{lake}/**/*.parquet", hive_partitioning=True)
print(
    lf.group_by("server", "session_id")
    .agg(pl.col("requests_waiting").max().alias("waiting_max"), pl.len().alias("samples"))
    .sort("server")
    .collect()
)

# DuckDB: per-server generated tokens (the same totals `kvscope analyze` reports).
print(
    duckdb.sql(
        f"""
        SELECT server, session_id,
               SUM(generation_tokens_per_s * interval_s) AS generation_tokens,
               MAX(kv_cache_usage_pct) AS kv_max_pct
        FROM read_parquet('{lake}/**/*.parquet', hive_partitioning = true)
        GROUP BY ALL ORDER BY server
        """
    )
)
