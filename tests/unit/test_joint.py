"""The jointly trained segment-aware Transformer (issue 17): planted tastes, budget, gradients, artifacts."""

import numpy as np
import pytest
import torch
from test_adapters import GLOBAL, planted_segments_split  # the planted data of the adapter tests

from segrec.config import RunConfig
from segrec.evaluate import evaluate
from segrec.models import EASERecommender, FitContext, PopularityRecommender, Recommender
from segrec.models._seqdata import Histories, make_windows, to_batch
from segrec.models.joint import JointLoss, JointTransformerRecommender, theta_k_size
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
    JointLoss(net, False, None, kl_weight=0.5)(inputs, targets, weights).backward()
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
