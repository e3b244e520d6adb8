"""The default Transformer before/after a change: test NDCG@10 with a paired bootstrap CI.

    PYTHONPATH=/path/to/old/src python benchmarks/bench_transformer_ab.py --label before --data DIR
    python benchmarks/bench_transformer_ab.py --label after --data DIR
    python benchmarks/bench_transformer_ab.py --compare --data DIR

Each labelled run fits ``TransformerRecommender()`` with every default under the protocol
(``temporal_split``: fit on train, early stopping on its own inner split of train, the
model's refit on train ∪ valid, test on test) and keeps each test user's NDCG@10 in
benchmarks/results/bench_transformer_ab.json. ``--compare`` prints after − before with a
paired 95% bootstrap CI over users (the same users: the split does not depend on the code).
The fit's wall time and ``uptime`` are recorded beside each row; the machine is shared.
``--text`` passes the items' MiniLM text embeddings (items.csv beside interactions.csv, as
``segrec run`` passes its segmentation's), which ``item_init="auto"`` may start from;
``--out`` writes elsewhere than benchmarks/results (e.g. a copy outside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import git_commit, write_json
from segrec.data import load_interactions
from segrec.errors import SegrecWarning
from segrec.evaluate import evaluate
from segrec.models import FitContext
from segrec.models.transformer import TransformerRecommender
from segrec.split import temporal_split

OUT = Path(__file__).parent / "results" / "bench_transformer_ab.json"


def _text_context(split) -> FitContext:
    """The items' text embeddings, as ``segrec run`` computes them (cached under ~/.cache/segrec)."""
    from segrec.config import RunConfig
    from segrec.experiment import item_text_embeddings

    cfg = RunConfig()
    seg = cfg.segmentation.model_copy(update={"embedding_cache": str(Path.home() / ".cache" / "segrec")})
    cfg = cfg.model_copy(update={"segmentation": seg})
    return FitContext(item_embeddings=item_text_embeddings(split.train, cfg))


def _fit_row(folder: Path, label: str, text: bool = False) -> dict:
    items = folder / "items.csv"
    data = load_interactions(folder / "interactions.csv", items=items if text else None)
    split = temporal_split(data)
    context = _text_context(split) if text else FitContext()
    model = TransformerRecommender()
    start = time.perf_counter()
    with warnings.catch_warnings():  # "before" code ignores the embeddings, and says so
        warnings.simplefilter("ignore", SegrecWarning)
        model.fit(split.train, valid=split.valid, context=context)
    fit_s = time.perf_counter() - start
    rep = evaluate(model, split, system="transformer")
    per_user = rep.per_user[["user_id", "ndcg@10"]]
    return {"label": label, "commit": git_commit(), "source": os.environ.get("PYTHONPATH", "installed"),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "fit_seconds": fit_s, "best_epoch": getattr(model, "best_epoch_", None), "text": text,
            "tuned": getattr(model, "tuned_", None),
            "ndcg@10": rep.overall["ndcg@10"],
            "per_user": dict(zip(per_user["user_id"].astype(str), per_user["ndcg@10"].astype(float),
                                 strict=True))}


def _compare(rows: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    before, after = rows["before"]["per_user"], rows["after"]["per_user"]
    if set(before) != set(after):
        raise SystemExit("before and after were scored on different users: rerun both on the same data")
    users = sorted(before)
    d = np.array([after[u] - before[u] for u in users])
    boots = d[np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    return {"users": len(d), "before": rows["before"]["ndcg@10"], "after": rows["after"]["ndcg@10"],
            "diff": float(d.mean()), "lo": float(np.quantile(boots, 0.025)),
            "hi": float(np.quantile(boots, 0.975))}


def main(argv: list[str] | None = None) -> int:
    """Fit one labelled row or compare the two; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with interactions.csv")
    parser.add_argument("--label", choices=("before", "after"))
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--text", action="store_true", help="pass the items' text embeddings")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file (default: %(default)s)")
    args = parser.parse_args(argv)
    out = args.out
    folder = Path(args.data)
    if not (folder / "interactions.csv").exists():
        print(f"skip: {folder / 'interactions.csv'} not found")
        return 0
    results = json.loads(out.read_text()) if out.exists() else {}
    rows = results.setdefault(folder.name, {})
    if args.label:
        rows[args.label] = _fit_row(folder, args.label, args.text)
        r = rows[args.label]
        print(f"{folder.name} {args.label}: NDCG@10 {r['ndcg@10']:.4f}, fit {r['fit_seconds']:.0f} s, "
              f"best epoch {r['best_epoch']} | {r['uptime']}")
    if args.compare:
        if not {"before", "after"} <= set(rows):
            raise SystemExit(f"{folder.name}: run --label before and --label after first")
        c = rows["comparison"] = _compare(rows)
        print(f"{'data':<20}{'before':>8}{'after':>8}{'diff':>9}  95% CI")
        print(f"{folder.name:<20}{c['before']:>8.4f}{c['after']:>8.4f}{c['diff']:>+9.4f}  "
              f"[{c['lo']:+.4f}, {c['hi']:+.4f}]  ({c['users']} users)")
    write_json(out, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
