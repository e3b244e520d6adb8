"""Segmentation on ml-100k: method x K with quality, stability, time and downstream NDCG.

For each method and K: silhouette (feature space), stability ARI (bootstrap resamples,
different seeds), segment sizes, fit time, and the inner-validation NDCG@10 of
per-segment EASE against one global EASE, before and after the GLSLIM-style
recommendation-optimised reassignment (held-out tail of the fit data, never test).

    python benchmarks/bench_segment.py [--methods kmeans,gmm] [--ks 2,4,8] [--no-reassign]

Skips cleanly when ../shared/data/ml-100k is absent. Writes benchmarks/results/bench_segment.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-100k"
OUT = Path(__file__).resolve().parent / "results" / "bench_segment.json"


def load(path: Path):
    from segrec.split import temporal_split
    from segrec.types import Interactions, Vocabulary

    try:
        from segrec.data import load_interactions

        data = load_interactions(
            path / "interactions.csv", items=path / "items.csv", users=path / "users.csv"
        )
    except ImportError:  # before the data layer landed: the /tmp/quick.py way
        df = pd.read_csv(path / "interactions.csv", dtype={"user_id": str, "item_id": str})
        items = pd.read_csv(path / "items.csv", dtype={"item_id": str})
        users = pd.read_csv(path / "users.csv", dtype={"user_id": str})
        uv, iv = Vocabulary(pd.unique(df.user_id)), Vocabulary(pd.unique(df.item_id))
        data = Interactions.from_arrays(
            uv.index(df.user_id),
            iv.index(df.item_id),
            ratings=df.rating,
            timestamps=df.timestamp,
            user_vocab=uv,
            item_vocab=iv,
            item_table=items.set_index("item_id").reindex(iv.ids).reset_index(),
            user_table=users.set_index("user_id").reindex(uv.ids).reset_index(),
        )
    return temporal_split(data)


def make_segmenter(method: str, k: int, seed: int):
    from segrec.segment import make_segmenter

    params = {"random_state": seed}
    if method == "vae":
        params["epochs"] = 40
    return make_segmenter(method, n_segments=k, **params)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--methods", default="kmeans,gmm,agglomerative,spectral,vae,tiers")
    ap.add_argument("--ks", default="2,4,8")
    ap.add_argument("--reg", type=float, default=100.0, help="EASE lambda (ANCHORS: 100 on ml-100k)")
    ap.add_argument("--stability-runs", type=int, default=3)
    ap.add_argument("--reassign-iter", type=int, default=3)
    ap.add_argument("--no-reassign", action="store_true")
    ap.add_argument("--embedder", default="minilm", choices=["minilm", "hashing"])
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parent / "results" / ".emb-cache"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    path = Path(args.data)
    if not (path / "interactions.csv").exists():
        print(f"skip: {path} not found (ml-100k is never committed; see ../shared/data)")
        return 0
    warnings.simplefilter("ignore")
    from segrec.features import FeaturePipeline, HashingEmbedder, SentenceTransformerEmbedder
    from segrec.segment import optimize_segments, segment_ndcg, stability_ari
    from segrec.split import holdout_split

    split = load(path)
    fit = split.fit  # the protocol's fit data; test is never touched here
    embedder = HashingEmbedder(64) if args.embedder == "hashing" else SentenceTransformerEmbedder()
    t0 = time.perf_counter()
    pipe = FeaturePipeline(
        blocks=("behavior", "demographics", "text", "svd"), embedder=embedder, cache_dir=args.cache
    )
    feats = pipe.fit_transform(fit)
    feat_seconds = time.perf_counter() - t0
    inner_train, inner_valid = holdout_split(fit, 0.1)
    rows = []
    for method in args.methods.split(","):
        for k in [int(x) for x in args.ks.split(",")]:
            if method == "tiers" and rows and rows[-1]["method"] == "tiers":
                continue  # tiers decide their own K
            seg = make_segmenter(method, k, args.seed)
            start = time.perf_counter()
            seg.fit(feats)
            fit_s = time.perf_counter() - start
            s = seg.segmentation_
            row = {
                "method": method,
                "k": s.n_segments,
                "silhouette": s.metrics["silhouette"],
                "sizes": s.sizes().tolist(),
                "fit_s": fit_s,
            }
            row["stability_ari"] = (
                stability_ari(seg, feats, s.n_segments, n_runs=args.stability_runs, random_state=args.seed)
                if method != "tiers"
                else 1.0
            )
            down = segment_ndcg(s.labels, inner_train, inner_valid, reg=args.reg)
            row["global_ndcg"] = down.global_
            row["seg_ndcg"] = down.segmented
            if not args.no_reassign:
                start = time.perf_counter()
                res = optimize_segments(s.labels, fit, reg=args.reg, max_iter=args.reassign_iter)
                row.update(
                    {
                        "heldout_global": res.heldout_global,
                        "heldout_before": res.heldout_before,
                        "heldout_after": res.heldout_after,
                        "objective_before": res.objective_before,
                        "objective_after": res.objective_after,
                        "moved": int((res.labels != res.initial_labels).sum()),
                        "reassign_s": time.perf_counter() - start,
                    }
                )
            rows.append(row)
            print(
                f"{method:>13} K={row['k']:<2} sil {row['silhouette']:.3f} stab {row['stability_ari']:.3f} "
                f"fit {fit_s:.2f}s",
                file=sys.stderr,
            )
    table = pd.DataFrame(rows)
    show = table.copy()
    show["sizes"] = show["sizes"].map(lambda v: "/".join(map(str, v)))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(show.round(4).to_string(index=False))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "commit": commit,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
        },
        "parameters": vars(args)
        | {
            "features": list(feats.blocks),
            "n_features": feats.n_features,
            "feature_seconds": feat_seconds,
            "users": fit.n_users,
        },
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
