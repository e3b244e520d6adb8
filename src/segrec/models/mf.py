"""Implicit-feedback matrix factorisation by alternating least squares.

Hu, Koren & Volinsky (ICDM 2008): every interaction is a positive with
confidence ``c_ui = alpha * x_ui``; every other cell is a negative with
confidence 1. Each half-step solves, for every user ``u`` at once,
``(Y'Y + Y'(C_u - I)Y + reg I) x_u = Y'C_u p_u`` and then the same for items.

Two back-ends give the same model:

* ``implicit`` (extra ``mf``): benfred/implicit's compiled CPU solver.
* ``numpy``: a vectorised conjugate-gradient solver (Takács et al., RecSys 2011),
  the same update as implicit's ``use_cg=True`` path, with the same random
  initialisation, so the two back-ends agree up to float rounding and the model
  works without the extra.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..errors import ModelFitError, require
from ..types import Interactions
from ._histories import as_history_input
from ._vectors import ItemTable
from .base import ModelConfig, Recommender, check_is_fitted
from .context import FitContext
from .tuning import grid_search

__all__ = ["ALSConfig", "ALSRecommender", "als_update"]

log = logging.getLogger(__name__)

#: Rows of C solved per vectorised block; bounds the (nnz, factors) gather to a
#: few hundred MB on 10M-interaction data.
_MAX_BLOCK_NNZ = 1 << 20


class ALSConfig(ModelConfig):
    """Settings of :class:`ALSRecommender`."""

    embedding_size: int | None = Field(None, ge=1)
    """Latent factors; ``None`` chooses from ``embedding_size_grid`` on inner validation."""
    embedding_size_grid: tuple[int, ...] = (16, 32, 64, 128)
    """Candidates for ``embedding_size``."""
    reg: float | None = Field(None, ge=0)
    """L2 weight on the factors; ``None`` chooses from ``reg_grid`` on inner validation."""
    reg_grid: tuple[float, ...] = (0.01, 1.0, 10.0)
    """Candidates for ``reg``; on ml-100k reg >= 30 collapses towards popularity."""
    alpha: float = Field(1.0, gt=0)
    """Confidence of a positive cell (``c_ui = alpha``); 1.0 is implicit's default."""
    epochs: int = Field(15, ge=1)
    """Alternating sweeps (users, then items)."""
    cg_steps: int = Field(3, ge=1)
    """Conjugate-gradient steps per factor update, warm-started (implicit's default)."""
    backend: Literal["auto", "implicit", "numpy"] = "auto"
    """``implicit`` needs the ``mf`` extra; ``auto`` uses it when installed, else ``numpy``."""
    n_jobs: int = Field(1, ge=0)
    """Threads for the implicit back-end (0 = all cores). Users are updated independently,
    so the result does not depend on it."""
    random_state: int | None = 0
    """Seed of the factor initialisation; ``None`` draws fresh entropy."""


