"""Cost-accuracy frontier of a saved routed system: every tier alone, and every routing policy.

    python benchmarks/bench_frontier.py --run /tmp/ml100k-run [--fractions 0.05,0.1,0.2,0.3,0.5]

Loads the run directory written by ``segrec run`` (its ``segmented`` system keeps
the per-segment validation table with NDCG@10 and analytic FLOPs of every tier),
rebuilds the same protocol split from the run's config (checked against the
manifest's data fingerprint), then for each point re-routes the fitted tiers
without refitting and measures on the *test* part:

* ``all <tier>``: every segment on one tier (the single-model baselines);
* ``accuracy``: the best tier per segment on validation;
* ``budget f``: best validation NDCG with mean FLOPs/request <= f x the FLOPs of the
  single tier with the best validation NDCG (the "best tier");
* ``rules``: the value-tier rules (heavy -> large, others -> small) and their inverse.

Columns: test NDCG@10 and mean analytic FLOPs per request (over test users), both
also as a share of the best tier's; measured p50/p99 latency per request at batch 1;
and the validation estimates the policies used. Also prints each saved system's cost
(parameters, FLOPs, memory, latency at batch 1 and 256). Writes
``benchmarks/results/bench_frontier.json`` and plots ``frontier.svg`` / ``frontier.png``
(NDCG@10 against mean FLOPs and against p99 latency).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import git_commit as _commit

RESULTS = Path(__file__).parent / "results"




def _split_of(run):
    """The run's protocol split, rebuilt from its config; refuses data that changed."""
    from segrec.config import RunConfig
    from segrec.experiment import load_data
    from segrec.split import temporal_split

    cfg = RunConfig.model_validate(run.manifest["config"])
    data, _ = load_data(cfg)
    if data.fingerprint() != run.manifest["data_fingerprint"]:
        raise SystemExit(f"the data of {cfg.data.path or 'synthetic'} changed since the run was saved "
                         f"(fingerprint {data.fingerprint()} != {run.manifest['data_fingerprint']})")
    return temporal_split(data, cfg.split.ratios)


def _points(model, fractions: list[float]) -> list[tuple[str, object]]:
    """(label, routed system) for every frontier point."""
    from segrec.route import RulesConfig

    table = model.validation_
    segments = sorted(int(s) for s in table["segment"].unique())
    points = []
    for tier in sorted(table["tier"].unique()):
        # a tier without a model for some segment (a local tier, small segments) is completed by
        # the fallback chain there, exactly as it would be served
        points.append((f"all {tier}", model.reroute(routing={s: tier for s in segments})))
    points.append(("accuracy", model.reroute(policy="accuracy")))
    for f in fractions:
        points.append((f"budget {f:g}", model.reroute(policy="budget", budget_fraction=f, budget_flops=None)))
    # "large" = the costliest tier, "small" = the cheapest one that is not popularity
    mean_cost = table.groupby("tier")["flops"].mean().sort_values()
    large = str(mean_cost.index[-1])
    small = next((str(t) for t in mean_cost.index if t != "popularity"), "popularity")
    for label, act in (("rules heavy->large", {"heavy": large, "medium": small, "light": small}),
                       ("rules light->large", {"heavy": small, "medium": small, "light": large})):
        points.append((label, model.reroute(policy="rules", rules=RulesConfig(activity=act))))
    return points


