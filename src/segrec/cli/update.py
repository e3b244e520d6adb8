"""``segrec update``: append known users' new interactions to a saved run (no refit)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec update``."""
    p = sub.add_parser(
        "update", help="append known users' new interactions to a saved run (no refit)",
        description="Append the interactions in --events to their users' fit histories in every system "
                    "of a saved run and recompute what a request reads from them: seen items, the "
                    "Transformer's sequences, and these users' cached vectors. Weights, segments and "
                    "routing stay as fitted (refit with `segrec run` to relearn them). The run is "
                    "rewritten atomically; a running server loads it on SIGHUP or POST /v1/admin/reload.")
    p.add_argument("artifacts", help="directory written by `segrec run --out`")
    p.add_argument("--events", required=True,
                   help="interactions file of known users and items (user_id,item_id[,timestamp])")
    p.add_argument("--out", help="write the updated run here instead of replacing ARTIFACTS")
    p.add_argument("--user-col", metavar="NAME", help="user id column of --events (default: user_id)")
    p.add_argument("--item-col", metavar="NAME", help="item id column of --events (default: item_id)")
    p.add_argument("--time-col", metavar="NAME", help="timestamp column of --events (default: timestamp)")
    p.set_defaults(func=update_command)


def update_command(args: argparse.Namespace) -> int:
    """Apply the events and report what changed."""
    from ..artifacts import update_run
    from ..data.schema import Schema

    columns = {k: v for k, v in (("user", args.user_col), ("item", args.item_col),
                                 ("timestamp", args.time_col)) if v}
    schema = Schema(**columns) if columns else None
    done = update_run(args.artifacts, args.events, out=args.out, schema=schema)
    print(f"segrec: {done.events} interactions of {done.users} users appended in {len(done.systems)} "
          f"systems; wrote {done.path} (a running server: kill -HUP its pid, or POST /v1/admin/reload)",
          file=sys.stderr)
    return 0
