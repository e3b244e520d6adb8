"""The composite's artifact: which tiers it keeps, and saving and loading them with it.

A served artifact keeps only the tiers the model can serve with (:meth:`saved_tiers`);
blend tiers are a few numbers over two saved tiers, written into the model's meta and
rebuilt on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json, read_table, write_table
from ..models.base import Recommender
from .blend import BlendRecommender

__all__ = ["PersistMixin"]


class PersistMixin:
    """Artifacts for :class:`~segrec.route.composite.SegmentedRecommender` (mixed in; needs its fields)."""

    def saved_tiers(self) -> list[str]:
        """The tiers this model can serve with, which its artifact keeps.

        The routed tiers (a blend with both its parts), the fallback chain, the default and
        new-user tiers: a served artifact loads no model it never uses (every tier the
        routing compared is in the validation table; a loaded model reroutes among these).
        """
        keep = set(self.routing_.values()) | set(self.chain().order)
        keep |= {self.config.policy.default_tier, self.default_tier, self.new_user_tier_ or ""}
        for name in list(keep):
            model = self.tiers_.get(name)
            if _is_blend(model):
                keep |= set(model.parts_)
        return [t for t in self.tiers_ if t in keep]

    def _state(self) -> dict[str, np.ndarray]:
        return {"segments": self.segments_}

    def _set_state(self, tensors, meta) -> None:
        self.segments_ = tensors["segments"].astype(np.int64)
        self.routing_ = {int(k): v for k, v in meta["routing"].items()}
        self.new_user_tier_ = meta.get("new_user_tier")
        self.default_tier_ = meta.get("default_tier")
        self.selection_ = meta.get("selection")

    def _meta(self) -> dict[str, Any]:
        saved = self.saved_tiers()
        # a blend tier is a few numbers over two saved tiers: kept here, rebuilt on load
        blends = {n: self.tiers_[n].spec() for n in saved if _is_blend(self.tiers_[n])}
        return {"routing": {str(k): v for k, v in self.routing_.items()},
                "tiers": [n for n in saved if n not in blends], "blends": blends,
                "new_user_tier": self.new_user_tier_, "segmenter": self.segmenter_ is not None,
                "default_tier": self.default_tier, "selection": getattr(self, "selection_", None)}

    def _save_extra(self, directory: Path) -> None:
        for name in self.saved_tiers():
            if _is_blend(self.tiers_[name]):
                continue
            sub = directory / "tiers" / name
            sub.mkdir(parents=True)
            self.tiers_[name].save_into(sub)
        if self.validation_ is not None:
            write_table(directory / "validation.parquet", self.validation_)
        if self.segmenter_ is not None:
            (directory / "segmenter").mkdir()
            self.segmenter_.save_into(directory / "segmenter")

    def _load_extra(self, directory: Path) -> None:
        meta = read_json(directory / "model.json")["meta"]
        self.tiers_ = {name: Recommender.load(directory / "tiers" / name) for name in meta["tiers"]}
        for name, spec in (meta.get("blends") or {}).items():
            self.tiers_[name] = BlendRecommender.from_spec(spec, self.tiers_, self.segments_)
        val = directory / "validation.parquet"
        self.validation_ = read_table(val) if val.exists() else None
        self.segmenter_ = None
        if meta.get("segmenter"):
            from ..segment import SegmentationPipeline

            self.segmenter_ = SegmentationPipeline.load(directory / "segmenter")
        # the loaded parts are also the components, so a clone (with_params) keeps its tiers
        self.tiers = {n: m for n, m in self.tiers_.items() if not _is_blend(m)}
        self.segmenter, self.routing = self.segmenter_, None


def _is_blend(model: Any) -> bool:
    """A blend tier the composite built from two of its members (not a member itself)."""
    return isinstance(model, BlendRecommender) and model.parts_ is not None
