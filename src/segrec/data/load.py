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

import csv
import io
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import DataWarning
from ..types import Interactions, Vocabulary, canonical_order, stable_order
from .schema import FORMATS, Schema, movielens_schema
from .validate import (
    Problem,
    Problems,
    check_factorized_ids,
    check_ids,
    check_unique_ids,
    missing_columns,
    parse_ratings,
    parse_timestamps,
)

__all__ = ["load_interactions"]

logger = logging.getLogger(__name__)

Source = str | os.PathLike | pd.DataFrame

_PARQUET_SUFFIXES = (".parquet", ".pq")
# Stand-in delimiter for multi-character separators (MovieLens "::"): pyarrow
# only splits on one byte, and the ASCII unit separator never occurs in real logs.
_UNIT_SEP = b"\x1f"


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

    # Ids are factorized even when other columns are bad, so that the side tables
    # can still be checked against them and every problem is reported in one go;
    # blank ids are looked for among the distinct ids only (10M rows, ~1M ids).
    user_codes, user_uniques = _factorize(columns["user"])
    item_codes, item_uniques = _factorize(columns["item"])
    problems.add(check_factorized_ids(name, schema.user, user_codes, user_uniques, "user"))
    problems.add(check_factorized_ids(name, schema.item, item_codes, item_uniques, "item"))
    if not isinstance(source, pd.DataFrame) and schema.header:
        problems.add(_header_rows(name, schema, user_codes, user_uniques, item_codes, item_uniques))
    id_problems = any(p.column in (schema.user, schema.item) for p in problems)
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
    user_vocab = Vocabulary(np.asarray(user_uniques, dtype=object))
    item_vocab = Vocabulary(np.asarray(item_uniques, dtype=object))

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
    if len(problems):
        problems = _rows_as_lines(problems, _text_files(source, name, schema, items, users))
    problems.raise_if_any()

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
    data = Interactions(
        user_codes[order], item_codes[order],
        np.ones(len(order), np.float32) if ratings is None else ratings[order].astype(np.float32),
        timestamps[order], user_vocab, item_vocab, item_table, user_table, name,
    )
    logger.info("loaded %s: %d interactions, %d users, %d items", name, len(data), data.n_users, data.n_items)
    return data


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


def _detect(path: Path, schema: Schema | None, fmt: str) -> tuple[str, Schema]:
    """Choose reader and schema from ``fmt``, the file name and its first line."""
    if fmt.startswith("ml-"):
        return "csv", schema or movielens_schema(fmt)
    if fmt == "parquet" or (fmt == "auto" and path.suffix.lower() in _PARQUET_SUFFIXES):
        return "parquet", schema or Schema()
    if schema is not None and "sep" not in schema.model_fields_set:
        # column names given (--user-col ...), delimiter not: a tab-separated header still splits
        first = _first_line(path, schema.encoding)
        if "\t" in first and "," not in first:
            schema = schema.model_copy(update={"sep": "\t"})
        return "csv", schema
    if schema is not None or fmt == "csv":
        return "csv", schema or Schema()
    if path.name == "u.data":
        return "csv", movielens_schema("ml-100k")
    first = _first_line(path)
    if "::" in first:
        return "csv", movielens_schema("ml-1m")
    if "\t" in first and "," not in first:
        fields = first.split("\t")
        if all(_is_number(f) for f in fields):  # u.data-like: no header
            return "csv", movielens_schema("ml-100k") if len(fields) == 4 else Schema(sep="\t")
        return "csv", Schema(sep="\t")
    header = _split_header(first, ",")
    if "userId" in header and "movieId" in header and "user_id" not in header:
        return "csv", movielens_schema("ml-latest")
    return "csv", Schema()


def _first_line(path: Path, encoding: str = "utf-8") -> str:
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        # a byte-order mark (Excel exports) is not part of the first column's name
        return fh.readline(1 << 16).rstrip("\r\n").lstrip("\ufeff")


