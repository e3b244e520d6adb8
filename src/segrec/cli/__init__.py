"""The ``segrec`` command line: one command, verb subcommands, each a thin call into the library.

Each verb lives in its own module exposing ``add_parser(subparsers)`` (which sets
``func`` on its parser) and is listed in :data:`VERBS`. ``main(argv)`` is testable
in-process. Exit codes: 0 ok, 2 for a :class:`~segrec.errors.SegrecError` (one
line on stderr), 3 for an unexpected error (traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from .. import __version__
from ..errors import SegrecError

__all__ = ["main"]


def _verbs():
    # Imported here so `segrec --help` does not pay for torch / sklearn imports.
    from . import recommend, run, segment, serve, synth, update

    return [run, segment, synth, recommend, serve, update]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb registered."""
    from ._args import Parser

    parser = Parser(prog="segrec", description="Segment-aware recommendation with large models.")
    parser.add_argument("--version", action="version", version=f"segrec {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    for module in _verbs():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (for tests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a bad flag (2, one line already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not getattr(args, "func", None):
        print("segrec: error: no command given; use one of run, segment, synth, recommend, serve, update "
              "(e.g. segrec run --help)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except SegrecError as exc:
        print(f"segrec: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segrec: interrupted", file=sys.stderr)
        return 130
    except Exception:  # unexpected: a bug, show everything
        traceback.print_exc()
        return 3


def _one_line(message: str) -> str:
    """A multi-problem message (``N problems in f:`` + one indented line each) as one line."""
    head, *rest = [part.strip() for part in message.splitlines() if part.strip()]
    if not rest:
        return head
    return head.rstrip(":") + ": " + "; ".join(rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
