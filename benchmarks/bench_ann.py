"""Exact against approximate (FAISS IVF) top-10 for known users of a cached tier, by catalogue size.

    python benchmarks/bench_ann.py [--items 10000,50000,100000] [--users 2000] [--requests 500]

For each catalogue size, builds a synthetic factor model with topic structure
(:func:`segrec.testing.factor_catalogue`: 64-d user and item vectors, 30 seen items per
user, no training), then serves the same known users through two in-process Routers:
``ann="exact"`` (the item-table product + partition) and ``ann="on"`` (an IVF index
calibrated at start-up to recall@10 >= 0.95 against exact on 500 sample users). Reports
per-request latency p50/p99 of ``Router.recommend`` (one thread for BLAS and FAISS, as
``segrec serve`` runs), the index's build + calibration time, its nlist / nprobe, and
recall@10 against exact (seen items excluded in both) on ``--requests`` random users.
Latencies are the median over ``--repeat`` interleaved passes of each path's p50 / p99.
Prints a table; writes ``benchmarks/results/bench_ann.json``.
Needs ``faiss-cpu`` (``pip install 'segrec[ann]'``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import git_commit, write_json


def _latencies(router, ids: list[str], k: int) -> tuple[np.ndarray, list[list[str]]]:
    lat, lists = [], []
    for u in ids:
        t0 = time.perf_counter()
        out = router.recommend(user_id=u, k=k)
        lat.append(time.perf_counter() - t0)
        lists.append(out.item_ids)
    return np.asarray(lat) * 1e3, lists


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,50000,100000", help="catalogue sizes, comma-separated")
    parser.add_argument("--users", type=int, default=2000, help="known users of the synthetic model")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per path")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed passes per path, interleaved (exact, ANN, exact, ...); medians reported")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_ann.json"))
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from segrec.route import Router
    from segrec.testing import factor_catalogue

    rows = []
    with threadpool_limits(1):  # as `segrec serve --threads 1`: one request, one core
        for n_items in (int(x) for x in args.items.split(",")):
            model = factor_catalogue(n_users=args.users, n_items=n_items, seed=args.seed)
            exact = Router(model, ann="exact")
            t0 = time.perf_counter()
            approx = Router(model, ann="on")
            build_s = time.perf_counter() - t0
            info = approx.ann_info().get(model.name)
            rng = np.random.default_rng(args.seed + 1)
            ids = [str(u) for u in rng.choice(model.user_vocab_.ids, size=min(args.requests, args.users),
                                              replace=False)]
            _latencies(exact, ids[:50], args.k)  # warm caches and allocators
            _latencies(approx, ids[:50], args.k)
            passes = {"exact": [], "ann": []}
            for _ in range(args.repeat):  # interleaved: both paths see the same machine load
                passes["exact"].append(_latencies(exact, ids, args.k))
                passes["ann"].append(_latencies(approx, ids, args.k))
            lists_e, lists_a = passes["exact"][0][1], passes["ann"][0][1]

            def med(path, q, passes=passes):
                return float(np.median([np.percentile(lat, q) for lat, _ in passes[path]]))

            pairs = zip(lists_a, lists_e, strict=True)
            recall = float(np.mean([len(set(a) & set(e)) / len(e) for a, e in pairs]))
            rows.append({"items": n_items, "exact_p50_ms": med("exact", 50), "exact_p99_ms": med("exact", 99),
                         "ann_p50_ms": med("ann", 50), "ann_p99_ms": med("ann", 99),
                         "recall@10": recall, "calibration_recall@10": info and info["recall_at_10"],
                         "nlist": info and info["nlist"], "nprobe": info and info["nprobe"],
                         "build_and_calibrate_s": build_s, "requests": len(ids),
                         "uptime": os.getloadavg()})
            print(f"  {n_items} items: exact p50 {rows[-1]['exact_p50_ms']:.2f} ms, ANN p50 "
                  f"{rows[-1]['ann_p50_ms']:.2f} ms, recall@10 {recall:.3f}", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows).drop(columns="uptime").set_index("items")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(f"== exact vs ANN top-{args.k} for known users (in-process Router.recommend, 1 thread); "
              f"load average {os.getloadavg()[0]:.1f} ==")
        print(table.to_string())
    record = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "commit": git_commit(),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version(), "load_avg_at_end": os.getloadavg()},
              "parameters": vars(args), "rows": rows}
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
