"""Quality benchmark: every system on one protocol split, against ../shared/ANCHORS.md.

    python benchmarks/bench_quality.py --data ../shared/data/ml-100k [--systems ease,transformer]
    python benchmarks/bench_quality.py --data synthetic --out benchmarks/results/bench_quality_synthetic.json

``--data synthetic`` runs the built-in data of ``segrec run`` (planted segments with their
own tastes: where segment adaptation should pay); the anchor rows apply to ml-100k only.

Fits the same systems as ``segrec run`` (through ``segrec.experiment.run_experiment``),
prints the overall table (NDCG/Recall/HR/MRR@10, NDCG/Recall@20, Cov@10, NDCG@10
per activity tercile, fit seconds), per-segment NDCG@10 with 95% bootstrap CIs of
the segment-aware systems against their global counterparts, and the relative
gap to the anchor rows. Writes benchmarks/results/bench_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from _common import git_commit as _commit
from segrec.cli.run import format_result
from segrec.config import load_config
from segrec.experiment import results_dict, run_experiment

#: NDCG@10 of ../shared/ANCHORS.md (ml-100k, same protocol), for the side-by-side.
ANCHORS = {
    "transformer": ("SASRec+", 0.1693),
    "als": ("implicit ALS", 0.1457),
    "local_ease": ("KMeans(K=2) + per-segment EASE", 0.1448),
    "ease": ("EASE", 0.1430),
    "itemknn": ("ItemKNN", 0.1251),
    "popularity": ("Popularity", 0.0796),
}
BEST_ANCHOR = 0.1693




def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ml-100k",
                        help="folder with interactions.csv (+ items.csv, users.csv)")
    parser.add_argument("--systems", help="comma-separated subset of systems")
    parser.add_argument("--config", help="TOML run config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_quality.json"))
    args = parser.parse_args(argv)

    synthetic = args.data == "synthetic"
    over: dict = {"seed": args.seed}
    if not synthetic:
        folder = Path(args.data)
        inter = folder / "interactions.csv"
        if not inter.exists():
            print(f"skip: {inter} not found (ml-100k is not shipped; see README)")
            return 0
        data_over = {"path": str(inter)}
        for name in ("items", "users"):
            if (folder / f"{name}.csv").exists():
                data_over[name] = str(folder / f"{name}.csv")
        over["data"] = data_over
    if args.systems:
        over["models"] = {"systems": tuple(args.systems.split(","))}
    cfg = load_config(args.config, **over)

    start = time.perf_counter()
    result = run_experiment(cfg, progress=lambda m: print(f"[{time.perf_counter() - start:6.1f}s] {m}",
                                                          file=sys.stderr, flush=True))
    print(format_result(result))

    rows = []
    for name, (label, anchor) in ({} if synthetic else ANCHORS).items():
        if name in result.reports:
            ours = result.reports[name].overall["ndcg@10"]
            rows.append({"system": name, "anchor": label, "anchor ndcg@10": anchor, "ours": ours,
                         "rel. diff": (ours - anchor) / anchor})
    best = max(result.reports, key=lambda n: result.reports[n].overall["ndcg@10"])
    best_ndcg = result.reports[best].overall["ndcg@10"]
    if rows:
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
            print("\n== against ../shared/ANCHORS.md (NDCG@10) ==")
            print(pd.DataFrame(rows).set_index("system").to_string())
    if synthetic:
        print(f"\nbest system: {best} NDCG@10 {best_ndcg:.4f}")
    else:
        print(f"\nbest system: {best} NDCG@10 {best_ndcg:.4f} vs best anchor {BEST_ANCHOR:.4f} "
              f"({(best_ndcg - BEST_ANCHOR) / BEST_ANCHOR:+.1%})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor()},
        "seconds": time.perf_counter() - start,
        "anchors": rows,
        "best_system": best,
        **results_dict(result),
    }
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
