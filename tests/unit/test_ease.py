"""EASE's scalable closed form and ItemKNN's one-sort neighbours against the direct computations."""

import numpy as np
import pytest
import scipy.sparse as sp

import segrec.resources
from segrec import ease as _ease
from segrec.errors import ResourceError, SegrecError
from segrec.evaluate.ranking import quick_ndcg
from segrec.models import EASERecommender, FitContext, ItemKNNRecommender
from segrec.models.baselines import _Neighbours
from segrec.testing import planted_split


def _random_binary(m, n, density, seed):
    rng = np.random.default_rng(seed)
    x = sp.random(m, n, density=density, random_state=rng, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    return x


def _direct_ease(x, reg):
    """The closed form as EASERecommender computed it before (float64 ``np.linalg.inv``)."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += reg
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("m, n", [(30, 80), (120, 40), (60, 60)])  # dual, primal, primal
def test_weights_equal_the_direct_inverse(m, n):
    x = _random_binary(m, n, 0.15, seed=m + n)
    for reg in (0.5, 10.0):
        got = _ease.ease_weights(x, reg)
        assert got.dtype == np.float32 and got.shape == (n, n)
        np.testing.assert_allclose(got, _direct_ease(x, reg), rtol=2e-4, atol=2e-6)


def test_float32_path_of_a_large_catalogue_matches(monkeypatch):
    monkeypatch.setattr(_ease, "FLOAT64_MAX_ITEMS", 10)  # force the in-place float32 Cholesky
    x = _random_binary(200, 90, 0.1, seed=3)
    np.testing.assert_allclose(_ease.ease_weights(x, 5.0), _direct_ease(x, 5.0), rtol=1e-3, atol=1e-5)


def test_items_nobody_touched_get_zero_weights():
    x = _random_binary(25, 60, 0.2, seed=1).tolil()
    x[:, 7] = 0
    x = x.tocsr()
    x.eliminate_zeros()
    b = _ease.ease_weights(x, 3.0)
    assert not b[7].any() and not b[:, 7].any()


def test_inverse_in_place_shares_the_buffer():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 50))
    a = a @ a.T + 50 * np.eye(50)
    want = np.linalg.inv(a)
    buf = a.copy()
    out = _ease._inverse_spd_inplace(buf)
    assert np.shares_memory(out, buf)
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


def _grid_ndcg(train, valid, regs, users=None):
    out = []
    for reg in regs:
        b = _direct_ease(train, reg).astype(np.float32)
        out.append(quick_ndcg(lambda u, b=b: np.asarray(train[u] @ b, np.float32), train, valid,
                              users=users))
    return out


def _holdout(x):
    """(train, valid): one stored item per user with at least two moved to valid."""
    xl = x.tolil()
    valid = sp.lil_matrix(x.shape, dtype=np.float32)
    for u in range(x.shape[0]):
        items = xl.rows[u]
        if len(items) >= 2:
            valid[u, items[-1]] = 1.0
            xl[u, items[-1]] = 0.0
    train = xl.tocsr()
    train.eliminate_zeros()
    return train, valid.tocsr()


@pytest.mark.parametrize("m, n", [(40, 120), (150, 50)])  # user side (Woodbury), item side
def test_reg_path_scores_equal_one_fit_per_candidate(m, n):
    train, valid = _holdout(_random_binary(m, n, 0.12, seed=7))
    regs = (0.5, 2.0, 10.0, 50.0)
    got, info = _ease.ease_reg_path(train, valid, regs)
    assert info["side"] == ("users" if m < n else "items")
    _assert_same_path(got, _grid_ndcg(train, valid, regs))


def _assert_same_path(got, want):
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_reg_path_samples_scored_users_at_scale(monkeypatch):
    import segrec.evaluate.ranking as tuning

    monkeypatch.setattr(tuning, "MAX_SCORED_USERS", 25)
    train, valid = _holdout(_random_binary(150, 50, 0.12, seed=7))
    got, info = _ease.ease_reg_path(train, valid, (2.0, 10.0))
    users = tuning.scored_users(valid, 25)
    assert info["scored_users"] == 25
    _assert_same_path(got, _grid_ndcg(train, valid, (2.0, 10.0), users=users))


def test_reg_path_tunes_on_a_sub_catalogue_beyond_the_exact_size(monkeypatch):
    monkeypatch.setattr(_ease, "TUNE_EXACT_MAX", 30)
    train, valid = _holdout(_random_binary(80, 60, 0.12, seed=2))
    scores, info = _ease.ease_reg_path(train, valid, (1.0, 10.0))
    assert info["items"] == "top 30 of 60 by interactions"
    top = np.sort(np.argsort(-np.asarray(train.sum(0)).ravel(), kind="stable")[:30])
    want = _grid_ndcg(train[:, top].tocsr(), valid[:, top].tocsr(), (1.0, 10.0))
    _assert_same_path(scores, want)


@pytest.fixture(scope="module")
def synth():
    """(train, valid) of a small synthetic log: real-valued scores, so no exact ties at zero."""
    from segrec import generate_synthetic
    from segrec.split import holdout_split

    return holdout_split(generate_synthetic(n_users=200, n_items=80, seed=1,
                                            mean_interactions=12).to_interactions())


def test_the_model_tunes_on_the_path_and_keeps_the_table(synth):
    train, valid = synth
    model = EASERecommender(reg_grid=(1.0, 10.0, 100.0)).fit(train, valid=valid)
    direct = _grid_ndcg(train.to_csr(), valid.to_csr(), (1.0, 10.0, 100.0))
    assert [r["ndcg@10"] for r in model.tuning_] == pytest.approx(direct, abs=1e-9)
    assert model.reg_ == (1.0, 10.0, 100.0)[int(np.argmax(direct))]
    assert "tuning_s" in model.fit_timings_ and model.tuning_info_["side"] in ("users", "items")


def test_refuses_a_catalogue_that_does_not_fit_in_memory(monkeypatch):
    monkeypatch.setattr(segrec.resources, "available_memory", lambda: 10_000)
    split = planted_split()
    with pytest.raises(ResourceError) as info:
        EASERecommender(reg=10.0).fit(split.train)
    msg = str(info.value)
    assert isinstance(info.value, SegrecError)
    assert f"{split.train.n_items:,} items" in msg and "needs" in msg and "available" in msg
    assert "drop rarely-interacted items" in msg


def _old_itemknn(x, k, shrink=0.0):
    """ItemKNN's dense computation before the rewrite."""
    xc = x.tocsc()
    co = (xc.T @ xc).toarray()
    norms = np.sqrt(np.diag(co)).astype(np.float64)
    sim = co / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(sim, 0.0)
    n = sim.shape[0]
    k = min(k, n - 1)
    idx = np.argpartition(-sim, k - 1, axis=0)[:k]
    mask = np.zeros_like(sim, dtype=bool)
    mask[idx, np.arange(n)[None, :]] = True
    return np.where(mask, sim, 0.0).astype(np.float32)


@pytest.mark.parametrize("k", [1, 3, 10, 500])
def test_itemknn_neighbours_equal_the_dense_top_k(k):
    rng = np.random.default_rng(k)
    # integer-free weights: real-valued rows give distinct cosines, so top-k has no ties
    x = _random_binary(80, 40, 0.2, seed=k)
    x.data = rng.uniform(0.5, 1.5, x.nnz).astype(np.float32)
    got = _Neighbours(x, shrink=2.0).top(k).toarray()
    np.testing.assert_allclose(got, _old_itemknn(x, k, shrink=2.0), rtol=1e-6)


def test_itemknn_ties_break_to_the_lower_item_and_every_k_comes_from_one_sort():
    x = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], np.float32))
    nb = _Neighbours(x, 0.0)
    w1 = nb.top(1).toarray()
    assert w1[:, 2].nonzero()[0].tolist() == [0]  # items 0 and 1 tie for item 2: the lower wins
    assert not w1[:, 3].any()  # item 3 co-occurs with nothing
    assert (nb.top(2).toarray() >= 0).all() and nb.top(2).nnz == 6


