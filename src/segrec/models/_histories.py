"""New users' histories in the two shapes models take: binary item rows or item sequences.

``Recommender.score_histories`` accepts either and hands the model's hook the
one its ``history_input`` tag names, so no caller needs to know which a model
wants (and nothing inspects signatures).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError, SegrecError

__all__ = ["as_history_input", "n_histories", "sequences_to_rows"]


def n_histories(histories) -> int:
    """Number of users in a CSR of item rows or a list of item sequences."""
    return int(histories.shape[0]) if sp.issparse(histories) else len(histories)


def sequences_to_rows(histories: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    """Binary (n, n_items) CSR of dense item-index sequences (duplicates count once)."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    items = (np.concatenate([np.asarray(h, np.int64) for h in histories]) if lengths.sum()
             else np.empty(0, np.int64))
    rows = sp.csr_matrix((np.ones(len(items), np.float32), items, np.r_[0, np.cumsum(lengths)]),
                         shape=(len(histories), n_items))
    rows.sum_duplicates()
    rows.data[:] = 1.0
    return rows


def _rows_to_sequences(rows: sp.csr_matrix) -> list[list[int]]:
    # a row carries no order: ascending item ids stand in for time order
    rows = sp.csr_matrix(rows)
    return [np.sort(rows.indices[rows.indptr[r]:rows.indptr[r + 1]]).tolist() for r in range(rows.shape[0])]


def as_history_input(histories, kind: str, n_items: int) -> tuple[object, np.ndarray]:
    """``histories`` in the form ``kind`` (``"rows"`` or ``"sequence"``), and which are empty.

    Args:
        histories: A (n, n_items) sparse matrix of item rows (used as given, weights
            included) or a list of dense item-index sequences, oldest first.
        kind: The model's ``history_input`` tag.
        n_items: The model's catalogue size.

    Returns:
        ``(input, empty)`` with ``empty`` a bool (n,) array.

    Raises:
        SegrecError: Rows of the wrong width, or (ConfigError) item indices outside the catalogue.
    """
    if sp.issparse(histories):
        rows = sp.csr_matrix(histories)
        if rows.shape[1] != n_items:
            raise SegrecError(f"score_histories: item rows have {rows.shape[1]} columns; the model has "
                              f"{n_items} items")
        empty = np.diff(rows.indptr) == 0
        return (rows if kind == "rows" else _rows_to_sequences(rows)), empty
    seqs = [np.asarray(h, np.int64).tolist() for h in histories]
    flat = np.fromiter((i for h in seqs for i in h), np.int64)
    bad = (flat < 0) | (flat >= n_items)
    if bad.any():
        raise ConfigError(f"score_histories: item indices must be in [0, {n_items}); "
                          f"got {flat[bad][:5].tolist()}")
    empty = np.array([len(h) == 0 for h in seqs], dtype=bool)
    return (sequences_to_rows(seqs, n_items) if kind == "rows" else seqs), empty