class ALSRecommender(Recommender):
    """Implicit-feedback ALS (Hu et al. 2008), optionally via the ``implicit`` package.

    ``score(u, i) = user_factors_[u] @ item_factors_[i]``. New users are folded in
    from their items with one exact least-squares solve (:meth:`score_histories`).

    Attributes:
        user_factors_: float32 array of shape (n_users, embedding_size_).
        item_factors_: float32 array of shape (n_items, embedding_size_).
        embedding_size_: Factors in use (chosen or configured).
        reg_: Regularisation in use.
        backend_: ``"implicit"`` or ``"numpy"``, the solver that produced the factors.
        tuning_: Inner-validation table of the grid search, or ``None``.

    Example:
        >>> from segrec.testing import planted_split
        >>> split = planted_split()
        >>> model = ALSRecommender(embedding_size=8, reg=0.1, backend="numpy").fit(split.train)
        >>> model.recommend(["u0"], k=2).item_ids.shape
        (1, 2)
    """

    Config = ALSConfig
    name = "als"

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        cfg = self.config
        grid: dict[str, tuple] = {}
        if cfg.embedding_size is None:
            grid["embedding_size"] = cfg.embedding_size_grid
        if cfg.reg is None:
            grid["reg"] = cfg.reg_grid
        best: dict[str, Any] = {}
        self.tuning_ = None
        if grid:
            # the full grid: one parameter at a time stopped at (32, 1.0) on ml-100k's fit
            # data where the grid's best is (128, 10); reg and size interact
            best, self.tuning_ = grid_search(self, grid, train, valid)
        self.embedding_size_ = int(best.get("embedding_size", cfg.embedding_size))
        self.reg_ = float(best.get("reg", cfg.reg))
        self.backend_ = _resolve_backend(cfg.backend)
        full = train if valid is None else train.concat(valid)
        confidence = full.to_csr() * np.float32(cfg.alpha)
        start = time.perf_counter()
        if self.backend_ == "implicit":
            self.user_factors_, self.item_factors_ = self._fit_implicit(confidence)
        else:
            self.user_factors_, self.item_factors_ = self._fit_numpy(confidence)
        log.info("ALS (%s, %d factors, reg %g) fitted in %.2fs", self.backend_,
                 self.embedding_size_, self.reg_, time.perf_counter() - start)
        if not (np.isfinite(self.user_factors_).all() and np.isfinite(self.item_factors_).all()):
            raise ModelFitError(
                f"ALS produced non-finite factors (embedding_size={self.embedding_size_}, "
                f"reg={self.reg_}); increase reg or check the interaction weights")

    def _init_factors(self, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        # Same draws, order and scale as implicit.cpu.als.fit, so both back-ends start
        # from the same point and agree up to rounding.
        rng = np.random.default_rng(self.config.random_state)
        x = rng.random((n_users, self.embedding_size_), dtype=np.float32) * np.float32(0.01)
        y = rng.random((n_items, self.embedding_size_), dtype=np.float32) * np.float32(0.01)
        return x, y

    def _fit_numpy(self, cui: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._init_factors(*cui.shape)
        ciu = cui.T.tocsr()
        for _ in range(self.config.epochs):
            als_update(cui, x, y, self.reg_, self.config.cg_steps)
            als_update(ciu, y, x, self.reg_, self.config.cg_steps)
        return x, y

    def _fit_implicit(self, cui: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        require("implicit", "mf")
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        x, y = self._init_factors(*cui.shape)
        # implicit's solver threads itself; a multi-threaded BLAS underneath only
        # adds contention (implicit/utils.py check_blas_config warns about it on init).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.embedding_size_, regularization=self.reg_, alpha=1.0,  # cui is scaled
                iterations=self.config.epochs, use_cg=True, num_threads=self.config.n_jobs,
                random_state=self.config.random_state,
            )
            model.user_factors, model.item_factors = x, y
            model.fit(cui, show_progress=False)
        return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T

    def _score_histories(self, rows: sp.csr_matrix, segments) -> np.ndarray:
        # fold-in: each row's factors are the exact least-squares solution against the
        # learned item factors, as one more user half-step would compute them, so a
        # brand-new user is served without refitting
        rows = sp.csr_matrix(rows, dtype=np.float32, copy=True)  # never write into the caller's matrix
        rows.sum_duplicates()
        rows.data[:] = self.config.alpha  # same confidences as in fit (binary x alpha)
        x = fold_in(rows, self.item_factors_, self.reg_)
        return x @ self.item_factors_.T

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        # one (d,) x (d, n_items) product; the user's factors are a lookup
        n, d = self.item_factors_.shape
        return np.full_like(h, 2.0 * n * d)

    def _add_interactions(self, users: np.ndarray, items: np.ndarray, done: set[int]) -> None:
        # one exact user half-step against the fixed item factors, as for a new user
        touched = np.unique(users)
        self.user_factors_ = self.user_factors_.copy()
        self.user_factors_[touched] = self.history_vectors(self.seen_[touched])[0]

    # ---------------------------------------------------------- cached vectors
    #: the user factors are the model's state: nothing more to save
    saves_user_vectors = False

    def item_table(self) -> ItemTable:
        """The item factors (no bias): a known user's scores are ``Y @ x_u``."""
        return ItemTable(self.item_factors_)

    def _user_vectors(self, users: np.ndarray) -> tuple[np.ndarray, None]:
        return self.user_factors_[users], None

    def history_vectors(self, histories, segments=None) -> tuple[np.ndarray, None]:
        """Folded-in factors for item rows (or sequences): one exact solve against the item factors."""
        check_is_fitted(self)
        rows, _ = as_history_input(histories, "rows", self.n_items)
        rows = sp.csr_matrix(rows, dtype=np.float32, copy=True)
        rows.sum_duplicates()
        rows.data[:] = self.config.alpha
        return fold_in(rows, self.item_factors_, self.reg_), None

    # ---------------------------------------------------------------- artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.user_factors_ = tensors["user_factors"]
        self.item_factors_ = tensors["item_factors"]
        self.embedding_size_ = int(meta["embedding_size"])
        self.reg_ = float(meta["reg"])
        self.backend_ = meta.get("backend", "numpy")
        self.tuning_ = meta.get("tuning")

    def _meta(self) -> dict[str, Any]:
        return {"embedding_size": self.embedding_size_, "reg": self.reg_,
                "backend": self.backend_, "tuning": self.tuning_}


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "implicit" if importlib.util.find_spec("implicit") is not None else "numpy"
    return backend


def als_update(
    c: sp.csr_matrix, x: np.ndarray, y: np.ndarray, reg: float, cg_steps: int
) -> None:
    """One ALS half-step: refine every row of ``x`` against fixed ``y``, in place.

    Solves ``(Y'Y + Y'(C_u - I)Y + reg I) x_u = Y'C_u 1`` for each row ``u`` of
    ``c`` with ``cg_steps`` conjugate-gradient steps warm-started from ``x_u``,
    vectorised over blocks of rows (the update of implicit's ``least_squares_cg``).

    Args:
        c: sparse (n, m) confidences, all positive.
        x: float32 array of shape (n, f), updated in place.
        y: float32 array of shape (m, f), held fixed.
        reg: L2 regularisation.
        cg_steps: Conjugate-gradient steps per row.
    """
    gram = y.T @ y + np.float32(reg) * np.eye(y.shape[1], dtype=y.dtype)  # (f, f)
    for lo, hi in _row_blocks(c):
        x[lo:hi] = _cg_block(c[lo:hi], x[lo:hi].copy(), y, gram, cg_steps)


def fold_in(rows: sp.csr_matrix, y: np.ndarray, reg: float) -> np.ndarray:
    """Exact least-squares factors for new rows against fixed ``y``.

    Args:
        rows: sparse (n, m) confidences.
        y: float32 array of shape (m, f).
        reg: L2 regularisation.

    Returns:
        float32 array of shape (n, f).
    """
    f = y.shape[1]
    gram = y.T @ y + np.float32(reg) * np.eye(f, dtype=y.dtype)
    x = np.zeros((rows.shape[0], f), dtype=np.float32)
    if rows.nnz and np.all(rows.data == 1.0):
        # Confidence 1 everywhere: C_u - I vanishes and every row shares one system.
        return np.linalg.solve(gram, (rows @ y).T).T.astype(np.float32)
    for lo, hi in _row_blocks(rows):
        # CG from zero reaches the exact solution of an f x f SPD system in f steps.
        x[lo:hi] = _cg_block(rows[lo:hi], x[lo:hi], y, gram, f)
    return x


def _row_blocks(c: sp.csr_matrix):
    """Yield ``(lo, hi)`` row ranges holding at most ~``_MAX_BLOCK_NNZ`` entries each."""
    n = c.shape[0]
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(c.indptr, c.indptr[lo] + _MAX_BLOCK_NNZ, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        yield lo, hi
        lo = hi


def _cg_block(
    block: sp.csr_matrix, x: np.ndarray, y: np.ndarray, gram: np.ndarray, steps: int
) -> np.ndarray:
    """Batched conjugate gradient for one block of rows; returns the new ``x``."""
    block = block.tocsr()
    rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
    extra = block.data - 1.0  # (nnz,) confidence above the implicit negatives' 1
    yg = y[block.indices] if np.any(extra != 0) else None  # (nnz, f)

    def apply_a(p: np.ndarray) -> np.ndarray:  # (b, f) -> (b, f)
        out = p @ gram
        if yg is not None:
            t = np.einsum("nf,nf->n", yg, p[rows]) * extra  # (nnz,)
            out += sp.csr_matrix((t, block.indices, block.indptr), shape=block.shape) @ y
        return out

    b = np.asarray(block @ y, dtype=np.float32)  # (b, f): Y' C_u p_u
    r = b - apply_a(x)
    p = r.copy()
    rs = np.einsum("bf,bf->b", r, r)
    active = rs >= 1e-20
    for _ in range(steps):
        if not active.any():
            break
        ap = apply_a(p)
        denom = np.einsum("bf,bf->b", p, ap)
        step = np.where(active & (denom > 0), rs / np.where(denom > 0, denom, 1.0), 0.0)
        x += step[:, None].astype(np.float32) * p
        r -= step[:, None].astype(np.float32) * ap
        rs_new = np.einsum("bf,bf->b", r, r)
        beta = np.where(active, rs_new / np.where(rs > 0, rs, 1.0), 0.0)
        p = r + beta[:, None].astype(np.float32) * p
        active &= rs_new >= 1e-20
        rs = rs_new
    return x
