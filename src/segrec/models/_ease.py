"""EASE's closed form at scale: one factorisation for a whole λ grid, few full-size copies.

EASE (Steck, WWW 2019) is ``B = I - P / diag(P)`` with ``P = (X'X + λI)^-1`` and a zero
diagonal. This module computes it without the costs that made it the slowest stage of a
default run on a 9.7k / 17.6k-item catalogue (385 s / 1,053 s at >= 8 GB, issue 12):

* **Final weights** (:func:`ease_weights`) from whichever Gram matrix is smaller. With
  more items than users, Woodbury's identity ``P = (I - X'(XX' + λI)^-1 X) / λ`` needs only
  the m x m user Gram, and ``B = C / (1 - diag C)`` with ``C = X'(XX' + λI)^-1 X`` comes
  from two sparse products (the 17.6k-item music log: one 1.9k-square inverse instead of
  a 17.6k-square one). Otherwise the item Gram is factorised **in place** in float32
  (LAPACK ``potrf`` + ``potri`` on the one n x n buffer that becomes ``B``), so the peak is
  one n x n float32 matrix (1.4 GB at 19k items), not the four float64 copies of
  ``np.linalg.inv``.
* **λ tuning** (:func:`ease_reg_path`) with **one** eigendecomposition for the whole
  grid: of the user Gram ``XX' = U diag(s) U'`` when users are fewer, else of the item
  Gram ``X'X = V diag(e) V'``; every λ then costs one (users x r) @ (r x items) product
  for the scored validation users, and nothing is inverted per candidate. The scored
  validation users are a fixed random sample beyond
  :data:`~segrec.models.tuning.MAX_SCORED_USERS` (never on ml-100k-sized data). Where even the smaller
  side exceeds :data:`TUNE_EXACT_MAX`, λ is chosen on the sub-catalogue of the
  :data:`TUNE_EXACT_MAX` most-interacted items (their co-occurrence counts are exact
  there); the final fit always uses the whole catalogue.

Scores equal the direct formula's up to float rounding (tests compare them).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .. import resources
from ..evaluate.ranking import quick_ndcg
from ..resources import format_bytes
from .tuning import scored_users

__all__ = ["TUNE_EXACT_MAX", "ease_memory", "ease_reg_path", "ease_weights"]

log = logging.getLogger(__name__)

#: Largest side (users or items) of the Gram matrix eigendecomposed for exact λ tuning;
#: beyond it, λ is chosen on the most-interacted items' sub-catalogue of this size.
TUNE_EXACT_MAX = 4096
#: Catalogues up to this size are solved in float64 (cheap, and bit-for-bit the old path's
#: precision); larger ones in float32, half the memory of float64.
FLOAT64_MAX_ITEMS = 4096
_BLOCK = 1024
#: Below this matrix side BLAS runs on one thread: on a busy 2-core machine OpenBLAS's
#: spinning threads made a 943-square eigh take 5 s instead of 0.26 s (0.9 s / 0.1 s quiet).
SINGLE_THREAD_BELOW = 3000
_REMEDY = ("drop rarely-interacted items from the data (e.g. items with fewer than 5 interactions), "
           "leave 'ease' and 'local_ease' out of the systems, or run on a machine with more memory")


# ------------------------------------------------------------------ helpers
def _threads(side: int):
    """One BLAS thread for small factorisations (see :data:`SINGLE_THREAD_BELOW`)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas") if side < SINGLE_THREAD_BELOW else contextlib.nullcontext()


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
    if not np.shares_memory(inv, a):  # LAPACK wrapper copied after all: keep the result
        a[:] = inv.T
    # the F-ordered upper triangle is a's lower triangle
    _mirror_lower(a)
    return a


def _use_dual(m: int, n: int) -> bool:
    """Work with the m x m user Gram (Woodbury) rather than the n x n item Gram?

    The dual costs about m^3 + 2 m^2 n, the primal n^3; the dual also holds an n x m
    buffer next to the n x n result, so it is taken only when it is clearly cheaper.
    """
    return m <= 0.6 * n


