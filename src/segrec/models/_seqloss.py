"""The Transformer's training objective: multi-target softmax CE, exact or sampled.

Shared by the global model and the segment adapters, so both train the very same
softmax. Three pieces:

* :func:`seen_pairs` lists the (position, item) pairs to leave out of a position's
  softmax (items already in the window), from the window's item ids: memory
  O(positions x window length), never O(positions x catalogue);
* :func:`output_logits` scores each position against the whole catalogue, or, for
  large catalogues, against its own targets plus negatives shared by the batch
  (a sampled softmax with the uniform-sampling correction);
* :func:`multi_target_ce` is the loss over those scores (plus the adapters' KL term).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: a masked score that is finite: exp(MASKED - max) is exactly 0 in fp32 and bf16, as for
#: -inf, but MASKED - MASKED is 0, not NaN, so a KL between two softmaxes with the same
#: mask needs no masking passes
MASKED = -1e9

__all__ = ["MASKED", "seen_pairs", "mask_seen", "output_logits", "sample_negatives", "multi_target_ce",
           "consistency_kl"]


def seen_pairs(inputs: torch.Tensor, keep: torch.Tensor,
               targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) pairs to exclude: items in the window at or before each kept position.

    At test time a user's fit-data items are excluded from the ranking, so they need
    not compete in the training softmax either; a target that repeats an earlier
    item stays scorable.

    Args:
        inputs: (b, t) right-padded window inputs.
        keep: (b, t) bool, positions with a target (row r of the loss = r-th True).
        targets: (n, w) target ids of the kept positions, -1 = none.

    Returns:
        ``(rows, items)``, two int64 tensors of equal length (duplicates possible).
    """
    b, t = inputs.shape
    row_of = keep.reshape(-1).cumsum(0).reshape(b, t) - 1  # row of each kept position
    later, earlier = torch.tril_indices(t, t, device=inputs.device)  # earlier <= later
    kept = keep[:, later]  # (b, t(t+1)/2); kept positions are real, so are all earlier ones
    rows = row_of[:, later][kept]
    items = inputs[:, earlier][kept]
    repeat = (targets[rows] == items[:, None]).any(1)
    return rows[~repeat], items[~repeat]


