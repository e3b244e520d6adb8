"""The request path: user (known or new) -> segment -> tier -> top-k, never a dead end.

:class:`Router` is pure and read-only once built: it holds one fitted
:class:`~segrec.route.composite.SegmentedRecommender` (a plain model is served as
a one-tier composite, so there is one path), item titles, and a popularity
vector as the last resort. The composite's own segmenter places new users and
its fallback chain covers users a tier cannot score. The HTTP server and the
batch CLI both call it, so both serve the same lists and flag fallbacks the
same way.

Decision order for one request:

1. ``user_id`` known: the user's segment and its routed tier (the tier's own
   fallback chain covers users it cannot score).
2. otherwise ``recent_items`` and/or ``attributes``: the composite's segmenter
   places the user in a segment; the segment's new-user tier scores the items
   through its ``score_histories``; without usable items the segment's own
   popular items are served (flagged as a fallback).
3. nothing usable: global popularity, flagged as a fallback. Never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, MissingDependencyError, UnknownIDError
from ..models.base import Recommender, check_is_fitted
from ..types import Recommendations
from ._ann import ANN_MIN_ITEMS, AnnIndex
from ._profiles import segment_profiles as _segment_profiles
from .composite import SegmentedRecommender

__all__ = ["Router", "Served", "top_k_row"]

log = logging.getLogger(__name__)

#: FLOPs per request above which a model counts as heavy (about a millisecond of CPU and up):
#: the HTTP server computes such requests in a worker thread, cheaper ones on the event loop
HEAVY_FLOPS = 5e6

#: tier names reported when no model tier served the request
SEGMENT_POPULARITY = "segment_popularity"
POPULARITY = "popularity"


@dataclass(frozen=True)
class Served:
    """One answered request.

    Attributes:
        user_id: The requested id (None for an anonymous request).
        item_ids: Recommended external item ids, best first (at most k).
        scores: Their scores.
        titles: Their titles (None where the run had no items table).
        segment: The user's segment (None when none could be assigned).
        tier: What actually produced the scores (a tier name, ``segment_popularity``
            or ``popularity``).
        routed_tier: The tier the routing chose for the segment (None if no segment).
        fallback: True when ``tier`` is not the routed tier (the user could not be
            scored by it), including the popularity fallbacks.
        new_user: True when the user was not in the fit data.
        reason: Why a fallback happened, in words.
        confidence: The segmenter's probability of the assigned segment (new users; None
            for segmenters without membership probabilities).
        evidence: What placed a new user: ``items``, ``attributes``, ``items+attributes``.
        unknown_items: Requested recent items not in the catalogue (ignored).
    """

    user_id: str | None
    item_ids: list[str]
    scores: list[float]
    titles: list[str | None]
    segment: int | None
    tier: str
    routed_tier: str | None
    fallback: bool
    new_user: bool
    reason: str | None = None
    confidence: float | None = None
    evidence: str | None = None
    unknown_items: list[str] = field(default_factory=list)


def _is_heavy(model: Recommender, *, new_user: bool = False) -> bool:
    """Mean FLOPs per request over fit users above :data:`HEAVY_FLOPS` (unknown cost: heavy).

    Known users are costed as served (a cached tier: one vector product), new users by
    the forward pass over their items.
    """
    try:
        return bool(np.mean(model.flops_per_request(new_user=new_user)) > HEAVY_FLOPS)
    except Exception:  # noqa: BLE001 - a cost estimate must never break serving
        return True


def top_k_row(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best finite scores of one row, best first, ties to the lower index.

    The same order as :func:`segrec.evaluate.ranking.top_k` gives, without its batch
    machinery (one request is one row; this is the server's hot path).
    """
    n = len(row)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, np.int64)
    kth = -np.partition(-row, k - 1)[k - 1] if k < n else row.min()
    cand = np.flatnonzero(row >= kth)  # ascending ids, so a stable sort breaks ties low-id first
    order = cand[np.argsort(-row[cand], kind="stable")][:k]
    return order[np.isfinite(row[order])]


