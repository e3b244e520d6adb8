"""Transformer training throughput on ml-100k against this machine's matmul peak.

    python benchmarks/bench_train_throughput.py --label after [--threads 1,2] [--epochs 4]
        [--data ../shared/data/ml-100k] [--set key=value ...]

For each thread count: the default ``TransformerRecommender`` trains a few epochs on the
protocol train part (no validation, no refit: the loop alone), and the script prints

* training positions per second (positions with a next item, what the loss is over),
* seconds per epoch (median after the first, which pays one-time costs),
* the epoch's FLOPs counted analytically (forward + backward = 3 x forward: the blocks'
  matmuls on real positions, causal attention, the output layer over the catalogue or,
  with a sampled softmax, over the targets and the shared negatives),
* the machine's measured fp32 matmul GFLOP/s (a 2048^3 ``torch.mm`` at the same thread
  count, best of several) and the fraction of it one epoch reaches (the epoch may train
  its matmuls in bf16, ``precision="auto"``; the bf16 peak is printed beside it),
* CPU seconds per epoch, which on one thread is close to the quiet wall time even when
  the machine is loaded.

Rows are kept per ``--label`` in benchmarks/results/bench_train_throughput.json, so the
"before" row is measured by pointing PYTHONPATH at the old checkout's ``src`` and running
this same script. The machine is shared: ``uptime`` is printed beside every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import git_commit  # noqa: E402


def shared_data() -> Path:
    """``shared/data`` beside the nearest ancestor checkout that has one (main or a worktree)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return Path("shared/data")


def uptime() -> str:
    """Load averages, printed beside each timing (the machine is shared)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5, dtype=torch.float32) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n x n ``torch.mm`` on ``threads`` threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
        return 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(old)


def window_lengths(lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Input lengths of the training windows (each history's n - 1 pairs cut by max_len)."""
    pairs = np.maximum(lengths - 1, 0)
    full, rest = pairs // max_len, pairs % max_len
    return np.concatenate([np.full(int(full.sum()), max_len), rest[rest > 0]])


def epoch_flops(cfg, n_items: int, windows: np.ndarray) -> dict:
    """Analytic FLOPs of one training epoch (forward + backward = 3 x forward).

    With a sampled softmax (catalogues above the model's ``full_softmax_max_items``)
    the output layer is over each position's targets and the shared negatives.
    """
    d, layers = cfg.embedding_size, cfg.n_layers
    ffn = 4
    tokens = float(windows.sum())
    blocks = tokens * layers * 2 * (3 * d * d + d * d + 2 * ffn * d * d)
    attention = layers * 2 * d * float((windows * (windows + 1)).sum())  # QK^T and AV, causal
    cols = float(n_items)
    negatives = getattr(cfg, "n_negatives", None)
    above = getattr(cfg, "full_softmax_max_items", None)
    sampled = negatives is not None and above is not None and n_items > above
    if sampled:
        cols = float(negatives) + cfg.target_window
    output = tokens * 2 * d * cols
    return {"tokens": tokens, "gflop_blocks": 3 * blocks / 1e9, "gflop_attention": 3 * attention / 1e9,
            "gflop_output": 3 * output / 1e9, "gflop": 3 * (blocks + attention + output) / 1e9,
            "sampled_softmax": sampled, "output_columns": cols}


def parse_sets(pairs: list[str]) -> dict:
    """``key=value`` overrides of the model config (values parsed as JSON when they parse)."""
    out = {}
    for p in pairs:
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = shared_data() / "ml-100k"
    ap.add_argument("--data", default=str(default_data))
    ap.add_argument("--label", default="after", help="row label, e.g. before / after")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--epochs", type=int, default=4, help="epochs timed per thread count")
    ap.add_argument("--set", nargs="*", default=[], help="model config overrides key=value")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train_throughput.json"))
    args = ap.parse_args(argv)

    from segrec.data import load_interactions
    from segrec.models.transformer import TransformerRecommender
    from segrec.split import temporal_split

    inter = Path(args.data) / "interactions.csv"
    if not inter.exists():
        print(f"skip: {inter} not found (ml-100k is not shipped)")
        return 0
    train = temporal_split(load_interactions(inter)).train
    overrides = parse_sets(args.set)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        model = TransformerRecommender(epochs=args.epochs, early_stopping=False, refit=False,
                                       n_threads=threads, **overrides)
        cfg = model.config
        windows = window_lengths(train.user_counts(), cfg.max_len)
        peak = matmul_gflops(threads)
        peak_bf16 = matmul_gflops(threads, dtype=torch.bfloat16)
        load_before = uptime()
        t, cpu = time.perf_counter(), time.process_time()
        model.fit(train)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        secs = [c["seconds"] for c in model.curve_ if c.get("epoch", 1) >= 1]
        per_epoch = float(np.median(secs[1:] if len(secs) > 1 else secs))
        tokens = float(windows.sum())
        flops = epoch_flops(cfg, train.n_items, windows)
        achieved = flops["gflop"] / per_epoch
        rows.append({
            "label": args.label, "threads": threads, "positions_per_s": tokens / per_epoch,
            "s_per_epoch": per_epoch, "epoch_seconds": secs, "fit_wall_s": wall,
            # CPU seconds per epoch (whole fit / epochs): on one thread a proxy for the quiet
            # wall time that load on a shared machine does not inflate
            "cpu_s_per_epoch": cpu / args.epochs, **flops,
            "achieved_gflops": achieved, "matmul_gflops": peak, "pct_of_matmul_peak": 100 * achieved / peak,
            "matmul_gflops_bf16": peak_bf16,
            "uptime": load_before, "config": cfg.model_dump(mode="json"),
        })
        r = rows[-1]
        print(f"[{args.label}] threads={threads}: {r['positions_per_s']:,.0f} positions/s, "
              f"{per_epoch:.2f} s/epoch, {flops['gflop']:.1f} GFLOP/epoch -> {achieved:.1f} GFLOP/s "
              f"= {r['pct_of_matmul_peak']:.1f}% of the {peak:.0f} GFLOP/s fp32 matmul "
              f"(bf16 {peak_bf16:.0f}); "
              f"{r['cpu_s_per_epoch']:.2f} CPU-s/epoch | {load_before}",
              flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else {"rows": []}
    keep = [r for r in old.get("rows", []) if r.get("label") != args.label]
    payload = {"benchmark": "bench_train_throughput", "data": str(args.data), "commit": git_commit(),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "torch": torch.__version__},
               "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
               "rows": keep + rows}
    out.write_text(json.dumps(payload, indent=1, default=float))
    cols = ["label", "threads", "positions_per_s", "s_per_epoch", "cpu_s_per_epoch", "gflop",
            "achieved_gflops", "matmul_gflops", "pct_of_matmul_peak"]
    print()
    print(" | ".join(cols))
    for r in payload["rows"]:
        print(" | ".join(f"{r[c]:,.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
