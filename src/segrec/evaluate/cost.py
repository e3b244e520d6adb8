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

A model can define its own ``flops_per_request`` / ``n_parameters``; otherwise
:func:`analytic_flops` uses the formula registered for its ``name`` in
:data:`FLOP_RULES`, and falls back to one multiply-add per learned number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .ranking import mask_seen, top_k

__all__ = [
    "FLOP_RULES",
    "CostReport",
    "analytic_flops",
    "cost_table",
    "history_lengths",
    "measure_cost",
    "measure_latency",
    "memory_bytes",
    "state_parameters",
]


# ----------------------------------------------------------------- parameters
def _submodels(model: Any) -> list[Any]:
    """Fitted sub-models of a composite (per-segment models, routed tiers)."""
    subs: list[Any] = []
    for attr in ("models_", "tiers_"):
        value = getattr(model, attr, None)
        if isinstance(value, dict):
            subs.extend(value.values())
    return subs


def _arrays(model: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in model._state().values()]


def state_parameters(model: Any) -> int:
    """Learned floating-point numbers in ``model._state()`` plus those of its sub-models.

    Integer arrays (histories, segment labels, sparse indices) are bookkeeping,
    not parameters; a sparse weight matrix counts its stored values only.
    """
    own = sum(int(a.size) for a in _arrays(model) if np.issubdtype(a.dtype, np.floating))
    return own + sum(int(m.n_parameters()) for m in _submodels(model))


def memory_bytes(model: Any) -> int:
    """Bytes held by the fitted model's arrays: learned state, seen items, sub-models.

    This is what a loaded model keeps resident beyond the interpreter itself
    (the server's RSS is measured separately by ``benchmarks/bench_serve.py``).
    """
    total = sum(int(a.nbytes) for a in _arrays(model))
    seen = getattr(model, "seen_", None)
    if sp.issparse(seen):
        total += int(seen.data.nbytes + seen.indices.nbytes + seen.indptr.nbytes)
    return total + sum(memory_bytes(m) for m in _submodels(model))


# ---------------------------------------------------------------------- FLOPs
def history_lengths(model: Any) -> np.ndarray:
    """Fit-data history length per dense user of a fitted model (from ``seen_``)."""
    seen = getattr(model, "seen_", None)
    if seen is None:
        return np.zeros(0, np.float64)
    return np.diff(seen.indptr).astype(np.float64)


def _h(model: Any, n_history) -> np.ndarray:
    if n_history is None:
        lengths = history_lengths(model)
        return np.array(lengths.mean() if len(lengths) else 0.0)
    return np.asarray(n_history, dtype=np.float64)


def _rank_flops(model: Any) -> float:
    # masking + one selection pass over the catalogue: about one op per item
    return float(model.n_items)


def _popularity(model: Any, h: np.ndarray) -> np.ndarray:
    return np.zeros_like(h)  # the score row is a copy of the counts


def _item_item(model: Any, h: np.ndarray) -> np.ndarray:
    # x_u @ W with a binary x_u of h non-zeros: h rows of W summed
    w = model.weights_
    n = model.n_items
    per_row = w.nnz / max(w.shape[0], 1) if sp.issparse(w) else float(n)
    return 2.0 * np.minimum(h, n) * per_row


def _als(model: Any, h: np.ndarray) -> np.ndarray:
    # one (d,) x (d, n_items) product; the user's factors are a lookup
    n, d = model.item_factors_.shape
    return np.full_like(h, 2.0 * n * d)


def _transformer_net_flops(cfg: Any, h: np.ndarray, n_items: int) -> np.ndarray:
    """FLOPs of one SeqNet forward over the last ``min(h, max_len)`` items + logits.

    Per layer and position: q/k/v and output projections (4 d^2) and the MLP
    (2 * ffn_mult * d^2), each a multiply-add (x2); attention scores and the
    weighted sum cost 2 * L * d each per position. Only the last position's
    hidden state is dotted with the item table (d * n_items).
    """
    d = float(cfg.embedding_size)
    length = np.minimum(h, float(cfg.max_len))
    ffn = float(getattr(cfg, "ffn_mult", 4))
    per_layer = 2.0 * length * (4.0 + 2.0 * ffn) * d * d + 4.0 * length * length * d
    return cfg.n_layers * per_layer + 2.0 * d * n_items


def _transformer(model: Any, h: np.ndarray) -> np.ndarray:
    net = getattr(model, "net_", None)
    extra = 0.0
    if net is None:  # segment-adapted models wrap the global one (``global_``)
        net = getattr(getattr(model, "global_", None), "net_", None)
        # LoRA deltas add FLOPs in proportion to their parameters (x @ A @ B per adapted weight)
        extra = float(getattr(model, "param_ratio_", 0.0) or 0.0)
    if net is None or not hasattr(net, "config"):
        return _default(model, h)
    return _transformer_net_flops(net.config, h, model.n_items) * (1.0 + extra)


def _per_segment(model: Any, h: np.ndarray) -> np.ndarray:
    # a request is served by one segment's model; they share the catalogue, so report their mean
    subs = list(getattr(model, "models_", {}).values())
    if not subs:
        return np.zeros_like(h)
    return np.mean([m.flops_per_request(h) - _rank_flops(m) for m in subs], axis=0)


def _default(model: Any, h: np.ndarray) -> np.ndarray:
    # a dense forward pass touches every learned number once: one multiply-add each
    return np.full_like(h, 2.0 * state_parameters(model))


#: saved model name -> FLOPs of scoring the catalogue for users with history lengths h.
#: Ranking (about n_items ops) is added by :func:`analytic_flops`. One explicit dict.
FLOP_RULES: dict[str, Callable[[Any, np.ndarray], np.ndarray]] = {
    "popularity": _popularity,
    "ease": _item_item,
    "itemknn": _item_item,
    "als": _als,
    "transformer": _transformer,
    "adapted_transformer": _transformer,
    "per_segment": _per_segment,
}


def analytic_flops(model: Any, n_history=None) -> np.ndarray | float:
    """FLOPs to score and rank the whole catalogue for one request.

    Args:
        model: A fitted Recommender.
        n_history: History length(s) of the requesting user(s); ``None`` uses the
            mean fit-data history length of the model's users.

    Returns:
        A float (scalar ``n_history`` or None) or a float array shaped like ``n_history``.
    """
    h = _h(model, n_history)
    rule = FLOP_RULES.get(getattr(model, "name", ""), _default)
    flops = np.asarray(rule(model, h), dtype=np.float64) + _rank_flops(model)
    return float(flops) if flops.ndim == 0 else flops


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
    if hasattr(model, "flops_per_user"):  # routed systems: each user's own tier
        flops = model.flops_per_user(users)
    else:
        flops = model.flops_per_request(lengths[users] if len(lengths) else None)
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
