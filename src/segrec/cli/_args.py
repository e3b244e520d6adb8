"""Argument types and the parser class shared by the ``segrec`` verbs.

Every bad flag value ends in one line (``segrec: error: --flag: what to do``) and
exit code 2, the same as a :class:`~segrec.errors.SegrecError`, instead of
argparse's usage block followed by the message.
"""

from __future__ import annotations

import argparse
import math
import sys

__all__ = ["Parser", "k_or_auto", "non_negative_int", "positive_float", "positive_int"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the verb's ``--help``."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        print(f"segrec: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _whole_number(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {low}; got {text!r}") from None
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """A whole number >= 0."""
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text!r}")
    return value


def k_or_auto(text: str) -> int | str:
    """A number of segments (>= 1) or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'auto'; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'auto'; got {text!r}")
    return value