_HEAD_BYTES = 1 << 16
#: how pyarrow reports a row with the wrong number of fields
_FIELD_COUNT = re.compile(r"Expected \d+ columns, got \d+")
#: leading bytes of compressed / archive formats -> (name, how to unpack)
_MAGIC = ((b"\x1f\x8b", "gzip", "gunzip -k {f}"), (b"BZh", "bzip2", "bunzip2 -k {f}"),
          (b"\xfd7zXZ\x00", "xz", "unxz -k {f}"), (b"\x28\xb5\x2f\xfd", "zstd", "unzstd {f}"),
          (b"PK\x03\x04", "zip", "unzip {f}"), (b"7z\xbc\xaf\x27\x1c", "7z", "7z x {f}"))


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(_HEAD_BYTES)


def sniff(head: bytes, name: str, encoding: str = "utf-8") -> str | None:
    """What is wrong with a file from its first bytes, as the end of a one-line message; None if nothing.

    Names compression (gzip, bzip2, xz, zstd, zip, 7z), UTF-16 / UTF-32 text, binary
    content and text that is not valid in ``encoding``, each with what to do, so the
    message never quotes kilobytes of binary. Returns ``"parquet"`` for Parquet content.
    """
    if head[:4] == b"PAR1":
        return "parquet"
    for magic, kind, unpack in _MAGIC:
        if head.startswith(magic):
            return (f"is {kind}-compressed; decompress it first ({unpack.format(f=name)}) and pass the "
                    "extracted CSV or Parquet file")
    enc = encoding.lower().replace("_", "-")
    wide = enc.startswith(("utf-16", "utf-32"))
    if not wide:
        for bom, kind in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                          (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
            if head.startswith(bom):
                return (f"is {kind} text; pass --encoding {kind.lower()} (config: [data] encoding), or save "
                        f"it as UTF-8 (iconv -f {kind} -t UTF-8 {name} > out.csv)")
        nul = head.find(b"\x00")
        if nul >= 0:
            sample = head[:200]
            if sample[1::2].count(0) > len(sample) // 4 or sample[0::2].count(0) > len(sample) // 4:
                return ("looks like UTF-16 text without a byte-order mark; pass --encoding utf-16-le "
                        "(or utf-16-be), or save it as UTF-8")
            return (f"is not a text file (it holds a NUL byte at byte {nul}); expected CSV/TSV text or a "
                    "Parquet file")
    if enc in ("utf-8", "utf8", "utf-8-sig"):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # (not a character cut in two by the end of the sample)
            if exc.start < len(head) - 4 or len(head) < _HEAD_BYTES:
                line = head[: exc.start].count(b"\n") + 1
                return (f"is not valid UTF-8 text (byte {head[exc.start]:#04x} on line {line}); pass "
                        "--encoding with the file's encoding, e.g. --encoding latin-1 "
                        "(config: [data] encoding)")
    return None


def _clean(text: str, limit: int = 200) -> str:
    """An error text from a reader, printable and short (readers quote whole rows of binary)."""
    text = "".join(c if c.isprintable() else "?" for c in str(text).replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_header(line: str, sep: str) -> list[str]:
    if len(sep) == 1:
        return next(csv.reader([line], delimiter=sep), [])
    return line.split(sep)


def _wanted(schema: Schema) -> dict[str, str | None]:
    return {"user": schema.user, "item": schema.item, "rating": schema.rating, "timestamp": schema.timestamp}


def _select(found: list[str], name: str, schema: Schema, problems: Problems) -> dict[str, str] | None:
    """Map fields to present columns; record missing required / explicit ones."""
    wanted = _wanted(schema)
    required = {
        f: c for f, c in wanted.items() if c is not None and (f in ("user", "item") or schema.is_explicit(f))
    }
    missing = missing_columns(name, found, required)
    problems.extend(missing)
    # a repeated column name is ambiguous: the reader would silently pick one of them
    repeated = sorted({c for c in found if found.count(c) > 1 and c in wanted.values()})
    if repeated:
        problems.add(Problem(name, f"column {repeated[0]!r} appears {found.count(repeated[0])} times in the "
                                   f"header {found}; expected each column name once", repeated[0]))
        return None
    present = {f: c for f, c in wanted.items() if c is not None and c in found}
    return None if "user" not in present or "item" not in present else present


def _read_csv(
    path: Path, name: str, schema: Schema, problems: Problems
) -> tuple[pa.Table | None, np.ndarray | None]:
    """Read a delimited text file with pyarrow, recording unreadable rows.

    Returns:
        ``(table, skipped)``: the table (None when unreadable) and the data-row
        positions of rows skipped for a wrong field count (None if there were none).
    """
    sep = schema.sep
    data: Path | io.BytesIO = path
    if len(sep) > 1:
        raw = path.read_bytes()
        if _UNIT_SEP in raw:
            problems.add(Problem(name, f"contains the byte 0x1f, so the separator {sep!r} cannot be used"))
            return None, None
        data = io.BytesIO(raw.replace(sep.encode(schema.encoding), _UNIT_SEP))
        delimiter, quote = _UNIT_SEP.decode(), False
    else:
        delimiter, quote = sep, '"'

    if schema.header:
        first = _first_line(path, schema.encoding)
        if not first.strip():
            problems.add(Problem(name, "file is empty; expected a header line and interaction rows"))
            return None, None
        found = _split_header(first, sep)
        column_names: list[str] | None = None
    else:
        found = list(schema.names or ())
        column_names = list(schema.names)
    present = _select(found, name, schema, problems)
    if present is None:
        return None, None
    id_types = {present["user"]: pa.string(), present["item"]: pa.string()}
    bad_rows: list[tuple[int | None, str, int, int]] = []

    def on_invalid(row) -> str:
        bad_rows.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    def read(use_threads: bool) -> pa.Table:
        if isinstance(data, io.BytesIO):
            data.seek(0)
        return pa_csv.read_csv(
            data,
            read_options=pa_csv.ReadOptions(
                column_names=column_names, encoding=schema.encoding, use_threads=use_threads
            ),
            parse_options=pa_csv.ParseOptions(
                # A Python handler only on the single-threaded read: a threaded reader drops its
                # last reference to the handler on an Arrow worker thread, which needs the GIL; when
                # that happens while the interpreter exits (a bad file -> exit 2 at once), the
                # worker is killed mid-C++ and the process aborts with "terminate called without an
                # active exception" (rc 134, issue 16 item 7; seen in 2 of 12 runs under load).
                delimiter=delimiter, quote_char=quote, invalid_row_handler=None if use_threads else on_invalid
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=id_types, include_columns=list(present.values()), strings_can_be_null=False
            ),
        )

    try:
        try:
            table = read(use_threads=True)
        except pa.ArrowInvalid as exc:
            if not _FIELD_COUNT.search(str(exc)):
                raise
            # Rows with the wrong field count: read again on one thread, which knows row
            # numbers and collects every bad row; paid only by bad files.
            table = read(use_threads=False)
    except pa.ArrowInvalid as exc:
        text = str(exc)
        if text.startswith("Empty CSV file"):
            problems.add(Problem(name, "file is empty; expected a header line and interaction rows"))
        elif "UTF8" in text or "decode" in text.lower():
            hint = "pass --encoding with the file's encoding, e.g. latin-1 (config: [data] encoding)"
            problems.add(Problem(name, f"is not valid {schema.encoding} text; {hint}"))
        else:
            problems.add(Problem(name, f"cannot be parsed as delimited text ({_clean(text)})"))
        return None, None
    except (OSError, UnicodeError, LookupError) as exc:  # unreadable mid-way, or a codec that cannot decode
        problems.add(Problem(name, f"cannot be read as {schema.encoding} text ({_clean(exc)})"))
        return None, None
    skipped = None
    if bad_rows:
        offset = 2 if schema.header else 1  # row.number is 1-based and counts the header line
        positions = [n - offset for n, *_ in bad_rows]
        _, text, expected, actual = bad_rows[0]
        problems.add(Problem(
            name,
            f"{len(bad_rows)} {'row has' if len(bad_rows) == 1 else 'rows have'} the wrong number of fields "
            f"at rows {positions[:5]} (e.g. '{text[:40].replace(_UNIT_SEP.decode(), sep)}' has {actual}); "
            f"expected {expected} fields "
            f"separated by {sep!r}",
            None, tuple(positions[:5]),
        ))
        skipped = np.asarray(positions, dtype=np.int64)
    if table.num_rows == 0 and not bad_rows:
        problems.add(Problem(name, f"has no data rows (only the header {found}); expected interaction rows"))
        return None, None
    return table, skipped


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


def _arrow_to_series(column: pa.ChunkedArray) -> pd.Series:
    if pa.types.is_date(column.type):
        column = column.cast(pa.timestamp("s"))
    return column.to_pandas()


def _table_columns(table: pa.Table, schema: Schema) -> dict:
    present = {f: c for f, c in _wanted(schema).items() if c is not None and c in table.column_names}
    # ids stay arrow arrays (factorized there); values go to pandas for parsing
    return {f: table.column(c) if f in ("user", "item") else _arrow_to_series(table.column(c))
            for f, c in present.items()}


def _frame_columns(
    frame: pd.DataFrame, name: str, schema: Schema, problems: Problems
) -> dict[str, pd.Series] | None:
    found = [str(c) for c in frame.columns]
    present = _select(found, name, schema, problems)
    if present is None:
        return None
    if len(frame) == 0:
        problems.add(Problem(name, f"has no data rows (columns {found}); expected interaction rows"))
        return None
    return {f: frame[c].reset_index(drop=True) for f, c in present.items()}


def _factorize(ids: pd.Series | pa.ChunkedArray) -> tuple[np.ndarray, pd.Index]:
    """Codes in order of first appearance (-1 for missing) and the distinct ids as strings."""
    if isinstance(ids, pa.ChunkedArray):
        # One dictionary_encode over the combined column: per-chunk dictionaries
        # (what pandas does for chunked arrow data) are ~1.7x slower on 10M rows.
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            ids = _as_id_strings(ids.to_pandas())
        else:
            encoded = pc.dictionary_encode(ids.combine_chunks())
            codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            return codes.astype(np.int64, copy=False), pd.Index(encoded.dictionary.to_pandas())
    codes, uniques = pd.factorize(_as_id_strings(ids), use_na_sentinel=True)
    return codes, pd.Index(uniques)


def _header_rows(name, schema, user_codes, user_uniques, item_codes, item_uniques) -> Problem | None:
    """Flag data rows that repeat the header line (files concatenated with their headers)."""
    u = np.flatnonzero(np.asarray(user_uniques, dtype=object) == schema.user)
    i = np.flatnonzero(np.asarray(item_uniques, dtype=object) == schema.item)
    if not len(u) or not len(i):
        return None
    rows = np.flatnonzero((user_codes == u[0]) & (item_codes == i[0]))
    if not len(rows):
        return None
    return Problem(name, f"{len(rows)} data rows repeat the header line at rows {rows[:5].tolist()} "
                         f"(user '{schema.user}', item '{schema.item}'); expected the header once, "
                         "as the first line", schema.user, tuple(int(r) for r in rows[:5]))


def _as_id_strings(ids: pd.Series) -> pd.Series:
    """Ids as pandas strings, missing values kept missing (integral floats lose ``.0``)."""
    if ids.dtype == "str":
        return ids
    if pd.api.types.is_float_dtype(ids.dtype):
        values = ids.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        # e.g. int ids that became float through NaN; beyond 2**53 a float is no exact int (and
        # Int64 refuses it, as it refuses inf), so such ids keep their float text
        exact = not (np.abs(finite) >= 2.0**53).any() and not np.isinf(values).any()
        if exact and np.array_equal(finite, np.floor(finite)):
            return ids.astype("Int64").astype("str")
    return ids.astype("str")


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
        stacklevel=3,
    )
    return keep


# ------------------------------------------------------------------ side tables
def _table_fields(kind: str, schema: Schema) -> tuple[str, str, dict[str, str]]:
    """(id column, canonical id name, {column: canonical name}) of a side table."""
    if kind == "items":
        return schema.item_id, "item_id", {schema.title: "title", schema.categories: "categories"}
    return schema.user_id, "user_id", {}


def _read_side_table(source: Source, kind: str, schema: Schema, problems: Problems) -> pd.DataFrame | None:
    """Read an items / users table with its id column as strings; None on failure."""
    id_col, _, text_cols = _table_fields(kind, schema)
    if isinstance(source, pd.DataFrame):
        name, frame = f"<{kind} DataFrame>", source.reset_index(drop=True)
    else:
        path, name = Path(source), str(source)
        if not path.is_file():
            problems.add(Problem(name, f"{kind} table not found"))
            return None
        try:
            trouble = sniff(_head(path), name)
        except OSError as exc:
            trouble = f"cannot be read ({exc.strerror or exc}); check the file's permissions"
        if trouble is not None and trouble != "parquet":
            problems.add(Problem(name, trouble))
            return None
        try:
            if path.suffix.lower() in _PARQUET_SUFFIXES or trouble == "parquet":
                frame = pq.read_table(path).to_pandas()
            else:
                # ids and text columns as strings: titles like "1984" must not become numbers
                types = {c: pa.string() for c in (id_col, *text_cols)}
                table = pa_csv.read_csv(
                    path,
                    parse_options=pa_csv.ParseOptions(delimiter=schema.table_sep),
                    convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=False),
                )
                frame = table.to_pandas()
        except (pa.ArrowException, OSError) as exc:
            text = "file is empty" if "Empty CSV" in str(exc) else f"cannot be read ({_clean(exc)})"
            problems.add(Problem(name, f"{text}; expected a {kind} table with an '{id_col}' column"))
            return None
    frame.attrs["segrec_source"] = name
    found = [str(c) for c in frame.columns]
    field = "item_id" if kind == "items" else "user_id"
    missing = missing_columns(name, found, {field: id_col}, what="id column")
    if missing:
        problems.extend(missing)
        return None
    ids = _as_id_strings(frame[id_col])
    problems.add(check_ids(name, id_col, ids, kind[:-1]))
    problems.add(check_unique_ids(name, id_col, ids, kind[:-1]))
    frame = frame.assign(**{id_col: ids})
    return frame


