"""``segrec run``: fit and compare every system on one dataset, print the table, save it all.

Before any data is read, one validation pass checks every flag and config value,
the input files and ``--out`` (:func:`validate`), so a mistake costs seconds, not a
fit. At the end the run names its winner and shows commands that work on its ids.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from ._args import k_or_auto, non_negative_int, positive_float, positive_int

__all__ = ["SYSTEM_NAMES", "add_parser", "validate"]

#: what ``--systems`` accepts (``segrec.systems.known_systems()``; listed here so that
#: ``segrec --help`` does not import torch; tests/unit/test_config.py checks they agree)
SYSTEM_NAMES = ("adapted_transformer", "als", "ease", "itemknn", "joint_transformer", "local_ease", "multvae",
                "popularity", "segmented", "transformer")

#: dotted config key -> the flag that sets it, so a bad value names what the user typed
FLAGS = {"segmentation.n_segments": "--segments", "segmentation.method": "--method", "device": "--device",
         "seed": "--seed", "models.systems": "--systems", "data.path": "--data", "data.items": "--items",
         "data.users": "--users", "data.encoding": "--encoding", "data.columns.user": "--user-col",
         "data.columns.item": "--item-col", "data.columns.timestamp": "--time-col",
         "data.columns.rating": "--rating-col", "ray.workers": "--workers", "ray.address": "--ray-address",
         "ray.max_retries": "--max-retries", "ray.executor": "--executor"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec run``."""
    p = sub.add_parser("run", help="fit, evaluate and compare all systems (default: built-in synthetic data)",
                       description="Fit every system on the protocol split of one dataset, print the "
                                   "comparison (overall, per activity tercile, per segment, with 95% CIs) "
                                   "and write results + artifacts to --out.")
    p.add_argument("--data", help="interactions file (CSV/Parquet/MovieLens); default: synthetic data")
    p.add_argument("--items", help="items table (item_id,title,categories,...)")
    p.add_argument("--users", help="users table (user_id, attributes...)")
    cols = p.add_argument_group("columns of --data (default user_id,item_id,rating,timestamp; "
                                "config: [data.columns] user/item/timestamp/rating)")
    cols.add_argument("--user-col", metavar="NAME", help="column of user ids")
    cols.add_argument("--item-col", metavar="NAME", help="column of item ids")
    cols.add_argument("--time-col", metavar="NAME", help="column of times (epoch seconds or ISO-8601)")
    cols.add_argument("--rating-col", metavar="NAME", help="column of ratings / weights")
    cols.add_argument("--encoding", help="text encoding of --data (default utf-8; e.g. latin-1)")
    p.add_argument("--config", help="TOML run config (see segrec.example.toml)")
    p.add_argument("--out", default="segrec-out",
                   help="artifact directory: absent, empty, or a previous run (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the previous run in --out (atomically; files segrec did not write are "
                        "never deleted)")
    p.add_argument("--systems",
                   help="comma-separated systems to run (default: all but the opt-in joint_transformer): "
                   + ", ".join(SYSTEM_NAMES))
    p.add_argument("--no-split", action="store_true",
                   help="use all of --data as fit data; nothing is held out or evaluated")
    p.add_argument("--segments", dest="n_segments", type=k_or_auto,
                   help="number of segments (>= 1) or 'auto'")
    p.add_argument("--method",
                   help="segmentation method (kmeans, gmm, spectral, agglomerative, vae, tiers, auto)")
    p.add_argument("--device", help="torch device for neural models (cpu, cuda, cuda:N)")
    p.add_argument("--seed", type=non_negative_int, help="random seed")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "segrec"),
                   help="cache for item-text embeddings (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--progress-every", type=positive_float, default=30.0, metavar="SECONDS",
                   help="off a terminal, a status line at least this often (default: %(default)s)")
    ray = p.add_argument_group("distributed (docs/ray.md; needs pip install 'segrec[ray]' for ray)")
    ray.add_argument("--executor", choices=("local", "ray"),
                     help="where per-segment fits run: this process (default) or Ray tasks; with ray "
                          "the global Transformer trains data-parallel on Ray Train")
    ray.add_argument("--workers", type=positive_int,
                     help="Ray Train workers (DDP processes) for the Transformer")
    ray.add_argument("--ray-address", help="existing Ray cluster (auto, ray://head:10001, host:6379); "
                                           "default: start a local Ray")
    ray.add_argument("--max-retries", type=non_negative_int,
                     help="extra attempts for a failing segment task (default 1)")
    p.set_defaults(func=run_command)


