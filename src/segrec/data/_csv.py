"""The CSV / TSV reader: pyarrow's multi-threaded reader, with every unreadable row recorded."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from ._columns import _select
from ._sniff import _clean, _first_line, _split_header
from .schema import Schema
from .validate import Problem, Problems

# Stand-in delimiter for multi-character separators (MovieLens "::"): pyarrow
# only splits on one byte, and the ASCII unit separator never occurs in real logs.
_UNIT_SEP = b"\x1f"


#: how pyarrow reports a row with the wrong number of fields
_FIELD_COUNT = re.compile(r"Expected \d+ columns, got \d+")


def _read_csv(
    path: Path, name: str, schema: Schema, problems: Problems
) -> tuple[pa.Table | None, np.ndarray | None]:
    """Read a delimited text file with pyarrow, recording unreadable rows.

    Returns:
        ``(table, skipped)``: the table (None when unreadable) and the data-row
        positions of rows skipped for a wrong field count (None if there were none).
    """
    source = _source(path, name, schema, problems)
    if source is None:
        return None, None
    header = _header(path, name, schema, problems)
    if header is None:
        return None, None
    found, column_names, present = header
    bad_rows: list[tuple[int | None, str, int, int]] = []
    table = _parse(source, column_names, present, bad_rows, name, schema, problems)
    if table is None:
        return None, None
    skipped = None
    if bad_rows:
        skipped = _record_bad_rows(bad_rows, name, schema, problems)
    if table.num_rows == 0 and not bad_rows:
        problems.add(Problem(name, f"has no data rows (only the header {found}); expected interaction rows"))
        return None, None
    return table, skipped


def _source(path: Path, name: str, schema: Schema,
            problems: Problems) -> tuple[Path | io.BytesIO, str, str | bool] | None:
    """``(data, delimiter, quote)`` for pyarrow; None (a problem recorded) when the separator cannot work."""
    sep = schema.sep
    data: Path | io.BytesIO = path
    if len(sep) > 1:
        raw = path.read_bytes()
        if _UNIT_SEP in raw:
            problems.add(Problem(name, f"contains the byte 0x1f, so the separator {sep!r} cannot be used"))
            return None
        data = io.BytesIO(raw.replace(sep.encode(schema.encoding), _UNIT_SEP))
        delimiter, quote = _UNIT_SEP.decode(), False
    else:
        delimiter, quote = sep, '"'
    return data, delimiter, quote


def _header(path: Path, name: str, schema: Schema,
            problems: Problems) -> tuple[list[str], list[str] | None, dict[str, str]] | None:
    """``(columns found, names to give pyarrow, {field: column})``; None (problems recorded) if unusable."""
    sep = schema.sep
    if schema.header:
        first = _first_line(path, schema.encoding)
        if not first.strip():
            problems.add(Problem(name, "file is empty; expected a header line and interaction rows"))
            return None
        found = _split_header(first, sep)
        column_names: list[str] | None = None
    else:
        found = list(schema.names or ())
        column_names = list(schema.names)
    present = _select(found, name, schema, problems)
    if present is None:
        return None
    return found, column_names, present


def _parse(source, column_names, present, bad_rows, name, schema, problems) -> pa.Table | None:
    """The table pyarrow reads, rows with a wrong field count appended to ``bad_rows``; None on failure."""
    data, delimiter, quote = source
    id_types = {present["user"]: pa.string(), present["item"]: pa.string()}

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
            return read(use_threads=True)
        except pa.ArrowInvalid as exc:
            if not _FIELD_COUNT.search(str(exc)):
                raise
            # Rows with the wrong field count: read again on one thread, which knows row
            # numbers and collects every bad row; paid only by bad files.
            return read(use_threads=False)
    except pa.ArrowInvalid as exc:
        text = str(exc)
        if text.startswith("Empty CSV file"):
            problems.add(Problem(name, "file is empty; expected a header line and interaction rows"))
        elif "UTF8" in text or "decode" in text.lower():
            hint = "pass --encoding with the file's encoding, e.g. latin-1 (config: [data] encoding)"
            problems.add(Problem(name, f"is not valid {schema.encoding} text; {hint}"))
        else:
            problems.add(Problem(name, f"cannot be parsed as delimited text ({_clean(text)})"))
        return None
    except (OSError, UnicodeError, LookupError) as exc:  # unreadable mid-way, or a codec that cannot decode
        problems.add(Problem(name, f"cannot be read as {schema.encoding} text ({_clean(exc)})"))
        return None


def _record_bad_rows(bad_rows, name: str, schema: Schema, problems: Problems) -> np.ndarray:
    """Record one problem for the rows with a wrong field count; returns their data-row positions."""
    sep = schema.sep
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
    return np.asarray(positions, dtype=np.int64)
