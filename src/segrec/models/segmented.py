"""SegmentedRecommender: a segmentation + model tiers + a router + a fallback chain.

Every user belongs to a segment; each segment is routed to one *tier* (e.g. the
segment-adapted Transformer, the global Transformer, a per-segment local EASE,
popularity). Tiers are ordinary Recommenders that can score any user; a tier
that cannot score a user returns NaN, and the fallback chain (``global`` then
``popularity`` by default) takes over, so no user goes without a list.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from ..errors import ConfigError, SegrecError
from ..evaluate.metrics import ndcg
from ..evaluate.ranking import hit_matrix, rank_in_chunks
from ..io import read_json, read_table, write_table
from ..route.policy import (
    RulesConfig,
    choose_accuracy,
    choose_budget,
    choose_rules,
    routing_summary,
    segment_activity,
)
from ..types import Interactions
from .base import ModelConfig, Recommender
from .tuning import inner_sets

__all__ = ["SegmentedRecommender", "score_histories", "tier_costs", "validation_table"]

log = logging.getLogger(__name__)


class SegmentedConfig(ModelConfig):
    """Settings of :class:`SegmentedRecommender`."""

    fallback: tuple[str, ...] = ("global", "popularity")
    """Tiers tried, in order, for users their routed tier cannot score."""
    min_gain: float = Field(0.0, ge=0.0)
    """A tier must beat the default tier by more than this validation NDCG@10 to be routed to."""
    default_tier: str = "global"
    """Tier kept for a segment when no other tier beats it (and for unsegmented users)."""
    policy: Literal["accuracy", "budget", "rules"] = "accuracy"
    """How segments are routed (issue 5): the best tier per segment on validation NDCG@10;
    the best routing within a FLOPs budget; or value-tier rules."""
    budget_flops: float | None = Field(None, ge=0)
    """``budget`` policy: most mean FLOPs per request (absolute)."""
    budget_fraction: float | None = Field(None, ge=0)
    """``budget`` policy: budget as a share of the mean FLOPs of the tier with the best overall
    validation NDCG@10 (e.g. 0.3); used when ``budget_flops`` is None."""
    rules: RulesConfig = RulesConfig()
    """``rules`` policy: activity level -> tier, per-segment overrides, new-user tier."""


def _fit_params(model: Recommender, segments: np.ndarray, fitted: dict[str, Recommender]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if getattr(model, "segment_aware", False):
        params["segments"] = segments
    if getattr(model, "needs_global", False) and "global" in fitted:
        params["global_model"] = fitted["global"]
    return params


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
        subs = getattr(model, "models_", None)
        for s in np.unique(seg):
            h = lengths[users[seg == s]]
            if isinstance(subs, dict):  # per-segment models: the segment's own model serves it
                flops = float(np.mean(subs[int(s)].flops_per_request(h))) if int(s) in subs else np.nan
            else:
                flops = float(np.mean(model.flops_per_request(h)))
            rows.append({"segment": int(s), "tier": tier, "flops": flops})
    return pd.DataFrame(rows, columns=["segment", "tier", "flops"])


def validation_table(
    models: dict[str, Recommender], train: Interactions, valid: Interactions, segments: np.ndarray
) -> pd.DataFrame:
    """Per-segment validation NDCG@10 of each fitted model (fitted on ``train`` only).

    Returns:
        Rows ``segment, tier, users, ndcg@10``; NaN where a tier scores no user of
        the segment (e.g. a segment too small for a local model).
    """
    train_csr, valid_csr = train.to_csr(), valid.to_csr()
    n_valid = np.diff(valid_csr.indptr)
    users = np.flatnonzero(n_valid > 0)
    rows = []
    for tier, model in models.items():
        top, vals = rank_in_chunks(model.score_dense, users, 10, seen=train_csr)
        # a tier that cannot score a user (NaN row) gives an empty list: leave it out
        scores_nan = ~np.isfinite(vals[:, 0])
        per_user = ndcg(hit_matrix(top, valid_csr, users), n_valid[users], 10)
        seg = segments[users]
        for s in np.unique(seg):
            m = (seg == s) & ~scores_nan
            rows.append({"segment": int(s), "tier": tier, "users": int((seg == s).sum()),
                         "ndcg@10": float(per_user[m].mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


class SegmentedRecommender(Recommender):
    """Routes each segment to the model tier that pays off on validation.

    Args:
        tiers: tier name -> unfitted Recommender. Names used by the defaults:
            ``global`` (the large model), ``popularity`` (last resort).
        config: :class:`SegmentedConfig` (or keyword overrides).
        routing: Optional fixed segment -> tier map; if omitted it is chosen by
            validation NDCG@10 per segment (the ``accuracy`` policy).

    Attributes:
        segments_: int array (n_users,), segment of each dense user (-1 = none).
        routing_: dict segment -> tier.
        tiers_: dict tier -> fitted Recommender.
        validation_: per-segment validation table behind the routing (or None).
    """

    Config = SegmentedConfig
    name = "segmented"
    segment_aware = True

    def __init__(self, tiers: dict[str, Recommender] | None = None, config: SegmentedConfig | None = None,
                 *, routing: dict[int, str] | None = None, **overrides: Any):
        if isinstance(tiers, ModelConfig):  # `type(m)(m.config)` (clone / load) passes the config first
            tiers, config = None, tiers
        super().__init__(config, **overrides)
        self.tiers = dict(tiers or {})
        self.routing = routing

    def with_params(self, **changes: Any) -> SegmentedRecommender:
        """An unfitted copy with config changes; tiers are copied unfitted."""
        cfg = self.Config.model_validate({**self.config.model_dump(), **changes})
        return SegmentedRecommender({k: m.with_params() for k, m in self.tiers.items()}, cfg,
                                    routing=self.routing)

    def _fit(self, train: Interactions, valid: Interactions | None, *, segments=None,
             prefitted: dict[str, Recommender] | None = None, **_: Any) -> None:
        if segments is None:
            raise SegrecError("SegmentedRecommender.fit needs segments= (one label per dense user)")
        segments = np.asarray(segments, dtype=np.int64)
        if segments.shape != (train.n_users,):
            raise SegrecError(f"segments must have one label per user ({train.n_users}); "
                              f"got {segments.shape}")
        for needed in (self.config.default_tier, *self.config.fallback):
            if needed not in self.tiers and needed not in (prefitted or {}):
                raise SegrecError(f"SegmentedRecommender: tier {needed!r} is required by the config "
                                  f"but not given; tiers: {sorted(self.tiers)}")
        self.segments_ = segments
        self.validation_ = None
        routing = self.routing
        if routing is None:
            # Stage 1: every tier fitted on the inner train part only and scored per
            # segment on the held-out part (valid, or the last 10% of each user's train).
            start = time.perf_counter()
            inner_train, inner_valid = inner_sets(train, valid)
            inner_print = inner_train.fingerprint()
            stage: dict[str, Recommender] = {}
            for name, proto in self._fit_order():
                pre = (prefitted or {}).get(name)
                # A prefitted tier may have kept its version fitted on this very inner train
                # part (also with no valid set: both carve the same last 10% per user):
                # reuse it rather than training it again (issue 12: no work done twice).
                kept = pre.inner_model() if pre is not None else None
                if kept is not None and kept.fitted_on_ != inner_print:
                    kept = None
                kept_segments = getattr(kept, "segments_", None)
                if kept_segments is not None and not np.array_equal(kept_segments, segments):
                    kept = None  # fitted per other segments: its θ_k would be misassigned
                if kept is not None:
                    stage[name] = kept
                    continue
                m = proto.with_params()
                stage[name] = m.fit(inner_train, **_fit_params(m, segments, stage))
            table = validation_table(stage, inner_train, inner_valid, segments)
            users = np.flatnonzero(np.diff(inner_valid.to_csr().indptr) > 0)
            costs = tier_costs(stage, segments, inner_train.user_counts().astype(np.float64), users)
            self.validation_ = table.merge(costs, on=["segment", "tier"], how="left")
            routing = self._choose(self.validation_, segments, inner_train.user_counts(), set(stage))
            self.fit_timings_["routing_s"] = time.perf_counter() - start
        self.routing_ = {int(k): str(v) for k, v in routing.items()}
        self.new_user_tier_ = self.config.rules.new_users if self.config.policy == "rules" else None
        # Stage 2: the final tiers, fitted on train with valid (-> train ∪ valid).
        start = time.perf_counter()
        self.tiers_: dict[str, Recommender] = dict(prefitted or {})
        for name, proto in self._fit_order():
            if name in self.tiers_:
                continue
            m = proto.with_params()
            self.tiers_[name] = m.fit(train, valid=valid, **_fit_params(m, segments, self.tiers_))
        self.fit_timings_["final_tiers_s"] = time.perf_counter() - start

    def _fit_order(self) -> list[tuple[str, Recommender]]:
        """Tiers in fit order: those that build on the global model come after it."""
        return sorted(self.tiers.items(), key=lambda kv: bool(getattr(kv[1], "needs_global", False)))

    # -------------------------------------------------------------- routing
    def _choose(self, table: pd.DataFrame | None, segments: np.ndarray, lengths: np.ndarray,
                available: set[str]) -> dict[int, str]:
        """Routing by the configured policy from the validation table (with costs)."""
        c = self.config
        if c.policy == "rules":
            return choose_rules(segment_activity(segments, np.asarray(lengths, np.float64)), c.rules,
                                available=available, default=c.default_tier)
        if table is None:
            raise SegrecError(f"the {c.policy!r} policy needs the validation table; this model has none "
                              "(fitted with a fixed routing=)")
        if c.policy == "accuracy":
            return choose_accuracy(table, min_gain=c.min_gain, default=c.default_tier)
        return choose_budget(table, self.budget_from(table), default=c.default_tier)

    def budget_from(self, table: pd.DataFrame) -> float:
        """The ``budget`` policy's FLOPs budget: absolute, or a share of the most accurate tier's cost."""
        c = self.config
        if c.budget_flops is not None:
            return float(c.budget_flops)
        if c.budget_fraction is None:
            raise ConfigError("the 'budget' routing policy needs budget_flops or budget_fraction",
                              key="budget_flops")
        return float(c.budget_fraction) * self.best_tier_cost(table)[1]

    @staticmethod
    def best_tier_cost(table: pd.DataFrame) -> tuple[str, float]:
        """The single tier with the best user-weighted validation NDCG@10, and its mean FLOPs."""
        best, best_score, best_flops = "", -np.inf, np.nan
        for tier in table["tier"].unique():
            rows = table[table["tier"] == tier]
            summary = routing_summary(table, {int(s): tier for s in rows["segment"]})
            if summary["ndcg@10"] > best_score:
                best, best_score, best_flops = str(tier), summary["ndcg@10"], summary.get("flops", np.nan)
        return best, float(best_flops)

    def reroute(self, routing: dict[int, str] | None = None, **changes: Any) -> SegmentedRecommender:
        """A copy routed by another policy, sharing this model's fitted tiers (no refit).

        Args:
            routing: A fixed segment -> tier map to use as is (e.g. every segment on one
                tier, for a cost-accuracy frontier); tiers must be fitted.
            **changes: Config changes, e.g. ``policy="budget", budget_fraction=0.3``.

        Returns:
            A fitted SegmentedRecommender with the new config and routing.
        """
        self._check_fitted_tiers()
        cfg = self.Config.model_validate({**self.config.model_dump(), **changes})
        other = copy.copy(self)
        other.config = cfg
        if routing is not None:
            unknown = sorted(set(routing.values()) - set(self.tiers_))
            if unknown:
                raise ConfigError(f"routing names tier(s) {unknown} that are not fitted; "
                                  f"have {sorted(self.tiers_)}")
            other.routing_ = {int(k): str(v) for k, v in routing.items()}
            other.new_user_tier_ = None
            return other
        table = self.validation_
        if table is not None and "flops" not in table and cfg.policy == "budget":
            raise SegrecError("this model's validation table has no costs; refit it to use the budget policy")
        lengths = np.diff(self.seen_.indptr)
        other.routing_ = {int(k): str(v) for k, v in
                          other._choose(table, self.segments_, lengths, set(self.tiers_)).items()}
        other.new_user_tier_ = cfg.rules.new_users if cfg.policy == "rules" else None
        return other

    def _check_fitted_tiers(self) -> None:
        if getattr(self, "tiers_", None) is None:
            from .base import check_is_fitted

            check_is_fitted(self)

    def flops_per_user(self, users: np.ndarray) -> np.ndarray:
        """Analytic FLOPs of each dense user's request under the current routing."""
        users = np.asarray(users, dtype=np.int64)
        lengths = np.diff(self.seen_.indptr).astype(np.float64)[users]
        seg = self.segments_[users]
        tiers = self.tier_of(users)
        out = np.zeros(len(users), np.float64)
        # the tier that will actually serve each user: routed, else the first fallback that can
        chains = {t: [t, *self.config.fallback] for t in set(tiers.tolist())}
        serving = np.array([next((c for c in chains[t] if self._can_serve(c, s)), "")
                            for t, s in zip(tiers, seg, strict=True)], dtype=object)
        for tier in dict.fromkeys(serving.tolist()):
            rows = np.flatnonzero(serving == tier)
            model = self.tiers_.get(tier)
            if model is None:
                out[rows] = np.nan
                continue
            subs = getattr(model, "models_", None)
            if isinstance(subs, dict):
                for s in np.unique(seg[rows]):
                    r = rows[seg[rows] == s]
                    out[r] = subs[int(s)].flops_per_request(lengths[r])
            else:
                out[rows] = model.flops_per_request(lengths[rows])
        return out

    def _can_serve(self, tier: str, segment: int) -> bool:
        """Whether ``tier`` has a model for users of ``segment`` (per-segment tiers may not)."""
        model = self.tiers_.get(tier)
        subs = getattr(model, "models_", None)
        return model is not None and (not isinstance(subs, dict) or int(segment) in subs)

    def flops_per_request(self, n_history=None):
        """Mean analytic FLOPs per request under the current routing (over fit users).

        Args:
            n_history: Ignored unless given: then the routed tiers' FLOPs at that
                history length, weighted by how many users each tier serves.
        """
        users = np.flatnonzero(np.diff(self.seen_.indptr) > 0)
        if n_history is None:
            return float(np.nanmean(self.flops_per_user(users)))
        tiers = self.tier_of(users)
        names, counts = np.unique(tiers, return_counts=True)
        h = np.asarray(n_history, np.float64)
        return sum(c / counts.sum() * np.asarray(self.tiers_[t].flops_per_request(h))
                   for t, c in zip(names, counts, strict=True) if t in self.tiers_)

    def tier_of(self, users: np.ndarray) -> np.ndarray:
        """The routed tier name per dense user."""
        seg = self.segments_[users]
        return np.array([self.routing_.get(int(s), self.config.default_tier) for s in seg], dtype=object)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.score_served(users)[0]

    def score_served(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores for dense users and the tier that actually produced each row.

        Each user's routed tier is tried first, then the fallback chain, for
        users a tier cannot score (NaN row). A user nothing can score keeps a NaN
        row and the served tier ``""``.

        Returns:
            ``(scores (n, n_items) float32, served tier (n,) object)``.
        """
        users = np.asarray(users, dtype=np.int64)
        out = np.full((len(users), len(self.item_vocab_)), np.nan, dtype=np.float32)
        served = np.full(len(users), "", dtype=object)
        todo = np.ones(len(users), dtype=bool)
        tiers = self.tier_of(users)

        def fill(rows: np.ndarray, tier: str) -> None:
            if not len(rows) or tier not in self.tiers_:
                return
            scores = np.asarray(self.tiers_[tier].score_dense(users[rows]), dtype=np.float32)
            ok = np.isfinite(scores).any(1)
            out[rows[ok]] = scores[ok]
            served[rows[ok]] = tier
            todo[rows[ok]] = False

        for tier in dict.fromkeys(tiers.tolist()):  # each user's routed tier first
            fill(np.flatnonzero(tiers == tier), tier)
        for tier in self.config.fallback:  # then the chain, for whoever is left
            fill(np.flatnonzero(todo), tier)
        return out, served

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True):
        """Top-k per user, with the segment and the tier that served each user."""
        recs = super().recommend(user_ids, k, exclude_seen=exclude_seen)
        users = self._user_index(recs.user_ids)
        return type(recs)(recs.user_ids, recs.item_ids, recs.scores, self.segments_[users],
                          self.score_served(users)[1] if len(users) <= 1024 else self.tier_of(users))

    # ------------------------------------------------------------ new users
    def new_user_tier(self, segment: int) -> str:
        """Tier that serves a brand-new user placed in ``segment``."""
        if getattr(self, "new_user_tier_", None) and self.new_user_tier_ in self.tiers_:
            return self.new_user_tier_
        return self.routing_.get(int(segment), self.config.default_tier)

    def score_new(self, histories: list[np.ndarray], segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores for brand-new users from a few items, through their segment's tier.

        Args:
            histories: Dense item indices per user, oldest first (may be empty).
            segments: Assigned segment per user.

        Returns:
            ``(scores (n, n_items), served tier (n,))``: the routed tier where it can
            score the user (``score_histories``), else the fallback chain; a user
            nothing can score from items keeps a NaN row and tier ``""``.
        """
        segments = np.asarray(segments, dtype=np.int64)
        n = len(histories)
        out = np.full((n, len(self.item_vocab_)), np.nan, dtype=np.float32)
        served = np.full(n, "", dtype=object)
        todo = np.ones(n, dtype=bool)
        routed = np.array([self.new_user_tier(s) for s in segments], dtype=object)

        def fill(rows: np.ndarray, tier: str) -> None:
            model = self.tiers_.get(tier)
            if not len(rows) or model is None:
                return
            scores = score_histories(model, [histories[r] for r in rows], segments[rows])
            if scores is None:
                return
            ok = np.isfinite(scores).any(1)
            out[rows[ok]] = scores[ok]
            served[rows[ok]] = tier
            todo[rows[ok]] = False

        for tier in dict.fromkeys(routed.tolist()):
            fill(np.flatnonzero(routed == tier), tier)
        for tier in self.config.fallback:
            fill(np.flatnonzero(todo), tier)
        return out, served

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {"segments": self.segments_}

    def _set_state(self, tensors, meta) -> None:
        self.segments_ = tensors["segments"]
        self.routing_ = {int(k): v for k, v in meta["routing"].items()}
        self.new_user_tier_ = meta.get("new_user_tier")

    def _meta(self) -> dict[str, Any]:
        return {"routing": {str(k): v for k, v in self.routing_.items()}, "tiers": sorted(self.tiers_),
                "new_user_tier": getattr(self, "new_user_tier_", None)}

    def _save_extra(self, directory: Path) -> None:
        for name, model in self.tiers_.items():
            sub = directory / "tiers" / name
            sub.mkdir(parents=True)
            model.save_into(sub)
        if self.validation_ is not None:
            write_table(directory / "validation.parquet", self.validation_)

    def _load_extra(self, directory: Path) -> None:
        meta = read_json(directory / "model.json")["meta"]
        self.tiers_ = {name: Recommender.load(directory / "tiers" / name) for name in meta["tiers"]}
        self.tiers = {}
        self.routing = None
        val = directory / "validation.parquet"
        self.validation_ = read_table(val) if val.exists() else None


def _takes_sequences(model: Recommender) -> bool:
    """Whether ``model.score_histories`` takes item-index sequences, not a binary CSR.

    Sequential models (Transformer) take sequences; item-item, MF, VAE and
    popularity take CSR rows. A model may say so with ``history_input``.
    """
    kind = getattr(model, "history_input", None)
    if kind is not None:
        return kind == "sequence"
    params = list(inspect.signature(model.score_histories).parameters)
    return bool(params) and params[0] in ("histories", "sequences")


def score_histories(model: Recommender, histories: list[np.ndarray],
                    segments: np.ndarray | None = None) -> np.ndarray | None:
    """Score new users given only their items, whatever input ``model.score_histories`` takes.

    Args:
        model: A fitted tier model.
        histories: Dense item indices per user, oldest first.
        segments: Segment per user: per-segment models use their segment's model,
            segment-adapted ones receive it.

    Returns:
        float32 (n, n_items) with NaN rows for users the model cannot score from
        items (empty history, or no model for their segment); None when the
        model cannot score new users at all.
    """
    n, n_items = len(histories), model.n_items
    subs = getattr(model, "models_", None)
    if isinstance(subs, dict):  # per-segment models: each user's segment model
        out = np.full((n, n_items), np.nan, dtype=np.float32)
        segs = np.full(n, -1, np.int64) if segments is None else np.asarray(segments, np.int64)
        for s in np.unique(segs):
            sub = subs.get(int(s))
            rows = np.flatnonzero(segs == s)
            scored = None if sub is None else score_histories(sub, [histories[r] for r in rows], segs[rows])
            if scored is not None:
                out[rows] = scored
        return out
    if not hasattr(model, "score_histories"):
        return None
    empty = np.array([len(h) == 0 for h in histories])
    if _takes_sequences(model):
        args: list[Any] = [[np.asarray(h, np.int64).tolist() for h in histories]]
    else:
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        items = np.concatenate([np.asarray(h, np.int64) for h in histories]) if lengths.sum() else \
            np.empty(0, np.int64)
        rows = sp.csr_matrix((np.ones(len(items), np.float32), items, np.r_[0, np.cumsum(lengths)]),
                             shape=(n, n_items))
        rows.sum_duplicates()
        rows.data[:] = 1.0
        args = [rows]
    kwargs = {}
    if segments is not None and "segments" in inspect.signature(model.score_histories).parameters:
        kwargs["segments"] = np.asarray(segments, np.int64)
    scores = np.array(model.score_histories(*args, **kwargs), dtype=np.float32, copy=True)
    if getattr(model, "name", "") != "popularity":  # popularity needs no history; the others do
        scores[empty] = np.nan
    return scores
