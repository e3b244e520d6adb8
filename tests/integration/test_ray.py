"""Per-segment work on a local 2-CPU Ray cluster equals the local executor; faults fall back (issue 6).

One module-scoped cluster (``ray.init(num_cpus=2)``), shut down at the end. CI runs
these (marker ``ray``); without Ray installed they are skipped.
"""

import os
import signal
import sys

import numpy as np
import pandas as pd
import pytest

from segrec import generate_synthetic, temporal_split
from segrec.config import load_config
from segrec.distributed import LocalExecutor
from segrec.experiment import results_dict, run_experiment
from segrec.models import (
    EASERecommender,
    FitContext,
    PerSegmentRecommender,
    PopularityRecommender,
    Recommender,
)
from segrec.models.adapters import AdaptedTransformerRecommender
from segrec.models.transformer import TransformerRecommender
from segrec.route import SegmentedRecommender

if os.environ.get("SEGREC_REQUIRE_RAY"):  # CI (.ci/run): a missing Ray extra is a failure
    import ray
else:
    ray = pytest.importorskip("ray")
from segrec.distributed.ray import RayExecutor  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::segrec.errors.DataWarning"),
              # Ray Train's import of ray.data warns about its own deprecated settings
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# Tiny sizes: these tests check equality and fault handling, not accuracy.
# fp32: the DDP-equals-one-process check holds up to float summation order, which bf16 autocast amplifies
TINY = dict(embedding_size=16, n_layers=1, n_heads=2, max_len=20, dropout=0.0, epochs=3, patience=2,
            batch_size=64, n_threads=1, precision="fp32")
ADAPT = dict(epochs=2, early_stopping=True, patience=1, n_threads=1, rank=2, max_param_ratio=0.5)


class Faulty:
    """Wraps a task so that one segment raises, or kills its worker process, while a marker is absent.

    ``once=True`` creates the marker on the first failure (a transient fault the retry
    survives); otherwise every attempt fails (the segment must go to the fallback).
    """

    def __init__(self, fn, bad, mode, marker=None):
        self.fn, self.bad, self.mode, self.marker = fn, bad, mode, marker

    def __call__(self, shared, item):
        key = item[0] if isinstance(item, tuple) else item
        if key == self.bad and (self.marker is None or not os.path.exists(self.marker)):
            if self.marker is not None:
                open(self.marker, "w").close()
            if self.mode == "exit":
                os._exit(1)
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected fault in segment {key}")
        return self.fn(shared, item)


class FaultyExecutor:
    def __init__(self, inner, **fault):
        self.inner, self.fault = inner, fault

    def map(self, fn, items, **kwargs):
        return self.inner.map(Faulty(fn, **self.fault), items, **kwargs)


@pytest.fixture(scope="module")
def cluster():
    # the fault wrappers above live in this test module, which Ray workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def synth():
    syn = generate_synthetic(n_users=400, n_items=150, n_segments=4, seed=0)
    data = syn.to_interactions()
    return temporal_split(data), syn.segment_labels(data.user_vocab)


@pytest.fixture(scope="module")
def local_ease(synth):
    split, labels = synth
    return PerSegmentRecommender(base="ease", min_segment_users=5).fit(
        split.train, valid=split.valid, context=FitContext(segments=labels, executor=LocalExecutor()))


@pytest.fixture(scope="module")
def global_model(synth):
    split, _ = synth
    return TransformerRecommender(**TINY).fit(split.train, valid=split.valid)


def _same_per_segment(a, b, users):
    assert sorted(a.models_) == sorted(b.models_)
    for s in a.models_:
        assert a.models_[s].config == b.models_[s].config  # the same tuned reg
    np.testing.assert_array_equal(a.score_dense(users), b.score_dense(users))


def test_per_segment_models_on_ray_equal_local(cluster, synth, local_ease):
    split, labels = synth
    model = PerSegmentRecommender(base="ease", min_segment_users=5).fit(
        split.train, valid=split.valid,
        context=FitContext(segments=labels, executor=RayExecutor(num_cpus_per_task=1)))
    assert sorted(model.models_) == [0, 1, 2, 3] and model.failed_segments_ == {}
    _same_per_segment(model, local_ease, np.arange(split.train.n_users))


def test_adapters_on_ray_equal_local(cluster, synth, global_model):
    split, labels = synth
    ctx = FitContext(segments=labels, shared={"transformer": global_model})
    fits = [AdaptedTransformerRecommender(**ADAPT).fit(split.train, valid=split.valid,
                                                       context=ctx.with_changes(executor=ex))
            for ex in (LocalExecutor(), RayExecutor())]
    assert fits[0].segment_info_.keys() == fits[1].segment_info_.keys()
    assert sorted(fits[0].adapters_) == sorted(fits[1].adapters_)
    for k, theta in fits[0].adapters_.items():
        assert fits[0].segment_info_[k]["best_epoch"] == fits[1].segment_info_[k]["best_epoch"]
        for name, value in theta.items():
            np.testing.assert_array_equal(fits[1].adapters_[k][name], value)


