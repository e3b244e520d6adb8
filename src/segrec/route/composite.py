"""SegmentedRecommender: the segment-aware system as one object.

It owns a segmenter (a :class:`~segrec.segment.SegmentationPipeline`: features +
segmenter, which also places brand-new users), its member models ("tiers"), a
routing policy and a fallback chain. ``fit`` runs the whole pipeline: segment
the fit users, fit every member in dependency order (the adapters after the
global Transformer), then choose each segment's tier on inner validation with the
members as fitted on the inner train part only (:mod:`segrec.route._fitting`).
Every user is served by their segment's tier, and the one
:class:`~segrec.route.fallback.FallbackChain` takes over where that tier cannot
score them — for batch scoring, single requests, new users and costs alike.

A plain model is served as a one-tier composite (:meth:`SegmentedRecommender.serving`),
so the request path (:mod:`segrec.route.router`) has one shape.

Example:
    >>> from segrec.models import EASERecommender, PopularityRecommender
    >>> from segrec.segment import SegmentationPipeline
    >>> model = SegmentedRecommender(
    ...     segmenter=SegmentationPipeline.build("kmeans", n_segments=3, text=False),
    ...     tiers={"global": EASERecommender(reg=10.0), "popularity": PopularityRecommender()})
    >>> model.fit(split.train, valid=split.valid)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataValidationError, SegrecError
from ..models.base import ModelConfig, Recommender, check_is_fitted
from ..models.context import FitContext
from ..models.tags import RecommenderTags
from ..models.tuning import inner_sets
from ..types import Interactions, Recommendations
from ._fitting import fit_member, fit_order, member_context, text_embeddings
from ._persist import PersistMixin, _is_blend
from ._routing import route_on_validation
from ._serving import ServingMixin
from .fallback import FallbackChain
from .policy import RoutingPolicy

__all__ = ["SegmentedConfig", "SegmentedRecommender"]


#: marks "not given" (``None`` is a value a caller may pass on purpose)
_UNSET: Any = object()


class SegmentedConfig(ModelConfig):
    """Settings of :class:`SegmentedRecommender` (its parts are components, not settings)."""

    policy: RoutingPolicy = RoutingPolicy()
    """How segments are routed to tiers (accuracy, budget or rules)."""
    fallback: tuple[str, ...] = ("global", "popularity")
    """Tiers tried, in order, for users their routed tier cannot score (absent ones are skipped)."""
    candidates: tuple[str, ...] | None = None
    """Tiers the routing may choose among; None = every member."""
    blend: bool = True
    """Also consider, per segment, a blend of the best large and the best small tier
    (:mod:`segrec.route.blend`), its α chosen on inner validation."""
    large_tiers: tuple[str, ...] | None = None
    """The large (neural) side of blends; None = the tiers that read item sequences."""


class SegmentedRecommender(ServingMixin, PersistMixin, Recommender):
    """Routes each segment to the member model that pays off on validation.

    Args:
        segmenter: An unfitted :class:`~segrec.segment.SegmentationPipeline`; ``fit``
            fits it on the fit users and it places new users. None: the segments come
            from ``context.segments`` and new users are not placed.
        tiers: member name -> unfitted Recommender. Names used by the defaults:
            ``global`` (the large model) and ``popularity`` (the last resort).
        policy: The :class:`~segrec.route.policy.RoutingPolicy` (default: accuracy).
        fallback: A :class:`FallbackChain` or a tuple of tier names.
        routing: Optional fixed segment -> tier map (then no validation is run).
        config: A :class:`SegmentedConfig` instead of ``policy``/``fallback``/keywords.
        **overrides: Other :class:`SegmentedConfig` fields.

    Attributes:
        segments_: int (n_users,), segment of each dense user (-1 = none).
        segmenter_: The fitted segmentation pipeline (None without one).
        routing_: dict segment -> tier.
        tiers_: dict tier -> fitted Recommender.
        validation_: per-(segment, tier) validation table behind the routing (or None): tiers
            and blends, ``users, ndcg@10, flops, alpha`` and ``chosen`` (the selection).
        selection_: JSON-able summary of the choice (:meth:`~segrec.route.selection.Selection.to_dict`:
            per segment what serves it, its inner-valid NDCG@10 against the best single system's, the
            honest cross-fitted gain with its CI) and each tier's inner-valid NDCG@10, or None.
        default_tier_: The best single system on inner validation (users of no routed segment,
            first in the fallback chain).
        member_seconds_: tier -> wall seconds of its fit.
    """

    Config = SegmentedConfig
    name = "segmented"
    config: SegmentedConfig

    def __init__(self, segmenter: Any = None, tiers: dict[str, Recommender] | None = None,
                 policy: RoutingPolicy | Any = _UNSET,
                 fallback: FallbackChain | tuple[str, ...] | Any = _UNSET,
                 *, routing: dict[int, str] | None = None, config: SegmentedConfig | None = None,
                 **overrides: Any):
        given = {k: v for k, v in (("policy", policy), ("fallback", fallback)) if v is not _UNSET}
        if isinstance(given.get("fallback"), FallbackChain):
            given["fallback"] = given["fallback"].order
        if config is not None and (given or overrides):
            raise TypeError("SegmentedRecommender: pass a config or policy/fallback/keyword overrides, "
                            "not both")
        super().__init__(config, **given, **overrides)
        self.segmenter = segmenter
        self.tiers = dict(tiers or {})
        self.routing = routing
        self.segments_: np.ndarray | None = None
        self.segmenter_ = None
        self.routing_: dict[int, str] | None = None
        self.tiers_: dict[str, Recommender] | None = None
        self.validation_: pd.DataFrame | None = None
        self.selection_: dict[str, Any] | None = None
        self.default_tier_: str | None = None

    def __recommender_tags__(self) -> RecommenderTags:
        """New users arrive as item sequences; the fallback chain, not an empty history, decides NaN."""
        return replace(super().__recommender_tags__(), history_input="sequence", needs_history=False)

    def with_params(self, **changes: Any) -> SegmentedRecommender:
        """An unfitted copy with config changes; the segmenter and tiers are copied unfitted."""
        cfg = self.Config.model_validate({**self.config.model_dump(), **changes})
        segmenter = None if self.segmenter is None else self.segmenter.clone()
        return SegmentedRecommender(segmenter, {k: m.with_params() for k, m in self.tiers.items()},
                                    routing=self.routing, config=cfg)

    @classmethod
    def serving(cls, model: Recommender, *, segments: np.ndarray | None = None,
                segmenter: Any = None, name: str | None = None) -> SegmentedRecommender:
        """A fitted plain model as a one-tier composite, so it is served by the same path.

        Args:
            model: A fitted Recommender.
            segments: Segment per dense user of ``model`` (reported, and the key of each
                segment's popular items); None = unsegmented.
            segmenter: A fitted segmentation pipeline that places new users, or None.
            name: The tier's name in answers (a run's system name, e.g. ``local_ease``);
                default ``model.name``.
        """
        check_is_fitted(model)
        name = name or model.name
        out = cls(tiers={name: model}, policy=RoutingPolicy(default_tier=name), fallback=(name,))
        out.user_vocab_, out.item_vocab_, out.seen_ = model.user_vocab_, model.item_vocab_, model.seen_
        out.fitted_on_ = model.fitted_on_
        out.segments_ = (np.full(len(model.user_vocab_), -1, np.int64) if segments is None
                         else np.asarray(segments, np.int64))
        out.segmenter_, out.tiers_, out.routing_ = segmenter, {name: model}, {}
        out.default_tier_, out.selection_, out.validation_ = name, None, None
        out.segmenter = segmenter
        out.new_user_tier_ = None
        return out

    # ------------------------------------------------------------------ fit
    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        segments = self._fit_segments(train, context)
        self.segments_ = segments
        # members keep what the routing stage will need of them (a grid search's winner)
        embeddings = context.item_embeddings
        if embeddings is None:
            embeddings = text_embeddings(self.segmenter_)
        member_ctx = context.with_changes(segments=segments, segment_probs=self._segment_probs(context),
                                          keep_inner=self.routing is None, item_embeddings=embeddings)
        order = fit_order(self.tiers)
        self._check_tiers()
        self.tiers_, self.member_seconds_ = {}, {}
        for name in order:
            model = self.tiers[name]
            label = name if name == model.name else f"{name} ({model.name})"
            context.say(f"fitting {label}")
            start = time.perf_counter()
            with context.stage(f"fit {label}") as row:
                own = member_context(model, member_ctx, self.tiers_.values())
                fitted = fit_member(model, train, valid, own)
            row.detail.update(fitted.fit_timings_)
            self.tiers_[name] = fitted
            self.member_seconds_[name] = time.perf_counter() - start
        self.validation_, self.selection_ = None, None
        self.default_tier_ = self.config.policy.default_tier
        routing = self.routing
        if routing is None and len(self.candidates()) < 2:
            routing = {}  # nothing to choose among
        if routing is None:
            with context.stage("routing") as row:
                start = time.perf_counter()
                routing = self._route(train, valid, segments, member_ctx)
                self.fit_timings_["routing_s"] = time.perf_counter() - start
                row.detail.update(self.fit_timings_)
        self.routing_ = {int(k): str(v) for k, v in routing.items()}
        self.new_user_tier_ = self.config.policy.new_user_tier

    def _fit_segments(self, train: Interactions, context: FitContext) -> np.ndarray:
        """Segment labels of the fit users: given in the context, else from the segmenter."""
        self.segmenter_ = None
        if context.segments is not None:
            if context.segments.shape != (train.n_users,):
                raise DataValidationError(f"context.segments must have one label per user ({train.n_users}); "
                                          f"got shape {context.segments.shape}", source="segments",
                                          problem="wrong shape")
            return np.array(context.segments, dtype=np.int64)
        if self.segmenter is None:
            raise SegrecError("SegmentedRecommender.fit needs a segmenter or context.segments "
                              "(one label per dense user)")
        context.say(f"segmenting {train.n_users} users")
        with context.stage("segmentation") as row:
            self.segmenter_ = self.segmenter.fit(train)
            row.detail.update(self.segmenter_.timings_)
        return np.asarray(self.segmenter_.segmentation_.labels, dtype=np.int64)

    def _segment_probs(self, context: FitContext) -> np.ndarray | None:
        """The fit users' segment posteriors: the context's, else the fitted segmenter's (GMM), else None."""
        if context.segment_probs is not None or self.segmenter_ is None:
            return context.segment_probs
        return self.segmenter_.segmenter_.membership(self.segmenter_.features_)

    def _check_tiers(self) -> None:
        policy = self.config.policy
        if policy.default_tier not in self.tiers:
            raise SegrecError(f"SegmentedRecommender: the default tier {policy.default_tier!r} is not a "
                              f"member; tiers: {sorted(self.tiers)}")

    def candidates(self) -> list[str]:
        """The member tiers routing chooses among (blends aside), in the order they are fitted."""
        allowed = self.config.candidates
        members = self.tiers_ if self.tiers_ is not None else self.tiers
        members = {n: m for n, m in members.items() if not _is_blend(m)}
        names = [n for n in (members if allowed is None else allowed) if n in members]
        return fit_order({n: members[n] for n in names})

    def _route(self, train: Interactions, valid: Interactions | None, segments: np.ndarray,
               context: FitContext) -> dict[int, str]:
        # every candidate (and blends of two) as fitted on the inner train part only, scored per
        # user on the held-out part (valid, or the last 10% of each user's train), then chosen
        # per segment with an honest (cross-fitted) estimate of what the choice is worth
        policy = self.config.policy
        outcome = route_on_validation(
            self.tiers_, self.candidates(), inner_sets(train, valid), segments, context,
            chain=self.config.fallback, large=self.config.large_tiers, min_gain=policy.min_gain,
            gate_z=policy.gate_z,
            blends=self.config.blend, seed=int(getattr(self.segmenter, "random_state", 0) or 0))
        for model in self.tiers_.values():  # the inner versions served their purpose: free them
            model.release_inner()
        self.tiers_.update(outcome.blends)
        self.validation_ = outcome.table
        self.selection_ = outcome.summary()
        self.default_tier_ = outcome.default_tier
        self.fit_timings_.update(outcome.timings)
        if policy.kind == "accuracy":
            return outcome.routing
        return policy.choose(self.validation_, segments, train.user_counts(), set(self.tiers_))

    def reroute(self, routing: dict[int, str] | None = None, **changes: Any) -> SegmentedRecommender:
        """A copy routed by another policy, sharing this model's fitted tiers (no refit).

        Args:
            routing: A fixed segment -> tier map to use as is (e.g. every segment on one
                tier, for a cost-accuracy frontier); tiers must be fitted.
            **changes: :class:`RoutingPolicy` changes, e.g. ``policy="budget",
                budget_fraction=0.3`` (``policy`` names the policy's ``kind``).

        Returns:
            A fitted SegmentedRecommender with the new policy and routing.
        """
        self._check_fitted_tiers()
        if "policy" in changes:
            changes["kind"] = changes.pop("policy")
        policy = RoutingPolicy.model_validate({**self.config.policy.model_dump(), **changes})
        other = copy.copy(self)
        other.config = self.config.model_copy(update={"policy": policy})
        if routing is not None:
            unknown = sorted(set(routing.values()) - set(self.tiers_))
            if unknown:
                raise ConfigError(f"routing names tier(s) {unknown} that are not fitted; "
                                  f"have {sorted(self.tiers_)}")
            other.routing_ = {int(k): str(v) for k, v in routing.items()}
            other.new_user_tier_ = None
            return other
        table = self.validation_
        if table is not None:  # a loaded composite keeps only the tiers it can serve with
            table = table[table["tier"].isin(list(self.tiers_))]
        if table is not None and "flops" not in table and policy.kind == "budget":
            raise SegrecError("this model's validation table has no costs; refit it to use the budget policy")
        lengths = np.diff(self.seen_.indptr)
        other.routing_ = {int(k): str(v) for k, v in
                          policy.choose(table, self.segments_, lengths, set(self.tiers_)).items()}
        other.new_user_tier_ = policy.new_user_tier
        return other

    def _check_fitted_tiers(self) -> None:
        if self.tiers_ is None:
            check_is_fitted(self)
            raise SegrecError("this SegmentedRecommender has no fitted tiers")

    def sub_models(self) -> list[Recommender]:
        """The fitted tiers."""
        return list(self.tiers_.values())

    # --------------------------------------------------------------- routing
    @property
    def default_tier(self) -> str:
        """The tier of users of no routed segment: the best single system on inner validation."""
        return getattr(self, "default_tier_", None) or self.config.policy.default_tier

    def tier_of(self, users: np.ndarray) -> np.ndarray:
        """The routed tier name per dense user."""
        default = self.default_tier
        seg = self.segments_[np.asarray(users, dtype=np.int64)]
        return np.array([self.routing_.get(int(s), default) for s in seg], dtype=object)

    def tier_of_segment(self, segment: int) -> str:
        """The tier routed to ``segment``."""
        return self.routing_.get(int(segment), self.default_tier)

    def new_user_tier(self, segment: int) -> str:
        """Tier that serves a brand-new user placed in ``segment``."""
        if self.new_user_tier_ and self.new_user_tier_ in self.tiers_:
            return self.new_user_tier_
        return self.tier_of_segment(segment)

    def chain(self) -> FallbackChain:
        """The fallback chain: the best single system, then the configured tiers (absent ones skipped)."""
        order = dict.fromkeys((self.default_tier, *self.config.fallback))
        return FallbackChain(tuple(t for t in order if t in self.tiers_))

    # --------------------------------------------------------------- scoring
    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.score_served(users)[0]

    def score_served(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores for dense users and the tier that actually produced each row.

        Returns:
            ``(scores (n, n_items) float32, served tier (n,) object)``; a user nothing
            can score keeps a NaN row and the served tier ``""``.
        """
        users = np.asarray(users, dtype=np.int64)

        def score(tier: str, rows: np.ndarray) -> np.ndarray | None:
            model = self.tiers_.get(tier)
            return None if model is None else model.score_dense(users[rows])

        return self.chain().fill(self.tier_of(users), len(self.item_vocab_), score)

    def score_one_served(self, user: int) -> tuple[np.ndarray, str]:
        """One known user's scores through each tier's single-user path, and the serving tier.

        A NaN row and ``""`` when no tier can score the user.
        """
        def score(tier: str) -> np.ndarray | None:
            model = self.tiers_.get(tier)
            return None if model is None else model.score_one(user)

        row, tier = self.chain().serve_one(self.tier_of_segment(int(self.segments_[user])), score)
        if row is None:
            return np.full(len(self.item_vocab_), np.nan, dtype=np.float32), ""
        return row, tier

    def score_one(self, user: int) -> np.ndarray:
        """One known user's scores (see :meth:`score_one_served`)."""
        check_is_fitted(self)
        return self.score_one_served(user)[0]

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True) -> Recommendations:
        """Top-k per user, with the segment and the tier that served each user (one scoring pass)."""
        check_is_fitted(self)
        if int(k) < 1:
            raise SegrecError(f"k must be >= 1; got {k}")
        from ..evaluate.ranking import rank_in_chunks

        user_ids = np.atleast_1d(np.asarray(user_ids, dtype=object)).astype(str)
        users = self._user_index(user_ids)
        served: list[np.ndarray] = []  # rank_in_chunks scores the users in order, chunk by chunk

        def score(chunk: np.ndarray) -> np.ndarray:
            scores, tiers = self.score_served(chunk)
            served.append(tiers)
            return scores

        items, scores = rank_in_chunks(score, users, int(k), seen=self.seen_ if exclude_seen else None)
        tier = np.concatenate(served) if served else np.empty(0, dtype=object)
        return self._package(user_ids, items, scores, int(k), segment=self.segments_[users], tier=tier)