def ease_memory(m: int, n: int) -> int:
    """Peak bytes of :func:`ease_weights` for ``m`` active users and ``n`` items."""
    item = 8 if n <= FLOAT64_MAX_ITEMS else 4
    if _use_dual(m, n):
        return n * n * 4 + n * m * 4 + 2 * m * m * 8
    return n * n * item + n * _BLOCK * 12


def _check_memory(m: int, n: int, what: str) -> None:
    resources.require_memory(
        ease_memory(m, n),
        what=f"{what} on {n:,} items ({n:,} x {n:,} item-item weights, {format_bytes(n * n * 4)} "
             f"in float32)", remedy=_REMEDY)


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
    x = x[np.diff(x.indptr) > 0]  # users without rows add nothing to either Gram
    m, n = x.shape
    _check_memory(m, n, what)
    if m == 0:
        return np.zeros((n, n), np.float32)
    dual = _use_dual(m, n)
    with _threads(m if dual else n):
        return _dual_weights(x, float(reg)) if dual else _primal_weights(x, float(reg))


def _primal_weights(x: sp.csr_matrix, reg: float) -> np.ndarray:
    n = x.shape[1]
    dtype = np.float64 if n <= FLOAT64_MAX_ITEMS else np.float32
    p = _gram_into(x.T.tocsr().astype(dtype), np.empty((n, n), dtype))
    p.flat[:: n + 1] += reg
    _inverse_spd_inplace(p)
    d = np.diag(p).copy()
    # B = -P / diag(P), column-wise, in place
    for lo in range(0, n, _BLOCK):
        np.divide(p[lo:lo + _BLOCK], -d[None, :], out=p[lo:lo + _BLOCK])
    p.flat[:: n + 1] = 0.0
    return p if p.dtype == np.float32 else p.astype(np.float32)


def _dual_weights(x: sp.csr_matrix, reg: float) -> np.ndarray:
    m, n = x.shape
    k = _gram_into(x.astype(np.float64), np.empty((m, m), np.float64))
    k.flat[:: m + 1] += reg
    _inverse_spd_inplace(k)  # (XX' + λI)^-1, m x m
    xt = x.T.tocsr()  # (n, m)
    t = np.asarray(xt @ k, dtype=np.float64)  # X' (XX' + λI)^-1, (n, m)
    del k
    # diag(C)_j = x_j' (XX' + λI)^-1 x_j, summed in float64 over the stored entries of column j
    rows = np.repeat(np.arange(n), np.diff(xt.indptr))
    diag_c = np.bincount(rows, weights=t[rows, xt.indices], minlength=n)
    t32 = np.ascontiguousarray(t.T, dtype=np.float32)  # (m, n)
    del t
    c = np.asarray(xt.astype(np.float32) @ t32)  # C = X' (XX' + λI)^-1 X, (n, n) float32
    del t32
    # P = (I - C) / λ, so for i != j: B_ij = -P_ij / P_jj = C_ij / (1 - C_jj)
    scale = (1.0 / (1.0 - diag_c)).astype(np.float32)
    for lo in range(0, n, _BLOCK):
        np.multiply(c[lo:lo + _BLOCK], scale[None, :], out=c[lo:lo + _BLOCK])
    c.flat[:: n + 1] = 0.0
    return c


