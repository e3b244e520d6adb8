"""Shared pytest fixtures: small, general, and free of model specifics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segrec.testing import planted_split, random_interactions

REPO_ROOT = Path(__file__).resolve().parents[1]
ML100K_CANDIDATES = (Path("/work/shared/data/ml-100k"), REPO_ROOT.parent / "shared" / "data" / "ml-100k")


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded generator per test."""
    return np.random.default_rng(42)


@pytest.fixture
def tiny_interactions():
    """A small random Interactions (20 users x 15 items, ~80 rows)."""
    return random_interactions()


@pytest.fixture
def make_interactions():
    """The random Interactions builder itself, for tests that need several sizes or seeds."""
    return random_interactions


@pytest.fixture
def planted_segments():
    """Planted-structure Split: 3 groups x 12 users, 7-item blocks, one test item per user."""
    return planted_split()


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """Directory holding ml-100k ``interactions.csv``; skips the test when it is absent."""
    for path in ML100K_CANDIDATES:
        if (path / "interactions.csv").is_file():
            return path
    pytest.skip("ml-100k not found under ../shared/data/ml-100k")