def _overrides(args: argparse.Namespace) -> dict:
    over: dict = {}
    data = {k: v for k, v in {"path": args.data, "items": args.items, "users": args.users,
                              "encoding": getattr(args, "encoding", None)}.items() if v is not None}
    named = {"user": getattr(args, "user_col", None), "item": getattr(args, "item_col", None),
             "timestamp": getattr(args, "time_col", None), "rating": getattr(args, "rating_col", None)}
    columns = {k: v for k, v in named.items() if v is not None}
    if columns:
        data["columns"] = columns
    if data:
        over["data"] = data
    if args.no_split:
        over["split"] = {"no_split": True}
    seg = {}
    if args.n_segments is not None:
        seg["n_segments"] = args.n_segments
    if args.method:
        seg["method"] = args.method
    if getattr(args, "cache_dir", None):
        seg["embedding_cache"] = args.cache_dir
    if seg:
        over["segmentation"] = seg
    if args.systems is not None:
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


def validate(args: argparse.Namespace):
    """The one validation pass before any work: config, flags, input files, systems, device, ``--out``.

    Returns:
        The resolved :class:`~segrec.config.RunConfig`.

    Raises:
        SegrecError: The first problem, as one line naming the flag or config key and what to do.
    """
    from ..artifacts import check_out
    from ..config import load_config
    from ..errors import ConfigError

    if args.systems is not None and not [s for s in args.systems.split(",") if s.strip()]:
        raise ConfigError(f"--systems: no system named; use some of {', '.join(SYSTEM_NAMES)}")
    cfg = load_config(args.config, flags=FLAGS, **_overrides(args))
    for key, value in (("--data", cfg.data.path), ("--items", cfg.data.items), ("--users", cfg.data.users)):
        if value is not None:
            _check_input(key, value)
    try:
        _check_systems(cfg)
    except ConfigError as exc:  # name the file the bad [models.*] table came from
        if args.config and str(exc).startswith("[models"):
            raise ConfigError(f"{args.config}: {exc}", key=exc.key) from None
        raise
    _check_device(cfg.device)
    check_out(args.out, overwrite=args.overwrite)
    return cfg


def _check_input(flag: str, value: str) -> None:
    from ..errors import ConfigError

    path = Path(value)
    if not path.exists():
        raise ConfigError(f"{flag} {value}: file not found")
    if path.is_dir():
        raise ConfigError(f"{flag} {value}: is a directory; pass the file itself")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{flag} {value}: cannot be read (permission denied); check the file's permissions")


def _check_systems(cfg) -> None:
    """Every system is known, and each ``[models.<name>]`` table validates against its model."""
    import difflib

    from ..errors import ConfigError
    from ..systems import SYSTEMS, check_model_tables, known_systems

    for name in cfg.models.systems:
        if name not in SYSTEMS and name != "segmented":
            near = difflib.get_close_matches(name, known_systems(), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"--systems: unknown system {name!r}{hint}; "
                              f"known: {', '.join(known_systems())}", key="models.systems")
    check_model_tables(cfg)  # one line naming the [models.<name>] key, before any data is read


def _check_device(device: str) -> None:
    from ..errors import ConfigError

    if device == "cpu":
        return
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(f"--device {device}: this machine has {have}; use --device cpu", key="device")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: not available here; use --device cpu", key="device")


