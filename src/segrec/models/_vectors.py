"""Known users' vectors, cached for serving: a request is one dot product with the item table.

A model whose scores factor as ``score(u) = item_vectors @ v_u + bias[g_u]`` declares its
:class:`ItemTable` (:meth:`Recommender.item_table`) and computes ``v_u`` for known users
(``_user_vectors``): the Transformer's last hidden state against its tied item embeddings,
the adapted Transformer's per-segment state (``g_u`` picks the segment's output bias), ALS
user factors, Mult-VAE's last decoder activation. :class:`UserVectors` holds them for every
known user, computed once (at save, or at load for an artifact saved without them), so the
server's request for a known user costs ``2 * d * n_items`` FLOPs instead of a forward pass
over the user's history, which has not changed since the fit.

Saved next to the model's tensors as ``vectors.safetensors`` (``vectors`` float32
(n_users, d), ``groups`` int32 (n_users,)) and checked on load like every tensor
(:func:`check_vectors`): shapes against the vocabularies and the item table, finite
values, groups in range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._checks import check_array

__all__ = ["VECTORS_FILE", "ItemTable", "UserVectors", "check_vectors", "make_user_vectors"]

#: file of a model directory holding the cached known-user vectors
VECTORS_FILE = "vectors.safetensors"


@dataclass(frozen=True)
class ItemTable:
    """The item side of a factor model: ``scores = vectors @ v + bias[g]``.

    Attributes:
        vectors: float32 (n_items, d), C-contiguous (one gemv per request).
        bias: float32 (n_groups, n_items) or None; group ``g`` of a user picks its row
            (the adapted Transformer: row 0 the global item bias, row i + 1 segment i's).
    """

    vectors: np.ndarray
    bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vectors", np.ascontiguousarray(self.vectors, dtype=np.float32))
        if self.bias is not None:
            bias = np.ascontiguousarray(np.atleast_2d(self.bias), dtype=np.float32)
            object.__setattr__(self, "bias", bias)

    @property
    def dim(self) -> int:
        """Width d of a user vector."""
        return int(self.vectors.shape[1])

    @property
    def n_groups(self) -> int:
        """Rows of ``bias`` (1 without a bias: every user is group 0)."""
        return 1 if self.bias is None else int(self.bias.shape[0])

    def flops(self) -> float:
        """FLOPs of one user's scores: the (n_items, d) x (d,) product and the bias row."""
        n, d = self.vectors.shape
        return 2.0 * n * d + (float(n) if self.bias is not None else 0.0)

    def scores(self, vectors: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """float32 (n, n_items) for vectors (n, d) and bias groups (n,); NaN rows where group < 0."""
        out = np.asarray(vectors, np.float32) @ self.vectors.T
        groups = np.asarray(groups, np.int64)
        if self.bias is not None:
            out += self.bias[np.maximum(groups, 0)]
        out[groups < 0] = np.nan
        return out


@dataclass(frozen=True)
class UserVectors:
    """Every known user's vector and bias group against one :class:`ItemTable`.

    Attributes:
        table: The item side.
        vectors: float32 (n_users, d).
        groups: int32 (n_users,); -1 marks a user the model cannot score (no fit history).
    """

    table: ItemTable
    vectors: np.ndarray
    groups: np.ndarray

    def score_one(self, user: int) -> np.ndarray:
        """One known user's scores (n_items,): a gemv and a bias row, NaN when the model cannot score them."""
        g = int(self.groups[user])
        if g < 0:
            return np.full(self.table.vectors.shape[0], np.nan, dtype=np.float32)
        row = self.table.vectors @ self.vectors[user]
        if self.table.bias is not None:
            row += self.table.bias[g]
        return row

    def replace_users(self, users: np.ndarray, vectors: np.ndarray, groups: np.ndarray) -> UserVectors:
        """A copy with some users' vectors recomputed (their history grew; ``segrec update``)."""
        vec, grp = self.vectors.copy(), self.groups.copy()
        vec[users], grp[users] = vectors, groups
        return UserVectors(self.table, vec, grp)

    def state(self) -> dict[str, np.ndarray]:
        """The tensors saved in :data:`VECTORS_FILE`."""
        return {"vectors": self.vectors, "groups": self.groups}


def make_user_vectors(table: ItemTable, vectors: np.ndarray, groups: np.ndarray | None) -> UserVectors:
    """Tidy computed vectors: float32, users that cannot be scored (non-finite) as group -1 with zeros."""
    vectors = np.array(vectors, dtype=np.float32, copy=True)
    groups = (np.zeros(len(vectors), np.int32) if groups is None else np.asarray(groups, np.int32).copy())
    bad = ~np.isfinite(vectors).all(1) if vectors.size else np.zeros(len(vectors), bool)
    vectors[bad] = 0.0
    groups[bad] = -1
    return UserVectors(table, vectors, groups)


def check_vectors(where: Path, tensors: dict[str, np.ndarray], table: ItemTable, n_users: int) -> UserVectors:
    """Loaded cached vectors, checked against the vocabularies and the item table (untrusted input).

    Raises:
        SegrecError: A tensor missing, of the wrong dtype or shape, non-finite, or a group
            outside ``[-1, n_groups)``.
    """
    vectors = check_array(where, "vectors", tensors.get("vectors"), kind="f", shape=(n_users, table.dim))
    groups = check_array(where, "groups", tensors.get("groups"), kind="iu", shape=(n_users,), low=-1,
                         high=table.n_groups)
    return UserVectors(table, np.ascontiguousarray(vectors, np.float32), groups.astype(np.int32))
