"""The joint model's network: a SeqNet with every segment's θ_k attached through hooks.

:class:`SegmentParams` holds the stacked θ_k of one variant (gates, STAR scales or
LoRA deltas) and mixes each row's segments into the shared layers while
:meth:`SegmentParams.using` holds segment weights; :class:`JointNet` is the network
with them attached. :mod:`segrec.models.joint` re-exports both.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._joint_config import JointConfig
from ._seqnet import SeqNet, SeqNetConfig, adapter_targets

__all__ = ["JointNet", "RowInput", "SegmentParams"]


class SegmentParams(nn.Module):
    """Every segment's θ_k, stacked (segment first), applied to a SeqNet through hooks.

    While :meth:`using` holds a (b, K) weight matrix, the hooks mix each row's segments
    into the shared layers; outside it (or with None) the network is the shared path.
    """

    def __init__(self, net: SeqNet, n_segments: int, config: JointConfig, rank: int):
        super().__init__()
        cfg = net.config
        d, f, k = cfg.embedding_size, cfg.ffn_mult * cfg.embedding_size, n_segments
        self.variant, self.scale, self.n_segments = config.variant, config.scale, n_segments
        self.weights: torch.Tensor | None = None
        self.embedding = nn.Parameter(torch.zeros(k, d)) if config.segment_embedding else None
        self.output_bias = nn.Parameter(torch.zeros(k, cfg.n_items)) if config.output_bias else None
        self.gates = nn.ParameterDict()
        self.lora_a, self.lora_b = nn.ParameterDict(), nn.ParameterDict()
        modules = dict(net.named_modules())
        if config.variant == "gate":
            self.gates["drop"] = nn.Parameter(torch.zeros(k, d))
            net.drop.register_forward_pre_hook(self._input_hook("drop", True))
            for i, block in enumerate(net.blocks):
                for part, width, mod in (("attn", d, block.attn.c_proj), ("mlp", f, block.mlp.c_proj)):
                    key = f"b{i}_{part}"
                    self.gates[key] = nn.Parameter(torch.zeros(k, width))
                    mod.register_forward_pre_hook(self._input_hook(key, True))
            return
        shapes = dict(net.named_parameters())
        for name in adapter_targets(net, config.targets):
            out_f, in_f = shapes[name].shape
            key = name.removesuffix(".weight").replace(".", "_")
            mod = modules[name.removesuffix(".weight")]
            if config.variant == "star":  # diag(g_out) W diag(g_in), both 1 at init
                self.gates[key + "_in"] = nn.Parameter(torch.zeros(k, in_f))
                self.gates[key + "_out"] = nn.Parameter(torch.zeros(k, out_f))
                mod.register_forward_pre_hook(self._input_hook(key + "_in", False))
                mod.register_forward_hook(self._scale_out_hook(key + "_out"))
            else:  # lora: A small random, B zero, as the adapters
                self.lora_a[key] = nn.Parameter(torch.randn(k, rank, in_f) / np.sqrt(in_f))
                self.lora_b[key] = nn.Parameter(torch.zeros(k, out_f, rank))
                mod.register_forward_hook(self._lora_hook(key))

    @contextlib.contextmanager
    def using(self, weights: torch.Tensor | None):
        """Run the network's forward passes inside with these (b, K) segment weights."""
        old, self.weights = self.weights, weights
        try:
            yield
        finally:
            self.weights = old

    def _mix(self, table: torch.Tensor) -> torch.Tensor:
        """(b, dim): each row's segment weights times a (K, dim) table (a hard row picks one)."""
        return self.weights.to(table.dtype) @ table

    def _gate(self, key: str, x: torch.Tensor, centred: bool) -> torch.Tensor:
        z = self.gates[key]
        # gate: 2·sigmoid(z) (POSO's range (0, 2), 1 at z = 0); star: 1 + z. A row whose
        # weights sum below 1 (no segment) keeps the shared value for the remainder
        g = 2.0 * torch.sigmoid(z) - 1.0 if centred else z
        return x * (1.0 + self._mix(g))[:, None, :].to(x.dtype)

    def _input_hook(self, key: str, centred: bool):
        """A forward pre-hook scaling the module's input (gates: centred; STAR input scales: not)."""
        def hook(module, args):
            if self.weights is None:
                return None
            return (self._gate(key, args[0], centred), *args[1:])
        return hook

    def _scale_out_hook(self, key: str):
        def hook(module, args, output):
            return None if self.weights is None else self._gate(key, output, False)
        return hook

    def _lora_hook(self, key: str):
        def hook(module, args, output):
            if self.weights is None:
                return None
            x = args[0]  # (b, t, in)
            a, b = self.lora_a[key], self.lora_b[key]  # (K, r, in), (K, out, r)
            k, r, _ = a.shape
            u = x @ a.reshape(k * r, -1).T.to(x.dtype)  # (b, t, K·r): every segment's down-projection
            w = self.weights.to(u.dtype)[:, None, :, None]  # (b, 1, K, 1)
            u = (u.view(*u.shape[:-1], k, r) * w).reshape(*u.shape)
            delta = u @ b.permute(1, 0, 2).reshape(b.shape[1], k * r).T.to(u.dtype)
            return output + self.scale * delta
        return hook

    def extra(self) -> torch.Tensor | None:
        """(b, d) segment embeddings of the current rows, or None."""
        if self.weights is None or self.embedding is None:
            return None
        return self._mix(self.embedding)

    def bias(self) -> torch.Tensor | None:
        """(b, n_items) per-row output bias of the current rows, or None."""
        if self.weights is None or self.output_bias is None:
            return None
        return self._mix(self.output_bias)