def run_command(args: argparse.Namespace) -> int:
    """Run the main job and print its tables."""
    from .. import progress as progress_mod
    from ..artifacts import save_run
    from ..experiment import run_experiment

    cfg = validate(args)
    start = time.perf_counter()
    terminal = sys.stderr.isatty()
    beat = progress_mod.Heartbeat(sys.stderr, start, args.progress_every)

    def progress(msg: str) -> None:
        beat.stage(msg)
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # Bars on a terminal (they stay afterwards); off one, a status line every --progress-every
    # seconds, so a run redirected to a log is never silent for long.
    with contextlib.ExitStack() as stack:
        if not args.quiet and not terminal:
            stack.enter_context(progress_mod.listening(beat))
            stack.enter_context(beat)
        result = run_experiment(cfg, progress=progress, bars=not args.quiet and terminal)
        out = save_run(result, args.out, overwrite=args.overwrite)
    print(format_result(result))
    print("\n== where the time went (wall / CPU seconds, peak memory of each stage) ==")
    print(result.stages.format())
    print()
    print(summary(result, out))
    print(f"total time: {time.perf_counter() - start:.1f}s")
    return 0


#: systems that use the segments; the others are the baselines a segment-aware system must beat
SEGMENT_AWARE = ("segmented", "adapted_transformer", "local_ease")


def summary(result, out: Path) -> str:
    """Who won and how to use it, as the last lines of ``segrec run``.

    The served system (chosen on inner validation), its test gain over the best baseline
    with a 95% CI, per segment what serves it against the best single system on validation
    and at what cost, the verdict line (issue 14), the report, and ``segrec recommend`` /
    ``curl`` lines on this run's own ids.
    """
    from ..evaluate import bootstrap_diff
    from ..report.verdict import routing_lines

    served = result.best_system()  # chosen on inner validation (issue 14), as the manifest says
    lines = ["== result =="]
    if result.reports and served in result.reports:
        ndcg = result.reports[served].overall["ndcg@10"]
        lines.append(f"served system: {served} (test NDCG@10 {ndcg:.4f}; what `segrec serve` and "
                     "`segrec recommend` use by default)")
        others = {n: r for n, r in result.reports.items() if n != served and n not in SEGMENT_AWARE}
        if not others:
            others = {n: r for n, r in result.reports.items() if n != served}
        if others:
            base = max(others, key=lambda n: others[n].overall["ndcg@10"])
            ci = bootstrap_diff(result.reports[served], others[base], n_boot=result.config.evaluate.n_boot,
                                seed=result.config.seed).iloc[0]
            verdict = ("better" if ci["lo"] > 0 else "worse" if ci["hi"] < 0 else
                       "no significant difference")
            base_ndcg = others[base].overall["ndcg@10"]
            what = "the best baseline" if served in SEGMENT_AWARE else "the next best system"
            lines.append(f"gain over {what} ({base}, NDCG@10 {base_ndcg:.4f}): "
                         f"{ci['diff']:+.4f} [95% CI {ci['lo']:+.4f}, {ci['hi']:+.4f}], {verdict} "
                         f"(paired bootstrap over {int(ci['users'])} test users)")
    else:
        lines.append(f"served system: {served} (fitted on all data with --no-split; nothing was evaluated)")
    # per segment what serves it, against the best single system on validation, and the verdict
    lines += routing_lines(result)[1:]
    report = out / "report.html"
    lines.append(f"report: {report}  (self-contained; open it in a browser)" if report.is_file()
                 else f"artifacts: {out}/ (no HTML report: see the warning above)")
    user = str(result.data.user_vocab.ids[0])
    counts = pd.Series(result.data.items).value_counts()
    items = [str(result.data.item_vocab.ids[i]) for i in counts.index[:2]]
    d = shlex.quote(str(out))
    lines.append("try it (ids from this run):")
    lines.append(f"  segrec recommend {d} --user {shlex.quote(user)} --k 10")
    lines.append(f"  segrec serve {d}        # then, in another shell:")
    for body in ({"user_id": user, "k": 10}, {"recent_items": items, "k": 10}):
        lines.append("  curl -s localhost:8000/v1/recommend -H 'content-type: application/json' -d "
                     + shlex.quote(json.dumps(body)))
    return "\n".join(lines)


def format_result(result) -> str:
    """The human-readable comparison: overall table, per segment, CIs, routing."""
    from ..experiment import adaptation_table

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
        return "\n".join(lines)
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
            tiers = set(routed.values())
            if len(tiers) == 1:
                lines.append(f"(every segment is routed to {next(iter(tiers))}, so segmented serves exactly "
                             "what that tier serves: its rows above are the same system)")
    return "\n".join(lines)
