"""The :class:`UserFeatures` value and the :class:`FeatureBlock` protocol.

A feature block turns fit data into one group of columns per user (behaviour,
demographics, text profile, collaborative factors). Blocks learn everything
they need (category lists, popularity, SVD factors, item embeddings) in
``fit`` on fit data only, so ``transform`` on any other data, or on brand-new
users described by attributes or a few items, never leaks information back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from ..errors import NotFittedError
from ..types import Interactions, Vocabulary

__all__ = ["BlockConfig", "FeatureBlock", "NewUsers", "UserFeatures", "check_block_fitted"]


class BlockConfig(BaseModel):
    """Base of every feature-block config: frozen, unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, eq=False)
class UserFeatures:
    """One feature row per user, made of named column blocks.

    Attributes:
        matrix: float32 array of shape (n_users, n_features), standardised and
            weighted (what segmenters cluster).
        blocks: Block names in column order.
        block_slices: Block name -> column slice of ``matrix``.
        columns: Column names, ``"<block>.<name>"``.
        user_vocab: External ids of the rows (row ``i`` is dense user ``i``).
        item_rows: Optional binary CSR of shape (n_users, n_items): each user's
            fit-data items (the VAE segmenter reconstructs these).
        stats: Raw per-user statistics (``n_interactions``, ``recency_days``, ...),
            unscaled, for rule-based tiers and profiles.
    """

    matrix: np.ndarray
    blocks: tuple[str, ...]
    block_slices: dict[str, slice]
    columns: tuple[str, ...]
    user_vocab: Vocabulary
    item_rows: sp.csr_matrix | None = None
    stats: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        assert self.matrix.ndim == 2 and self.matrix.shape[1] == len(self.columns)
        assert self.matrix.shape[0] == len(self.user_vocab)

    @property
    def n_users(self) -> int:
        """Number of rows."""
        return int(self.matrix.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns."""
        return int(self.matrix.shape[1])

    def block(self, name: str) -> np.ndarray:
        """The columns of one block, shape (n_users, block width)."""
        return self.matrix[:, self.block_slices[name]]

    def select(self, blocks: Sequence[str]) -> UserFeatures:
        """A copy keeping only the named blocks, in the given order."""
        missing = [b for b in blocks if b not in self.block_slices]
        if missing:
            raise KeyError(f"unknown feature block(s) {missing}; have {list(self.blocks)}")
        cols, slices, names, start = [], {}, [], 0
        for b in blocks:
            s = self.block_slices[b]
            cols.append(self.matrix[:, s])
            names.extend(self.columns[s])
            slices[b] = slice(start, start + (s.stop - s.start))
            start = slices[b].stop
        return UserFeatures(
            np.ascontiguousarray(np.concatenate(cols, axis=1)),
            tuple(blocks),
            slices,
            tuple(names),
            self.user_vocab,
            self.item_rows,
            self.stats,
        )

    def rows(self, idx: np.ndarray) -> UserFeatures:
        """A copy with only the rows ``idx`` (dense indices), e.g. a bootstrap sample."""
        idx = np.asarray(idx, dtype=np.int64)
        return UserFeatures(
            self.matrix[idx],
            self.blocks,
            self.block_slices,
            self.columns,
            # resampled rows may repeat a user: suffix the position to keep ids unique
            Vocabulary([f"{u}#{i}" for i, u in enumerate(self.user_vocab.ids[idx])]),
            None if self.item_rows is None else self.item_rows[idx],
            self.stats.iloc[idx].reset_index(drop=True) if len(self.stats) else self.stats,
        )


@dataclass(frozen=True)
class NewUsers:
    """Brand-new users described by whatever is known about them.

    Attributes:
        user_ids: External ids, shape (n,).
        attributes: Optional user table (same columns as the fit users table),
            one row per user in ``user_ids`` order.
        histories: Optional item ids per user (external ids, oldest first); an
            empty list means no interactions yet.
    """

    user_ids: Sequence[str]
    attributes: pd.DataFrame | None = None
    histories: Sequence[Sequence[str]] | None = None

    def __len__(self) -> int:
        return len(self.user_ids)


def check_block_fitted(block: Any) -> None:
    """Raise :class:`NotFittedError` unless ``block`` (or pipeline) has been fitted."""
    if not getattr(block, "fitted_", False):
        raise NotFittedError(f"This {type(block).__name__} instance is not fitted yet; call fit(data) first.")


class FeatureBlock:
    """Base class of one column group; subclasses implement ``_fit`` and ``_transform``.

    ``_transform(data, new=None)`` receives either fit-style interactions (one
    row per dense user of the vocabulary) or, for new users, the
    :class:`NewUsers` description already mapped to dense item ids.

    Attributes:
        columns_: Column names learned in ``fit``.
        fitted_: True after ``fit``.
    """

    Config: ClassVar[type[BlockConfig]] = BlockConfig
    name: ClassVar[str] = "block"
    #: Standardise each column before block scaling (False keeps the geometry of
    #: embedding blocks, where per-dimension z-scores would inflate noise dims).
    standardize_columns: ClassVar[bool] = True

    def __init__(self, config: BlockConfig | None = None, **overrides: Any):
        if config is not None and overrides:
            raise TypeError(f"{type(self).__name__}: pass a config or keyword overrides, not both")
        self.config = self.Config(**overrides) if config is None else self.Config.model_validate(dict(config))
        self.fitted_ = False
        self.columns_: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({args})"

    def fit(self, data: Interactions) -> Self:
        """Learn the block's state from fit data; returns self."""
        self.fitted_ = False
        self._fit(data)
        self.fitted_ = True
        return self

    def transform(self, data: Interactions) -> np.ndarray:
        """Raw (unscaled) columns, float64 array of shape (data.n_users, n_columns)."""
        check_block_fitted(self)
        return self._transform(data, None)

    def transform_new(self, new: NewUsers, item_vocab: Vocabulary) -> np.ndarray:
        """Raw columns for brand-new users, shape (len(new), n_columns)."""
        check_block_fitted(self)
        return self._transform(None, _dense_histories(new, item_vocab))

    def _fit(self, data: Interactions) -> None:
        raise NotImplementedError

    def _transform(self, data: Interactions | None, new: _DenseNew | None) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class _DenseNew:
    """New users with histories as dense item ids (internal)."""

    n: int
    attributes: pd.DataFrame | None
    histories: list[np.ndarray]


def _dense_histories(new: NewUsers, item_vocab: Vocabulary) -> _DenseNew:
    n = len(new.user_ids)
    if new.histories is None:
        hist = [np.empty(0, np.int64) for _ in range(n)]
    else:
        if len(new.histories) != n:
            raise ValueError(f"NewUsers: {len(new.histories)} histories for {n} user ids")
        # unknown items carry no information about a user's taste here: drop them
        hist = [
            h[h >= 0]
            for h in (item_vocab.index(list(h)) if len(h) else np.empty(0, np.int64) for h in new.histories)
        ]
    if new.attributes is not None and len(new.attributes) != n:
        raise ValueError(f"NewUsers: {len(new.attributes)} attribute rows for {n} user ids")
    return _DenseNew(n, new.attributes, hist)


def user_slices(
    data: Interactions | None, new: _DenseNew | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user item lists in CSR form ``(indptr, items, row_positions)`` for either input.

    For interactions this is the canonical (user, time) order; for new users the
    given histories, oldest first. ``row_positions`` is each entry's position
    within its user's history.
    """
    if data is not None:
        indptr = data.indptr
        items = data.items.astype(np.int64)
        users = data.users.astype(np.int64)
    else:
        lengths = np.array([len(h) for h in new.histories], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        items = np.concatenate(new.histories).astype(np.int64) if lengths.sum() else np.empty(0, np.int64)
        users = np.repeat(np.arange(new.n), lengths)
    pos = np.arange(len(items)) - indptr[users]
    return indptr, items, pos
