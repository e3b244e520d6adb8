"""Where a problem is in the file: row positions shifted past skipped rows, then shown as lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._sniff import _PARQUET_SUFFIXES, _head
from .validate import Problem, Problems


def _remap_rows(problems: Problems, name: str, skipped: np.ndarray) -> Problems:
    """Shift row positions of ``name``'s problems past rows the parser skipped."""
    skipped = np.sort(skipped)
    # a kept row at parsed position p sits at p + (number of skipped rows before it)
    shifted = skipped - np.arange(len(skipped))
    out = Problems()
    for p in problems:
        if p.source == name and p.column is not None and p.rows:
            rows = np.asarray(p.rows)
            rows = rows + np.searchsorted(shifted, rows, side="right")
            new_rows = tuple(int(r) for r in rows)
            message = p.message.replace(f"at rows {list(p.rows)}", f"at rows {list(new_rows)}")
            p = Problem(p.source, message, p.column, new_rows)
        out.add(p)
    return out


def _text_files(source, name, schema, items, users) -> dict[str, tuple[Path, bool, str]]:
    """Message source name -> (path, has a header, encoding) of each delimited text file read."""
    out = {}
    for src, header, encoding in ((source, schema.header, schema.encoding), (items, True, "utf-8"),
                                  (users, True, "utf-8")):
        if src is None or isinstance(src, pd.DataFrame):
            continue
        path = Path(src)
        if path.suffix.lower() in _PARQUET_SUFFIXES or not path.is_file():
            continue
        try:
            if _head(path)[:4] == b"PAR1":
                continue
        except OSError:
            continue
        out[str(src)] = (path, header, encoding)
    return out


def _rows_as_lines(problems: Problems, files: dict[str, tuple[Path, bool, str]]) -> Problems:
    """Say "on lines [6]" (the line in the file, 1-based, as an editor shows it) instead of "at rows [4]".

    Row positions count data rows; the reader skips the header and empty lines, so the
    file is scanned (only when there is a problem, and only up to the last row named) to
    find each row's line. ``.rows`` of the error keeps the 0-based positions.
    """
    wanted: dict[str, set[int]] = {}
    for p in problems:
        if p.source in files and p.rows:
            wanted.setdefault(p.source, set()).update(p.rows)
    if not wanted:
        return problems
    lines: dict[str, dict[int, int]] = {}
    for source, rows in wanted.items():
        path, header, encoding = files[source]
        try:
            lines[source] = _line_numbers(path, rows, header, encoding)
        except (OSError, UnicodeError, LookupError):
            continue
    out = Problems()
    for p in problems:
        found = lines.get(p.source, {})
        if p.rows and all(r in found for r in p.rows):
            shown = [found[r] for r in p.rows]
            p = Problem(p.source, p.message.replace(f"at rows {list(p.rows)}", f"on lines {shown}"),
                        p.column, p.rows)
        out.add(p)
    return out


def _line_numbers(path: Path, rows: set[int], header: bool, encoding: str) -> dict[int, int]:
    """Data-row position -> 1-based line number, for the positions in ``rows``."""
    out: dict[int, int] = {}
    last = max(rows)
    row = -1 if header else 0
    with open(path, encoding=encoding, errors="replace", newline=None) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip("\r\n"):
                continue  # pyarrow skips empty lines, so they hold no row
            if row >= 0 and row in rows:
                out[row] = number
            if row >= last:
                break
            row += 1
    return out
