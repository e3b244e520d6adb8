"""Analytic cost of a Recommender: learned parameters and FLOPs per request (issue 5).

A mixin of :class:`~segrec.models.base.Recommender`; the router's cost budget and the
run's cost report read these numbers.
"""

from __future__ import annotations

import numpy as np

from ._registry import check_is_fitted

__all__ = ["CostMixin"]


class CostMixin:
    """Parameter counts and FLOPs of :class:`~segrec.models.base.Recommender` (see the module docstring)."""

    def n_parameters(self) -> int:
        """Learned floating-point numbers: float arrays of ``_state()`` plus the sub-models'.

        Integer arrays (histories, segment labels, sparse indices) are bookkeeping,
        not parameters. Override where ``_state()`` holds more than the parameters.
        """
        check_is_fitted(self)
        own = sum(int(np.asarray(a).size) for a in self._state().values()
                  if np.issubdtype(np.asarray(a).dtype, np.floating))
        return own + sum(int(m.n_parameters()) for m in self.sub_models())

    def flops_per_request(self, n_history=None, *, segments=None, new_user: bool = False):
        """Analytic FLOPs to score and rank the catalogue for one request (issue 5).

        A known user of a model with an item table is served from their cached vector
        (:meth:`prepare_serving`): the serving cost is that product (``2 * d * n_items``
        plus the bias), whatever the history length. Otherwise, and for new users,
        scoring FLOPs come from the model's own :meth:`_score_flops` (one multiply-add
        per learned number unless it knows better). Ranking adds about one operation
        per item.

        Args:
            n_history: History length (scalar or array); None = the mean over fit users.
            segments: Segment per request, shaped like ``n_history``; models with one
                sub-model per segment cost each request by its segment's model (NaN
                where there is none) instead of their mean.
            new_user: Cost a brand-new user's request (scored from their items: the
                full forward pass) instead of a known user's.

        Returns:
            float, or a float array shaped like ``n_history``.
        """
        check_is_fitted(self)
        if n_history is None:
            lengths = np.diff(self.seen_.indptr).astype(np.float64)
            h = np.array(lengths.mean() if len(lengths) else 0.0)
        else:
            h = np.asarray(n_history, dtype=np.float64)
        table = None if new_user else self.item_table()
        scoring = np.full_like(h, table.flops()) if table is not None else self._score_flops(h, segments)
        flops = np.asarray(scoring, dtype=np.float64) + float(self.n_items)
        return float(flops) if flops.ndim == 0 else flops

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        """Scoring FLOPs for history lengths ``h``: a dense pass touching every learned number once."""
        return np.full_like(h, 2.0 * self.n_parameters())

    def flops_per_user(self, users: np.ndarray) -> np.ndarray:
        """Analytic FLOPs of each dense user's request (their own history length)."""
        check_is_fitted(self)
        lengths = np.diff(self.seen_.indptr).astype(np.float64)
        return np.asarray(self.flops_per_request(lengths[np.asarray(users, np.int64)]), np.float64)
