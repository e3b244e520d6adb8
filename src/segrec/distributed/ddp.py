"""Data-parallel training of the global Transformer with torch DDP (no Ray import here).

:class:`TorchDataParallel` is the hook :class:`~segrec.models.transformer.TransformerRecommender`
calls when it trains in one of several processes (Ray Train's TorchTrainer workers,
or any ``torch.distributed`` process group): the model's own loop, network and loss
run unchanged, and the hook

* wraps the training objective in ``DistributedDataParallel`` (gradients all-reduced);
* gives each process a contiguous shard of every *global* batch. All processes draw
  the same batches from the same seed, so they take the same number of steps (DDP
  needs that) and a step with N processes sees the same windows as a step in one;
* weights each shard's loss by its share of the batch's target positions, so the
  all-reduced gradient equals the single-process gradient of that batch (up to float
  summation order): the same hyperparameters work for any number of workers;
* computes validation NDCG@10 on a shard of the users per process and all-reduces it,
  so early stopping decides the same epoch everywhere at 1/N of the cost.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import SegrecError

__all__ = ["TorchDataParallel", "shard_bounds"]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank's contiguous share of ``n`` rows (sizes differ by at most 1).

    Example:
        >>> [shard_bounds(5, r, 2) for r in range(2)]
        [(0, 3), (3, 5)]
    """
    q, r = divmod(n, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


class TorchDataParallel:
    """DDP hook for the Transformer's training loop, in an initialised process group.

    Args:
        device: The device this process trains on (``cpu`` for gloo, ``cuda:i`` for nccl).
        rank: This process's rank (default: ``torch.distributed.get_rank()``).
        world_size: Processes in the group (default: ``torch.distributed.get_world_size()``).

    Raises:
        SegrecError: No ``torch.distributed`` process group is initialised.
    """

    def __init__(self, device: torch.device | str = "cpu", rank: int | None = None,
                 world_size: int | None = None):
        if not dist.is_available() or not dist.is_initialized():
            raise SegrecError("TorchDataParallel needs an initialised torch.distributed process group "
                              "(Ray Train's TorchTrainer sets one up)")
        self.device = torch.device(device)
        self.rank = dist.get_rank() if rank is None else int(rank)
        self.world_size = dist.get_world_size() if world_size is None else int(world_size)

    def wrap(self, objective: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A step function ``(inputs (b, t), targets (b, t, w)) -> loss`` over this rank's shard.

        Args:
            objective: Module whose ``forward(inputs, targets)`` is the loss of a batch,
                averaged over its target positions (every parameter must take part).

        Returns:
            The shard's loss, scaled so that DDP's gradient average is the global batch's gradient.
        """
        ids = [self.device.index] if self.device.type == "cuda" else None
        # the network has no buffers to keep in sync (LayerNorm/Embedding/Linear only)
        ddp = nn.parallel.DistributedDataParallel(objective, device_ids=ids, forward_sync_buffers=False)

        def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            lo, hi = shard_bounds(inputs.shape[0], self.rank, self.world_size)
            keep = targets[..., 0] >= 0  # (b, t): positions with a next item
            if hi == lo:
                # Fewer windows than processes (a last small batch): still run one forward and
                # backward so DDP's all-reduce matches across ranks, but contribute nothing.
                loss = ddp(inputs[:1], targets[:1]) * 0.0
            else:
                share = keep[lo:hi].sum().float() / keep.sum().float()
                # mean over my positions x (my positions / all positions) x N; DDP divides by N
                loss = ddp(inputs[lo:hi], targets[lo:hi]) * (share * self.world_size)
            # The value the loop logs is the whole batch's loss (one scalar all-reduce); the
            # gradient stays this shard's, which DDP averages.
            total = loss.detach().clone()
            dist.all_reduce(total)
            return loss + (total / self.world_size - loss.detach())

        return step

    def mean_ndcg(self, score_fn: Callable[[np.ndarray], np.ndarray], fit_csr: sp.csr_matrix,
                  valid_csr: sp.csr_matrix, k: int = 10) -> float:
        """Mean NDCG@k over all validation users, each rank scoring a strided share.

        Same figure as :func:`segrec.evaluate.ranking.quick_ndcg` (up to summation
        order); every rank gets the identical all-reduced value, so early stopping
        agrees across ranks.
        """
        from ..evaluate.metrics import ndcg
        from ..evaluate.ranking import hit_matrix, rank_in_chunks

        n_valid = np.diff(valid_csr.indptr)
        users = np.flatnonzero(n_valid > 0)[self.rank :: self.world_size]
        total = 0.0
        if len(users):
            items, _ = rank_in_chunks(score_fn, users, k, seen=fit_csr)
            total = float(ndcg(hit_matrix(items, valid_csr, users), n_valid[users], k).sum())
        sums = torch.tensor([total, float(len(users))], dtype=torch.float64, device=self.device)
        dist.all_reduce(sums)
        return float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
