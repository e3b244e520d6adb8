"""``segrec run``: fit and compare every system on one dataset, print the table, save it all."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec run``."""
    p = sub.add_parser("run", help="fit, evaluate and compare all systems (default: built-in synthetic data)",
                       description="Fit every system on the protocol split of one dataset, print the "
                                   "comparison (overall, per activity tercile, per segment, with 95%% CIs) "
                                   "and write results + artifacts to --out.")
    p.add_argument("--data", help="interactions file (CSV/Parquet/MovieLens); default: synthetic data")
    p.add_argument("--items", help="items table (item_id,title,categories,...)")
    p.add_argument("--users", help="users table (user_id, attributes...)")
    p.add_argument("--config", help="TOML run config (see segrec.example.toml)")
    p.add_argument("--out", default="segrec-out", help="artifact directory (default: %(default)s)")
    p.add_argument("--systems", help="comma-separated systems to run (default: all)")
    p.add_argument("--no-split", action="store_true",
                   help="use all of --data as fit data; nothing is held out or evaluated")
    p.add_argument("--segments", dest="n_segments", help="number of segments or 'auto'")
    p.add_argument("--method",
                   help="segmentation method (kmeans, gmm, spectral, agglomerative, vae, tiers, auto)")
    p.add_argument("--device", help="torch device for neural models (cpu, cuda)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "segrec"),
                   help="cache for item-text embeddings (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    ray = p.add_argument_group("distributed (docs/ray.md; needs pip install 'segrec[ray]' for ray)")
    ray.add_argument("--executor", choices=("local", "ray"),
                     help="where per-segment fits run: this process (default) or Ray tasks; with ray "
                          "the global Transformer trains data-parallel on Ray Train")
    ray.add_argument("--workers", type=int, help="Ray Train workers (DDP processes) for the Transformer")
    ray.add_argument("--ray-address", help="existing Ray cluster (auto, ray://head:10001, host:6379); "
                                           "default: start a local Ray")
    ray.add_argument("--max-retries", type=int, help="extra attempts for a failing segment task (default 1)")
    p.set_defaults(func=run_command)


def _overrides(args: argparse.Namespace) -> dict:
    over: dict = {}
    data = {k: v for k, v in {"path": args.data, "items": args.items, "users": args.users}.items() if v}
    if data:
        over["data"] = data
    if args.no_split:
        over["split"] = {"no_split": True}
    seg = {}
    if args.n_segments:
        seg["n_segments"] = args.n_segments if args.n_segments == "auto" else int(args.n_segments)
    if args.method:
        seg["method"] = args.method
    if getattr(args, "cache_dir", None):
        seg["embedding_cache"] = args.cache_dir
    if seg:
        over["segmentation"] = seg
    if args.systems:
        over["models"] = {"systems": tuple(s.strip() for s in args.systems.split(",") if s.strip())}
    if args.device:
        over["device"] = args.device
    if args.seed is not None:
        over["seed"] = args.seed
    flags = {"executor": args.executor, "workers": args.workers, "address": args.ray_address,
             "max_retries": args.max_retries}
    ray = {k: v for k, v in flags.items() if v is not None}
    if ray.get("address") and "executor" not in ray:
        ray["executor"] = "ray"  # an address only makes sense with the Ray executor
    if ray:
        over["ray"] = ray
    return over


def run_command(args: argparse.Namespace) -> int:
    """Run the main job and print its tables."""
    from ..artifacts import save_run
    from ..config import load_config
    from ..errors import SegrecError
    from ..experiment import run_experiment
    from ..systems import check_model_tables

    for flag in ("data", "items", "users"):
        value = getattr(args, flag)
        if value and not Path(value).exists():
            raise SegrecError(f"--{flag} {value}: file not found")
    cfg = load_config(args.config, **_overrides(args))
    try:  # the [models.*] tables are checked against each model's config before any data is read
        check_model_tables(cfg)
    except SegrecError as exc:
        raise type(exc)(f"{args.config or '<defaults>'}: {exc}") from None
    start = time.perf_counter()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # bars only on a terminal: in a log file tqdm's carriage returns are noise
    result = run_experiment(cfg, progress=progress, bars=not args.quiet and sys.stderr.isatty())
    out = save_run(result, args.out)
    print(format_result(result))
    print("\n== where the time went (wall / CPU seconds, peak memory of each stage) ==")
    print(result.stages.format())
    print(f"\nartifacts: {out}/  (results.json, systems/, segments.parquet)")
    if (out / "report.html").is_file():
        print(f"report: {out / 'report.html'}  (self-contained; open it in a browser)")
    print(f"total time: {time.perf_counter() - start:.1f}s")
    return 0


def format_result(result) -> str:
    """The human-readable comparison: overall table, per segment, CIs, routing."""
    from ..experiment import adaptation_table
    from ..report.verdict import routing_lines

    lines = []
    d = result.data
    lines.append(f"data: {d.source}  users={d.n_users} items={d.n_items} interactions={len(d)}")
    seg = result.segmentation
    figures = {**seg.get("metrics", {}), **{k: v for k, v in seg.items() if isinstance(v, float)}}
    lines.append(f"segmentation: {seg.get('method', '?')} K={seg.get('n_segments', '?')} "
                 f"sizes={seg.get('sizes')}  " + " ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    if result.preset != "none":
        from ..experiment import describe_preset

        lines.append(f"models: preset {result.preset!r} applied ({describe_preset(result.preset)}); "
                     "set [models] preset = \"none\" for the models' own defaults")
    if result.skipped:
        for name, why in result.skipped.items():
            lines.append(f"skipped {name}: {why}")
    if not result.reports:
        lines.append("no evaluation (--no-split): systems fitted on all data and saved")
        return "\n".join(lines + routing_lines(result))
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.4f}".format):
        table = result.table().sort_values("ndcg@10", ascending=False)
        lines += ["", "== overall (test, full ranking; fit = train+valid) ==", table.to_string()]
        by_seg = pd.DataFrame({n: r.by("segment")["ndcg@10"] for n, r in result.reports.items()})
        sizes = next(iter(result.reports.values())).by("segment")["users"]
        by_seg.insert(0, "users", sizes)
        lines += ["", "== NDCG@10 per segment ==", by_seg.to_string()]
        adaptation = adaptation_table(result)
        if len(adaptation):
            lines += ["", "== segment adapters on validation (inner split; epoch 0 = θ_shared kept) ==",
                      adaptation.to_string()]
        for name, ci in result.comparisons.items():
            lines += ["", f"== {name}: NDCG@10 difference, 95% bootstrap CI ==", ci.to_string()]
        routed = getattr(result.systems.get("segmented"), "routing_", None)
        if routed:
            lines += ["", "routing: " + ", ".join(f"segment {s} -> {t}" for s, t in sorted(routed.items()))]
    return "\n".join(lines + routing_lines(result))
