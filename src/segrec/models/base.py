"""The Recommender protocol every model, baseline and routed system obeys.

A subclass supplies a pydantic ``Config`` class, a saved ``name`` and hooks:
``_fit(train, valid, context)``, ``_score(users)`` (dense scores over the
catalogue), ``_score_histories(histories, segments)`` for new users (in the form
its ``history_input`` tag names), ``_score_flops(h, segments)`` for its cost,
and ``_state()`` / ``_set_state(tensors, meta)`` for its artifact. The base class
owns everything that must behave identically across models: the one ``fit``
signature, id mapping, seen-item exclusion, top-k, fitted checks, the
conversion between item rows and item sequences, and the artifact format
(:mod:`segrec.models._artifact`). Serving from cached user vectors
(:mod:`segrec.models._serving`) and the analytic cost (:mod:`segrec.models._cost`)
are mixins of it, each its own concept.

A class that declares ``name`` registers itself under it, so
``Recommender.load`` finds every model without an import of the models package
(which would be a cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from ..errors import DataValidationError, SegrecError, UnknownIDError
from ..evaluate.ranking import rank_in_chunks
from ..types import Interactions, Recommendations, Vocabulary
from ._cost import CostMixin
from ._histories import as_history_input, n_histories
from ._registry import check_is_fitted, model_class, register, registered_models
from ._serving import ServingMixin
from ._vectors import UserVectors, make_user_vectors
from .context import FitContext
from .tags import RecommenderTags, get_tags

__all__ = ["ModelConfig", "Recommender", "check_is_fitted", "model_class", "registered_models"]

class ModelConfig(BaseModel):
    """Base of every model config: frozen, and unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Recommender(ServingMixin, CostMixin):
    """Base class: ``fit`` / ``score`` / ``recommend`` / ``score_histories`` / ``save`` / ``load``.

    Subclasses set ``Config`` (a :class:`ModelConfig`) and ``name``; they are built
    from a config object or keyword overrides, never both. Learned attributes end
    with ``_``; ``item_vocab_`` marks a fitted model. Capabilities are declared in
    :meth:`__recommender_tags__` and read with :func:`~segrec.models.tags.get_tags`.
    """

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    name: ClassVar[str] = "base"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a shared base (e.g. the item-item models) is not saved
            register(cls)

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
        #: cost breakdown shows them); each model records what it has (None before a fit)
        self.fit_timings_: dict[str, float] | None = None
        #: fingerprint of the data the last fit learned from (train ∪ valid), so a composite can
        #: tell whether a kept inner model was fitted on the very inner split it needs
        self.fitted_on_: str | None = None
        #: cached known-user vectors (:mod:`segrec.models._vectors`) for models with an item
        #: table; set by :meth:`prepare_serving`, saved with the model, cleared by ``fit``
        self.user_vectors_: UserVectors | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({args})"

    def __recommender_tags__(self) -> RecommenderTags:
        """This model's declared capabilities; override with ``replace(super()...(), field=...)``."""
        return RecommenderTags()

    def with_params(self, **changes: Any) -> Self:
        """An unfitted copy with some config values changed (re-validated)."""
        return type(self)(self.Config.model_validate({**self.config.model_dump(), **changes}))

    # ------------------------------------------------------------------ fit
    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            context: FitContext | None = None) -> Self:
        """Learn from ``train`` (and ``valid``), forgetting any earlier fit.

        Args:
            train: Fit interactions.
            valid: Optional held-out tail of the fit data. A model uses it only to
                choose settings or stop early, then learns from train ∪ valid
                (EVAL_PROTOCOL's black-box rule). Without it, a model that tunes
                carves its own inner validation out of ``train``.
            context: What else the fit may use (segments, item embeddings, executor,
                device, already-fitted shared models); see :class:`FitContext`.

        Returns:
            self, fitted.

        Raises:
            SegrecError: No interactions; DataValidationError: a model tagged
                ``requires_segments`` got no or wrongly shaped ``context.segments``.
        """
        if len(train) == 0:
            raise SegrecError(f"{type(self).__name__}.fit: the training data has no interactions")
        context = FitContext() if context is None else context
        self._check_context(train, context)
        if context.device is not None and "device" in self.Config.model_fields:
            self.config = self.config.model_copy(update={"device": context.device})
        valid = None if valid is None or len(valid) == 0 else valid
        full = train if valid is None else train.concat(valid)
        self.user_vocab_ = None
        self.item_vocab_ = None
        self.fit_timings_ = {}
        self._kept_inner = None  # a grid search may keep its winner (fitted on the inner train part)
        self._keep_inner = context.keep_inner
        self.user_vectors_ = None  # a refit makes every cached vector stale
        self._fit(train, valid, context)
        self.user_vocab_ = full.user_vocab
        self.item_vocab_ = full.item_vocab
        self.seen_ = full.to_csr()
        self.fitted_on_ = full.fingerprint()
        return self

    def _check_context(self, train: Interactions, context: FitContext) -> None:
        if not get_tags(self).requires_segments:
            return
        segs = context.segments
        if segs is None or segs.shape != (train.n_users,):
            got = "none" if segs is None else f"shape {segs.shape}"
            raise DataValidationError(
                f"{type(self).__name__}.fit needs context.segments: an int array of shape (n_users,) = "
                f"({train.n_users},); got {got}", source="segments", problem="wrong shape")

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        raise NotImplementedError

    def _score(self, users: np.ndarray) -> np.ndarray:
        """Scores of shape (len(users), n_items) for dense user ids; NaN = cannot score."""
        raise NotImplementedError

    def inner_model(self) -> Recommender | None:
        """The model as fitted on the inner train part only, if ``fit`` kept it.

        A model that chose its settings on (train -> valid) and then refitted on
        train ∪ valid may keep the train-only version; a composite that must score
        valid honestly (the router's stage 1) reuses it instead of fitting again.
        None means "not kept": the caller fits a fresh copy. Here: the winner of the
        model's own grid search (:func:`~segrec.models.tuning.grid_search`), when it kept it.
        """
        return getattr(self, "_kept_inner", None)

    def release_inner(self) -> None:
        """Drop a kept grid-search winner once the router has used it (its memory is freed)."""
        self._kept_inner = None

    def sub_models(self) -> list[Recommender]:
        """Fitted models this one is made of and saves apart (per-segment models, tiers); none here."""
        return []

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

    def serves_segments(self, segments: np.ndarray) -> np.ndarray:
        """Bool per segment label: whether this model has what it needs to score users there.

        True everywhere by default; per-segment models are False for segments without a model.
        """
        return np.ones(np.shape(segments), dtype=bool)

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

    def score_histories(self, histories, segments=None) -> np.ndarray:
        """Scores for users known only by their items (brand-new users), without refitting.

        Args:
            histories: One sequence of dense item indices per user, oldest first, or a
                sparse (n, n_items) matrix of item rows; converted to what the model
                takes (its ``history_input`` tag).
            segments: Optional segment per user (segment-aware models use it).

        Returns:
            float32 array of shape (n, n_items); NaN rows for users the model cannot
            score from items (an empty history, unless it ignores histories).

        Raises:
            SegrecError: The model has no new-user path, or the inputs do not fit it.
        """
        check_is_fitted(self)
        tags = get_tags(self)
        if tags.history_input is None:
            raise SegrecError(f"{type(self).__name__} cannot score new users from their items")
        n = n_histories(histories)
        segs = None if segments is None else np.asarray(segments, dtype=np.int64).reshape(-1)
        if segs is not None and len(segs) != n:
            raise SegrecError(f"score_histories: {n} histories but {len(segs)} segments")
        inputs, empty = as_history_input(histories, tags.history_input, self.n_items)
        scores = np.array(self._score_histories(inputs, segs), dtype=np.float32, copy=True)
        if tags.needs_history:
            scores[empty] = np.nan
        return scores

    def _score_histories(self, histories, segments: np.ndarray | None) -> np.ndarray:
        """Hook: (n, n_items) scores for histories in the ``history_input`` form."""
        raise NotImplementedError

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

    # ------------------------------------------------------------- updates
    def add_interactions(self, users: np.ndarray, items: np.ndarray, *,
                         done: set[int] | None = None) -> np.ndarray:
        """Append new interactions of known users to their fit history; nothing is relearned.

        What a request reads from the history follows: seen items (excluded), the
        Transformer's sequence, the item-item models' rows, and the cached vectors of
        these users, recomputed from their new history (ALS: folded in against the
        fixed item factors). Weights, segments and routing stay as fitted; a refit
        (``segrec run``) relearns them. ``segrec update`` applies this to a saved run.

        Args:
            users: Dense user ids, one per interaction.
            items: Dense item ids; within each user, oldest first (after the fit history).
            done: ``id()`` of models already updated in this pass: a model shared by two
                parents (an adapter's global model is also the composite's ``global`` tier
                in memory after a fit) is updated once.

        Returns:
            The distinct users whose history changed.

        Raises:
            SegrecError: An id outside the vocabularies.
        """
        check_is_fitted(self)
        done = set() if done is None else done
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        if id(self) in done:
            return np.unique(users)
        done.add(id(self))
        n_users, n_items = self.seen_.shape
        if len(users) != len(items) or (len(users) and (users.min() < 0 or users.max() >= n_users
                                                        or items.min() < 0 or items.max() >= n_items)):
            raise SegrecError(f"add_interactions: users and items must be equal-length dense ids within "
                              f"({n_users} users, {n_items} items)")
        touched = np.unique(users)
        added = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=self.seen_.shape)
        merged = (self.seen_ + added).tocsr()
        merged.data[:] = 1.0
        merged.sort_indices()
        self.seen_ = merged
        self._add_interactions(users, items, done)
        for sub in self.sub_models():
            sub.add_interactions(users, items, done=done)
        cached = self.user_vectors_
        if cached is not None and len(touched):
            vectors, groups = self._user_vectors(touched)
            fresh = make_user_vectors(cached.table, vectors, groups)
            self.user_vectors_ = cached.replace_users(touched, fresh.vectors, fresh.groups)
        return touched

    def _add_interactions(self, users: np.ndarray, items: np.ndarray, done: set[int]) -> None:
        """Hook: update history-dependent state beyond ``seen_`` (already merged); default none.

        A model holding another (not a sub-model) passes ``done`` on to its ``add_interactions``.
        """

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (besides vocabularies and seen items)."""
        return {}

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`_state` saved."""

    def _meta(self) -> dict[str, Any]:
        """JSON-able learned values (e.g. chosen hyperparameters) to save."""
        return {}

    def _save_extra(self, directory: Path) -> None:
        """Write further files (e.g. sub-models in sub-directories); default none."""

    def _load_extra(self, directory: Path) -> None:
        """Read what :meth:`_save_extra` wrote; default none."""

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory ``path`` atomically (layout: ``models/_artifact.py``)."""
        from ._artifact import save_model

        return save_model(self, path)

    def save_into(self, directory: Path) -> None:
        """Write the model's files into an existing directory (used by bundles and composites)."""
        from ._artifact import write_model

        write_model(self, Path(directory))

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model saved by :meth:`save`; never unpickles.

        Called on :class:`Recommender` it dispatches on the saved class name; on a
        subclass it also checks the saved class matches.
        """
        from ._artifact import load_model

        return load_model(path, None if cls is Recommender else cls)
