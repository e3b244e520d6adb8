"""Every Recommender against the shared contract in :mod:`segrec.testing`.

Adding a model is one short class: a fresh model with tiny, seeded settings.
"""

from __future__ import annotations

import pytest

from segrec.models import (
    AdaptedTransformerRecommender,
    EASERecommender,
    ItemKNNRecommender,
    ItemSubsetRecommender,
    JointTransformerRecommender,
    PerSegmentRecommender,
    PopularityRecommender,
    TransformerRecommender,
)
from segrec.models.mf import ALSRecommender
from segrec.models.multvae import MultVAERecommender
from segrec.models.transformer import TransformerConfig
from segrec.route import SegmentedRecommender
from segrec.route.blend import BlendRecommender
from segrec.segment import SegmentationPipeline
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


TINY_TRANSFORMER = dict(embedding_size=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0, epochs=30,
                        patience=30, batch_size=16, learning_rate=0.01, n_threads=1, random_state=0)


class TestTransformer(RecommenderContract):
    def make_model(self):
        return TransformerRecommender(**TINY_TRANSFORMER)


class TestAdaptedTransformer(RecommenderContract):
    """Tagged ``requires_segments``: fitted with the planted groups; it trains its own global model."""

    def make_model(self):
        return AdaptedTransformerRecommender(global_model=TransformerConfig(**TINY_TRANSFORMER), epochs=3,
                                             max_param_ratio=0.5, n_threads=1, random_state=0)


class TestJointTransformer(RecommenderContract):
    """Tagged ``requires_segments``: θ_shared and θ_k trained together on the planted groups."""

    def make_model(self):
        return JointTransformerRecommender(**TINY_TRANSFORMER, max_param_ratio=0.5)


class TestPerSegmentEASE(RecommenderContract):
    """Tagged ``requires_segments``: the contract fits it with the planted groups."""

    def make_model(self):
        return PerSegmentRecommender(base="ease", base_params={"reg": 10.0}, min_segment_users=2)


class TestBlend(RecommenderContract):
    """A blend on its own: it fits and saves both parts (inside a composite it shares the composite's)."""

    def make_model(self):
        return BlendRecommender(large=EASERecommender(reg=10.0), small=ItemKNNRecommender(k=10), alpha=0.6)


class TestSegmented(RecommenderContract):
    """The composite: its own segmenter, three tiers, routing on inner validation, one artifact."""

    def make_model(self):
        return SegmentedRecommender(
            segmenter=SegmentationPipeline.build("kmeans", n_segments=3, text=False, random_state=0),
            tiers={"global": EASERecommender(reg=10.0),
                   "local": PerSegmentRecommender(base="ease", base_params={"reg": 10.0},
                                                  min_segment_users=2),
                   "popularity": PopularityRecommender()})
