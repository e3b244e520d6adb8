"""Budgeted choice of the Transformer's regularisation on the inner split.

``dropout="auto"`` and ``item_init="auto"`` (see :class:`TransformerConfig`) name a
few candidate settings. Each is trained with early stopping on the inner split and the
best inner-valid NDCG@10 wins, but only while the estimated cost of the remaining
candidates (the first candidate's measured CPU seconds x their number) stays within
``tune_budget_s``, and a candidate replaces the best so far only when it is better by
more than ``tune_min_se`` standard errors of the paired per-user difference (a tie stays
with the default instead of a pick among noise). So: a short grid on small, sparse data,
none where one fit already takes long. The first candidate is the untuned default, so
declining the grid costs nothing. The record of what happened is the model's ``tuned_``
(saved in its artifact).

The estimate counts this process's CPU seconds, not wall time, so that busy neighbours
change the path taken less: amazon-scientific's first early-stopping run took 3.3 s wall
on a quiet 2-core box, 10.4 s wall but 4.7 CPU-seconds at load 3.4.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..evaluate.ranking import user_ndcg
from ..types import Interactions
from ._seqdata import Histories
from ._seqserve import scoring_threads
from ._transformer_config import TransformerConfig
from ._transformer_train import validation_users

__all__ = ["choose_setting", "default_setting", "tune_candidates"]

log = logging.getLogger(__name__)


def tune_candidates(config: TransformerConfig, has_text: bool) -> list[dict[str, Any]]:
    """The settings (``dropout``, ``item_init``) to try, the untuned default first.

    ``item_init="auto"`` adds text init only when item embeddings were given.
    """
    drops = tuple(config.auto_dropouts) if config.dropout == "auto" else (config.dropout,)
    if config.item_init == "auto":
        inits = ("random", "text") if has_text else ("random",)
    else:
        inits = (config.item_init,)
    return [{"dropout": float(d), "item_init": i} for i in inits for d in drops]


def default_setting(config: TransformerConfig) -> dict[str, Any]:
    """The setting used without a choice (no early stopping, data-parallel, or before fit)."""
    return tune_candidates(config, has_text=False)[0]


def choose_setting(train_one: Callable[[dict[str, Any]], tuple[Any, Any]],
                   candidates: list[dict[str, Any]], budget_s: float, label: str, *,
                   per_user: Callable[[Any], np.ndarray], min_se: float = 1.0,
                   allowed: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """Train the candidates in order while the budget allows; keep the best inner-valid score.

    Args:
        train_one: ``setting -> (net, LoopResult)``: an early-stopped run on the inner split.
        candidates: From :func:`tune_candidates`; the first always runs.
        budget_s: Most estimated CPU seconds for the candidates after the first.
        label: Model name for the log line.
        per_user: ``net -> NDCG@10 of each inner-valid user`` (the users ``train_one`` validates on).
        min_se: A candidate wins only when its mean per-user gain over the best so far
            exceeds this many standard errors of the paired differences (and 0).
        allowed: False skips the grid whatever the budget (a data-parallel fit, whose
            ranks must take the same path: measured seconds differ between them).

    Returns:
        ``(net, result, record)`` of the winner; ``record`` says which path was taken
        (``fixed``: one candidate, ``grid``, ``over budget``, ``data-parallel``), every
        candidate's score, best epoch and seconds (in the grid also its paired ``gain`` and
        ``se`` against the best before it), the estimate and the budget. Ties go to the
        earlier candidate.
    """
    start, cpu = time.perf_counter(), time.process_time()
    best_net, best = train_one(candidates[0])
    first_s = time.perf_counter() - start
    first_cpu = time.process_time() - cpu
    tried = [{**_row(candidates[0], best, first_s), "cpu_seconds": first_cpu}]
    rest = candidates[1:]
    estimate = first_cpu * len(rest)
    chosen = candidates[0]
    if not rest:
        path = "fixed"
    elif not allowed:
        path = "data-parallel"
    elif estimate > budget_s:
        path = "over budget"
    else:
        path = "grid"
        best_users = per_user(best_net)
        for setting in rest:
            t = time.perf_counter()
            net, result = train_one(setting)
            users = per_user(net)
            diff = users - best_users
            gain = float(diff.mean()) if len(diff) else 0.0
            se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None
            better = gain > 0 and (se is None and min_se == 0 or se is not None and gain > min_se * se)
            tried.append({**_row(setting, result, time.perf_counter() - t), "gain": gain, "se": se})
            if better:
                best_net, best, chosen, best_users = net, result, setting, users
    record = {"path": path, "chosen": dict(chosen), "tried": tried, "estimated_s": estimate,
              "budget_s": float(budget_s), "min_se": float(min_se)}
    if rest:
        log.info("%s: %s (%d candidates, estimated %.1f CPU s for the %d after the first, budget %.1f s): "
                 "dropout %s, item_init %s (inner-valid NDCG@10 %.4f)", label, path, len(candidates),
                 estimate, len(rest), budget_s, chosen["dropout"], chosen["item_init"], best.best_score)
    return best_net, best, record


def _row(setting: dict[str, Any], result: Any, seconds: float) -> dict[str, Any]:
    return {**setting, "ndcg@10": float(result.best_score), "best_epoch": int(result.best_epoch),
            "seconds": float(seconds)}


def inner_user_ndcg(score_rows: Callable[[Any, Histories, np.ndarray], np.ndarray], inner_train: Interactions,
                    inner_valid: Interactions, config: TransformerConfig) -> Callable[[Any], np.ndarray]:
    """``net -> per-user NDCG@10`` on the users and histories the early stopping validates on.

    What :func:`choose_setting` pairs candidates on; ``score_rows(net, histories, rows)``
    is the model's scorer.
    """
    c = config
    data: list = []  # built on first use: only a grid compares candidates

    def per_user(net: Any) -> np.ndarray:
        if not data:
            data.extend(validation_users(inner_train, inner_valid, c.valid_users, c.random_state))
            data.append(Histories.from_interactions(inner_train).tail(c.max_len))
        users, fit_csr, valid_csr, tail = data
        with scoring_threads(c.n_threads):
            return user_ndcg(lambda rows: score_rows(net, tail, users[rows]), fit_csr, valid_csr)

    return per_user
