"""Wall time and peak memory of every non-Transformer stage of a default run, per dataset.

The stages of ``segrec run --no-split`` other than the Transformer and its adapters:
the segmentation (features incl. item-text embeddings from a cold cache, then k-means
with automatic K), each non-Transformer system's default fit (``popularity``,
``itemknn``, ``ease``, ``als``, ``multvae``, ``local_ease`` on the segmentation's
labels), and ``rank+save`` (top-10 of every user with the EASE model, then saving it).
Each (dataset, stage) runs in a **fresh process**, so its peak RSS is its own (the row
also gives the RSS after loading the data, the floor every stage starts from).

Datasets: ``ml-100k`` and ``amazon-scientific`` (their protocol fit part, train ∪ valid,
as ``bench_pipeline.py`` writes ``fit.csv``) and the ``segrec synth --shape`` logs
``synth-ecommerce`` / ``synth-microvideo`` (fit part as well). Data files are prepared
once under ``--work`` by this script's own segrec; the stage processes import segrec from
``--src`` (default: this checkout), so the same files time another commit ("before"):

    python benchmarks/bench_stages.py --label after
    python benchmarks/bench_stages.py --label before --src /tmp/base/src --timeout 900

A stage past ``--timeout`` seconds or ``--max-rss-gb`` resident memory is stopped and
reported as such. ``--profile`` runs each stage under cProfile and prints its top functions
(cumulative time), the profile this benchmark's changes started from. Prints a table and
``uptime`` beside every row; writes ``benchmarks/results/bench_stages.json`` (rows of other
labels are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# ../shared/data beside the checkout (the nearest ancestor that has one), or SEGREC_SHARED_DATA
SHARED = Path(os.environ.get("SEGREC_SHARED_DATA") or next(
    (a / "shared" / "data" for a in HERE.parents if (a / "shared" / "data").is_dir()),
    HERE.parents[1] / "shared" / "data"))
REAL = {"ml-100k": SHARED / "ml-100k", "amazon-scientific": SHARED / "amazon-scientific"}
SYNTH = {"synth-ecommerce": "ecommerce", "synth-microvideo": "microvideo"}
STAGES = ("segmentation", "popularity", "itemknn", "ease", "als", "multvae", "local_ease", "rank+save")


def uptime() -> str:
    """Load averages, printed beside every timing (the machine is shared)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ----------------------------------------------------------------- parent side
def prepare(name: str, work: Path) -> Path:
    """Write fit.csv (+ items.csv / users.csv) of one dataset under ``work/name``; cached."""
    import pandas as pd

    from segrec.data import load_interactions
    from segrec.split import temporal_split

    d = work / name
    if (d / "fit.csv").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    if name in REAL:
        src = REAL[name]
        items = src / "items.csv" if (src / "items.csv").exists() else None
        users = src / "users.csv" if (src / "users.csv").exists() else None
        data = load_interactions(src / "interactions.csv")
    else:
        from segrec.data.synthetic import SHAPES, generate_synthetic

        synth = generate_synthetic(**SHAPES[SYNTH[name]])
        paths = synth.save_csv(d / "raw")
        items, users = paths["items"], paths["users"]
        data = load_interactions(paths["interactions"])
    fit = temporal_split(data).fit.to_frame()
    for table, path in (("items", items), ("users", users)):
        if path is not None:
            pd.read_csv(path, dtype=str).to_csv(d / f"{table}.csv", index=False)
    fit.to_csv(d / ".fit.csv.tmp", index=False)
    os.replace(d / ".fit.csv.tmp", d / "fit.csv")
    return d


def _rss_kb(pid: int) -> int:
    try:
        m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


def run_stage(stage: str, folder: Path, src: str, timeout: float, max_rss_gb: float,
              profile: bool = False) -> dict:
    """One stage in a fresh process (``--child``); kills it past the time or memory limit."""
    out = folder / f".{stage}.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": src}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--folder", str(folder),
           "--result", str(out), *(["--profile"] if profile else [])]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status, peak = "ok", 0
    while proc.poll() is None:
        peak = max(peak, _rss_kb(proc.pid))
        if time.perf_counter() - start > timeout:
            status = f"timeout > {timeout:.0f} s"
        elif peak > max_rss_gb * 2**20:
            status = f"killed: RSS > {max_rss_gb:g} GB"
        if status != "ok":
            proc.kill()
            break
        time.sleep(0.1)
    log = proc.communicate()[0]
    if profile:
        print(log)
    row = {"stage": stage, "status": status, "wall_s": round(time.perf_counter() - start, 1)}
    if status == "ok" and proc.returncode != 0:
        last = log.strip().splitlines()[-1] if log.strip() else ""
        row["status"] = f"failed (rc {proc.returncode}): {last}"
    if out.exists():
        row.update(json.loads(out.read_text()))
        out.unlink()
    row["peak_rss_gb"] = round(max(peak / 2**20, row.get("maxrss_gb", 0.0)), 2)
    return row


# ------------------------------------------------------------------ child side
def child(stage: str, folder: Path, result: Path, profile: bool = False) -> None:
    """Load the fit data, run one stage, write its seconds and memory to ``result``."""
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        try:
            _child(stage, folder, result)
        finally:
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return
    _child(stage, folder, result)


