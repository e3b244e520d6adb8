"""Executors without Ray (issue 6): LocalExecutor, faults -> fallback, the DDP hook in one process."""

import socket
import sys

import numpy as np
import pytest
import torch

from segrec import SegrecError, generate_synthetic, temporal_split
from segrec.cli import build_parser
from segrec.cli.run import _overrides
from segrec.config import RayConfig, load_config
from segrec.distributed import Executor, LocalExecutor, TaskFailure, make_executor
from segrec.distributed.ddp import TorchDataParallel, shard_bounds
from segrec.distributed.executor import raise_if_all_failed
from segrec.errors import ConfigError, MissingDependencyError, ModelFitError
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

# the small synthetic catalogue leaves a few items unused; that warning is not under test here
pytestmark = pytest.mark.filterwarnings("ignore::segrec.errors.DataWarning")


class Flaky:
    """``fn`` that raises on the first ``fail_times`` calls for one item."""

    def __init__(self, fn, bad, fail_times):
        self.fn, self.bad, self.left = fn, bad, fail_times

    def __call__(self, shared, item):
        key = item[0] if isinstance(item, tuple) else item
        if key == self.bad and self.left > 0:
            self.left -= 1
            raise RuntimeError(f"injected fault in segment {key}")
        return self.fn(shared, item)


class FaultyExecutor:
    """Wraps an executor so that one segment's task fails ``fail_times`` times."""

    def __init__(self, inner, bad, fail_times=99):
        self.inner, self.bad, self.fail_times = inner, bad, fail_times

    def map(self, fn, items, **kwargs):
        return self.inner.map(Flaky(fn, self.bad, self.fail_times), items, **kwargs)


@pytest.fixture(scope="module")
def synth():
    syn = generate_synthetic(n_users=300, n_items=120, n_segments=3, seed=0)
    data = syn.to_interactions()
    return temporal_split(data), syn.segment_labels(data.user_vocab)


def test_local_map_keeps_order_and_passes_shared():
    ex = LocalExecutor()
    assert isinstance(ex, Executor)
    assert ex.map(lambda base, x: base * x, [3, 1, 2], shared=10) == [30, 10, 20]
    assert ex.map(str, [1, 2]) == ["1", "2"]
    assert ex.map(str, []) == []
    with pytest.raises(ConfigError, match="2 labels for 3 items"):
        ex.map(str, [1, 2, 3], labels=["a", "b"])


def test_local_retries_a_failing_task_then_reports_it():
    flaky = Flaky(lambda s, x: x, bad=1, fail_times=1)
    assert LocalExecutor(max_retries=1).map(flaky, [0, 1, 2], shared=None) == [0, 1, 2]
    out = LocalExecutor(max_retries=1).map(Flaky(lambda s, x: x, 1, 2), [0, 1], shared=None,
                                           labels=["s0", "s1"], on_error="return")
    assert out[0] == 0 and isinstance(out[1], TaskFailure)
    assert out[1].attempts == 2 and not out[1].killed
    assert "s1: raised on all 2 attempt(s): RuntimeError: injected fault in segment 1" == str(out[1])
    with pytest.raises(RuntimeError, match="injected fault in segment 1"):  # raise: the task's own error
        LocalExecutor(max_retries=0).map(Flaky(lambda s, x: x, 1, 1), [0, 1], shared=None,
                                         labels=["s0", "s1"])
    with pytest.raises(ConfigError, match="max_retries"):
        LocalExecutor(max_retries=-1)


def test_all_failed_is_an_error_not_a_silent_fallback():
    raise_if_all_failed([1, TaskFailure("a", "x", 2)], "m")  # some left: fine
    with pytest.raises(ModelFitError, match="every one of 2 tasks failed"):
        raise_if_all_failed([TaskFailure("a", "x", 2), TaskFailure("b", "x", 2)], "m")


def test_make_executor_from_config(monkeypatch):
    assert isinstance(make_executor(None), LocalExecutor)
    assert make_executor(RayConfig(max_retries=3)).max_retries == 3
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(MissingDependencyError, match=r"segrec\[ray\]"):
        make_executor(RayConfig(executor="ray"))


def test_cli_flags_fill_the_ray_section():
    args = build_parser().parse_args(["run", "--executor", "ray", "--workers", "3", "--ray-address", "auto",
                                      "--max-retries", "2"])
    cfg = load_config(None, **_overrides(args))
    assert (cfg.ray.executor, cfg.ray.workers, cfg.ray.address, cfg.ray.max_retries) == ("ray", 3, "auto", 2)
    address_only = build_parser().parse_args(["run", "--ray-address", "h:6379"])
    only_address = load_config(None, **_overrides(address_only))
    assert only_address.ray.executor == "ray"
    assert load_config(None, **_overrides(build_parser().parse_args(["run"]))).ray.executor == "local"
    with pytest.raises(ConfigError, match="ray.workers"):
        load_config(None, ray={"workers": 0})