def test_itemknn_tuning_table_matches_a_fit_per_k(synth):
    grid = (2, 5, 20)
    model = ItemKNNRecommender(k_grid=grid).fit(synth[0], valid=synth[1])
    train, valid = synth[0].to_csr(), synth[1].to_csr()
    # one fit per k (binary cosines tie, so the dense argpartition is not a reference here)
    direct = [quick_ndcg(ItemKNNRecommender(k=k).fit(synth[0])._score, train, valid) for k in grid]
    assert [r["ndcg@10"] for r in model.tuning_] == pytest.approx(direct, abs=1e-12)
    assert model.k_ == grid[int(np.argmax(direct))]


def test_per_segment_models_on_touched_items_score_exactly_as_on_the_full_catalogue(synth, tmp_path):
    from segrec.models import PerSegmentRecommender, Recommender
    from segrec.models.local import ItemSubsetRecommender

    train, valid = synth
    full = train.concat(valid)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, train.n_users)
    for base, params in (("ease", {"reg": 20.0}), ("itemknn", {"k": 10}), ("popularity", {})):
        restricted = PerSegmentRecommender(base=base, base_params=params, min_segment_users=5).fit(
            train, valid=valid, context=FitContext(segments=labels))
        plain = PerSegmentRecommender(base=base, base_params=params, min_segment_users=5,
                                      restrict_items=False).fit(train, valid=valid,
                                                                context=FitContext(segments=labels))
        subs = list(restricted.models_.values())
        assert all(isinstance(m, ItemSubsetRecommender) for m in subs)  # no segment touches all 80
        assert all(len(m.item_index_) < full.n_items for m in subs)
        users = np.arange(train.n_users)
        np.testing.assert_allclose(restricted.score_dense(users), plain.score_dense(users), rtol=1e-5,
                                   atol=1e-6)
        rows = full.to_csr()[:7]
        for u in (0, 5, train.n_users - 1):  # the single-user (server) path agrees
            np.testing.assert_allclose(restricted.score_one(u), plain.score_one(u), rtol=1e-5, atol=1e-6)
        for s, m in restricted.models_.items():
            np.testing.assert_allclose(m.score_histories(rows), plain.models_[s].score_histories(rows),
                                       rtol=1e-5, atol=1e-6)
            assert m.n_parameters() <= plain.models_[s].n_parameters()
            if base == "ease":  # dense weights: (touched x touched) instead of (n_items x n_items)
                assert m.n_parameters() == len(m.item_index_) ** 2
        restricted.save(tmp_path / base)
        back = Recommender.load(tmp_path / base)
        np.testing.assert_array_equal(back.score_dense(users), restricted.score_dense(users))
        a, b = back.recommend(["u001", "u150"], k=5), plain.recommend(["u001", "u150"], k=5)
        assert a.item_ids.tolist() == b.item_ids.tolist()


