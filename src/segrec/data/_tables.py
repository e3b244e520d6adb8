"""The optional items / users tables: read, checked, and aligned to the dense ids."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import DataWarning
from ..types import Vocabulary
from ._ids import _as_id_strings
from ._sniff import _PARQUET_SUFFIXES, Source, _clean, _head, sniff
from .schema import Schema
from .validate import Problem, Problems, check_ids, check_unique_ids, missing_columns

logger = logging.getLogger("segrec.data.load")  # the loader's logger, as before the split


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
            stacklevel=5,  # called via load.py's _side_tables: the same frame as before the split is named
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
