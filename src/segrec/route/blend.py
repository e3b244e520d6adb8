"""Blend tiers: a per-segment convex combination of two tiers' standardised scores.

``score(u) = α_s · z(large(u)) + (1 − α_s) · z(small(u))``, where ``z`` standardises
one user's scores over the items that user can be recommended (their fit items
excluded, so the items that are masked anyway do not set the scale) and ``α_s`` is
the weight of the large tier in the user's segment ``s``. Per-user standardising
puts two models with unrelated score scales (a Transformer's logits, EASE's
regression outputs) on one scale without fitting anything, and both endpoints
(α = 0, α = 1) rank exactly as the two tiers alone do.

A :class:`BlendRecommender` is a Recommender like any other (``score``,
``score_one``, ``score_histories`` for new users, FLOPs, save/load), so the
composite's fallback chain, cost accounting, report and request path take it
unchanged. Inside a composite it is *bound*: its parts are the composite's own
tiers (by name), and the composite saves it as its parts' names and weights
(:meth:`BlendRecommender.spec`) and rebuilds it on load, so no model is stored
twice. On its own (``BlendRecommender(large=..., small=...)``) it fits and saves
both parts itself.

Where one part cannot score a user (a NaN row, e.g. a per-segment model without a
model for the user's segment) the blend serves the other part alone; where
neither can, the row stays NaN and the fallback chain takes over.

Example:
    >>> from segrec.models import EASERecommender, ItemKNNRecommender
    >>> blend = BlendRecommender(large=EASERecommender(reg=10.0), small=ItemKNNRecommender(k=10), alpha=0.7)
    >>> blend.fit(split.train)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..errors import SegrecError
from ..models.base import ModelConfig, Recommender, check_is_fitted
from ..models.context import FitContext
from ..models.tags import RecommenderTags, get_tags
from ..types import Interactions

__all__ = ["BlendConfig", "BlendRecommender", "blend_flops", "combine", "standardise"]

#: FLOPs per catalogue item of standardising two score rows and mixing them (mean, variance,
#: scale and shift of each row, one multiply-add to mix)
_MIX_FLOPS_PER_ITEM = 7.0


def standardise(scores: np.ndarray, seen_rows: np.ndarray, seen_cols: np.ndarray) -> np.ndarray:
    """Per-row z-scores whose mean and spread come from each row's recommendable items only.

    Args:
        scores: float (n, n_items) scores; NaN / ±inf entries are left out of the
            statistics and kept as they are.
        seen_rows, seen_cols: Coordinates of the items each row's user has already
            seen (left out of the statistics; they are masked when ranking anyway).

    Returns:
        float32 (n, n_items): ``(s − mean) / std`` per row; a row with no finite
        recommendable score is all NaN; a constant row becomes 0 (no information).
    """
    s = np.asarray(scores, dtype=np.float32)
    finite = np.isfinite(s)
    x = np.where(finite, s, np.float32(0.0))
    n = s.shape[0]
    count = finite.sum(1).astype(np.float64)
    total = x.sum(1, dtype=np.float64)
    square = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    if len(seen_rows):
        vals = x[seen_rows, seen_cols].astype(np.float64)
        count -= np.bincount(seen_rows, weights=finite[seen_rows, seen_cols], minlength=n)
        total -= np.bincount(seen_rows, weights=vals, minlength=n)
        square -= np.bincount(seen_rows, weights=vals * vals, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(square / count - mean * mean, 0.0))
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    out = ((s - mean[:, None].astype(np.float32)) / std[:, None].astype(np.float32)).astype(np.float32)
    out[count <= 0] = np.nan
    return out


def combine(z_large: np.ndarray, z_small: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """``α · z_large + (1 − α) · z_small`` per row; a row one side cannot score is the other side alone.

    Args:
        z_large, z_small: float32 (n, n_items) standardised scores (NaN rows: cannot score).
        alpha: Weight of the large side, scalar or per row (n,).
    """
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float32), (z_large.shape[0],))[:, None]
    out = a * z_large + (np.float32(1.0) - a) * z_small
    large_ok = np.isfinite(z_large).any(1)
    small_ok = np.isfinite(z_small).any(1)
    out[large_ok & ~small_ok] = z_large[large_ok & ~small_ok]
    out[small_ok & ~large_ok] = z_small[small_ok & ~large_ok]
    return out


def blend_flops(large: np.ndarray, small: np.ndarray, n_items: int) -> np.ndarray:
    """FLOPs of a blended request from its parts' (each includes one ranking pass; one is kept).

    NaN on one side (no model there) means that side is not run: the other side's cost.
    """
    large, small = np.asarray(large, np.float64), np.asarray(small, np.float64)
    both = large + small - n_items + _MIX_FLOPS_PER_ITEM * n_items
    return np.where(np.isnan(large), small, np.where(np.isnan(small), large, both))


def _csr_coords(seen: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = seen[users]
    return np.repeat(np.arange(len(users)), np.diff(sub.indptr)), sub.indices


class BlendConfig(ModelConfig):
    """Settings of :class:`BlendRecommender` (its parts are components, not settings)."""

    alpha: float = Field(0.5, ge=0.0, le=1.0)
    """Weight of the large part when used on its own (a composite sets a fitted α per segment)."""


class BlendRecommender(Recommender):
    """A convex combination of two tiers' per-user standardised scores, with α per segment.

    Args:
        large: The large (neural) part, unfitted (standalone use); None when bound.
        small: The small part, unfitted; None when bound.
        config: A :class:`BlendConfig`, or keyword overrides (``alpha``).

    Attributes:
        large_, small_: The fitted parts.
        parts_: ``(large tier, small tier)`` names inside the composite when bound, else None.
        alpha_: α for users of segments without their own (unsegmented, new users placed nowhere).
        alphas_: dict segment -> α.
        segments_: int (n_users,), segment of each dense user (all -1 standalone).
    """

    Config = BlendConfig
    name = "blend"
    config: BlendConfig

    def __init__(self, large: Recommender | None = None, small: Recommender | None = None,
                 config: BlendConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.large, self.small = large, small
        self.large_: Recommender | None = None
        self.small_: Recommender | None = None
        self.parts_: tuple[str, str] | None = None
        self.alpha_: float | None = None
        self.alphas_: dict[int, float] | None = None
        self.segments_: np.ndarray | None = None

    def __recommender_tags__(self) -> RecommenderTags:
        """New users arrive as sequences (each part converts them); NaN only where neither part scores."""
        parts = [p for p in (self.large_ or self.large, self.small_ or self.small) if p is not None]
        needs = all(get_tags(p).needs_history for p in parts) if parts else True
        return replace(super().__recommender_tags__(), history_input="sequence", needs_history=needs)

    def with_params(self, **changes: Any) -> BlendRecommender:
        """An unfitted copy (its parts copied unfitted) with config changes."""
        cfg = self.Config.model_validate({**self.config.model_dump(), **changes})
        large = (self.large or self.large_)
        small = (self.small or self.small_)
        return BlendRecommender(None if large is None else large.with_params(),
                                None if small is None else small.with_params(), config=cfg)

    @classmethod
    def bound(cls, parts: tuple[str, str], large: Recommender, small: Recommender, *, alpha: float,
              alphas: dict[int, float], segments: np.ndarray) -> BlendRecommender:
        """A fitted blend of two fitted tiers of a composite, sharing (not copying) them.

        Args:
            parts: The two tiers' names in the composite (saved; the composite rebinds on load).
            large, small: The fitted tiers, fitted on the same data.
            alpha: α for users of a segment without its own.
            alphas: segment -> α.
            segments: Segment of each dense user of the parts.
        """
        check_is_fitted(large)
        check_is_fitted(small)
        if large.item_vocab_ != small.item_vocab_ or large.user_vocab_ != small.user_vocab_:
            raise SegrecError(f"blend {parts}: the two tiers were fitted on different data")
        out = cls(alpha=float(alpha))
        out.large_, out.small_, out.parts_ = large, small, (str(parts[0]), str(parts[1]))
        out.user_vocab_, out.item_vocab_, out.seen_ = large.user_vocab_, large.item_vocab_, large.seen_
        out.fitted_on_ = large.fitted_on_
        out.fit_timings_ = {}
        out.alpha_ = float(alpha)
        out.alphas_ = {int(k): float(v) for k, v in alphas.items()}
        out.segments_ = np.asarray(segments, dtype=np.int64)
        return out

    def spec(self) -> dict[str, Any]:
        """A bound blend as JSON (its parts' names and weights): what its composite saves of it."""
        return {"parts": list(self.parts_), "alpha": self.alpha_,
                "alphas": {str(k): v for k, v in self.alphas_.items()}}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], tiers: dict[str, Recommender],
                  segments: np.ndarray) -> BlendRecommender:
        """Rebuild a bound blend from :meth:`spec` over its composite's loaded tiers.

        Raises:
            SegrecError: The spec names a tier the artifact does not hold, or a bad α.
        """
        if not isinstance(spec, dict) or not isinstance(spec.get("parts"), list):
            raise SegrecError(f"a blend's spec is {type(spec).__name__}, not its parts and weights; "
                              "the artifact is corrupt")
        parts = tuple(str(p) for p in spec["parts"])
        missing = [p for p in parts if p not in tiers]
        if len(parts) != 2 or missing:
            raise SegrecError(f"blend of {list(parts)}: tier(s) {missing or parts} are not in the artifact; "
                              "it is incomplete")
        try:
            alphas = {int(k): float(v) for k, v in (spec.get("alphas") or {}).items()}
            alpha = float(spec.get("alpha", 0.5))
        except (TypeError, ValueError, AttributeError) as err:
            raise SegrecError(f"blend of {list(parts)}: unreadable α ({err}); "
                              "the artifact is corrupt") from None
        if not all(0.0 <= a <= 1.0 for a in (alpha, *alphas.values())):
            raise SegrecError(f"blend of {list(parts)}: α outside [0, 1]; the artifact is corrupt")
        return cls.bound(parts, tiers[parts[0]], tiers[parts[1]], alpha=alpha, alphas=alphas,
                         segments=segments)

    # ------------------------------------------------------------------ fit
    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        if self.large is None or self.small is None:
            raise SegrecError("BlendRecommender.fit needs both parts (large=..., small=...); inside a "
                              "composite a blend is built from fitted tiers (BlendRecommender.bound)")
        self.large_ = self.large.with_params().fit(train, valid=valid, context=context)
        self.small_ = self.small.with_params().fit(train, valid=valid, context=context)
        self.parts_ = None
        self.alpha_, self.alphas_ = float(self.config.alpha), {}
        n_users = (train if valid is None else train.concat(valid)).n_users
        self.segments_ = (np.full(n_users, -1, np.int64) if context.segments is None
                          else np.asarray(context.segments, np.int64))

    # -------------------------------------------------------------- scoring
    def _parts(self) -> tuple[Recommender, Recommender]:
        if self.large_ is None or self.small_ is None:
            raise SegrecError("this blend is not fitted: call fit(), or build it from fitted tiers "
                              "(BlendRecommender.bound)")
        return self.large_, self.small_

    def alpha_of(self, segments: np.ndarray) -> np.ndarray:
        """α per segment label (the default α where a segment has none)."""
        segments = np.asarray(segments, dtype=np.int64)
        return np.array([self.alphas_.get(int(s), self.alpha_) for s in segments], dtype=np.float32)

    def _score(self, users: np.ndarray) -> np.ndarray:
        large, small = self._parts()
        rows, cols = _csr_coords(self.seen_, users)
        return combine(standardise(large.score_dense(users), rows, cols),
                       standardise(small.score_dense(users), rows, cols),
                       self.alpha_of(self.segments_[users]))

    def score_one(self, user: int) -> np.ndarray:
        """One known user: each part's single-user path, standardised and mixed."""
        check_is_fitted(self)
        large, small = self._parts()
        u = int(user)
        cols = self.seen_.indices[self.seen_.indptr[u]:self.seen_.indptr[u + 1]]
        rows = np.zeros(len(cols), np.int64)
        zl = standardise(large.score_one(u)[None, :], rows, cols)
        zs = standardise(small.score_one(u)[None, :], rows, cols)
        return combine(zl, zs, self.alpha_of(self.segments_[[u]]))[0]

    def _score_histories(self, histories: list[list[int]], segments: np.ndarray | None) -> np.ndarray:
        large, small = self._parts()
        n = len(histories)
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        rows = np.repeat(np.arange(n), lengths)
        cols = (np.concatenate([np.asarray(h, np.int64) for h in histories]) if lengths.sum()
                else np.empty(0, np.int64))

        def part(model: Recommender) -> np.ndarray:
            if get_tags(model).history_input is None:  # no new-user path: the other part alone
                return np.full((n, len(self.item_vocab_)), np.nan, np.float32)
            return standardise(model.score_histories(histories, segments), rows, cols)

        segs = np.full(n, -1, np.int64) if segments is None else np.asarray(segments, np.int64)
        return combine(part(large), part(small), self.alpha_of(segs))

    # ------------------------------------------------------------------ cost
    def flops_per_request(self, n_history=None, *, segments=None):
        """Both parts' FLOPs plus standardising and mixing (see :func:`blend_flops`)."""
        check_is_fitted(self)
        large, small = self._parts()
        if n_history is None:
            lengths = np.diff(self.seen_.indptr).astype(np.float64)
            n_history = np.array(lengths.mean() if len(lengths) else 0.0)
        h = np.asarray(n_history, dtype=np.float64)
        out = blend_flops(large.flops_per_request(h, segments=segments),
                          small.flops_per_request(h, segments=segments), len(self.item_vocab_))
        return float(out) if np.ndim(out) == 0 else out

    def serves_segments(self, segments: np.ndarray) -> np.ndarray:
        """Where either part can score."""
        large, small = self._parts()
        return large.serves_segments(segments) | small.serves_segments(segments)

    def sub_models(self) -> list[Recommender]:
        """The parts when the blend owns them; none when bound (the composite counts its tiers once)."""
        return [] if self.parts_ is not None else [m for m in (self.large_, self.small_) if m is not None]

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {"segments": self.segments_}

    def _set_state(self, tensors, meta) -> None:
        self.segments_ = tensors["segments"].astype(np.int64)
        self.alpha_ = float(meta["alpha"])
        self.alphas_ = {int(k): float(v) for k, v in meta["alphas"].items()}
        self.parts_ = None  # only a standalone blend has an artifact of its own

    def _meta(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "alphas": {str(k): v for k, v in self.alphas_.items()}}

    def _save_extra(self, directory: Path) -> None:
        if self.parts_ is not None:
            raise SegrecError(f"a blend of the tiers {list(self.parts_)} is saved by its composite "
                              "(SegmentedRecommender.save), which holds its parts")
        large, small = self._parts()  # standalone: the blend owns its parts
        for name, model in (("large", large), ("small", small)):
            (directory / name).mkdir()
            model.save_into(directory / name)

    def _load_extra(self, directory: Path) -> None:
        self.large_ = Recommender.load(directory / "large")
        self.small_ = Recommender.load(directory / "small")
        self.large, self.small = self.large_.with_params(), self.small_.with_params()
