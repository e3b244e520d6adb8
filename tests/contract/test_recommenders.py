"""Every Recommender against the shared contract in :mod:`segrec.testing`.

Adding a model is one short class: a fresh model with tiny, seeded settings.
"""

from __future__ import annotations

import numpy as np
import pytest

from segrec.models import (
    EASERecommender,
    ItemKNNRecommender,
    ItemSubsetRecommender,
    PerSegmentRecommender,
    PopularityRecommender,
    TransformerRecommender,
)
from segrec.models.mf import ALSRecommender
from segrec.models.multvae import MultVAERecommender
from segrec.testing import RecommenderContract


class TestPopularity(RecommenderContract):
    known_answer = False  # the same list for everyone

    def make_model(self):
        return PopularityRecommender()


class TestItemKNN(RecommenderContract):
    def make_model(self):
        return ItemKNNRecommender(k=10)


class TestItemKNNTuned(RecommenderContract):
    """The default (k chosen on inner validation) path, on the same tiny data."""

    def make_model(self):
        return ItemKNNRecommender(k_grid=(5, 10))


class TestEASE(RecommenderContract):
    def make_model(self):
        return EASERecommender(reg=10.0)


class TestItemSubsetEASE(RecommenderContract):
    """EASE on the touched items only, scored over the whole catalogue (local models' form)."""

    def make_model(self):
        return ItemSubsetRecommender(base="ease", base_params={"reg": 10.0})


class TestALSNumpy(RecommenderContract):
    def make_model(self):
        return ALSRecommender(embedding_size=8, reg=0.1, epochs=10, backend="numpy", random_state=0)


class TestALSImplicit(RecommenderContract):
    def make_model(self):
        pytest.importorskip("implicit")
        return ALSRecommender(embedding_size=8, reg=0.1, epochs=10, backend="implicit", random_state=0)


class TestALSTuned(RecommenderContract):
    def make_model(self):
        return ALSRecommender(embedding_size_grid=(4, 8), reg_grid=(0.1,), epochs=5, backend="numpy")


class TestMultVAE(RecommenderContract):
    def make_model(self):
        return MultVAERecommender(hidden_sizes=(32,), embedding_size=8, epochs=15, patience=15,
                                  batch_size=16, learning_rate=0.03, random_state=0, n_jobs=1)


class TestTransformer(RecommenderContract):
    history_format = "sequences"

    def make_model(self):
        return TransformerRecommender(embedding_size=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0,
                                      epochs=30, patience=30, batch_size=16, learning_rate=0.01,
                                      n_threads=1, random_state=0)


class TestPerSegmentEASE(RecommenderContract):
    """Segment-aware models get their segments through ``fit_params``."""

    def make_model(self):
        return PerSegmentRecommender(base="ease", base_params={"reg": 10.0}, min_segment_users=2)

    def fit_params(self, train):
        return {"segments": np.arange(train.n_users) * 3 // train.n_users}  # the 3 planted groups
