"""Contract tests and known-answer data for Recommenders and segmenters, shipped with the library.

Like scikit-learn's ``estimator_checks`` and LensKit's ``lenskit.testing``, this
lets any Recommender or segmenter — ours or a user's — prove it obeys the
protocol with one short test class::

    from segrec.testing import RecommenderContract, SegmenterContract

    class TestMyModel(RecommenderContract):
        def make_model(self):
            return MyRecommender(embedding_size=8, epochs=3, random_state=0)

    class TestMySegmenter(SegmenterContract):
        def make_segmenter(self, **overrides):
            return MySegmenter(n_segments=3, random_state=0, **overrides)

The data helpers build tiny deterministic logs with a planted answer
(:func:`planted_split`, :func:`planted_features`), so a model that learns
anything gets recall@1 = 1.0, a segmenter recovers the planted groups, and a
broken one cannot hide behind "it ran". This package needs pytest (``segrec[dev]``).
"""

from ._data import (
    factor_catalogue,
    planted_features,
    planted_interactions,
    planted_labels,
    planted_split,
    random_interactions,
)
from ._recommender import RecommenderContract, assert_same_ranking
from ._segmenter import SegmenterContract

__all__ = [
    "RecommenderContract",
    "SegmenterContract",
    "assert_same_ranking",
    "factor_catalogue",
    "planted_features",
    "planted_interactions",
    "planted_labels",
    "planted_split",
    "random_interactions",
]
