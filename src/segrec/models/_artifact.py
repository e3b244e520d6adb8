"""The on-disk form of one fitted Recommender: safetensors + JSON + Parquet, never a pickle.

Layout of a model directory: ``model.json`` (class, config, learned metadata,
versions), ``tensors.safetensors`` (seen items and the model's ``_state()``),
``users.parquet`` and ``items.parquet`` (external ids), ``vectors.safetensors`` for models
with an item table (every known user's cached vector, :mod:`segrec.models._vectors`), plus
whatever the model's ``_save_extra`` writes (sub-models in sub-directories).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import SegrecError
from ..io import atomic_dir, confined_reads, load_tensors, read_json, save_tensors, write_json, write_table
from ._checks import check_tensors, loading, read_vocabulary
from ._registry import check_is_fitted, model_class
from ._vectors import VECTORS_FILE, check_vectors

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
    if model.saves_user_vectors and model.item_table() is not None:
        # every known user's vector, computed now so that no request runs the forward pass
        save_tensors(directory / VECTORS_FILE, model.prepare_serving().state())


def load_model(path: str | Path, expected: type | None = None) -> Any:
    """Read a model directory; dispatch on its saved class (checked against ``expected``).

    The directory is untrusted input: reads stay inside it (:func:`segrec.io.confined_reads`),
    every tensor is checked against the vocabularies before use
    (:func:`~segrec.models._checks.check_tensors`), and the loaded model scores a trial user
    before it is returned, so a crafted artifact fails here with one :class:`SegrecError`
    instead of crashing a request later.

    Raises:
        SegrecError: Unknown class, another class than ``expected``, or a corrupt artifact.
    """
    path = Path(path)
    with confined_reads(path), loading(path):
        return _load(path, expected)


def _load(path: Path, expected: type | None) -> Any:
    info = read_json(path / "model.json")
    name = info.get("class") if isinstance(info, dict) else None
    try:
        target = model_class(name if isinstance(name, str) else str(name)[:60])
    except SegrecError as exc:
        raise SegrecError(f"{path}: {exc}") from None
    if expected is not None and target is not expected:
        raise SegrecError(f"{path}: holds a {name!r} model, not {expected.name!r}")
    model = target(config=target.Config.model_validate(info["config"]))
    tensors = load_tensors(path / "tensors.safetensors")
    model.user_vocab_ = read_vocabulary(path / "users.parquet")
    model.item_vocab_ = read_vocabulary(path / "items.parquet")
    n_users, n_items = len(model.user_vocab_), len(model.item_vocab_)
    check_tensors(path / "tensors.safetensors", tensors, n_users, n_items)
    indices = tensors["seen_indices"]
    model.seen_ = sp.csr_matrix(
        (np.ones(len(indices), np.float32), indices, tensors["seen_indptr"]), shape=(n_users, n_items))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    model._set_state(state, info.get("meta", {}))
    model._load_extra(path)
    table = model.item_table()
    vectors = path / VECTORS_FILE
    if table is not None and model.saves_user_vectors and vectors.is_file():
        # absent (an artifact saved before vectors were cached): prepare_serving computes them
        model.user_vectors_ = check_vectors(vectors, load_tensors(vectors), table, n_users)
    if n_users:  # a trial: wrong-shaped tensors fail now, not on every request
        trial = np.unique(np.array([0, n_users - 1], dtype=np.int64))
        scores = np.asarray(model.score_dense(trial))
        if scores.shape != (len(trial), n_items):
            raise SegrecError(f"{path}: the saved model gives scores of shape {scores.shape} for "
                              f"{len(trial)} users, but its catalogue has {n_items} items; "
                              "the artifact is corrupt")
    return model
