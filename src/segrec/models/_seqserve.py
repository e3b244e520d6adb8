"""Serving a fitted SeqNet: scores, hidden states, item table, FLOPs and history updates.

The pieces the Transformer and its segment-adapted variants share once training is
over; :mod:`segrec.models.transformer` re-exports the public ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ._seqdata import Histories
from ._seqnet import SeqNet, SeqNetConfig
from ._seqtrain import score_rows
from ._vectors import ItemTable

__all__ = ["append_histories", "net_flops", "net_item_table", "scoring_threads"]


@contextlib.contextmanager
def scoring_threads(n_threads: int | None) -> Iterator[None]:
    """Torch's CPU threads set to ``n_threads`` while scoring (None: unchanged), restored after.

    Scoring runs the network in eval mode, which draws no random numbers, so unlike a fit
    it needs no seeding: ``torch.manual_seed`` costs about 3 ms a call here (it formats a
    stack trace), more than a new user's whole forward pass.
    """
    before = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        if n_threads:
            torch.set_num_threads(before)


def _score_net(net: SeqNet, hist: Histories, rows: np.ndarray, device: str) -> np.ndarray:
    def forward(inputs, last):
        return net.logits(net(inputs, last=last))  # (b, n_items)

    return score_rows(forward, hist, rows, net.config.pad_id, net.config.n_items, device=device)


def append_histories(hist: Histories, users: np.ndarray, items: np.ndarray, max_len: int) -> Histories:
    """``hist`` with ``items`` appended to ``users``' sequences (given order kept), cut to ``max_len``."""
    n = len(hist)
    old_users = np.repeat(np.arange(n, dtype=np.int64), hist.lengths)
    all_users = np.concatenate([old_users, np.asarray(users, np.int64)])
    all_items = np.concatenate([hist.items, np.asarray(items, np.int64)])
    order = np.argsort(all_users, kind="stable")  # a user's old items first, then the new ones
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(all_users, minlength=n), out=indptr[1:])
    return Histories(all_items[order], indptr).tail(max_len)


def _hidden_net(net: SeqNet, hist: Histories, rows: np.ndarray, device: str) -> np.ndarray:
    """Hidden states (len(rows), d) at each history's last position; NaN rows for empty ones.

    The same batching as :func:`_score_net` (``score_rows``, users sorted by length),
    stopping before the item table.
    """
    def forward(inputs, last):
        return net(inputs, last=last)  # (b, d): the state _score_net multiplies with the item table

    return score_rows(forward, hist, rows, net.config.pad_id, net.config.embedding_size, device=device)


def net_item_table(net: SeqNet, extra_bias: dict[int, np.ndarray] | None = None) -> ItemTable:
    """The item table of a SeqNet: tied embeddings ``wte[:n_items]`` and ``item_bias``.

    Args:
        net: The network.
        extra_bias: Further bias rows added to ``item_bias`` (the adapters' per-segment
            output biases), as group i + 1 for the i-th entry in key order.
    """
    n = net.config.n_items
    vectors = net.wte.weight[:n].detach().float().cpu().numpy()
    bias = net.item_bias.detach().float().cpu().numpy()
    rows = [bias] + [bias + np.asarray(extra_bias[k], np.float32) for k in sorted(extra_bias or {})]
    return ItemTable(vectors, np.stack(rows))


def net_flops(cfg: SeqNetConfig, h: np.ndarray, n_items: int) -> np.ndarray:
    """FLOPs of one SeqNet forward over the last ``min(h, max_len)`` items + logits.

    Per layer and position: q/k/v and output projections (4 d^2) and the MLP
    (2 * ffn_mult * d^2), each a multiply-add (x2); attention scores and the
    weighted sum cost 2 * L * d each per position. Only the last position's
    hidden state is dotted with the item table (d * n_items).
    """
    d = float(cfg.embedding_size)
    length = np.minimum(h, float(cfg.max_len))
    ffn = float(cfg.ffn_mult)
    per_layer = 2.0 * length * (4.0 + 2.0 * ffn) * d * d + 4.0 * length * length * d
    return cfg.n_layers * per_layer + 2.0 * d * n_items
