"""Raw pages (raw_pages.jsonl.gz from `kvscope simulate --record-to D --raw`) → one
OpenMetrics file for `promtool tsdb create-blocks-from openmetrics`: every sample line
with its page's timestamp and `instance`/`job` labels, grouped by series name (OpenMetrics
forbids interleaved families), types dropped (the importer infers them from names).

usage: raw_to_openmetrics.py RAW_PAGES.jsonl.gz OUT.om INSTANCE [INSTANCE…]
Each instance gets the same pages (a fleet of identical servers for scale runs).
"""
import gzip
import json
import sys
from collections import defaultdict


def main() -> None:
    src, out, instances = sys.argv[1], sys.argv[2], sys.argv[3:]
    by_name: dict[str, list[str]] = defaultdict(list)
    with gzip.open(src, "rt") as f:
        for line in f:
            page = json.loads(line)
            text, ts = page.get("text"), page["ts"]
            if not text:
                continue
            for sample in text.splitlines():
                if not sample or sample.startswith("#"):
                    continue
                head, _, value = sample.rpartition(" ")
                name, brace, labels = head.partition("{")
                if name.endswith("_created"):
                    continue
                labels = labels.rstrip("}")
                by_name[name].append((labels, value, ts))
    with open(out, "w") as f:
        for name, rows in by_name.items():
            for inst in instances:
                extra = f'instance="{inst}",job="vllm"'
                for labels, value, ts in rows:
                    lab = f"{labels},{extra}" if labels else extra
                    f.write(f"{name}{{{lab}}} {value} {ts:.3f}\n")
        f.write("# EOF\n")


if __name__ == "__main__":
    main()
