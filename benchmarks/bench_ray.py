"""Per-segment training, local executor against Ray executor, and how it scales (issue 6).

Two per-segment workloads on the built-in synthetic data with planted segments
(labels known, so no segmentation cost is timed):

* ``local_ease``: one EASE per segment, its lambda tuned on inner validation
  (``PerSegmentRecommender(base="ease")``);
* ``adapters``: one LoRA adapter θ_k per segment on a fixed, pre-fitted global
  Transformer (``AdaptedTransformerRecommender``, fixed epochs).

Executors: ``local`` (in-process, 1 thread and all cores), and ``ray`` on a local
cluster with ``--cpus`` CPUs and one CPU per task, timed cold (the first map starts
the worker processes, which import torch and segrec) and warm (workers reused).
A no-op map measures the per-task overhead. From these figures the script prints a
model of how wall time scales with segments S and workers W (see docs/ray.md).

    python benchmarks/bench_ray.py [--segments 8] [--users 4000] [--items 1000] [--cpus 2] [--ddp]

Writes benchmarks/results/bench_ray.json (command, commit, machine, parameters, results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "bench_ray.json"


def make_data(n_users: int, n_items: int, n_segments: int, seed: int):
    from segrec import generate_synthetic, temporal_split

    syn = generate_synthetic(n_users=n_users, n_items=n_items, n_segments=n_segments, seed=seed)
    data = syn.to_interactions()
    return temporal_split(data), syn.segment_labels(data.user_vocab)


def fit_local_ease(split, labels, executor, threads: int):
    from threadpoolctl import threadpool_limits

    from segrec.models import FitContext, PerSegmentRecommender

    with threadpool_limits(threads):  # BLAS threads of the in-process fits (Ray tasks: 1 per CPU)
        return PerSegmentRecommender(base="ease", min_segment_users=5).fit(
            split.train, valid=split.valid, context=FitContext(segments=labels, executor=executor))


def fit_adapters(split, labels, executor, threads: int, global_model, epochs: int):
    from segrec.models import FitContext
    from segrec.models.adapters import AdaptedTransformerRecommender

    context = FitContext(segments=labels, shared={"transformer": global_model}, executor=executor)
    return AdaptedTransformerRecommender(epochs=epochs, early_stopping=False, n_threads=threads).fit(
        split.train, valid=split.valid, context=context)


def _noop(item):
    return item


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


class TimedLocalExecutor:
    """The local executor, recording each task's seconds and segment size (for the scaling model)."""

    def __init__(self, sizes):
        from segrec.distributed import LocalExecutor

        self.inner, self.sizes, self.tasks = LocalExecutor(), sizes, []

    def map(self, fn, items, **kwargs):
        def timed_fn(shared, item):
            start = time.perf_counter()
            out = fn(shared, item)
            seg = item[0] if isinstance(item, tuple) else item
            self.tasks.append((int(self.sizes[seg]), time.perf_counter() - start))
            return out

        return self.inner.map(timed_fn, items, **kwargs)


