"""Fixtures of the reliability suites: a small saved run to tamper with."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory) -> Path:
    """A saved run (popularity + EASE, two segments, a new-user router) on tiny random data."""
    from segrec.artifacts import save_run
    from segrec.config import load_config
    from segrec.experiment import RunResult
    from segrec.models.baselines import EASERecommender, PopularityRecommender
    from segrec.testing import random_interactions

    data = random_interactions(n_users=30, n_items=20, n_interactions=150)
    segments = np.arange(data.n_users, dtype=np.int64) % 2
    systems = {"ease": EASERecommender(reg=10.0).fit(data), "popularity": PopularityRecommender().fit(data)}
    result = RunResult(load_config(None), data, None, segments, {"method": "none"}, systems=systems)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_run(result, tmp_path_factory.mktemp("trust") / "run")


@pytest.fixture
def run_copy(saved_run, tmp_path) -> Path:
    """A fresh copy of :func:`saved_run` to damage, inside its own folder (the reload root)."""
    return Path(shutil.copytree(saved_run, tmp_path / "runs" / "run"))
