"""``segrec synth``: write the planted-segment synthetic dataset as CSV files."""

from __future__ import annotations

import argparse
import sys
import time

from ._args import non_negative_int, positive_float, positive_int

__all__ = ["add_parser", "synth_command"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec synth`` on the CLI's subparsers."""
    p = sub.add_parser(
        "synth",
        help="generate the synthetic dataset with planted segments",
        description="Write interactions.csv, items.csv, users.csv and true_segments.csv "
                    "(user_id,segment) of a reproducible synthetic dataset to --out.",
    )
    p.add_argument("--users", type=positive_int, default=2000, help="number of users (default: %(default)s)")
    p.add_argument("--items", type=positive_int, default=1000, help="number of items (default: %(default)s)")
    p.add_argument("--segments", type=positive_int, default=4, help="planted segments (default: %(default)s)")
    p.add_argument("--interactions", type=positive_float, default=40.0,
                   help="target mean interactions per user (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=synth_command)


def synth_command(args: argparse.Namespace) -> int:
    """Generate the data described by ``args`` and write it; returns the exit code."""
    from ..data.synthetic import generate_synthetic

    start = time.perf_counter()
    data = generate_synthetic(
        n_users=args.users, n_items=args.items, n_segments=args.segments, seed=args.seed,
        mean_interactions=args.interactions,
    )
    paths = data.save_csv(args.out)
    seconds = time.perf_counter() - start
    print(
        f"wrote {len(data.interactions):,} interactions of {args.users:,} users x {args.items:,} items "
        f"({args.segments} segments, seed {args.seed}) to {args.out} in {seconds:.1f}s: "
        + ", ".join(p.name for p in paths.values()),
        file=sys.stdout,
    )
    return 0
