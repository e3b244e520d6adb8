"""Training ingredients of the Transformer: the objective, learning-rate rule, precision, init.

:class:`NextItemLoss` is the loss module the epoch loop (and a DDP wrapper) calls;
the functions choose the embeddings' learning-rate multiplier, bf16 or fp32, the
validation users and the text-initialised item embeddings.
:mod:`segrec.models.transformer` re-exports them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..types import Interactions
from ._seqloss import multi_target_ce, output_logits, sample_negatives, seen_pairs
from ._seqnet import SeqNet

__all__ = ["NextItemLoss", "embedding_lr_scale", "project_embeddings", "validation_users"]


class NextItemLoss(torch.nn.Module):
    """The training objective as a module: ``forward(inputs, targets)`` is a batch's loss.

    Keeping the tied output layer and the item bias inside one ``forward`` lets a DDP
    wrapper (``segrec.distributed.ddp``) all-reduce every parameter's gradient.

    Args:
        net: The network.
        exclude_seen: Leave items already in the window out of each position's softmax.
        n_negatives: Shared negatives of a sampled softmax; None = the exact full softmax.
    """

    def __init__(self, net: SeqNet, exclude_seen: bool = False, n_negatives: int | None = None):
        super().__init__()
        self.net = net
        self.exclude_seen = exclude_seen
        self.n_negatives = n_negatives

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean softmax CE over positions with a next item; inputs (b, t), targets (b, t, w)."""
        hidden = self.net(inputs)  # (b, t, d)
        keep = targets[..., 0] >= 0  # positions with a next item
        tg = targets[keep]
        pairs = seen_pairs(inputs, keep, tg) if self.exclude_seen else None
        n_items = self.net.config.n_items
        negatives = None if self.n_negatives is None else sample_negatives(n_items, self.n_negatives,
                                                                           inputs.device)
        logits, cols = output_logits(hidden[keep], self.net.wte.weight[:n_items], self.net.item_bias,
                                     tg, pairs, negatives)
        return multi_target_ce(logits, cols)


#: ``embedding_lr_scale="auto"``: ``clip(EMB_LR_POSITIONS / training positions per item, 1, EMB_LR_MAX)``;
#: ml-100k (47 per item) -> 3.2, amazon-scientific (6.7) and the sparse scale shapes -> 10.
EMB_LR_POSITIONS = 150.0
EMB_LR_MAX = 10.0


def embedding_lr_scale(positions: int, n_items: int) -> float:
    """Learning-rate multiplier of the embeddings for data with ``positions`` training pairs."""
    per_item = positions / max(n_items, 1)
    return float(np.clip(EMB_LR_POSITIONS / max(per_item, 1e-9), 1.0, EMB_LR_MAX))


def validation_users(data: Interactions, valid: Interactions, cap: int | None,
                     seed: int) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """The users a validation scores (all with valid items, or a fixed sample of ``cap``).

    Returns:
        ``(users, fit rows, valid rows)``: dense user ids and their rows of the two matrices.
    """
    fit_csr, valid_csr = data.to_csr(), valid.to_csr()
    users = np.flatnonzero(np.diff(valid_csr.indptr) > 0)
    if cap is not None and len(users) > cap:
        # own generator: sampling must not shift the training shuffles
        users = np.sort(np.random.default_rng(seed).choice(users, cap, replace=False))
    return users, fit_csr[users], valid_csr[users]


def project_embeddings(x: np.ndarray, d: int, std: float = 0.02) -> np.ndarray:
    """PCA-project (n, D) embeddings to (n, d), scaled to the random init's std.

    Keeping the init's scale means text init changes *directions* (which items are
    similar) without changing the optimisation's starting temperature.
    """
    x = np.asarray(x, np.float64)
    x = x - x.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    z = u[:, :d] * s[:d]
    if z.shape[1] < d:  # fewer text dimensions than d: pad with small noise
        rng = np.random.default_rng(0)
        z = np.concatenate([z, rng.normal(0, z.std() + 1e-12, (len(z), d - z.shape[1]))], 1)
    return (z / (z.std() + 1e-12) * std).astype(np.float32)
