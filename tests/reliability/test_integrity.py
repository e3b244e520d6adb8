"""Corrupted and truncated artifacts are detected on load (issue 8, part 3).

A run directory carries sha256 checksums in ``manifest.json``, so any change to
any file is caught by ``load_run``. A single saved model has no manifest; there
a truncated or damaged safetensors header, a bad Parquet table or bad JSON must
still be a :class:`SegrecError` that names the file, never a raw library error.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from segrec.artifacts import load_run, save_run
from segrec.config import load_config
from segrec.errors import SegrecError
from segrec.experiment import RunResult
from segrec.models.base import Recommender
from segrec.models.baselines import EASERecommender
from segrec.testing import random_interactions


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model dir, run dir) of a small fitted EASE, saved once per module."""
    root = tmp_path_factory.mktemp("integrity")
    data = random_interactions()
    model = EASERecommender(reg=10.0).fit(data)
    model_dir = model.save(root / "model")
    result = RunResult(load_config(None), data, None, np.zeros(data.n_users, np.int64),
                       {"method": "none"}, systems={"ease": model})
    run_dir = save_run(result, root / "run")
    return model_dir, run_dir


def _copy(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _truncate(path, keep=0.5):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _flip(path, at):
    raw = bytearray(path.read_bytes())
    raw[at % len(raw)] ^= 0xFF
    path.write_bytes(bytes(raw))


def _garble_header(path):
    raw = bytearray(path.read_bytes())
    raw[8:16] = b"{garbage"  # the JSON header of a safetensors file starts at byte 8
    path.write_bytes(bytes(raw))


MODEL_DAMAGE = [
    ("tensors.safetensors", lambda p: _truncate(p, 0.5)),
    ("tensors.safetensors", lambda p: _truncate(p, 0.0)),
    ("tensors.safetensors", lambda p: p.write_bytes(b"\xff" * 8)),
    ("tensors.safetensors", _garble_header),
    ("users.parquet", lambda p: _truncate(p, 0.5)),
    ("items.parquet", lambda p: p.write_bytes(b"not parquet")),
    ("model.json", lambda p: _truncate(p, 0.5)),
    ("model.json", lambda p: p.write_bytes(b"\xff\xfe")),
    ("tensors.safetensors", lambda p: p.unlink()),
]


@pytest.mark.parametrize(("name", "damage"), MODEL_DAMAGE,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(MODEL_DAMAGE)])
def test_damaged_model_file_is_a_segrec_error_naming_the_file(saved, tmp_path, name, damage):
    model_dir = _copy(saved[0], tmp_path)
    damage(model_dir / name)
    with pytest.raises(SegrecError, match=re.escape(name)):
        Recommender.load(model_dir)


def test_undamaged_model_loads(saved):
    model = Recommender.load(saved[0])
    assert model.recommend(model.user_vocab_.ids[:2], k=3).item_ids.shape == (2, 3)


RUN_FILES = ["systems/ease/tensors.safetensors", "systems/ease/items.parquet", "segments.parquet",
             "results.json", "systems/ease/model.json"]


@pytest.mark.parametrize("rel", RUN_FILES)
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_run_file_fails_the_manifest_check(saved, tmp_path, rel, how):
    run_dir = _copy(saved[1], tmp_path)
    f = run_dir / rel
    if how == "flip":  # one bit in the middle: the size is unchanged, only the checksum sees it
        _flip(f, len(f.read_bytes()) // 2)
    else:
        _truncate(f, 0.9)
    with pytest.raises(SegrecError, match=re.escape(rel)):
        load_run(run_dir)


def test_corrupt_manifest_is_a_segrec_error(saved, tmp_path):
    run_dir = _copy(saved[1], tmp_path)
    _truncate(run_dir / "manifest.json", 0.5)
    with pytest.raises(SegrecError, match="manifest.json"):
        load_run(run_dir)


def test_undamaged_run_loads(saved):
    run = load_run(saved[1])
    assert run.system("ease").n_items > 0
