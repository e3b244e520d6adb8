"""The jointly trained segment-aware Transformer (issue 17): planted tastes, budget, gradients, artifacts."""

import numpy as np
import pytest
import torch
from test_adapters import GLOBAL, build, planted_segments_split  # the planted data of the adapter tests

from segrec.config import RunConfig
from segrec.evaluate import evaluate
from segrec.models import EASERecommender, FitContext, PopularityRecommender, Recommender
from segrec.models._seqdata import Histories, make_windows, to_batch
from segrec.models.joint import JointLoss, JointTransformerRecommender, RowInput, theta_k_size
from segrec.models.tags import get_tags
from segrec.models.transformer import TransformerRecommender
from segrec.route import SegmentedRecommender
from segrec.systems import SYSTEMS, build_system

# the adapters' tiny global model (max_len=1: the query alone cannot tell the segment), trained jointly
JOINT = dict(GLOBAL)
VARIANTS = ("gate", "star", "lora")


@pytest.fixture(scope="module")
def planted():
    split, segments = planted_segments_split()
    return split, segments


@pytest.fixture(scope="module")
def fitted(planted):
    split, segments = planted
    ctx = FitContext(segments=segments)
    return {v: JointTransformerRecommender(**JOINT, variant=v).fit(split.train, valid=split.valid,
                                                                   context=ctx) for v in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS)
def test_joint_learns_planted_segment_tastes(planted, fitted, variant):
    split, segments = planted
    glob = TransformerRecommender(**GLOBAL).fit(split.train, valid=split.valid)
    assert evaluate(glob, split, ks=(1, 10)).overall["recall@1"] < 0.75  # can only guess the segment
    assert evaluate(fitted[variant], split, ks=(1, 10)).overall["recall@1"] >= 0.9
    assert fitted[variant].fit_seconds_ > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_theta_k_within_budget(fitted, variant):
    model = fitted[variant]
    net = model.net_
    own = {n: p for n, p in net.named_parameters() if n.startswith("segment.")}
    assert all(p.shape[0] == model.n_segments_ == 2 for p in own.values())  # stacked, segment first
    per_segment = sum(p.numel() for p in own.values()) // model.n_segments_
    assert per_segment == theta_k_size(net.config, model.config, model.rank_)
    assert per_segment / net.n_shared_params() == pytest.approx(model.param_ratio_)
    assert model.param_ratio_ <= 0.05


@pytest.mark.parametrize("variant", VARIANTS)
def test_segment_gets_no_gradient_from_other_segments_users(planted, fitted, variant):
    split, segments = planted
    model = fitted[variant]  # trained, so LoRA's B (zero at init) is non-zero and A gets gradients
    net = model.net_
    net.train()
    hist = Histories.from_interactions(split.train)
    windows = make_windows(hist, model.config.max_len)
    idx = np.flatnonzero(segments[windows.user] == 0)[:64]  # segment 0's users only
    inputs, targets = to_batch(hist, windows, idx, 1, net.config.pad_id)
    weights = torch.from_numpy(model.weights_[windows.user[idx]])
    net.zero_grad(set_to_none=True)
    JointLoss(net, False, None, kl_weight=0.5)(inputs, targets, RowInput(weights)).backward()
    net.eval()
    for name, p in net.named_parameters():
        if name.startswith("segment."):
            assert torch.count_nonzero(p.grad[1]) == 0, name  # segment 1 learns nothing from segment 0
            assert torch.count_nonzero(p.grad[0]) > 0, name
        else:
            assert p.grad is not None, name  # θ_shared learns from every user


def test_save_load_round_trip_and_new_users(fitted, tmp_path):
    model = fitted["gate"]
    model.save(tmp_path / "j")
    loaded = Recommender.load(tmp_path / "j")
    users = np.arange(20)
    np.testing.assert_array_equal(loaded.score_dense(users), model.score_dense(users))
    assert loaded.param_ratio_ == model.param_ratio_ and loaded.n_parameters() == model.n_parameters()
    assert list(loaded.recommend(["u0", "u1"], k=3).segment) == [0, 1]
    # a new user's query 3 is answered by 13 in segment 0, 23 in segment 1; -1 = the shared path
    q = model.item_vocab_.index(["i3"])
    scores = loaded.score_histories([q, q, q], [0, 1, -1])
    assert list(model.item_vocab_.id(scores[:2].argmax(1))) == ["i13", "i23"]
    with torch.no_grad():
        shared = model.net_.logits(model.net_(torch.from_numpy(np.asarray([q])), last=torch.tensor([0])))
    np.testing.assert_allclose(scores[2], shared.numpy()[0], rtol=1e-5, atol=1e-5)
    # served by the forward pass: no cache of the shared path's vectors, so θ_k is applied
    assert loaded.prepare_serving() is None
    np.testing.assert_array_equal(loaded.score_one(1), model.score_dense(np.array([1]))[0])


