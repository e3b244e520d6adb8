"""Choose a model's few hyperparameters on an inner validation split.

The protocol's black-box rule: settings are chosen on (train -> valid) carved
out of the fit data, never on test. Each candidate is fitted on the inner train
part and scored by NDCG@10 on the inner valid part; the winner is refitted by
the caller on all fit data.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluate.ranking import MAX_SCORED_USERS, quick_ndcg, scored_users
from ..split import holdout_split
from ..types import Interactions
from .context import FitContext

__all__ = ["MAX_SCORED_USERS", "inner_sets", "grid_search", "model_bytes", "scored_users"]


log = logging.getLogger(__name__)


def inner_sets(train: Interactions, valid: Interactions | None) -> tuple[Interactions, Interactions]:
    """The (inner train, inner valid) pair: ``valid`` if given, else the last 10% per user."""
    if valid is not None and len(valid):
        return train, valid
    return holdout_split(train, 0.1)


def grid_search(
    model: Any,
    grid: Mapping[str, Sequence[Any]],
    train: Interactions,
    valid: Interactions | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fit ``model.with_params(**combo)`` for every combo; return the best by NDCG@10.

    Args:
        model: An unfitted Recommender; its other settings stay fixed.
        grid: Parameter name -> candidate values.
        train, valid: Fit data and its optional held-out tail (see :func:`inner_sets`).

    Returns:
        ``(best_params, table)`` where ``table`` has one row (params + ``ndcg@10``)
        per candidate, in grid order. Ties go to the earlier candidate.
    """
    start = time.perf_counter()
    inner_train, inner_valid = inner_sets(train, valid)
    train_csr, valid_csr = inner_train.to_csr(), inner_valid.to_csr()
    users = scored_users(valid_csr)
    names = list(grid)
    table = []
    # keep the winner only where the caller asked (a composite's member), within a memory cap
    best, best_score, winner, keep = None, -1.0, None, bool(getattr(model, "_keep_inner", False))
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        candidate = model.with_params(**params)
        candidate._fit(inner_train, None, FitContext())
        score = quick_ndcg(candidate._score, train_csr, valid_csr, k=10, users=users)
        table.append({**params, "ndcg@10": score})
        log.info("%s %s: inner-valid NDCG@10 %.4f", type(model).__name__, params, score)
        keep = keep and model_bytes(candidate) <= KEEP_INNER_BYTES
        if score > best_score:
            best, best_score, winner = params, score, candidate if keep else None
    # the winner was fitted on the inner train part only: the router's inner model, kept
    model._kept_inner = _as_fitted(winner, inner_train) if keep and winner is not None else None
    # the model's share of the run's cost breakdown: choosing settings vs the final fit
    model.fit_timings_["tuning_s"] = time.perf_counter() - start
    return best, table


#: largest winning candidate (bytes of learned arrays) a grid search keeps as the model's inner
#: version. Keeping it saves the router one fit of the winner on the inner train part (EASE on
#: 5.9k items: 25 s on a loaded 2-core box) for its memory until the routing stage (131 MiB there;
#: n_items^2 x 4 bytes for EASE, so 1 GiB is EASE at ~16k items); above it the router refits.
KEEP_INNER_BYTES = 2**30


def model_bytes(model: Any) -> int:
    """Bytes of a model's learned arrays, its sub-models' included (the memory it holds)."""
    import numpy as np

    own = sum(int(np.asarray(a).nbytes) for a in model._state().values())
    return own + sum(model_bytes(m) for m in model.sub_models())


def _as_fitted(candidate: Any, inner_train: Interactions) -> Any:
    """A grid-search candidate (fitted by ``_fit`` alone) as a fitted model of the inner train part."""
    candidate.user_vocab_, candidate.item_vocab_ = inner_train.user_vocab, inner_train.item_vocab
    candidate.seen_ = inner_train.to_csr()
    candidate.fitted_on_ = inner_train.fingerprint()
    candidate.fit_timings_ = {}
    return candidate
