"""Cached known-user vectors (issue 18): same lists as the forward pass, checked on load, costed as served."""

from __future__ import annotations

import numpy as np
import pytest

from segrec.errors import ConfigError, SegrecError
from segrec.io import load_tensors, save_tensors
from segrec.models import FitContext, Recommender
from segrec.models._vectors import VECTORS_FILE
from segrec.models.adapters import AdaptedTransformerRecommender
from segrec.models.mf import ALSRecommender
from segrec.models.multvae import MultVAERecommender
from segrec.models.transformer import TransformerRecommender, net_flops
from segrec.route import Router, SegmentedRecommender
from segrec.route.router import top_k_row
from segrec.testing import planted_split

TINY = dict(embedding_size=16, n_layers=1, n_heads=1, max_len=8, epochs=3, early_stopping=False,
            n_threads=1, dropout=0.0)


@pytest.fixture(scope="module")
def split():
    return planted_split()


@pytest.fixture(scope="module")
def segments(split):
    return np.arange(split.train.n_users) % 3 - (np.arange(split.train.n_users) % 7 == 0)  # -1 too


@pytest.fixture(scope="module")
def models(split, segments):
    g = TransformerRecommender(**TINY).fit(split.train, valid=split.valid)
    ctx = FitContext(segments=segments, shared={"transformer": g})
    adapted = AdaptedTransformerRecommender(epochs=2, early_stopping=False, n_threads=1, max_param_ratio=0.5)
    adapted.fit(split.train, valid=split.valid, context=ctx)
    als = ALSRecommender(embedding_size=8, reg=1.0, backend="numpy").fit(split.train, valid=split.valid)
    vae = MultVAERecommender(epochs=2).fit(split.train, valid=split.valid)
    return {"transformer": g, "adapted": adapted, "als": als, "multvae": vae}


def _forward_top(model, u, k=10):
    """Top-k of the full forward pass (score_dense) with the user's fit items excluded."""
    row = np.array(model.score_dense(np.array([u]))[0], np.float32)
    row[np.isnan(row)] = -np.inf
    row[model.seen_.indices[model.seen_.indptr[u]:model.seen_.indptr[u + 1]]] = -np.inf
    return top_k_row(row, k).tolist()


@pytest.mark.parametrize("name", ["transformer", "adapted", "als", "multvae"])
def test_cached_path_serves_the_forward_pass_lists(models, name, tmp_path):
    model = models[name]
    loaded = Recommender.load(model.save(tmp_path / name))
    if model.saves_user_vectors:
        assert (tmp_path / name / VECTORS_FILE).is_file() and loaded.user_vectors_ is not None
    router = Router(loaded)
    assert loaded.user_vectors_ is not None  # the router prepared them (ALS: its own factors)
    users = np.arange(len(loaded.user_vocab_))
    dense = loaded.score_dense(users)
    cached = np.stack([loaded.score_one(u) for u in users])
    np.testing.assert_allclose(cached, dense, rtol=1e-5, atol=1e-5)
    for u in users:
        served = router.recommend(user_id=loaded.user_vocab_.ids[u], k=10)
        assert served.item_ids == loaded.item_vocab_.ids[_forward_top(loaded, u)].tolist(), (name, u)


def test_adapted_vectors_carry_each_segments_bias_group(models, segments):
    adapted = models["adapted"]
    cache = adapted.prepare_serving()
    groups = adapted._bias_groups()
    assert cache.table.n_groups == 1 + len(groups)
    expect = np.array([groups.get(int(s), 0) for s in adapted.segments_])
    np.testing.assert_array_equal(cache.groups, expect)


def test_a_refit_drops_the_cache(split, models):
    model = TransformerRecommender(**TINY).fit(split.train)
    model.prepare_serving()
    assert model.user_vectors_ is not None
    model.fit(split.train)
    assert model.user_vectors_ is None


def test_serving_cost_is_the_vector_product_for_known_users(models):
    g = models["transformer"]
    n, d = g.n_items, g.config.embedding_size
    assert g.flops_per_request(5) == 2 * d * n + n + n  # product, bias, ranking
    assert g.flops_per_request(5, new_user=True) == float(net_flops(g.net_.config, np.array(5.0), n)) + n
    assert g.flops_per_request(50, new_user=True) > g.flops_per_request(5, new_user=True)
    seg = SegmentedRecommender.serving(g)
    assert seg.flops_per_request() == pytest.approx(2 * d * n + 2 * n)
    router = Router(g)
    assert not router.heavy(g.user_vocab_.ids[0], False)  # a cached known user stays on the event loop


@pytest.mark.parametrize("damage", ["shape", "nan", "group"])
def test_damaged_vectors_fail_the_load(models, tmp_path, damage):
    path = models["transformer"].save(tmp_path / "m")
    tensors = load_tensors(path / VECTORS_FILE)
    if damage == "shape":
        tensors["vectors"] = tensors["vectors"][:, :3].copy()
    elif damage == "nan":
        tensors["vectors"][0, 0] = np.nan
    else:
        tensors["groups"][0] = 5
    save_tensors(path / VECTORS_FILE, tensors)
    with pytest.raises(SegrecError, match="vectors|groups"):
        Recommender.load(path)


