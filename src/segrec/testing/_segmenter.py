"""The segmenter contract: checks every segmenter must pass, with an ARI check on planted groups."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from ..errors import NotFittedError

__all__ = ["SegmenterContract"]


class SegmenterContract:
    """Mixin of pytest checks every :class:`~segrec.segment.Segmenter` must pass.

    A test class defines :meth:`make_segmenter` (unfitted, seeded, 3 segments by
    default, ``**overrides`` passed to the constructor). The data are
    :func:`~segrec.testing.planted_features`: 90 users in 3 planted groups.

    Attributes:
        min_planted_ari: Adjusted Rand index with the planted groups the fit must
            reach; None for segmenters that do not cluster by taste (activity tiers).
    """

    min_planted_ari: ClassVar[float | None] = 0.9

    def make_segmenter(self, **overrides):
        """Return a fresh, unfitted segmenter with small, seeded settings."""
        raise NotImplementedError("a SegmenterContract test class must define make_segmenter()")

    @pytest.fixture(scope="class")
    @classmethod
    def planted(cls):
        """``(features, truth)`` of the planted users, built once per class."""
        from ._data import planted_features

        return planted_features()

    @pytest.fixture(scope="class")
    @classmethod
    def feats(cls, planted):
        """The planted users' features."""
        return planted[0]

    def test_construct_without_data_and_config_roundtrip(self):
        """Built from settings alone; ``type(s)(s.config)`` and ``with_params`` round-trip."""
        seg = self.make_segmenter()
        clone = type(seg)(seg.config)
        assert clone.config == seg.config and repr(clone) == repr(seg)
        assert seg.with_params(random_state=7).config.random_state == 7

    def test_use_before_fit_raises(self, feats):
        """``assign`` before ``fit`` raises NotFittedError."""
        with pytest.raises(NotFittedError, match="not fitted"):
            self.make_segmenter().assign(feats)

    def test_fit_returns_self_and_labels(self, feats):
        """``fit`` returns self with canonical int64 labels, a Segmentation and (where any) centres."""
        from ..segment import Segmentation

        seg = self.make_segmenter()
        assert seg.fit(feats) is seg
        assert seg.labels_.shape == (feats.n_users,) and seg.labels_.dtype == np.int64
        assert set(np.unique(seg.labels_)) == set(range(seg.n_segments_))
        assert isinstance(seg.segmentation_, Segmentation)
        assert (np.diff(seg.segmentation_.sizes()) <= 0).all()  # canonical order
        if seg.centers_ is not None:
            assert seg.centers_.shape == (seg.n_segments_, feats.n_features)

    def test_recovers_planted_segments(self, planted):
        """The fit finds the planted groups (ARI >= ``min_planted_ari``)."""
        if self.min_planted_ari is None:
            pytest.skip(f"{type(self.make_segmenter()).__name__} does not segment by taste")
        from sklearn.metrics import adjusted_rand_score

        feats, truth = planted
        ari = adjusted_rand_score(truth, self.make_segmenter().fit(feats).labels_)
        assert ari >= self.min_planted_ari, f"ARI with the planted groups {ari:.3f}"

    def test_same_seed_same_labels_and_refit_forgets(self, feats):
        """The same seed gives the same labels; a refit on other rows forgets the first fit."""
        a = self.make_segmenter().fit(feats)
        first = a.labels_.copy()
        a.fit(feats.rows(np.arange(30)))  # refit on other data forgets the old fit
        assert a.labels_.shape == (30,)
        b = self.make_segmenter().fit(feats)
        assert np.array_equal(first, b.labels_)

    def test_batch_assign_equals_single(self, feats):
        """Assigning a batch equals assigning its rows one at a time."""
        seg = self.make_segmenter().fit(feats)
        batch = seg.assign(feats)
        for i in (0, 41, 89):
            assert seg.assign(feats.rows(np.array([i])))[0] == batch[i]

    def test_input_not_mutated(self, feats):
        """``fit`` leaves the feature matrix alone."""
        before = feats.matrix.copy()
        self.make_segmenter().fit(feats)
        assert np.array_equal(before, feats.matrix)

    def test_state_round_trip_assigns_identically(self, feats):
        """Saved as arrays + JSON (no pickle) and rebuilt, it assigns every row the same."""
        from ..segment import SEGMENTERS
        from ..segment._persist import segmenter_from_state, segmenter_state

        seg = self.make_segmenter().fit(feats)
        tensors, meta = segmenter_state(seg)
        assert all(isinstance(v, np.ndarray) for v in tensors.values())
        again = segmenter_from_state(tensors, meta, SEGMENTERS)
        np.testing.assert_array_equal(again.assign(feats), seg.assign(feats))
        member = seg.membership(feats)
        if member is not None:
            np.testing.assert_allclose(again.membership(feats), member)
