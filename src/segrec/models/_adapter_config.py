"""Settings of the segment adapters (:class:`~segrec.models.adapters.AdaptedTransformerRecommender`).

Its own module so θ_k's maths (:mod:`._adapter_theta`) and training (:mod:`._adapter_fit`)
can read it without importing the recommender; :mod:`segrec.models.adapters` re-exports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._transformer_config import TransformerConfig
from .base import ModelConfig

__all__ = ["AdapterConfig"]


class AdapterConfig(ModelConfig):
    """Settings of :class:`AdaptedTransformerRecommender`."""

    variant: Literal["lora", "star"] = "lora"
    """``lora``: W + s·BA. ``star``: W ⊙ (1 + s·BA), STAR's elementwise form at low rank."""
    rank: int | None = Field(None, ge=1)
    """Rank of the weight deltas; ``None`` = the largest of 16, 8, 4, 2, 1 within ``max_param_ratio``."""
    targets: tuple[Literal["attn", "mlp"], ...] = ("attn", "mlp")
    """Which weights get deltas: attention projections and/or the feed-forward layer."""
    scale: float = Field(1.0, gt=0)
    """Multiplier s of the low-rank delta."""
    segment_embedding: bool = True
    """Add a learned per-segment vector to every input position."""
    output_bias: bool = True
    """Learn a per-segment bias over the catalogue."""
    kl_weight: float = Field(1.0, ge=0)
    """λ of the consistency term λ·KL(p_segment || p_global)."""
    epochs: int = Field(20, ge=1)
    """Most adapter epochs per segment (the best one on inner validation is kept)."""
    early_stopping: bool = True
    """Choose each segment's epochs on inner validation (0 epochs = serve it with the global model)."""
    patience: int = Field(3, ge=1)
    """Epochs without improvement before a segment stops."""
    batch_tokens: int = Field(1024, ge=1)
    """Padded positions (windows x their length) per training step (the global model's default)."""
    batch_size: int | None = Field(None, ge=1)
    """Windows per step instead of ``batch_tokens`` (the fixed batching of earlier versions)."""
    learning_rate: float = Field(3e-3, gt=0)
    """AdamW learning rate of θ_k (θ_shared is frozen).

    3e-3, chosen on the inner validation of three ``--no-split`` runs (ml-100k,
    amazon-scientific, the built-in data; 7 segments): 1e-3, 3e-3 and 1e-2 reached the
    same best inner-valid NDCG@10 within noise (segment by segment within ±0.004), but
    1e-3 took up to 20 epochs to get there (ml-100k adapter stage 54 s against 16 s)."""
    valid_users: int | None = Field(4096, ge=1)
    """Most users of a segment scored per validation (a fixed random sample); None = all."""
    warm_start: bool = True
    """The final θ_k (on train ∪ valid, on the final global weights) continues from the
    θ_k tuned on the inner split for ``warm_epochs`` epochs, instead of training
    from scratch for the tuned number of epochs."""
    warm_epochs: int = Field(2, ge=1)
    """Epochs of the warm-started final fit (at most the tuned number)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay on the low-rank factors."""
    max_param_ratio: float = Field(0.05, gt=0)
    """Budget: parameters of one θ_k / parameters of θ_shared."""
    min_segment_users: int = Field(1, ge=1)
    """Segments with fewer users get no adapter (they use the global model)."""
    global_model: TransformerConfig = Field(default_factory=TransformerConfig)
    """Settings of the global model trained when ``fit`` is not given one."""
    device: str = "cpu"
    """Torch device for adapter training and scoring."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Training matmuls, as the global model's ``precision`` (``auto``: bf16 on CUDA and on
    CPUs with native bf16). ml-100k, one segment of every user, one epoch on a loaded box:
    see ``benchmarks/results`` notes in the commit that set it."""
    n_threads: int | None = Field(1, ge=1)
    """CPU threads (``None`` = torch's current setting); 1, as the global model's (see there)."""
    random_state: int = 0
    """Seed; segment k trains with seed ``random_state + k``."""
    show_progress: bool = False
    """tqdm bar per segment."""
