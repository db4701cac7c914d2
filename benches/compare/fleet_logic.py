"""The analyzer's core logic hand-written in Polars and in DuckDB, for the side-by-side
comparison in the README (issue: 10⁷-sample fleet session, 2 threads).

    python benches/compare/fleet_logic.py polars SESSION_DIR
    python benches/compare/fleet_logic.py duckdb SESSION_DIR

Logic (a subset of KVScope's catalog, same thresholds): phase CASE per sample, LAG
transitions, 60 s trailing rolling median (TTFT p95, E2E p95) and mean (generation
tokens/s) baselines per server, run-length episodes (>= 5 s) for four conditions, spike
counts, and a per-server summary. Run it under `/usr/bin/time -f "%e s %M KB"`.
"""

import os
import sys

os.environ.setdefault("POLARS_MAX_THREADS", "2")

engine, session = sys.argv[1], sys.argv[2]
path = f"{session}/samples.parquet"

if engine == "polars":
    import polars as pl

    lf = pl.scan_parquet(path).sort("server", "ts")
    df = lf.with_columns(
        pl.when((pl.col("requests_running") == 0) & (pl.col("requests_waiting") == 0))
        .then(pl.lit("IDLE"))
        .when(pl.col("kv_cache_usage_pct") >= 95)
        .then(pl.lit("SATURATED"))
        .when(pl.col("requests_waiting") >= 1)
        .then(pl.lit("QUEUE_PRESSURE"))
        .when(pl.col("kv_cache_usage_pct") >= 80)
        .then(pl.lit("KV_PRESSURE_RISING"))
        .otherwise(pl.lit("HEALTHY"))
        .alias("phase"),
        pl.col("ttft_p95_s")
        .rolling_median_by("ts", window_size="60s", closed="left")
        .over("server")
        .alias("ttft_base"),
        pl.col("e2e_p95_s")
        .rolling_median_by("ts", window_size="60s", closed="left")
        .over("server")
        .alias("e2e_base"),
        pl.col("generation_tokens_per_s")
        .rolling_mean_by("ts", window_size="60s", closed="left")
        .over("server")
        .alias("gen_base"),
    ).with_columns(
        (pl.col("phase") != pl.col("phase").shift(1).over("server")).alias("transition"),
        (pl.col("ttft_p95_s") >= 3 * pl.col("ttft_base")).alias("ttft_spike"),
        (pl.col("e2e_p95_s") >= 3 * pl.col("e2e_base")).alias("e2e_spike"),
        (pl.col("generation_tokens_per_s") <= 0.5 * pl.col("gen_base")).alias("decode_drop"),
        (pl.col("ttft_p95_s") >= 2).alias("c_ttft"),
        (pl.col("requests_waiting") >= 1).alias("c_queue"),
        (pl.col("kv_cache_usage_pct") >= 80).alias("c_kv"),
        (pl.col("prompt_tokens_per_s") >= 2 * pl.col("prompt_tokens_per_s").median().over("server")).alias("c_prompt"),
    )
    episodes = []
    for c in ["c_ttft", "c_queue", "c_kv", "c_prompt"]:
        runs = df.with_columns(
            (pl.col(c) != pl.col(c).shift(1).over("server")).fill_null(True).cum_sum().over("server").alias("run")
        ).filter(pl.col(c))
        ep = (
            runs.group_by("server", "run")
            .agg(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"))
            .filter((pl.col("end") - pl.col("start")).dt.total_seconds() >= 5)
            .group_by("server")
            .agg(pl.len().alias(f"{c}_episodes"))
        )
        episodes.append(ep)
    summary = df.group_by("server").agg(
        pl.len().alias("samples"),
        pl.col("kv_cache_usage_pct").mean().alias("kv_avg"),
        pl.col("kv_cache_usage_pct").quantile(0.95).alias("kv_p95"),
        pl.col("kv_cache_usage_pct").max().alias("kv_max"),
        pl.col("requests_waiting").max().alias("waiting_max"),
        pl.col("generation_tokens_per_s").mean().alias("gen_avg"),
        pl.col("transition").sum().alias("transitions"),
        pl.col("ttft_spike").sum().alias("ttft_spikes"),
        pl.col("e2e_spike").sum().alias("e2e_spikes"),
        pl.col("decode_drop").sum().alias("decode_drops"),
    )
    plans = [summary] + episodes
    out = pl.collect_all(plans)
    print(out[0].height, "servers;", sum(e.height for e in out[1:]), "episode rows")
elif engine == "duckdb":
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"CREATE VIEW s AS SELECT * FROM read_parquet('{path}')")
    rows = con.execute(
        """
        WITH t AS (
          SELECT *,
            CASE WHEN requests_running = 0 AND requests_waiting = 0 THEN 'IDLE'
                 WHEN kv_cache_usage_pct >= 95 THEN 'SATURATED'
                 WHEN requests_waiting >= 1 THEN 'QUEUE_PRESSURE'
                 WHEN kv_cache_usage_pct >= 80 THEN 'KV_PRESSURE_RISING'
                 ELSE 'HEALTHY' END AS phase,
            median(ttft_p95_s) OVER w AS ttft_base,
            median(e2e_p95_s) OVER w AS e2e_base,
            avg(generation_tokens_per_s) OVER w AS gen_base,
            median(prompt_tokens_per_s) OVER (PARTITION BY server) AS prompt_median
          FROM s
          WINDOW w AS (PARTITION BY server ORDER BY ts
                       RANGE BETWEEN INTERVAL 60 SECONDS PRECEDING AND INTERVAL 1 MICROSECOND PRECEDING)
        ),
        f AS (
          SELECT *,
            phase IS DISTINCT FROM LAG(phase) OVER (PARTITION BY server ORDER BY ts) AS transition,
            ttft_p95_s >= 3 * ttft_base AS ttft_spike,
            e2e_p95_s >= 3 * e2e_base AS e2e_spike,
            generation_tokens_per_s <= 0.5 * gen_base AS decode_drop,
            ttft_p95_s >= 2 AS c_ttft, requests_waiting >= 1 AS c_queue,
            kv_cache_usage_pct >= 80 AS c_kv, prompt_tokens_per_s >= 2 * prompt_median AS c_prompt
          FROM t
        ),
        l AS (
          SELECT server, ts, c, v FROM f
          UNPIVOT (v FOR c IN (c_ttft, c_queue, c_kv, c_prompt))
        ),
        r AS (
          SELECT *, SUM(CASE WHEN v IS DISTINCT FROM pv THEN 1 ELSE 0 END)
                      OVER (PARTITION BY server, c ORDER BY ts) AS run
          FROM (SELECT *, LAG(v) OVER (PARTITION BY server, c ORDER BY ts) AS pv FROM l)
        ),
        ep AS (
          SELECT server, c, COUNT(*) AS episodes FROM (
            SELECT server, c, run, MIN(ts) AS st, MAX(ts) AS en FROM r WHERE v GROUP BY ALL
          ) WHERE date_diff('second', st, en) >= 5 GROUP BY ALL
        ),
        summ AS (
          SELECT server, COUNT(*) AS samples, AVG(kv_cache_usage_pct) AS kv_avg,
            quantile_cont(kv_cache_usage_pct, 0.95) AS kv_p95, MAX(kv_cache_usage_pct) AS kv_max,
            MAX(requests_waiting) AS waiting_max, AVG(generation_tokens_per_s) AS gen_avg,
            SUM(transition::INT) AS transitions, SUM(ttft_spike::INT) AS ttft_spikes,
            SUM(e2e_spike::INT) AS e2e_spikes, SUM(decode_drop::INT) AS decode_drops
          FROM f GROUP BY server
        )
        SELECT (SELECT COUNT(*) FROM summ), (SELECT COUNT(*) FROM ep)
        """
    ).fetchone()
    print(rows[0], "servers;", rows[1], "episode rows")
else:
    sys.exit(f"unknown engine {engine}")