def _align_table(
    frame: pd.DataFrame, kind: str, schema: Schema, vocab: Vocabulary, inter_name: str, problems: Problems
) -> pd.DataFrame | None:
    """One row per dense id, in vocabulary order, with canonical column names."""
    name = frame.attrs.get("segrec_source", f"<{kind} DataFrame>")
    id_col, canonical_id, text_cols = _table_fields(kind, schema)
    ids = frame[id_col]
    if ids.isna().any() or ids.duplicated().any():
        return None  # already reported by _read_side_table
    idx = vocab.index(ids.to_numpy(dtype=object))
    known = idx >= 0
    if len(ids) == 0 or not known.any():
        sample = f" (e.g. '{ids.iloc[0]}')" if len(ids) else ""
        problems.add(Problem(
            name,
            f"none of the {len(ids)} ids in column '{id_col}' match any {kind[:-1]} of {inter_name}{sample}; "
            f"is this the {kind} table of the same dataset?",
            id_col,
        ))
        return None
    n_unknown = int((~known).sum())
    if n_unknown:
        warnings.warn(
            f"{name}: {n_unknown} of {len(ids)} {kind} (e.g. '{ids[~known].iloc[0]}') do not occur in "
            f"{inter_name} and were left out; only ids seen in the interactions enter the vocabulary",
            DataWarning,
            stacklevel=4,
        )
    n_absent = len(vocab) - int(known.sum())
    if n_absent:
        logger.info("%s: %d of %d %s have no row in %s", inter_name, n_absent, len(vocab), kind, name)
    take = np.full(len(vocab), -1, dtype=np.int64)
    take[idx[known]] = np.flatnonzero(known)
    body = frame.drop(columns=[id_col]).rename(columns={c: n for c, n in text_cols.items() if c != id_col})
    body = body.loc[:, ~body.columns.duplicated()]
    # reindex with -1 gives all-NaN rows for ids the table lacks (ints upcast to float)
    aligned = body.reset_index(drop=True).reindex(take).reset_index(drop=True)
    for column in text_cols.values():
        if column in aligned:
            aligned[column] = aligned[column].fillna("").astype("str")
    aligned.insert(0, canonical_id, vocab.ids)
    return aligned