def test_per_segment_failure_falls_back_and_others_are_kept(synth, tmp_path):
    split, labels = synth
    base = dict(base="ease", base_params={"reg": 50.0}, min_segment_users=5)
    ref = PerSegmentRecommender(**base).fit(split.train, context=FitContext(segments=labels))
    model = PerSegmentRecommender(**base).fit(
        split.train, context=FitContext(segments=labels, executor=FaultyExecutor(LocalExecutor(), bad=1)))
    assert sorted(model.models_) == [0, 2] and list(model.failed_segments_) == [1]
    assert "raised on all 2 attempt(s)" in model.failed_segments_[1]
    users = np.arange(split.train.n_users)
    ok = labels != 1
    np.testing.assert_array_equal(model.score_dense(users[ok]), ref.score_dense(users[ok]))
    assert np.isnan(model.score_dense(users[~ok])).all()
    # the routed system serves segment 1 from the global tier
    seg = SegmentedRecommender(tiers={"local": model, "global": EASERecommender(reg=50.0),
                                      "popularity": PopularityRecommender()},
                               routing={0: "local", 1: "local", 2: "local"})
    seg.fit(split.train, context=FitContext(segments=labels,
                                            executor=FaultyExecutor(LocalExecutor(), bad=1)))
    assert list(seg.tiers_["local"].failed_segments_) == [1]
    _, served = seg.score_served(users)
    assert set(served[~ok]) == {"global"} and set(served[ok]) == {"local"}
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert loaded.failed_segments_ == model.failed_segments_


def test_per_segment_transient_failure_is_retried(synth):
    split, labels = synth
    model = PerSegmentRecommender(base="popularity", min_segment_users=5).fit(
        split.train, context=FitContext(
            segments=labels, executor=FaultyExecutor(LocalExecutor(max_retries=1), bad=0, fail_times=1)))
    assert sorted(model.models_) == [0, 1, 2] and model.failed_segments_ == {}


def test_per_segment_bad_base_is_a_config_error_not_a_fallback(synth):
    split, labels = synth
    with pytest.raises(SegrecError, match="unknown base model 'nope'"):
        PerSegmentRecommender(base="nope").fit(split.train, context=FitContext(segments=labels))


TINY = dict(embedding_size=16, n_layers=1, n_heads=2, max_len=20, dropout=0.0, epochs=3, patience=2,
            batch_size=64, n_threads=1)


def test_adapter_failure_keeps_the_global_model_for_that_segment(synth):
    split, labels = synth
    g = TransformerRecommender(**TINY).fit(split.train, valid=split.valid)
    cfg = dict(epochs=2, early_stopping=False, n_threads=1, rank=2, max_param_ratio=0.5)
    ctx = FitContext(segments=labels, shared={"transformer": g})
    ref = AdaptedTransformerRecommender(**cfg).fit(split.train, valid=split.valid, context=ctx)
    bad = AdaptedTransformerRecommender(**cfg).fit(
        split.train, valid=split.valid,
        context=ctx.with_changes(executor=FaultyExecutor(LocalExecutor(), bad=2)))
    assert sorted(bad.adapters_) == [0, 1] and list(bad.failed_segments_) == [2]
    assert bad.segment_info_[2]["best_epoch"] == 0 and "injected fault" in bad.segment_info_[2]["failed"]
    for k in (0, 1):
        for name, value in ref.adapters_[k].items():
            np.testing.assert_array_equal(bad.adapters_[k][name], value)
    users = np.flatnonzero(labels == 2)
    np.testing.assert_allclose(bad.score_dense(users), g.score_dense(users), rtol=1e-5, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_hook_in_a_one_process_group_is_the_plain_fit(synth):
    split, _ = synth
    assert [shard_bounds(7, r, 3) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(1, 1, 2) == (1, 1)
    plain = TransformerRecommender(**TINY).fit(split.train, valid=split.valid)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}",
                                         rank=0, world_size=1)
    try:
        model = TransformerRecommender(**TINY)
        model.data_parallel_hook = TorchDataParallel("cpu")
        model.fit(split.train, valid=split.valid)
    finally:
        torch.distributed.destroy_process_group()
    users = np.arange(50)
    np.testing.assert_array_equal(model.score_dense(users), plain.score_dense(users))
    assert model.best_epoch_ == plain.best_epoch_
    assert [round(r["loss"], 5) for r in model.curve_[1:]] == [round(r["loss"], 5) for r in plain.curve_[1:]]
