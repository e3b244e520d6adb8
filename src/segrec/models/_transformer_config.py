"""Settings of the global Transformer (:class:`~segrec.models.transformer.TransformerRecommender`).

Kept apart from the model so the long, measured rationale of each default sits in
one place; :mod:`segrec.models.transformer` re-exports it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ModelConfig

__all__ = ["TransformerConfig"]


class TransformerConfig(ModelConfig):
    """Settings of :class:`TransformerRecommender`; defaults chosen on ml-100k train -> valid, not test."""

    embedding_size: int = Field(64, ge=4)
    """Width d of item embeddings and hidden states (divisible by ``n_heads``)."""
    n_layers: int = Field(2, ge=1)
    """Transformer blocks."""
    n_heads: int = Field(2, ge=1)
    """Attention heads per block."""
    max_len: int = Field(200, ge=1)
    """Most recent items the model attends to; longer histories are cut into windows for training."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | Literal["auto"] = 0.2
    """Dropout on embeddings, attention and residual branches; ``auto``: the best of
    ``auto_dropouts`` on the inner split, within ``tune_budget_s`` (else the first).

    0.2 and not ``auto`` by default: on inner validation (the protocol's valid part, early
    stopping's best epoch) no candidate beat 0.2 beyond noise anywhere. NDCG@10 at 0.2 /
    0.35 / 0.5: amazon-scientific (3 seeds) 0.1022 / 0.1025 / 0.1028 with random init,
    0.1055 / 0.1068 / 0.1059 with text init (the paired standard error of one difference is
    0.002-0.003 there); ml-100k 0.2030 / 0.2041 / 0.1979; built-in data (demo preset,
    3 seeds) 0.2406 / 0.2444 / 0.2463, whose test went 0.2192 / 0.2200 / 0.2157."""
    auto_dropouts: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], ...] = Field((0.2, 0.35, 0.5), min_length=1)
    """Candidates of ``dropout="auto"``; the first is used when the budget allows no choice."""
    tune_budget_s: float = Field(20.0, ge=0)
    """Most estimated seconds for the candidates of ``dropout`` / ``item_init="auto"`` after the
    first (estimate: the first candidate's early-stopping seconds x the number left); over it,
    the first candidate is kept and no other is trained (0 = never choose).

    20 CPU-seconds: amazon-scientific's first early-stopping run costs 3-5 CPU-s (its
    second candidate runs), ml-100k's about 40 (one candidate, as with a fixed setting)."""
    tune_min_se: float = Field(1.0, ge=0)
    """A candidate replaces the best so far only when its inner-valid NDCG@10 is higher by more
    than this many standard errors of the paired per-user difference (0 = any gain).

    On amazon-scientific (2.9k inner-valid users) with every pair of 3 dropouts x 2 inits
    and no margin, the grid followed differences of 0.0004-0.0013 between dropouts
    (0.2-0.6 SE); text init's gains over random were 0.0044 / 0.0023 / 0.0032 NDCG@10
    (1.6 / 0.8 / 1.2 SE) on 3 seeds, so one SE keeps the clearer two."""
    target_window: int = Field(4, ge=1)
    """Each position learns its next ``target_window`` items (1 = plain next-item CE).

    The protocol scores a *set* of future items, so a short look-ahead helps: on ml-100k
    valid, 4 beat 1 (0.2030 vs 0.1961 NDCG@10 with ``exclude_seen``) and 8 / 10 learned slower."""
    exclude_seen: bool = True
    """Leave items already in the window out of the training softmax (they are excluded at test).

    Matches training to the protocol's ranking, which never shows a user their fit items;
    on ml-100k valid NDCG@10 rose from 0.1784 to 0.1961 (next-item CE, otherwise default)."""
    epochs: int = Field(200, ge=1)
    """Most epochs; with early stopping the best epoch on inner validation is used."""
    early_stopping: bool = True
    """Choose the number of epochs on inner-validation NDCG@10 (else train ``epochs`` epochs)."""
    patience: int = Field(5, ge=1)
    """Epochs without a better inner-validation NDCG@10 before stopping.

    With ``embedding_lr_scale`` the valid curve peaks and falls: on ml-100k / amazon
    (3 seeds) patience 3, 5 and 10 all kept the same best epoch, 10 cost 5 more epochs."""
    refit: bool = True
    """After early stopping, train on train ∪ valid too (black-box rule); see ``warm_start``."""
    warm_start: bool = True
    """The refit continues from the early-stopped weights for ``warm_fraction`` of the best
    number of epochs, at least ``WARM_MIN_EPOCHS`` (else: retrains from scratch for the best
    number of epochs).

    Measured on the protocol's valid part after fitting train alone (the model's own inner
    split chose the epochs): ml-100k from scratch 0.2030 NDCG@10 (13 epochs), warm 1 / 2 /
    3 / 5 epochs 0.1941 / 0.2007 / 0.2046 / 0.2010, no refit 0.1911; amazon-scientific
    scratch 0.1025 (6 epochs), warm 0.0935 / 0.0973 / 0.0999 / 0.0974, none 0.0898. With
    the older, slower settings (best epoch 26-31) warm 8 matched scratch (0.0894 vs 0.0885,
    2 seeds). So: about a quarter of the epochs, never fewer than 3."""
    warm_fraction: float = Field(0.25, gt=0, le=1)
    """Epochs of the warm-started refit on train ∪ valid, as a share of the best epoch."""
    batch_tokens: int = Field(1024, ge=1)
    """Padded positions (windows x their length) per training step.

    A step then costs about the same whatever the history lengths: short e-commerce
    histories go hundreds of windows to a batch instead of a fixed 64. Inner-valid
    NDCG@10 at learning rate 1e-3: amazon-scientific 0.0851 / 0.0890 / 0.0871 / 0.0857
    with 256 / 1024 / 2048 / 4096 (3 seeds at 256 and 1024); ml-100k 0.2070 / 0.2094 /
    0.2086 with 256 / 512 / 1024 (best epochs 35 / 44 / 60), where 1024 costs least per epoch."""
    batch_size: int | None = Field(None, ge=1)
    """Windows per step instead of ``batch_tokens`` (the fixed batching of earlier versions)."""
    learning_rate: float = Field(1e-3, gt=0)
    """AdamW learning rate (of the blocks; see ``embedding_lr_scale``).

    With 1024-token batches 2e-3 / 3e-3 lost on amazon-scientific (0.0805 / 0.0797
    inner-valid NDCG@10 against 0.0890, 3 seeds) what they won on ml-100k (0.2066 /
    0.2116 against 0.2086, 2 seeds vs 1); raising only the blocks' rate lost more."""
    embedding_lr_scale: float | Literal["auto"] = "auto"
    """Multiplier of the learning rate of the item / position embeddings and item bias;
    ``auto``: :func:`embedding_lr_scale` of the training data (sparser data, larger).

    An item's embedding row learns only from the positions that show it, so on sparse
    logs it lags the shared blocks: on amazon-scientific (6.7 training positions per item)
    3 / 5 / 10 x the rate gave 0.0953 / 0.0983 / 0.1022 inner-valid NDCG@10 against
    0.0890 at 1 x (3 seeds each), best epoch 14 / 10 / 6 instead of 29. On dense
    ml-100k (47 per item) 10 x overfits (0.1974) and 3 x peaks at epoch 13 (0.2034)
    where 1 x needs 60 (0.2086)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay on matrices and embeddings.

    0 by default for speed, not accuracy: it raised inner-valid NDCG@10 everywhere it was
    tried (best epoch's score on the protocol's valid part, 0 / 0.5 / 1.0): ml-100k 0.2030
    / 0.2110 / 0.2200 (seed 0; seed 1: 0.2021 / 0.2103 at 0 / 0.5), amazon-scientific
    0.1022 / 0.1037 / 0.1043 (3 seeds), built-in data 0.2406 / 0.2433 / 0.2460 (3 seeds),
    but on ml-100k the curve then keeps rising: best epoch 13 / 19 / 28 (seed 1: 18 / 23),
    so the fit trains 1.2-1.8x the epochs (amazon-scientific: best epoch 6 / 6-7 / 7-9)."""
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0)
    """Per-step decay of an exponential moving average of the weights, used for validation
    and as the final model (0 = off, use the last iterate). Smooths the validation curve,
    so the early-stopping epoch is less of a pick among noise; on ml-100k valid 0.99 gave
    0.2070 NDCG@10 (best epoch 78) vs 0.2030 without (epoch 49)."""
    clip_grad: float = Field(1.0, ge=0)
    """Gradient-norm clip (0 = off)."""
    valid_users: int | None = Field(4096, ge=1)
    """Most users scored per validation: a fixed random sample (seed ``random_state``) when
    more have valid items; None = all. The same users every epoch, so epochs compare fairly."""
    validate_every: int = Field(1, ge=1)
    """Validate after every k-th epoch (patience still counts epochs)."""
    n_negatives: int = Field(2048, ge=1)
    """Shared uniform negatives per step of the sampled softmax (catalogues above
    ``full_softmax_max_items``)."""
    full_softmax_max_items: int = Field(8192, ge=1)
    """Largest catalogue trained with the exact full softmax; above it the softmax is
    over each position's targets plus ``n_negatives`` shared negatives."""
    item_init: Literal["random", "text", "auto"] = "auto"
    """``text``: start item embeddings from the array given to :meth:`TransformerRecommender.fit`
    (``segrec run`` passes MiniLM embeddings of the items' titles and categories); ``auto``:
    random and, when item embeddings are given, also text, the better on the inner split
    within ``tune_budget_s`` (as ``dropout="auto"``; both auto: every pair).

    ``auto`` by default: the budget keeps it to data where one fit is cheap (ml-100k, 43
    CPU-s a fit, and larger logs train once, from random), and there a text gain on the
    inner split is taken. On amazon-scientific text won the inner split on 3 of 3 seeds
    (0.1055 vs 0.1022 NDCG@10, dropout 0.2) and kept it through the refit (inner split of
    the protocol's train, warm refit on all of it, scored on the protocol's valid: 0.1058
    vs 0.0985, 3 seeds); the default run's served system there went from 0.1132 to 0.1160
    test NDCG@10 (``benchmarks/bench_quality.py``). The known miss: on the built-in data
    (generated titles) text won the inner split as clearly (0.2454 vs 0.2406, 3 of 3) but
    lost after the refit (0.2349 vs 0.2364) and on test (0.2144 vs 0.2192), so there the
    Transformer is ~0.005 worse; the router serves per-segment EASE there. On ml-100k
    text tied (0.2036 vs 0.2030)."""
    device: str = "cpu"
    """Torch device, e.g. ``cpu`` or ``cuda``."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Training matmuls: ``bf16`` autocast (fp32 weights, attention and softmax), ``fp32``,
    or ``auto``: bf16 on CUDA and on CPUs with native bf16 instructions (AVX512-BF16 / AMX).

    On an AMD EPYC (Zen 5) core oneDNN's bf16 matmuls ran 4-9x MKL's fp32 on the model's
    shapes and an ml-100k epoch took 1.9 instead of 2.8 CPU-seconds; inner-valid NDCG@10
    on amazon-scientific was 0.0889 vs 0.0890 (3 seeds). Scoring stays fp32 on CPU."""
    n_threads: int | None = Field(1, ge=1)
    """CPU threads during fit and scoring (``None`` = torch's current setting).

    1 by default: on a machine shared with other busy processes more threads are several
    times slower, because OpenMP threads wait for descheduled peers at every one of the
    few hundred small ops of a step (ml-100k epoch at load 5.4 on 2 cores: 3.7 s with 1
    thread, 32.6 s with 2); a single thread is also bitwise reproducible on any machine.
    On a dedicated machine set the number of free cores."""
    random_state: int = 0
    """Seed of initialisation, dropout and batch order; same seed -> same model on CPU."""
    show_progress: bool = False
    """Show a tqdm bar per training run."""
