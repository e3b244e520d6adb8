"""Classic non-sequential baselines: Popularity, ItemKNN (cosine) and EASE.

Each tunes its one hyperparameter on an inner validation split when it is left
as ``None`` (the default), with the grids used for ../shared/ANCHORS.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..ease import ease_reg_path, ease_weights
from ..evaluate.ranking import quick_ndcg
from ..types import Interactions
from .base import ModelConfig, Recommender
from .context import FitContext
from .tags import RecommenderTags
from .tuning import inner_sets, scored_users

__all__ = ["EASERecommender", "ItemKNNRecommender", "PopularityRecommender"]

log = logging.getLogger(__name__)


#: dense item x item weights of larger catalogues are kept in float16: half the memory
#: (EASE at 19k items: 0.7 GB instead of 1.4 GB, and again for each per-segment EASE),
#: summed in float32. Its NDCG@10 on a 10% holdout equalled float32's to 4 decimals on
#: ml-100k, amazon-scientific and the 12k-item e-commerce shape (largest weight error
#: 1.2e-4 against weights up to 0.46); smaller catalogues keep float32 (bitwise as before).
HALF_MIN_ITEMS = 4096
#: float32 entries of gathered weight rows summed at once (64 MiB)
_GATHER_ENTRIES = 2**24


def _compact(w):
    """``w`` as stored: float16 when dense and wider than :data:`HALF_MIN_ITEMS`."""
    if isinstance(w, np.ndarray) and w.shape[1] > HALF_MIN_ITEMS and w.dtype != np.float16:
        return w.astype(np.float16)
    return w


def _sum_rows(rows: sp.csr_matrix, w: np.ndarray) -> np.ndarray:
    """``rows @ w`` for a float16 ``w``, in float32, a chunk of rows at a time (no float32 copy of w)."""
    rows = sp.csr_matrix(rows, dtype=np.float32)
    out = np.empty((rows.shape[0], w.shape[1]), np.float32)
    per_chunk = max(1, _GATHER_ENTRIES // max(w.shape[1], 1))  # gathered rows of w at once
    lo, n = 0, rows.shape[0]
    while lo < n:
        # as many users as keep their gathered rows within the budget (at least one)
        hi = int(np.searchsorted(rows.indptr, rows.indptr[lo] + per_chunk, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        a, b = rows.indptr[lo], rows.indptr[hi]
        gathered = w[rows.indices[a:b]].astype(np.float32)  # (nnz, n_items)
        pick = sp.csr_matrix((rows.data[a:b], np.arange(b - a), rows.indptr[lo:hi + 1] - a),
                             shape=(hi - lo, b - a))
        out[lo:hi] = pick @ gathered
        lo = hi
    return out


class _ItemItemModel(Recommender):
    """Shared scoring for models whose state is one item x item weight matrix.

    ``score(u) = x_u @ W`` with ``x_u`` the user's binary fit-data row, which also
    serves brand-new users from a handful of items without refitting. A dense ``W``
    over more than :data:`HALF_MIN_ITEMS` items is stored in float16.
    """

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self._score_histories(self._history_rows(users), None)

    def _history_rows(self, users: np.ndarray) -> sp.csr_matrix:
        return self.train_csr_[users]

    def _score_histories(self, rows: sp.csr_matrix, segments) -> np.ndarray:
        # (n, n_items) for item rows, e.g. a new user's recent items
        if isinstance(self.weights_, np.ndarray) and self.weights_.dtype == np.float16:
            return _sum_rows(rows, self.weights_)
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
        return np.add.reduce(self.weights_[np.sort(history)], axis=0, dtype=np.float32)

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
        self.weights_ = _compact(self._compute_weights(self.train_csr_))

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
            # one similarity matrix and one sort for the whole grid: the top-k of every k is
            # a prefix of each column's neighbours sorted by similarity
            start = time.perf_counter()
            inner_train, inner_valid = inner_sets(train, valid)
            train_csr, valid_csr = inner_train.to_csr(), inner_valid.to_csr()
            neighbours = _Neighbours(train_csr, self.config.shrink)
            users = scored_users(valid_csr)
            self.tuning_ = []
            best_score = -1.0
            for k in self.config.k_grid:
                w = neighbours.top(k)
                score = quick_ndcg(lambda u, w=w: _dense(train_csr[u] @ w), train_csr, valid_csr,
                                   k=10, users=users)
                self.tuning_.append({"k": k, "ndcg@10": score})
                log.info("ItemKNN k=%d: inner-valid NDCG@10 %.4f", k, score)
                if score > best_score:  # ties go to the earlier candidate
                    self.k_, best_score = k, score
            self.fit_timings_["tuning_s"] = time.perf_counter() - start
        else:
            self.k_ = self.config.k
        start = time.perf_counter()
        self._fit_weights(train if valid is None else train.concat(valid))
        self.fit_timings_["refit_s"] = time.perf_counter() - start

    def _compute_weights(self, x: sp.csr_matrix) -> sp.csr_matrix:
        return _Neighbours(x, self.config.shrink).top(self.k_)

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
    ``score(u) = x_u @ B``. Memory is one n_items^2 float32 matrix (1.4 GB at 19k items);
    a catalogue that would need more than the machine has raises
    :class:`~segrec.errors.ResourceError`. With fewer users than items the closed form
    goes through the users' Gram matrix (Woodbury); lambda is tuned on one Gram matrix built
    once for the grid, on at most 4096 items (:mod:`segrec.ease`).

    Attributes:
        weights_: float32 (n_items, n_items).
        reg_: The lambda in use.
        tuning_: Inner-validation NDCG@10 per candidate, or None when ``reg`` was given.
        tuning_info_: How the grid was scored (Gram side, sub-catalogue, users scored).
    """

    Config = EASEConfig
    name = "ease"

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        self.tuning_ = None
        self.tuning_info_: dict[str, Any] = {}
        if self.config.reg is None:
            start = time.perf_counter()
            inner_train, inner_valid = inner_sets(train, valid)
            scores, self.tuning_info_ = ease_reg_path(inner_train.to_csr(), inner_valid.to_csr(),
                                                      self.config.reg_grid)
            self.tuning_ = [{"reg": r, "ndcg@10": sc} for r, sc in zip(self.config.reg_grid, scores,
                                                                        strict=True)]
            for row in self.tuning_:
                log.info("EASE reg=%g: inner-valid NDCG@10 %.4f", row["reg"], row["ndcg@10"])
            self.reg_ = float(self.config.reg_grid[int(np.argmax(scores))])  # ties: the earlier one
            self.fit_timings_["tuning_s"] = time.perf_counter() - start
        else:
            self.reg_ = self.config.reg
        start = time.perf_counter()
        self._fit_weights(train if valid is None else train.concat(valid))
        self.fit_timings_["refit_s"] = time.perf_counter() - start

    def _compute_weights(self, x: sp.csr_matrix) -> np.ndarray:
        return ease_weights(x, self.reg_, what=f"{type(self).__name__}")

    def _meta(self):
        return {"reg": self.reg_}

    def _set_meta(self, meta):
        self.reg_ = meta.get("reg")


