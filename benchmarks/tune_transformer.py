"""Choose the Transformer's training defaults on inner validation (never on test).

    python benchmarks/tune_transformer.py --mode es --datasets ml-100k,amazon-scientific,synth \\
        --grid "batch_tokens=1024,4096;learning_rate=1e-3,3e-3" --label lr-budget
    python benchmarks/tune_transformer.py --mode refit --datasets ml-100k,amazon-scientific,synth

``--mode es``: fit on the protocol's train with early stopping on its valid part and no
refit; the score is the best epoch's valid NDCG@10 (``inner_score_``), with the epochs
and seconds it took. ``--mode refit``: the fit data is the protocol's train alone; the
model carves its own inner split (last 10% per user), early-stops on it, and is then
refitted on all of train each way (none, from scratch for the best number of epochs,
warm start for k epochs); each is scored on the protocol's valid part. The test part is
never read. ``synth`` is ``segrec synth``'s default data; ``synth-ecommerce`` /
``synth-microvideo`` are the scale shapes (settings copied from ``segrec synth --shape``).

Rows are appended per ``--label`` to benchmarks/results/tune_transformer.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import git_commit  # noqa: E402

SHARED = next((p / "shared" / "data" for p in Path(__file__).resolve().parents
               if (p / "shared" / "data").is_dir()), Path("shared/data"))
#: ``segrec synth --shape`` settings (data/synthetic.py SHAPES), repeated so this runs on any checkout
SHAPES = {
    "synth": {},
    "synth-ecommerce": dict(n_users=22_000, n_items=12_000, n_segments=10, n_categories=20,
                            mean_interactions=9.7, min_interactions=5, activity_shape=2.0,
                            popularity_exponent=0.6, sequential_strength=0.3, drift_strength=1.0),
    "synth-microvideo": dict(n_users=50_000, n_items=19_000, n_segments=12, n_categories=20,
                             mean_interactions=7.7, min_interactions=5, activity_shape=2.5,
                             popularity_exponent=0.6, sequential_strength=0.6, drift_strength=1.5,
                             span_days=180),
}


def uptime() -> str:
    """Load averages, printed beside each timing (the machine is shared)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def load(name: str):
    """Interactions of a real dataset under ../shared/data or a synthetic shape."""
    if name in SHAPES:
        from segrec.data import generate_synthetic

        return generate_synthetic(seed=0, **SHAPES[name]).to_interactions()
    from segrec.data import load_interactions

    return load_interactions(SHARED / name / "interactions.csv")


def parse_grid(spec: str) -> list[dict]:
    """``"a=1,2;b=x"`` -> every combination as a dict (values parsed as JSON when they parse)."""
    if not spec:
        return [{}]
    names, values = [], []
    for part in filter(None, spec.split(";")):
        k, vs = part.split("=", 1)
        names.append(k.strip())
        vals = []
        for v in vs.split(","):
            try:
                vals.append(json.loads(v))
            except json.JSONDecodeError:
                vals.append(v)
        values.append(vals)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def run_es(split, cfg: dict) -> dict:
    """Early stopping on the protocol's valid part, no refit: the valid score of the best epoch."""
    from segrec.models.transformer import TransformerRecommender

    model = TransformerRecommender(**{**cfg, "refit": False})
    t = time.perf_counter()
    model.fit(split.train, valid=split.valid)
    seconds = time.perf_counter() - t
    curve = model.curve_
    return {"valid_ndcg@10": model.inner_score_, "best_epoch": model.best_epoch_,
            "epochs_run": max(len(curve) - 1, 0), "es_s": seconds,
            "s_per_epoch": float(np.mean([c["seconds"] for c in curve[1:]])) if len(curve) > 1 else None,
            "curve": [{k: v for k, v in c.items()} for c in curve]}


