"""Load benchmark: ``load_interactions`` on large CSV logs, against a raw pyarrow read.

    python benchmarks/bench_load.py                      # 1M and 10M rows, epoch + ISO timestamps
    python benchmarks/bench_load.py --rows 1000000 --timestamps epoch

For each case a CSV ``user_id,item_id,rating,timestamp`` is generated in a
temporary directory (deleted afterwards): string ids (``u0001234``), Zipf-ish
item popularity, ~20 interactions per user, a few duplicate pairs (so the
duplicate rule runs), timestamps as epoch seconds or ISO-8601 strings. The same
process times a bare ``pyarrow.csv.read_csv`` of the file as the baseline, then
``load_interactions`` (parse, validate, factorize ids, drop duplicates, sort
into canonical order). Prints a table; writes benchmarks/results/bench_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from _common import git_commit as _commit
from segrec import load_interactions


def _machine() -> dict:
    import pandas
    import pyarrow

    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def make_csv(path: Path, n_rows: int, timestamps: str, seed: int = 0) -> dict:
    """Write a synthetic log of ``n_rows`` rows; returns its parameters."""
    rng = np.random.default_rng(seed)
    n_users = max(n_rows // 20, 1)
    n_items = max(n_rows // 200, 10)
    users = rng.integers(0, n_users, n_rows)
    # power-law popularity (rank^-0.9): a heavy head and a long tail, few repeated pairs
    cdf = np.cumsum(np.arange(1, n_items + 1) ** -0.9)
    items = np.searchsorted(cdf / cdf[-1], rng.random(n_rows))
    items = rng.permutation(n_items)[np.minimum(items, n_items - 1)]
    ratings = rng.integers(1, 6, n_rows)
    times = 1_577_836_800 + rng.integers(0, 2 * 365 * 86400, n_rows)
    user_vocab = pa.array(np.char.add("u", np.char.zfill(np.arange(n_users).astype(str), 7)).astype(object))
    item_vocab = pa.array(np.char.add("i", np.char.zfill(np.arange(n_items).astype(str), 6)).astype(object))
    if timestamps == "iso":
        ts_col = pa.array(times.astype("datetime64[s]").astype(str).astype(object))
    else:
        ts_col = pa.array(times)
    table = pa.table({
        "user_id": user_vocab.take(pa.array(users)),
        "item_id": item_vocab.take(pa.array(items)),
        "rating": pa.array(ratings),
        "timestamp": ts_col,
    })
    with open(path, "wb") as fh:
        fh.write(b"user_id,item_id,rating,timestamp\n")
        options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
        pa_csv.write_csv(table, fh, write_options=options)
    return {"rows": n_rows, "users_drawn": n_users, "items_drawn": n_items, "timestamps": timestamps}


def run_case(n_rows: int, timestamps: str, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="segrec-bench-load-") as tmp:
        path = Path(tmp) / "interactions.csv"
        start = time.perf_counter()
        params = make_csv(path, n_rows, timestamps)
        make_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 2**20
        raw, load = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            pa_csv.read_csv(path)
            raw.append(time.perf_counter() - start)
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                data = load_interactions(path)
            load.append(time.perf_counter() - start)
        dup_warnings = [str(w.message) for w in caught]
    return {
        **params, "file_mb": round(size_mb, 1), "make_s": round(make_s, 2),
        "raw_read_s": round(min(raw), 3), "load_s": round(min(load), 3),
        "ratio_vs_raw": round(min(load) / min(raw), 2), "rows_per_s": int(n_rows / min(load)),
        "loaded_rows": len(data), "n_users": data.n_users, "n_items": data.n_items,
        "warnings": dup_warnings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--timestamps", nargs="+", choices=["epoch", "iso"], default=["epoch", "iso"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the best is reported")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_load.json"))
    args = parser.parse_args(argv)

    cases = []
    header = (f"{'rows':>11} {'timestamps':>10} {'file MB':>8} {'pyarrow s':>10} {'load s':>8} "
              f"{'x raw':>6} {'rows/s':>11} {'users':>9} {'items':>8}")
    print(header)
    print("-" * len(header))
    for n_rows in args.rows:
        for ts in args.timestamps:
            case = run_case(n_rows, ts, args.repeat)
            cases.append(case)
            print(f"{n_rows:>11,} {ts:>10} {case['file_mb']:>8.1f} {case['raw_read_s']:>10.2f} "
                  f"{case['load_s']:>8.2f} {case['ratio_vs_raw']:>6.1f} {case['rows_per_s']:>11,} "
                  f"{case['n_users']:>9,} {case['n_items']:>8,}", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak_mb:,.0f} MB")
    result = {
        "benchmark": "bench_load",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _machine(),
        "peak_rss_mb": round(peak_mb),
        "cases": cases,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
