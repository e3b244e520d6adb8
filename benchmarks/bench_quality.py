"""Quality benchmark: every system on one protocol split, against ../shared/ANCHORS.md.

    python benchmarks/bench_quality.py --data ../shared/data/ml-100k [--systems ease,transformer]
    python benchmarks/bench_quality.py --data synthetic --out benchmarks/results/bench_quality_synthetic.json

``--data synthetic`` runs the built-in data of ``segrec run`` (planted segments with their
own tastes: where segment adaptation should pay); the anchor rows exist for ml-100k and
amazon-scientific (``../shared/ANCHORS.md``).

Fits the same systems as ``segrec run`` (through ``segrec.experiment.run_experiment``),
prints the overall table (NDCG/Recall/HR/MRR@10, NDCG/Recall@20, Cov@10, NDCG@10
per activity tercile, fit seconds), per-segment NDCG@10 with 95% bootstrap CIs of
the segment-aware systems against their global counterparts, the relative gap to
the anchor rows, and the served system (chosen on inner validation, never on test):
its test NDCG@10 against 1.05 x the best anchor and against the best single systems
(paired bootstrap CIs), and per segment its tier or blend, the honest inner-valid
gain and the test gain. Writes benchmarks/results/bench_quality.json.
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

#: NDCG@10 of ../shared/ANCHORS.md (same protocol), per dataset folder name, for the side-by-side.
ANCHORS = {
    "ml-100k": {
        "transformer": ("SASRec+", 0.1693),
        "als": ("implicit ALS", 0.1457),
        "local_ease": ("KMeans(K=2) + per-segment EASE", 0.1448),
        "ease": ("EASE", 0.1430),
        "itemknn": ("ItemKNN", 0.1251),
        "popularity": ("Popularity", 0.0796),
    },
    "amazon-scientific": {
        "ease": ("EASE", 0.1096),
        "transformer": ("SASRec+", 0.1072),
        "itemknn": ("ItemKNN", 0.1020),
        "local_ease": ("KMeans(K=2) + per-segment EASE", 0.1011),
        "als": ("implicit ALS", 0.0983),
        "popularity": ("Popularity", 0.0242),
    },
}
#: the served system must reach this multiple of the best anchor (issue 14)
TARGET = 1.05


def served_rows(result) -> tuple[dict, list[dict]]:
    """The served (validation-chosen) system against the best single systems on test, and per segment.

    Returns ``(overall, per_segment)``: the served system, its test NDCG@10, the paired
    bootstrap CI against the validation-best single system and against the test-best
    single system (reported, never used to choose), and per segment the served tier or
    blend with its α, the honest inner-valid gain and the test gain with its 95% CI.
    """
    from segrec.evaluate import bootstrap_diff
    from segrec.report.verdict import display, segment_rows

    cfg = result.config
    served = result.best_system()
    sel = result.composite.selection_ or {}
    names = {t: display(result, t) for t in (result.composite.tiers_ or {})}
    best_valid = names.get(sel.get("best_single"), sel.get("best_single"))
    singles = [n for n in result.reports if n != "segmented"]
    best_test = max(singles, key=lambda n: result.reports[n].overall["ndcg@10"])
    overall = {"served": served, "served_test_ndcg@10": result.reports[served].overall["ndcg@10"],
               "best_single_on_validation": best_valid, "best_single_on_test": best_test,
               "test_winner": result.test_winner(), "honest_valid_gain": sel.get("honest_gain"),
               "honest_valid_ci": sel.get("honest_ci")}
    for label, other in (("vs_best_single_on_validation", best_valid), ("vs_best_single_on_test", best_test)):
        if other in result.reports and other != served:
            ci = bootstrap_diff(result.reports[served], result.reports[other], n_boot=cfg.evaluate.n_boot,
                                seed=cfg.seed).iloc[0]
            overall[label] = {"other": other, "diff": ci["diff"], "lo": ci["lo"], "hi": ci["hi"]}
    segments = []
    by_seg = None
    if best_valid in result.reports and "segmented" in result.reports:
        by_seg = bootstrap_diff(result.reports["segmented"], result.reports[best_valid], by="segment",
                                n_boot=cfg.evaluate.n_boot, seed=cfg.seed)
    for row in segment_rows(result):
        test = by_seg.loc[row["segment"]] if by_seg is not None and row["segment"] in by_seg.index else None
        segments.append({"segment": row["segment"], "valid users": row["users"], "served": row["served_name"],
                         "alpha": row["alpha"], "valid gain (honest)": row["honest_gain"],
                         "valid lo": row["honest_lo"], "valid hi": row["honest_hi"],
                         "test gain": None if test is None else test["diff"],
                         "test lo": None if test is None else test["lo"],
                         "test hi": None if test is None else test["hi"]})
    return overall, segments


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

    anchors = {} if synthetic else ANCHORS.get(Path(args.data).name, {})
    rows = []
    for name, (label, anchor) in anchors.items():
        if name in result.reports:
            ours = result.reports[name].overall["ndcg@10"]
            rows.append({"system": name, "anchor": label, "anchor ndcg@10": anchor, "ours": ours,
                         "rel. diff": (ours - anchor) / anchor})
    served, segments = served_rows(result)
    best_anchor = max((a for _, a in anchors.values()), default=None)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 180):
        if rows:
            print("\n== against ../shared/ANCHORS.md (NDCG@10) ==")
            print(pd.DataFrame(rows).set_index("system").to_string())
        print("\n== per segment: served tier/blend, honest inner-valid gain and test gain over "
              f"{served['best_single_on_validation']} (95% CIs) ==")
        print(pd.DataFrame(segments).set_index("segment").to_string())
    ndcg10 = served["served_test_ndcg@10"]
    print(f"\nserved (chosen on inner validation): {served['served']} test NDCG@10 {ndcg10:.4f}; "
          f"test winner {served['test_winner']}")
    for key in ("vs_best_single_on_validation", "vs_best_single_on_test"):
        if key in served:
            c = served[key]
            print(f"  served - {c['other']} ({key[3:].replace('_', ' ')}): {c['diff']:+.4f} "
                  f"[{c['lo']:+.4f}, {c['hi']:+.4f}]")
    if best_anchor is not None:
        served["target"] = TARGET * best_anchor
        verdict = "met" if ndcg10 >= served["target"] else "NOT met"
        print(f"  best anchor {best_anchor:.4f}; target {TARGET} x = {served['target']:.4f}: {verdict} "
              f"({(ndcg10 - best_anchor) / best_anchor:+.1%} over the best anchor)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor()},
        "seconds": time.perf_counter() - start,
        "anchors": rows,
        "served": served,
        "served_segments": segments,
        **results_dict(result),
    }
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
