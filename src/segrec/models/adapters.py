"""Segment adaptation of the global Transformer: θ = [θ_shared; θ_k].

Each segment k gets a few parameters on top of the frozen global network
(MLoRA, Yang et al. 2024; STAR, Sheng et al. CIKM 2021):

* low-rank deltas on the attention and feed-forward weights: ``W + s·B_k A_k`` (LoRA),
  or STAR-style elementwise ``W ⊙ (1 + s·B_k A_k)`` (a low-rank version of STAR's
  full-size ``W_k``, so it fits the same budget);
* a segment embedding added to every input position;
* a per-segment output bias over the catalogue.

θ_k is trained on the segment's users with ``CE + λ·KL(p_segment || p_global)``;
the KL term keeps small segments from drifting far from the global model. By default
θ_k is at most 5% of θ_shared. :func:`fit_segment_adapter` is a pure function of
(shared weights, one segment's data, config, seed); the recommender runs it once per
segment through an executor (:mod:`segrec.distributed`): here, or as Ray tasks that
read the shared weights and histories from the object store.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from ..distributed.executor import LocalExecutor, TaskFailure, raise_if_all_failed
from ..errors import SegrecWarning
from ..evaluate.ranking import quick_ndcg
from ..types import Interactions
from ._seqdata import Histories, make_windows
from ._seqloss import multi_target_ce, output_logits, sample_negatives, seen_pairs
from ._seqnet import SeqNet, SeqNetConfig, adapter_targets
from ._seqtrain import LoopSettings, run_loop, score_rows, seeded
from ._vectors import ItemTable
from .base import ModelConfig, Recommender, check_is_fitted
from .context import FitContext
from .tags import RecommenderTags
from .transformer import (
    TransformerConfig,
    TransformerRecommender,
    net_flops,
    net_item_table,
    scoring_threads,
    train_in_bf16,
)
from .tuning import inner_sets

__all__ = [
    "AdaptedTransformerRecommender",
    "AdapterConfig",
    "SegmentFit",
    "adapter_param_count",
    "choose_rank",
    "fit_segment_adapter",
]

log = logging.getLogger(__name__)


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
    learning_rate: float = Field(1e-3, gt=0)
    """AdamW learning rate of θ_k (θ_shared is frozen)."""
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


# --------------------------------------------------------------------------- θ_k


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
        net = SeqNet(net_config)
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in shared.items()})
        net = net.to(config.device)
        for p in net.parameters():
            p.requires_grad_(False)
        base = {k: v for k, v in net.named_parameters()}
        fresh = init_theta(net, config, rank)
        if init is not None:  # θ_k may lack keys a fresh one has (an empty θ_k: the global model)
            fresh.update({k: torch.from_numpy(np.array(v)) for k, v in init.items() if k in fresh})
        theta = {k: v.to(config.device).requires_grad_(True) for k, v in fresh.items()}
        windows = make_windows(train, net_config.max_len)
        pad = net_config.pad_id
        reference = SeqNet(net_config).to(config.device)  # frozen global, eval mode, for the KL term
        reference.load_state_dict(net.state_dict())
        reference.eval()

        n_items = net_config.n_items
        weight, item_bias = net.wte.weight[:n_items], net.item_bias

        def batch_loss(inputs, targets):
            keep = targets[..., 0] >= 0
            tg = targets[keep]
            hidden, bias = adapted_forward(net, base, theta, config, inputs)
            # the same softmax as the global model was trained with (mask, negatives)
            pairs = seen_pairs(inputs, keep, tg) if exclude_seen else None
            negatives = None if n_negatives is None else sample_negatives(n_items, n_negatives, inputs.device)
            out_bias = item_bias if bias is None else item_bias + bias
            logits, cols = output_logits(hidden[keep], weight, out_bias, tg, pairs, negatives)
            ref = None
            if config.kl_weight > 0:
                with torch.no_grad():
                    ref, _ = output_logits(reference(inputs)[keep], weight, item_bias, tg, pairs, negatives)
            return multi_target_ce(logits, cols, ref, config.kl_weight,
                                   masked=pairs is not None or negatives is not None)

        validate = None
        if valid is not None and config.early_stopping:
            tail = train.tail(net_config.max_len)
            train_csr, valid_csr = _hist_csr(train, n_items), _hist_csr(valid, n_items)
            rows = np.flatnonzero(np.diff(valid_csr.indptr) > 0)
            if config.valid_users is not None and len(rows) > config.valid_users:
                rows = np.sort(np.random.default_rng(seed).choice(rows, config.valid_users, replace=False))
            train_csr, valid_csr = train_csr[rows], valid_csr[rows]

            def validate() -> float:
                return quick_ndcg(lambda u: _score_adapted(net, base, theta, config, tail, rows[u]),
                                  train_csr, valid_csr)

        settings = LoopSettings(epochs=epochs, batch_tokens=config.batch_tokens, batch_size=config.batch_size,
                                learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                                patience=config.patience, target_window=target_window, clip_grad=1.0,
                                bf16=train_in_bf16(config.precision, config.device),
                                device=config.device, show_progress=config.show_progress,
                                label=label)
        result = run_loop(theta, batch_loss, net.train, train, windows, settings, rng, pad, validate)
    params = {k: v.numpy() for k, v in result.best_params.items()} if result.best_epoch > 0 else {}
    global_score = result.curve[0]["ndcg@10"] if validate is not None else float("nan")
    return SegmentFit(params, result.best_epoch, result.best_score, global_score, result.curve,
                      time.perf_counter() - start)


def _hist_csr(hist: Histories, n_items: int) -> sp.csr_matrix:
    data = np.ones(len(hist.items), np.float32)
    mat = sp.csr_matrix((data, hist.items, hist.indptr), shape=(len(hist), n_items))
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def _score_adapted(net, base, theta, config, hist: Histories, rows: np.ndarray) -> np.ndarray:
    def forward(inputs, last):
        hidden, bias = adapted_forward(net, base, theta, config, inputs, last)
        logits = net.logits(hidden)
        return logits if bias is None else logits + bias

    return score_rows(forward, hist, rows, net.config.pad_id, net.config.n_items, device=config.device)


# ------------------------------------------------------------------- recommender


class AdaptedTransformerRecommender(Recommender):
    """A fitted global Transformer plus one small θ_k per user segment.

    Fit: (1) the global model (trained here unless given); (2) for each segment, θ_k
    is trained on the inner train part on top of the global model's *inner* weights
    (trained without valid) and early-stopped on the segment's inner-valid NDCG@10,
    which also decides whether the segment is adapted at all (0 epochs = no); (3) θ_k
    is retrained for that many epochs on train ∪ valid on top of the final global
    weights, mirroring the protocol's black-box rule.

    Attributes:
        global_: The global :class:`TransformerRecommender`.
        segments_: int array of shape (n_users,), segment per dense user (-1 = none).
        adapters_: segment -> θ_k (dict of numpy arrays); missing = served by the global model.
        rank_: Rank of the weight deltas.
        param_ratio_: Parameters of one θ_k / parameters of θ_shared.
        segment_info_: segment -> dict(users, best_epoch, valid NDCG@10 global/adapted, seconds).
        failed_segments_: segment -> why its adapter task failed on every attempt; the
            segment is served by the global model.
    """

    Config = AdapterConfig
    name = "adapted_transformer"
    config: AdapterConfig

    def __recommender_tags__(self) -> RecommenderTags:
        """Needs segments; starts from the fitted global Transformer when the context has one."""
        return replace(super().__recommender_tags__(), requires_segments=True, builds_on="transformer",
                       history_input="sequence")

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        # the global model: the fitted one in context.shared (tags: builds_on), else trained here;
        # a segment whose task fails on every attempt keeps the global model (failed_segments_)
        c = self.config
        start = time.perf_counter()
        g = context.shared.get("transformer")
        if g is None:
            g = TransformerRecommender(c.global_model).fit(train, valid=valid, context=context)
        self.global_ = g
        self.segments_ = np.array(context.segments, dtype=np.int64)
        net_config = g.net_.config
        n_shared = g.net_.n_params()
        self.rank_ = choose_rank(net_config, n_shared, c)
        self.param_ratio_ = adapter_param_count(net_config, c, self.rank_) / n_shared
        log.info("adapters: rank %d, θ_k = %.2f%% of θ_shared (%d params)", self.rank_,
                 100 * self.param_ratio_, n_shared)
        full = train if valid is None else train.concat(valid)
        final_shared = {k: v.detach().cpu().numpy() for k, v in g.net_.state_dict().items()}
        # the global model's training objective, which the adapters keep
        tw = {"target_window": g.config.target_window, "exclude_seen": g.config.exclude_seen,
              "n_negatives": g.n_negatives_for(net_config.n_items)}
        # Honest epoch choice needs a global model that has not seen the inner-valid items.
        inner = getattr(g, "inner_params_", None)
        tune = c.early_stopping and inner is not None
        if c.early_stopping and inner is None:
            log.warning("adapters: the global model has no inner (train-only) weights; training each "
                        "segment for a fixed %d epochs instead of early stopping", c.epochs)
        if tune:
            inner_shared = {**final_shared, **{k: v.numpy() for k, v in inner.items()}}
            inner_train, inner_valid = inner_sets(train, valid)
            tr_hist = Histories.from_interactions(inner_train)
            va_hist = Histories.from_interactions(inner_valid)
        full_hist = Histories.from_interactions(full)
        self.adapters_: dict[int, dict[str, np.ndarray]] = {}
        self.segment_info_: dict[int, dict[str, Any]] = {}
        self.failed_segments_: dict[int, str] = {}
        executor = context.executor or LocalExecutor()
        labels, counts = np.unique(self.segments_[self.segments_ >= 0], return_counts=True)
        todo: dict[int, np.ndarray] = {}
        for k, n_users in zip(labels.tolist(), counts.tolist(), strict=True):
            self.segment_info_[k] = {"users": n_users}
            if n_users < c.min_segment_users:
                self.segment_info_[k]["best_epoch"] = 0
            else:
                todo[k] = np.flatnonzero(self.segments_ == k)
        epochs = {k: c.epochs for k in todo}
        tuned: dict[int, dict[str, np.ndarray]] = {}  # θ_k at the tuned epoch: a warm final fit's start
        # θ_k at the best epoch on the inner split: with the global model's inner weights
        # this is the train-only adapted model that ``inner_model`` hands to the router
        self._inner_adapters: dict[int, dict[str, np.ndarray]] | None = {} if tune else None
        if tune:
            # shared weights + histories go to the executor once; each task selects its users
            results = executor.map(tune_adapter_task, [(k, u) for k, u in todo.items()],
                                   shared=(inner_shared, net_config, tr_hist, va_hist, c, self.rank_, tw),
                                   labels=[f"adapter segment {k} (tune)" for k in todo], on_error="return")
            raise_if_all_failed(results, "AdaptedTransformerRecommender (epoch choice)")
            for k, res in zip(list(todo), results, strict=True):
                if self._failed(k, res):
                    continue
                epochs[k] = res.best_epoch
                if res.best_epoch > 0:
                    self._inner_adapters[k] = tuned[k] = res.params
                self.segment_info_[k].update(valid_ndcg_global=res.global_score,
                                             valid_ndcg_adapted=res.best_score, tune_seconds=res.seconds)
                log.info("segment %d (%d users): inner-valid NDCG@10 %.4f global -> %.4f adapted "
                         "at epoch %d", k, len(todo[k]), res.global_score, res.best_score, res.best_epoch)
        for k in todo:
            if k not in self.failed_segments_:
                self.segment_info_[k]["best_epoch"] = epochs[k]
        # epochs == 0: adaptation did not help on validation, serve the segment with the global model
        final = [(k, todo[k], epochs[k], None) for k in todo
                 if k not in self.failed_segments_ and epochs[k] > 0]
        if c.warm_start:  # continue from the tuned θ_k instead of retraining it from scratch
            final = [(k, u, min(n, c.warm_epochs), tuned[k]) if k in tuned else (k, u, n, None)
                     for k, u, n, _ in final]
        results = executor.map(final_adapter_task, final,
                               shared=(final_shared, net_config, full_hist, c, self.rank_, tw),
                               labels=[f"adapter segment {k}" for k, *_ in final], on_error="return")
        raise_if_all_failed(results, "AdaptedTransformerRecommender")
        for (k, _, n, _), res in zip(final, results, strict=True):
            if not self._failed(k, res):
                self.segment_info_[k].update(seconds=res.seconds, final_epochs=n)
                self.adapters_[k] = res.params
        self.fit_seconds_ = time.perf_counter() - start

    def inner_model(self) -> AdaptedTransformerRecommender | None:
        """The adapted model as trained on the inner train part only, if fit kept it.

        The global model's train-only weights plus each segment's θ_k at its early-stopped
        epoch on the inner split (the very adapters that chose the epochs), so the segment
        router's stage 1 scores valid honestly without training adapters again. None after
        ``load``, without early stopping, or when the global model kept no inner weights.
        """
        check_is_fitted(self)
        inner_adapters = getattr(self, "_inner_adapters", None)
        g = self.global_.inner_model() if inner_adapters is not None else None
        if g is None:
            return None
        model = type(self)(self.config)
        model.global_ = g
        model.user_vocab_, model.item_vocab_, model.seen_ = g.user_vocab_, g.item_vocab_, g.seen_
        model.fitted_on_ = g.fitted_on_  # θ_k were tuned on the same inner train part
        model.segments_ = self.segments_
        model.adapters_ = dict(inner_adapters)
        model.rank_, model.param_ratio_ = self.rank_, self.param_ratio_
        model.segment_info_ = self.segment_info_
        model.failed_segments_ = self.failed_segments_
        model.fit_seconds_ = 0.0
        return model

    def _failed(self, k: int, res: Any) -> bool:
        """Record a segment whose task failed on every attempt; it keeps the global model."""
        if not isinstance(res, TaskFailure):
            return False
        self.failed_segments_[k] = str(res)
        self.segment_info_[k].update(best_epoch=0, failed=str(res))
        log.warning("segment %d: adapter fit failed, served by the global model: %s", k, res)
        return True

    # -------------------------------------------------------------- scoring
    def _score(self, users: np.ndarray) -> np.ndarray:
        return self._score_hist(self.global_.histories_, users, self.segments_[users])

    def _score_hist(self, hist: Histories, rows: np.ndarray, segs: np.ndarray) -> np.ndarray:
        net = self.global_.net_
        out = np.empty((len(rows), net.config.n_items), dtype=np.float32)
        base = dict(net.named_parameters())
        with scoring_threads(self.config.n_threads):
            for k in np.unique(segs).tolist():
                pick = np.flatnonzero(segs == k)
                theta = {n: torch.from_numpy(np.array(v)).to(self.config.device)
                         for n, v in self.adapters_.get(int(k), {}).items()}
                out[pick] = _score_adapted(net, base, theta, self.config, hist, rows[pick])
        return out

    def _score_histories(self, histories: list[list[int]], segments: np.ndarray | None) -> np.ndarray:
        # new users' item-index sequences and segments (None, -1 or unknown = the global model)
        segs = np.full(len(histories), -1, np.int64) if segments is None else segments
        hist = Histories.from_lists(histories).tail(self.global_.config.max_len)
        return self._score_hist(hist, np.arange(len(hist)), segs)

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        # LoRA deltas add FLOPs in proportion to their parameters (x @ A @ B per adapted weight)
        extra = float(self.param_ratio_ or 0.0)
        return net_flops(self.global_.net_.config, h, self.n_items) * (1.0 + extra)

    def _add_interactions(self, users: np.ndarray, items: np.ndarray, done: set[int]) -> None:
        self.global_.add_interactions(users, items, done=done)  # its histories are the ones scored here

    # -------------------------------------------------------- cached vectors
    def _bias_groups(self) -> dict[int, int]:
        """Segment -> bias group of the item table (0: the global item bias alone)."""
        keyed = [k for k in sorted(self.adapters_) if "output_bias" in self.adapters_[k]]
        return {k: i + 1 for i, k in enumerate(keyed)}

    def item_table(self) -> ItemTable:
        """The shared item embeddings; one bias row per segment with its own output bias (group 0: none)."""
        extra = {k: self.adapters_[k]["output_bias"] for k in self._bias_groups()}
        return net_item_table(self.global_.net_, extra)

    def _user_vectors(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._hidden_hist(self.global_.histories_, users, self.segments_[users])

    def history_vectors(self, histories, segments=None) -> tuple[np.ndarray, np.ndarray]:
        """Adapted hidden states and bias groups for item sequences in the given segments (-1: global)."""
        check_is_fitted(self)
        segs = np.full(len(histories), -1, np.int64) if segments is None else np.asarray(segments, np.int64)
        hist = Histories.from_lists(histories).tail(self.global_.config.max_len)
        return self._hidden_hist(hist, np.arange(len(hist)), segs)

    def _hidden_hist(self, hist: Histories, rows: np.ndarray,
                     segs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        net = self.global_.net_
        out = np.empty((len(rows), net.config.embedding_size), dtype=np.float32)
        base = dict(net.named_parameters())
        groups = self._bias_groups()
        with scoring_threads(self.config.n_threads):
            for k in np.unique(segs).tolist():
                pick = np.flatnonzero(segs == k)
                theta = {n: torch.from_numpy(np.array(v)).to(self.config.device)
                         for n, v in self.adapters_.get(int(k), {}).items()}

                def forward(inputs, last, theta=theta):
                    return adapted_forward(net, base, theta, self.config, inputs, last)[0]  # (b, d)

                out[pick] = score_rows(forward, hist, rows[pick], net.config.pad_id,
                                       net.config.embedding_size, device=self.config.device)
        return out, np.array([groups.get(int(k), 0) for k in segs], dtype=np.int32)

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True):
        """Top-k items per user (see :meth:`Recommender.recommend`); records each user's segment."""
        recs = super().recommend(user_ids, k, exclude_seen=exclude_seen)
        users = self._user_index(recs.user_ids)
        seg = self.segments_[users]
        tier = np.where(np.isin(seg, list(self.adapters_)), self.name, self.global_.name).astype(object)
        return type(recs)(recs.user_ids, recs.item_ids, recs.scores, seg, tier)

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        state = {f"global.{k}": v for k, v in self.global_._state().items()}
        state["segments"] = self.segments_.astype(np.int64)
        for k, theta in self.adapters_.items():
            state.update({f"seg{k}.{n}": v for n, v in theta.items()})
        return state

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        g = TransformerRecommender(TransformerConfig.model_validate(meta["global_config"]))
        g.user_vocab_, g.item_vocab_, g.seen_ = self.user_vocab_, self.item_vocab_, self.seen_
        g._set_state({k[7:]: v for k, v in tensors.items() if k.startswith("global.")}, meta["global_meta"])
        self.global_ = g
        self.segments_ = tensors["segments"].astype(np.int64)
        self.adapters_ = {}
        for k in meta["adapted_segments"]:
            prefix = f"seg{k}."
            self.adapters_[int(k)] = {n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}
        self.rank_ = meta["rank"]
        self.param_ratio_ = meta["param_ratio"]
        self.segment_info_ = {int(k): v for k, v in meta["segment_info"].items()}
        self.failed_segments_ = {int(k): v for k, v in meta.get("failed_segments", {}).items()}
        self.fit_seconds_ = meta.get("fit_seconds")

    def _meta(self) -> dict[str, Any]:
        return {
            "global_config": self.global_.config.model_dump(mode="json"),
            "global_meta": self.global_._meta(),
            "adapted_segments": sorted(self.adapters_),
            "rank": self.rank_,
            "param_ratio": self.param_ratio_,
            "segment_info": {str(k): v for k, v in self.segment_info_.items()},
            "failed_segments": {str(k): v for k, v in getattr(self, "failed_segments_", {}).items()},
            "fit_seconds": self.fit_seconds_,
        }


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
