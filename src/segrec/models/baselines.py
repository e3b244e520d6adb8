"""Classic non-sequential baselines: Popularity, ItemKNN (cosine) and EASE.

Each tunes its one hyperparameter on an inner validation split when it is left
as ``None`` (the default), with the grids used for ../shared/ANCHORS.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..types import Interactions
from .base import ModelConfig, Recommender
from .context import FitContext
from .tags import RecommenderTags
from .tuning import grid_search

__all__ = ["EASERecommender", "ItemKNNRecommender", "PopularityRecommender"]


class _ItemItemModel(Recommender):
    """Shared scoring for models whose state is one item x item weight matrix.

    ``score(u) = x_u @ W`` with ``x_u`` the user's binary fit-data row, which also
    serves brand-new users from a handful of items without refitting.
    """

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self._score_histories(self._history_rows(users), None)

    def _history_rows(self, users: np.ndarray) -> sp.csr_matrix:
        return self.train_csr_[users]

    def _score_histories(self, rows: sp.csr_matrix, segments) -> np.ndarray:
        # (n, n_items) for item rows, e.g. a new user's recent items
        out = rows @ self.weights_
        return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float32)

    def score_one(self, user: int) -> np.ndarray:
        """One user's scores without scipy's per-call sparse-indexing overhead (the server's path).

        On the server's hot path, ``score_dense`` spends most of its time in scipy's
        fancy row indexing and matmul dispatch (~0.7 ms of ~1 ms a request on
        ml-100k). With a dense ``W`` the same numbers come from plain numpy: a binary
        history row times ``W`` is the sum of the history's rows of ``W``, added in
        the same order (bitwise equal; tested).
        """
        if not isinstance(self.weights_, np.ndarray):
            return super().score_one(user)
        rows = self.train_csr_
        history = rows.indices[rows.indptr[user]:rows.indptr[user + 1]]
        if len(history) == 0:
            return np.zeros(self.weights_.shape[1], dtype=np.float32)
        return np.add.reduce(self.weights_[np.sort(history)], axis=0)

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        # x_u @ W with a binary x_u of h non-zeros: h rows of W summed
        w = self.weights_
        n = self.n_items
        per_row = w.nnz / max(w.shape[0], 1) if sp.issparse(w) else float(n)
        return 2.0 * np.minimum(h, n) * per_row

    def _add_interactions(self, users: np.ndarray, items: np.ndarray, done: set[int]) -> None:
        self.train_csr_ = self.seen_  # a user's scores are their history row times W

    def _fit_weights(self, data: Interactions) -> None:
        self.train_csr_ = data.to_csr()
        self.weights_ = self._compute_weights(self.train_csr_)

    def _state(self) -> dict[str, np.ndarray]:
        w = self.weights_
        if sp.issparse(w):
            w = w.tocsr()
            return {"w_data": w.data, "w_indices": w.indices, "w_indptr": w.indptr}
        return {"weights": w}

    def _set_state(self, tensors, meta) -> None:
        if "weights" in tensors:
            self.weights_ = tensors["weights"]
        else:
            n = len(self.item_vocab_)
            self.weights_ = sp.csr_matrix(
                (tensors["w_data"], tensors["w_indices"], tensors["w_indptr"]), shape=(n, n))
        self.train_csr_ = self.seen_
        self._set_meta(meta)

    def _set_meta(self, meta: dict[str, Any]) -> None:
        pass


class PopularityConfig(ModelConfig):
    """Popularity has nothing to tune."""


class PopularityRecommender(Recommender):
    """Recommends the most-interacted items of the fit data to everyone.

    Attributes:
        counts_: float32 array of shape (n_items,), interactions per item.
    """

    Config = PopularityConfig
    name = "popularity"

    def __recommender_tags__(self) -> RecommenderTags:
        """Popularity ignores the history: a new user with no items still gets the popular items."""
        return replace(super().__recommender_tags__(), needs_history=False)

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        full = train if valid is None else train.concat(valid)
        self.counts_ = full.item_counts().astype(np.float32)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts_, (len(users), len(self.counts_)))

    def _score_histories(self, rows: sp.csr_matrix, segments) -> np.ndarray:
        # the same popularity scores for any history (a new user too)
        return np.broadcast_to(self.counts_, (rows.shape[0], len(self.counts_)))

    def score_one(self, user: int) -> np.ndarray:
        """The popularity row itself (no copy: callers copy before masking)."""
        return self.counts_

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        return np.zeros_like(h)  # the score row is a copy of the counts

    def _state(self):
        return {"counts": self.counts_}

    def _set_state(self, tensors, meta):
        self.counts_ = tensors["counts"]


class ItemKNNConfig(ModelConfig):
    """Settings of :class:`ItemKNNRecommender`."""

    k: int | None = Field(None, ge=1)
    """Neighbours kept per item; ``None`` chooses from ``k_grid`` on inner validation."""
    k_grid: tuple[int, ...] = (10, 25, 50, 100, 200, 400, 800, 1600)
    """Candidates for ``k``."""
    shrink: float = Field(0.0, ge=0)
    """Added to the cosine denominator; damps similarities built on few co-users."""


class ItemKNNRecommender(_ItemItemModel):
    """Item-based k-nearest neighbours with cosine similarity (Sarwar et al. 2001).

    ``score(u, j) = sum of sim(i, j)`` over the user's items ``i`` among the k
    items most similar to ``j``.

    Attributes:
        weights_: sparse (n_items, n_items) similarities, top-k per column.
        k_: The neighbourhood size in use.
    """

    Config = ItemKNNConfig
    name = "itemknn"

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        self.tuning_ = None
        if self.config.k is None:
            best, self.tuning_ = grid_search(self, {"k": self.config.k_grid}, train, valid)
            self.k_ = best["k"]
        else:
            self.k_ = self.config.k
        self._fit_weights(train if valid is None else train.concat(valid))

    def _compute_weights(self, x: sp.csr_matrix) -> sp.csr_matrix:
        xc = x.tocsc()
        co = (xc.T @ xc).toarray()  # (n_items, n_items) co-occurrence counts
        norms = np.sqrt(np.diag(co)).astype(np.float64)
        sim = co / (np.outer(norms, norms) + self.config.shrink + 1e-12)
        np.fill_diagonal(sim, 0.0)
        n = sim.shape[0]
        k = min(self.k_, n - 1) if n > 1 else 0
        if k < n:
            # keep, for every target item j (column), its k most similar items i
            thresh_idx = np.argpartition(-sim, k - 1, axis=0)[:k] if k > 0 else np.empty((0, n), int)
            mask = np.zeros_like(sim, dtype=bool)
            mask[thresh_idx, np.arange(n)[None, :]] = True
            sim = np.where(mask, sim, 0.0)
        return sp.csr_matrix(sim.astype(np.float32))

    def _meta(self):
        return {"k": self.k_}

    def _set_meta(self, meta):
        self.k_ = meta.get("k")


class EASEConfig(ModelConfig):
    """Settings of :class:`EASERecommender`."""

    reg: float | None = Field(None, gt=0)
    """L2 weight lambda; ``None`` chooses from ``reg_grid`` on inner validation."""
    reg_grid: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
    """Candidates for ``reg``."""


class EASERecommender(_ItemItemModel):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019).

    ``B = I - P / diag(P)`` with ``P = (X'X + lambda I)^-1`` and a zero diagonal;
    ``score(u) = x_u @ B``. Memory is O(n_items^2): fine to ~30k items.

    Attributes:
        weights_: float32 (n_items, n_items).
        reg_: The lambda in use.
    """

    Config = EASEConfig
    name = "ease"

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        self.tuning_ = None
        if self.config.reg is None:
            best, self.tuning_ = grid_search(self, {"reg": self.config.reg_grid}, train, valid)
            self.reg_ = best["reg"]
        else:
            self.reg_ = self.config.reg
        self._fit_weights(train if valid is None else train.concat(valid))

    def _compute_weights(self, x: sp.csr_matrix) -> np.ndarray:
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.reg_
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        return b.astype(np.float32)

    def _meta(self):
        return {"reg": self.reg_}

    def _set_meta(self, meta):
        self.reg_ = meta.get("reg")