def _check_fallback(split, labels, local_ease, mode):
    ex = FaultyExecutor(RayExecutor(max_retries=1), bad=2, mode=mode)
    model = PerSegmentRecommender(base="ease", min_segment_users=5).fit(
        split.train, valid=split.valid, context=FitContext(segments=labels, executor=ex))
    assert sorted(model.models_) == [0, 1, 3] and list(model.failed_segments_) == [2]
    why = model.failed_segments_[2]
    assert "on all 2 attempt(s)" in why
    assert ("RuntimeError: injected fault in segment 2" if mode == "raise" else "worker process died") in why
    users = np.arange(split.train.n_users)
    ok = labels != 2
    np.testing.assert_array_equal(model.score_dense(users[ok]), local_ease.score_dense(users[ok]))
    # the routed system serves segment 2's users with the global model
    seg = SegmentedRecommender(tiers={"local": model.with_params(), "global": EASERecommender(reg=200.0),
                                      "popularity": PopularityRecommender()},
                               routing=dict.fromkeys(range(4), "local"))
    # (its local tier refitted in-process with the same fault: the routing, not Ray, is checked here)
    seg.fit(split.train, valid=split.valid,
            context=FitContext(segments=labels,
                               executor=FaultyExecutor(LocalExecutor(), bad=2, mode="raise")))
    assert list(seg.tiers_["local"].failed_segments_) == [2]
    served = seg.score_served(users)[1]
    assert set(served[~ok]) == {"global"} and set(served[ok]) == {"local"}


def _check_retry(split, labels, local_ease, mode, marker):
    ex = FaultyExecutor(RayExecutor(max_retries=1), bad=0, mode=mode, marker=str(marker))
    model = PerSegmentRecommender(base="ease", min_segment_users=5).fit(
        split.train, valid=split.valid, context=FitContext(segments=labels, executor=ex))
    assert marker.exists() and model.failed_segments_ == {}
    _same_per_segment(model, local_ease, np.arange(split.train.n_users))


def test_a_segment_raising_twice_falls_back_and_the_rest_is_kept(cluster, synth, local_ease):
    _check_fallback(*synth, local_ease, "raise")


def test_a_segment_raising_once_is_retried(cluster, synth, local_ease, tmp_path):
    _check_retry(*synth, local_ease, "raise", tmp_path / "failed-once")


def test_candidate_k_search_on_ray_equals_local(cluster):
    from segrec.segment import KMeansSegmenter
    from segrec.segment.select_k import select_n_segments

    x = np.random.default_rng(0).normal(size=(300, 6))
    x[:100] += 3.0
    x[100:200] -= 3.0
    seg = KMeansSegmenter(random_state=0)
    a = select_n_segments(seg, x, candidates=range(2, 5))
    b = select_n_segments(seg, x, candidates=range(2, 5), executor=RayExecutor())
    assert a.best_k == b.best_k == 3
    pd.testing.assert_frame_equal(a.table.drop(columns="fit_seconds"), b.table.drop(columns="fit_seconds"))


def test_run_reports_the_segment_on_the_fallback(cluster, synth):
    cfg = load_config(None, models={"systems": ("popularity", "local_ease"),
                                    "min_segment_users": 5}, ray={"executor": "ray"}, seed=0,
                      segmentation={"n_segments": 4, "text": False})
    split, labels = synth
    data = split.train.concat(split.valid).concat(split.test)
    result = run_experiment(cfg, data, executor=FaultyExecutor(RayExecutor(), bad=1, mode="raise"))
    failed = result.failed_segments["local_ease"]
    assert list(failed) == [1] and "injected fault" in failed[1]
    assert "served by the global model" in result.skipped["local_ease segment 1"]
    assert results_dict(result)["failed_segments"]["local_ease"]["1"] == failed[1]
    assert set(result.reports) == {"popularity", "local_ease"}


def test_transformer_data_parallel_on_ray_train(cluster, synth, global_model, tmp_path):
    split, _ = synth
    model = RayExecutor(workers=2).fit_data_parallel(TransformerRecommender(**TINY), split.train,
                                                      valid=split.valid)
    assert isinstance(model, TransformerRecommender) and model.data_parallel_["world_size"] == 2
    assert model.config == global_model.config and model.inner_params_ is not None
    # DDP gradient = single-process gradient (dropout off): the same model up to float summation order
    assert model.best_epoch_ == global_model.best_epoch_
    users = np.arange(split.train.n_users)
    np.testing.assert_allclose(model.score_dense(users), global_model.score_dense(users), atol=1e-4)
    recs = model.recommend(split.train.user_vocab.ids[:3], k=5)
    assert recs.item_ids.shape == (3, 5)
    loaded = Recommender.load(model.save(tmp_path / "ddp"))
    np.testing.assert_array_equal(loaded.score_dense(users[:20]), model.score_dense(users[:20]))


# Worker deaths last: each one makes Ray start (and import segrec in) a new worker process.
def test_a_segment_whose_worker_dies_twice_falls_back(cluster, synth, local_ease):
    _check_fallback(*synth, local_ease, "exit")  # os._exit(1) in the task, on both attempts


def test_a_segment_whose_worker_is_killed_once_is_retried(cluster, synth, local_ease, tmp_path):
    _check_retry(*synth, local_ease, "kill", tmp_path / "killed-once")  # SIGKILL, then a clean retry
