import numpy as np
import pytest

from segrec import Interactions, NotFittedError, Vocabulary, temporal_split
from segrec.errors import DataValidationError
from segrec.evaluate import evaluate
from segrec.models import FitContext, Recommender
from segrec.models.adapters import (
    AdaptedTransformerRecommender,
    AdapterConfig,
    adapter_param_count,
    fit_segment_adapter,
)
from segrec.models.transformer import TransformerRecommender

# A global model too small and too briefly trained to infer the segment in context.
GLOBAL = dict(embedding_size=32, n_layers=1, n_heads=2, max_len=1, dropout=0.0, batch_size=64, n_threads=1,
              learning_rate=1e-2, epochs=15, early_stopping=False, target_window=1)
ADAPT = dict(epochs=15, learning_rate=2e-2, early_stopping=False, kl_weight=0.0, batch_size=64, n_threads=1)


def build(histories, n_items):
    users = np.concatenate([np.full(len(h), u) for u, h in enumerate(histories)])
    items = np.concatenate([np.asarray(h) for h in histories])
    ts = np.concatenate([np.arange(len(h)) for h in histories])
    return Interactions.from_arrays(
        users, items, timestamps=ts,
        user_vocab=Vocabulary([f"u{u}" for u in range(len(histories))]),
        item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]),
    )


def planted_segments_split(n_users=160, seed=0):
    """Two segments: query q in 0..9 is answered by item 10 + q in segment 0, 20 + q in segment 1.

    Histories are q1 a1 ... q6 a6 with distinct queries, so the test item is the answer a6.
    With max_len=1 the global model sees only the query and must guess between the two
    answers; an adapter that knows the segment can answer right.
    """
    rng = np.random.default_rng(seed)
    segments = np.arange(n_users) % 2
    hist = []
    for s in segments:
        queries = rng.permutation(10)[:6]
        hist.append([x for q in queries for x in (int(q), int(10 + 10 * s + q))])
    return temporal_split(build(hist, 30)), segments


@pytest.fixture(scope="module")
def planted():
    split, segments = planted_segments_split()
    g = TransformerRecommender(**GLOBAL).fit(split.train, valid=split.valid)
    return split, segments, g


@pytest.fixture(scope="module")
def adapted(planted):
    split, segments, g = planted
    return AdaptedTransformerRecommender(**ADAPT).fit(
        split.train, valid=split.valid, context=FitContext(segments=segments, shared={"transformer": g}))


def test_adaptation_learns_planted_segment_pattern(planted, adapted):
    split, segments, g = planted
    glob = evaluate(g, split, ks=(1, 10)).overall["recall@1"]
    adap = evaluate(adapted, split, ks=(1, 10)).overall["recall@1"]
    assert glob < 0.75  # the global model can only guess between the two answers
    assert adap >= 0.9
    ctx = FitContext(segments=segments, shared={"transformer": g})
    assert adapted.fit(split.train, valid=split.valid, context=ctx) is adapted


def test_param_ratio_within_budget(adapted):
    assert adapted.param_ratio_ <= 0.05
    theta = next(iter(adapted.adapters_.values()))
    n_theta = sum(v.size for v in theta.values())
    assert n_theta == adapter_param_count(adapted.global_.net_.config, adapted.config, adapted.rank_)
    assert n_theta / adapted.global_.net_.n_params() == pytest.approx(adapted.param_ratio_)


def test_large_kl_keeps_outputs_close(planted):
    split, segments, g = planted
    ctx = FitContext(segments=segments, shared={"transformer": g})
    free = AdaptedTransformerRecommender(**ADAPT).fit(split.train, context=ctx)
    tied = AdaptedTransformerRecommender(**{**ADAPT, "kl_weight": 100.0}).fit(split.train, context=ctx)
    users = np.arange(40)

    def kl_to_global(model):
        p = _softmax(model.score_dense(users))
        q = _softmax(g.score_dense(users))
        return float((p * (np.log(p) - np.log(q))).sum(1).mean())

    assert kl_to_global(tied) < 0.2 * kl_to_global(free)


def test_save_load_and_new_users(adapted, planted, tmp_path):
    split, segments, _ = planted
    adapted.save(tmp_path / "a")
    loaded = Recommender.load(tmp_path / "a")
    users = np.arange(12)
    np.testing.assert_array_equal(loaded.score_dense(users), adapted.score_dense(users))
    recs = loaded.recommend(["u0", "u1"], k=3)
    assert list(recs.segment) == [0, 1]
    # new users: query 3 is answered by 13 in segment 0 and 23 in segment 1
    q = adapted.item_vocab_.index(["i3"])
    scores = adapted.score_histories([q, q, q], [0, 1, -1])
    top = adapted.item_vocab_.id(scores.argmax(1))
    assert list(top[:2]) == ["i13", "i23"]
    np.testing.assert_allclose(scores[2], adapted.global_.score_histories([q])[0], rtol=1e-5, atol=1e-5)


