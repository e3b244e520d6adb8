"""Which columns of a file or DataFrame hold the schema's fields, and taking them out."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from .schema import Schema
from .validate import Problem, Problems, missing_columns


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
