"""Choose the number of segments (and the method) automatically.

For each candidate K the segmenter is fitted and scored by
- internal quality: silhouette (higher is better), Davies-Bouldin (lower),
  Calinski-Harabasz (higher), on a reproducible sample;
- stability: mean pairwise adjusted Rand index of the full-data assignments of
  models fitted on bootstrap resamples with different seeds (higher);
- downstream: inner-validation NDCG@10 of per-segment EASE against one global
  EASE (higher), when interactions are given.

``criterion`` names the one figure that decides; the table keeps all of them.
Ties go to the smaller K (fewer segments are cheaper to serve and explain).
The candidates are independent, so they run through an executor
(:mod:`segrec.distributed`): one after another here by default, or as Ray tasks.

Example:
    >>> sel = select_n_segments(KMeansSegmenter(random_state=0), features, candidates=range(2, 9))
    >>> sel.best_k, sel.table  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..distributed.executor import Executor, LocalExecutor
from ..errors import SegmentationError
from ..features.base import UserFeatures
from ..split import holdout_split
from ..types import Interactions
from ._arrays import _matrix

__all__ = ["KSelection", "MethodSelection", "select_method", "select_n_segments", "stability_ari"]

log = logging.getLogger(__name__)

#: criterion -> (table column, higher is better)
CRITERIA: dict[str, tuple[str, bool]] = {
    "silhouette": ("silhouette", True),
    "davies_bouldin": ("davies_bouldin", False),
    "calinski_harabasz": ("calinski_harabasz", True),
    "stability": ("stability_ari", True),
    "downstream": ("segmented_ndcg@10", True),
}


@dataclass(frozen=True)
class KSelection:
    """The outcome of choosing K.

    Attributes:
        table: One row per candidate K with every computed figure.
        best_k: The chosen K.
        criterion: The figure that decided.
    """

    table: pd.DataFrame
    best_k: int
    criterion: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: criterion, best K and the table as records."""
        return {
            "criterion": self.criterion,
            "best_k": self.best_k,
            "table": self.table.replace({np.nan: None}).to_dict(orient="records"),
        }


def _best(table: pd.DataFrame, criterion: str) -> int:
    col, higher = CRITERIA[criterion]
    vals = table[col].to_numpy(np.float64)
    if np.isnan(vals).all():
        raise SegmentationError(f"K selection: criterion {criterion!r} could not be computed for any K")
    vals = np.where(np.isnan(vals), -np.inf if higher else np.inf, vals)
    # round so that numerically equal scores tie, and ties go to the smaller K
    vals = np.round(vals, 6)
    idx = int(np.argmax(vals)) if higher else int(np.argmin(vals))
    return int(table["k"].iloc[idx])