def _dense(m) -> np.ndarray:
    return np.asarray(m.toarray() if sp.issparse(m) else m, dtype=np.float32)


class _Neighbours:
    """Cosine similarities of one interaction matrix, sorted once per target item.

    ``top(k)`` is the ItemKNN weight matrix for any k: each column keeps its k most
    similar items (ties to the lower item index). Only co-occurring pairs are stored,
    so memory follows the co-occurrence count, not n_items^2.
    """

    def __init__(self, x: sp.csr_matrix, shrink: float):
        x = sp.csr_matrix(x, dtype=np.float32)
        self.n = x.shape[1]
        co = (x.T.tocsr() @ x).tocoo()  # co-occurrence counts of co-occurring pairs
        counts = np.asarray(x.multiply(x).sum(0), dtype=np.float64).ravel()
        norms = np.sqrt(counts)
        off = co.row != co.col
        rows, cols = co.row[off].astype(np.int64), co.col[off].astype(np.int64)
        sims = co.data[off].astype(np.float64) / (norms[rows] * norms[cols] + shrink + 1e-12)
        # by target column, then similarity descending, then neighbour index ascending
        order = np.lexsort((rows, -sims, cols))
        self.rows, self.cols, self.sims = rows[order], cols[order], sims[order].astype(np.float32)
        starts = np.searchsorted(self.cols, np.arange(self.n + 1))
        self.rank = np.arange(len(self.cols)) - starts[self.cols]

    def top(self, k: int) -> sp.csr_matrix:
        """(n_items, n_items) float32: column j holds its ``min(k, n_items - 1)`` most similar items."""
        keep = self.rank < min(int(k), max(self.n - 1, 0))
        w = sp.csc_matrix((self.sims[keep], (self.rows[keep], self.cols[keep])), shape=(self.n, self.n))
        return w.tocsr()
