"""Load an interaction log (and optional items / users tables) into :class:`Interactions`.

Reading is done by pyarrow's multi-threaded CSV / Parquet readers and every step
after it is vectorised (factorize, one sort for duplicates), so ten million rows
load in seconds (``benchmarks/bench_load.py``). Problems are collected by
:mod:`segrec.data.validate` and raised together as one
:class:`~segrec.errors.DataValidationError`.

Rules (EVAL_PROTOCOL.md, "Input"):

* ids are strings everywhere: ``"007"`` and ``"7"`` are different users;
* dense ids follow the order of first appearance in the file;
* an exact duplicate (user, item) pair keeps the row with the latest timestamp
  (ties: the last one in the file), with one :class:`~segrec.errors.DataWarning`
  that counts the dropped rows.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataWarning
from ..types import Interactions, Vocabulary, canonical_order, stable_order
from ._columns import _frame_columns, _select, _table_columns
from ._csv import _read_csv
from ._ids import _factorize, _header_rows
from ._lines import _remap_rows, _rows_as_lines, _text_files
from ._sniff import Source, _clean, _detect, _head, sniff
from ._tables import _align_table, _read_side_table
from .schema import FORMATS, Schema, movielens_schema
from .validate import Problem, Problems, check_factorized_ids, parse_ratings, parse_timestamps

__all__ = ["load_interactions"]

logger = logging.getLogger(__name__)


def load_interactions(
    source: Source,
    *,
    schema: Schema | None = None,
    items: Source | None = None,
    users: Source | None = None,
    fmt: str = "auto",
) -> Interactions:
    """Read, validate and index an interaction log.

    Use this for every way data enters segrec: a CSV or Parquet file, a pandas
    DataFrame, or the native MovieLens files (``u.data``, ``ratings.dat``,
    ``ratings.csv``), optionally with an items table (``item_id``, ``title``,
    ``categories`` joined by ``|``, any extra columns) and a users table
    (``user_id`` plus attribute columns).

    Args:
        source: Path of the interactions file, or a DataFrame.
        schema: Column mapping and delimiters; None uses ``user_id, item_id,
            rating, timestamp`` (or the MovieLens layout that ``fmt`` or the file
            itself reveals).
        items: Optional items table (path or DataFrame).
        users: Optional users table (path or DataFrame).
        fmt: ``"auto"`` (from suffix and first line), ``"csv"``, ``"parquet"``,
            ``"ml-100k"`` (``u.data``), ``"ml-1m"`` (``ratings.dat``) or
            ``"ml-latest"`` (``ratings.csv`` with ``userId,movieId``).

    Returns:
        Interactions in canonical (user, time) order. Ratings are 1.0 when the
        file has none; timestamps are int64 epoch seconds, or the row position
        in the file when it has none. ``item_table`` / ``user_table`` have one
        row per dense item / user (rows for ids missing from the table are
        NaN, with empty ``title`` / ``categories``); table ids that never occur in
        the interactions are left out (with a :class:`DataWarning`).

    Raises:
        DataValidationError: Listing every problem found (missing columns, empty
            file, unparseable / missing / infinite ratings or timestamps, empty
            ids, negative ratings, tables whose ids match nothing...).
        ValueError: For an unknown ``fmt``.

    Example:
        >>> frame = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"]})
        >>> data = load_interactions(frame)
        >>> data.n_users, data.n_items, data.item_vocab.ids.tolist()
        (2, 2, ['a', 'b'])
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown fmt {fmt!r}; expected one of {list(FORMATS)}")
    problems = Problems()
    name, columns, schema = _read_interactions(source, schema, fmt, problems)
    if columns is None:
        problems.raise_if_any()
        raise AssertionError("unreachable: a failed read records a problem")
    users_, items_ = _checked_ids(source, name, columns, schema, problems)
    (user_codes, user_uniques), (item_codes, item_uniques) = users_, items_
    id_problems = any(p.column in (schema.user, schema.item) for p in problems)
    ratings, timestamps, problems = _parsed_values(name, columns, schema, problems)
    user_vocab = Vocabulary(np.asarray(user_uniques, dtype=object))
    item_vocab = Vocabulary(np.asarray(item_uniques, dtype=object))
    item_table, user_table = _side_tables(items, users, schema, item_vocab, user_vocab, name, id_problems,
                                          problems)
    if len(problems):
        problems = _rows_as_lines(problems, _text_files(source, name, schema, items, users))
    problems.raise_if_any()
    data = _indexed(user_codes, item_codes, ratings, timestamps, user_vocab, item_vocab, item_table,
                    user_table, name)
    logger.info("loaded %s: %d interactions, %d users, %d items", name, len(data), data.n_users, data.n_items)
    return data


