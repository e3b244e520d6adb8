"""User and item ids: as strings, factorized in order of first appearance, header rows among them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .validate import Problem


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
