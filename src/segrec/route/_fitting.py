"""How a composite fits its members and measures them for routing (the composite's fit order).

* :func:`fit_order`: members that build on another member's model (tag
  ``builds_on``) come after it; otherwise the given order.
* :func:`fit_member`: one member with its own view of the run context (the
  fitted models it may build on, item embeddings only if it reads them), through
  the executor's data-parallel fit where the member trains that way.
* :func:`inner_members`: the candidates as fitted on the inner train part only —
  a member's kept ``inner_model()`` when it was fitted on that very part (and on
  the same segments), else a fresh fit — so validation is honest and no work is
  done twice (issue 12).
* :func:`chosen_settings`: the settings a member chose, so its inner version is
  fitted once instead of searched again.
* :func:`tier_costs`: analytic FLOPs of each candidate per segment, in the same
  table every routing policy reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..models.base import Recommender
from ..models.context import FitContext
from ..models.tags import get_tags
from ..types import Interactions

__all__ = ["chosen_settings", "fit_member", "fit_order", "inner_members", "member_context", "text_embeddings",
           "tier_costs"]


def fit_order(members: Mapping[str, Recommender]) -> list[str]:
    """Member names in fit order: a stable sort by how many members each builds on in a chain.

    Members that stand alone keep their order and come first; one that builds on
    another member's model (tag ``builds_on``) comes after every stand-alone one.
    """
    provides = {m.name: n for n, m in members.items()}

    def depth(name: str, seen: tuple[str, ...] = ()) -> int:
        base = get_tags(members[name]).builds_on
        owner = provides.get(base) if base is not None else None
        if owner is None or owner == name:
            return 0
        if owner in seen:
            raise ValueError(f"members build on each other in a cycle: {' -> '.join((*seen, name))}")
        return 1 + depth(owner, (*seen, name))

    return sorted(members, key=depth)


def member_context(model: Recommender, context: FitContext, fitted: Iterable[Recommender]) -> FitContext:
    """The context one member sees: the fitted models it may build on, embeddings only if it reads them."""
    tags = get_tags(model)
    shared = {m.name: m for m in fitted if tags.builds_on == m.name}
    embeddings = context.item_embeddings if tags.uses_item_embeddings else None
    return context.with_changes(shared=shared, item_embeddings=embeddings)


def text_embeddings(segmenter: Any) -> np.ndarray | None:
    """Item-text embeddings a fitted segmentation already computed (its ``text`` block), else None.

    Members that read item embeddings when given (a Transformer with ``item_init="auto"``)
    get them at no extra cost: the same texts and encoder as ``item_init="text"`` uses.
    """
    for block in getattr(getattr(segmenter, "features", None), "blocks_", ()):
        emb = getattr(block, "item_embeddings_", None)
        if block.name == "text" and emb is not None and emb.ndim == 2 and emb.shape[1] > 0:
            return emb
    return None


def fit_member(model: Recommender, train: Interactions, valid: Interactions | None,
               context: FitContext) -> Recommender:
    """Fit one member; returns the fitted model (a new object when trained data-parallel).

    A member tagged ``data_parallel`` trains through ``context.executor.fit_data_parallel``
    when the executor offers one (Ray Train under the Ray executor; a plain fit locally).
    """
    executor = context.executor
    parallel = getattr(executor, "fit_data_parallel", None) if executor is not None else None
    if parallel is not None and get_tags(model).data_parallel:
        return parallel(model, train, valid=valid, context=context)
    return model.fit(train, valid=valid, context=context)


def inner_members(members: Mapping[str, Recommender], names: list[str], inner_train: Interactions,
                  segments: np.ndarray, context: FitContext) -> dict[str, Recommender]:
    """The named members as fitted on ``inner_train`` only (kept inner models reused).

    Args:
        members: name -> fitted member (on the full fit data).
        names: The candidates, in fit order.
        inner_train: The inner train part (valid, or the last 10% of each user, held out).
        segments: Segment per dense user.
        context: The composite's run context (executor, progress).
    """
    inner_print = inner_train.fingerprint()
    stage: dict[str, Recommender] = {}
    for name in names:
        # A fitted member may have kept its version fitted on this very inner train part
        # (also with no valid set: both carve the same last 10% per user): reuse it rather
        # than training it again (issue 12: no work done twice).
        kept = members[name].inner_model()
        if kept is not None and kept.fitted_on_ != inner_print:
            kept = None
        per_segment = kept is not None and get_tags(kept).requires_segments
        if per_segment and not np.array_equal(kept.segments_, segments):
            kept = None  # fitted per other segments: its θ_k would be misassigned
        if kept is None:
            fresh = members[name].with_params(**chosen_settings(members[name]))
            own = member_context(fresh, context, stage.values()).with_changes(keep_inner=False)
            kept = fresh.fit(inner_train, context=own)
        stage[name] = kept
    return stage


def chosen_settings(model: Recommender) -> dict[str, Any]:
    """Settings a fitted member chose on inner validation, so its inner version is fitted once, not searched.

    The member chose them on the very inner split its inner version is fitted on
    (:func:`~segrec.models.tuning.inner_sets`), so refitting with them reproduces the
    grid search's winning candidate without running the grid again. Read from the
    documented results of a fit: ``tuning_`` (the grid-search table, best row) and
    ``best_epoch_`` of an early-stopped model (then trained for that many epochs and
    not refitted: its inner version must not learn from the inner valid part).
    Settings the model's config does not have are left out.
    """
    fields = type(model).Config.model_fields
    out: dict[str, Any] = {}
    tuning = getattr(model, "tuning_", None)
    if tuning:
        best = max(tuning, key=lambda row: row["ndcg@10"])
        out.update({k: v for k, v in best.items() if k in fields})
    epoch = getattr(model, "best_epoch_", None)
    if epoch and "epochs" in fields and "refit" in fields:
        out.update(epochs=max(int(epoch), 1), refit=False)
    return out


def tier_costs(models: dict[str, Recommender], segments: np.ndarray, lengths: np.ndarray,
               users: np.ndarray) -> pd.DataFrame:
    """Mean analytic FLOPs per request of each tier for each segment's users.

    Args:
        models: tier -> fitted Recommender.
        segments: Segment per dense user.
        lengths: Fit-history length per dense user (FLOPs grow with it for some models).
        users: The dense users to average over (e.g. those with validation items).

    Returns:
        Rows ``segment, tier, flops``; NaN where the tier has no model for the segment.
    """
    seg = segments[users]
    rows = []
    for tier, model in models.items():
        for s in np.unique(seg):
            h = lengths[users[seg == s]]
            # per-segment models cost a request by the segment's own model (NaN: none)
            flops = float(np.mean(model.flops_per_request(h, segments=np.full(len(h), s))))
            rows.append({"segment": int(s), "tier": tier, "flops": flops})
    return pd.DataFrame(rows, columns=["segment", "tier", "flops"])