def _checked_ids(source, name, columns, schema, problems) -> tuple[tuple[np.ndarray, pd.Index], tuple]:
    """``((user codes, distinct users), (item codes, distinct items))``, their problems recorded."""
    # Ids are factorized even when other columns are bad, so that the side tables
    # can still be checked against them and every problem is reported in one go;
    # blank ids are looked for among the distinct ids only (10M rows, ~1M ids).
    user_codes, user_uniques = _factorize(columns["user"])
    item_codes, item_uniques = _factorize(columns["item"])
    problems.add(check_factorized_ids(name, schema.user, user_codes, user_uniques, "user"))
    problems.add(check_factorized_ids(name, schema.item, item_codes, item_uniques, "item"))
    if not isinstance(source, pd.DataFrame) and schema.header:
        problems.add(_header_rows(name, schema, user_codes, user_uniques, item_codes, item_uniques))
    return (user_codes, user_uniques), (item_codes, item_uniques)


def _parsed_values(name, columns, schema, problems):
    """``(ratings or None, timestamps or None, problems)``, rows shifted past those the reader skipped."""
    ratings = timestamps = None
    if "rating" in columns:
        ratings, found = parse_ratings(name, schema.rating, columns["rating"])
        problems.extend(found)
    if "timestamp" in columns:
        timestamps, found = parse_timestamps(name, schema.timestamp, columns["timestamp"])
        problems.extend(found)
    skipped = columns.get("_skipped")
    if skipped is not None and len(skipped):
        problems = _remap_rows(problems, name, skipped)
    return ratings, timestamps, problems


def _side_tables(items, users, schema, item_vocab, user_vocab, name, id_problems, problems):
    """``(item_table, user_table)``: each read, checked and aligned to the dense ids (or None)."""
    item_frame = user_frame = None
    if items is not None:
        item_frame = _read_side_table(items, "items", schema, problems)
    if users is not None:
        user_frame = _read_side_table(users, "users", schema, problems)
    item_table = user_table = None
    if item_frame is not None and not id_problems:
        item_table = _align_table(item_frame, "items", schema, item_vocab, name, problems)
    if user_frame is not None and not id_problems:
        user_table = _align_table(user_frame, "users", schema, user_vocab, name, problems)
    return item_table, user_table


def _indexed(user_codes, item_codes, ratings, timestamps, user_vocab, item_vocab, item_table, user_table,
             name) -> Interactions:
    """The validated columns as :class:`Interactions`: duplicates dropped, in canonical order."""
    user_codes = user_codes.astype(np.int32, copy=False)
    item_codes = item_codes.astype(np.int32, copy=False)
    keep = _latest_of_duplicates(user_codes, item_codes, timestamps, len(item_vocab), name)
    if timestamps is None:  # time = position in the file (also after dropping duplicates)
        timestamps = np.arange(len(user_codes), dtype=np.int64)
    if keep is not None:
        user_codes, item_codes, timestamps = user_codes[keep], item_codes[keep], timestamps[keep]
        ratings = None if ratings is None else ratings[keep]
    # Same canonical (user, time, file position) order as Interactions.from_arrays,
    # whose np.lexsort takes ~15 s on 10M rows; two packed sorts take ~1 s.
    order = canonical_order(user_codes, timestamps)
    return Interactions(
        user_codes[order], item_codes[order],
        np.ones(len(order), np.float32) if ratings is None else ratings[order].astype(np.float32),
        timestamps[order], user_vocab, item_vocab, item_table, user_table, name,
    )


