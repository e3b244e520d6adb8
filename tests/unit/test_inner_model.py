"""inner_model(): the train-only model a refitting Recommender keeps for the router's stage 1."""

import numpy as np

from segrec.data.synthetic import generate_synthetic
from segrec.evaluate.ranking import quick_ndcg
from segrec.models import ALSRecommender, EASERecommender, FitContext, PopularityRecommender
from segrec.models.transformer import TransformerRecommender
from segrec.route import SegmentedRecommender
from segrec.route._fitting import InnerStage
from segrec.split import temporal_split


def _split():
    synth = generate_synthetic(n_users=200, n_items=100, n_segments=2, seed=3)
    return synth, temporal_split(synth.to_interactions())


def test_transformer_inner_model_reproduces_the_early_stopping_score():
    _, split = _split()
    model = TransformerRecommender(embedding_size=16, epochs=3, n_threads=1)
    model.fit(split.train, valid=split.valid)
    inner = model.inner_model()
    assert inner is not None and inner is not model
    # the kept model is the best epoch trained on train only, scored with train histories
    assert quick_ndcg(inner.score_dense, split.train.to_csr(), split.valid.to_csr()) == model.inner_score_
    assert not np.allclose(inner.score_dense(np.arange(5)), model.score_dense(np.arange(5)))


def test_models_without_a_kept_inner_model_return_none():
    _, split = _split()
    assert EASERecommender(reg=10.0).fit(split.train).inner_model() is None
    no_es = TransformerRecommender(embedding_size=8, epochs=1, early_stopping=False, n_threads=1)
    assert no_es.fit(split.train).inner_model() is None


def _counting(monkeypatch, cls):
    calls = []
    original = cls._fit

    def counting_fit(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "_fit", counting_fit)
    return calls


def test_router_stage_one_reuses_the_fitted_global_tier(monkeypatch):
    synth, split = _split()
    labels = synth.segment_labels(split.train.user_vocab)
    calls = _counting(monkeypatch, TransformerRecommender)
    seg = SegmentedRecommender(tiers={
        "global": TransformerRecommender(embedding_size=16, epochs=2, n_threads=1),
        "local": EASERecommender(reg=10.0),
        "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid, context=FitContext(segments=labels))
    assert calls == [1]  # the member fit; routing's stage 1 did not train the Transformer again
    g_rows = seg.validation_[seg.validation_.tier == "global"]
    assert g_rows["ndcg@10"].notna().all()


def test_adapted_inner_model_is_the_tuned_adapters_on_the_inner_global(monkeypatch):
    from segrec.models.adapters import AdaptedTransformerRecommender

    synth, split = _split()
    labels = synth.segment_labels(split.train.user_vocab)
    glob = TransformerRecommender(embedding_size=16, epochs=2, n_threads=1)
    glob.fit(split.train, valid=split.valid)
    adapted = AdaptedTransformerRecommender(epochs=2, n_threads=1, min_segment_users=1)
    adapted.fit(split.train, valid=split.valid,
                context=FitContext(segments=labels, shared={"transformer": glob}))
    inner = adapted.inner_model()
    assert inner is not None
    # the kept model scores inner valid exactly as the epoch choice saw it: segments whose
    # θ_k won on validation score above their global-model score, the others equal it
    truth, hist = split.valid.to_csr(), split.train.to_csr()
    g_inner = glob.inner_model()
    for k, info in adapted.segment_info_.items():
        users = np.flatnonzero(labels == k)
        # quick_ndcg hands the scorer row positions of the sliced matrices
        got = quick_ndcg(lambda rows, u=users: inner.score_dense(u[rows]), hist[users], truth[users])
        g_score = quick_ndcg(lambda rows, u=users: g_inner.score_dense(u[rows]), hist[users], truth[users])
        if info["best_epoch"] > 0:
            assert np.isclose(got, info["valid_ndcg_adapted"], atol=1e-5)
            assert k in inner.adapters_
        else:
            assert np.isclose(got, info["valid_ndcg_global"], atol=1e-5) and k not in inner.adapters_
        assert np.isclose(g_score, info["valid_ndcg_global"], atol=1e-5)

    # and the router's stage 1 takes it instead of training adapters again
    calls = _counting(monkeypatch, AdaptedTransformerRecommender)
    members = {"global": glob, "adapted": adapted, "popularity": PopularityRecommender().fit(split.train)}
    stage = InnerStage(members, split.train, labels, FitContext(segments=labels))
    assert calls == [] and stage.get("adapted").adapters_.keys() == inner.adapters_.keys()
    # other segments than the adapters were fitted for: not reused (θ_k would be misassigned)
    InnerStage(members, split.train, 1 - labels, FitContext(segments=1 - labels)).get("adapted")
    assert calls == [1]
    # the composite that fits both members trains each once
    seg = SegmentedRecommender(tiers={
        "global": TransformerRecommender(embedding_size=16, epochs=2, n_threads=1),
        "adapted": AdaptedTransformerRecommender(epochs=2, n_threads=1),
        "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid, context=FitContext(segments=labels))
    assert calls == [1, 1]
    assert seg.validation_[seg.validation_.tier == "adapted"]["ndcg@10"].notna().all()


def test_a_grid_search_keeps_its_winner_and_the_router_reuses_it(monkeypatch):
    synth, split = _split()
    labels = synth.segment_labels(split.train.user_vocab)
    als = {"embedding_size": 8, "reg_grid": (0.01, 10.0)}
    assert ALSRecommender(**als).fit(split.train, valid=split.valid).inner_model() is None
    model = ALSRecommender(**als).fit(split.train, valid=split.valid, context=FitContext(keep_inner=True))
    inner = model.inner_model()
    assert inner is not None and inner.reg_ == model.reg_ and inner.fitted_on_ == split.train.fingerprint()
    fresh = ALSRecommender(embedding_size=8, reg=model.reg_).fit(split.train)
    np.testing.assert_array_equal(inner.score_dense(np.arange(10)), fresh.score_dense(np.arange(10)))
    # (EASE scores its whole lambda grid from one factorisation, no grid search.)
    # in a composite the router uses it (no ALS fit beyond the grid and the final fit), then frees it
    calls = _counting(monkeypatch, ALSRecommender)
    seg = SegmentedRecommender(tiers={"global": ALSRecommender(embedding_size=8, reg_grid=(0.01, 10.0)),
                                      "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid, context=FitContext(segments=labels))
    assert len(calls) == 3  # two candidates + the final fit
    assert seg.tiers_["global"].inner_model() is None
