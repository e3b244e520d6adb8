"""Collect every problem in the input data, then raise one clear error.

The loader runs each check below on whole columns (vectorised, no loops over
rows) and adds what it finds to a :class:`Problems` list; only at the end does
:meth:`Problems.raise_if_any` raise a single
:class:`~segrec.errors.DataValidationError`, so a user fixes a file in one pass
instead of one error per run. Every message follows one template — where (file,
column), what (count of bad values), which rows (0-based data-row positions, the
first five) and a sample value, then what was expected — e.g.::

    interactions.csv: column 'timestamp' has 3 unparseable values at rows [17, 204, 991]
    (e.g. '2024-13-01'); expected ISO-8601 or epoch seconds
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataValidationError
from ._usable import check_usable

__all__ = [
    "MAX_ROWS_SHOWN",
    "Problem",
    "Problems",
    "check_factorized_ids",
    "check_ids",
    "check_unique_ids",
    "check_usable",
    "missing_columns",
    "parse_ratings",
    "parse_timestamps",
]

#: How many bad row positions a message lists.
MAX_ROWS_SHOWN = 5

_TIME_EXPECTED = "expected ISO-8601 or epoch seconds"
_RATING_EXPECTED = "expected non-negative numbers"
_MAX_EXACT_SECONDS = 2.0**53


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, ready to be shown as one line.

    Attributes:
        source: File name (or ``"<DataFrame>"``) the problem is in.
        message: What is wrong, without the source prefix.
        column: The offending column, when the problem is about one.
        rows: Up to five 0-based data-row positions showing it.
    """

    source: str
    message: str
    column: str | None = None
    rows: tuple[int, ...] = ()

    def line(self) -> str:
        """The full one-line message, ``"<source>: <message>"``."""
        return f"{self.source}: {self.message}"


class Problems:
    """An ordered list of :class:`Problem` that raises them all at once.

    Example:
        >>> p = Problems()
        >>> p.add(Problem("a.csv", "file is empty"))
        >>> p.raise_if_any()
        Traceback (most recent call last):
        ...
        segrec.errors.DataValidationError: a.csv: file is empty
    """

    def __init__(self) -> None:
        self._items: list[Problem] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def add(self, problem: Problem | None) -> None:
        """Record ``problem``; ``None`` (a check that passed) is ignored."""
        if problem is not None:
            self._items.append(problem)

    def extend(self, problems: Sequence[Problem | None]) -> None:
        """Record several problems (``None`` entries are ignored)."""
        for p in problems:
            self.add(p)

    def raise_if_any(self) -> None:
        """Raise one :class:`DataValidationError` listing every recorded problem.

        The message has one line per problem (prefixed by a count line when there
        are several); ``.source``, ``.column``, ``.rows`` and ``.problem`` describe
        the first one.

        Raises:
            DataValidationError: If at least one problem was recorded.
        """
        if not self._items:
            return
        first = self._items[0]
        lines = [p.line() for p in self._items]
        if len(lines) == 1:
            message = lines[0]
        else:
            sources = ", ".join(dict.fromkeys(p.source for p in self._items))
            message = f"{len(lines)} problems in {sources}:\n" + "\n".join(f"  {line}" for line in lines)
        raise DataValidationError(
            message, source=first.source, column=first.column, rows=first.rows, problem=first.message
        )


# ---------------------------------------------------------------- helpers
def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeio" else "a"  # "a user", "an item"


def _plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


def _rows_problem(
    source: str, column: str, mask: np.ndarray, what: str, expected: str, values=None
) -> Problem | None:
    """A problem for the rows where ``mask`` is true, or None if there are none."""
    bad = np.flatnonzero(mask)
    if len(bad) == 0:
        return None
    rows = tuple(int(r) for r in bad[:MAX_ROWS_SHOWN])
    text = f"column '{column}' has {_plural(len(bad), what)} at rows {list(rows)}"
    if values is not None:
        text += f" (e.g. '{_show(values[bad[0]])}')"
    return Problem(source, f"{text}; {expected}", column, rows)


