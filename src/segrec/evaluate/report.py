"""Full-ranking evaluation by the protocol, with per-user rows for every breakdown."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..types import Split
from .metrics import PER_USER_METRICS, coverage
from .ranking import hit_matrix, rank_in_chunks

__all__ = ["EvalReport", "activity_terciles", "bootstrap_diff", "evaluate"]

TERCILES = ("light", "medium", "heavy")


def activity_terciles(n_train: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Bucket users by train interactions at the 1/3 and 2/3 quantiles (numpy 'linear').

    Returns:
        ``(labels, (q1, q2))``: labels ``light`` (<= q1), ``medium`` (<= q2), ``heavy``.
    """
    n_train = np.asarray(n_train, dtype=np.float64)
    if len(n_train) == 0:
        return np.array([], dtype=object), (0.0, 0.0)
    q1, q2 = np.quantile(n_train, [1 / 3, 2 / 3])
    labels = np.where(n_train <= q1, "light", np.where(n_train <= q2, "medium", "heavy")).astype(object)
    return labels, (float(q1), float(q2))


@dataclass
class EvalReport:
    """Accuracy of one system on one split.

    Attributes:
        system: Name of the evaluated system.
        per_user: One row per evaluated user: ``user``, ``user_id``, ``n_train``,
            ``n_test``, ``activity``, ``segment`` (when given) and each metric.
        overall: Mean of every metric over users, plus ``coverage@10``.
        terciles: The (q1, q2) activity cuts.
        seconds: Wall time of the ranking.
    """

    system: str
    per_user: pd.DataFrame
    overall: dict[str, float]
    terciles: tuple[float, float]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        """Metric columns of ``per_user``, e.g. ``ndcg@10``."""
        return [c for c in self.per_user.columns if "@" in c]

    def by(self, column: str, metrics: list[str] | None = None) -> pd.DataFrame:
        """Mean metrics and user count per value of ``column`` (e.g. segment, activity)."""
        metrics = metrics or self.metric_names
        grouped = self.per_user.groupby(column, sort=True)
        table = grouped[metrics].mean()
        table.insert(0, "users", grouped.size())
        if column == "activity":
            table = table.reindex([t for t in TERCILES if t in table.index])
        return table

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: overall, per activity tercile and per segment."""
        out: dict[str, Any] = {
            "system": self.system,
            "overall": self.overall,
            "terciles": {"cuts": list(self.terciles),
                         "ndcg@10": self.by("activity")["ndcg@10"].to_dict(),
                         "recall@10": self.by("activity")["recall@10"].to_dict()},
            "users": int(len(self.per_user)),
            "seconds": self.seconds,
        }
        if "segment" in self.per_user:
            seg = self.by("segment", ["ndcg@10", "recall@10"])
            out["segments"] = {str(k): v for k, v in seg.to_dict(orient="index").items()}
        out.update(self.extra)
        return out


def evaluate(
    model: Any,
    split: Split,
    *,
    segments: np.ndarray | None = None,
    ks: tuple[int, ...] = (10, 20),
    chunk_size: int = 1024,
    system: str | None = None,
) -> EvalReport:
    """Evaluate a fitted recommender on ``split.test`` by EVAL_PROTOCOL.md.

    Full ranking over all items; each user's fit-data (train ∪ valid) items are
    excluded; metrics are averaged over users with at least one test item.

    Args:
        model: Anything with ``score_dense(users) -> (n, n_items)`` (every Recommender).
        split: The split the model was fitted on (fit data = train ∪ valid).
        segments: Optional int array of shape (n_users,), a segment per dense user;
            adds a ``segment`` column for per-segment breakdowns.
        ks: Cut-offs (the protocol's 10 and 20).
        chunk_size: Users scored per batch (memory = chunk_size x n_items floats).
        system: Name in the report; defaults to ``model.name``.
    """
    fit_csr = split.fit.to_csr()
    test_csr = split.test.to_csr()
    n_test = np.diff(test_csr.indptr)
    users = np.flatnonzero(n_test > 0)
    kmax = max(ks)
    start = time.perf_counter()
    top, _ = rank_in_chunks(model.score_dense, users, kmax, seen=fit_csr, chunk_size=chunk_size)
    seconds = time.perf_counter() - start
    if top.shape[1] < kmax:  # tiny catalogues: pad so every cut-off is defined
        top = np.pad(top, ((0, 0), (0, kmax - top.shape[1])), constant_values=-1)
    hits = hit_matrix(top, test_csr, users)
    n_train = split.train.user_counts()[users]
    labels, cuts = activity_terciles(n_train)
    rows: dict[str, Any] = {
        "user": users,
        "user_id": split.test.user_vocab.id(users),
        "n_train": n_train,
        "n_test": n_test[users],
        "activity": labels,
    }
    if segments is not None:
        rows["segment"] = np.asarray(segments)[users]
    for k in ks:
        for name, fn in PER_USER_METRICS.items():
            rows[f"{name}@{k}"] = fn(hits, n_test[users], k)
    per_user = pd.DataFrame(rows)
    overall = {c: float(per_user[c].mean()) if len(per_user) else 0.0 for c in per_user if "@" in c}
    overall["coverage@10"] = coverage(top, split.test.n_items, 10)
    name = system or getattr(model, "name", type(model).__name__)
    return EvalReport(name, per_user, overall, cuts, seconds)


def bootstrap_diff(
    a: EvalReport,
    b: EvalReport,
    metric: str = "ndcg@10",
    *,
    by: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired bootstrap 95% CI of ``a - b`` on ``metric``, resampling users.

    Args:
        a, b: Reports of two systems on the same split (same users).
        metric: Per-user metric column.
        by: Optional column of ``a.per_user`` (e.g. ``segment``) to get one CI per group.
        n_boot: Bootstrap resamples.
        seed: Resampling seed.

    Returns:
        DataFrame with ``users, mean_a, mean_b, diff, lo, hi`` (one row, or one per group).
    """
    merged = a.per_user[["user", metric] + ([by] if by else [])].merge(
        b.per_user[["user", metric]], on="user", suffixes=("_a", "_b"))
    if len(merged) != len(a.per_user) or len(merged) != len(b.per_user):
        raise ValueError("bootstrap_diff needs two reports over the same users")
    rng = np.random.default_rng(seed)
    groups = [("all", merged)] if by is None else list(merged.groupby(by, sort=True))
    out = []
    for key, g in groups:
        d = (g[f"{metric}_a"] - g[f"{metric}_b"]).to_numpy()
        n = len(d)
        idx = rng.integers(0, n, size=(n_boot, n))
        boots = d[idx].mean(1)
        lo, hi = np.quantile(boots, [0.025, 0.975])
        out.append({"group": key, "users": n, "mean_a": g[f"{metric}_a"].mean(),
                    "mean_b": g[f"{metric}_b"].mean(), "diff": d.mean(), "lo": lo, "hi": hi})
    return pd.DataFrame(out).set_index("group")