def test_soft_segments_use_the_posteriors(planted):
    split, segments = planted
    probs = np.where(segments[:, None] == np.arange(2), 0.8, 0.2)
    settings = {**JOINT, "epochs": 2}
    soft = JointTransformerRecommender(**settings).fit(
        split.train, context=FitContext(segments=segments, segment_probs=probs))
    hard = JointTransformerRecommender(**settings, soft="hard").fit(
        split.train, context=FitContext(segments=segments, segment_probs=probs))
    assert soft.soft_ and not hard.soft_
    np.testing.assert_allclose(soft.weights_, probs)
    np.testing.assert_array_equal(hard.weights_, np.eye(2, dtype=np.float32)[segments])
    assert not np.allclose(soft.score_dense(np.arange(4)), hard.score_dense(np.arange(4)))


def test_early_stopping_and_inner_model(planted):
    split, segments = planted
    model = JointTransformerRecommender(**{**JOINT, "epochs": 4, "early_stopping": True, "patience": 2})
    model.fit(split.train, valid=split.valid, context=FitContext(segments=segments))
    assert {"tuning_s", "refit_s"} <= set(model.fit_timings_)
    assert 1 <= model.best_epoch_ <= 4 and "ndcg@10" in model.curve_[0]
    inner = model.inner_model()
    assert inner is not None and np.array_equal(inner.segments_, segments)
    assert np.isfinite(inner.score_dense(np.arange(5))).all()


def test_registered_opt_in_and_usable_as_a_composite_tier(planted):
    split, segments = planted
    assert "joint_transformer" in SYSTEMS and "joint_transformer" not in RunConfig().models.systems
    built = build_system("joint_transformer", RunConfig())
    assert isinstance(built, JointTransformerRecommender)
    composite = SegmentedRecommender(
        tiers={"global": EASERecommender(reg=10.0),
               "joint": JointTransformerRecommender(**{**JOINT, "epochs": 3}),
               "popularity": PopularityRecommender()})
    composite.fit(split.train, valid=split.valid, context=FitContext(segments=segments))
    tiers = set(composite.validation_["tier"])  # the members and their per-segment blends
    assert {"global", "joint", "popularity"} <= tiers and all("+" in t for t in tiers - {"global", "joint",
                                                                                        "popularity"})
    assert set(composite.routing_.values()) <= tiers
    assert np.isfinite(composite.score_dense(np.arange(6))).all()


def test_history_gate_names_segments_and_serves_new_users_from_history(planted, tmp_path):
    split, segments = planted
    # max_len=2: the last answer before the query shows the segment (10-19 or 20-29)
    model = JointTransformerRecommender(**{**JOINT, "max_len": 2}, soft="history")
    model.fit(split.train, context=FitContext(segments=segments))  # serves the histories it trained on
    assert model.history_gate_ and model.net_.router is not None
    assert model.net_.n_shared_params() == TransformerRecommender(**{**GLOBAL, "max_len": 2}).fit(
        split.train).net_.n_params()  # the gate is not θ_shared
    tail = model.histories_
    row = model._rows(tail, model.weights_, np.arange(len(tail)))
    with torch.no_grad():
        named = model.net_.mixing(row)[0].argmax(1).numpy()
    assert (named == segments).mean() >= 0.95
    # a new user needs no segment: the gate reads the history, a given segment is ignored
    q, a0, a1 = (model.item_vocab_.index([f"i{i}"])[0] for i in (3, 15, 25))
    alone = model.score_histories([[a0, q], [a1, q]], None)
    np.testing.assert_array_equal(model.score_histories([[a0, q], [a1, q]], [1, 0]), alone)
    assert list(model.item_vocab_.id(alone.argmax(1))) == ["i13", "i23"]
    model.save(tmp_path / "g")
    loaded = Recommender.load(tmp_path / "g")
    assert loaded.history_gate_
    np.testing.assert_array_equal(loaded.score_dense(np.arange(10)), model.score_dense(np.arange(10)))