class Router:
    """Answer recommendation requests for known and brand-new users.

    Args:
        system: The fitted system to serve; a plain Recommender is wrapped as a
            one-tier composite (:meth:`SegmentedRecommender.serving`).
        titles: Title per dense item of the system's ``item_vocab_``, or None.
        popularity: Fallback scores (n_items,); default: fit interactions per item.
        info: Free-form facts about the served artifact (path, fingerprint, policy).
        ann: Top-k for known users of cached tiers: ``auto`` (an ANN index for catalogues of
            at least ``ann_min_items``, when faiss is installed), ``exact`` (never), ``on``
            (always; faiss required). See :mod:`segrec.route._ann`.
        ann_min_items: Catalogue size from which ``auto`` builds an index.
        ann_recall: recall@10 against exact that an index must reach on a sample of known
            users at start-up (else that tier is served exactly).

    Example:
        >>> router = Router(PopularityRecommender().fit(data))  # doctest: +SKIP
        >>> router.recommend(user_id="nobody", k=3).fallback  # doctest: +SKIP
        True
    """

    def __init__(self, system: Recommender, *, titles: np.ndarray | None = None,
                 popularity: np.ndarray | None = None, info: dict[str, Any] | None = None,
                 ann: str = "auto", ann_min_items: int = ANN_MIN_ITEMS, ann_recall: float = 0.95):
        check_is_fitted(system)
        if ann not in ("auto", "exact", "on"):
            raise ConfigError(f"ann must be auto, exact or on; got {ann!r}", key="ann")
        if not isinstance(system, SegmentedRecommender):
            system = SegmentedRecommender.serving(system)
        # every cached tier's known-user vectors now (read from the artifact, or computed once
        # for one saved without them), so that no request runs a forward pass for a known user
        system.prepare_serving()
        self.model = system
        self.segments = np.asarray(system.segments_, dtype=np.int64)
        self.titles = None if titles is None else np.asarray(titles, dtype=object)
        seen = system.seen_
        self.popularity = (np.asarray(seen.sum(0), dtype=np.float32).ravel() if popularity is None
                           else np.asarray(popularity, dtype=np.float32))
        self.info = dict(info or {})
        # Python dicts beat pandas indexers for the handful of ids in one request.
        self._user_index = {u: i for i, u in enumerate(system.user_vocab_.ids)}
        self._item_index = {it: i for i, it in enumerate(system.item_vocab_.ids)}
        self._item_ids = system.item_vocab_.ids
        self._seen = seen
        self.ann: dict[str, AnnIndex] = self._build_ann(ann, int(ann_min_items), float(ann_recall))
        self._heavy = {name: name not in self.ann and _is_heavy(m) for name, m in system.tiers_.items()}
        self._heavy_new = {name: _is_heavy(m, new_user=True) for name, m in system.tiers_.items()}

    def _build_ann(self, mode: str, min_items: int, recall: float) -> dict[str, AnnIndex]:
        """An index per cached tier when the catalogue is large enough (see :mod:`segrec.route._ann`)."""
        if mode == "exact" or (mode == "auto" and self.n_items < min_items):
            return {}
        out: dict[str, AnnIndex] = {}
        for name, model in self.model.tiers_.items():
            cache = model.user_vectors_
            if cache is None:
                continue
            try:
                index = AnnIndex(cache.table)
            except MissingDependencyError:
                if mode == "on":
                    raise
                log.warning("%d items but faiss is not installed (pip install 'segrec[ann]'): exact top-k",
                            self.n_items)
                return {}
            if index.calibrate(cache, self._seen, target_recall=recall).nprobe is not None:
                out[name] = index
        return out

    def ann_info(self) -> dict[str, dict[str, Any]]:
        """Per tier with an ANN index: clusters, probes per query, measured recall@10 against exact."""
        return {name: {"nlist": ix.nlist, "nprobe": ix.nprobe, "recall_at_10": ix.calibration.recall_at_10,
                       "sample_users": ix.calibration.sample_users} for name, ix in self.ann.items()}

    # -------------------------------------------------------------- lookups
    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self._item_ids)

    def tier_of_segment(self, segment: int) -> str:
        """The tier routed to ``segment``."""
        return self.model.tier_of_segment(segment)

    def user_segment(self, user_id: str) -> tuple[int | None, str]:
        """Segment and routed tier of a known user.

        Raises:
            UnknownIDError: The user is not in the fit data.
        """
        u = self._user_index.get(str(user_id))
        if u is None:
            raise UnknownIDError(f"unknown user id {str(user_id)!r}: not in the fit data of this artifact; "
                                 "POST /v1/recommend with recent_items or attributes serves new users")
        seg = int(self.segments[u])
        return (seg if seg >= 0 else None), self.tier_of_segment(seg)

    def heavy(self, user_id: str | None, has_recent_items: bool) -> bool:
        """Whether a request may be scored by a heavy tier (see :data:`HEAVY_FLOPS`).

        Known users: their routed tier. New users with items: any heavy tier (which one
        depends on the segment they are placed in). Everyone else gets popularity.
        """
        u = self._user_index.get(str(user_id)) if user_id is not None else None
        if u is not None:
            return self._heavy.get(self.tier_of_segment(int(self.segments[u])), True)
        return has_recent_items and any(self._heavy_new.values())

    def item_indices(self, item_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Dense indices of known items (order kept) and the unknown ids."""
        known, unknown = [], []
        for it in item_ids:
            idx = self._item_index.get(str(it))
            (unknown.append(str(it)) if idx is None else known.append(idx))
        return np.asarray(known, dtype=np.int64), unknown

    # --------------------------------------------------------------- serving
    def recommend(self, *, user_id: str | None = None, recent_items: Sequence[str] | None = None,
                  attributes: dict[str, Any] | None = None, k: int = 10, exclude: Sequence[str] = (),
                  exclude_seen: bool = True) -> Served:
        """Top-k for one request (see the module docstring for the decision order).

        Args:
            user_id: External user id; known users are served from their fit history.
            recent_items: A new user's items, oldest first (also excluded for known users).
            attributes: A new user's attributes (users-table columns).
            k: List length (>= 1); longer than what is left gives what is left.
            exclude: Items never to recommend.
            exclude_seen: Leave out a known user's fit items.

        Raises:
            ConfigError: Unknown attribute keys or a non-numeric numeric attribute.
        """
        if int(k) < 1:
            raise ConfigError(f"k must be >= 1; got {k}", key="k")
        recent, unknown_items = self.item_indices(recent_items or [])
        banned, _ = self.item_indices(exclude)
        if attributes:
            self.model.check_attributes(attributes)
        u = self._user_index.get(str(user_id)) if user_id is not None else None
        if u is not None:
            return self._known(str(user_id), u, recent, banned, k, exclude_seen, unknown_items)
        has_attrs = bool(attributes) and self.model.uses_attributes
        if len(recent) or has_attrs:
            return self._new(user_id, recent, attributes, banned, k, unknown_items)
        why = "unknown user" if user_id is not None else "anonymous request"
        detail = " and recent_items all unknown" if unknown_items else ""
        return self._finish(user_id, self.popularity[None, :], np.r_[recent, banned], k, segment=None,
                            tier=POPULARITY, routed_tier=None, fallback=True, new_user=True,
                            reason=f"{why} with no usable recent_items or attributes{detail}: popular items",
                            unknown_items=unknown_items)

    def _known(self, user_id, u, recent, banned, k, exclude_seen, unknown_items) -> Served:
        seg = int(self.segments[u])
        routed = self.tier_of_segment(seg)
        seen = (self._seen.indices[self._seen.indptr[u]:self._seen.indptr[u + 1]] if exclude_seen
                else np.empty(0, np.int64))
        excluded = np.concatenate([seen, recent, banned]).astype(np.int64, copy=False)
        fields = {"segment": seg if seg >= 0 else None, "routed_tier": routed, "new_user": False,
                  "unknown_items": unknown_items}
        index = self.ann.get(routed)
        if index is not None:  # a large catalogue: the user's cached vector against the ANN index
            cache = self.model.tiers_[routed].user_vectors_
            group = int(cache.groups[u])
            got = None if group < 0 else index.search_one(cache.vectors[u], group, int(k), excluded)
            if got is not None:
                return self._served(user_id, *got, tier=routed, fallback=False, **fields)
        row, tier = self.model.score_one_served(u)  # each tier's single-user path, then the chain
        scores = row[None, :]
        reason = None
        if not np.isfinite(scores).any():
            scores, tier, reason = self.popularity[None, :], POPULARITY, "no tier could score this user"
        return self._finish(user_id, scores, excluded, k, tier=tier, fallback=tier != routed,
                            reason=reason, **fields)

    def _new(self, user_id, recent, attributes, banned, k, unknown_items) -> Served:
        segs, conf, evid = self.model.place([recent], [attributes] if attributes else None)
        seg = int(segs[0])
        confidence = None if conf[0] is None else float(conf[0])
        evidence = None if evid[0] is None else str(evid[0])
        routed = self.model.new_user_tier(seg) if seg >= 0 or len(recent) else None
        scores, tier = None, ""
        if len(recent):
            s, served = self.model.score_new([recent], np.array([seg]))
            if np.isfinite(s).any():
                scores, tier = s, str(served[0])
        reason = None
        if scores is None and seg >= 0:
            scores, tier = self.model.segment_popularity(seg)[None, :], SEGMENT_POPULARITY
            reason = ("no recent items to condition on: the segment's popular items" if not len(recent)
                      else f"tier {routed!r} cannot score new users: the segment's popular items")
        if scores is None:
            scores, tier = self.popularity[None, :], POPULARITY
            reason = "no model could score this new user: popular items"
        return self._finish(user_id, scores, np.r_[recent, banned], k, segment=seg if seg >= 0 else None,
                            tier=tier, routed_tier=routed, fallback=tier != routed, new_user=True,
                            reason=reason, confidence=confidence, evidence=evidence,
                            unknown_items=unknown_items)

    def _finish(self, user_id, scores, excluded, k, **fields: Any) -> Served:
        row = np.array(scores[0], dtype=np.float32, copy=True)  # (n_items,)
        row[np.isnan(row)] = -np.inf
        excluded = np.asarray(excluded, dtype=np.int64)
        if len(excluded):
            row[excluded] = -np.inf
        idx = top_k_row(row, int(k))
        return self._served(user_id, idx, row[idx], **fields)

    def _served(self, user_id, idx: np.ndarray, vals: np.ndarray, **fields: Any) -> Served:
        titles = [None] * len(idx) if self.titles is None else [
            None if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in self.titles[idx]]
        return Served(user_id=None if user_id is None else str(user_id),
                      item_ids=[str(i) for i in self._item_ids[idx]], scores=[float(v) for v in vals],
                      titles=titles, **fields)

    def recommend_batch(self, user_ids: Sequence[str], k: int = 10, *,
                        exclude_seen: bool = True) -> tuple[Recommendations, np.ndarray]:
        """Top-k for many user ids; unknown ones get popularity instead of an error.

        Returns:
            ``(recommendations, fallback)``: ``tier`` says what served each user
            (``popularity`` for unknown ones) and ``fallback`` (bool (n,)) flags them.
        """
        user_ids = [str(u) for u in user_ids]
        n = len(user_ids)
        ids = np.full((n, int(k)), None, dtype=object)
        vals = np.full((n, int(k)), np.nan, dtype=np.float32)
        segment = np.full(n, -1, np.int64)
        tier = np.full(n, "", dtype=object)
        fallback = np.zeros(n, bool)
        known = np.array([u in self._user_index for u in user_ids], dtype=bool)
        pos = np.flatnonzero(known)
        if len(pos):
            recs = self.model.recommend([user_ids[i] for i in pos], int(k), exclude_seen=exclude_seen)
            ids[pos], vals[pos] = recs.item_ids, recs.scores
            segment[pos] = self.segments[[self._user_index[user_ids[i]] for i in pos]]
            tier[pos] = recs.tier
            routed = np.array([self.tier_of_segment(s) for s in segment[pos]], dtype=object)
            fallback[pos] = recs.tier != routed
        for i in np.flatnonzero(~known):
            served = self.recommend(user_id=user_ids[i], k=int(k))
            m = len(served.item_ids)
            ids[i, :m], vals[i, :m] = served.item_ids, served.scores
            tier[i], fallback[i] = served.tier, True
        return Recommendations(np.asarray(user_ids, dtype=object), ids, vals, segment, tier), fallback

    # -------------------------------------------------------------- profiles
    def segment_profiles(self, *, top_n: int = 5,
                         item_table: pd.DataFrame | None = None) -> list[dict[str, Any]]:
        """One JSON-able profile per segment: size, routing, activity, top items and categories.

        Args:
            top_n: Items (and categories) listed per segment.
            item_table: Items table in dense item order with a ``categories``
                column (``|``-joined) to list each segment's top categories.
        """
        return _segment_profiles(self, top_n=top_n, item_table=item_table)