# ------------------------------------------------------------------ reading
def _read_interactions(
    source: Source, schema: Schema | None, fmt: str, problems: Problems
) -> tuple[str, dict[str, pd.Series] | None, Schema]:
    """Read the raw columns; returns (name, {field: Series} or None on failure, schema)."""
    if isinstance(source, pd.DataFrame):
        name = "<DataFrame>"
        schema = schema or (movielens_schema(fmt) if fmt.startswith("ml-") else Schema())
        return name, _frame_columns(source, name, schema, problems), schema
    path = Path(source)
    name = str(source)
    if not path.is_file():
        problems.add(Problem(name, "file not found" if not path.exists() else "is not a file"))
        return name, None, schema or Schema()
    try:
        head = _head(path)
    except OSError as exc:
        problems.add(Problem(name, f"cannot be read ({exc.strerror or exc}); check the file's permissions"))
        return name, None, schema or Schema()
    trouble = sniff(head, name, schema.encoding if schema else "utf-8")
    if trouble is not None and not (trouble == "parquet" or (fmt == "parquet" and head[:4] == b"PAR1")):
        problems.add(Problem(name, trouble))
        return name, None, schema or Schema()
    if trouble == "parquet" and fmt == "auto":
        fmt = "parquet"  # Parquet content under another name (e.g. data.csv): read what it is
    kind, schema = _detect(path, schema, fmt)
    skipped = None
    if kind == "parquet":
        table = _read_parquet(path, name, schema, problems)
    else:
        table, skipped = _read_csv(path, name, schema, problems)
    if table is None:
        return name, None, schema
    columns = _table_columns(table, schema)
    if skipped is not None:
        columns["_skipped"] = skipped
    return name, columns, schema


def _read_parquet(path: Path, name: str, schema: Schema, problems: Problems) -> pa.Table | None:
    try:
        found = list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        problems.add(Problem(name, f"is not a readable Parquet file ({_clean(exc)})"))
        return None
    present = _select(found, name, schema, problems)
    if present is None:
        return None
    try:
        table = pq.read_table(path, columns=list(present.values()))
    except (pa.ArrowException, OSError) as exc:
        problems.add(Problem(name, f"is not a readable Parquet file ({_clean(exc)})"))
        return None
    for field, column in present.items():
        kind = table.schema.field(column).type
        if pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind) \
                or pa.types.is_fixed_size_binary(kind) or pa.types.is_null(kind):
            expected = "strings or integers" if field in ("user", "item") else "numbers or times"
            problems.add(Problem(name, f"column '{column}' holds {kind} values; expected {expected}", column))
    if any(p.source == name for p in problems):
        return None
    if table.num_rows == 0:
        problems.add(Problem(name, f"has no data rows (columns {found}); expected interaction rows"))
        return None
    return table


# ------------------------------------------------------------------ duplicates
def _latest_of_duplicates(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None, n_items: int, name: str
) -> np.ndarray | None:
    """Row positions to keep (file order) when (user, item) pairs repeat, else None.

    Keeps, per pair, the row with the latest timestamp; ties go to the last row
    in the file (EVAL_PROTOCOL.md). Warns once with the number of dropped rows.
    """
    key = users.astype(np.int64) * np.int64(n_items) + items
    order = stable_order(key)  # rows grouped by pair, file order within a pair
    k = key[order]
    same_as_next = k[1:] == k[:-1]
    if not same_as_next.any():
        return None
    in_repeat = np.r_[same_as_next, False] | np.r_[False, same_as_next]
    rows = order[in_repeat]  # rows of repeated pairs, grouped by pair, file order within
    pair = k[in_repeat]
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    group = np.cumsum(np.r_[True, pair[1:] != pair[:-1]]) - 1
    ts = rows if timestamps is None else timestamps[rows]
    latest = np.maximum.reduceat(ts, starts)[group] == ts
    # among a pair's rows at its latest time, the last in the file (max position) wins
    winner = np.maximum.reduceat(np.where(latest, np.arange(len(rows)), -1), starts)
    keep_mask = np.ones(len(key), dtype=bool)
    keep_mask[rows] = False  # every row of a repeated pair goes, except its latest
    keep_mask[rows[winner]] = True
    keep = np.flatnonzero(keep_mask)
    n_dropped = len(key) - len(keep)
    n_pairs = len(starts)
    warnings.warn(
        f"{name}: dropped {n_dropped} duplicate (user, item) {'row' if n_dropped == 1 else 'rows'} "
        f"({n_pairs} {'pair occurs' if n_pairs == 1 else 'pairs occur'} more than once); "
        f"kept the row with the latest timestamp of each pair (ties: the last in the file)",
        DataWarning,
        stacklevel=4,  # one frame deeper than load_interactions (via _indexed): its caller is named
    )
    return keep