def test_activity_features_add_one_row_to_every_theta_table(planted, tmp_path):
    split, segments = planted
    full = Histories.from_interactions(split.train)
    # light and heavy users: keep 4, 6, 8 or 10 of each user's train items
    lists = [full.items[full.indptr[u + 1] - (4 + 2 * (u % 4)):full.indptr[u + 1]] for u in range(len(full))]
    train = build(lists, split.train.n_items)
    # max_len 16: the activity is of the items the network reads
    model = JointTransformerRecommender(**{**JOINT, "epochs": 3, "max_len": 16}, user_features="activity")
    model.fit(train, context=FitContext(segments=segments))
    own = {n: p for n, p in model.net_.named_parameters() if n.startswith("segment.")}
    assert all(p.shape[0] == model.n_segments_ + 1 for p in own.values())
    feats = model._features(np.array([0, 1, 3, 100]))
    assert feats.shape == (4, 1) and np.all(np.abs(feats) <= 1) and np.all(np.diff(feats[:, 0]) >= 0)
    assert feats[0, 0] < feats[-1, 0]  # light and heavy users are told apart
    # the feature row learns from every user: its gradient is non-zero from segment 0 alone
    net = model.net_
    hist = Histories.from_interactions(train)
    windows = make_windows(hist, model.config.max_len)
    idx = np.flatnonzero(segments[windows.user] == 0)[:64]
    inputs, targets = to_batch(hist, windows, idx, 1, net.config.pad_id)
    net.train()
    net.zero_grad(set_to_none=True)
    row = model._batch_side(hist, windows)(idx)
    JointLoss(net, False, None, kl_weight=0.0)(inputs, targets, row).backward()
    net.eval()
    bias = net.segment.output_bias.grad
    assert torch.count_nonzero(bias[1]) == 0 and torch.count_nonzero(bias[2]) > 0
    model.save(tmp_path / "a")
    loaded = Recommender.load(tmp_path / "a")
    assert loaded.n_features_ == 1 and loaded.activity_ == pytest.approx(model.activity_)
    np.testing.assert_array_equal(loaded.score_dense(np.arange(10)), model.score_dense(np.arange(10)))


def test_starts_from_the_global_model_when_the_context_has_one(planted, caplog):
    split, segments = planted
    settings = {**JOINT, "epochs": 4, "early_stopping": True, "patience": 2}
    glob = TransformerRecommender(**settings).fit(split.train, valid=split.valid)
    warm = JointTransformerRecommender(**settings).fit(
        split.train, valid=split.valid, context=FitContext(segments=segments, shared={"transformer": glob}))
    assert warm.init_ == "global" and 0 <= warm.joint_epochs_ <= 4
    assert warm.refit_epochs_ == warm.joint_epochs_  # the refit repeats the inner run's joint epochs
    # epoch 0 of the inner run is the global model's train-only network, θ_k at identity
    assert warm.curve_[0]["ndcg@10"] == pytest.approx(glob.inner_score_, abs=1e-6)
    assert warm.inner_score_ >= glob.inner_score_ - 1e-6
    assert get_tags(warm).builds_on == "transformer"
    # without one (or with init="scratch") θ_shared trains from a random init
    cold = JointTransformerRecommender(**settings).fit(split.train, valid=split.valid,
                                                       context=FitContext(segments=segments))
    assert cold.init_ == "scratch" and cold.joint_epochs_ is None
    scratch = JointTransformerRecommender(**settings, init="scratch")
    assert get_tags(scratch).builds_on is None
    other = TransformerRecommender(**{**settings, "embedding_size": 16}).fit(split.train, valid=split.valid)
    with caplog.at_level("WARNING", logger="segrec.models.joint"):
        ctx = FitContext(segments=segments, shared={"transformer": other})
        odd = JointTransformerRecommender(**settings).fit(split.train, valid=split.valid, context=ctx)
    assert odd.init_ == "scratch" and "another shape" in caplog.text
