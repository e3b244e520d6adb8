"""How a composite fits its members and measures them for routing (the composite's fit order).

* :func:`fit_order`: members that build on another member's model (tag
  ``builds_on``) come after it; otherwise the given order.
* :func:`fit_member`: one member with its own view of the run context (the
  fitted models it may build on, item embeddings only if it reads them), through
  the executor's data-parallel fit where the member trains that way.
* :class:`InnerStage`: the candidates as fitted on the inner train part only —
  a member's kept ``inner_model()`` when it was fitted on that very part (and on
  the same segments), else a fresh fit — so validation is honest and no work is
  done twice (issue 12); fitted when first asked for, the heavy ones released.
* :func:`chosen_settings`: the settings a member chose, so its inner version is
  fitted once instead of searched again.
* :func:`tier_costs`: analytic FLOPs of each candidate per segment, in the same
  table every routing policy reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..models.base import Recommender
from ..models.context import FitContext
from ..models.tags import get_tags
from ..models.tuning import model_bytes
from ..types import Interactions

__all__ = ["HEAVY_BYTES", "InnerStage", "chosen_settings", "fit_member", "fit_order", "member_context",
           "text_embeddings", "tier_costs"]


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


#: an inner version whose learned arrays are larger than this is dropped once its singles are
#: scored, and fitted again only if a blend needs it: on the micro-video shape (19k items)
#: the inner EASE (1.4 GB) and per-segment EASEs (1.6 GB) would otherwise sit beside their
#: full-data twins through the whole routing stage (issue 12's 6 GB bound)
HEAVY_BYTES = 2**28


class InnerStage:
    """The candidates as fitted on the inner train part only, each fitted when first asked for.

    A member's kept ``inner_model()`` is used when it was fitted on that very part
    (and on the same segments), else a fresh copy is fitted with the settings the
    member chose — so validation is honest and no work is done twice (issue 12).
    :meth:`release` drops a version heavier than :data:`HEAVY_BYTES`, so at most one
    heavy inner model is alive at a time; asking for it again fits it again.

    Attributes:
        fit_seconds: Wall seconds spent fitting (or rebuilding kept) inner versions.
    """

    def __init__(self, members: Mapping[str, Recommender], inner_train: Interactions,
                 segments: np.ndarray, context: FitContext):
        self.members, self.inner_train, self.segments, self.context = members, inner_train, segments, context
        self._print = inner_train.fingerprint()
        self._models: dict[str, Recommender] = {}
        self._released: set[str] = set()
        self.fit_seconds = 0.0

    def get(self, name: str) -> Recommender:
        """The member ``name`` as fitted on the inner train part."""
        if name in self._models:
            return self._models[name]
        clock, before = time.perf_counter(), self.fit_seconds
        member = self.members[name]
        kept = None if name in self._released else member.inner_model()
        if kept is not None and kept.fitted_on_ != self._print:
            kept = None  # fitted on another inner part
        if kept is not None and get_tags(kept).requires_segments and not np.array_equal(kept.segments_,
                                                                                      self.segments):
            kept = None  # fitted per other segments: its θ_k would be misassigned
        if kept is None:
            again = " again" if name in self._released else ""
            self.context.say(f"routing: fitting {name} on the inner train part{again}")
            fresh = member.with_params(**chosen_settings(member))
            base = get_tags(fresh).builds_on
            if base is not None:  # the inner model it builds on must be alive
                for other, m in self.members.items():
                    if m.name == base and other != name:
                        self.get(other)
            own = member_context(fresh, self.context, self._models.values()).with_changes(keep_inner=False)
            kept = fresh.fit(self.inner_train, context=own)
        self._models[name] = kept
        # set, not added: a base fitted inside this call already added its time
        self.fit_seconds = before + time.perf_counter() - clock
        return kept

    def release(self, name: str) -> None:
        """Drop ``name``'s inner version (and the member's kept copy) if it is heavy."""
        model = self._models.get(name)
        if model is None or model_bytes(model) <= HEAVY_BYTES:
            return
        del self._models[name]
        self.members[name].release_inner()
        self._released.add(name)


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