def mask_seen(logits: torch.Tensor, inputs: torch.Tensor, keep: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
    """Copy of ``logits`` (n, n_items) with :func:`seen_pairs` set to -inf."""
    rows, items = seen_pairs(inputs, keep, targets)
    return logits.index_put((rows, items), torch.tensor(float("-inf"), dtype=logits.dtype,
                                                         device=logits.device))


def sample_negatives(n_items: int, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``k`` distinct items drawn uniformly from the catalogue (torch's seeded RNG)."""
    return torch.randperm(n_items, device=device)[:k]


def output_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    targets: torch.Tensor,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    negatives: torch.Tensor | None = None,
    fill: float = float("-inf"),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores to take the softmax over, and each target's column in them.

    Exact (``negatives`` None): ``hidden @ weight.T + bias`` over the catalogue, the
    columns are the target ids. Sampled: column j < w is the row's j-th target
    (scored exactly), then one column per shared negative, shifted by log(N / k) so
    that their sum of exponentials estimates the rest of the catalogue's (uniform
    sampling's importance weight; Bengio & Senécal 2008). A negative that is one of
    the row's targets or in ``pairs`` is masked, so no item counts twice.

    Args:
        hidden: (n, d) hidden states of the positions.
        weight: (n_items, d) output item embeddings; bias: (n_items,).
        targets: (n, w) target ids, -1 = none.
        pairs: ``(rows, items)`` to mask (from :func:`seen_pairs`), or None.
        negatives: (k,) distinct item ids shared by all rows, or None for the exact softmax.
        fill: The score of a masked entry. -inf, or :data:`MASKED` (finite) where two
            softmaxes over the same mask meet in a KL: their exponentials are still
            exactly 0, and the fused KL needs no masking passes.

    Returns:
        ``(logits (n, C), target columns (n, w))``; -1 columns mark absent targets.
    """
    n_items = weight.shape[0]
    inf = torch.tensor(fill, dtype=hidden.dtype, device=hidden.device)
    if negatives is None:
        logits = torch.addmm(bias, hidden, weight.T)
        if pairs is not None:
            logits.index_put_(pairs, inf.to(logits.dtype))  # safe in place: addmm's backward needs no output
        return logits, targets
    n, w = targets.shape
    k = negatives.shape[0]
    present = targets >= 0
    safe = targets.clamp(min=0)
    pos = torch.einsum("nd,nwd->nw", hidden, weight[safe]) + bias[safe]  # (n, w)
    # a target listed twice counts once in the denominator: later copies point at the first
    same = safe[:, :, None] == safe[:, None, :]  # (n, w, w)
    first = (same & present[:, None, :]).int().argmax(2)  # earliest present column with the same id
    cols = torch.where(present, first, -1)
    pos = pos.masked_fill(~present | (first != torch.arange(w, device=first.device)), fill)
    neg = torch.addmm(bias[negatives], hidden, weight[negatives].T) + math.log(n_items / k)  # (n, k)
    col_of = torch.full((n_items + 1,), -1, dtype=torch.long, device=hidden.device)
    col_of[negatives] = torch.arange(k, device=hidden.device)
    hit_rows = torch.arange(n, device=hidden.device)[:, None].expand(n, w)[present]
    hit_items = targets[present]
    if pairs is not None:
        hit_rows, hit_items = torch.cat([hit_rows, pairs[0]]), torch.cat([hit_items, pairs[1]])
    hit_cols = col_of[hit_items]
    sampled = hit_cols >= 0
    neg = neg.index_put((hit_rows[sampled], hit_cols[sampled]), inf.to(neg.dtype))
    return torch.cat([pos, neg], 1), cols


def multi_target_ce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ref_logits: torch.Tensor | None = None,
    kl_weight: float = 0.0,
    masked: bool = True,
) -> torch.Tensor:
    """Softmax cross-entropy against each position's next ``w`` items (uniform weights).

    With w = 1 this is SASRec+'s loss. With w > 1 every position also learns the few
    items that follow the next one: the protocol scores a set of future items, not
    only the next. Optionally adds ``kl_weight * KL(p || p_ref)`` (adapter consistency).

    Args:
        logits: (n, C) scores at the n positions that have at least one target.
        targets: (n, w) columns of the targets in ``logits``, -1 where absent.
        ref_logits: Optional (n, C) reference (global model) scores.
        kl_weight: Weight of the KL term.
        masked: Whether ``logits`` may hold -inf (seen items or sampled negatives masked);
            False allows the fused KL (on ml-100k adapters the KL's masking passes were a
            third of a step).

    Returns:
        Scalar mean loss over positions.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (n, C)
    mask = targets >= 0
    # where(), not a product: an absent target's dummy index may hold -inf (masked item)
    picked = torch.where(mask, logp.gather(1, targets.clamp(min=0)), 0.0)  # (n, w)
    loss = -(picked.sum(1) / mask.sum(1).clamp(min=1)).mean()
    if ref_logits is not None and kl_weight > 0:
        loss = loss + kl_weight * consistency_kl(logp, ref_logits, log_probs=True, masked=masked)
    return loss


def consistency_kl(logits: torch.Tensor, ref_logits: torch.Tensor, *,
                   log_probs: bool = False, masked: bool = True) -> torch.Tensor:
    """Mean over rows of KL(softmax(logits) || softmax(ref_logits)), both (n, C).

    ``log_probs``: ``logits`` are already log-softmaxed (the CE's own, reused).
    ``masked``: the scores may hold -inf (masked items); False allows one fused kernel.
    """
    logp = logits if log_probs else F.log_softmax(logits.float(), dim=-1)
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    if not masked:  # one fused kernel instead of six passes over (n, C)
        return F.kl_div(ref_logp, logp, reduction="batchmean", log_target=True)
    # Items masked out of both (-inf) must add 0 *and* a 0 gradient:
    # zero them before the arithmetic (a where() after it still back-propagates NaN).
    live = torch.isfinite(logp) & torch.isfinite(ref_logp)
    lp, rp = logp.masked_fill(~live, 0.0), ref_logp.masked_fill(~live, 0.0)
    return (lp.exp() * (lp - rp) * live).sum(1).mean()
