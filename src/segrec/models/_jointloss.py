"""The joint model's objective: CE of each user's segment path + λ·KL against the shared path.

:class:`JointLoss` is what :class:`~segrec.models.joint.JointTransformerRecommender`
trains; :mod:`segrec.models.joint` re-exports it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._jointnet import JointNet, RowInput
from ._seqloss import MASKED, consistency_kl, multi_target_ce, output_logits, sample_negatives, seen_pairs

__all__ = ["JointLoss"]


class JointLoss(nn.Module):
    """The joint objective: CE of the segment path + λ·KL(segment path || shared path).

    Args:
        net: The network with θ_k attached.
        exclude_seen: Leave items already in the window out of each position's softmax.
        n_negatives: Shared negatives of a sampled softmax; None = the exact full softmax.
        kl_weight: λ; the shared path is computed (no gradient, eval mode) only when > 0.
        kl_sample: Share of the batch's windows the consistency term is computed on.
    """

    def __init__(self, net: JointNet, exclude_seen: bool, n_negatives: int | None, kl_weight: float,
                 kl_sample: float = 1.0):
        super().__init__()
        self.net, self.exclude_seen = net, exclude_seen
        self.n_negatives, self.kl_weight, self.kl_sample = n_negatives, kl_weight, kl_sample

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, row: RowInput) -> torch.Tensor:
        """Mean loss; inputs (b, t), targets (b, t, w), ``row`` what is known of each window's user.

        With the history gate, its cross-entropy against the segmenter's label (rows that
        have a segment) is added: that is all the gate learns from.
        """
        net = self.net
        weights, gate_logits = net.mixing(row)
        loss = torch.zeros((), device=inputs.device)
        if gate_logits is not None:
            labelled = row.weights.sum(1) > 0
            if labelled.any():
                loss = F.cross_entropy(gate_logits[labelled], row.weights[labelled].argmax(1))
        b = inputs.shape[0]
        n_sub = 0 if self.kl_weight <= 0 else min(b, max(1, round(self.kl_sample * b)))
        if 0 < n_sub < b:
            # the consistency windows (a random kl_sample share) first: their positions are then the
            # loss's leading rows, so their logits, seen-item pairs and targets are plain slices that
            # the shared pass reuses (an ml-100k epoch costs the same as gathering the rows did)
            order = torch.randperm(b, device=inputs.device)
            inputs, targets, weights = inputs[order], targets[order], weights[order]
        keep = targets[..., 0] >= 0
        tg = targets[keep]
        pairs = seen_pairs(inputs, keep, tg) if self.exclude_seen else None
        n_items = net.config.n_items
        negatives = (None if self.n_negatives is None
                     else sample_negatives(n_items, self.n_negatives, inputs.device))
        weight, item_bias = net.wte.weight[:n_items], net.item_bias
        hidden, bias = net.segment_forward(inputs, weights)
        h = hidden[keep]
        if bias is not None:
            # a per-row bias through the dot product: [h, w] · [item, bias_k] = h·item + Σ_k w_k bias_k,
            # so the exact and the sampled softmax both take it unchanged
            row_w = weights[:, None, :].expand(-1, inputs.shape[1], -1)[keep]
            h = torch.cat([h, row_w.to(h.dtype)], 1)
            weight = torch.cat([weight, net.segment.output_bias.T.to(weight.dtype)], 1)
        n, n_rows = h.shape[0], int(keep[:n_sub].sum())  # kept positions are numbered row-major

        def group_ce(lo: int, hi: int):
            """Rows lo..hi-1: their logits, seen-item pairs and share of the mean CE."""
            part = None if pairs is None else _pairs_in(pairs, lo, hi)
            # both softmaxes mask the same entries with a finite MASKED, so the KL is one fused kernel
            logits, cols = output_logits(h[lo:hi], weight, item_bias, tg[lo:hi], part, negatives, fill=MASKED)
            return logits, part, multi_target_ce(logits, cols) * ((hi - lo) / n)

        ce, kl = torch.zeros((), device=inputs.device), None
        if n_rows > 0:  # the consistency rows (none when kl_weight is 0)
            logits, part, share = group_ce(0, n_rows)
            ce = ce + share
            was_training = net.training
            net.eval()  # the shared path as it serves: no dropout, no gradient
            with torch.no_grad():
                ref, _ = output_logits(net(inputs[:n_sub])[keep[:n_sub]], net.wte.weight[:n_items],
                                       item_bias, tg[:n_rows], part, negatives, fill=MASKED)
            net.train(was_training)
            kl = consistency_kl(logits, ref, masked=False)
        if n > n_rows:
            ce = ce + group_ce(n_rows, n)[2]
        loss = loss + ce
        return loss if kl is None else loss + self.kl_weight * kl


def _pairs_in(pairs: tuple[torch.Tensor, torch.Tensor], lo: int,
              hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, item) pairs of rows lo..hi-1, renumbered from 0."""
    rows, items = pairs
    inside = (rows >= lo) & (rows < hi)
    return rows[inside] - lo, items[inside]
