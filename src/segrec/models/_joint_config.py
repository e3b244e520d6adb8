"""Settings of the jointly trained segment-aware Transformer (:mod:`segrec.models.joint`).

The Transformer's settings plus θ_k's; :mod:`segrec.models.joint` re-exports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._transformer_config import TransformerConfig

__all__ = ["JointConfig"]


class JointConfig(TransformerConfig):
    """Settings of :class:`JointTransformerRecommender`: the Transformer's plus θ_k's."""

    init: Literal["auto", "scratch"] = "auto"
    """``auto``: when the fit context holds the run's fitted global Transformer
    (``context.shared["transformer"]``, of the same shape, with its train-only weights),
    θ_shared starts from it and θ_k at identity, and the joint run fine-tunes both:
    the inner run from the global's train-only weights (so inner validation stays
    honest; epoch 0 is the global model itself), the refit from its final weights for
    the epochs the inner run chose (0 = the global model unchanged). Otherwise, and with
    ``scratch``, θ_shared is trained from a random init together with θ_k."""
    warm_lr_scale: float = Field(0.1, gt=0)
    """Started from the global model: θ_shared's learning rate is the blocks' times this
    (θ_k keeps ``segment_lr_scale``): the global model already sits at its inner-valid
    optimum, and at the full rate every further epoch scored below it (amazon-scientific,
    gate: inner-valid 0.1025 at epoch 0, 0.0927-0.1011 after). Chosen on that inner split
    (seed 0, θ_k rate 1.0): 0.3 -> 0.1031, 0.1 -> 0.1043 (5 epochs), 0.03 -> 0.1043 (12
    epochs); with θ_k at 0.1, 0.1 -> 0.1048. On ml-100k no epoch at 0.1 beat epoch 0."""
    variant: Literal["gate", "star", "lora"] = "gate"
    """θ_k's form: POSO/PEPNet gates, STAR rank-1 elementwise weights, or LoRA deltas."""
    segment_embedding: bool = True
    """Add a learned per-segment vector to every input position."""
    output_bias: bool = True
    """Learn a per-segment bias over the catalogue."""
    kl_weight: float = Field(0.5, ge=0)
    """λ of the consistency term λ·KL(p_segment || p_shared) (0 = no shared pass: cheaper).

    Not tuned beyond a check (gate variant, segment rate 1.0, inner-valid NDCG@10):
    synthetic 0.2667 / 0.2635 / 0.2125 with λ = 0 / 0.5 / 2, amazon-scientific 0.1026 /
    0.1036 with λ = 0 / 0.5. A large λ hurts: the shared path runs without dropout, so
    the term also asks the dropped-out segment path to match a clean one."""
    kl_sample: float = Field(0.25, gt=0, le=1)
    """Share of each batch's windows (a random subset per step) whose positions get the
    consistency term: an unbiased estimate of the mean KL. The shared pass and the KL over
    the catalogue cost more than the segment path's training step (amazon-scientific, one
    thread: 0.90 s an epoch with every window against 0.35 s without the term)."""
    segment_lr_scale: float = Field(0.1, gt=0)
    """Learning-rate multiplier of every θ_k (relative to the blocks' rate).

    At the blocks' rate θ_k (the per-segment output bias, gates) learns the segments'
    popularity within an epoch or two and the inner-valid curve peaks early and low:
    gate variant, inner-valid NDCG@10 (protocol valid, fit on train): synthetic 0.2635
    at epoch 6 with 1.0, 0.2686 at epoch 8 with 0.1 (global Transformer 0.2697 / 0.2692
    / 0.2677 over 3 seeds); amazon-scientific 0.1036 with 1.0, 0.1035 with 0.1 (global
    0.1025 / 0.1016 / 0.1026). Chosen on those two inner splits, never on test."""
    soft: Literal["auto", "hard", "history"] = "auto"
    """``auto``: mix θ_k by ``context.segment_probs`` when the segmenter gives posteriors;
    ``hard``: each user runs their own segment's θ_k only; ``history``: a learned gate
    reads the user's history (the mean of its item embeddings) and mixes θ_k by its
    softmax over the segments, trained to name the segmenter's label. Any segmenter
    (k-means too) then gives soft segments, and a new user is served from their
    history alone, without a segment."""
    user_features: Literal["none", "activity"] = "none"
    """PEPNet-style inputs besides the segment: ``activity`` adds one row to every θ
    table (gates, scales, deltas, embedding, output bias) whose weight is the user's
    standardised log history length (of the items the network reads, at most
    ``max_len``), clipped to [-1, 1]: a correction for light vs heavy users inside and
    across segments, known for new users too."""
    rank: int | None = Field(None, ge=1)
    """``lora``: rank of the deltas; None = the largest of 16, 8, 4, 2, 1 within the budget."""
    targets: tuple[Literal["attn", "mlp"], ...] = ("attn", "mlp")
    """``star`` / ``lora``: which weights get segment parameters."""
    scale: float = Field(1.0, gt=0)
    """``lora``: multiplier s of the low-rank delta."""
    max_param_ratio: float = Field(0.05, gt=0)
    """Budget: parameters of one θ_k / parameters of θ_shared (a warning when exceeded)."""