def _show(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _strings(series: pd.Series) -> pd.Series:
    """A string view of ``series`` with missing values kept missing."""
    return series.astype("str") if series.dtype != "str" else series


# ---------------------------------------------------------------- checks
def missing_columns(
    source: str, found: Sequence[str], wanted: dict[str, str], *, what: str = "column"
) -> list[Problem]:
    """Problems for every wanted column that is not among ``found``.

    Args:
        source: File name for the message.
        found: Columns the file has.
        wanted: Schema field -> column name, e.g. ``{"item": "item_id"}``.
        what: ``"column"`` or ``"id column"`` (for side tables).

    Returns:
        One problem per missing column, naming what was found and the schema field to set.
    """
    found_list = [str(c) for c in found]
    shown = found_list if len(found_list) <= 12 else [*found_list[:12], "..."]
    missing = {field: column for field, column in wanted.items() if column not in found_list}
    if len(missing) > 1:  # one problem, one line: "missing columns 'user_id', 'item_id' ..."
        names = ", ".join(f"'{c}'" for c in missing.values())
        hints = [_column_hint(f, c) for f, c in missing.items()]
        flags = [h.split(" NAME")[0].removeprefix("name the column with ") for h in hints if " NAME" in h]
        hint = (f"name them with {' and '.join(flags)} (config: [data.columns]; Python: Schema(...))"
                if len(flags) == len(missing) else hints[0])
        return [Problem(source, f"missing {what}s {names} (found columns: {shown}); {hint}",
                        next(iter(missing.values())))]
    return [
        Problem(source, f"missing {what} '{column}' (found columns: {shown}); {_column_hint(field, column)}",
                column)
        for field, column in missing.items()
    ]


#: schema field -> the ``segrec run`` / ``segrec segment`` flag and config key that set it
COLUMN_FLAGS = {"user": "--user-col", "item": "--item-col", "timestamp": "--time-col",
                "rating": "--rating-col"}


def _column_hint(field: str, column: str) -> str:
    """How to name another column for ``field``, on the command line, in a config and in Python."""
    flag = COLUMN_FLAGS.get(field)
    if flag:
        return (f"name the column with {flag} NAME (config: [data.columns] {field} = \"NAME\"; "
                f"Python: Schema({field}=...))")
    return f"rename its id column to '{column}' (Python: Schema({field}=...))"


def check_ids(source: str, column: str, ids: pd.Series, kind: str) -> Problem | None:
    """Flag missing (NaN/None) or blank ids.

    Args:
        source: File name for the message.
        column: Column name for the message.
        ids: The id column (strings, or anything for DataFrame input).
        kind: ``"user"`` or ``"item"``, for the hint.

    Returns:
        A problem naming the first bad rows, or None.
    """
    missing = ids.isna().to_numpy()
    text = _strings(ids)
    # str.strip is vectorised (pyarrow-backed); blank ids are as useless as missing ones
    blank = (text.str.strip() == "").fillna(False).to_numpy(dtype=bool)
    expected = f"every row needs {_article(kind)} {kind} id"
    return _rows_problem(source, column, missing | blank, "empty id", expected)


def check_factorized_ids(
    source: str, column: str, codes: np.ndarray, uniques: pd.Index, kind: str
) -> Problem | None:
    """Like :func:`check_ids`, on factorized ids: only the distinct values are inspected.

    Args:
        source: File name for the message.
        column: Column name for the message.
        codes: Row codes from ``pandas.factorize`` (``-1`` marks a missing id).
        uniques: The distinct ids, indexed by code.
        kind: ``"user"`` or ``"item"``, for the hint.

    Returns:
        A problem naming the first bad rows, or None.
    """
    text = pd.Series(uniques, dtype="str") if len(uniques) else pd.Series([], dtype="str")
    blank = np.flatnonzero((text.str.strip() == "").fillna(True).to_numpy(dtype=bool))
    bad = codes < 0
    if len(blank):  # rare: only then pay for a pass over the rows
        bad |= np.isin(codes, blank)
    expected = f"every row needs {_article(kind)} {kind} id"
    found = _rows_problem(source, column, bad, "empty id", expected)
    if found is not None:
        return found
    # A NUL byte cannot be printed, typed in a request or written to most files: such an id is
    # a broken export, not a name.
    nul = np.flatnonzero(text.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool))
    if len(nul):
        return _rows_problem(source, column, np.isin(codes, nul), "id with a NUL byte",
                             f"{kind} ids must be printable text")
    return None


def check_unique_ids(source: str, column: str, ids: pd.Series, kind: str) -> Problem | None:
    """Flag ids that occur more than once in a side table (items or users).

    Returns:
        A problem naming the rows of the repeated occurrences, or None.
    """
    dup = ids.duplicated(keep="first").to_numpy()
    return _rows_problem(
        source, column, dup, "duplicate id", f"each {kind} must appear once in the table", ids.to_numpy()
    )


def parse_ratings(source: str, column: str, values: pd.Series) -> tuple[np.ndarray, list[Problem]]:
    """Parse a rating / weight column into float64 and check it.

    Numeric columns pass straight through (the fast path); text columns are
    parsed with ``pandas.to_numeric`` so that bad cells can be located.

    Args:
        source: File name for messages.
        column: Column name for messages.
        values: The raw column.

    Returns:
        ``(ratings, problems)``: float64 array of shape (n,) (NaN where bad) and
        the problems found: unparseable, missing, infinite or negative values.
    """
    problems: list[Problem] = []
    raw = values.to_numpy()
    if pd.api.types.is_bool_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = _strings(values).str.strip()
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        blank = text.isna().to_numpy() | (text == "").fillna(True).to_numpy(dtype=bool)
        nan_text = text.str.lower().isin(["nan", "na", "n/a", "null", "none"]).to_numpy(dtype=bool)
        unparseable = np.isnan(numbers) & ~blank & ~nan_text
        expected = _RATING_EXPECTED
        problems.append(_rows_problem(source, column, unparseable, "unparseable value", expected, raw))
        missing = np.isnan(numbers) & ~unparseable
        problems.append(_rows_problem(source, column, missing, "missing (empty or NaN) value", expected))
        return _finish_ratings(source, column, numbers, raw, problems, skip=unparseable | missing)
    missing = np.isnan(numbers)
    problems.append(_rows_problem(source, column, missing, "missing (empty or NaN) value", _RATING_EXPECTED))
    return _finish_ratings(source, column, numbers, raw, problems, skip=missing)


