"""Training one segment's θ_k: :func:`fit_segment_adapter` and the executor tasks around it.

A pure function of (shared weights, one segment's data, config, seed), so it runs
the same here or as a Ray task; :mod:`segrec.models.adapters` re-exports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ..evaluate.ranking import quick_ndcg
from ..resources import use_bf16
from ._adapter_config import AdapterConfig
from ._adapter_theta import _score_adapted, adapted_forward, init_theta
from ._seqdata import Histories, make_windows
from ._seqloss import MASKED, multi_target_ce, output_logits, sample_negatives, seen_pairs
from ._seqnet import SeqNet, SeqNetConfig
from ._seqtrain import LoopSettings, run_loop, seeded

__all__ = ["SegmentFit", "final_adapter_task", "fit_segment_adapter", "tune_adapter_task"]


@dataclass
class SegmentFit:
    """Result of :func:`fit_segment_adapter` for one segment.

    Attributes:
        params: θ_k as numpy arrays (empty when ``best_epoch`` is 0: use the global model).
        best_epoch: Epochs trained (chosen on validation when one was given).
        best_score: Validation NDCG@10 at ``best_epoch`` (NaN without validation).
        global_score: Validation NDCG@10 of the unadapted global model (epoch 0).
        curve: Per-epoch loss / validation NDCG@10.
        seconds: Wall time.
    """

    params: dict[str, np.ndarray]
    best_epoch: int
    best_score: float = float("nan")
    global_score: float = float("nan")
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def fit_segment_adapter(
    shared: dict[str, np.ndarray],
    net_config: SeqNetConfig,
    train: Histories,
    valid: Histories | None,
    config: AdapterConfig,
    *,
    rank: int,
    target_window: int = 1,
    exclude_seen: bool = False,
    n_negatives: int | None = None,
    epochs: int | None = None,
    init: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    label: str = "segment",
) -> SegmentFit:
    """Train one segment's θ_k on its users; a pure function (Ray-task friendly).

    Args:
        shared: θ_shared as numpy arrays (a SeqNet state dict).
        net_config: Shape of the shared network.
        train: The segment users' time-ordered training histories.
        valid: Their held-out next items (same user order), for early stopping; or None.
        config: Adapter settings.
        rank: Rank of the weight deltas.
        target_window: Next items learned per position (the global model's setting).
        exclude_seen: Mask items already in the window out of the softmax (the global's setting).
        n_negatives: Shared negatives of a sampled softmax, None = exact (the global's setting).
        epochs: Epochs to train (default ``config.epochs``); with ``valid`` the most epochs.
        init: θ_k to start from (a warm start) instead of a fresh one.
        seed: Seed of θ_k's init, dropout and batch order.
        label: Name in log messages.

    Returns:
        SegmentFit with θ_k at the best epoch.
    """
    start = time.perf_counter()
    epochs = config.epochs if epochs is None else epochs
    with seeded(seed, config.n_threads) as rng:
        # the order of what draws from torch's seeded stream (the network, θ_k's init, the
        # reference network) is the order it always had: same seed, same θ_k
        net, base = _frozen_net(shared, net_config, config.device)
        theta = _start_theta(net, config, rank, init)
        windows = make_windows(train, net_config.max_len)
        reference = SeqNet(net_config).to(config.device)  # frozen global, eval mode, for the KL term
        reference.load_state_dict(net.state_dict())
        reference.eval()
        batch_loss = _adapter_loss(net, base, theta, reference, config, exclude_seen, n_negatives)
        validate = None
        if valid is not None and config.early_stopping:
            validate = _adapter_validation(net, base, theta, config, train, valid, seed)
        settings = LoopSettings(epochs=epochs, batch_tokens=config.batch_tokens, batch_size=config.batch_size,
                                learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                                patience=config.patience, target_window=target_window, clip_grad=1.0,
                                bf16=use_bf16(config.precision, config.device),
                                device=config.device, show_progress=config.show_progress,
                                label=label)
        result = run_loop(theta, batch_loss, net.train, train, windows, settings, rng, net_config.pad_id,
                          validate)
    params = {k: v.numpy() for k, v in result.best_params.items()} if result.best_epoch > 0 else {}
    global_score = result.curve[0]["ndcg@10"] if validate is not None else float("nan")
    return SegmentFit(params, result.best_epoch, result.best_score, global_score, result.curve,
                      time.perf_counter() - start)


def _frozen_net(shared: dict[str, np.ndarray], net_config: SeqNetConfig,
                device: str) -> tuple[SeqNet, dict[str, torch.Tensor]]:
    """The shared network with θ_shared loaded and frozen, and its parameters by name."""
    net = SeqNet(net_config)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in shared.items()})
    net = net.to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, {k: v for k, v in net.named_parameters()}


def _start_theta(net: SeqNet, config: AdapterConfig, rank: int,
                 init: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor]:
    """Trainable θ_k: a fresh one, overwritten by ``init`` (a warm start) where given."""
    fresh = init_theta(net, config, rank)
    if init is not None:  # θ_k may lack keys a fresh one has (an empty θ_k: the global model)
        fresh.update({k: torch.from_numpy(np.array(v)) for k, v in init.items() if k in fresh})
    return {k: v.to(config.device).requires_grad_(True) for k, v in fresh.items()}


def _adapter_loss(net: SeqNet, base: dict[str, torch.Tensor], theta: dict[str, torch.Tensor],
                  reference: SeqNet, config: AdapterConfig, exclude_seen: bool, n_negatives: int | None):
    """``batch_loss(inputs, targets)``: CE of the adapted network + λ·KL to the frozen global."""
    n_items = net.config.n_items
    weight, item_bias = net.wte.weight[:n_items], net.item_bias

    def batch_loss(inputs, targets):
        keep = targets[..., 0] >= 0
        tg = targets[keep]
        hidden, bias = adapted_forward(net, base, theta, config, inputs)
        # the same softmax as the global model was trained with (mask, negatives)
        pairs = seen_pairs(inputs, keep, tg) if exclude_seen else None
        negatives = None if n_negatives is None else sample_negatives(n_items, n_negatives, inputs.device)
        out_bias = item_bias if bias is None else item_bias + bias
        # both softmaxes mask the same entries with a finite MASKED: the fused KL applies
        logits, cols = output_logits(hidden[keep], weight, out_bias, tg, pairs, negatives, fill=MASKED)
        ref = None
        if config.kl_weight > 0:
            with torch.no_grad():
                ref, _ = output_logits(reference(inputs)[keep], weight, item_bias, tg, pairs, negatives,
                                       fill=MASKED)
        return multi_target_ce(logits, cols, ref, config.kl_weight, masked=False)

    return batch_loss


def _adapter_validation(net: SeqNet, base: dict[str, torch.Tensor], theta: dict[str, torch.Tensor],
                        config: AdapterConfig, train: Histories, valid: Histories, seed: int):
    """``validate()``: NDCG@10 of the adapted network on the segment's valid items (a fixed sample)."""
    n_items = net.config.n_items
    tail = train.tail(net.config.max_len)
    train_csr, valid_csr = _hist_csr(train, n_items), _hist_csr(valid, n_items)
    rows = np.flatnonzero(np.diff(valid_csr.indptr) > 0)
    if config.valid_users is not None and len(rows) > config.valid_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, config.valid_users, replace=False))
    train_csr, valid_csr = train_csr[rows], valid_csr[rows]

    def validate() -> float:
        return quick_ndcg(lambda u: _score_adapted(net, base, theta, config, tail, rows[u]),
                          train_csr, valid_csr)

    return validate


def _hist_csr(hist: Histories, n_items: int) -> sp.csr_matrix:
    data = np.ones(len(hist.items), np.float32)
    mat = sp.csr_matrix((data, hist.items, hist.indptr), shape=(len(hist), n_items))
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def tune_adapter_task(shared: tuple, item: tuple[int, np.ndarray]) -> SegmentFit:
    """Executor task: choose one segment's adapter epochs on its inner-valid items.

    Args:
        shared: ``(inner weights, net_config, train histories, valid histories, config,
            rank, objective)``, the same for every segment (shipped once); ``objective``
            holds the global model's ``target_window`` and ``exclude_seen``.
        item: ``(segment, its dense users)``.

    Returns:
        The early-stopped :class:`SegmentFit` (seed ``config.random_state + segment``).
    """
    weights, net_config, train, valid, config, rank, tw = shared
    k, users = item
    return fit_segment_adapter(weights, net_config, train.select(users), valid.select(users), config,
                               rank=rank, **tw, seed=config.random_state + k, label=f"segment {k}")


def final_adapter_task(shared: tuple, item: tuple[int, np.ndarray, int, dict | None]) -> SegmentFit:
    """Executor task: train one segment's θ_k on all its fit data for the chosen epochs.

    Args:
        shared: ``(final weights, net_config, full histories, config, rank, objective)``.
        item: ``(segment, its dense users, epochs, θ_k to start from or None)``.

    Returns:
        :class:`SegmentFit` with θ_k (seed ``config.random_state + segment``).
    """
    weights, net_config, hist, config, rank, tw = shared
    k, users, epochs, init = item
    return fit_segment_adapter(weights, net_config, hist.select(users), None, config, rank=rank,
                               **tw, epochs=epochs, init=init, seed=config.random_state + k,
                               label=f"segment {k}")
