"""Place a brand-new user in a segment from a few items and/or attributes.

:class:`ProfileAssigner` is a naive-Bayes placement learned from the fit
users' segments: a multinomial over items per segment (what the segment
consumes) and a categorical distribution per attribute column (who is in it).
It needs nothing but the fit interactions, the users table and the segment
labels, saves as safetensors + JSON, and scores a request in microseconds,
so the server can place every new user without the feature pipeline.

The per-segment item counts double as each segment's popularity list, which
serves a new user known only by attributes (no items to condition on).

Example:
    >>> import numpy as np
    >>> from segrec.types import Interactions, Vocabulary
    >>> data = Interactions.from_arrays([0, 0, 1, 1], [0, 1, 2, 3], user_vocab=Vocabulary(["a", "b"]),
    ...                                 item_vocab=Vocabulary(["w", "x", "y", "z"]))
    >>> assigner = ProfileAssigner().fit(data, np.array([0, 1]))
    >>> assigner.assign(histories=[np.array([2])]).segments.tolist()
    [1]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, NotFittedError, SegrecError
from ..io import load_tensors, read_json, save_tensors, write_json
from ..types import Interactions

__all__ = ["Assignment", "AssignerConfig", "ProfileAssigner"]


class AssignerConfig(BaseModel):
    """Settings of :class:`ProfileAssigner`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_smoothing: float = Field(1.0, gt=0)
    """Additive (Laplace) smoothing of each segment's item distribution."""
    attribute_smoothing: float = Field(1.0, gt=0)
    """Additive smoothing of each segment's attribute-value distributions."""
    max_categories: int = Field(64, ge=2)
    """Text attribute columns with more distinct values (zip codes, names) carry no
    segment signal worth storing; they are accepted in requests and ignored."""
    numeric_bins: int = Field(5, ge=2)
    """Quantile bins for numeric attribute columns (e.g. age)."""
    id_columns: tuple[str, ...] = ("user_id", "id")
    """Users-table columns that identify users rather than describe them."""


@dataclass(frozen=True)
class Assignment:
    """Where new users were placed.

    Attributes:
        segments: int64 (n,), the most probable segment (-1 when nothing was known).
        confidence: float64 (n,), its posterior probability under the model.
        evidence: object (n,), what the placement used: ``items``, ``attributes``,
            ``items+attributes`` or ``none``.
    """

    segments: np.ndarray
    confidence: np.ndarray
    evidence: np.ndarray


