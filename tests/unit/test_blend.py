"""Blend tiers (issue 14): standardising, mixing, the rank-based NDCG, and a blend inside a composite."""

import numpy as np
import pytest
import scipy.sparse as sp

from segrec.errors import SegrecError
from segrec.evaluate import evaluate
from segrec.evaluate.metrics import ndcg
from segrec.evaluate.ranking import hit_matrix, rank_in_chunks
from segrec.models import EASERecommender, ItemKNNRecommender, PopularityRecommender, Recommender
from segrec.models.context import FitContext
from segrec.route import SegmentedRecommender
from segrec.route._measure import user_ndcg
from segrec.route.blend import BlendRecommender, combine, standardise
from segrec.split import temporal_split
from segrec.testing import planted_split


def _coords(csr, rows):
    sub = csr[rows]
    return np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), sub.indices


def test_standardise_uses_only_the_recommendable_items():
    rng = np.random.default_rng(0)
    scores = rng.normal(3.0, 2.0, (4, 9)).astype(np.float32)
    scores[2] = 5.0  # constant: no information
    scores[3] = np.nan  # cannot score
    seen = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [1, 4, 8])), shape=(4, 9))
    z = standardise(scores, *_coords(seen, np.arange(4)))
    for row in (0, 1):
        keep = np.setdiff1d(np.arange(9), seen[row].indices)
        expect = (scores[row] - scores[row, keep].mean()) / scores[row, keep].std()
        np.testing.assert_allclose(z[row], expect, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(z[row, keep].mean(), 0.0, atol=1e-5)
    np.testing.assert_array_equal(z[2], 0.0)
    assert np.isnan(z[3]).all()


def test_combine_endpoints_rank_as_each_side_and_a_missing_side_is_skipped():
    rng = np.random.default_rng(1)
    zl, zs = rng.normal(size=(3, 20)).astype(np.float32), rng.normal(size=(3, 20)).astype(np.float32)
    np.testing.assert_array_equal(np.argsort(combine(zl, zs, 1.0), 1), np.argsort(zl, 1))
    np.testing.assert_array_equal(np.argsort(combine(zl, zs, 0.0), 1), np.argsort(zs, 1))
    zs[1] = np.nan  # the small side cannot score user 1: the large side alone
    mixed = combine(zl, zs, np.array([0.3, 0.3, 0.3]))
    np.testing.assert_array_equal(mixed[1], zl[1])
    np.testing.assert_allclose(mixed[0], 0.3 * zl[0] + 0.7 * zs[0], rtol=1e-6)


def test_rank_based_ndcg_equals_the_evaluators_with_ties_and_seen_items():
    rng = np.random.default_rng(2)
    n, m = 60, 40
    scores = rng.integers(0, 6, (n, m)).astype(np.float32)  # many ties
    scores[5] = np.nan
    seen = sp.random(n, m, density=0.2, random_state=3, format="csr")
    seen.data[:] = 1
    truth = sp.random(n, m, density=0.1, random_state=4, format="csr")
    truth = sp.csr_matrix(truth - truth.multiply(seen))  # relevant items are never seen
    truth.eliminate_zeros()
    truth.data[:] = 1
    users = np.arange(n)
    top, _ = rank_in_chunks(lambda u: scores[u], users, 10, seen=seen)
    expect = ndcg(hit_matrix(top, truth, users), np.diff(truth.indptr), 10)
    got = user_ndcg(scores.copy(), *_coords(seen, users), truth)
    assert np.isnan(got[5])
    got[5] = 0.0
    np.testing.assert_allclose(got, expect, atol=1e-12)


def test_a_bound_blend_is_served_like_any_tier_and_saved_without_its_parts(tmp_path):
    split = planted_split()
    ease, knn = EASERecommender(reg=10.0).fit(split.train, valid=split.valid), ItemKNNRecommender(k=5).fit(
        split.train, valid=split.valid)
    segments = np.arange(split.train.n_users) % 2
    blend = BlendRecommender.bound(("ease", "itemknn"), ease, knn, alpha=0.5, alphas={0: 0.2, 1: 0.9},
                                   segments=segments)
    users = np.arange(split.train.n_users)
    dense = blend.score_dense(users)
    for u in (0, 1, 7):  # the single-user path agrees with the batch one
        np.testing.assert_allclose(blend.score_one(u), dense[u], rtol=1e-5, atol=1e-5)
    # a new user with a fit user's history and segment scores as that user does
    u = 3
    hist = [split.fit.history(u).tolist()]
    np.testing.assert_allclose(blend.score_histories(hist, segments[[u]])[0], dense[u], rtol=1e-4, atol=1e-4)
    assert blend.flops_per_request(5.0) > max(ease.flops_per_request(5.0), knn.flops_per_request(5.0))

    composite = SegmentedRecommender(tiers={"global": ease.with_params(), "itemknn": knn.with_params(),
                                            "popularity": PopularityRecommender()})
    composite.fit(split.train, valid=split.valid, context=FitContext(segments=segments))
    name = "global+itemknn"
    composite.tiers_[name] = BlendRecommender.bound(("global", "itemknn"), composite.tiers_["global"],
                                                    composite.tiers_["itemknn"], alpha=0.5, alphas={},
                                                    segments=segments)
    composite.routing_ = {0: name, 1: "global"}
    recs = composite.recommend(split.fit.user_vocab.ids[:6], k=4)
    assert list(recs.tier) == [name if s == 0 else "global" for s in segments[:6]]
    composite.save(tmp_path / "m")
    assert not (tmp_path / "m" / "tiers" / name).exists()  # a few numbers in the composite's model.json
    again = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(again.recommend(split.fit.user_vocab.ids[:6], k=4).item_ids, recs.item_ids)
    assert again.tiers_[name].large_ is again.tiers_["global"]
    with pytest.raises(Exception, match="saved by its composite"):
        composite.tiers_[name].save(tmp_path / "alone")
    spec = composite.tiers_[name].spec()
    for bad in ({**spec, "parts": ["global", "als"]}, {**spec, "alpha": 1.5}, {**spec, "alphas": {"0": "x"}},
                {**spec, "parts": "global"}, []):
        with pytest.raises(SegrecError, match="artifact"):  # a corrupt model.json: one clear error
            BlendRecommender.from_spec(bad, again.tiers_, segments)
    # the request path serves a blend one user at a time, and new users from their items
    from segrec.route import Router

    router = Router(again)
    one = router.recommend(user_id=str(split.fit.user_vocab.ids[0]), k=4)
    assert one.tier == recs.tier[0] and list(one.item_ids) == list(recs.item_ids[0])
    new = router.recommend(recent_items=[str(i) for i in split.fit.item_vocab.ids[:3]], k=4)
    assert len(new.item_ids) == 4


def test_every_member_is_a_candidate_and_a_blend_costs_both_parts():
    from segrec.data.synthetic import generate_synthetic

    data = generate_synthetic(n_users=240, n_items=120, n_segments=2, seed=0).to_interactions()
    split = temporal_split(data)
    segments = np.arange(data.n_users) % 2
    composite = SegmentedRecommender(
        tiers={"global": EASERecommender(reg=50.0), "itemknn": ItemKNNRecommender(k=20),
               "popularity": PopularityRecommender()}, large_tiers=("global",))
    composite.fit(split.train, valid=split.valid, context=FitContext(segments=segments))
    table = composite.validation_
    assert {"global", "itemknn", "popularity", "global+itemknn"} <= set(table["tier"])
    rows = table.set_index(["segment", "tier"])
    for s in (0, 1):
        parts = rows.loc[(s, "global"), "flops"] + rows.loc[(s, "itemknn"), "flops"]
        assert rows.loc[(s, "global+itemknn"), "flops"] > parts - data.n_items
        assert 0.0 < rows.loc[(s, "global+itemknn"), "alpha"] < 1.0
    assert table["chosen"].sum() == 2  # one row per segment
    sel = composite.selection_
    assert sel["best_single"] in {"global", "itemknn", "popularity"}
    assert composite.default_tier == sel["best_single"] and composite.chain().order[0] == sel["best_single"]
    # a segment leaves the best single system only where its cross-fitted gain is positive
    for row in sel["segments"]:
        assert row["left_best_single"] == (row["served"] != sel["best_single"])
    # the blend served on validation scores there as the selection measured it
    report = evaluate(composite, split, segments=segments)
    assert 0.0 < report.overall["ndcg@10"] <= 1.0
