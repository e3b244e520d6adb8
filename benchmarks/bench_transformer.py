"""Global Transformer and segment adapters on ml-100k: quality, size table, adapted vs global.

    python benchmarks/bench_transformer.py [--data ../shared/data/ml-100k] [--quick]
        [--sizes 64x2,128x2,64x4] [--segments FILE.csv] [--n-segments 3]
        [--device cpu|cuda] [--threads 2]

1. The default TransformerRecommender under the protocol (fit on train with early
   stopping on valid, refit on train ∪ valid, test on test): NDCG@10 overall and per
   activity tercile, fit time, epochs, against ANCHORS.md's SASRec+ row (0.1693).
2. A size table (embedding_size x n_layers): NDCG@10, parameters, fit time. To keep
   it affordable on 2 CPU cores these runs skip the refit (trained on train only,
   early-stopped on valid, scored from the train ∪ valid history), which is slightly
   pessimistic; the default model's row is the refitted one.
3. Global vs segment-adapted (AdaptedTransformerRecommender on the same global model),
   per segment, with paired 95% bootstrap CIs of NDCG@10 (adapted - global). Segments
   come from ``--segments`` (CSV ``user_id,segment``), or KMeans on the users'
   SVD-reduced train rows (fit on train only), or activity tiers (``--segments tiers``).

Prints the tables and writes benchmarks/results/bench_transformer.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segrec.evaluate import bootstrap_diff, evaluate
from segrec.models.adapters import AdaptedTransformerRecommender
from segrec.models.transformer import TransformerRecommender
from segrec.split import temporal_split

ANCHOR_SASREC = 0.1693
ANCHOR_TERCILES = {"light": 0.1832, "medium": 0.1434, "heavy": 0.1805}


def load_data(folder: Path):
    """ml-100k through segrec.data.load_interactions (pandas fallback if absent)."""
    inter = folder / "interactions.csv"
    try:
        from segrec.data import load_interactions

        items = folder / "items.csv"
        return load_interactions(inter, items=items if items.exists() else None)
    except ImportError:
        from segrec.types import Interactions, Vocabulary

        df = pd.read_csv(inter, dtype={"user_id": str, "item_id": str})
        uv, iv = Vocabulary(pd.unique(df.user_id)), Vocabulary(pd.unique(df.item_id))
        return Interactions.from_arrays(uv.index(df.user_id), iv.index(df.item_id), ratings=df.rating,
                                        timestamps=df.timestamp, user_vocab=uv, item_vocab=iv)


def make_segments(split, spec: str | None, n_segments: int, seed: int) -> tuple[np.ndarray, str]:
    """Segment per dense user: from a CSV, activity tiers, or KMeans on SVD of train rows."""
    train = split.train
    if spec and spec != "tiers":
        frame = pd.read_csv(spec, dtype={"user_id": str})
        seg = np.full(train.n_users, -1, np.int64)
        idx = train.user_vocab.index(frame["user_id"].to_numpy())
        seg[idx[idx >= 0]] = frame["segment"].to_numpy()[idx >= 0]
        return seg, f"file {spec}"
    if spec == "tiers":
        from segrec.evaluate import activity_terciles

        labels, _ = activity_terciles(train.user_counts())
        return pd.Categorical(labels, ["light", "medium", "heavy"]).codes.astype(np.int64), "activity tiers"
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    x = normalize(train.to_csr())  # rows of unit length: taste, not activity
    z = normalize(TruncatedSVD(32, random_state=seed).fit_transform(x))
    seg = KMeans(n_segments, n_init=10, random_state=seed).fit_predict(z).astype(np.int64)
    return seg, f"KMeans(K={n_segments}) on 32-d SVD of train rows"


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:
        return "unknown"


def row(report, model, seconds) -> dict:
    terc = report.by("activity")["ndcg@10"]
    return {
        "ndcg@10": report.overall["ndcg@10"], "recall@10": report.overall["recall@10"],
        "hit_rate@10": report.overall["hit_rate@10"], "mrr@10": report.overall["mrr@10"],
        "ndcg@20": report.overall["ndcg@20"], "coverage@10": report.overall["coverage@10"],
        **{f"ndcg@10 {t}": float(terc.get(t, np.nan)) for t in ("light", "medium", "heavy")},
        "params": model.net_.n_params(), "fit_s": seconds, "best_epoch": model.best_epoch_,
        "epochs_run": max(len(model.curve_) - 1, 0),
        "s_per_epoch": float(np.mean([c["seconds"] for c in model.curve_[1:]])) if len(model.curve_) > 1
        else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[1].parent / "shared/data/ml-100k"
    parser.add_argument("--data", default=str(default_data))
    parser.add_argument("--synthetic", action="store_true",
                        help="use segrec's synthetic data (planted segments) instead of --data")
    parser.add_argument("--quick", action="store_true", help="small size table, fewer epochs")
    parser.add_argument("--sizes", default="64x2,128x2,64x4", help="embedding_size x n_layers list")
    parser.add_argument("--segments", help="CSV user_id,segment, or 'tiers'; default KMeans")
    parser.add_argument("--n-segments", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="most epochs of every fit (default: the model's)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: main,sizes,adapt")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_transformer.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    folder = Path(args.data)
    skip = set(filter(None, args.skip.split(",")))
    planted = None
    if args.synthetic:
        from segrec.data import generate_synthetic

        synth = generate_synthetic(n_users=2000, n_items=1000, n_segments=4, seed=args.seed)
        data = synth.to_interactions()
        planted = np.full(data.n_users, -1, np.int64)
        idx = data.user_vocab.index(synth.true_segments["user_id"].to_numpy())
        planted[idx] = synth.true_segments["segment"].to_numpy()
        folder = Path("synthetic(n_users=2000, n_items=1000, n_segments=4)")
    elif not (folder / "interactions.csv").exists():
        print(f"skip: {folder / 'interactions.csv'} not found (ml-100k is not shipped)")
        return 0
    else:
        data = load_data(folder)
    split = temporal_split(data)
    common = {"device": args.device, "n_threads": args.threads, "random_state": args.seed}
    if args.quick:
        common.update(epochs=30, patience=5)
    if args.epochs:
        common.update(epochs=args.epochs, patience=min(args.epochs, 10))
    out: dict = {
        "benchmark": "bench_transformer",
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "commit": commit(), "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": args.threads, "device": args.device,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "load_average": os.getloadavg()},
        "data": str(folder), "anchor_sasrec_ndcg@10": ANCHOR_SASREC,
    }

    # 1. the default model under the protocol ------------------------------------
    glob, default_inner = None, None
    if "main" not in skip or "adapt" not in skip:
        model = TransformerRecommender(**common)
        t = time.perf_counter()
        model.fit(split.train, valid=split.valid)
        fit_s = time.perf_counter() - t
        rep = evaluate(model, split, system="transformer")
        out["default"] = {"config": model.config.model_dump(mode="json"), **row(rep, model, fit_s),
                          "inner_valid_ndcg@10": model.inner_score_, "curve": model.curve_}
        glob = model
        if model.inner_params_ is not None:
            # the early-stopping run *is* the no-refit model of this size: score it for the size table
            final = {k: v.detach().clone() for k, v in model.net_.state_dict().items()}
            model.net_.load_state_dict(model.inner_params_)
            r_inner = evaluate(model, split, system="transformer (no refit)")
            model.net_.load_state_dict(final)
            inner_s = float(sum(c["seconds"] for c in model.curve_))
            default_inner = {"valid_ndcg@10": model.inner_score_, **row(r_inner, model, inner_s),
                             "best_epoch": model.best_epoch_}
        d = out["default"]
        print("\nDefault TransformerRecommender (train, early-stopped on valid, refit on train ∪ valid)")
        print(f"  NDCG@10 {d['ndcg@10']:.4f} (anchor SASRec+ {ANCHOR_SASREC})  "
              f"Recall@10 {d['recall@10']:.4f}  HR@10 {d['hit_rate@10']:.4f}  MRR@10 {d['mrr@10']:.4f}  "
              f"NDCG@20 {d['ndcg@20']:.4f}  "
              f"Cov@10 {d['coverage@10']:.3f}")
        print("  per tercile: " + "  ".join(f"{t} {d[f'ndcg@10 {t}']:.4f} (anchor {a})"
                                            for t, a in ANCHOR_TERCILES.items()))
        print(f"  params {d['params']:,}  best epoch {d['best_epoch']}  fit {fit_s:.0f} s "
              f"({d['s_per_epoch']:.1f} s/epoch)")

    # 2. size table ----------------------------------------------------------------
    if "sizes" not in skip:
        sizes = ["64x2", "128x2"] if args.quick else args.sizes.split(",")
        table = []
        for spec in sizes:
            d_model, n_layers = (int(v) for v in spec.split("x"))
            if default_inner is not None and (d_model, n_layers) == (
                    glob.config.embedding_size, glob.config.n_layers):
                table.append({"size": spec, **default_inner})
                continue
            m = TransformerRecommender(**common, embedding_size=d_model, n_layers=n_layers, refit=False)
            t = time.perf_counter()
            m.fit(split.train, valid=split.valid)
            fit_s = time.perf_counter() - t
            r = evaluate(m, split, system=f"transformer {spec}")
            table.append({"size": spec, "valid_ndcg@10": m.inner_score_, **row(r, m, fit_s)})
        out["sizes"] = table
        frame = pd.DataFrame(table).set_index("size")
        cols = ["valid_ndcg@10", "ndcg@10", "ndcg@10 light", "ndcg@10 medium", "ndcg@10 heavy", "params",
                "best_epoch", "s_per_epoch", "fit_s"]
        print("\nSize table (no refit: trained on train, early-stopped on valid)")
        print(frame[cols].round(4).to_string())

    # 3. adapted vs global ----------------------------------------------------------
    if "adapt" not in skip and glob is not None:
        if planted is not None and not args.segments:
            seg, how = planted, "planted segments of the synthetic data"
        else:
            seg, how = make_segments(split, args.segments, args.n_segments, args.seed)
        adapted = AdaptedTransformerRecommender(device=args.device, n_threads=args.threads,
                                                random_state=args.seed,
                                                **({"epochs": args.epochs} if args.epochs else {}))
        t = time.perf_counter()
        adapted.fit(split.train, split.valid, segments=seg, global_model=glob)
        fit_s = time.perf_counter() - t
        rep_a = evaluate(adapted, split, segments=seg, system="adapted_transformer")
        rep_g = evaluate(glob, split, segments=seg, system="transformer")
        ci = bootstrap_diff(rep_a, rep_g, by="segment")
        ci_all = bootstrap_diff(rep_a, rep_g)
        info = pd.DataFrame(adapted.segment_info_).T.drop(columns="users")
        out["adapt"] = {
            "segments": how, "config": adapted.config.model_dump(mode="json", exclude={"global_model"}),
            "rank": adapted.rank_, "param_ratio": adapted.param_ratio_, "fit_s": fit_s,
            "ndcg@10": rep_a.overall["ndcg@10"], "global_ndcg@10": rep_g.overall["ndcg@10"],
            "overall_ci": ci_all.reset_index().to_dict(orient="records"),
            "per_segment": ci.join(info).reset_index().to_dict(orient="records"),
        }
        print(f"\nGlobal vs adapted ({how}; θ_k rank {adapted.rank_}, "
              f"{adapted.param_ratio_:.1%} of θ_shared; adapter fit {fit_s:.0f} s)")
        lo, hi = ci_all["lo"].iloc[0], ci_all["hi"].iloc[0]
        print(f"  overall NDCG@10: adapted {rep_a.overall['ndcg@10']:.4f}  "
              f"global {rep_g.overall['ndcg@10']:.4f}  "
              f"diff {ci_all['diff'].iloc[0]:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        keep = [c for c in ("best_epoch", "valid_ndcg_global", "valid_ndcg_adapted") if c in info]
        show = ci.join(info[keep])
        print(show.round(4).to_string())

    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float), encoding="utf-8")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
