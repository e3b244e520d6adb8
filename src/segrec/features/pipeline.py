"""Combine feature blocks into one standardised, weighted user matrix.

Each block's raw columns are (optionally) z-scored per column, then the whole
block is scaled to unit total variance and multiplied by its weight. So a
384-dimensional text profile and a 5-column behaviour block contribute equally
at weight 1, and ``weights={"text": 2}`` really doubles the text block's pull
on a distance-based segmenter. Scaling statistics come from fit users only.

Example:
    >>> from segrec.features import FeaturePipeline, HashingEmbedder
    >>> pipe = FeaturePipeline(blocks=("behavior", "text"), embedder=HashingEmbedder(32))
    >>> feats = pipe.fit_transform(fit_data)  # doctest: +SKIP
    >>> feats.matrix.shape, feats.blocks  # doctest: +SKIP
    ((943, 60), ('behavior', 'text'))
    >>> new = pipe.transform_new(NewUsers(["n1"], histories=[["50", "181"]]))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, SegrecError
from ..types import Interactions, Vocabulary
from .base import FeatureBlock, NewUsers, UserFeatures, check_block_fitted
from .behavior import BehaviorConfig, BehaviorFeatures, behavior_stats
from .collaborative import CollaborativeConfig, CollaborativeFeatures
from .demographics import DemographicsConfig, DemographicsFeatures
from .text import TextEmbedder, TextProfileConfig, TextProfileFeatures

__all__ = ["BLOCKS", "FeaturePipeline", "FeaturesConfig"]

log = logging.getLogger(__name__)

BlockName = Literal["behavior", "demographics", "text", "svd"]

#: block name -> class; one explicit map, no string imports.
BLOCKS: dict[str, type[FeatureBlock]] = {
    "behavior": BehaviorFeatures,
    "demographics": DemographicsFeatures,
    "text": TextProfileFeatures,
    "svd": CollaborativeFeatures,
}


class FeaturesConfig(BaseModel):
    """Settings of :class:`FeaturePipeline` (the ``[features]`` section of a run config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    blocks: tuple[BlockName, ...] = ("behavior", "text")
    """Blocks to build, in column order. Blocks with no columns (no users table,
    no items table) are dropped with a log message."""
    weights: dict[str, float] = Field(default_factory=dict)
    """Block name -> weight (default 1.0); a block's total variance is weight**2."""
    behavior: BehaviorConfig = BehaviorConfig()
    """Behaviour block settings."""
    demographics: DemographicsConfig = DemographicsConfig()
    """Demographics block settings."""
    text: TextProfileConfig = TextProfileConfig()
    """Text-profile block settings."""
    svd: CollaborativeConfig = CollaborativeConfig()
    """Collaborative (SVD) block settings."""


class FeaturePipeline:
    """Fit feature blocks on fit data; build :class:`UserFeatures` for any users.

    Args:
        config: A :class:`FeaturesConfig`, or pass its fields as keywords.
        embedder: Text encoder for the ``text`` block (None = MiniLM, offline).
        cache_dir: Directory for cached item embeddings (None = no cache).

    Attributes:
        blocks_: Fitted blocks that have columns, in order.
        item_vocab_: Item vocabulary of the fit data (maps new users' items).
        reference_time_: Last fit timestamp (recency is measured to it).
    """

    def __init__(
        self,
        config: FeaturesConfig | None = None,
        *,
        embedder: TextEmbedder | None = None,
        cache_dir: str | os.PathLike | None = None,
        **overrides: Any,
    ):
        if config is not None and overrides:
            raise TypeError("FeaturePipeline: pass a config or keyword overrides, not both")
        self.config = (
            FeaturesConfig(**overrides)
            if config is None
            else FeaturesConfig.model_validate(
                config.model_dump() if isinstance(config, BaseModel) else dict(config)
            )
        )
        unknown = set(self.config.weights) - set(self.config.blocks)
        if unknown:
            raise ConfigError(
                f"features.weights names block(s) {sorted(unknown)} that are not in "
                f"features.blocks={list(self.config.blocks)}",
                key="features.weights",
            )
        self.embedder = embedder
        self.cache_dir = cache_dir
        self.fitted_ = False

    def __repr__(self) -> str:
        return f"FeaturePipeline(blocks={self.config.blocks}, weights={self.config.weights})"

    def _make(self, name: str) -> FeatureBlock:
        cfg = getattr(self.config, name)
        if name == "text":
            return TextProfileFeatures(cfg, embedder=self.embedder, cache_dir=self.cache_dir)
        return BLOCKS[name](cfg)

    def fit(self, data: Interactions) -> Self:
        """Fit every block and the scaling on fit data; returns self."""
        if len(data) == 0:
            raise SegrecError("FeaturePipeline.fit: the fit data has no interactions")
        self.fitted_ = False
        active = data.user_counts() > 0
        self.blocks_: list[FeatureBlock] = []
        self.scaling_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in self.config.blocks:
            block = self._make(name).fit(data)
            if not block.columns_:
                log.info("feature block %r has no columns for this data; dropped", name)
                continue
            raw = block.transform(data)[active]
            mean = raw.mean(0)
            if block.standardize_columns:
                std = raw.std(0)
                std = np.where(std > 1e-12, std, 1.0)
            else:
                std = np.ones(raw.shape[1])
            total = float((((raw - mean) / std) ** 2).sum(1).mean())
            weight = float(self.config.weights.get(name, 1.0))
            scale = std * (np.sqrt(total) if total > 1e-12 else 1.0) / max(weight, 1e-12)
            self.scaling_[name] = (mean, scale)
            self.blocks_.append(block)
        if not self.blocks_:
            raise SegrecError(
                f"FeaturePipeline: none of the blocks {list(self.config.blocks)} has columns "
                "for this data (no items/users table?)"
            )
        self.item_vocab_ = data.item_vocab
        self.reference_time_ = float(data.timestamps.max())
        self.fitted_ = True
        log.info(
            "features: %d blocks, %d columns", len(self.blocks_), sum(len(b.columns_) for b in self.blocks_)
        )
        return self

    def fit_transform(self, data: Interactions) -> UserFeatures:
        """``fit(data)`` then ``transform(data)``."""
        return self.fit(data).transform(data)

    def _assemble(self, raws: list[np.ndarray], vocab: Vocabulary, item_rows, stats) -> UserFeatures:
        cols, names, slices, start = [], [], {}, 0
        for block, raw in zip(self.blocks_, raws, strict=True):
            mean, scale = self.scaling_[block.name]
            cols.append((raw - mean) / scale)
            names.extend(f"{block.name}.{c}" for c in block.columns_)
            slices[block.name] = slice(start, start + raw.shape[1])
            start += raw.shape[1]
        matrix = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32)
        return UserFeatures(
            matrix, tuple(b.name for b in self.blocks_), slices, tuple(names), vocab, item_rows, stats
        )

    def transform(self, data: Interactions) -> UserFeatures:
        """Features of every dense user of ``data``'s vocabulary (row i = user i)."""
        check_block_fitted(self)
        raws = [b.transform(data) for b in self.blocks_]
        stats = behavior_stats(data, self.reference_time_)
        return self._assemble(raws, data.user_vocab, data.to_csr(), stats)

    def transform_new(self, new: NewUsers) -> UserFeatures:
        """Features of brand-new users from attributes and/or a few items.

        Args:
            new: The users; items unknown to the fit data are ignored.

        Returns:
            UserFeatures with one row per ``new.user_ids``; blocks that need
            what a user lacks (no items, no attributes) take the fit-population
            mean, i.e. zero after scaling.
        """
        check_block_fitted(self)
        from .base import _dense_histories

        # ids mapped to dense items once, not once per block (a served new user pays for it)
        return self._transform_dense(_dense_histories(new, self.item_vocab_), new.user_ids)

    def transform_new_indexed(self, histories: list[np.ndarray], attributes: pd.DataFrame | None,
                              user_ids) -> UserFeatures:
        """:meth:`transform_new` for histories already given as dense item indices of the fit data.

        The server holds a request's items as dense indices; this skips mapping them
        back to ids and forth again.
        """
        check_block_fitted(self)
        from .base import _DenseNew

        hist = [np.asarray(h, dtype=np.int64) for h in histories]
        return self._transform_dense(_DenseNew(len(hist), attributes, hist), user_ids)

    def _transform_dense(self, dense, user_ids) -> UserFeatures:
        for b in self.blocks_:
            check_block_fitted(b)
        raws = [b._transform(None, dense) for b in self.blocks_]
        lengths = np.array([len(h) for h in dense.histories], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        items = np.concatenate(dense.histories) if lengths.sum() else np.empty(0, np.int64)
        rows = sp.csr_matrix(
            (np.ones(len(items), np.float32), items, indptr), shape=(len(lengths), len(self.item_vocab_))
        )
        rows.sum_duplicates()
        rows.data[:] = 1.0
        stats = pd.DataFrame(
            {
                "n_interactions": lengths,
                "recency_days": np.zeros(len(lengths)),
                "tenure_days": np.zeros(len(lengths)),
                "rating_mean": np.nan,
            }
        )
        return self._assemble(raws, Vocabulary(list(user_ids)), rows, stats)