def test_artifact_without_vectors_is_prepared_on_load(models, tmp_path):
    path = models["transformer"].save(tmp_path / "m")
    (path / VECTORS_FILE).unlink()
    loaded = Recommender.load(path)
    assert loaded.user_vectors_ is None
    Router(loaded)
    np.testing.assert_allclose(loaded.user_vectors_.vectors, models["transformer"].user_vectors_.vectors,
                               rtol=1e-6, atol=1e-6)


def test_router_rejects_an_unknown_ann_mode(models):
    with pytest.raises(ConfigError, match="ann"):
        Router(models["als"], ann="fast")


@pytest.mark.ml100k
def test_ml100k_cached_transformer_lists_equal_the_forward_pass_for_every_user(ml100k, tmp_path):
    """Every known ml-100k user: the served (cached, exact) top-10 is the forward pass's top-10."""
    from segrec.artifacts import load_run, save_run
    from segrec.config import load_config
    from segrec.data import load_interactions
    from segrec.experiment import RunResult

    data = load_interactions(ml100k / "interactions.csv")
    # small and short: the identity is about the code path, not the training length
    model = TransformerRecommender(embedding_size=32, n_layers=1, n_heads=1, max_len=50, epochs=1,
                                   early_stopping=False, n_threads=1).fit(data)
    run = save_run(RunResult(load_config(None), data, None, np.zeros(data.n_users, np.int64),
                             {"method": "none"}, systems={"transformer": model}), tmp_path / "run")
    router = load_run(run).router("transformer", ann="exact")  # exact top-k, whatever faiss or the size
    served_model = router.model.tiers_["transformer"]
    assert served_model.user_vectors_ is not None
    users = np.arange(data.n_users)
    forward = model.recommend(data.user_vocab.ids, k=10)  # the batched forward pass, seen excluded
    mismatched = [u for u in users
                  if router.recommend(user_id=data.user_vocab.ids[u], k=10).item_ids
                  != forward.item_ids[u].tolist()]
    assert not mismatched, f"{len(mismatched)} of {len(users)} users differ, e.g. {mismatched[:5]}"


# ------------------------------------------------------------------ ANN
@pytest.fixture(scope="module")
def catalogue():
    from segrec.testing import factor_catalogue

    return factor_catalogue(n_users=400, n_items=6000, dim=16, n_topics=40)


def test_ann_index_is_calibrated_and_serves_lists_close_to_exact(catalogue):
    pytest.importorskip("faiss")
    exact = Router(catalogue, ann="exact")
    approx = Router(catalogue, ann="on", ann_recall=0.9)
    info = approx.ann_info()["als"]
    assert info["recall_at_10"] >= 0.9 and 1 <= info["nprobe"] <= info["nlist"]
    assert exact.ann == {} and Router(catalogue).ann == {}  # auto: 6000 items is below ANN_MIN_ITEMS
    seen = catalogue.seen_
    overlap = []
    for u, uid in enumerate(catalogue.user_vocab_.ids[:200]):
        got, want = approx.recommend(user_id=uid, k=10), exact.recommend(user_id=uid, k=10)
        assert len(got.item_ids) == 10 and got.tier == "als" and not got.fallback
        fit_items = seen.indices[seen.indptr[u]:seen.indptr[u + 1]]
        assert not set(catalogue.item_vocab_.index(got.item_ids)) & set(fit_items)
        overlap.append(len(set(got.item_ids) & set(want.item_ids)) / 10)
    assert np.mean(overlap) >= 0.85
    # the ANN scores are the exact scores of the items it returns (the bias-free dot product)
    row = catalogue.user_vectors_.score_one(0)
    got = approx.recommend(user_id=catalogue.user_vocab_.ids[0], k=10)
    listed = catalogue.item_vocab_.index(got.item_ids)
    np.testing.assert_allclose(got.scores, row[listed], rtol=1e-4, atol=1e-5)


def test_ann_folds_a_bias_into_the_search(models):
    pytest.importorskip("faiss")
    from segrec.route._ann import AnnIndex, exact_top_k

    cache = models["adapted"].prepare_serving()
    index = AnnIndex(cache.table, nlist=1)  # one list: the search is exhaustive, so exact
    for u in range(len(cache.groups)):
        if cache.groups[u] < 0:
            continue
        idx, scores = index.search_one(cache.vectors[u], int(cache.groups[u]), 5, np.empty(0, np.int64))
        full = cache.score_one(u)  # the bias row of the user's segment included
        np.testing.assert_allclose(scores, full[idx], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(scores, full[exact_top_k(full[None], 5)[0]], rtol=1e-4, atol=1e-5)


def test_without_faiss_auto_serves_exactly_and_on_refuses(catalogue, monkeypatch, caplog):
    from segrec.errors import MissingDependencyError
    from segrec.route import _ann

    def missing(module, extra):
        raise MissingDependencyError(f"{module} is not installed; pip install 'segrec[{extra}]'")

    monkeypatch.setattr(_ann, "require", missing)
    with caplog.at_level("WARNING"):
        assert Router(catalogue, ann="auto", ann_min_items=10).ann == {}
    assert "faiss is not installed" in caplog.text
    with pytest.raises(MissingDependencyError):
        Router(catalogue, ann="on")
