"""Loaded artifacts are untrusted input: every check a loader makes before it uses a tensor.

One place for them, so :func:`segrec.models._artifact.load_model`, the composite
and the segmenter state check arrays the same way, and a crafted file fails with one
:class:`~segrec.errors.SegrecError` naming it, never with a crash or a segfault
(scipy and the neural scorers index without bounds checks).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegrecError
from ..io import read_table
from ..types import Vocabulary

__all__ = ["check_array", "check_tensors", "loading", "read_vocabulary"]


@contextlib.contextmanager
def loading(path: Path):
    """Turn any failure while loading ``path`` into one :class:`SegrecError` naming it."""
    try:
        yield
    except SegrecError:
        raise
    except (MemoryError, RecursionError, Exception) as exc:  # a crafted file must never be a traceback
        raise SegrecError(f"{path}: the saved model does not load ({type(exc).__name__}: "
                          f"{str(exc)[:160]}); the artifact is corrupt or from another segrec "
                          "version") from exc


def read_vocabulary(path: Path) -> Vocabulary:
    """An id table (``id`` column) as a Vocabulary; repeated or missing ids are corrupt."""
    table = read_table(path)
    if "id" not in table.columns:
        raise SegrecError(f"{path}: has no 'id' column; the artifact is corrupt")
    ids = table["id"].astype(str).to_numpy()
    if len(set(ids.tolist())) != len(ids):
        raise SegrecError(f"{path}: lists an id twice; the artifact is corrupt")
    return Vocabulary(ids)


#: dtypes a saved tensor may have (safetensors can hold others; nothing segrec writes does)
_KINDS = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "float"}


def check_array(where: Any, name: str, array: Any, *, kind: str = "biuf", ndim: int | None = None,
                shape: tuple[int | None, ...] | None = None, low: int | None = None,
                high: int | None = None) -> np.ndarray:
    """Check one loaded array before it is used; the single place loaders check tensors.

    Args:
        where: The file, for the message.
        name: The tensor's name, for the message.
        array: What was loaded (None: missing).
        kind: Allowed numpy dtype kinds (``"f"`` float, ``"iu"`` integers, ``"b"`` bool).
        ndim: Required number of dimensions.
        shape: Required shape; None entries match any length.
        low: Smallest allowed value (integer arrays).
        high: One past the largest allowed value (integer arrays).

    Returns:
        ``array`` as a numpy array.

    Raises:
        SegrecError: Missing, wrong dtype, shape or value range, or non-finite floats.
    """
    def bad(what: str) -> SegrecError:
        return SegrecError(f"{where}: tensor {name!r} {what}; the artifact is corrupt or was tampered with")

    if array is None:
        raise bad("is missing")
    array = np.asarray(array)
    if array.dtype.kind not in kind:
        allowed = " or ".join(_KINDS.get(k, k) for k in kind)
        raise bad(f"has dtype {array.dtype}, expected {allowed}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and array.ndim != ndim:
        raise bad(f"has {array.ndim} dimensions, expected {ndim}")
    if shape is not None and any(w is not None and w != g for w, g in zip(shape, array.shape, strict=True)):
        want = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ")"
        raise bad(f"has shape {array.shape}, expected {want}")
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        raise bad("holds NaN or infinite values")
    if array.dtype.kind in "iu" and array.size and (low is not None or high is not None):
        lo, hi = array.min(), array.max()
        if (low is not None and lo < low) or (high is not None and hi >= high):
            raise bad(f"holds values in [{lo}, {hi}], outside [{low}, {high})")
    return array


def check_tensors(where: Any, tensors: dict[str, np.ndarray], n_users: int, n_items: int) -> None:
    """Check a saved model's tensors against its vocabularies before anything uses them.

    What every model shares is checked exactly (the seen-items CSR). For the model's
    own ``state.*`` tensors the naming conventions of segrec's models are enough to
    catch what would crash a process rather than raise: a sparse structure whose
    ``*indptr`` does not fit its ``*indices`` / ``*items``, item indices past the
    catalogue (scipy and the neural scorers index without bounds checks), per-user
    ``segments`` of the wrong length. Shapes of dense weights are left to the trial
    scoring in :meth:`Recommender.load`, where a mismatch raises.

    Raises:
        SegrecError: The first tensor that does not fit, named.
    """
    for name, array in tensors.items():
        check_array(where, name, array)
    indptr = check_array(where, "seen_indptr", tensors.get("seen_indptr"), kind="iu", shape=(n_users + 1,))
    indices = check_array(where, "seen_indices", tensors.get("seen_indices"), kind="iu", ndim=1,
                          low=0, high=max(n_items, 1))
    _check_indptr(where, "seen_indptr", indptr, len(indices))
    for name, array in tensors.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.endswith("indptr") and name != "seen_indptr":
            check_array(where, name, array, kind="iu", ndim=1)
            stem = name[: -len("indptr")]
            sibling = next((tensors[stem + s] for s in ("indices", "items", "data") if stem + s in tensors),
                           None)
            if sibling is None:
                raise SegrecError(f"{where}: tensor {name!r} has no matching indices; "
                                  "the artifact is corrupt")
            if len(array) - 1 not in (n_users, n_items):
                raise SegrecError(f"{where}: tensor {name!r} has {len(array) - 1} rows, but the model has "
                                  f"{n_users} users and {n_items} items; the artifact is corrupt")
            _check_indptr(where, name, array, len(sibling))
            if stem + "data" in tensors and stem + "indices" in tensors and \
                    len(tensors[stem + "data"]) != len(tensors[stem + "indices"]):
                raise SegrecError(f"{where}: tensors {stem}data and {stem}indices differ in length; "
                                  "the artifact is corrupt")
        if (leaf.endswith("indices") or leaf.endswith("items")) and name != "seen_indices":
            check_array(where, name, array, kind="iu", ndim=1, low=0, high=max(n_items, 1))
        if leaf == "segments":
            check_array(where, name, array, kind="iu", shape=(n_users,), low=-1)


def _check_indptr(where: Any, name: str, indptr: np.ndarray, n: int) -> None:
    if len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != n or (np.diff(indptr) < 0).any():
        raise SegrecError(f"{where}: tensor {name!r} is not a valid row index for {n} entries (it must "
                          "start at 0, never decrease and end at the entry count); the artifact is corrupt")