# ------------------------------------------------------------------- tuning
class _Path:
    """Scores ``num / den`` of every λ from one eigendecomposition (see the module docstring)."""

    def __init__(self, x: sp.csr_matrix, users: np.ndarray):
        m, n = x.shape
        active = np.flatnonzero(np.diff(x.indptr) > 0)
        xa = x[active]
        self.n = n
        self.dual = _use_dual(len(active), n)
        if self.dual:
            # XX' = U diag(s) U'; (x_u P)_j ∝ -(U_u diag(s/(s+λ)) Z)_j with Z = U'X, and
            # λ P_jj = 1 - sum_k Z_kj^2 / (s_k + λ)
            s, u = np.linalg.eigh(_gram_into(xa.astype(np.float64), np.empty((len(active),) * 2)))
            self.e = np.maximum(s, 0.0)
            self.q = np.asarray(xa.T.tocsr() @ u)  # Z' (n, r)
            row_of = np.full(m, -1, np.int64)
            row_of[active] = np.arange(len(active))
            pos = row_of[users]
            self.f = np.where(pos[:, None] >= 0, u[np.maximum(pos, 0)], 0.0)  # (b, r)
        else:
            # X'X = V diag(e) V'; x_u P = (x_u V) diag(1/(e+λ)) V', P_jj = sum_k V_jk^2 / (e_k + λ)
            e, v = np.linalg.eigh(_gram_into(xa.T.tocsr().astype(np.float64), np.empty((n, n))))
            self.e = np.maximum(e, 0.0)
            self.q = v
            self.f = np.asarray(x[users] @ v)  # (b, r)
        self.q2 = self.q**2
        self.row = np.full(m, -1, np.int64)
        self.row[users] = np.arange(len(users))

    def scorer(self, reg: float):
        """Score function (dense users -> (b, n_items)) of EASE with λ = ``reg``."""
        if self.dual:
            a = self.e / (self.e + reg)
            den = 1.0 - self.q2 @ (1.0 / (self.e + reg))
        else:
            a = -1.0 / (self.e + reg)
            den = self.q2 @ (1.0 / (self.e + reg))
        den = np.where(np.abs(den) > 1e-300, den, 1e-300)

        def score(users: np.ndarray) -> np.ndarray:
            idx = self.row[users]
            return ((self.f[idx] * a) @ self.q.T / den).astype(np.float32)

        return score


def ease_reg_path(
    train: sp.spmatrix,
    valid: sp.spmatrix,
    regs: Sequence[float],
    *,
    k: int = 10,
    random_state: int = 0,
) -> tuple[list[float], dict[str, Any]]:
    """Inner-validation NDCG@k of EASE for every λ in ``regs``, from one eigendecomposition.

    Args:
        train: sparse (n_users, n_items) inner-train rows (binary).
        valid: sparse (n_users, n_items) inner-validation items, same users and items.
        regs: λ candidates.
        k: Cut-off.
        random_state: Seed of the validation-user sample (used only at scale).

    Returns:
        ``(ndcg per λ, info)``; ``info`` says how it was computed (``side``, ``items``
        (the catalogue tuned on), ``scored_users``).
    """
    x, v = _binary(train), _binary(valid)
    m, n = x.shape
    info: dict[str, Any] = {}
    m_active = int((np.diff(x.indptr) > 0).sum())
    if min(m_active, n) > TUNE_EXACT_MAX:
        # λ on the sub-catalogue of the most-interacted items: exact co-occurrences there
        counts = np.asarray(x.sum(0)).ravel()
        top = np.sort(np.argsort(-counts, kind="stable")[:TUNE_EXACT_MAX])
        x, v = x[:, top].tocsr(), v[:, top].tocsr()
        n = len(top)
        info["items"] = f"top {n} of {counts.size} by interactions"
        m_active = int((np.diff(x.indptr) > 0).sum())
    r = min(m_active, n)
    users = scored_users(v, seed=random_state)
    info["scored_users"] = int(len(users))
    resources.require_memory(8 * (3 * r * r + 3 * n * r + len(users) * r + _BLOCK * n),
                             what=f"tuning EASE's λ on {n:,} items", remedy=_REMEDY)
    with _threads(r):
        path = _Path(x, users)
        scores = [quick_ndcg(path.scorer(float(reg)), x, v, k=k, users=users) for reg in regs]
    info["side"] = "users" if path.dual else "items"
    return scores, info