def _child(stage: str, folder: Path, result: Path) -> None:
    import resource
    import tempfile
    import warnings

    import numpy as np

    warnings.simplefilter("ignore")
    import segrec.models  # noqa: F401  (imports torch: not part of any stage's time)
    import segrec.segment  # noqa: F401
    from segrec.data import load_interactions

    t0 = time.perf_counter()
    items = folder / "items.csv"
    users = folder / "users.csv"
    data = load_interactions(folder / "fit.csv", items=items if items.exists() else None,
                             users=users if users.exists() else None)
    info: dict = {"load_s": round(time.perf_counter() - t0, 2), "users": data.n_users,
                  "items": data.n_items, "interactions": len(data),
                  "rss_after_load_gb": round(_rss_kb(os.getpid()) / 2**20, 2)}
    labels_file = folder / "segments.npy"
    cpu0 = time.process_time()
    start = time.perf_counter()
    if stage == "segmentation":
        from segrec.segment import SegmentationPipeline

        with tempfile.TemporaryDirectory() as cache:  # cold: no embeddings from an earlier run
            pipe = SegmentationPipeline.build("kmeans", n_segments="auto", random_state=0)
            pipe.fit(data, text=True, cache_dir=cache)
        seg = pipe.segmentation_
        np.save(labels_file, np.asarray(seg.labels, np.int64))
        info.update({"k": int(seg.n_segments), **{k: round(v, 2) for k, v in
                                                   getattr(pipe, "timings_", {}).items()}})
    elif stage in ("popularity", "itemknn", "ease", "als", "multvae"):
        from segrec import models

        cls = {"popularity": models.PopularityRecommender, "itemknn": models.ItemKNNRecommender,
               "ease": models.EASERecommender, "als": models.ALSRecommender,
               "multvae": models.MultVAERecommender}[stage]
        model = cls().fit(data)
        info.update(_model_info(model))
    elif stage == "local_ease":
        from segrec.models import PerSegmentRecommender

        labels = np.load(labels_file) if labels_file.exists() else np.zeros(data.n_users, np.int64)
        model = PerSegmentRecommender(base="ease", min_segment_users=20)
        try:  # the fit API since issue 13: segments travel in a FitContext
            from segrec.models import FitContext

            model.fit(data, context=FitContext(segments=labels))
        except ImportError:  # an older checkout (a "before" row)
            model.fit(data, segments=labels)
        sizes = [len(getattr(m, "item_index_", range(data.n_items))) for m in model.models_.values()]
        info.update({"k": int(labels.max()) + 1, "segment_items": sizes})
    elif stage == "rank+save":
        from segrec.evaluate.ranking import rank_in_chunks
        from segrec.models import EASERecommender

        model = EASERecommender(reg=100.0).fit(data)
        t = time.perf_counter()
        users = np.arange(data.n_users)
        rank_in_chunks(model._score, users, 10, seen=model.seen_)
        info["rank_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "ease")
            info["save_mb"] = round(sum(f.stat().st_size for f in (Path(tmp) / "ease").rglob("*")) / 2**20, 1)
        info["save_s"] = round(time.perf_counter() - t, 2)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    info["stage_s"] = round(time.perf_counter() - start, 2)
    info["cpu_s"] = round(time.process_time() - cpu0, 1)
    info["maxrss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    result.write_text(json.dumps(info))


def _model_info(model) -> dict:
    out = {}
    for attr in ("reg_", "k_", "embedding_size_", "best_epoch_"):
        if getattr(model, attr, None) is not None:
            out[attr.rstrip("_")] = getattr(model, attr)
    if getattr(model, "fit_timings_", None):
        out.update({k: round(v, 2) for k, v in model.fit_timings_.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="ml-100k,amazon-scientific,synth-ecommerce,synth-microvideo")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--src", default=str(HERE.parent / "src"), help="segrec source tree the stages import")
    ap.add_argument("--work", default="/tmp/segrec-bench-stages")
    ap.add_argument("--label", default="after")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per stage")
    ap.add_argument("--max-rss-gb", type=float, default=10.0, help="resident memory per stage")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_stages.json"))
    ap.add_argument("--profile", action="store_true", help="print each stage's cProfile top functions")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.folder), Path(args.result), args.profile)
        return

    sys.path.insert(0, str(HERE))
    from _common import git_commit

    rows = []
    for name in args.datasets.split(","):
        if name in REAL and not REAL[name].exists():
            print(f"{name}: {REAL[name]} absent, skipped")
            continue
        folder = prepare(name, Path(args.work))
        for stage in args.stages.split(","):
            before = uptime()
            row = {"label": args.label, "dataset": name, "uptime_before": before,
                   **run_stage(stage, folder, args.src, args.timeout, args.max_rss_gb, args.profile),
                   "uptime_after": uptime(), "src": args.src}
            rows.append(row)
            extra = {k: v for k, v in row.items() if k not in (
                "label", "dataset", "stage", "status", "wall_s", "peak_rss_gb", "uptime_before",
                "uptime_after", "src", "maxrss_gb")}
            print(f"{args.label:7s} {name:18s} {stage:12s} {row['status']:>4s}  "
                  f"stage {row.get('stage_s', '-')} s  peak {row['peak_rss_gb']} GB  {extra}\n    {before}",
                  flush=True)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {"rows": []}
    done = {(r["dataset"], r["stage"]) for r in rows}
    keep = [r for r in old.get("rows", [])
            if not (r["label"] == args.label and (r["dataset"], r["stage"]) in done)]
    payload = {"commit": git_commit(), "rows": keep + rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"\n{'label':7s} {'dataset':18s} {'stage':12s} {'status':>10s} {'stage_s':>8s} {'peak_GB':>8s}")
    for r in payload["rows"]:
        print(f"{r['label']:7s} {r['dataset']:18s} {r['stage']:12s} {r['status'][:10]:>10s} "
              f"{r.get('stage_s', '-')!s:>8s} {r['peak_rss_gb']!s:>8s}")


if __name__ == "__main__":
    main()
