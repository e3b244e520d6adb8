"""Joint θ_shared + θ_k training (issue 17) against the global Transformer, on the protocol split.

    python benchmarks/bench_joint.py --data ../shared/data/amazon-scientific --seeds 0,1,2
    python benchmarks/bench_joint.py --data synthetic --seeds 0,1,2      # + the post-hoc adapters
    python benchmarks/bench_joint.py --data ../shared/data/ml-100k --seeds 0,1,2 --scratch-seeds 0
    python benchmarks/bench_joint.py --data ../shared/data/amazon-scientific --method gmm   # + posteriors

Protocol: ``temporal_split``; users are segmented on train only (the run's default
k-means with K chosen by silhouette, without the MiniLM text block; ``--method gmm``
gives posteriors, and then the variants are also fitted with soft segments). Every
model picks its epochs on its own inner validation (train -> valid, never test) and
refits on train ∪ valid.

Rows, per seed (the seed of the models and of the segmenter; the split is fixed):

* ``transformer``: the global ``TransformerRecommender``;
* ``adapted_transformer`` (``--adapters``, on by default for synthetic): the post-hoc
  adapters on that global model;
* ``joint_<variant>[+activity]_<mode>``: ``JointTransformerRecommender`` started from
  that global model (``init="auto"``, the default in a run, where the global model is
  fitted anyway): mode ``hard`` (one-hot segments), ``soft`` (GMM posteriors) or
  ``history`` (the learned gate on the history); ``+activity`` adds the activity feature;
* ``joint_control``: the same warm-started joint run with *no* segments (every user's
  θ_k weight is 0, so only θ_shared trains, at the same rate, with the same loss):
  what the continued training alone buys, which is what segment parameters must beat;
* ``..._scratch`` (seeds in ``--scratch-seeds``, hard segments): θ_shared and θ_k
  trained together from a random init (``init="scratch"``); ``joint_control_scratch``
  is that run without segments (the joint loss's consistency term alone).

Modes other than ``hard`` are fitted for ``--soft-variants`` (default: gate) only.

For each: test NDCG@10 overall, per segment and per activity tercile, the paired 95%
bootstrap CI of its difference from the global model (and from the control, and the
adapters), its inner-valid NDCG@10 (what a router would choose by) and its fit wall
seconds with ``uptime`` beside them; for a warm-started row the seconds are its own, on
top of the global fit it starts from (``fit / global`` says both). With several seeds a
summary follows: per system the mean over seeds, and a paired bootstrap CI of the
per-user differences averaged over the seeds. Writes benchmarks/results/bench_joint.json
(one entry per dataset and segmentation method).
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

from _common import git_commit, write_json
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


def _data(name: str, users: bool):
    if name == "synthetic":  # the data of `segrec run` without --data
        synth = generate_synthetic(n_users=1000, n_items=500, n_segments=4, seed=0)
        return "synthetic", synth.to_interactions()
    folder = Path(name)
    if not (folder / "interactions.csv").exists():
        return folder.name, None
    table = folder / "users.csv" if users and (folder / "users.csv").exists() else None
    return folder.name, load_interactions(folder / "interactions.csv", users=table)


def _fit(model, split, ctx=None):
    start = time.perf_counter()
    model.fit(split.train, valid=split.valid, context=ctx)
    return model, time.perf_counter() - start, _uptime()


def _ci(a, b, by=None) -> dict:
    table = bootstrap_diff(a, b, "ndcg@10", by=by)
    return {str(k): {c: float(v) for c, v in row.items()} for k, row in table.iterrows()}


def _fmt(c: dict | None) -> str:
    return f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]" if c else ""


def run_seed(split, seed: int, args, name: str) -> tuple[dict, dict]:
    """Every row for one seed: (JSON entry, reports by label)."""
    k = args.n_segments if args.n_segments == "auto" else int(args.n_segments)
    seg = SegmentationPipeline.build(args.method, n_segments=k, random_state=seed, text=False)
    seg.fit(split.train)
    segments = np.asarray(seg.segmentation_.labels, np.int64)
    probs = seg.segmenter_.membership(seg.features_)
    sizes = np.bincount(segments[segments >= 0]).tolist()
    print(f"{name} seed {seed}: {split.train.n_users} users, {split.train.n_items} items; {args.method} "
          f"({', '.join(b.name for b in seg.features.blocks_)}) K="
          f"{seg.segmentation_.n_segments} sizes {sizes}; posteriors: "
          f"{'yes' if probs is not None else 'no'}", flush=True)
    rows: dict[str, dict] = {}
    reports = {}

    def record(label, model, seconds, up):
        rep = evaluate(model, split, segments=segments, system=label)
        reports[label] = rep
        rows[label] = {"fit_seconds": seconds, "uptime": up, "ndcg@10": rep.overall["ndcg@10"],
                       "inner_valid_ndcg@10": float(getattr(model, "inner_score_", float("nan"))),
                       "best_epoch": getattr(model, "best_epoch_", None),
                       "joint_epochs": getattr(model, "joint_epochs_", None),
                       "init": getattr(model, "init_", None),
                       "fit_timings": dict(model.fit_timings_ or {}),
                       "param_ratio": getattr(model, "param_ratio_", None),
                       "by_segment": {str(k): float(v) for k, v in
                                      rep.by("segment", ["ndcg@10"])["ndcg@10"].items()},
                       "by_activity": {str(k): float(v) for k, v in
                                       rep.by("activity", ["ndcg@10"])["ndcg@10"].items()}}
        print(f"  {label:<30} NDCG@10 {rep.overall['ndcg@10']:.4f}  inner-valid "
              f"{rows[label]['inner_valid_ndcg@10']:.4f}  fit {seconds:6.1f} s  | {up}", flush=True)

    g, s, up = _fit(TransformerRecommender(random_state=seed), split)
    record("transformer", g, s, up)
    if args.adapters == "yes" or (args.adapters == "auto" and name == "synthetic"):
        a, s, up = _fit(AdaptedTransformerRecommender(random_state=seed), split,
                        FitContext(segments=segments, shared={"transformer": g}))
        record("adapted_transformer", a, s, up)
    modes = args.modes.split(",") if args.modes != "auto" else \
        ["hard"] + (["soft"] if probs is not None else []) + ["history"]
    inits = ["global"] + (["scratch"] if seed in args.scratch_seeds else [])
    # no segments: what the continued training (from scratch: the joint loss) alone buys
    plan = [("control", "hard", init) for init in inits]
    soft_variants = set(args.soft_variants.split(","))
    for init in inits:
        for v in args.variants.split(","):
            if init == "scratch" and "+" in v:
                continue
            for mode in modes:
                if mode == "hard" or (v in soft_variants and init == "global"):
                    plan.append((v, mode, init))
    for v, mode, init in plan:
        variant, _, feature = v.partition("+")
        model = JointTransformerRecommender(
            variant="gate" if variant == "control" else variant, random_state=seed,
            init="auto" if init == "global" else "scratch",
            soft={"hard": "hard", "soft": "auto", "history": "history"}[mode],
            user_features="activity" if feature == "activity" else "none")
        segs = np.full_like(segments, -1) if variant == "control" else segments
        ctx = FitContext(segments=segs, segment_probs=probs if mode == "soft" else None,
                         shared={"transformer": g} if init == "global" else {})
        m, s, up = _fit(model, split, ctx)
        label = "joint_control" if variant == "control" else f"joint_{v}_{mode}"
        record(label + ("" if init == "global" else "_scratch"), m, s, up)

    comparisons = {}
    base = reports["transformer"]
    for label, rep in reports.items():
        if label == "transformer":
            continue
        comparisons[label] = {"vs": "transformer", "overall": _ci(rep, base)["all"],
                              "by_segment": _ci(rep, base, "segment"),
                              "by_activity": _ci(rep, base, "activity")}
        control = "joint_control" + ("_scratch" if label.endswith("_scratch") else "")
        if label.startswith("joint") and not label.startswith("joint_control") and control in reports:
            comparisons[label]["vs_control"] = _ci(rep, reports[control])["all"]
        if label.startswith("joint") and "adapted_transformer" in reports:
            comparisons[label]["vs_adapters"] = _ci(rep, reports["adapted_transformer"])["all"]
    inner = {k: v["inner_valid_ndcg@10"] for k, v in rows.items() if np.isfinite(v["inner_valid_ndcg@10"])}
    chosen = max(inner, key=inner.get) if inner else None  # chosen on inner validation, never test
    _print_seed(name, seed, rows, comparisons, chosen)
    entry = {"segmentation": {"method": args.method, "n_segments": int(seg.segmentation_.n_segments),
                              "blocks": [b.name for b in seg.features.blocks_],
                              "sizes": sizes, "posteriors": probs is not None, "text": False},
             "rows": rows, "comparisons": comparisons, "chosen_on_inner_valid": chosen}
    return entry, reports


def _print_seed(name, seed, rows, comparisons, chosen) -> None:
    print(f"\n== {name} seed {seed}: test NDCG@10, difference from the global Transformer "
          "(paired 95% bootstrap CI) ==")
    table = []
    g = rows["transformer"]["fit_seconds"]
    for label, r in rows.items():
        c = comparisons.get(label, {})
        table.append({"system": label, "ndcg@10": r["ndcg@10"], "inner-valid": r["inner_valid_ndcg@10"],
                      "vs global": _fmt(c.get("overall")), "vs control": _fmt(c.get("vs_control")),
                      "vs adapters": _fmt(c.get("vs_adapters")), "fit s": r["fit_seconds"],
                      "fit / global": r["fit_seconds"] / g, "joint epochs": r["joint_epochs"]})
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 250,
                           "display.max_columns", 20, "display.max_colwidth", 40):
        print(pd.DataFrame(table).set_index("system").to_string())
        for part in ("by_segment", "by_activity"):
            print(f"\n-- {part.replace('_', ' ')}: diff from the global [95% CI] --")
            cells = {label: {k: f"{_fmt(v)} (n={int(v['users'])})" for k, v in comp[part].items()}
                     for label, comp in comparisons.items()}
            print(pd.DataFrame(cells).T.to_string())
    print(f"\nchosen on inner validation: {chosen}\n", flush=True)


def _pooled(reports: list[dict], a: str, b: str, n_boot: int = 2000) -> dict:
    """Paired bootstrap CI of a - b on the per-user NDCG@10 averaged over the seeds that have both."""
    runs = [r for r in reports if a in r and b in r]
    if not runs:
        return {}
    per = [r[a].per_user[["user", "ndcg@10", "activity"]].merge(r[b].per_user[["user", "ndcg@10"]], on="user")
           for r in runs]
    d = np.mean([(p["ndcg@10_x"] - p["ndcg@10_y"]).to_numpy() for p in per], axis=0)
    activity = per[0]["activity"].to_numpy()
    rng = np.random.default_rng(0)
    out = {}
    groups = [("all", np.ones(len(d), bool))] + [(t, activity == t) for t in ("light", "medium", "heavy")]
    for group, mask in groups:
        x = d[mask]
        boots = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
        lo, hi = np.quantile(boots, [0.025, 0.975])
        out[group] = {"users": int(mask.sum()), "diff": float(x.mean()), "lo": float(lo), "hi": float(hi)}
    out["seeds"] = len(runs)
    return out


def summary(name: str, entries: dict, reports: list[dict]) -> dict:
    """Mean over seeds per system, and pooled CIs against the global model and the control."""
    labels = list(dict.fromkeys(label for e in entries.values() for label in e["rows"]))
    out = {}
    for label in labels:
        rs = [e["rows"][label] for e in entries.values() if label in e["rows"]]
        g = [e["rows"]["transformer"]["fit_seconds"] for e in entries.values() if label in e["rows"]]
        out[label] = {"seeds": len(rs), "ndcg@10": float(np.mean([r["ndcg@10"] for r in rs])),
                      "inner_valid_ndcg@10": float(np.mean([r["inner_valid_ndcg@10"] for r in rs])),
                      "fit_over_global": float(np.mean([r["fit_seconds"] / x
                                                        for r, x in zip(rs, g, strict=True)])),
                      "chosen_on_inner_valid": sum(e["chosen_on_inner_valid"] == label
                                                   for e in entries.values())}
        if label != "transformer":
            out[label]["vs_global"] = _pooled(reports, label, "transformer")
        control = "joint_control" + ("_scratch" if label.endswith("_scratch") else "")
        if label.startswith("joint") and not label.startswith("joint_control"):
            out[label]["vs_control"] = _pooled(reports, label, control)
        if label.startswith("joint") and any("adapted_transformer" in r for r in reports):
            out[label]["vs_adapters"] = _pooled(reports, label, "adapted_transformer")
    print(f"== {name}: mean over {len(entries)} seeds; CIs pool the per-user differences averaged over "
          "the seeds ==")
    table = [{"system": k, "seeds": v["seeds"], "ndcg@10": v["ndcg@10"],
              "inner-valid": v["inner_valid_ndcg@10"],
              "vs global": _fmt(v.get("vs_global", {}).get("all")),
              "vs control": _fmt(v.get("vs_control", {}).get("all")),
              "vs adapters": _fmt(v.get("vs_adapters", {}).get("all")),
              "fit / global": v["fit_over_global"], "chosen": v["chosen_on_inner_valid"]}
             for k, v in out.items()]
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 250,
                           "display.max_columns", 20, "display.max_colwidth", 40):
        print(pd.DataFrame(table).set_index("system").to_string())
        cells = {k: {t: _fmt(v["vs_global"].get(t)) for t in ("light", "medium", "heavy")}
                 for k, v in out.items() if v.get("vs_global")}
        print("\n-- by activity tercile, vs the global (pooled over seeds) --")
        print(pd.DataFrame(cells).T.to_string())
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on one dataset; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with interactions.csv, or 'synthetic'")
    parser.add_argument("--variants", default="gate,star,lora,gate+activity",
                        help="θ_k forms; '+activity' adds the activity feature (hard segments)")
    parser.add_argument("--modes", default="auto",
                        help="hard,soft,history (auto: hard, soft where the segmenter gives posteriors, "
                             "history)")
    parser.add_argument("--soft-variants", default="gate",
                        help="the variants also fitted in the modes besides hard (started from the global)")
    parser.add_argument("--method", default="kmeans", help="segmentation method (gmm: posteriors)")
    parser.add_argument("--n-segments", default="auto")
    parser.add_argument("--users", action="store_true",
                        help="attach the folder's users.csv: the segmenter's features gain the demographics "
                             "block, information a user's history does not hold")
    parser.add_argument("--adapters", choices=("auto", "yes", "no"), default="auto",
                        help="also fit the post-hoc adapters (auto: on synthetic data)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--scratch-seeds", default="0",
                        help="seeds that also train each variant from scratch (init='scratch'); '' = none")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file to add this run's entry to")
    parser.add_argument("--tag", default="", help="appended to this run's key in the JSON file")
    args = parser.parse_args(argv)
    args.scratch_seeds = {int(x) for x in args.scratch_seeds.split(",") if x != ""}
    name, data = _data(args.data, args.users)
    if data is None:
        print(f"skip: {Path(args.data) / 'interactions.csv'} not found")
        return 0
    t0 = time.perf_counter()
    split = temporal_split(data)
    entries, reports = {}, []
    for seed in (int(x) for x in args.seeds.split(",")):
        entry, reps = run_seed(split, seed, args, name)
        entries[f"seed {seed}"] = entry
        reports.append(reps)
    pooled = summary(name, entries, reports)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    key = name + ("" if args.method == "kmeans" else f" ({args.method})")
    key += (" + demographics" if args.users else "") + (f" {args.tag}" if args.tag else "")
    results[key] = {"command": " ".join(["python", *sys.argv]), "commit": git_commit(), "seeds": entries,
                    "summary": pooled, "seconds": time.perf_counter() - t0}
    write_json(args.out, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
