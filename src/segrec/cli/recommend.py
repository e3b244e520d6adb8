"""``segrec recommend``: top-k lists from a saved run for a file of user ids."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._args import positive_int

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec recommend``."""
    p = sub.add_parser("recommend", help="write top-k recommendations from a saved run",
                       description="Write user_id,item_id,rank,score for every listed user.")
    p.add_argument("artifacts", help="directory written by `segrec run --out`")
    p.add_argument("--users", help="text file with one user id per line")
    p.add_argument("--user", action="append", metavar="ID",
                   help="a user id (repeatable); instead of or besides --users")
    p.add_argument("--k", type=positive_int, default=20,
                   help="list length (default: %(default)s; at most the catalogue size)")
    p.add_argument("--out", help="output CSV (default: stdout)")
    p.add_argument("--system", help="system to use (default: the run's best on inner validation; see --list)")
    p.add_argument("--list", action="store_true", help="print the saved systems and exit")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the users' fit items")
    p.add_argument("--with-tier", action="store_true",
                   help="add segment, tier and fallback columns (unknown users get popular items, flagged)")
    p.set_defaults(func=recommend_command)


def recommend_command(args: argparse.Namespace) -> int:
    """Write recommendations (or list systems)."""
    from ..artifacts import load_run
    from ..errors import SegrecError
    from ..io import atomic_write_text

    run = load_run(args.artifacts)
    if args.list:
        best = run.manifest.get("best_system")
        valid = run.results.get("validation") or {}
        for name in run.system_names:
            ndcg = run.results.get("systems", {}).get(name, {}).get("overall", {}).get("ndcg@10")
            score = f"  test NDCG@10={ndcg:.4f}" if ndcg is not None else ""
            if valid.get(name) is not None:
                score = f"  inner-valid NDCG@10={valid[name]:.4f}{score}"
            print(f"{name}{'  (best)' if name == best else ''}{score}")
        return 0
    users = list(args.user or [])
    if args.users:
        users += _read_ids(Path(args.users))
    if not users:
        raise SegrecError("--users FILE (one user id per line) or --user ID is required, or use --list")
    if args.out and Path(args.out).is_dir():
        raise SegrecError(f"--out {args.out}: is a directory; pass a file name such as recs.csv")
    if args.system is not None and args.system not in run.system_names:
        raise SegrecError(f"--system {args.system}: not a saved system; saved: {', '.join(run.system_names)} "
                          "(see --list)")
    # The router serves unknown users popular items (flagged) instead of failing the whole batch.
    router = run.router(args.system)
    if args.k > router.n_items:  # no list is longer than the catalogue; --k 10**9 must not allocate
        print(f"segrec: note: --k {args.k} is more than the {router.n_items} items; lists hold every item",
              file=sys.stderr)
        args.k = router.n_items
    recs, fallback = router.recommend_batch(users, k=args.k, exclude_seen=not args.include_seen)
    unknown = [u for u, f, t in zip(users, fallback, recs.tier, strict=True) if f and t == "popularity"]
    if unknown:
        print(f"segrec: note: {len(unknown)} unknown user id(s) got popular items (fallback), e.g. "
              f"{unknown[:3]}", file=sys.stderr)
    frame = recs.to_frame()
    if args.with_tier:
        flags = dict(zip(recs.user_ids, fallback, strict=True))
        frame["fallback"] = frame["user_id"].map(flags)
        frame = frame[["user_id", "item_id", "rank", "score", "segment", "tier", "fallback"]]
    else:
        frame = frame[["user_id", "item_id", "rank", "score"]]
    text = frame.to_csv(index=False)
    if args.out:
        atomic_write_text(args.out, text)
    else:
        print(text, end="")
    return 0


def _read_ids(path: Path) -> list[str]:
    """User ids, one per line, from a UTF-8 text file (a byte-order mark is allowed)."""
    from ..errors import SegrecError

    if not path.exists():
        raise SegrecError(f"--users {path}: file not found")
    if path.is_dir():
        raise SegrecError(f"--users {path}: is a directory; pass a text file with one user id per line")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SegrecError(f"--users {path}: cannot be read ({exc.strerror})") from exc
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise SegrecError(f"--users {path}: is UTF-16 text; save it as UTF-8 "
                          f"(iconv -f UTF-16 -t UTF-8 {path} > ids.txt)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SegrecError(f"--users {path}: is not UTF-8 text (byte {exc.start}); expected one user id "
                          "per line") from exc
    if "\x00" in text:
        raise SegrecError(f"--users {path}: holds NUL bytes; expected a text file with one user id per line")
    users = [line.strip() for line in text.splitlines() if line.strip()]
    if not users:
        raise SegrecError(f"--users {path}: no user ids (expected one per line)")
    return users
