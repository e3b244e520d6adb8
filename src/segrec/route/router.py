"""The request path: user (known or new) -> segment -> tier -> top-k, never a dead end.

:class:`Router` is pure and read-only once built: it holds a fitted system
(usually a :class:`~segrec.models.SegmentedRecommender`), the segment of every
known user, a :class:`~segrec.route.assign.ProfileAssigner` for new users, item
titles, and a popularity vector as the last resort. The HTTP server and the
batch CLI both call it, so both serve the same lists and flag fallbacks the
same way.

Decision order for one request:

1. ``user_id`` known: the user's segment and its routed tier (the tier's own
   fallback chain covers users it cannot score).
2. otherwise ``recent_items`` and/or ``attributes``: the assigner places the user
   in a segment; the segment's new-user tier scores the items through its
   ``score_histories``; without usable items the segment's own popular items
   are served (flagged as a fallback).
3. nothing usable: global popularity, flagged as a fallback. Never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, UnknownIDError
from ..models.base import Recommender
from ..models.segmented import SegmentedRecommender, score_histories
from ..types import Recommendations
from .assign import ProfileAssigner

__all__ = ["Router", "Served", "fast_scores", "top_k_row"]

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
        confidence: Posterior probability of the assigned segment (new users).
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


def fast_scores(model: Recommender, user: int, segment: int) -> np.ndarray | None:
    """One known user's scores without scipy's per-call sparse-indexing overhead, or None.

    On the server's hot path, ``score_dense`` of an item-item model spends most of
    its time in scipy's fancy row indexing and matmul dispatch (~0.7 ms of ~1 ms a
    request on ml-100k). For the models listed here the same numbers come from
    plain numpy: a binary history row times a dense ``W`` is the sum of the
    history's rows of ``W``, added in the same order (bitwise equal; tested).
    Other models return None and go through ``score_dense``.

    Args:
        model: A fitted tier model.
        user: Dense user id.
        segment: The user's segment (per-segment models serve it with that segment's model).
    """
    subs = getattr(model, "models_", None)
    if type(model).__name__ == "PerSegmentRecommender" and isinstance(subs, dict):
        sub = subs.get(int(segment))
        return None if sub is None else fast_scores(sub, user, segment)
    if type(model).__name__ == "PopularityRecommender":
        return model.counts_
    weights = getattr(model, "weights_", None)
    if type(model).__name__ in ("EASERecommender", "ItemKNNRecommender") and isinstance(weights, np.ndarray):
        rows = model.train_csr_
        history = rows.indices[rows.indptr[user]:rows.indptr[user + 1]]
        if len(history) == 0:
            return np.zeros(weights.shape[1], dtype=np.float32)
        return np.add.reduce(weights[np.sort(history)], axis=0)
    return None


def _is_heavy(model: Recommender) -> bool:
    """Mean FLOPs per request over fit users above :data:`HEAVY_FLOPS` (unknown cost: heavy)."""
    try:
        return bool(np.mean(model.flops_per_request()) > HEAVY_FLOPS)
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
        model: The fitted system to serve (segmented or any Recommender).
        segments: int (n_users,), segment per dense user of ``model.user_vocab_``
            (ignored for a SegmentedRecommender, which has its own); None = unsegmented.
        assigner: Places new users in segments; None = new users are served by
            the model's ``score_histories`` where it has one, else popularity.
        titles: Title per dense item of ``model.item_vocab_``, or None.
        popularity: Fallback scores (n_items,); default: fit interactions per item.
        info: Free-form facts about the served artifact (path, fingerprint, policy).

    Example:
        >>> router = Router(PopularityRecommender().fit(data))  # doctest: +SKIP
        >>> router.recommend(user_id="nobody", k=3).fallback  # doctest: +SKIP
        True
    """

    def __init__(self, model: Recommender, *, segments: np.ndarray | None = None,
                 assigner: ProfileAssigner | None = None, titles: np.ndarray | None = None,
                 popularity: np.ndarray | None = None, info: dict[str, Any] | None = None):
        from ..models.base import check_is_fitted

        check_is_fitted(model)
        self.model = model
        self.segmented = isinstance(model, SegmentedRecommender)
        n_users = len(model.user_vocab_)
        if self.segmented:
            self.segments = np.asarray(model.segments_, dtype=np.int64)
        elif segments is not None:
            self.segments = np.asarray(segments, dtype=np.int64)
        else:
            self.segments = np.full(n_users, -1, np.int64)
        if self.segments.shape != (n_users,):
            raise ValueError(f"segments must have one label per user ({n_users}); got {self.segments.shape}")
        self.assigner = assigner
        self.titles = None if titles is None else np.asarray(titles, dtype=object)
        seen = model.seen_
        self.popularity = (np.asarray(seen.sum(0), dtype=np.float32).ravel() if popularity is None
                           else np.asarray(popularity, dtype=np.float32))
        self.info = dict(info or {})
        # Python dicts beat pandas indexers for the handful of ids in one request.
        self._user_index = {u: i for i, u in enumerate(model.user_vocab_.ids)}
        self._item_index = {it: i for i, it in enumerate(model.item_vocab_.ids)}
        self._item_ids = model.item_vocab_.ids
        self._seen = seen
        tiers = model.tiers_ if self.segmented else {model.name: model}
        self._heavy = {name: _is_heavy(m) for name, m in tiers.items()}

    # -------------------------------------------------------------- lookups
    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self._item_ids)

    def tier_of_segment(self, segment: int) -> str:
        """The tier routed to ``segment`` (the model's name for an unrouted system)."""
        if self.segmented:
            return self.model.routing_.get(int(segment), self.model.config.default_tier)
        return self.model.name

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
        return (seg if seg >= 0 else None), (self.tier_of_segment(seg) if seg >= 0 else self.model.name)

    def heavy(self, user_id: str | None, has_recent_items: bool) -> bool:
        """Whether a request may be scored by a heavy tier (see :data:`HEAVY_FLOPS`).

        Known users: their routed tier. New users with items: any heavy tier (which one
        depends on the segment they are placed in). Everyone else gets popularity.
        """
        u = self._user_index.get(str(user_id)) if user_id is not None else None
        if u is not None:
            tier = self.tier_of_segment(int(self.segments[u])) if self.segmented else self.model.name
            return self._heavy.get(tier, True)
        return has_recent_items and any(self._heavy.values())

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
        if attributes and self.assigner is not None:
            self.assigner.check_attributes(attributes)
        u = self._user_index.get(str(user_id)) if user_id is not None else None
        if u is not None:
            return self._known(str(user_id), u, recent, banned, k, exclude_seen, unknown_items)
        has_attrs = bool(attributes) and self.assigner is not None and self.assigner.columns_
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
        rows = np.array([u], dtype=np.int64)
        if self.segmented:
            routed = self.tier_of_segment(seg)
            fast = fast_scores(self.model.tiers_[routed], u, seg) if routed in self.model.tiers_ else None
            if fast is not None and np.isfinite(fast).any():
                scores, tier = fast[None, :], routed
            else:
                scores, served = self.model.score_served(rows)
                tier = str(served[0])
        else:
            fast = fast_scores(self.model, u, seg)
            scores = (fast[None, :] if fast is not None
                      else np.asarray(self.model.score_dense(rows), np.float32))
            tier = routed = self.model.name
        reason = None
        if not np.isfinite(scores).any():
            scores, tier, reason = self.popularity[None, :], POPULARITY, "no tier could score this user"
        seen = self._seen.indices[self._seen.indptr[u]:self._seen.indptr[u + 1]] if exclude_seen else []
        return self._finish(user_id, scores, np.r_[seen, recent, banned], k,
                            segment=seg if seg >= 0 else None, tier=tier, routed_tier=routed,
                            fallback=tier != routed, new_user=False, reason=reason,
                            unknown_items=unknown_items)

    def _new(self, user_id, recent, attributes, banned, k, unknown_items) -> Served:
        seg, confidence, evidence = -1, None, None
        if self.assigner is not None:
            placed = self.assigner.assign([recent], [attributes] if attributes else None)
            seg = int(placed.segments[0])
            confidence, evidence = float(placed.confidence[0]), str(placed.evidence[0])
        routed = None
        scores, tier = None, ""
        if seg >= 0 and self.segmented:
            routed = self.model.new_user_tier(seg)
            if len(recent):
                s, served = self.model.score_new([recent], np.array([seg]))
                if np.isfinite(s).any():
                    scores, tier = s, str(served[0])
        elif len(recent):
            routed = self.model.name
            s = score_histories(self.model, [recent], np.array([seg]))
            if s is not None and np.isfinite(s).any():
                scores, tier = s, self.model.name
        reason = None
        if scores is None and seg >= 0 and self.assigner is not None:
            scores, tier = self.assigner.segment_popularity(seg)[None, :], SEGMENT_POPULARITY
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
        vals = row[idx]
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
            if self.segmented:
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
        lengths = np.diff(self._seen.indptr)
        out = []
        for s in np.unique(self.segments[self.segments >= 0]):
            members = self.segments == s
            counts = (self.assigner.segment_popularity(int(s)) if self.assigner is not None
                      else np.asarray(self._seen[np.flatnonzero(members)].sum(0)).ravel())
            top = np.argsort(-counts, kind="stable")[:top_n]
            prof: dict[str, Any] = {
                "segment": int(s), "users": int(members.sum()), "tier": self.tier_of_segment(int(s)),
                "new_user_tier": self.model.new_user_tier(int(s)) if self.segmented else self.model.name,
                "median_history": float(np.median(lengths[members])) if members.any() else 0.0,
                "top_items": [{"item_id": str(self._item_ids[i]), "title": None if self.titles is None
                               else str(self.titles[i]), "interactions": int(counts[i])} for i in top],
            }
            if item_table is not None and "categories" in item_table:
                cats = item_table["categories"].fillna("").astype(str).str.get_dummies(sep="|")
                weights = cats.to_numpy(np.float64).T @ np.asarray(counts, np.float64)
                order = np.argsort(-weights, kind="stable")[:top_n]
                total = weights.sum() or 1.0
                prof["top_categories"] = [{"category": str(cats.columns[i]),
                                           "share": float(weights[i] / total)}
                                          for i in order if weights[i] > 0]
            validation = getattr(self.model, "validation_", None)
            if validation is not None:
                rows = validation[(validation["segment"] == s) & (validation["tier"] == prof["tier"])]
                if len(rows):
                    prof["validation_ndcg@10"] = float(rows["ndcg@10"].iloc[0])
                    if "flops" in rows:
                        prof["flops_per_request"] = float(rows["flops"].iloc[0])
            out.append(prof)
        return out
