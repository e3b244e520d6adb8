"""θ_k, one segment's parameters: their size, the rank within budget, init, and the adapted network.

Low-rank deltas on the shared weights (LoRA ``W + s·BA`` or STAR-style
``W ⊙ (1 + s·BA)``), a segment embedding and an output bias; shared by adapter
training (:mod:`._adapter_fit`) and scoring (:mod:`.adapters`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import SegrecWarning
from ._adapter_config import AdapterConfig
from ._seqdata import Histories
from ._seqnet import SeqNet, SeqNetConfig, adapter_targets
from ._seqtrain import score_rows

__all__ = ["adapted_forward", "adapter_param_count", "choose_rank", "effective_params", "init_theta"]


def adapter_param_count(net_config: SeqNetConfig, config: AdapterConfig, rank: int) -> int:
    """Parameters of one θ_k for a network shape and rank (without building anything)."""
    d, f = net_config.embedding_size, net_config.ffn_mult * net_config.embedding_size
    per_layer = 0
    if "attn" in config.targets:
        per_layer += (d + 3 * d) + (d + d)  # c_attn (d -> 3d), c_proj (d -> d)
    if "mlp" in config.targets:
        per_layer += (d + f) + (f + d)  # c_fc (d -> f), c_proj (f -> d)
    n = rank * per_layer * net_config.n_layers
    n += d if config.segment_embedding else 0
    n += net_config.n_items if config.output_bias else 0
    return n


def choose_rank(net_config: SeqNetConfig, n_shared: int, config: AdapterConfig) -> int:
    """The configured rank, or the largest of 16, 8, 4, 2, 1 that keeps θ_k within budget."""
    if config.rank is not None:
        ratio = adapter_param_count(net_config, config, config.rank) / n_shared
        if ratio > config.max_param_ratio:
            warnings.warn(f"adapter rank {config.rank} gives θ_k = {ratio:.1%} of θ_shared, over "
                          f"max_param_ratio={config.max_param_ratio:.0%}", SegrecWarning, stacklevel=3)
        return config.rank
    for rank in (16, 8, 4, 2, 1):
        if adapter_param_count(net_config, config, rank) / n_shared <= config.max_param_ratio:
            return rank
    ratio = adapter_param_count(net_config, config, 1) / n_shared
    warnings.warn(f"even rank 1 gives θ_k = {ratio:.1%} of θ_shared (> {config.max_param_ratio:.0%}); "
                  "the network is tiny next to the catalogue; using rank 1", SegrecWarning, stacklevel=3)
    return 1


def init_theta(net: SeqNet, config: AdapterConfig, rank: int) -> dict[str, torch.Tensor]:
    """Fresh θ_k: A small random, B zero, so the adapted model starts equal to the global one."""
    theta: dict[str, torch.Tensor] = {}
    shapes = dict(net.named_parameters())
    for name in adapter_targets(net, config.targets):
        out_f, in_f = shapes[name].shape
        theta[f"A.{name}"] = torch.randn(rank, in_f) / np.sqrt(in_f)
        theta[f"B.{name}"] = torch.zeros(out_f, rank)
    d = net.config.embedding_size
    if config.segment_embedding:
        theta["segment_embedding"] = torch.zeros(d)
    if config.output_bias:
        theta["output_bias"] = torch.zeros(net.config.n_items)
    return theta


def effective_params(
    shared: dict[str, torch.Tensor], theta: dict[str, torch.Tensor], variant: str, scale: float
) -> dict[str, torch.Tensor]:
    """θ_shared with segment deltas applied: the weights the adapted network runs with."""
    out = dict(shared)
    for key, a in theta.items():
        if not key.startswith("A."):
            continue
        name = key[2:]
        delta = scale * (theta[f"B.{name}"] @ a)  # (out_features, in_features)
        out[name] = shared[name] + delta if variant == "lora" else shared[name] * (1.0 + delta)
    return out


def adapted_forward(
    net: SeqNet, shared: dict[str, torch.Tensor], theta: dict[str, torch.Tensor] | None,
    config: AdapterConfig, inputs: torch.Tensor, last: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states (b, t, d) of the adapted network (at ``last`` only: (b, d)), and its output bias."""
    if not theta:
        return net(inputs, last=last), None
    params = effective_params(shared, theta, config.variant, config.scale)
    hidden = torch.func.functional_call(net, params, (inputs,),
                                        {"extra": theta.get("segment_embedding"), "last": last})
    return hidden, theta.get("output_bias")


def _score_adapted(net, base, theta, config, hist: Histories, rows: np.ndarray) -> np.ndarray:
    def forward(inputs, last):
        hidden, bias = adapted_forward(net, base, theta, config, inputs, last)
        logits = net.logits(hidden)
        return logits if bias is None else logits + bias

    return score_rows(forward, hist, rows, net.config.pad_id, net.config.n_items, device=config.device)
