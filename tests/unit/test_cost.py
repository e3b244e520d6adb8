"""Cost accounting (issue 5): parameters, analytic FLOPs, measured latency, memory."""

from types import SimpleNamespace

import numpy as np
import pytest

from segrec.evaluate.cost import cost_table, measure_cost, measure_latency, memory_bytes
from segrec.models import (
    EASERecommender,
    FitContext,
    ItemKNNRecommender,
    ModelConfig,
    PerSegmentRecommender,
    PopularityRecommender,
    Recommender,
)
from segrec.models.transformer import net_flops
from segrec.route import SegmentedRecommender
from segrec.types import Interactions, Vocabulary

N_ITEMS = 30


def _data(n_users=40, seed=0):
    """Users with 2..12 items each, so history lengths differ."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        h = 2 + u % 11
        users += [u] * h
        items += rng.choice(N_ITEMS, h, replace=False).tolist()
    return Interactions.from_arrays(users, items, user_vocab=Vocabulary([f"u{i}" for i in range(n_users)]),
                                    item_vocab=Vocabulary([f"i{i}" for i in range(N_ITEMS)]))


@pytest.fixture(scope="module")
def data():
    return _data()


def test_parameter_counts_follow_the_state(data):
    assert PopularityRecommender().fit(data).n_parameters() == N_ITEMS
    assert EASERecommender(reg=10.0).fit(data).n_parameters() == N_ITEMS * N_ITEMS
    knn = ItemKNNRecommender(k=5).fit(data)
    assert knn.n_parameters() == knn.weights_.nnz  # sparse: stored similarities only
    labels = np.arange(data.n_users) % 2
    local = PerSegmentRecommender(base="ease", base_params={"reg": 10.0}, min_segment_users=5)
    local.fit(data, context=FitContext(segments=labels))
    assert local.n_parameters() == 2 * N_ITEMS * N_ITEMS  # one EASE per segment, labels are not parameters


def test_flops_are_analytic_in_history_length(data):
    ease = EASERecommender(reg=10.0).fit(data)
    # x_u @ B with h non-zeros: 2 h n_items multiply-adds, plus ~n_items to rank
    assert ease.flops_per_request(5) == 2 * 5 * N_ITEMS + N_ITEMS
    np.testing.assert_allclose(ease.flops_per_request(np.array([1, 2])), [3 * N_ITEMS, 5 * N_ITEMS])
    mean_h = np.diff(ease.seen_.indptr).mean()
    assert ease.flops_per_request() == pytest.approx(2 * mean_h * N_ITEMS + N_ITEMS)
    assert PopularityRecommender().fit(data).flops_per_request(100) == N_ITEMS  # ranking only


def test_transformer_flops_formula_by_hand():
    cfg = SimpleNamespace(embedding_size=8, max_len=4, n_layers=2, ffn_mult=4)
    # per layer and position: 2 * (4 + 2*4) * d^2 = 1536; attention 4 * L^2 * d; logits 2 * d * n
    by_hand = 2 * (3 * 1536 + 4 * 9 * 8) + 2 * 8 * 100
    assert net_flops(cfg, np.array(3.0), 100) == by_hand
    # histories longer than max_len cost the same as max_len
    assert net_flops(cfg, np.array(50.0), 100) == net_flops(cfg, np.array(4.0), 100)


class _Mystery(Recommender):
    """A model that says nothing about its cost: the base class counts its parameters."""

    Config = ModelConfig
    name = "test_cost_mystery"

    def _fit(self, train, valid, context):
        self.w_ = np.ones(7)

    def _score(self, users):
        return np.zeros((len(users), len(self.item_vocab_)), np.float32)

    def _state(self):
        return {"w": self.w_}


def test_unknown_models_default_to_one_multiply_add_per_parameter(data):
    assert _Mystery().fit(data).flops_per_request() == 2 * 7 + N_ITEMS


def test_segmented_flops_follow_the_routing(data):
    labels = np.arange(data.n_users) % 2
    tiers = {"global": EASERecommender(reg=10.0), "popularity": PopularityRecommender()}
    seg = SegmentedRecommender(tiers=tiers, routing={0: "global", 1: "popularity"})
    seg.fit(data, context=FitContext(segments=labels))
    users = np.arange(data.n_users)
    per_user = seg.flops_per_user(users)
    h = np.diff(seg.seen_.indptr)
    np.testing.assert_allclose(per_user[labels == 0], 2 * h[labels == 0] * N_ITEMS + N_ITEMS)
    np.testing.assert_allclose(per_user[labels == 1], N_ITEMS)
    assert seg.flops_per_request() == pytest.approx(per_user.mean())
    assert seg.n_parameters() == N_ITEMS * N_ITEMS + N_ITEMS


def test_latency_is_bounded_in_calls_and_time(data):
    ease = EASERecommender(reg=10.0).fit(data)
    out = measure_latency(ease, np.arange(data.n_users), batch_size=1, max_calls=7, max_seconds=10)
    assert out["calls"] == 7 and 0 < out["p50_ms"] <= out["p99_ms"]
    out = measure_latency(ease, np.arange(3), batch_size=256, max_calls=1000, max_seconds=0.0)
    assert out["calls"] == 1  # one call always happens, then the time bound stops it
    assert out["per_request_ms"] == pytest.approx(out["p50_ms"] / 256)


def test_memory_and_cost_table(data):
    ease = EASERecommender(reg=10.0).fit(data)
    assert memory_bytes(ease) >= N_ITEMS * N_ITEMS * 4
    report = measure_cost(ease, max_calls=5, max_seconds=1.0)
    assert report.n_parameters == N_ITEMS * N_ITEMS and report.p99_ms_b1 >= report.p50_ms_b1 > 0
    table = cost_table({"pop": PopularityRecommender().fit(data), "ease": ease}, latency=False)
    assert list(table.index) == ["pop", "ease"]
    assert table.loc["pop", "flops_per_request"] < table.loc["ease", "flops_per_request"]
    assert np.isnan(table.loc["pop", "p50_ms_b1"])  # latency skipped on request


def test_segmented_flops_count_the_fallback_that_really_serves(data):
    labels = np.arange(data.n_users) % 2
    labels[:3] = 2  # a 3-user segment: too small for a local model, served by the global fallback
    local = PerSegmentRecommender(base="popularity", min_segment_users=5)
    seg = SegmentedRecommender(tiers={"local": local, "global": EASERecommender(reg=10.0),
                                      "popularity": PopularityRecommender()},
                               routing={0: "local", 1: "local", 2: "local"})
    seg.fit(data, context=FitContext(segments=labels))
    per_user = seg.flops_per_user(np.arange(data.n_users))
    h = np.diff(seg.seen_.indptr)
    np.testing.assert_allclose(per_user[:3], 2 * h[:3] * N_ITEMS + N_ITEMS)  # global EASE
    np.testing.assert_allclose(per_user[3:], N_ITEMS)  # local popularity