def stability_ari(
    segmenter,
    features: UserFeatures | np.ndarray,
    k: int,
    *,
    n_runs: int = 3,
    bootstrap: bool = True,
    sample_size: int = 5000,
    random_state: int = 0,
) -> float:
    """Mean pairwise ARI between segmentations fitted on resamples with different seeds.

    Each run fits ``segmenter`` with ``n_segments=k`` and seed ``random_state + r``
    on a bootstrap resample (or all rows when ``bootstrap`` is False), then
    assigns the same evaluation rows (a sample of at most ``sample_size``).
    1.0 means every run found the same partition.
    """
    from sklearn.metrics import adjusted_rand_score

    x = _matrix(features)
    n = len(x)
    rng = np.random.default_rng(random_state)
    eval_idx = np.sort(rng.choice(n, min(n, sample_size), replace=False))
    eval_feats = _take(features, eval_idx)
    runs = []
    for r in range(n_runs):
        idx = rng.choice(n, n, replace=True) if bootstrap else np.arange(n)
        model = segmenter.with_params(n_segments=int(k), random_state=int(random_state + r + 1))
        try:
            model.fit(_take(features, idx))
        except SegmentationError:  # a resample with fewer distinct rows than k
            continue
        runs.append(model.assign(eval_feats))
    if len(runs) < 2:
        return float("nan")
    aris = [adjusted_rand_score(runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    return float(np.mean(aris))


def _take(features: UserFeatures | np.ndarray, idx: np.ndarray):
    return features.rows(idx) if isinstance(features, UserFeatures) else np.asarray(features)[idx]


def select_n_segments(
    segmenter,
    features: UserFeatures | np.ndarray,
    *,
    candidates: Sequence[int] = range(2, 11),
    criterion: str = "silhouette",
    data: Interactions | None = None,
    stability: bool | None = None,
    downstream: bool | None = None,
    n_stability_runs: int = 3,
    reg: float = 100.0,
    min_segment_users: int = 20,
    random_state: int = 0,
    executor: Executor | None = None,
) -> KSelection:
    """Fit ``segmenter`` for each candidate K and pick the best by ``criterion``.

    Args:
        segmenter: An (unfitted) segmenter; its other settings are kept.
        features: The users' features.
        candidates: K values to try (values above the number of users are skipped).
        criterion: ``silhouette``, ``davies_bouldin``, ``calinski_harabasz``,
            ``stability`` or ``downstream``.
        data: Fit interactions of the same users (dense ids = feature rows); needed
            for ``downstream``.
        stability: Compute stability ARI (default: only when it is the criterion).
        downstream: Compute the per-segment EASE figures (default: only when it is the
            criterion, since it costs one EASE fit per segment and candidate K).
        n_stability_runs: Resamples per K for stability.
        reg: EASE lambda for the downstream figures.
        min_segment_users: Segments smaller than this use the global model (downstream).
        random_state: Seed of the sampling.
        executor: Runs one task per candidate K (a :class:`segrec.distributed.Executor`;
            default: in this process). The same seeds give the same table either way.

    Returns:
        KSelection with the chosen K and the full table.

    Raises:
        SegmentationError: No usable candidate, or ``downstream`` without ``data``.
    """
    if criterion not in CRITERIA:
        raise SegmentationError(f"unknown K criterion {criterion!r}; choose one of {sorted(CRITERIA)}")
    if criterion == "downstream" and data is None:
        raise SegmentationError(
            "k_criterion='downstream' needs the fit interactions: fit(features, data=...)"
        )
    x = _matrix(features)
    ks = sorted({int(k) for k in candidates if 2 <= int(k) <= len(x)})
    if not ks:
        raise SegmentationError(f"no candidate K in {list(candidates)} fits {len(x)} users")
    do_stability = criterion == "stability" if stability is None else stability
    inner = None
    do_downstream = criterion == "downstream" if downstream is None else downstream
    if data is not None and do_downstream:
        if data.n_users != len(x):
            raise SegmentationError(f"data has {data.n_users} users but features have {len(x)} rows")
        inner = holdout_split(data, 0.1)
    executor = executor or LocalExecutor(max_retries=0)
    # features (and the inner split) go to the executor once; one task per candidate K
    shared = (segmenter, features, inner, do_stability, n_stability_runs, reg, min_segment_users,
              random_state)
    results = executor.map(score_candidate, ks, shared=shared, labels=[f"K={k}" for k in ks])
    rows = [row for row in results if row is not None]
    if not rows:
        raise SegmentationError(f"{type(segmenter).__name__}: no candidate K in {ks} could be fitted")
    table = pd.DataFrame(rows)
    for col, _ in CRITERIA.values():
        if col not in table:
            table[col] = np.nan
    return KSelection(table, _best(table, criterion), criterion)


def score_candidate(shared: tuple, k: int) -> dict[str, Any] | None:
    """Fit the segmenter with ``n_segments=k`` and compute its figures (one executor task).

    Args:
        shared: ``(segmenter, features, inner split or None, stability?, stability runs,
            EASE reg, min_segment_users, random_state)``, the same for every K.
        k: The candidate number of segments.

    Returns:
        The table row of K, or None when the segmenter cannot produce K segments.
    """
    segmenter, features, inner, do_stability, n_runs, reg, min_segment_users, random_state = shared
    start = time.perf_counter()
    model = segmenter.with_params(n_segments=k)
    try:
        model.fit(features)
    except SegmentationError as exc:
        log.info("K=%d skipped: %s", k, exc)
        return None
    seg = model.segmentation_
    row: dict[str, Any] = {
        "k": k,
        **seg.metrics,
        "fit_seconds": time.perf_counter() - start,
        "min_size": int(seg.sizes().min()),
        "max_size": int(seg.sizes().max()),
    }
    if do_stability:
        row["stability_ari"] = stability_ari(segmenter, features, k, n_runs=n_runs, random_state=random_state)
    if inner is not None:
        from .downstream import segment_ndcg

        res = segment_ndcg(model.labels_, inner[0], inner[1], reg=reg, min_segment_users=min_segment_users)
        row["global_ndcg@10"] = res.global_
        row["segmented_ndcg@10"] = res.segmented
    log.info("K=%d: %s", k, {c: round(v, 4) for c, v in row.items() if isinstance(v, float)})
    return row


@dataclass(frozen=True)
class MethodSelection:
    """The outcome of choosing a segmentation method (each with its own best K).

    Attributes:
        table: One row per method: chosen K and its figures.
        best_method: The winning method name.
        segmenters: Method name -> fitted segmenter (with its chosen K).
    """

    table: pd.DataFrame
    best_method: str
    segmenters: dict[str, Any]


def select_method(
    features: UserFeatures,
    segmenters: dict[str, Any],
    *,
    criterion: str = "silhouette",
    data: Interactions | None = None,
) -> MethodSelection:
    """Fit each segmenter (``n_segments="auto"`` is honoured) and keep the best by ``criterion``.

    All figures are computed in the same feature space, so methods are
    comparable; ``stability`` and ``downstream`` are recomputed per method.

    Args:
        features: The users' features.
        segmenters: Name -> unfitted segmenter.
        criterion: As in :func:`select_n_segments`.
        data: Fit interactions (needed for ``downstream``).
    """
    if criterion not in CRITERIA:
        raise SegmentationError(f"unknown criterion {criterion!r}; choose one of {sorted(CRITERIA)}")
    rows, fitted = [], {}
    for name, seg in segmenters.items():
        try:
            seg.fit(features, data=data)
        except SegmentationError as exc:
            log.warning("method %s skipped: %s", name, exc)
            continue
        fitted[name] = seg
        s = seg.segmentation_
        row = {"method": name, "k": s.n_segments, **s.metrics, "fit_seconds": seg.fit_seconds_}
        if criterion == "stability":
            row["stability_ari"] = stability_ari(
                seg, features, s.n_segments, random_state=seg.config.random_state
            )
        if criterion == "downstream":
            from .downstream import segment_ndcg

            tr, va = holdout_split(data, 0.1)
            row["segmented_ndcg@10"] = segment_ndcg(s.labels, tr, va).segmented
        rows.append(row)
    if not rows:
        raise SegmentationError("no segmentation method could be fitted")
    table = pd.DataFrame(rows)
    col, higher = CRITERIA[criterion]
    vals = table[col].to_numpy(np.float64) if col in table else np.full(len(table), np.nan)
    vals = np.where(np.isnan(vals), -np.inf if higher else np.inf, vals)
    best = int(np.argmax(vals)) if higher else int(np.argmin(vals))
    return MethodSelection(table, str(table["method"].iloc[best]), fitted)