def _plot(frame: pd.DataFrame, best: str, out_base: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    kinds = {"all": ("s", "tab:gray"), "accuracy": ("D", "tab:green"), "budget": ("o", "tab:blue"),
             "rules": ("^", "tab:orange")}
    for ax, col, label in ((axes[0], "flops", "mean analytic FLOPs per request (log)"),
                           (axes[1], "p99_ms_b1", "p99 latency per request, batch 1 (ms, log)")):
        budget = frame[frame.index.str.startswith("budget")].sort_values(col)
        ax.plot(budget[col], budget["ndcg@10"], "-", color="tab:blue", alpha=0.4)
        for name, row in frame.iterrows():
            marker, color = kinds[name.split()[0]]
            ax.plot(row[col], row["ndcg@10"], marker, color=color, ms=7)
            ax.annotate(name, (row[col], row["ndcg@10"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ref = frame.loc[f"all {best}"]
        ax.axhline(0.98 * ref["ndcg@10"], color="tab:red", lw=0.8, ls="--")
        if col == "flops":
            ax.axvline(0.30 * ref["flops"], color="tab:red", lw=0.8, ls="--")
            ax.text(0.30 * ref["flops"], ax.get_ylim()[0], " 30% FLOPs", color="tab:red", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test NDCG@10")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"98% of all-{best} NDCG@10 (red)", fontsize=9)
    fig.tight_layout()
    paths = []
    for ext in ("svg", "png"):
        path = out_base.with_suffix(f".{ext}")
        fig.savefig(path, dpi=120)
        paths.append(path)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="/tmp/ml100k-run", help="run directory (segrec run --out)")
    parser.add_argument("--fractions", default="0.02,0.05,0.1,0.2,0.3,0.5,0.75",
                        help="budget fractions of the best tier's mean FLOPs")
    parser.add_argument("--latency-calls", type=int, default=300, help="most batch-1 calls per point")
    parser.add_argument("--latency-seconds", type=float, default=3.0,
                        help="most seconds of latency per point")
    parser.add_argument("--no-system-costs", action="store_true", help="skip the per-system cost table")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while measuring (default 1, as `segrec serve` uses)")
    parser.add_argument("--out", default=str(RESULTS / "bench_frontier.json"))
    args = parser.parse_args(argv)

    from segrec.artifacts import load_run
    from segrec.evaluate import evaluate
    from segrec.evaluate.cost import cost_table, measure_latency
    from segrec.route import routing_summary

    start = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run = load_run(args.run)
    if "segmented" not in run.system_names:
        print(f"{args.run}: no 'segmented' system; run `segrec run` with it in --systems", file=sys.stderr)
        return 2
    model = run.system("segmented")
    if model.validation_ is None or "flops" not in model.validation_:
        print(f"{args.run}: the segmented system has no validation costs; re-run `segrec run`",
              file=sys.stderr)
        return 2
    split = _split_of(run)
    seg_table = run.segments()
    segments = (pd.Series(seg_table["segment"].to_numpy(), index=seg_table["user_id"].astype(str))
                .reindex(split.test.user_vocab.ids).fillna(-1).to_numpy(np.int64))
    test_users = np.flatnonzero(np.diff(split.test.to_csr().indptr) > 0)
    rng = np.random.default_rng(0)
    latency_users = rng.permutation(test_users)
    fractions = [float(f) for f in args.fractions.split(",") if f]

    rows = []
    for label, routed in _points(model, fractions):
        report = evaluate(routed, split, segments=segments, ks=(10,), system=label)
        flops = routed.flops_per_user(test_users)
        lat = measure_latency(routed, latency_users, batch_size=1, max_calls=args.latency_calls,
                              max_seconds=args.latency_seconds)
        valid = routing_summary(model.validation_, routed.routing_)
        rows.append({"point": label, "ndcg@10": report.overall["ndcg@10"], "flops": float(np.mean(flops)),
                     "p50_ms_b1": lat["p50_ms"], "p99_ms_b1": lat["p99_ms"],
                     "valid_ndcg@10": valid["ndcg@10"], "valid_flops": valid["flops"],
                     "routing": " ".join(f"{s}:{t}" for s, t in sorted(routed.routing_.items()))})
        print(f"  {label}: NDCG@10 {rows[-1]['ndcg@10']:.4f}, {rows[-1]['flops']:.3g} FLOPs", file=sys.stderr,
              flush=True)
    frame = pd.DataFrame(rows).set_index("point")
    best = model.best_tier_cost(model.validation_)[0]
    ref = frame.loc[f"all {best}"]
    frame.insert(1, "ndcg_vs_best", frame["ndcg@10"] / ref["ndcg@10"])
    frame.insert(3, "flops_vs_best", frame["flops"] / ref["flops"])
    hits = frame[(frame.ndcg_vs_best >= 0.98) & (frame.flops_vs_best <= 0.30)]

    systems = None
    if not args.no_system_costs:
        loaded = {name: run.system(name) for name in run.system_names}
        systems = cost_table(loaded, latency_users, max_calls=args.latency_calls,
                             max_seconds=args.latency_seconds)

    with pd.option_context("display.width", 220, "display.max_colwidth", 70, "display.float_format",
                           "{:.4g}".format):
        print(f"== cost-accuracy frontier: {args.run} (test users {len(test_users)}, "
              f"best tier on validation: {best}) ==")
        print(frame.drop(columns="routing").to_string())
        print("\nrouting per point (segment:tier):")
        for name, r in frame["routing"].items():
            print(f"  {name:22s} {r}")
        sizes = seg_table["segment"].value_counts().sort_index()
        print("\nvalidation table (segment, tier -> NDCG@10, mean FLOPs); segment sizes "
              + ", ".join(f"{s}:{n}" for s, n in sizes.items()))
        pivot = model.validation_.pivot(index="segment", columns="tier", values=["ndcg@10", "flops"])
        print(pivot.to_string())
        if systems is not None:
            print("\n== cost per saved system (FLOPs: mean per request over fit users) ==")
            print(systems.to_string())
    verdict = (f"target met by {', '.join(hits.index)}" if len(hits) else
               "target (>= 98% of the best tier's NDCG@10 at <= 30% of its FLOPs) not met by any point")
    print(f"\n{verdict}")
    paths = _plot(frame, best, Path(args.out).with_name("frontier"))
    record = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "commit": _commit(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                         "python": platform.python_version()},
        "parameters": {"run": args.run, "fractions": fractions, "latency_calls": args.latency_calls,
                       "torch_threads": args.threads},
        "best_tier": best, "frontier": frame.reset_index().to_dict(orient="records"),
        "validation": model.validation_.to_dict(orient="records"),
        "systems": None if systems is None else systems.reset_index().to_dict(orient="records"),
        "target_met_by": list(hits.index), "plots": [str(p) for p in paths],
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2, default=float))
    print(f"wrote {args.out}, " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
