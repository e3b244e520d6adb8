"""A fitted :class:`~segrec.segment.SegmentationPipeline` on disk: safetensors + JSON + Parquet.

What a served composite needs to place a brand-new user is the fitted feature
blocks (category lists, popularity, item embeddings, SVD factors, scaling) and
the fitted segmenter (centres, label map, a GMM's mixture, a VAE's encoder).
Both are saved through :mod:`segrec.state` — learned arrays to one safetensors
file, everything else to JSON — and rebuilt without unpickling anything:

``pipeline.json``, ``pipeline.safetensors``, ``items.parquet`` (the fit item ids
the features map new users' items with) and ``segmentation/`` (the fit users'
:class:`~segrec.segment.Segmentation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SegrecError
from ..features.pipeline import BLOCKS, FeaturePipeline, FeaturesConfig
from ..io import load_tensors, read_json, read_table, save_tensors, write_json, write_table
from ..state import decode_state, encode_state, fitted_attributes
from ..types import Vocabulary
from .base import Segmenter, check_is_fitted
from .segmentation import Segmentation

__all__ = ["load_pipeline", "save_pipeline", "segmenter_from_state", "segmenter_state"]

#: bumped when the saved layout changes incompatibly
FORMAT_VERSION = 1


def segmenter_state(segmenter: Segmenter, prefix: str = "segmenter.") -> tuple[dict[str, np.ndarray], dict]:
    """A fitted segmenter as ``(tensors, meta)``."""
    check_is_fitted(segmenter)
    skip = ("segmentation_", "k_selection_", *segmenter.own_state)
    tensors, fitted = encode_state(fitted_attributes(segmenter, skip), prefix)
    extra_tensors, extra = segmenter._extra_state()
    tensors.update({prefix + k: v for k, v in extra_tensors.items()})
    return tensors, {"class": segmenter.name, "config": segmenter.config.model_dump(mode="json"),
                     "fitted": fitted, "extra": extra}


def segmenter_from_state(tensors: dict[str, np.ndarray], meta: dict[str, Any],
                         classes: dict[str, type[Segmenter]], prefix: str = "segmenter.") -> Segmenter:
    """Rebuild a segmenter saved by :func:`segmenter_state` (``classes``: name -> class)."""
    cls = classes.get(meta["class"])
    if cls is None:
        raise SegrecError(f"unknown segmenter {meta['class']!r}; known: {sorted(classes)}")
    seg = cls(cls.Config.model_validate(meta["config"]))
    for name, value in decode_state(tensors, meta["fitted"]).items():
        setattr(seg, name, value)
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    seg._restore_extra(own, meta["extra"])
    seg.segmentation_, seg.k_selection_ = None, None
    return seg


def _features_state(features: FeaturePipeline) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    tensors: dict[str, np.ndarray] = {}
    blocks = []
    for i, block in enumerate(features.blocks_):
        arrays, meta = encode_state(fitted_attributes(block), f"features.{i}.")
        tensors.update(arrays)
        blocks.append({"name": block.name, "config": block.config.model_dump(mode="json"), "state": meta})
    for name, (mean, scale) in features.scaling_.items():
        tensors[f"scaling.{name}.mean"] = np.ascontiguousarray(mean)
        tensors[f"scaling.{name}.scale"] = np.ascontiguousarray(scale)
    return tensors, {"config": features.config.model_dump(mode="json"), "blocks": blocks,
                     "reference_time": float(features.reference_time_)}


def _features_from_state(tensors: dict[str, np.ndarray], meta: dict[str, Any],
                         items: Vocabulary) -> FeaturePipeline:
    features = FeaturePipeline(FeaturesConfig.model_validate(meta["config"]))
    features.blocks_, features.scaling_ = [], {}
    for i, spec in enumerate(meta["blocks"]):
        cls = BLOCKS[spec["name"]]
        block = cls(cls.Config.model_validate(spec["config"]))
        prefix = f"features.{i}."
        own = {k: v for k, v in tensors.items() if k.startswith(prefix)}
        for name, value in decode_state(own, spec["state"]).items():
            setattr(block, name, value)
        features.blocks_.append(block)
        features.scaling_[block.name] = (tensors[f"scaling.{block.name}.mean"],
                                         tensors[f"scaling.{block.name}.scale"])
    features.item_vocab_ = items
    features.reference_time_ = float(meta["reference_time"])
    features.fitted_ = True
    return features


def save_pipeline(pipeline: Any, directory: Path) -> None:
    """Write a fitted pipeline's files into an existing directory."""
    check_is_fitted(pipeline.segmenter_)
    tensors, features = _features_state(pipeline.features)
    seg_tensors, segmenter = segmenter_state(pipeline.segmenter_)
    save_tensors(directory / "pipeline.safetensors", {**tensors, **seg_tensors})
    write_table(directory / "items.parquet",
                pd.DataFrame({"id": pipeline.features.item_vocab_.ids.astype(str)}))
    selection = pipeline.method_selection_
    write_json(directory / "pipeline.json", {
        "format_version": FORMAT_VERSION, "features": features, "segmenter": segmenter,
        "criterion": pipeline.criterion, "text": pipeline.text,
        "attribute_names": list(pipeline.attribute_names_), "timings": dict(pipeline.timings_),
        "method_selection": (None if selection is None
                             else selection.table.replace({np.nan: None}).to_dict("records")),
    })
    if pipeline.segmentation_ is not None:
        pipeline.segmentation_.save(directory / "segmentation")


def load_pipeline(directory: Path, classes: dict[str, type[Segmenter]], pipeline_cls: type) -> Any:
    """Read what :func:`save_pipeline` wrote into a fitted ``pipeline_cls``; never unpickles."""
    info = read_json(directory / "pipeline.json")
    if info.get("format_version") != FORMAT_VERSION:
        raise SegrecError(f"{directory}: segmentation pipeline format {info.get('format_version')!r}; "
                          f"this segrec reads format {FORMAT_VERSION}")
    tensors = load_tensors(directory / "pipeline.safetensors")
    items = Vocabulary(read_table(directory / "items.parquet")["id"].astype(str).to_numpy())
    features = _features_from_state(tensors, info["features"], items)
    segmenter = segmenter_from_state(tensors, info["segmenter"], classes)
    pipe = pipeline_cls(features, segmenter, criterion=info["criterion"], text=info["text"])
    pipe.segmenter_ = segmenter
    pipe.attribute_names_ = list(info["attribute_names"])
    pipe.timings_ = dict(info.get("timings") or {})
    pipe.method_selection_, pipe.features_ = None, None
    seg_dir = directory / "segmentation"
    pipe.segmentation_ = Segmentation.load(seg_dir) if seg_dir.is_dir() else None
    return pipe
