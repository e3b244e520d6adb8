"""``segrec synth``: write the planted-segment synthetic dataset as CSV files."""

from __future__ import annotations

import argparse
import sys
import time

from ._args import non_negative_int, positive_float, positive_int

__all__ = ["add_parser", "synth_command"]

#: The flags' values without ``--shape`` (the generator's defaults).
_DEFAULTS = {"users": 2000, "items": 1000, "segments": 4, "interactions": 40.0}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec synth`` on the CLI's subparsers."""
    from ..data.synthetic import SHAPE_NOTES

    shapes = "; ".join(f"{name}: {note}" for name, note in SHAPE_NOTES.items())
    p = sub.add_parser(
        "synth",
        help="generate the synthetic dataset with planted segments",
        description="Write interactions.csv, items.csv, users.csv and true_segments.csv "
                    "(user_id,segment) of a reproducible synthetic dataset to --out. "
                    f"--shape picks a scale shape that mimics a real log ({shapes}); "
                    "--users/--items/--segments/--interactions given with it override the shape's value.",
    )
    p.add_argument("--shape", choices=sorted(SHAPE_NOTES), default=None,
                   help="scale shape: sparse e-commerce (~200k interactions, median 6 per user) or "
                        "micro-video (~360k interactions); default: the small planted-segment set")
    p.add_argument("--users", type=positive_int, default=None,
                   help=f"number of users (default: {_DEFAULTS['users']}, or the shape's)")
    p.add_argument("--items", type=positive_int, default=None,
                   help=f"number of items (default: {_DEFAULTS['items']}, or the shape's)")
    p.add_argument("--segments", type=positive_int, default=None,
                   help=f"planted segments (default: {_DEFAULTS['segments']}, or the shape's)")
    p.add_argument("--interactions", type=positive_float, default=None,
                   help=f"target mean interactions per user (default: {_DEFAULTS['interactions']}, "
                        "or the shape's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=synth_command)


def _settings(args: argparse.Namespace) -> dict:
    """Generator keyword arguments: the shape's (or the defaults), explicit flags on top."""
    from ..data.synthetic import SHAPES

    kwargs = dict(SHAPES[args.shape]) if getattr(args, "shape", None) else {
        "n_users": _DEFAULTS["users"], "n_items": _DEFAULTS["items"],
        "n_segments": _DEFAULTS["segments"], "mean_interactions": _DEFAULTS["interactions"]}
    for flag, key in (("users", "n_users"), ("items", "n_items"), ("segments", "n_segments"),
                      ("interactions", "mean_interactions")):
        value = getattr(args, flag, None)
        if value is not None:
            kwargs[key] = value
    return kwargs


def synth_command(args: argparse.Namespace) -> int:
    """Generate the data described by ``args`` and write it; returns the exit code."""
    from ..data.synthetic import generate_synthetic

    start = time.perf_counter()
    kwargs = _settings(args)
    data = generate_synthetic(seed=args.seed, **kwargs)
    paths = data.save_csv(args.out)
    seconds = time.perf_counter() - start
    shape = f"shape {args.shape}, " if getattr(args, "shape", None) else ""
    print(
        f"wrote {len(data.interactions):,} interactions of {kwargs['n_users']:,} users x "
        f"{kwargs['n_items']:,} items ({shape}{kwargs['n_segments']} segments, seed {args.seed}) "
        f"to {args.out} in {seconds:.1f}s: " + ", ".join(p.name for p in paths.values()),
        file=sys.stdout,
    )
    return 0
