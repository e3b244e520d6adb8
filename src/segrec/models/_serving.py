"""Serving from cached user vectors: the Recommender's single-request path and its cache.

Models whose scores factor as ``item_vectors @ v_u + bias[g_u]`` declare an item table;
their known users' vectors are computed once (:meth:`ServingMixin.prepare_serving`),
saved with the model and used for one-user requests. A mixin of
:class:`~segrec.models.base.Recommender`; kept apart so the protocol class stays one concept.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ._registry import check_is_fitted
from ._vectors import ItemTable, UserVectors, make_user_vectors

__all__ = ["ServingMixin"]


class ServingMixin:
    """The cached-vector part of :class:`~segrec.models.base.Recommender` (see the module docstring)."""

    def score_one(self, user: int) -> np.ndarray:
        """Scores (n_items,) of one dense user: the server's single-request path.

        A model with cached user vectors (:meth:`prepare_serving`) answers with one
        product of the user's vector and its item table: the numbers of
        :meth:`score_dense` up to float rounding (numpy's product instead of the one
        inside the forward pass; the top-k lists are the same, tested on ml-100k).
        Models override it where one user is much cheaper than a batch row (the
        item-item models skip scipy's per-call sparse indexing; bitwise equal).
        """
        cached = self.user_vectors_
        if cached is not None:
            return cached.score_one(int(user))
        check_is_fitted(self)
        return np.asarray(self._score(np.array([int(user)], dtype=np.int64)), dtype=np.float32)[0]

    # ------------------------------------------------------- cached vectors
    #: whether the cached vectors are written to the artifact (False where they are the model's
    #: own state already, e.g. ALS user factors)
    saves_user_vectors: ClassVar[bool] = True

    def item_table(self) -> ItemTable | None:
        """The item side when scores factor as ``item_vectors @ v_u + bias[g_u]``; None otherwise.

        Models that declare one also implement :meth:`_user_vectors`, and then serve
        known users from cached vectors (:meth:`prepare_serving`).
        """
        return None

    def _user_vectors(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Hook: ``(vectors (n, d), bias groups (n,) or None)`` of dense known users, from the model.

        Non-finite rows mark users the model cannot score (e.g. no fit history).
        """
        raise NotImplementedError

    def history_vectors(self, histories, segments=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Hook: vectors and bias groups for users given by their items (``history_input`` form).

        ``segrec update`` uses it to recompute a known user whose history grew.
        """
        raise NotImplementedError

    def prepare_serving(self) -> UserVectors | None:
        """Compute (once) every known user's vector, if the model has an item table; and of sub-models.

        Called when the model is saved and when a Router is built, so no request pays
        for it. Returns the cache (None for models that do not factor).
        """
        check_is_fitted(self)
        for sub in self.sub_models():
            sub.prepare_serving()
        table = self.item_table()
        if table is None:
            return None
        if self.user_vectors_ is None or self.user_vectors_.table.vectors.shape != table.vectors.shape:
            users = np.arange(len(self.user_vocab_), dtype=np.int64)
            vectors, groups = self._user_vectors(users)
            self.user_vectors_ = make_user_vectors(table, vectors, groups)
        return self.user_vectors_