@dataclass
class RowInput:
    """What the joint network knows of each row's user besides the items.

    Attributes:
        weights: (b, K) segment weights (one-hot, a posterior, or zeros = no segment);
            with the history gate they are only the gate's training labels.
        features: (b, m) standardised user features (``user_features``), or None.
        bag: Each row's history (flat items, offsets) for the history gate, or None.
    """

    weights: torch.Tensor
    features: torch.Tensor | None = None
    bag: tuple[torch.Tensor, torch.Tensor] | None = None


class JointNet(SeqNet):
    """A :class:`SeqNet` with every segment's θ_k attached (parameters ``segment.*``).

    ``n_features`` user features add as many rows to every θ table (mixed in with the
    feature's value as its weight); ``router`` adds the history gate (``router.*``), a
    linear map from the mean item embedding of a user's history to K segment logits.
    """

    def __init__(self, config: SeqNetConfig, n_segments: int, joint: JointConfig, rank: int,
                 n_features: int = 0, router: bool = False):
        super().__init__(config)
        self.n_segments, self.n_features = n_segments, n_features
        self.segment = SegmentParams(self, n_segments + n_features, joint, rank)
        self.router = nn.Linear(config.embedding_size, n_segments) if router else None
        if self.router is not None:  # uniform over the segments at init
            nn.init.zeros_(self.router.weight)
            nn.init.zeros_(self.router.bias)

    def n_shared_params(self) -> int:
        """Parameters of θ_shared (everything but ``segment.*`` and the history gate)."""
        return sum(p.numel() for n, p in self.named_parameters()
                   if not n.startswith(("segment.", "router.")))

    def mixing(self, row: RowInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each row's weights on the θ tables (b, K + m), and the history gate's logits or None.

        With the gate, the segment weights are its softmax, detached: the gate learns
        only to name a user's segment (its own loss), so θ_k cannot steer it.
        """
        logits = None
        weights = row.weights
        if self.router is not None:
            items, offsets = row.bag
            # the history's mean item vector, detached: the gate does not shape the items
            mean = F.embedding_bag(items, self.wte.weight.detach(), offsets, mode="mean")
            # normalised: item vectors start tiny, and the gate should not wait for them to grow
            logits = self.router(F.layer_norm(mean, mean.shape[-1:]))
            weights = torch.softmax(logits, -1).detach()
        if row.features is not None:
            weights = torch.cat([weights, row.features.to(weights.dtype)], 1)
        return weights, logits

    def segment_forward(self, items: torch.Tensor, weights: torch.Tensor | None,
                        last: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The segment path: hidden states and per-row output bias (b, n_items) or None.

        ``weights`` (b, K) are the rows' segment weights; None runs the shared path.
        """
        with self.segment.using(weights):
            return self(items, extra=self.segment.extra(), last=last), self.segment.bias()