def test_star_variant_and_early_stopping(planted):
    split, segments, _ = planted
    # a global model with inner (train-only) weights, so adapters can early-stop honestly
    g = TransformerRecommender(**{**GLOBAL, "epochs": 4, "early_stopping": True, "patience": 2})
    model = AdaptedTransformerRecommender(variant="star", epochs=3, patience=1, kl_weight=0.1, n_threads=1,
                                          learning_rate=2e-2, global_model=g.config)
    model.fit(split.train, valid=split.valid, context=FitContext(segments=segments))
    assert set(model.segment_info_) == {0, 1}
    for info in model.segment_info_.values():
        assert 0 <= info["best_epoch"] <= 3 and "valid_ndcg_global" in info
    assert np.isfinite(model.score_dense(np.arange(5))).all()


def _segment_inputs(planted, segment):
    """θ_shared of the planted global model as arrays, and one segment's training histories."""
    from segrec.models._seqdata import Histories

    split, segments, g = planted
    shared = {k: v.detach().numpy().copy() for k, v in g.net_.state_dict().items()}
    return shared, Histories.from_interactions(split.train).select(np.flatnonzero(segments == segment))


def test_final_fit_warm_starts_from_the_tuned_adapters(planted):
    split, segments, g = planted
    shared, hist = _segment_inputs(planted, 0)
    cfg = AdapterConfig(**ADAPT)
    tuned = fit_segment_adapter(shared, g.net_.config, hist, None, cfg, rank=2, epochs=4, seed=0)
    cont = fit_segment_adapter(shared, g.net_.config, hist, None, cfg, rank=2, epochs=1, init=tuned.params,
                               seed=1)
    fresh = fit_segment_adapter(shared, g.net_.config, hist, None, cfg, rank=2, epochs=1, seed=1)

    def dist(fit):
        return sum(float(np.abs(fit.params[k] - tuned.params[k]).sum()) for k in tuned.params)

    assert dist(cont) < 0.5 * dist(fresh)
    # the recommender: a tuned segment's final fit runs warm_epochs (not its tuned count) from θ_k
    ge = TransformerRecommender(**{**GLOBAL, "epochs": 3, "early_stopping": True, "patience": 2})
    ge.fit(split.train, valid=split.valid)
    model = AdaptedTransformerRecommender(**{**ADAPT, "early_stopping": True, "epochs": 3, "patience": 3,
                                             "warm_epochs": 1})
    model.fit(split.train, valid=split.valid,
              context=FitContext(segments=segments, shared={"transformer": ge}))
    for info in model.segment_info_.values():
        assert info["best_epoch"] == 0 or info["final_epochs"] == 1


def test_adapter_sampled_softmax_with_kl_learns(planted):
    """A catalogue above the global model's threshold: adapters train the same sampled softmax."""
    split, segments, _ = planted
    g = TransformerRecommender(**{**GLOBAL, "full_softmax_max_items": 10, "n_negatives": 16})
    g.fit(split.train, valid=split.valid)
    model = AdaptedTransformerRecommender(**{**ADAPT, "kl_weight": 0.1}).fit(
        split.train, valid=split.valid, context=FitContext(segments=segments, shared={"transformer": g}))
    assert evaluate(model, split, ks=(1, 10)).overall["recall@1"] >= 0.9


def test_segment_fit_is_pure(planted):
    g = planted[2]
    shared, hist = _segment_inputs(planted, 1)
    cfg = AdapterConfig(**ADAPT)
    a = fit_segment_adapter(shared, g.net_.config, hist, None, cfg, rank=2, epochs=2, seed=3)
    b = fit_segment_adapter(shared, g.net_.config, hist, None, cfg, rank=2, epochs=2, seed=3)
    assert a.best_epoch == 2 and set(a.params) == set(b.params)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    for k, v in g.net_.state_dict().items():  # shared weights untouched
        np.testing.assert_array_equal(v.numpy(), shared[k])


def test_errors(planted):
    split, segments, g = planted
    with pytest.raises(NotFittedError):
        AdaptedTransformerRecommender().recommend(["u0"])
    with pytest.raises(DataValidationError, match="segments"):
        AdaptedTransformerRecommender(**ADAPT).fit(
            split.train, context=FitContext(segments=segments[:5], shared={"transformer": g}))


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
