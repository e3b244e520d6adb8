"""The Recommender protocol every model, baseline and routed system obeys.

A subclass supplies a pydantic ``Config`` class and four hooks:
``_fit(train, valid)``, ``_score(users)`` (dense scores over the catalogue),
``_state()`` and ``_set_state(tensors, meta)``. The base class owns everything
that must behave identically across models: id mapping, seen-item exclusion,
top-k, fitted checks, and the artifact format.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from ..errors import NotFittedError, SegrecError, UnknownIDError
from ..evaluate.ranking import rank_in_chunks
from ..io import (
    atomic_dir,
    confined_reads,
    load_tensors,
    read_json,
    read_table,
    save_tensors,
    write_json,
    write_table,
)
from ..types import Interactions, Recommendations, Vocabulary

__all__ = ["ModelConfig", "Recommender", "check_array", "check_is_fitted", "check_tensors"]


class ModelConfig(BaseModel):
    """Base of every model config: frozen, and unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def check_is_fitted(model: Any) -> None:
    """Raise :class:`NotFittedError` unless ``model`` has been fitted."""
    if getattr(model, "item_vocab_", None) is None:
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet; call fit(train) first."
        )


class Recommender:
    """Base class: ``fit`` / ``score`` / ``recommend`` / ``save`` / ``load``.

    Subclasses set ``Config`` (a :class:`ModelConfig`) and ``name``; they are built
    from a config object or keyword overrides, never both. Learned attributes end
    with ``_``; ``item_vocab_`` marks a fitted model.
    """

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    name: ClassVar[str] = "base"

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        if config is not None and overrides:
            raise TypeError(f"{type(self).__name__}: pass a config or keyword overrides, not both")
        if config is None:
            config = self.Config(**overrides)
        elif not isinstance(config, self.Config):
            config = self.Config.model_validate(dict(config))
        self.config = config
        self.user_vocab_: Vocabulary | None = None
        self.item_vocab_: Vocabulary | None = None
        self.seen_: sp.csr_matrix | None = None
        #: wall seconds of the parts of the last fit, e.g. ``tuning_s`` / ``refit_s`` (the run's
        #: cost breakdown shows them); each model records what it has
        self.fit_timings_: dict[str, float] | None = None
        #: fingerprint of the data the last fit learned from (train ∪ valid), so a composite can
        #: tell whether a kept inner model was fitted on the very inner split it needs
        self.fitted_on_: str | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({args})"

    def with_params(self, **changes: Any) -> Self:
        """An unfitted copy with some config values changed (re-validated)."""
        return type(self)(self.Config.model_validate({**self.config.model_dump(), **changes}))

    # ------------------------------------------------------------------ fit
    def fit(self, train: Interactions, *, valid: Interactions | None = None, **fit_params: Any) -> Self:
        """Learn from ``train`` (and ``valid``), forgetting any earlier fit.

        Args:
            train: Fit interactions.
            valid: Optional held-out tail of the fit data. A model uses it only to
                choose settings or stop early, then learns from train ∪ valid
                (EVAL_PROTOCOL's black-box rule). Without it, a model that tunes
                carves its own inner validation out of ``train``.
            **fit_params: Model-specific inputs, e.g. ``segments=`` (int label per
                dense user) for segment-aware models.

        Returns:
            self, fitted.
        """
        if len(train) == 0:
            raise SegrecError(f"{type(self).__name__}.fit: the training data has no interactions")
        full = train if valid is None or len(valid) == 0 else train.concat(valid)
        self.user_vocab_ = None
        self.item_vocab_ = None
        self.fit_timings_ = {}
        self._fit(train, None if valid is None or len(valid) == 0 else valid, **fit_params)
        self.user_vocab_ = full.user_vocab
        self.item_vocab_ = full.item_vocab
        self.seen_ = full.to_csr()
        self.fitted_on_ = full.fingerprint()
        return self

    def _fit(self, train: Interactions, valid: Interactions | None, **fit_params: Any) -> None:
        raise NotImplementedError

    def _score(self, users: np.ndarray) -> np.ndarray:
        """Scores of shape (len(users), n_items) for dense user ids; NaN = cannot score."""
        raise NotImplementedError

    def inner_model(self) -> Recommender | None:
        """The model as fitted on the inner train part only, if ``fit`` kept it.

        A model that chose its settings on (train -> valid) and then refitted on
        train ∪ valid may keep the train-only version; a composite that must score
        valid honestly (the router's stage 1) reuses it instead of fitting again.
        None (the default) means "not kept": the caller fits a fresh copy.
        """
        return None

    # --------------------------------------------------------------- scoring
    @property
    def n_items(self) -> int:
        """Catalogue size of the fitted model."""
        check_is_fitted(self)
        return len(self.item_vocab_)

    def score_dense(self, users: np.ndarray) -> np.ndarray:
        """Scores of shape (len(users), n_items) for dense user ids (evaluator hook)."""
        check_is_fitted(self)
        return self._score(np.asarray(users, dtype=np.int64))

    def _user_index(self, user_ids, *, strict: bool = True) -> np.ndarray:
        idx = self.user_vocab_.index(user_ids)
        if strict and (idx < 0).any():
            bad = np.atleast_1d(np.asarray(user_ids, dtype=object))[idx < 0][:5]
            raise UnknownIDError(
                f"unknown user id(s) {[str(b) for b in bad]}: not in the fit data of this "
                f"{type(self).__name__}; serve new users by their recent items instead"
            )
        return idx

    def score(self, user_ids, item_ids) -> np.ndarray:
        """Scores of shape (n_users, n_items_asked); NaN for unknown items.

        Raises:
            UnknownIDError: A user id is not in the fit data.
        """
        check_is_fitted(self)
        users = self._user_index(user_ids)
        items = self.item_vocab_.index(item_ids)
        full = np.asarray(self._score(users), dtype=np.float32)
        out = np.full((len(users), len(items)), np.nan, dtype=np.float32)
        ok = items >= 0
        out[:, ok] = full[:, items[ok]]
        return out

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True) -> Recommendations:
        """Top-k items for one user id or a batch, best first.

        Args:
            user_ids: One external user id or a sequence of them.
            k: List length; larger than the catalogue gives the whole catalogue.
            exclude_seen: Leave out items the user interacted with in the fit data.

        Returns:
            Recommendations with item ids of shape (n, k) (``None``-padded when
            fewer than k items remain).

        Raises:
            UnknownIDError: A user id is not in the fit data.
        """
        check_is_fitted(self)
        if int(k) < 1:
            raise SegrecError(f"k must be >= 1; got {k}")
        user_ids = np.atleast_1d(np.asarray(user_ids, dtype=object)).astype(str)
        users = self._user_index(user_ids)
        items, scores = rank_in_chunks(
            self._score, users, int(k), seen=self.seen_ if exclude_seen else None
        )
        return self._package(user_ids, items, scores, int(k))

    def _package(self, user_ids, items, scores, k, segment=None, tier=None) -> Recommendations:
        n = len(user_ids)
        ids = np.full((n, k), None, dtype=object)
        vals = np.full((n, k), np.nan, dtype=np.float32)
        w = items.shape[1]
        valid = items >= 0
        ids[:, :w][valid] = self.item_vocab_.id(items[valid])
        vals[:, :w] = np.where(valid, scores, np.nan)
        return Recommendations(
            user_ids=np.asarray(user_ids, dtype=object),
            item_ids=ids,
            scores=vals,
            segment=np.full(n, -1, np.int64) if segment is None else segment,
            tier=np.full(n, self.name, dtype=object) if tier is None else tier,
        )

    # ----------------------------------------------------------------- cost
    def n_parameters(self) -> int:
        """Learned floating-point numbers (float arrays of ``_state()`` and sub-models).

        Override where ``_state()`` holds more than the parameters.
        """
        check_is_fitted(self)
        from ..evaluate.cost import state_parameters

        return state_parameters(self)

    def flops_per_request(self, n_history=None):
        """Analytic FLOPs to score and rank the catalogue for one user (issue 5).

        The default uses the formula registered for this model's ``name`` in
        :data:`segrec.evaluate.cost.FLOP_RULES`, else one multiply-add per
        parameter; override it where the model knows better.

        Args:
            n_history: History length (scalar or array); None = the mean over fit users.

        Returns:
            float, or a float array shaped like ``n_history``.
        """
        check_is_fitted(self)
        from ..evaluate.cost import analytic_flops

        return analytic_flops(self, n_history)

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (besides vocabularies and seen items)."""
        return {}

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`_state` saved."""

    def _meta(self) -> dict[str, Any]:
        """JSON-able learned values (e.g. chosen hyperparameters) to save."""
        return {}

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory ``path`` atomically.

        Layout: ``model.json`` (class, config, learned metadata, versions),
        ``tensors.safetensors``, ``users.parquet`` and ``items.parquet`` (ids).
        """
        check_is_fitted(self)
        with atomic_dir(path) as tmp:
            self.save_into(tmp)
        return Path(path)

    def save_into(self, directory: Path) -> None:
        """Write the model's files into an existing directory (used by bundles)."""
        from .. import __version__

        tensors = {
            "seen_indptr": self.seen_.indptr.astype(np.int64),
            "seen_indices": self.seen_.indices.astype(np.int32),
            **{f"state.{k}": v for k, v in self._state().items()},
        }
        save_tensors(directory / "tensors.safetensors", tensors)
        write_table(directory / "users.parquet", pd.DataFrame({"id": self.user_vocab_.ids.astype(str)}))
        write_table(directory / "items.parquet", pd.DataFrame({"id": self.item_vocab_.ids.astype(str)}))
        write_json(directory / "model.json", {
            "class": self.name,
            "config": self.config.model_dump(mode="json"),
            "meta": self._meta(),
            "segrec_version": __version__,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
        })
        self._save_extra(directory)

    def _save_extra(self, directory: Path) -> None:
        """Write further files (e.g. sub-models in sub-directories); default none."""

    def _load_extra(self, directory: Path) -> None:
        """Read what :meth:`_save_extra` wrote; default none."""

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model saved by :meth:`save`; never unpickles.

        Called on :class:`Recommender` it dispatches on the saved class name; on a
        subclass it also checks the saved class matches. The directory is untrusted
        input: reads stay inside it (:func:`segrec.io.confined_reads`), every tensor is
        checked against the vocabularies before use (:func:`check_tensors`), and the
        loaded model scores a trial user before it is returned, so a crafted artifact
        fails here with one :class:`SegrecError` instead of crashing a request later.

        Raises:
            SegrecError: The directory is not a loadable model of this segrec.
        """
        path = Path(path)
        with confined_reads(path), _loading(path):
            return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> Recommender:
        from . import MODELS

        info = read_json(path / "model.json")
        name = info.get("class") if isinstance(info, dict) else None
        target = MODELS.get(name) if isinstance(name, str) else None
        if target is None:
            raise SegrecError(f"{path}: unknown model class {str(name)[:60]!r}; known: {sorted(MODELS)}")
        if cls is not Recommender and target is not cls:
            raise SegrecError(f"{path}: holds a {name!r} model, not {cls.name!r}")
        model = target(config=target.Config.model_validate(info["config"]))
        tensors = load_tensors(path / "tensors.safetensors")
        model.user_vocab_ = _vocabulary(path / "users.parquet")
        model.item_vocab_ = _vocabulary(path / "items.parquet")
        n_users, n_items = len(model.user_vocab_), len(model.item_vocab_)
        check_tensors(path / "tensors.safetensors", tensors, n_users, n_items)
        indices = tensors["seen_indices"]
        model.seen_ = sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, tensors["seen_indptr"]),
            shape=(n_users, n_items),
        )
        state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
        model._set_state(state, info.get("meta", {}))
        model._load_extra(path)
        if n_users:  # a trial: wrong-shaped tensors fail now, not on every request
            trial = np.unique(np.array([0, n_users - 1], dtype=np.int64))
            scores = np.asarray(model.score_dense(trial))
            if scores.shape != (len(trial), n_items):
                raise SegrecError(f"{path}: the saved model gives scores of shape {scores.shape} for "
                                  f"{len(trial)} users, but its catalogue has {n_items} items; "
                                  "the artifact is corrupt")
        return model


@contextlib.contextmanager
def _loading(path: Path):
    """Turn any failure while loading ``path`` into one :class:`SegrecError` naming it."""
    try:
        yield
    except SegrecError:
        raise
    except (MemoryError, RecursionError, Exception) as exc:  # a crafted file must never be a traceback
        raise SegrecError(f"{path}: the saved model does not load ({type(exc).__name__}: "
                          f"{str(exc)[:160]}); the artifact is corrupt or from another segrec "
                          "version") from exc


def _vocabulary(path: Path) -> Vocabulary:
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
