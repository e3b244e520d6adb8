"""Approximate top-k over a large catalogue: a FAISS IVF index on a cached tier's item table.

A known user of a cached tier costs ``2 * d * n_items`` FLOPs and a partition of
``n_items`` scores; at 100k items that is milliseconds a request. An inverted-file index
(FAISS ``IndexIVFFlat``, inner product) visits only the ``nprobe`` clusters nearest the
user's vector. Scores with a bias are kept exact by searching augmented vectors:
``[v_u, onehot(g_u)] . [w_i, bias[:, i]] = v_u . w_i + bias[g_u, i]``.

The index is built when the Router is built (never saved: FAISS's own file format would be
one more untrusted parser), and calibrated there: ``nprobe`` is the smallest of 1, 2, 4, ...
whose recall@10 against exact top-10 (seen items excluded, on a fixed sample of known
users) reaches ``target_recall``; if none does, the tier is served exactly. The chosen
``nprobe`` and its measured recall are reported (``/healthz``). A request whose filtered
candidates come up short of k falls back to exact top-k.

``faiss-cpu`` is the optional extra ``ann``, imported only when an index is built.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import require
from ..models._vectors import ItemTable, UserVectors

__all__ = ["ANN_MIN_ITEMS", "AnnIndex", "exact_top_k"]

log = logging.getLogger(__name__)

#: catalogue size from which a cached tier gets an ANN index by default: below it the exact
#: product + partition stays under ~1 ms on one core (``benchmarks/bench_ann.py`` measures both)
ANN_MIN_ITEMS = 50_000


def exact_top_k(scores: np.ndarray, k: int, excluded: list[np.ndarray] | None = None) -> np.ndarray:
    """Top-k item indices (n, k) of score rows, best first, with each row's excluded items left out."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if excluded is not None:
        for r, items in enumerate(excluded):
            scores[r, items] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


@dataclass
class Calibration:
    """How the index was tuned: clusters, probes, and recall@10 against exact on a sample."""

    nlist: int
    nprobe: int | None
    recall_at_10: float | None
    sample_users: int
    tried: dict[int, float]


class AnnIndex:
    """An inner-product IVF index over one item table (bias groups folded in as extra columns).

    Args:
        table: The tier's item table.
        nlist: Inverted lists (clusters); default ``4 * sqrt(n_items)``, at most ``n_items / 39``
            (FAISS wants about 39 training points per centroid).
        seed: k-means seed (the index is the same on every start).
        threads: OpenMP threads FAISS may use (process-wide; one request is one query).

    Raises:
        MissingDependencyError: faiss is not installed (``pip install 'segrec[ann]'``).
    """

    def __init__(self, table: ItemTable, *, nlist: int | None = None, seed: int = 0, threads: int = 1):
        faiss = require("faiss", "ann")
        faiss.omp_set_num_threads(int(threads))
        self.table = table
        n = table.vectors.shape[0]
        items = table.vectors if table.bias is None else np.hstack([table.vectors, table.bias.T])
        items = np.ascontiguousarray(items, dtype=np.float32)
        self.dim = items.shape[1]
        self.nlist = int(nlist or max(1, min(int(4 * math.sqrt(n)), n // 39)))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.train(items)
        index.add(items)
        self._quantizer = quantizer  # the IVF index refers to it; keep it alive
        self.index = index
        self.n_items = n
        self.calibration: Calibration | None = None

    @property
    def nprobe(self) -> int:
        """Clusters visited per query."""
        return int(self.index.nprobe)

    def queries(self, vectors: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Augmented query rows (n, dim): the user vectors and a one-hot of their bias group."""
        vectors = np.asarray(vectors, np.float32).reshape(len(groups), -1)
        if self.table.bias is None:
            return np.ascontiguousarray(vectors)
        onehot = np.zeros((len(groups), self.table.n_groups), np.float32)
        onehot[np.arange(len(groups)), np.maximum(np.asarray(groups, np.int64), 0)] = 1.0
        return np.ascontiguousarray(np.hstack([vectors, onehot]))

    def search_one(self, vector: np.ndarray, group: int, k: int,
                   excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Approximate top-k of one user with ``excluded`` items left out, or None when it comes up short.

        Asks the index for ``k + len(excluded)`` candidates, so the excluded ones can be
        dropped and k remain whenever the probed clusters hold enough items.
        """
        want = min(self.n_items, k + len(excluded))
        scores, idx = self.index.search(self.queries(vector[None], np.array([group])), want)
        idx, scores = idx[0], scores[0]
        keep = idx >= 0
        if len(excluded):
            keep &= ~np.isin(idx, excluded)
        idx, scores = idx[keep][:k], scores[keep][:k]
        if len(idx) < min(k, self.n_items - len(np.unique(excluded))):
            return None
        return idx.astype(np.int64), scores.astype(np.float32)

    def calibrate(self, cache: UserVectors, seen: sp.csr_matrix, *, target_recall: float = 0.95,
                  sample: int = 500, seed: int = 0, k: int = 10) -> Calibration:
        """Choose ``nprobe``: the smallest power of two whose recall@k against exact reaches the target.

        Recall is measured as served: seen items excluded, on ``sample`` random known users.
        Leaves ``nprobe`` at the choice; ``Calibration.nprobe`` is None when no setting
        reached the target (the caller then serves this tier exactly).
        """
        scorable = np.flatnonzero(cache.groups >= 0)
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(scorable, size=min(sample, len(scorable)), replace=False))
        excluded = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in users]
        exact = exact_top_k(cache.table.scores(cache.vectors[users], cache.groups[users]), k, excluded)
        tried: dict[int, float] = {}
        chosen = None
        nprobe = 1
        while nprobe <= self.nlist:
            self.index.nprobe = nprobe
            hits = 0
            for r, u in enumerate(users):
                got = self.search_one(cache.vectors[u], int(cache.groups[u]), k, excluded[r])
                if got is not None:
                    hits += len(np.intersect1d(got[0], exact[r]))
            recall = hits / max(1, exact.size)
            tried[nprobe] = recall
            if recall >= target_recall:
                chosen = nprobe
                break
            nprobe *= 2
        if chosen is None:
            log.warning("ANN index: recall@%d %.3f < %.2f at every nprobe up to %d; serving exactly",
                        k, max(tried.values(), default=0.0), target_recall, self.nlist)
        self.calibration = Calibration(self.nlist, chosen, tried.get(chosen) if chosen else None,
                                       len(users), tried)
        return self.calibration