def run_refit(split, cfg: dict, warm: list[int]) -> dict:
    """Inner split of train, early stopping, then each refit variant scored on the protocol's valid."""
    from segrec.evaluate.ranking import quick_ndcg
    from segrec.models._seqdata import Histories
    from segrec.models.transformer import TransformerRecommender, _score_net
    from segrec.split import holdout_split

    model = TransformerRecommender(**cfg)
    c = model.config
    inner_train, inner_valid = holdout_split(split.train, 0.1)
    t = time.perf_counter()
    net, res = model._train(inner_train, c.epochs, inner_valid)
    es_s = time.perf_counter() - t
    best = max(res.best_epoch, 1)
    hist = Histories.from_interactions(split.train, c.max_len)
    fit_csr, valid_csr = split.train.to_csr(), split.valid.to_csr()

    def score(net) -> float:
        return quick_ndcg(lambda u: _score_net(net, hist, u, c.device), fit_csr, valid_csr)

    out = {"inner_valid_ndcg@10": res.best_score, "best_epoch": best, "es_s": es_s,
           "epochs_run": len(res.curve) - 1, "variants": {}}
    out["variants"]["none"] = {"valid_ndcg@10": score(net), "refit_s": 0.0, "epochs": 0}
    t = time.perf_counter()
    scratch, _ = model._train(split.train, best, None)
    out["variants"]["scratch"] = {"valid_ndcg@10": score(scratch), "refit_s": time.perf_counter() - t,
                                  "epochs": best}
    for k in warm:
        t = time.perf_counter()
        w, _ = model._train(split.train, k, None, init=res.best_params)
        out["variants"][f"warm{k}"] = {"valid_ndcg@10": score(w), "refit_s": time.perf_counter() - t,
                                       "epochs": k}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("es", "refit"), default="es")
    ap.add_argument("--datasets", default="ml-100k,amazon-scientific,synth")
    ap.add_argument("--grid", default="", help='e.g. "batch_tokens=1024,4096;learning_rate=1e-3,3e-3"')
    ap.add_argument("--set", nargs="*", default=[], help="fixed config overrides key=value")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warm", default="1,2,3,5", help="warm-start epochs tried in --mode refit")
    ap.add_argument("--label", default="run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tune_transformer.json"))
    args = ap.parse_args(argv)
    from segrec.split import temporal_split

    fixed = parse_grid(";".join(args.set))[0] if args.set else {}
    out = Path(args.out)
    rows = []
    for name in args.datasets.split(","):
        data = load(name)
        if data is None:
            continue
        split = temporal_split(data)
        for combo in parse_grid(args.grid):
            for seed in [int(s) for s in args.seeds.split(",")]:
                cfg = {"n_threads": args.threads, "random_state": seed, **fixed, **combo}
                up = uptime()
                if args.mode == "es":
                    res = run_es(split, cfg)
                else:
                    res = run_refit(split, cfg, [int(k) for k in args.warm.split(",") if k])
                row = {"label": args.label, "mode": args.mode, "dataset": name, "seed": seed,
                       "params": combo, "fixed": fixed, "uptime": up, **res}
                rows.append(row)
                if args.mode == "es":
                    print(f"{name:18s} {json.dumps(combo):50s} seed {seed}: valid NDCG@10 "
                          f"{res['valid_ndcg@10']:.4f} best epoch {res['best_epoch']:3d} / "
                          f"{res['epochs_run']:3d} run, {res['es_s']:6.1f} s "
                          f"({res['s_per_epoch'] or 0:.2f} s/epoch) | {up}", flush=True)
                else:
                    v = "  ".join(f"{k} {d['valid_ndcg@10']:.4f} ({d['refit_s']:.0f}s)"
                                  for k, d in res["variants"].items())
                    print(f"{name:18s} {json.dumps(combo)} seed {seed}: inner "
                          f"{res['inner_valid_ndcg@10']:.4f} best {res['best_epoch']} ES {res['es_s']:.0f}s"
                          f" | {v} | {up}", flush=True)
                old = json.loads(out.read_text()) if out.exists() else {"rows": []}
                old["rows"].append(row)
                old.update(benchmark="tune_transformer", commit=git_commit(),
                           torch=torch.__version__, cpus=os.cpu_count())
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(old, indent=1, default=float))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
