"""EASE's closed form at scale: bounded tuning, few full-size copies, a memory check.

EASE (Steck, WWW 2019) is ``B = I - P / diag(P)`` with ``P = (X'X + λI)^-1`` and a zero
diagonal. This module computes it without the costs that made it the slowest stage of a
default run on a 9.7k / 17.6k-item catalogue (385 s / 1,053 s at >= 8 GB, issue 12):

* **Whichever Gram matrix is smaller.** With clearly fewer users than items, Woodbury's
  identity ``P = (I - X'(XX' + λI)^-1 X) / λ`` needs only the m x m user Gram:
  ``B = C / (1 - diag C)`` with ``C = X'(XX' + λI)^-1 X`` comes from two sparse products
  (the 17.6k-item music log: a 1.9k-square inverse instead of a 17.6k-square one), and
  scoring validation users needs no n x n matrix at all. Otherwise the item Gram is
  inverted **in place** (LAPACK ``potrf`` + ``potri`` on the one n x n buffer that
  becomes ``B``; float32 above :data:`FLOAT64_MAX_ITEMS` items), so the peak is one
  n x n matrix (1.4 GB at 19k items), not the four float64 copies of ``np.linalg.inv``.
* **Bounded λ tuning** (:func:`ease_reg_path`). The Gram matrix is built once for the
  grid; each λ then costs one Cholesky inverse of the smaller side (measured on this
  2-core box, one thread: a 4096-square float32 inverse takes 1.2 s, a symmetric
  eigendecomposition 8.6 s in float32 and 19.5 s in float64, so one eigendecomposition
  for the grid would cost more than the six inverses it saves). Every candidate is
  scored: the inner-validation curve is not single-peaked (amazon-scientific:
  .1021 .1016 .1018 .1007 .1000 .0999 over 50..2000), so a walk uphill from the grid's
  middle would pick 200 where the scan picks 50. The scored validation
  users are a fixed random sample beyond :data:`~segrec.evaluate.ranking.MAX_SCORED_USERS`
  (never on ml-100k-sized data). Where even the smaller side exceeds
  :data:`TUNE_EXACT_MAX`, λ is chosen on the sub-catalogue of the most-interacted
  :data:`TUNE_EXACT_MAX` items (their co-occurrence counts are exact there); the final fit
  always uses the whole catalogue.
* **One BLAS thread** for all of it: on this shared 2-core box OpenBLAS's second thread
  made a 2048-square Cholesky 80x slower under load (8 s instead of 0.1 s), while it
  gains at most 2x on an idle one.

Scores equal the direct formula's up to float rounding (tests compare them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from . import resources
from .evaluate.ranking import quick_ndcg, scored_users
from .resources import format_bytes

__all__ = ["FLOAT64_MAX_ITEMS", "TUNE_EXACT_MAX", "ease_memory", "ease_reg_path", "ease_weights"]

log = logging.getLogger(__name__)

#: Largest side (users or items) of the Gram matrix λ is tuned on exactly; beyond it, λ is
#: chosen on the most-interacted items' sub-catalogue of this size (6 inverses: ~7 s).
TUNE_EXACT_MAX = 4096
#: Gram matrices up to this side are solved in float64 (cheap: 0.25 s at 2048; the old precision);
#: larger ones in float32, half the memory.
FLOAT64_MAX_ITEMS = 2048
_BLOCK = 1024
_REMEDY = ("drop rarely-interacted items from the data (e.g. items with fewer than 5 interactions), "
           "leave 'ease' and 'local_ease' out of the systems, or run on a machine with more memory")


# ------------------------------------------------------------------ helpers
def _binary(x: sp.spmatrix) -> sp.csr_matrix:
    x = sp.csr_matrix(x, dtype=np.float32, copy=True)
    x.sum_duplicates()
    x.data[:] = 1.0
    x.eliminate_zeros()
    return x


def _gram_into(a: sp.csr_matrix, out: np.ndarray) -> np.ndarray:
    """``out = a @ a.T`` (dense), computed in row blocks so the sparse temporaries stay small."""
    at = a.T.tocsc()
    for lo in range(0, a.shape[0], _BLOCK):
        hi = min(lo + _BLOCK, a.shape[0])
        block = out[lo:hi]
        block[:] = 0
        (a[lo:hi] @ at).toarray(out=block)  # csr toarray accumulates into a zeroed buffer
    return out


def _mirror_lower(a: np.ndarray) -> None:
    """Copy the lower triangle of square ``a`` onto its upper triangle, in place, blockwise."""
    n = len(a)
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        a[lo:hi, hi:] = a[hi:, lo:hi].T
        blk = a[lo:hi, lo:hi]
        iu = np.triu_indices(hi - lo, 1)
        blk[iu] = blk.T[iu]


def _inverse_spd_inplace(a: np.ndarray) -> np.ndarray:
    """Overwrite symmetric positive definite C-ordered ``a`` with its inverse (full matrix)."""
    f = a.T  # the F-ordered view of a symmetric matrix is the same matrix: LAPACK works in place
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (f,))
    c, info = potrf(f, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (info={info})")
    inv, info = potri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverse from the Cholesky factor failed (info={info})")
    if not np.shares_memory(inv, a):  # the LAPACK wrapper copied after all: keep the result
        a[:] = inv.T
    _mirror_lower(a)  # the F-ordered upper triangle is a's lower triangle
    return a


def _use_dual(m: int, n: int) -> bool:
    """Work with the m x m user Gram (Woodbury) rather than the n x n item Gram?

    The dual costs one m-square inverse plus two sparse products (nnz * (m + n)), the
    primal one n-square inverse; the dual also holds n x m buffers next to the n x n
    result, so it is taken only when it is clearly cheaper.
    """
    return m <= 0.75 * n


def _dtype(side: int):
    return np.float64 if side <= FLOAT64_MAX_ITEMS else np.float32


def ease_memory(m: int, n: int) -> int:
    """Peak bytes of :func:`ease_weights` for ``m`` active users and ``n`` items."""
    if _use_dual(m, n):
        item = np.dtype(_dtype(m)).itemsize
        return n * n * 4 + n * m * (item + 4) + 2 * m * m * item
    return n * n * np.dtype(_dtype(n)).itemsize + n * _BLOCK * 12


def _check_memory(m: int, n: int, what: str, extra: int = 0) -> None:
    resources.require_memory(
        ease_memory(m, n) + extra,
        what=f"{what} on {n:,} items ({n:,} x {n:,} item-item weights, {format_bytes(n * n * 4)} "
             f"in float32)", remedy=_REMEDY)


class _Solver:
    """EASE on one interaction matrix for any λ: its Gram matrix is built once.

    Args:
        x: Binary sparse (n_users, n_items); empty rows are ignored.
    """

    def __init__(self, x: sp.csr_matrix):
        self.x_all = x
        self.active = np.flatnonzero(np.diff(x.indptr) > 0)
        self.x = x[self.active]
        m, self.n = self.x.shape
        self.dual = _use_dual(m, self.n)
        if self.dual:
            dt = _dtype(m)
            self.gram = _gram_into(self.x.astype(dt), np.empty((m, m), dt))  # XX'
            self.xt = self.x.T.tocsr().astype(dt)  # (n, m)
        else:
            dt = _dtype(self.n)
            self.gram = _gram_into(self.x.T.tocsr().astype(dt), np.empty((self.n, self.n), dt))  # X'X

    # ------------------------------------------------------------ primal
    def _p_inverse(self, reg: float, consume: bool) -> np.ndarray:
        p = self.gram if consume else self.gram.copy()
        if consume:
            self.gram = None
        p.flat[:: self.n + 1] += reg
        return _inverse_spd_inplace(p)

    # -------------------------------------------------------------- dual
    def _k_inverse(self, reg: float) -> np.ndarray:
        k = self.gram.copy()
        k.flat[:: len(k) + 1] += reg
        return _inverse_spd_inplace(k)  # (XX' + λI)^-1

    def _diag_c(self, t: np.ndarray) -> np.ndarray:
        """diag(X' (XX'+λI)^-1 X) from ``t = X' (XX'+λI)^-1``, summed in float64 over stored entries."""
        rows = np.repeat(np.arange(self.n), np.diff(self.xt.indptr))
        return np.bincount(rows, weights=t[rows, self.xt.indices].astype(np.float64), minlength=self.n)

    # ----------------------------------------------------------- results
    def weights(self, reg: float, *, consume: bool = False) -> np.ndarray:
        """B (float32, n x n, zero diagonal); ``consume`` lets the primal invert its Gram in place."""
        n = self.n
        if self.dual:
            t = np.asarray(self.xt @ self._k_inverse(reg))  # X' (XX' + λI)^-1, (n, m)
            diag_c = self._diag_c(t)
            t32 = np.ascontiguousarray(t.T, dtype=np.float32)  # (m, n)
            del t
            c = np.asarray(self.xt.astype(np.float32) @ t32)  # C, (n, n) float32
            del t32
            # P = (I - C) / λ, so for i != j: B_ij = -P_ij / P_jj = C_ij / (1 - C_jj)
            scale = (1.0 / (1.0 - diag_c)).astype(np.float32)
            for lo in range(0, n, _BLOCK):
                np.multiply(c[lo:lo + _BLOCK], scale[None, :], out=c[lo:lo + _BLOCK])
            c.flat[:: n + 1] = 0.0
            return c
        p = self._p_inverse(reg, consume)
        d = np.diag(p).copy()
        for lo in range(0, n, _BLOCK):  # B = -P / diag(P), column-wise, in place
            np.divide(p[lo:lo + _BLOCK], -d[None, :], out=p[lo:lo + _BLOCK])
        p.flat[:: n + 1] = 0.0
        return p if p.dtype == np.float32 else p.astype(np.float32)

    def scorer(self, reg: float):
        """Score function (dense users of ``x`` -> (b, n_items) float32) of EASE with λ = ``reg``."""
        if not self.dual:
            b = self.weights(reg)
            return lambda users: np.asarray(self.x_all[users] @ b, dtype=np.float32)
        # x_u B = (x_u C) / (1 - diag C) off the diagonal, and x_u C = (XX')_u (XX' + λI)^-1 X
        # for a user u of X: no n x n matrix is formed
        kinv = self._k_inverse(reg)
        den = 1.0 - self._diag_c(np.asarray(self.xt @ kinv))
        row_of = np.full(self.x_all.shape[0], -1, np.int64)
        row_of[self.active] = np.arange(len(self.active))

        def score(users: np.ndarray) -> np.ndarray:
            pos = row_of[users]
            out = np.zeros((len(users), self.n), np.float32)
            ok = np.flatnonzero(pos >= 0)
            if len(ok):
                r = self.gram[pos[ok]] @ kinv  # (b, m)
                xc = np.asarray(self.xt @ r.T).T  # (b, n) = r @ X
                out[ok] = xc / den
                own = self.x_all[users[ok]]  # B has a zero diagonal: drop x_u C's own-item terms
                rr = np.repeat(np.arange(len(ok)), np.diff(own.indptr))
                out[ok[rr], own.indices] = 0.0  # seen items are masked by the ranking anyway
            return out

        return score


# ------------------------------------------------------------------ weights
def ease_weights(x: sp.spmatrix, reg: float, *, what: str = "EASE") -> np.ndarray:
    """EASE item-item weights ``B`` (float32, zero diagonal) for binary user x item rows ``x``.

    Args:
        x: sparse (n_users, n_items); stored entries count as 1, empty rows are ignored.
        reg: L2 weight λ > 0.
        what: Names the model in a memory error.

    Returns:
        float32 array of shape (n_items, n_items).

    Raises:
        ResourceError: The weights would not fit in the machine's available memory.
    """
    x = _binary(x)
    m, n = int((np.diff(x.indptr) > 0).sum()), x.shape[1]
    _check_memory(m, n, what)
    if m == 0:
        return np.zeros((n, n), np.float32)
    with threadpool_limits(1, "blas"):
        return _Solver(x).weights(float(reg), consume=True)


# ------------------------------------------------------------------- tuning
def ease_reg_path(
    train: sp.spmatrix,
    valid: sp.spmatrix,
    regs: Sequence[float],
    *,
    k: int = 10,
    random_state: int = 0,
) -> tuple[list[float], dict[str, Any]]:
    """Inner-validation NDCG@k of EASE for every λ in ``regs``, from one Gram matrix.

    Args:
        train: sparse (n_users, n_items) inner-train rows (binary).
        valid: sparse (n_users, n_items) inner-validation items, same users and items.
        regs: λ candidates.
        k: Cut-off.
        random_state: Seed of the validation-user sample (used only at scale).

    Returns:
        ``(ndcg per λ, info)``; ``info`` says how it was computed (``side``: the Gram
        matrix inverted, ``items``: the sub-catalogue tuned on, if any, ``scored_users``).
    """
    x, v = _binary(train), _binary(valid)
    n = x.shape[1]
    info: dict[str, Any] = {}
    m = int((np.diff(x.indptr) > 0).sum())
    if min(m, n) > TUNE_EXACT_MAX:
        # λ on the sub-catalogue of the most-interacted items: exact co-occurrences there
        counts = np.asarray(x.sum(0)).ravel()
        top = np.sort(np.argsort(-counts, kind="stable")[:TUNE_EXACT_MAX])
        x, v = x[:, top].tocsr(), v[:, top].tocsr()
        info["items"] = f"top {len(top)} of {n} by interactions"
        n = len(top)
        m = int((np.diff(x.indptr) > 0).sum())
    users = scored_users(v, seed=random_state)
    info["scored_users"] = int(len(users))
    _check_memory(m, n, "tuning EASE's λ", extra=ease_memory(m, n))  # the Gram and one inverse
    with threadpool_limits(1, "blas"):
        solver = _Solver(x)
        info["side"] = "users" if solver.dual else "items"
        scores = [quick_ndcg(solver.scorer(float(reg)), x, v, k=k, users=users) for reg in regs]
    return scores, info