#: ratings are kept as float32: a larger finite number would silently become infinite
_MAX_RATING = float(np.finfo(np.float32).max)


def _finish_ratings(source, column, numbers, raw, problems, skip):
    inf = np.isinf(numbers) & ~skip
    problems.append(_rows_problem(source, column, inf, "infinite value", "expected finite numbers", raw))
    with np.errstate(invalid="ignore"):
        huge = np.isfinite(numbers) & (np.abs(numbers) > _MAX_RATING) & ~skip
    problems.append(_rows_problem(source, column, huge, "out-of-range value",
                                  "expected ratings below 3.4e38 (they are stored as float32)", raw))
    inf = inf | huge
    with np.errstate(invalid="ignore"):
        negative = (numbers < 0) & ~inf & ~skip
    problems.append(
        _rows_problem(source, column, negative, "negative value", "ratings/weights must be >= 0", raw)
    )
    return numbers, [p for p in problems if p is not None]


def parse_timestamps(source: str, column: str, values: pd.Series) -> tuple[np.ndarray, list[Problem]]:
    """Parse a time column into int64 epoch seconds and check it.

    Accepts integer or float epoch seconds (floats are floored), datetime
    columns, and text holding epoch numbers or ISO-8601 dates / datetimes
    (naive times are taken as UTC, offsets are honoured).

    Args:
        source: File name for messages.
        column: Column name for messages.
        values: The raw column.

    Returns:
        ``(seconds, problems)``: int64 array of shape (n,) (0 where bad) and the
        problems found: unparseable, missing or infinite values.
    """
    dtype = values.dtype
    if pd.api.types.is_integer_dtype(dtype) and not values.hasnans:
        return values.to_numpy(dtype=np.int64), []
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        missing = values.isna().to_numpy()
        seconds = _datetimes_to_seconds(values)
        p = _rows_problem(source, column, missing, "missing (empty or NaN) value", _TIME_EXPECTED)
        return seconds, [p] if p else []
    raw = values.to_numpy()
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        unparseable = np.zeros(len(numbers), bool)
        blank = np.isnan(numbers)
    else:
        text = _strings(values).str.strip()
        blank = text.isna().to_numpy() | (text == "").fillna(True).to_numpy(dtype=bool)
        blank |= text.str.lower().isin(["nan", "nat", "na", "null", "none"]).to_numpy(dtype=bool)
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        needs_date = np.isnan(numbers) & ~blank
        if needs_date.any():
            dates = pd.to_datetime(text[needs_date], format="ISO8601", utc=True, errors="coerce")
            ok = dates.notna().to_numpy()
            numbers[np.flatnonzero(needs_date)[ok]] = _datetimes_to_seconds(dates[ok]).astype(np.float64)
        unparseable = np.isnan(numbers) & ~blank
    # float64 holds whole seconds exactly only up to 2**53 (year ~285 million), and values
    # past 2**63 would overflow int64 silently; such times are corrupt, not rounded
    with np.errstate(invalid="ignore"):
        out_of_range = np.isfinite(numbers) & (np.abs(numbers) >= _MAX_EXACT_SECONDS)
    problems = [
        _rows_problem(source, column, unparseable, "unparseable value", _TIME_EXPECTED, raw),
        _rows_problem(source, column, blank, "missing (empty or NaN) value", _TIME_EXPECTED),
        _rows_problem(source, column, np.isinf(numbers), "infinite value", _TIME_EXPECTED, raw),
        _rows_problem(source, column, out_of_range, "out-of-range value", "expected |seconds| < 2**53", raw),
    ]
    finite = np.isfinite(numbers) & ~out_of_range
    seconds = np.zeros(len(numbers), np.int64)
    seconds[finite] = np.floor(numbers[finite]).astype(np.int64)
    return seconds, [p for p in problems if p is not None]


def _datetimes_to_seconds(values: pd.Series | pd.Index) -> np.ndarray:
    """Epoch seconds of a datetime column (UTC for aware ones); 0 where missing."""
    dt = pd.Series(values) if not isinstance(values, pd.Series) else values
    if getattr(dt.dt, "tz", None) is not None:
        dt = dt.dt.tz_convert("UTC").dt.tz_localize(None)
    as_s = dt.astype("datetime64[s]")
    out = as_s.to_numpy(dtype="datetime64[s]").astype(np.int64)
    out[dt.isna().to_numpy()] = 0
    return out
