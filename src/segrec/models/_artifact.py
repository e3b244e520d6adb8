"""The on-disk form of one fitted Recommender: safetensors + JSON + Parquet, never a pickle.

Layout of a model directory: ``model.json`` (class, config, learned metadata,
versions), ``tensors.safetensors`` (seen items and the model's ``_state()``),
``users.parquet`` and ``items.parquet`` (external ids), plus whatever the model's
``_save_extra`` writes (sub-models in sub-directories).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import SegrecError
from ..io import atomic_dir, load_tensors, read_json, read_table, save_tensors, write_json, write_table
from ..types import Vocabulary
from ._registry import check_is_fitted, model_class

__all__ = ["load_model", "save_model", "write_model"]


def save_model(model: Any, path: str | Path) -> Path:
    """Write ``model`` to directory ``path`` atomically (temporary directory, then rename)."""
    check_is_fitted(model)
    with atomic_dir(path) as tmp:
        write_model(model, tmp)
    return Path(path)


def write_model(model: Any, directory: Path) -> None:
    """Write the fitted model's files into an existing directory."""
    from .. import __version__

    tensors = {
        "seen_indptr": model.seen_.indptr.astype(np.int64),
        "seen_indices": model.seen_.indices.astype(np.int32),
        **{f"state.{k}": v for k, v in model._state().items()},
    }
    save_tensors(directory / "tensors.safetensors", tensors)
    write_table(directory / "users.parquet", pd.DataFrame({"id": model.user_vocab_.ids.astype(str)}))
    write_table(directory / "items.parquet", pd.DataFrame({"id": model.item_vocab_.ids.astype(str)}))
    write_json(directory / "model.json", {
        "class": model.name,
        "config": model.config.model_dump(mode="json"),
        "meta": model._meta(),
        "segrec_version": __version__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
    })
    model._save_extra(directory)


def load_model(path: str | Path, expected: type | None = None) -> Any:
    """Read a model directory; dispatch on its saved class (checked against ``expected``).

    Raises:
        SegrecError: Unknown class, or another class than ``expected``.
    """
    path = Path(path)
    info = read_json(path / "model.json")
    name = info.get("class")
    try:
        target = model_class(name)
    except SegrecError as exc:
        raise SegrecError(f"{path}: {exc}") from None
    if expected is not None and target is not expected:
        raise SegrecError(f"{path}: holds a {name!r} model, not {expected.name!r}")
    model = target(config=target.Config.model_validate(info["config"]))
    tensors = load_tensors(path / "tensors.safetensors")
    model.user_vocab_ = Vocabulary(read_table(path / "users.parquet")["id"].astype(str).to_numpy())
    model.item_vocab_ = Vocabulary(read_table(path / "items.parquet")["id"].astype(str).to_numpy())
    indices = tensors["seen_indices"]
    model.seen_ = sp.csr_matrix(
        (np.ones(len(indices), np.float32), indices, tensors["seen_indptr"]),
        shape=(len(model.user_vocab_), len(model.item_vocab_)),
    )
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    model._set_state(state, info.get("meta", {}))
    model._load_extra(path)
    return model