def fit_cost(tasks: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``t(n) = a + b n``: a fixed cost per segment plus a cost per user."""
    from scipy.optimize import nnls

    n = np.array([t[0] for t in tasks], np.float64)
    y = np.array([t[1] for t in tasks], np.float64)
    # non-negative: a noisy fit must not predict that more users make a segment cheaper
    (a, b), _ = nnls(np.c_[np.ones_like(n), n], y)
    return float(a), float(b)


def predict(a: float, b: float, n_users: int, s: int, w: int, t_put: float,
            o_task: float) -> tuple[float, float]:
    """(local, ray warm) seconds for S equal segments of ``n_users`` users on W workers."""
    task = a + b * n_users / s
    return s * task, t_put + math.ceil(s / w) * task + s * o_task


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    ap.add_argument("--adapter-epochs", type=int, default=3)
    ap.add_argument("--local-threads", default="1",
                    help="comma-separated thread counts of the local runs (e.g. 1,2; on a busy shared box "
                         "2 threads can be many times slower: OpenMP spin-waits)")
    ap.add_argument("--workloads", default="local_ease,adapters")
    ap.add_argument("--ddp", action="store_true", help="also time the Transformer on Ray Train (2 workers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import ray

    from segrec.distributed import LocalExecutor
    from segrec.distributed.ray import RayExecutor
    from segrec.models.transformer import TransformerRecommender

    workloads = [w for w in args.workloads.split(",") if w]
    local_threads = [int(t) for t in args.local_threads.split(",") if t]
    if 1 not in local_threads:
        local_threads.insert(0, 1)  # the baseline every ratio is quoted against
    split, labels = make_data(args.users, args.items, args.segments, args.seed)
    sizes = np.bincount(labels).tolist()
    print(f"data: {split.train.n_users} users, {split.train.n_items} items, {len(split.train)} train rows, "
          f"{args.segments} segments of {sizes} users; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    gcfg = dict(embedding_size=64, n_layers=2, max_len=50, epochs=3, early_stopping=False, n_threads=1)
    t_global, global_model = timed(lambda: TransformerRecommender(**gcfg).fit(split.train, valid=split.valid))
    print(f"global Transformer for the adapters: {t_global:.1f}s (not counted below)")

    def run(workload, executor, threads):
        if workload == "local_ease":
            return timed(fit_local_ease, split, labels, executor, threads)
        return timed(fit_adapters, split, labels, executor, threads, global_model, args.adapter_epochs)

    rows, tasks = [], {}
    for workload in workloads:
        for threads in local_threads:
            ex = TimedLocalExecutor(np.bincount(labels)) if threads == 1 else LocalExecutor()
            t, model = run(workload, ex, threads)
            rows.append({"workload": workload, "executor": "local", "threads": threads, "phase": "-",
                         "seconds": t})
            if threads == 1:
                tasks[workload] = ex.tasks
            print(f"{workload:10s} local  {threads} thread(s): {t:7.2f}s", flush=True)

    t_init, _ = timed(lambda: ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False))
    print(f"ray.init(num_cpus={args.cpus}): {t_init:.2f}s", flush=True)
    try:
        ex = RayExecutor(num_cpus_per_task=1)
        t_noop_cold, _ = timed(ex.map, _noop, list(range(args.cpus)))
        n_noop = 64
        t_noop, _ = timed(ex.map, _noop, list(range(n_noop)))
        overhead = t_noop / n_noop  # driver-side seconds per task (submit + schedule + fetch)
        t_put, _ = timed(ray.put, (split.train, split.valid, labels))
        print(f"no-op tasks: {t_noop / n_noop * 1e3:.1f} ms each (warm), ray.put of the data {t_put:.3f}s",
              flush=True)
        for workload in workloads:
            for phase in ("cold", "warm"):
                t, model = run(workload, ex, 1)
                rows.append({"workload": workload, "executor": "ray", "threads": 1, "phase": phase,
                             "seconds": t})
                print(f"{workload:10s} ray    {args.cpus} x 1 CPU ({phase}): {t:7.2f}s", flush=True)
        ddp = None
        if args.ddp:
            t_local, _ = timed(lambda: TransformerRecommender(**gcfg).fit(split.train, valid=split.valid))
            t_ray, _ = timed(lambda: RayExecutor(workers=2).fit_data_parallel(
                TransformerRecommender(**gcfg), split.train, valid=split.valid))
            ddp = {"local_1_thread_s": t_local, "ray_train_2_workers_s": t_ray}
            print(f"Transformer fit: local {t_local:.1f}s, Ray Train 2 workers {t_ray:.1f}s", flush=True)
    finally:
        ray.shutdown()

    print(f"\n== per-segment training, {args.segments} segments ==")
    print(f"{'workload':10s} {'executor':8s} {'threads':>7s} {'phase':>5s} {'seconds':>8s} "
          f"{'vs local 1t':>11s}")
    base = {r["workload"]: r["seconds"] for r in rows if r["executor"] == "local" and r["threads"] == 1}
    for r in rows:
        r["ratio_vs_local_1_thread"] = base[r["workload"]] / r["seconds"]
        print(f"{r['workload']:10s} {r['executor']:8s} {r['threads']:7d} {r['phase']:>5s} "
              f"{r['seconds']:8.2f} {r['ratio_vs_local_1_thread']:10.2f}x")

    # Scaling model: each segment task costs a + b * (its users), fitted on the local run's tasks;
    # S equal segments of N users on W one-CPU workers take ceil(S/W) rounds (see docs/ray.md).
    n_total = int(np.sum(sizes))
    models = {}
    for workload in workloads:
        a, b = fit_cost(tasks[workload])
        ray_warm = next(r["seconds"] for r in rows if r["workload"] == workload and r["phase"] == "warm")
        check = predict(a, b, n_total, args.segments, args.cpus, t_put, overhead)
        est = []
        for n in (n_total, 10 * n_total):
            for s in (8, 32, 128):
                for w in (2, 8, 32):
                    local_t, ray_t = predict(a, b, n, s, w, t_put, overhead)
                    est.append({"users": n, "segments": s, "workers": w, "local_s": local_t, "ray_s": ray_t,
                                "speedup": local_t / ray_t})
        models[workload] = {"fixed_s_per_segment": a, "s_per_user": b, "predicted_here": check[1],
                            "measured_here": ray_warm, "estimate": est}
        print(f"\n== {workload}: t(segment) = {a:.3f}s + {b * 1e3:.3f} ms x users; "
              f"predicted Ray here {check[1]:.1f}s vs measured {ray_warm:.1f}s (warm) ==")
        print(f"{'users':>7s} {'S':>4s} {'W':>4s} {'local':>8s} {'ray':>8s} {'speedup':>8s}")
        for r in est:
            if r["workers"] <= r["segments"]:
                print(f"{r['users']:7d} {r['segments']:4d} {r['workers']:4d} {r['local_s']:8.1f} "
                      f"{r['ray_s']:8.1f} {r['speedup']:7.1f}x")
    print(f"\nmodel: T_local = S*a + b*N;  T_ray = T_put + ceil(S/W)*(a + b*N/S) + S*o_task "
          f"(o_task = {overhead * 1e3:.1f} ms, T_put = {t_put:.2f}s); a cold cluster adds ray.init "
          f"({t_init:.1f}s here) and the first map's worker start-up")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "commit": commit,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "ray": ray.__version__,
                    "load_average": os.getloadavg()[0]},
        "parameters": {"users": args.users, "items": args.items, "segments": args.segments,
                       "segment_users": sizes, "cpus": args.cpus, "adapter_epochs": args.adapter_epochs,
                       "seed": args.seed, "global_model": gcfg},
        "ray_init_s": t_init, "ray_put_s": t_put, "noop_task_ms": t_noop / n_noop * 1e3,
        "noop_cold_s": t_noop_cold, "results": rows, "scaling": models, "ddp": ddp,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
