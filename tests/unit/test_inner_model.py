"""inner_model(): the train-only model a refitting Recommender keeps for the router's stage 1."""

import numpy as np

from segrec.data.synthetic import generate_synthetic
from segrec.evaluate.ranking import quick_ndcg
from segrec.models import EASERecommender, PopularityRecommender, SegmentedRecommender
from segrec.models.transformer import TransformerRecommender
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


def test_router_stage_one_reuses_the_prefitted_global_tier(monkeypatch):
    synth, split = _split()
    labels = synth.segment_labels(split.train.user_vocab)
    glob = TransformerRecommender(embedding_size=16, epochs=2, n_threads=1)
    glob.fit(split.train, valid=split.valid)
    calls = []
    original = TransformerRecommender._fit

    def counting_fit(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TransformerRecommender, "_fit", counting_fit)
    seg = SegmentedRecommender({"global": TransformerRecommender(embedding_size=16, epochs=2, n_threads=1),
                                "local": EASERecommender(reg=10.0), "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid, segments=labels, prefitted={"global": glob})
    assert calls == []  # neither stage trained the Transformer again
    g_rows = seg.validation_[seg.validation_.tier == "global"]
    assert g_rows["ndcg@10"].notna().all()
