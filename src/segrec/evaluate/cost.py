"""What a recommendation costs: parameters, analytic FLOPs, measured latency, memory.

These are the cost axes of the cost-accuracy frontier (issue 5) and of the
``budget`` routing policy. Three kinds of numbers, kept apart on purpose:

* **Parameters** and **memory** are properties of a fitted model.
* **FLOPs per request** are *analytic*: the floating-point operations needed to
  score the whole catalogue for one user and rank it, from the model's shapes
  and the user's history length (an EASE request costs ``2 * h * n_items``, a
  Transformer request grows with ``h`` up to its ``max_len``). They do not depend
  on the machine, so a routing chosen on them is reproducible.
* **Latency** is *measured* on this CPU (p50/p99 per request at batch 1 and at
  batch 256), bounded both in number of calls and in seconds.

Every model knows its own cost (``n_parameters``, ``flops_per_request``,
``flops_per_user``, ``sub_models``; :class:`segrec.models.Recommender`); this
module only measures and aggregates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .ranking import mask_seen, top_k

__all__ = [
    "CostReport",
    "cost_figures",
    "cost_table",
    "history_lengths",
    "measure_cost",
    "measure_latency",
    "memory_bytes",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- parameters
def _arrays(model: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in model._state().values()]


def memory_bytes(model: Any) -> int:
    """Bytes held by the fitted model's arrays: learned state, seen items, sub-models.

    This is what a loaded model keeps resident beyond the interpreter itself
    (the server's RSS is measured separately by ``benchmarks/bench_serve.py``).
    """
    total = sum(int(a.nbytes) for a in _arrays(model))
    seen = getattr(model, "seen_", None)
    if sp.issparse(seen):
        total += int(seen.data.nbytes + seen.indices.nbytes + seen.indptr.nbytes)
    return total + sum(memory_bytes(m) for m in model.sub_models())


def cost_figures(systems: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Parameters, mean analytic FLOPs per request and memory of each named fitted model.

    A model whose figures cannot be computed is left out with a warning in the log:
    cost accounting must never lose a finished run.
    """
    costs = {}
    for name, model in systems.items():
        try:
            costs[name] = {"n_parameters": int(model.n_parameters()),
                           "flops_per_request": float(np.mean(model.flops_per_request())),
                           "memory_bytes": int(memory_bytes(model))}
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("no cost figures for %s: %s", name, exc)
    return costs


def history_lengths(model: Any) -> np.ndarray:
    """Fit-data history length per dense user of a fitted model (from ``seen_``)."""
    seen = getattr(model, "seen_", None)
    if seen is None:
        return np.zeros(0, np.float64)
    return np.diff(seen.indptr).astype(np.float64)


# -------------------------------------------------------------------- latency
def measure_latency(
    model: Any,
    users: np.ndarray,
    *,
    batch_size: int = 1,
    max_calls: int = 200,
    max_seconds: float = 5.0,
    k: int = 10,
) -> dict[str, float]:
    """Measured wall time of the recommend path (score, mask seen, top-k) on this CPU.

    Bounded in both calls and seconds, so a slow model costs at most ``max_seconds``
    (after the first call, which is always made).

    Args:
        model: A fitted Recommender.
        users: Dense user ids to draw requests from (cycled).
        batch_size: Users per call.
        max_calls: Most calls.
        max_seconds: Stop after this many seconds.
        k: List length.

    Returns:
        ``p50_ms``, ``p99_ms`` (per call), ``per_request_ms`` (median call / batch
        size) and ``calls``.
    """
    users = np.asarray(users, dtype=np.int64)
    if len(users) == 0:
        raise ValueError("measure_latency needs at least one user")
    seen = getattr(model, "seen_", None)
    reps = int(np.ceil(batch_size / len(users)))
    pool = np.tile(users, max(reps, 1))
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for call in range(max_calls):
        start_row = (call * batch_size) % max(len(pool) - batch_size + 1, 1)
        rows = pool[start_row : start_row + batch_size]
        t0 = time.perf_counter()
        scores = np.array(model.score_dense(rows), dtype=np.float32, copy=True)
        mask_seen(scores, seen, rows)
        top_k(scores, k)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    ms = np.asarray(times) * 1e3
    p50 = float(np.percentile(ms, 50))
    return {"p50_ms": p50, "p99_ms": float(np.percentile(ms, 99)),
            "per_request_ms": p50 / batch_size, "calls": len(times)}


@dataclass(frozen=True)
class CostReport:
    """Cost of one fitted recommender.

    Attributes:
        system: Name.
        n_parameters: Learned numbers.
        flops_per_request: Mean analytic FLOPs per request over the users measured.
        memory_bytes: Bytes of the model's arrays.
        p50_ms_b1, p99_ms_b1: Latency of one single-user request.
        p50_ms_b256, p99_ms_b256: Latency of one 256-user batch.
        per_request_ms_b256: Median batch time divided by 256.
    """

    system: str
    n_parameters: int
    flops_per_request: float
    memory_bytes: int
    p50_ms_b1: float = float("nan")
    p99_ms_b1: float = float("nan")
    p50_ms_b256: float = float("nan")
    p99_ms_b256: float = float("nan")
    per_request_ms_b256: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


def measure_cost(
    model: Any,
    users: np.ndarray | None = None,
    *,
    system: str | None = None,
    latency: bool = True,
    max_calls: int = 200,
    max_seconds: float = 3.0,
    rng: np.random.Generator | None = None,
) -> CostReport:
    """Parameters, FLOPs, memory and (optionally) latency of one fitted model.

    Args:
        model: A fitted Recommender.
        users: Dense users to cost (default: every user with fit data).
        system: Name in the report (default ``model.name``).
        latency: Measure latency (skip for a quick analytic table).
        max_calls: Most calls per batch size.
        max_seconds: Seconds per batch size at most.
        rng: Shuffles the users for the latency runs (default seed 0).
    """
    lengths = history_lengths(model)
    if users is None:
        users = np.flatnonzero(lengths > 0)
    users = np.asarray(users, dtype=np.int64)
    flops = model.flops_per_user(users)  # routed systems: each user's own serving tier
    report: dict[str, Any] = {
        "system": system or getattr(model, "name", type(model).__name__),
        "n_parameters": int(model.n_parameters()),
        "flops_per_request": float(np.mean(flops)),
        "memory_bytes": int(memory_bytes(model)),
    }
    if latency and len(users):
        order = (rng or np.random.default_rng(0)).permutation(users)
        one = measure_latency(model, order, batch_size=1, max_calls=max_calls, max_seconds=max_seconds)
        big = measure_latency(model, order, batch_size=256, max_calls=max(max_calls // 10, 3),
                              max_seconds=max_seconds)
        report.update(p50_ms_b1=one["p50_ms"], p99_ms_b1=one["p99_ms"], p50_ms_b256=big["p50_ms"],
                      p99_ms_b256=big["p99_ms"], per_request_ms_b256=big["per_request_ms"])
    return CostReport(**report)


def cost_table(models: dict[str, Any], users: np.ndarray | None = None, **kwargs: Any) -> pd.DataFrame:
    """One :class:`CostReport` row per named model (``measure_cost`` keyword arguments pass through)."""
    rows = [measure_cost(m, users, system=name, **kwargs).to_dict() for name, m in models.items()]
    return pd.DataFrame(rows).set_index("system") if rows else pd.DataFrame()
