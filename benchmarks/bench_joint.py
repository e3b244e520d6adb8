"""Joint θ_shared + θ_k training (issue 17) against the global Transformer, on the protocol split.

    python benchmarks/bench_joint.py --data ../shared/data/amazon-scientific
    python benchmarks/bench_joint.py --data synthetic
    python benchmarks/bench_joint.py --data ../shared/data/ml-100k --variants gate,lora

Protocol: ``temporal_split``; users are segmented on train only (the run's default
k-means with K chosen by silhouette, without the MiniLM text block; ``--method gmm``
gives posteriors, and then every variant is fitted with hard *and* soft segments).
Every model picks its epochs on its own inner validation (train -> valid, never test)
and refits on train ∪ valid. Rows: the global ``TransformerRecommender``, each
``JointTransformerRecommender`` variant and (``--adapters``, on by default for synthetic)
the post-hoc ``AdaptedTransformerRecommender`` on the same global model. For each:
test NDCG@10 overall, per segment and per activity tercile, the paired 95% bootstrap
CI of its difference from the global model (and for the joint rows, from the
adapters), its inner-valid NDCG@10 (what a router would choose by) and its fit
wall seconds with ``uptime`` beside them (the machine is shared: ratios, not
absolutes). Writes benchmarks/results/bench_joint.json (one entry per dataset, and
segmentation method when not k-means, and seed when not 0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import git_commit
from segrec.data import load_interactions
from segrec.data.synthetic import generate_synthetic
from segrec.evaluate import bootstrap_diff, evaluate
from segrec.models import FitContext
from segrec.models.adapters import AdaptedTransformerRecommender
from segrec.models.joint import JointTransformerRecommender
from segrec.models.transformer import TransformerRecommender
from segrec.segment import SegmentationPipeline
from segrec.split import temporal_split

OUT = Path(__file__).parent / "results" / "bench_joint.json"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _data(name: str, seed: int):
    if name == "synthetic":  # the data of `segrec run` without --data
        synth = generate_synthetic(n_users=1000, n_items=500, n_segments=4, seed=seed)
        return "synthetic", synth.to_interactions()
    folder = Path(name)
    if not (folder / "interactions.csv").exists():
        return folder.name, None
    return folder.name, load_interactions(folder / "interactions.csv")


def _fit(model, split, ctx=None):
    start = time.perf_counter()
    model.fit(split.train, valid=split.valid, context=ctx)
    return model, time.perf_counter() - start, _uptime()


def _ci(a, b, by=None) -> dict:
    table = bootstrap_diff(a, b, "ndcg@10", by=by)
    return {str(k): {c: float(v) for c, v in row.items()} for k, row in table.iterrows()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on one dataset; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with interactions.csv, or 'synthetic'")
    parser.add_argument("--variants", default="gate,star,lora")
    parser.add_argument("--method", default="kmeans", help="segmentation method (gmm: soft segments too)")
    parser.add_argument("--n-segments", default="auto")
    parser.add_argument("--adapters", choices=("auto", "yes", "no"), default="auto",
                        help="also fit the post-hoc adapters (auto: on synthetic data)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    name, data = _data(args.data, args.seed)
    if data is None:
        print(f"skip: {Path(args.data) / 'interactions.csv'} not found")
        return 0
    t0 = time.perf_counter()
    split = temporal_split(data)
    k = args.n_segments if args.n_segments == "auto" else int(args.n_segments)
    seg = SegmentationPipeline.build(args.method, n_segments=k, random_state=args.seed, text=False)
    seg.fit(split.train)
    segments = np.asarray(seg.segmentation_.labels, np.int64)
    probs = seg.segmenter_.membership(seg.features_)
    print(f"{name}: {split.train.n_users} users, {split.train.n_items} items; {args.method} K="
          f"{seg.segmentation_.n_segments} sizes {np.bincount(segments[segments >= 0]).tolist()}; "
          f"posteriors: {'yes' if probs is not None else 'no (hard segments only)'}", flush=True)

    rows: dict[str, dict] = {}
    reports = {}

    def record(label, model, seconds, up):
        rep = evaluate(model, split, segments=segments, system=label)
        reports[label] = rep
        rows[label] = {"fit_seconds": seconds, "uptime": up, "ndcg@10": rep.overall["ndcg@10"],
                       "inner_valid_ndcg@10": float(getattr(model, "inner_score_", float("nan"))),
                       "best_epoch": getattr(model, "best_epoch_", None),
                       "fit_timings": dict(model.fit_timings_ or {}),
                       "param_ratio": getattr(model, "param_ratio_", None),
                       "by_segment": rep.by("segment", ["ndcg@10"])["ndcg@10"].to_dict(),
                       "by_activity": rep.by("activity", ["ndcg@10"])["ndcg@10"].to_dict()}
        print(f"  {label:<22} NDCG@10 {rep.overall['ndcg@10']:.4f}  inner-valid "
              f"{rows[label]['inner_valid_ndcg@10']:.4f}  fit {seconds:6.1f} s  | {up}", flush=True)

    g, s, up = _fit(TransformerRecommender(random_state=args.seed), split)
    record("transformer", g, s, up)
    if args.adapters == "yes" or (args.adapters == "auto" and name == "synthetic"):
        a, s, up = _fit(AdaptedTransformerRecommender(random_state=args.seed), split,
                        FitContext(segments=segments, shared={"transformer": g}))
        record("adapted_transformer", a, s, up)
    modes = [("hard", None)] + ([("soft", probs)] if probs is not None else [])
    for variant in args.variants.split(","):
        for mode, p in modes:
            model = JointTransformerRecommender(variant=variant, random_state=args.seed,
                                                soft="auto" if mode == "soft" else "hard")
            m, s, up = _fit(model, split, FitContext(segments=segments, segment_probs=p))
            record(f"joint_{variant}_{mode}", m, s, up)

    comparisons = {}
    base = reports["transformer"]
    for label, rep in reports.items():
        if label == "transformer":
            continue
        comparisons[label] = {"vs": "transformer", "overall": _ci(rep, base)["all"],
                              "by_segment": _ci(rep, base, "segment"),
                              "by_activity": _ci(rep, base, "activity")}
        if label.startswith("joint") and "adapted_transformer" in reports:
            comparisons[label]["vs_adapters"] = _ci(rep, reports["adapted_transformer"])["all"]
    inner = {k: v["inner_valid_ndcg@10"] for k, v in rows.items() if np.isfinite(v["inner_valid_ndcg@10"])}
    chosen = max(inner, key=inner.get) if inner else None  # chosen on inner validation, never test

    print(f"\n== {name}: test NDCG@10, difference from the global Transformer (paired 95% bootstrap CI) ==")
    table = []
    for label, r in rows.items():
        c = comparisons.get(label, {}).get("overall")
        ad = comparisons.get(label, {}).get("vs_adapters")
        table.append({"system": label, "ndcg@10": r["ndcg@10"], "inner-valid": r["inner_valid_ndcg@10"],
                      "diff": c["diff"] if c else np.nan,
                      "95% CI": f"[{c['lo']:+.4f}, {c['hi']:+.4f}]" if c else "",
                      "vs adapters": f"{ad['diff']:+.4f} [{ad['lo']:+.4f}, {ad['hi']:+.4f}]" if ad else "",
                      "fit s": r["fit_seconds"],
                      "fit / global": r["fit_seconds"] / rows["transformer"]["fit_seconds"],
                      "best epoch": r["best_epoch"]})
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 200,
                           "display.max_columns", 20):
        print(pd.DataFrame(table).set_index("system").to_string())
        for part in ("by_segment", "by_activity"):
            print(f"\n-- {part.replace('_', ' ')}: diff from the global [95% CI] --")
            cells = {label: {g: f"{v['diff']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}] (n={int(v['users'])})"
                             for g, v in comp[part].items()} for label, comp in comparisons.items()}
            print(pd.DataFrame(cells).to_string())
    print(f"\nchosen on inner validation: {chosen}")

    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    key = name + ("" if args.method == "kmeans" else f" ({args.method})") + \
        ("" if args.seed == 0 else f" seed {args.seed}")
    results[key] = {"command": " ".join(["python", *sys.argv]), "commit": git_commit(),
                     "segmentation": {"method": args.method, "n_segments": int(seg.segmentation_.n_segments),
                                      "sizes": np.bincount(segments[segments >= 0]).tolist(),
                                      "posteriors": probs is not None, "text": False},
                     "rows": rows, "comparisons": comparisons, "chosen_on_inner_valid": chosen,
                     "seconds": time.perf_counter() - t0}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(OUT)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