def test_a_segment_that_touches_every_item_keeps_the_plain_model(synth):
    from segrec.models import EASERecommender, PerSegmentRecommender

    train, valid = synth
    labels = np.zeros(train.n_users, np.int64)
    model = PerSegmentRecommender(base="ease", base_params={"reg": 20.0}, min_segment_users=5).fit(
        train, valid=valid, context=FitContext(segments=labels))
    touched = np.unique(train.concat(valid).items)
    assert len(touched) == train.n_items and isinstance(model.models_[0], EASERecommender)


def test_a_segment_over_the_item_cap_keeps_its_most_interacted_items(synth, tmp_path):
    from segrec.models import PerSegmentRecommender, Recommender

    train, valid = synth
    labels = np.zeros(train.n_users, np.int64)
    model = PerSegmentRecommender(base="ease", base_params={"reg": 20.0}, min_segment_users=5,
                                  max_segment_items=30).fit(train, valid=valid,
                                                            context=FitContext(segments=labels))
    sub = model.models_[0]
    counts = np.bincount(train.concat(valid).items, minlength=train.n_items)
    assert len(sub.item_index_) == 30 and sub.items_dropped_ == train.n_items - 30
    assert counts[sub.item_index_].min() >= np.sort(counts)[-30]  # the 30 most interacted
    assert sub.n_parameters() == 30 * 30
    scores = model.score_dense(np.arange(train.n_users))
    dropped = np.setdiff1d(np.arange(train.n_items), sub.item_index_)
    assert (scores[:, dropped] == 0).all() and np.abs(scores[:, sub.item_index_]).sum() > 0
    back = Recommender.load(model.save(tmp_path / "capped"))
    np.testing.assert_array_equal(back.score_dense(np.arange(train.n_users)), scores)
    assert back.models_[0].items_dropped_ == sub.items_dropped_
    rec = back.recommend(["u001"], k=5).item_ids[0]
    fit = train.concat(valid)
    seen = set(fit.item_vocab.ids[fit.history(int(fit.user_vocab.index(["u001"])[0]))].tolist())
    assert not seen & set(rec.tolist())  # seen items are excluded, also the dropped ones


def test_wide_dense_weights_are_float16_and_score_as_float32(monkeypatch, tmp_path):
    """Above HALF_MIN_ITEMS the weights are stored in float16 (half the memory), scored in float32."""
    import segrec.models.baselines as baselines
    from segrec.models import Recommender

    split = planted_split(seed=3)
    full = EASERecommender(reg=50.0).fit(split.train)
    monkeypatch.setattr(baselines, "HALF_MIN_ITEMS", 8)
    monkeypatch.setattr(baselines, "_GATHER_ENTRIES", 3 * split.train.n_items)  # several chunks
    half = EASERecommender(reg=50.0).fit(split.train)
    assert full.weights_.dtype == np.float32 and half.weights_.dtype == np.float16
    users = np.arange(split.train.n_users)
    a, b = full.score_dense(users), half.score_dense(users)
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=2e-3 * np.abs(a).max())
    # the server's one-user path sums the same rows in the same order
    for u in (0, 5, 17):
        np.testing.assert_array_equal(half.score_one(u), b[u])
    half.save(tmp_path / "m")
    again = Recommender.load(tmp_path / "m")
    assert again.weights_.dtype == np.float16
    np.testing.assert_array_equal(again.score_dense(users), b)
