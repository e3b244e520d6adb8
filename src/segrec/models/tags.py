"""Declared capabilities of a Recommender: one small frozen tags object per class.

As scikit-learn's ``__sklearn_tags__``: a model says what it needs and offers by
overriding :meth:`Recommender.__recommender_tags__` (calling ``super()`` and
replacing fields with :func:`dataclasses.replace`), and every caller reads them
through :func:`get_tags`. A typo is an error, never a silent ``False``: the tags
class is a frozen, slotted dataclass, so an unknown field can be neither set nor read.

Example:
    >>> from segrec.models import PerSegmentRecommender
    >>> get_tags(PerSegmentRecommender()).requires_segments
    True
    >>> get_tags(PerSegmentRecommender()).segment_aware
    Traceback (most recent call last):
    ...
    AttributeError: 'RecommenderTags' object has no attribute 'segment_aware'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["RecommenderTags", "get_tags"]


@dataclass(frozen=True, slots=True)
class RecommenderTags:
    """What a model needs from ``fit`` and how it scores new users.

    Attributes:
        requires_segments: ``fit`` reads ``context.segments`` (one label per dense
            user) and fails without them; the model keeps them as ``segments_``.
        builds_on: Saved name of a fitted model this one starts from, taken from
            ``context.shared[builds_on]`` (the adapters start from ``"transformer"``);
            a composite fits that member first. None: the model stands alone.
        data_parallel: Can train data-parallel through an executor's
            ``fit_data_parallel`` (the Transformer on Ray Train).
        uses_item_embeddings: ``fit`` reads ``context.item_embeddings`` when given (a
            Transformer with ``item_init`` ``"text"`` or ``"auto"``); a composite passes it
            those of its segmentation's text features when the caller gave none.
        needs_item_embeddings: ``fit`` fails without them (``item_init="text"``), so the
            caller computes them first.
        history_input: What the ``_score_histories`` hook takes: ``"rows"`` (a binary
            user x item CSR, set-based models), ``"sequence"`` (time-ordered lists of
            dense item ids), or None (no new-user path). The public
            ``score_histories`` converts either input to this.
        needs_history: A user with an empty history cannot be scored (NaN row);
            False for models that ignore the history (popularity, composites
            whose fallback chain decides).
    """

    requires_segments: bool = False
    builds_on: str | None = None
    data_parallel: bool = False
    uses_item_embeddings: bool = False
    needs_item_embeddings: bool = False
    history_input: Literal["rows", "sequence"] | None = "rows"
    needs_history: bool = True


def get_tags(model: Any) -> RecommenderTags:
    """The declared :class:`RecommenderTags` of a model (an instance: tags may depend on its config).

    Raises:
        TypeError: ``model`` is not a Recommender (it declares no tags).
    """
    method = getattr(type(model), "__recommender_tags__", None)
    if method is None:
        raise TypeError(f"{type(model).__name__} is not a segrec Recommender: it declares no tags")
    tags = method(model)
    if not isinstance(tags, RecommenderTags):
        raise TypeError(f"{type(model).__name__}.__recommender_tags__ returned {type(tags).__name__}, "
                        "not RecommenderTags")
    return tags
