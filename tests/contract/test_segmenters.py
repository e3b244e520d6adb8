"""Segmenter contract (issue 3): every segmenter obeys the same protocol.

One short class per segmenter over :class:`SegmenterContract`; a new segmenter opts in
with ``make_segmenter()``. (Candidates for ``segrec.testing`` once it exists.)
"""

import numpy as np
import pytest

from segrec.errors import NotFittedError
from segrec.features import FeaturePipeline, HashingEmbedder
from segrec.segment import (
    AgglomerativeSegmenter,
    GMMSegmenter,
    KMeansSegmenter,
    Segmentation,
    SpectralSegmenter,
    TierSegmenter,
    VAESegmenter,
)
from segrec.types import Interactions, Vocabulary


@pytest.fixture(scope="module")
def feats():
    """90 users in 3 planted groups, each with its own item block, plus a little noise."""
    rng = np.random.default_rng(0)
    truth = np.arange(90) % 3
    users, items = [], []
    for u in range(90):
        n = 6 + u % 7
        own = rng.integers(0, 10, n) + 10 * truth[u]
        users += [u] * n
        items += list(np.where(rng.random(n) < 0.9, own, rng.integers(0, 30, n)))
    import pandas as pd

    table = pd.DataFrame(
        {
            "title": [f"{['star', 'love', 'ghost'][i // 10]} {i}" for i in range(30)],
            "categories": [["SciFi", "Romance", "Horror"][i // 10] for i in range(30)],
        }
    )
    data = Interactions.from_arrays(
        users,
        items,
        user_vocab=Vocabulary([f"u{u}" for u in range(90)]),
        item_vocab=Vocabulary([f"i{i}" for i in range(30)]),
        item_table=table,
    )
    return FeaturePipeline(blocks=("behavior", "text"), embedder=HashingEmbedder(16)).fit_transform(data)


class SegmenterContract:
    def make_segmenter(self, **overrides):
        raise NotImplementedError

    def test_construct_without_data_and_config_roundtrip(self):
        seg = self.make_segmenter()
        clone = type(seg)(seg.config)
        assert clone.config == seg.config and repr(clone) == repr(seg)
        assert seg.with_params(random_state=7).config.random_state == 7

    def test_use_before_fit_raises(self, feats):
        with pytest.raises(NotFittedError, match="not fitted"):
            self.make_segmenter().assign(feats)

    def test_fit_returns_self_and_labels(self, feats):
        seg = self.make_segmenter()
        assert seg.fit(feats) is seg
        assert seg.labels_.shape == (feats.n_users,) and seg.labels_.dtype == np.int64
        assert set(np.unique(seg.labels_)) == set(range(seg.n_segments_))
        assert isinstance(seg.segmentation_, Segmentation)
        assert (np.diff(seg.segmentation_.sizes()) <= 0).all()  # canonical order
        if seg.centers_ is not None:
            assert seg.centers_.shape == (seg.n_segments_, feats.n_features)

    def test_same_seed_same_labels_and_refit_forgets(self, feats):
        a = self.make_segmenter().fit(feats)
        first = a.labels_.copy()
        a.fit(feats.rows(np.arange(30)))  # refit on other data forgets the old fit
        assert a.labels_.shape == (30,)
        b = self.make_segmenter().fit(feats)
        assert np.array_equal(first, b.labels_)

    def test_batch_assign_equals_single(self, feats):
        seg = self.make_segmenter().fit(feats)
        batch = seg.assign(feats)
        for i in (0, 41, 89):
            assert seg.assign(feats.rows(np.array([i])))[0] == batch[i]

    def test_input_not_mutated(self, feats):
        before = feats.matrix.copy()
        self.make_segmenter().fit(feats)
        assert np.array_equal(before, feats.matrix)


class TestKMeans(SegmenterContract):
    def make_segmenter(self, **overrides):
        return KMeansSegmenter(n_segments=3, random_state=0, **overrides)


class TestGMM(SegmenterContract):
    def make_segmenter(self, **overrides):
        return GMMSegmenter(n_segments=3, random_state=0, **overrides)


class TestSpectral(SegmenterContract):
    def make_segmenter(self, **overrides):
        return SpectralSegmenter(n_segments=3, random_state=0, **overrides)


class TestAgglomerative(SegmenterContract):
    def make_segmenter(self, **overrides):
        return AgglomerativeSegmenter(n_segments=3, **overrides)


class TestVAE(SegmenterContract):
    def make_segmenter(self, **overrides):
        return VAESegmenter(n_segments=3, random_state=0, epochs=3, **overrides)


class TestTiers(SegmenterContract):
    def make_segmenter(self, **overrides):
        return TierSegmenter(new_max_interactions=7, **overrides)
