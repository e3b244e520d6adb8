"""Sequence data for the Transformer: ragged histories, training windows, padded batches.

Everything here is numpy and vectorised; torch tensors are made only at the edge
(:func:`to_batch`), so the same code feeds training, per-segment adapters and scoring.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..types import Interactions

__all__ = ["Histories", "Windows", "make_windows", "iter_batches", "token_bounds", "padded_tail"]


@dataclass(frozen=True)
class Histories:
    """Time-ordered item histories of many users as one flat array plus offsets.

    Attributes:
        items: int64 array of shape (total,), items of user u at ``items[indptr[u]:indptr[u+1]]``.
        indptr: int64 array of shape (n_users + 1,).
    """

    items: np.ndarray
    indptr: np.ndarray

    @classmethod
    def from_interactions(cls, data: Interactions, max_len: int | None = None) -> Histories:
        """Each user's rows of ``data`` (already in user, time order), keeping the last ``max_len``."""
        h = cls(data.items.astype(np.int64), data.indptr.astype(np.int64))
        return h if max_len is None else h.tail(max_len)

    @classmethod
    def from_lists(cls, histories: Sequence[Sequence[int]]) -> Histories:
        """From a list of item-index sequences (one per user, oldest first)."""
        arrays = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        indptr = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        items = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
        return cls(items, indptr)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        """History length per user, int64 array of shape (n_users,)."""
        return np.diff(self.indptr)

    def tail(self, max_len: int) -> Histories:
        """Only the last ``max_len`` items of every history (what the model can attend to)."""
        lengths = np.minimum(self.lengths, max_len)
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        pos = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
        src = np.repeat(self.indptr[1:] - lengths, lengths) + pos
        return Histories(self.items[src], indptr)

    def select(self, users: np.ndarray) -> Histories:
        """Histories of ``users`` (dense indices into this object), in that order."""
        users = np.asarray(users, dtype=np.int64)
        lengths = self.lengths[users]
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        pos = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
        src = np.repeat(self.indptr[users], lengths) + pos
        return Histories(self.items[src], indptr)


@dataclass(frozen=True)
class Windows:
    """Training windows: input positions ``[start, start + length)`` of the flat history array.

    Position i predicts the next ``target_window`` items after it, which may lie
    past the window but never past its user's history (``stop``).
    """

    start: np.ndarray  # int64 (n_windows,)
    length: np.ndarray  # int64 (n_windows,)
    stop: np.ndarray  # int64 (n_windows,), end of the user's history in the flat array
    user: np.ndarray  # int64 (n_windows,), row of the window's user in the Histories

    def __len__(self) -> int:
        return len(self.start)


def make_windows(hist: Histories, max_len: int) -> Windows:
    """Cut every history into non-overlapping windows of at most ``max_len`` inputs.

    A history of n items gives n - 1 (input, next item) pairs; windows are cut from
    the most recent end, so the latest window always has full context and every
    pair is trained on exactly once per epoch (long histories are not truncated).
    """
    n_pairs = np.maximum(hist.lengths - 1, 0)
    n_win = -(-n_pairs // max_len)  # ceil division
    user = np.repeat(np.arange(len(hist), dtype=np.int64), n_win)
    # k-th window counted from the end of its user's history
    k = np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    last_input = hist.indptr[1:][user] - 1  # exclusive end of the inputs (the last item is only a target)
    end = last_input - k * max_len
    start = np.maximum(end - max_len, hist.indptr[:-1][user])
    return Windows(start, end - start, hist.indptr[1:][user], user)


def iter_batches(
    windows: Windows, rng: np.random.Generator, *, tokens: int | None = None, size: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield window indices in batches of similar length, batch order shuffled.

    Sorting by length first (ties in random order) cuts padding several-fold on
    power-law activity data; shuffling the batches keeps SGD unbiased across epochs.
    Every window is in exactly one batch per epoch.

    Args:
        windows: The training windows.
        rng: Seeded generator (ties and batch order).
        tokens: Padded positions per batch (windows x the longest one's length): short
            windows then go many to a batch and a step costs about the same at any
            history length. At least one window per batch.
        size: Windows per batch instead (the old fixed batching); wins over ``tokens``.
    """
    if tokens is None and size is None:
        raise ValueError("iter_batches: give tokens= or size=")
    perm = rng.permutation(len(windows))
    order = perm[np.argsort(-windows.length[perm], kind="stable")]
    if size is not None:
        bounds = np.arange(0, len(order) + size, size).clip(max=len(order))
    else:
        bounds = token_bounds(windows.length[order], tokens)
    batches = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    for b in rng.permutation(len(batches)):
        yield batches[b]


def token_bounds(lengths: np.ndarray, tokens: int) -> np.ndarray:
    """Batch boundaries over windows sorted by decreasing length, each within ``tokens``.

    A batch starting at window i holds the windows after it while (count x length[i])
    stays within the budget (its first window is its longest: the padded width).
    """
    bounds, i, n = [0], 0, len(lengths)
    while i < n:
        i += max(1, int(tokens // max(int(lengths[i]), 1)))
        bounds.append(min(i, n))
    return np.asarray(bounds, dtype=np.int64)


def to_batch(
    hist: Histories, windows: Windows, idx: np.ndarray, target_window: int, pad_id: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded inputs (b, t) and targets (b, t, w) for windows ``idx``; target -1 = none."""
    start, length, stop = windows.start[idx], windows.length[idx], windows.stop[idx]
    t = int(length.max())
    pos = start[:, None] + np.arange(t)[None, :]  # (b, t)
    valid = np.arange(t)[None, :] < length[:, None]
    inputs = np.where(valid, hist.items[np.minimum(pos, len(hist.items) - 1)], pad_id)
    tpos = pos[:, :, None] + 1 + np.arange(target_window)[None, None, :]  # (b, t, w)
    tvalid = valid[:, :, None] & (tpos < stop[:, None, None])
    targets = np.where(tvalid, hist.items[np.minimum(tpos, len(hist.items) - 1)], -1)
    return (torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device))


def padded_tail(hist: Histories, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded inputs (b, t) and last-position index (b,) for scoring users ``rows``.

    Empty histories get one pad token (position 0); callers mark them as unscorable.
    """
    sub = hist.select(rows)
    lengths = sub.lengths
    t = max(int(lengths.max()) if len(lengths) else 1, 1)
    pos = sub.indptr[:-1, None] + np.arange(t)[None, :]
    valid = np.arange(t)[None, :] < lengths[:, None]
    if len(sub.items) == 0:
        inputs = np.full(valid.shape, pad_id, dtype=np.int64)
    else:
        inputs = np.where(valid, sub.items[np.minimum(pos, len(sub.items) - 1)], pad_id)
    return inputs.astype(np.int64), np.maximum(lengths - 1, 0)
