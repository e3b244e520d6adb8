"""Every segmenter against the shared contract in :mod:`segrec.testing` (issue 3, issue 13).

Adding a segmenter is one short class: ``make_segmenter()`` with tiny, seeded settings.
"""

from segrec.segment import (
    AgglomerativeSegmenter,
    GMMSegmenter,
    KMeansSegmenter,
    SpectralSegmenter,
    TierSegmenter,
    VAESegmenter,
)
from segrec.testing import SegmenterContract


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
    min_planted_ari = 0.5  # three epochs on 90 users: a rough latent space, still well above chance

    def make_segmenter(self, **overrides):
        return VAESegmenter(n_segments=3, random_state=0, epochs=3, **overrides)


class TestTiers(SegmenterContract):
    min_planted_ari = None  # activity tiers, not tastes: no planted answer to recover

    def make_segmenter(self, **overrides):
        return TierSegmenter(new_max_interactions=7, **overrides)
