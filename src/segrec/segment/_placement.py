"""Placing brand-new users: the :class:`SegmentationPipeline`'s own features and segmenter.

A new user described by a few items and/or attributes gets the feature row a fit
user with the same items and attributes would have (blocks without data take the
fit-population mean) and the segment the fitted segmenter assigns to it, so the
segments new users land in are the segments the fit users were put in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..features import NewUsers
from .base import check_is_fitted

__all__ = ["ATTRIBUTE_ID_COLUMNS", "NewUserPlacement", "Placement"]


#: users-table columns that identify users rather than describe them
ATTRIBUTE_ID_COLUMNS = ("user_id", "id")


@dataclass(frozen=True)
class Placement:
    """Where brand-new users were placed.

    Attributes:
        segments: int64 (n,), the segment (-1 when nothing was known about the user).
        confidence: object (n,), the segmenter's membership probability of that segment
            where it has one (GMM), else None.
        evidence: object (n,): ``items``, ``attributes``, ``items+attributes`` or ``none``.
    """

    segments: np.ndarray
    confidence: np.ndarray
    evidence: np.ndarray


class NewUserPlacement:
    """New-user placement for :class:`~segrec.segment.SegmentationPipeline` (mixed in; needs its fields)."""

    @property
    def attribute_names(self) -> list[str]:
        """Attributes a new user may carry: the fit users table's columns (ids excluded)."""
        check_is_fitted(self.segmenter_)
        return list(self.attribute_names_)

    @property
    def uses_attributes(self) -> bool:
        """Whether attributes move a new user (the features have a demographics block)."""
        return self._demographics() is not None

    def _demographics(self):
        return next((b for b in self.features.blocks_ if b.name == "demographics"), None)

    def _informative(self, attributes: dict[str, Any]) -> bool:
        """Whether any attribute moves the user: a used numeric column or a known level of a category."""
        block = self._demographics()
        if block is None:
            return False
        for col, value in attributes.items():
            if value is None:
                continue
            if col in block.numeric_:
                return True
            if col in block.levels_ and str(value) in block.levels_[col]:
                return True  # an unseen value carries no information about the segment
        return False

    def check_attributes(self, attributes: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` naming unknown attribute keys or non-numeric numeric values."""
        check_is_fitted(self.segmenter_)
        unknown = sorted(set(attributes) - set(self.attribute_names_))
        if unknown:
            known = ", ".join(self.attribute_names_) or "none (the run had no users table)"
            raise ConfigError(f"unknown attribute(s) {unknown}; known: {known}", key="attributes")
        block = self._demographics()
        for col, value in attributes.items():
            if block is not None and col in block.numeric_ and value is not None:
                try:
                    float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"attribute {col!r} must be a number; got {value!r}",
                                      key=f"attributes.{col}") from None

    def place(self, histories: list, attributes: list[dict[str, Any] | None] | None = None, *,
              indexed: bool = False) -> Placement:
        """Place brand-new users in segments the way their fit-user twins were.

        Args:
            histories: External item ids per user, oldest first (unknown ids are ignored);
                with ``indexed``, dense item indices of the fit data instead.
            attributes: Attribute dict per user (keys from :attr:`attribute_names`), or None.
            indexed: ``histories`` hold dense item indices (the server's form).

        Returns:
            A :class:`Placement`; segment -1 where neither items nor attributes carry
            information about the user.
        """
        check_is_fitted(self.segmenter_)
        n = len(histories)
        attrs = list(attributes) if attributes is not None else [None] * n
        if indexed:
            has_items = np.array([len(h) > 0 for h in histories], dtype=bool)
        else:
            vocab = self.features.item_vocab_
            has_items = np.array([bool(len(h)) and bool((vocab.index(list(h)) >= 0).any())
                                  for h in histories])
        has_attrs = np.array([self._informative(a or {}) for a in attrs], dtype=bool)
        table = pd.DataFrame([dict(a or {}) for a in attrs], index=range(n)) if has_attrs.any() else None
        ids = [f"new-{i}" for i in range(n)]
        feats = (self.features.transform_new_indexed(histories, table, ids) if indexed
                 else self.features.transform_new(NewUsers(ids, table, histories)))
        segments = self.segmenter_.assign(feats).astype(np.int64)
        member = self.segmenter_.membership(feats)
        confidence = np.full(n, None, dtype=object) if member is None else member.max(1).astype(object)
        only = np.where(has_items, "items", np.where(has_attrs, "attributes", "none"))
        evidence = np.where(has_items & has_attrs, "items+attributes", only).astype(object)
        none = evidence == "none"
        segments[none] = -1
        confidence[none] = None
        return Placement(segments, confidence, evidence)
