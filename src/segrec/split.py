"""Per-user temporal split, exactly as ../shared/EVAL_PROTOCOL.md (RecBole "RS, TO, by user")."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .types import Interactions, Split

__all__ = ["split_counts", "temporal_split", "holdout_split"]


def split_counts(n: np.ndarray, ratios=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Rows per part for users with ``n`` interactions, following the protocol.

    ``cnt = [int(r_i * n)]; cnt[0] = n - cnt[1] - cnt[2]``; then, test first and
    valid second, a part whose share is in (0, 1) rows gets one row taken from
    train, unless train is down to one row.

    Args:
        n: int array of shape (n_users,), interactions per user.
        ratios: Three non-negative shares, summing to 1.

    Returns:
        int64 array of shape (n_users, 3): train, valid, test counts.

    Example:
        >>> split_counts(np.array([1, 2, 5, 10])).tolist()
        [[1, 0, 0], [1, 0, 1], [3, 1, 1], [8, 1, 1]]
    """
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or not np.isclose(r.sum(), 1.0):
        raise ConfigError(f"split ratios must be three non-negative numbers summing to 1; got {ratios}")
    n = np.asarray(n, dtype=np.int64)
    nf = n.astype(np.float64)
    c1 = (r[1] * nf).astype(np.int64)  # int() truncation, as the protocol's Python does
    c2 = (r[2] * nf).astype(np.int64)
    c0 = n - c1 - c2
    # i = 1: the test part (r[-1]); skipped (and the loop broken) when train <= 1.
    go = c0 > 1
    bump = go & (r[2] * nf > 0) & (r[2] * nf < 1)
    c2 = c2 + bump
    c0 = c0 - bump
    # i = 2: the valid part (r[-2]), only if the loop was not broken.
    go = go & (c0 > 1)
    bump = go & (r[1] * nf > 0) & (r[1] * nf < 1)
    c1 = c1 + bump
    c0 = c0 - bump
    return np.stack([c0, c1, c2], axis=1)


def temporal_split(data: Interactions, ratios=(0.8, 0.1, 0.1), name: str = "temporal") -> Split:
    """Split every user's time-ordered history into train / valid / test.

    Args:
        data: Interactions in canonical (user, time) order.
        ratios: Shares of train, valid and test (EVAL_PROTOCOL default 0.8/0.1/0.1).
        name: Label kept on the Split.

    Returns:
        Split whose three parts share ``data``'s vocabularies.
    """
    counts = split_counts(data.user_counts(), ratios)
    pos = np.arange(len(data)) - data.indptr[data.users]  # position within the user
    c0 = counts[data.users, 0]
    c1 = counts[data.users, 1]
    part = np.where(pos < c0, 0, np.where(pos < c0 + c1, 1, 2))
    return Split(data.subset(part == 0), data.subset(part == 1), data.subset(part == 2), name)


def holdout_split(data: Interactions, ratio: float = 0.1) -> tuple[Interactions, Interactions]:
    """Carve an inner validation set: the last ``ratio`` of each user's history.

    Used by models to tune settings on fit data only (the protocol's black-box
    rule); the protocol's own rounding applies, so users with one row keep it.

    Returns:
        ``(inner_train, inner_valid)``.
    """
    split = temporal_split(data, (1.0 - ratio, 0.0, ratio))
    return split.train, split.test
