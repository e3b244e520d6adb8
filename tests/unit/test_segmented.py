"""SegmentedRecommender and PerSegmentRecommender: routing, fallback, artifacts."""

import numpy as np
import pytest

from segrec import SegrecError
from segrec.models import (
    EASERecommender,
    FitContext,
    PerSegmentRecommender,
    PopularityRecommender,
    Recommender,
)
from segrec.route import RoutingPolicy, SegmentedRecommender, choose_accuracy
from segrec.split import temporal_split
from segrec.types import Interactions, Vocabulary


def _two_tastes(n_per_group=40, n_items=40, seed=0):
    """Two user groups; group g consumes items from its own half of the catalogue,
    in a fixed cyclic order, so a model fitted on the group's users wins for it."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    half = n_items // 2
    for g in range(2):
        for u in range(n_per_group):
            uid = g * n_per_group + u
            start = rng.integers(half)
            seq = (start + np.arange(12)) % half + g * half
            users += [uid] * len(seq)
            items += seq.tolist()
            ts += list(range(len(seq)))
    n_users = 2 * n_per_group
    data = Interactions.from_arrays(users, items, timestamps=ts,
                                    user_vocab=Vocabulary([f"u{i}" for i in range(n_users)]),
                                    item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]))
    labels = np.repeat([0, 1], n_per_group)
    return data, labels


def test_per_segment_models_only_see_their_users():
    data, labels = _two_tastes()
    model = PerSegmentRecommender(base="popularity", min_segment_users=5).fit(
        data, context=FitContext(segments=labels))
    recs = model.recommend(["u0", "u79"], k=5, exclude_seen=False)
    # popularity within group 0 only ever recommends group-0 items (i0..i19)
    assert all(int(i[1:]) < 20 for i in recs.item_ids[0])
    assert all(int(i[1:]) >= 20 for i in recs.item_ids[1])


def test_small_segment_scores_nan_and_segmented_falls_back():
    data, labels = _two_tastes()
    labels = labels.copy()
    labels[:3] = 2  # a 3-user segment: below min_segment_users -> no local model
    local = PerSegmentRecommender(base="popularity", min_segment_users=5).fit(
        data, context=FitContext(segments=labels))
    assert np.isnan(local.score_dense(np.array([0]))).all()
    seg = SegmentedRecommender(tiers={"local": local.with_params(), "global": PopularityRecommender(),
                                "popularity": PopularityRecommender()},
                               routing={0: "local", 1: "local", 2: "local"})
    seg.fit(data, context=FitContext(segments=labels))
    scores = seg.score_dense(np.array([0, 50]))
    assert np.isfinite(scores).all()  # user 0 got the global fallback
    np.testing.assert_allclose(scores[0], seg.tiers_["global"].score_dense(np.array([0]))[0])


def test_validation_routing_picks_the_better_tier_and_round_trips(tmp_path):
    data, labels = _two_tastes()
    split = temporal_split(data)
    seg = SegmentedRecommender(tiers={"global": PopularityRecommender(),
                                "local": PerSegmentRecommender(base="popularity", min_segment_users=5),
                                "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid, context=FitContext(segments=labels))
    table = seg.validation_
    assert set(table["tier"]) == {"global", "local", "popularity"}
    for s in (0, 1):
        rows = table[table.segment == s].set_index("tier")["ndcg@10"]
        assert seg.routing_[s] == rows.idxmax()
    recs = seg.recommend(["u0", "u45"], k=3)
    assert list(recs.segment) == [0, 1]
    assert list(recs.tier) == [seg.routing_[0], seg.routing_[1]]
    seg.save(tmp_path / "m")
    again = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(again.recommend(["u0", "u45"], k=3).item_ids, recs.item_ids)
    assert again.routing_ == seg.routing_
    # a loaded composite clones with its tiers (issue 13), and the clone refits to the same model
    clone = again.with_params()
    assert set(clone.tiers) == set(seg.tiers_) and clone.tiers_ is None
    clone.fit(split.train, valid=split.valid, context=FitContext(segments=labels))
    np.testing.assert_array_equal(clone.recommend(["u0", "u45"], k=3).item_ids, recs.item_ids)


def test_routing_without_valid_uses_an_inner_split_and_labels_are_checked():
    data, labels = _two_tastes()
    tiers = {"global": EASERecommender(reg=10.0), "popularity": PopularityRecommender()}
    seg = SegmentedRecommender(tiers=tiers)
    seg.fit(data, context=FitContext(segments=labels))  # routed on the last 10% of each user's history
    assert set(seg.routing_) == {0, 1} and seg.validation_ is not None
    with pytest.raises(SegrecError, match="one label per user"):
        seg.with_params().fit(data, context=FitContext(segments=labels[:5]))


def test_config_round_trip_builds_an_unfitted_copy():
    seg = SegmentedRecommender(tiers={"global": PopularityRecommender()}, policy=RoutingPolicy(min_gain=0.01))
    again = type(seg)(config=seg.config)
    assert again.config == seg.config and again.tiers == {}


def test_choose_accuracy_respects_min_gain():
    import pandas as pd

    table = pd.DataFrame({"segment": [0, 0, 1, 1], "tier": ["global", "local"] * 2,
                          "users": [10] * 4, "ndcg@10": [0.30, 0.31, 0.20, 0.40]})
    assert choose_accuracy(table) == {0: "local", 1: "local"}
    assert choose_accuracy(table, min_gain=0.05) == {0: "global", 1: "local"}


def test_heavy_inner_versions_are_released_and_refitted_for_blends_with_the_same_result(monkeypatch):
    """Releasing heavy inner versions (issue 12's memory bound) changes what is alive, not the routing."""
    import segrec.route._fitting as fitting

    data, labels = _two_tastes()
    fits = []
    original = EASERecommender._fit
    monkeypatch.setattr(EASERecommender, "_fit",
                        lambda self, *a, **k: (fits.append(1), original(self, *a, **k))[1])

    def routed():
        tiers = {"global": EASERecommender(reg=10.0), "popularity": PopularityRecommender(),
                 "local": PerSegmentRecommender(base="popularity", min_segment_users=5)}
        seg = SegmentedRecommender(tiers=tiers, large_tiers=("global",))
        return seg.fit(data, context=FitContext(segments=labels))

    kept = routed()
    n_kept = len(fits)
    monkeypatch.setattr(fitting, "HEAVY_BYTES", -1)  # every inner version counts as heavy
    released = routed()
    assert "global+local" in kept.selection_["blends"], "the test needs a blend with the EASE tier"
    # EASE: full fit + inner fit, and once more for the blend pass after its release
    assert n_kept == 2 and len(fits) - n_kept == 3
    assert kept.routing_ == released.routing_
    np.testing.assert_allclose(kept.validation_["ndcg@10"], released.validation_["ndcg@10"])
