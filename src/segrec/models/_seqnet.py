"""The sequence network behind :class:`TransformerRecommender`, written like nanoGPT's model.py.

A decoder-only Transformer over item ids (SASRec, Kang & McAuley ICDM 2018) with
pre-LayerNorm blocks, learned absolute positions, and item embeddings tied to the
output layer. Trained with full-softmax cross-entropy over the whole catalogue at
every position ("SASRec+", Klenitskiy & Vasilev RecSys 2023; HSTU, Zhai et al. 2024).

Segment adapters (``adapters.py``) reuse this module unchanged: they compute
effective weights (shared + LoRA delta) and run it through
``torch.func.functional_call``, pass a segment vector as ``extra`` and add their
own output bias to the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SeqNet", "SeqNetConfig", "adapter_targets"]


@dataclass
class SeqNetConfig:
    """Shape of the network (the recommender's pydantic config holds training settings)."""

    n_items: int
    max_len: int = 200
    embedding_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    ffn_mult: int = 4

    @property
    def pad_id(self) -> int:
        """Item id used for padding: one past the catalogue."""
        return self.n_items


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t only."""

    def __init__(self, config: SeqNetConfig):
        super().__init__()
        d = config.embedding_size
        assert d % config.n_heads == 0, "embedding_size must be divisible by n_heads"
        # q, k, v projections for all heads in one matrix, as nanoGPT does
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_heads = config.n_heads

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(b, t, d) outputs; with ``last`` (b,) only each row's output at that position, (b, 1, d)."""
        b, t, d = x.size()  # batch, sequence length, embedding_size
        q, k, v = self.c_attn(x).split(d, dim=2)
        if last is not None:
            return self._forward_last(q, k, v, last)
        # (b, n_heads, t, head_size)
        q = q.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        k = k.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        v = v.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        # Right-padded batches need no key mask: a causal query never sees later (pad) keys.
        # No dropout on the attention map: with it, CPU falls back from the fused flash
        # kernel to the math path (~2x slower per step); residual dropout stays.
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # bf16 flash attention's backward is slow on CPU (28% of a bf16 epoch): attend in fp32
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, d)  # (b, t, d)
        return self.resid_dropout(self.c_proj(y))

    def _forward_last(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      last: torch.Tensor) -> torch.Tensor:
        # One query per row (its last real position) over keys up to it: scoring needs no more.
        b, t, d = q.size()
        h = self.n_heads
        rows = torch.arange(b, device=q.device)
        q = q[rows, last].view(b, 1, h, d // h).transpose(1, 2)  # (b, h, 1, hs)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        visible = (torch.arange(t, device=q.device)[None, :] <= last[:, None])[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # (b, h, 1, hs)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, 1, d)))


class MLP(nn.Module):
    """Position-wise feed-forward layer."""

    def __init__(self, config: SeqNetConfig):
        super().__init__()
        d = config.embedding_size
        self.c_fc = nn.Linear(d, config.ffn_mult * d)
        self.c_proj = nn.Linear(config.ffn_mult * d, d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block (more stable than SASRec's post-LN when deeper)."""

    def __init__(self, config: SeqNetConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.embedding_size)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.embedding_size)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(b, t, d) -> (b, t, d); with ``last`` (b,) only the rows' last positions, (b, 1, d)."""
        if last is None:
            x = x + self.attn(self.ln_1(x))
        else:
            x = x[torch.arange(x.shape[0], device=x.device), last][:, None] + self.attn(self.ln_1(x), last)
        return x + self.mlp(self.ln_2(x))


class SeqNet(nn.Module):
    """Item sequence -> hidden state per position -> scores over the catalogue."""

    def __init__(self, config: SeqNetConfig):
        super().__init__()
        self.config = config
        d = config.embedding_size
        # one extra row: the padding id (never a target; tied output uses rows [:n_items])
        self.wte = nn.Embedding(config.n_items + 1, d)
        self.wpe = nn.Embedding(config.max_len, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        # per-item output bias: lets the model carry popularity outside the dot product
        self.item_bias = nn.Parameter(torch.zeros(config.n_items))
        self.apply(self._init_weights)
        # GPT-2 scaled init of the residual projections (nanoGPT model.py)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def n_params(self) -> int:
        """Number of parameters (embeddings included: they are most of a recommender)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, items: torch.Tensor, extra: torch.Tensor | None = None,
                last: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states of shape (b, t, embedding_size) for item ids of shape (b, t).

        Args:
            items: Right-padded item ids (pad = ``n_items``), t <= max_len.
            extra: Optional vector added to every input position, of shape
                (embedding_size,) or (b, embedding_size) (the segment embedding).
            last: Optional (b,) position per row: return only the hidden state there, of
                shape (b, embedding_size). The last block then runs its query, output
                projection and feed-forward at that one position (scoring needs no
                more): about 40% less work for two blocks.
        """
        b, t = items.size()
        pos = torch.arange(t, device=items.device)  # (t,)
        x = self.wte(items) + self.wpe(pos)  # (b, t, d)
        if extra is not None:
            x = x + (extra if extra.dim() == 1 else extra[:, None, :])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, last if i == len(self.blocks) - 1 else None)
        return self.ln_f(x if last is None else x[:, 0])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores (..., n_items) for hidden states (..., d): tied embeddings + item bias."""
        return hidden @ self.wte.weight[: self.config.n_items].T + self.item_bias


def adapter_targets(net: SeqNet, which: tuple[str, ...] = ("attn", "mlp")) -> list[str]:
    """Names of the 2-D weights that segment adapters modify (attention and/or FFN)."""
    names = []
    for name, p in net.named_parameters():
        if p.dim() != 2 or not name.startswith("blocks."):
            continue
        if ("attn" in which and ".attn." in name) or ("mlp" in which and ".mlp." in name):
            names.append(name)
    return names