class ProfileAssigner:
    """Naive-Bayes segment placement from items and attributes.

    Args:
        config: :class:`AssignerConfig` (or keyword overrides).

    Attributes:
        n_segments_: Number of segments.
        item_counts_: float32 (n_segments, n_items): fit interactions per segment and item.
        segment_users_: int64 (n_segments,): fit users per segment.
        columns_: Attribute columns used: name -> ``{"kind": "categorical", "values": [...]}``
            or ``{"kind": "numeric", "edges": [...]}``.
        ignored_columns_: Users-table columns accepted but not used (ids, high cardinality).
        attribute_counts_: column name -> float32 (n_segments, n_values) counts.
    """

    def __init__(self, config: AssignerConfig | None = None, **overrides: Any):
        if config is not None and overrides:
            raise TypeError("ProfileAssigner: pass a config or keyword overrides, not both")
        self.config = config if config is not None else AssignerConfig(**overrides)
        self.item_counts_: np.ndarray | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, data: Interactions, segments: np.ndarray) -> ProfileAssigner:
        """Learn each segment's item and attribute distributions from its fit users.

        Args:
            data: Fit interactions (their ``user_table`` gives the attributes, if any).
            segments: int (n_users,), segment per dense user; -1 = unsegmented (ignored).

        Returns:
            self.
        """
        segments = np.asarray(segments, dtype=np.int64)
        if segments.shape != (data.n_users,):
            raise SegrecError(f"ProfileAssigner.fit: segments must have one label per user ({data.n_users}); "
                              f"got shape {segments.shape}")
        k = int(segments.max()) + 1 if (segments >= 0).any() else 0
        if k == 0:
            raise SegrecError("ProfileAssigner.fit: no user has a segment")
        seg_of_row = segments[data.users]
        keep = seg_of_row >= 0
        counts = np.zeros((k, data.n_items), np.float64)
        np.add.at(counts, (seg_of_row[keep], data.items[keep]), 1.0)
        self.n_segments_ = k
        self.item_counts_ = counts.astype(np.float32)
        self._log_item_cache = None
        self.segment_users_ = np.bincount(segments[segments >= 0], minlength=k).astype(np.int64)
        self.columns_: dict[str, dict[str, Any]] = {}
        self.attribute_counts_: dict[str, np.ndarray] = {}
        self.ignored_columns_: list[str] = []
        table = data.user_table
        if table is not None and len(table) == data.n_users:
            self._fit_attributes(table.reset_index(drop=True), segments)
        return self

    def _fit_attributes(self, table: pd.DataFrame, segments: np.ndarray) -> None:
        c = self.config
        labelled = segments >= 0
        for col in table.columns:
            if col in c.id_columns:
                continue
            values = table[col]
            if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
                cats = values.astype(str).where(values.notna(), None)
                uniq = sorted(cats.dropna().unique().tolist())
                if not 2 <= len(uniq) <= c.max_categories:
                    self.ignored_columns_.append(str(col))
                    continue
                self.columns_[str(col)] = {"kind": "categorical", "values": uniq}
                codes = pd.Categorical(cats, categories=uniq).codes.astype(np.int64)
            else:
                num = values.to_numpy(np.float64)
                finite = np.isfinite(num)
                edges = np.unique(np.quantile(num[finite], np.linspace(0, 1, c.numeric_bins + 1)[1:-1])) \
                    if finite.sum() > 1 else np.empty(0)
                self.columns_[str(col)] = {"kind": "numeric", "edges": edges.tolist()}
                codes = np.where(finite, np.searchsorted(edges, num, side="right"), -1)
            width = self._width(str(col))
            counts = np.zeros((self.n_segments_, width), np.float64)
            ok = labelled & (codes >= 0)
            np.add.at(counts, (segments[ok], codes[ok]), 1.0)
            self.attribute_counts_[str(col)] = counts.astype(np.float32)

    def _width(self, col: str) -> int:
        spec = self.columns_[col]
        return len(spec["values"]) if spec["kind"] == "categorical" else len(spec["edges"]) + 1

    # --------------------------------------------------------------- assign
    @property
    def attribute_names(self) -> list[str]:
        """Every attribute a request may carry (used or accepted-and-ignored)."""
        return [*self.columns_, *self.ignored_columns_]

    def check_attributes(self, attributes: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` naming unknown attribute keys or non-numeric numeric values."""
        self._check_fitted()
        unknown = sorted(set(attributes) - set(self.attribute_names))
        if unknown:
            known = ", ".join(self.attribute_names) or "none (the run had no users table)"
            raise ConfigError(f"unknown attribute(s) {unknown}; known: {known}", key="attributes")
        for col, value in attributes.items():
            spec = self.columns_.get(col)
            if spec and spec["kind"] == "numeric" and value is not None:
                try:
                    float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"attribute {col!r} must be a number; got {value!r}",
                                      key=f"attributes.{col}") from None

    def _attribute_code(self, col: str, value: Any) -> int:
        spec = self.columns_[col]
        if value is None:
            return -1
        if spec["kind"] == "numeric":
            v = float(value)
            return int(np.searchsorted(np.asarray(spec["edges"]), v, side="right")) if np.isfinite(v) else -1
        try:  # values were stored as strings; unseen values carry no information
            return spec["values"].index(str(value))
        except ValueError:
            return -1

    def log_posterior(self, histories: list[np.ndarray] | None = None,
                      attributes: list[dict[str, Any] | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalised log posterior over segments and what it used, per user.

        Returns:
            ``(logp (n, n_segments), evidence (n,))``.
        """
        self._check_fitted()
        n = len(histories) if histories is not None else len(attributes or [])
        prior = np.log((self.segment_users_ + 1.0) / (self.segment_users_.sum() + self.n_segments_))
        logp = np.tile(prior, (n, 1))
        used_items = np.zeros(n, bool)
        used_attrs = np.zeros(n, bool)
        if histories is not None:
            log_item = self._log_item()  # (n_segments, n_items)
            for r, hist in enumerate(histories):
                hist = np.asarray(hist, np.int64)
                if len(hist):
                    logp[r] += log_item[:, hist].sum(1)
                    used_items[r] = True
        if attributes is not None:
            b = self.config.attribute_smoothing
            for r, attrs in enumerate(attributes):
                for col, value in (attrs or {}).items():
                    if col not in self.columns_:
                        continue
                    code = self._attribute_code(col, value)
                    if code < 0:
                        continue
                    counts = self.attribute_counts_[col].astype(np.float64)
                    logp[r] += np.log(counts[:, code] + b) - np.log(counts.sum(1) + b * counts.shape[1])
                    used_attrs[r] = True
        evidence = np.where(used_items & used_attrs, "items+attributes",
                            np.where(used_items, "items", np.where(used_attrs, "attributes", "none")))
        return logp, evidence.astype(object)

    def assign(self, histories: list[np.ndarray] | None = None,
               attributes: list[dict[str, Any] | None] | None = None) -> Assignment:
        """Most probable segment of each new user.

        Args:
            histories: Dense item indices per user (unknown items already dropped).
            attributes: Attribute dict per user (keys from the users table); see
                :meth:`check_attributes` for validation.

        Returns:
            An :class:`Assignment`; segment -1 for users with no usable evidence.
        """
        logp, evidence = self.log_posterior(histories, attributes)
        post = np.exp(logp - logp.max(1, keepdims=True))
        post /= post.sum(1, keepdims=True)
        seg = post.argmax(1).astype(np.int64)
        seg[evidence == "none"] = -1
        return Assignment(seg, post.max(1), evidence)

    def _log_item(self) -> np.ndarray:
        # computed once per fitted/loaded assigner: requests only gather columns of it
        cached = getattr(self, "_log_item_cache", None)
        if cached is None:
            a = self.config.item_smoothing
            c = self.item_counts_.astype(np.float64)
            cached = np.log(c + a) - np.log(c.sum(1, keepdims=True) + a * c.shape[1])
            self._log_item_cache = cached
        return cached

    def segment_popularity(self, segment: int) -> np.ndarray:
        """Fit interactions per item within one segment, float32 (n_items,)."""
        self._check_fitted()
        return self.item_counts_[int(segment)]

    def _check_fitted(self) -> None:
        if self.item_counts_ is None:
            raise NotFittedError("This ProfileAssigner instance is not fitted yet; call fit(data, segments).")

    # ------------------------------------------------------------ artifacts
    def save_into(self, directory: str | Path) -> None:
        """Write ``assigner.json`` and ``assigner.safetensors`` into an existing directory."""
        self._check_fitted()
        directory = Path(directory)
        tensors = {"item_counts": self.item_counts_, "segment_users": self.segment_users_,
                   **{f"attr.{k}": v for k, v in self.attribute_counts_.items()}}
        save_tensors(directory / "assigner.safetensors", tensors)
        write_json(directory / "assigner.json", {"config": self.config.model_dump(mode="json"),
                                                 "columns": self.columns_, "ignored": self.ignored_columns_})

    @classmethod
    def load(cls, directory: str | Path) -> ProfileAssigner:
        """Read what :meth:`save_into` wrote; never unpickles."""
        directory = Path(directory)
        meta = read_json(directory / "assigner.json")
        tensors = load_tensors(directory / "assigner.safetensors")
        self = cls(AssignerConfig.model_validate(meta["config"]))
        self.item_counts_ = tensors["item_counts"]
        self.segment_users_ = tensors["segment_users"].astype(np.int64)
        self.n_segments_ = int(self.item_counts_.shape[0])
        self.columns_ = dict(meta["columns"])
        self.ignored_columns_ = list(meta["ignored"])
        self.attribute_counts_ = {k[len("attr."):]: v for k, v in tensors.items() if k.startswith("attr.")}
        return self
