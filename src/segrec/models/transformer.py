"""The global "large" model: a SASRec-style Transformer trained with full-softmax cross-entropy.

A user is their time-ordered history, so the model is inductive: new users are
scored from their items (``score_histories``) without
refitting. The network lives in ``_seqnet.py`` (nanoGPT style), the data windows in
``_seqdata.py`` and the loop in ``_seqtrain.py``; this file is the Recommender.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from ..errors import ConfigError, SegrecWarning
from ..evaluate.ranking import quick_ndcg
from ..resources import cpu_has_native_bf16
from ..types import Interactions
from ._seqdata import Histories, make_windows
from ._seqloss import multi_target_ce, output_logits, sample_negatives, seen_pairs
from ._seqnet import SeqNet, SeqNetConfig
from ._seqtrain import LoopSettings, run_loop, score_rows, seeded
from ._vectors import ItemTable
from .base import ModelConfig, Recommender, check_is_fitted
from .context import FitContext
from .tags import RecommenderTags
from .tuning import inner_sets

__all__ = ["TransformerConfig", "TransformerRecommender"]

log = logging.getLogger(__name__)


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
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Dropout on embeddings, attention and residual branches."""
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
    """AdamW weight decay on matrices and embeddings."""
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
    item_init: Literal["random", "text"] = "random"
    """``text``: start item embeddings from the array given to :meth:`TransformerRecommender.fit`
    (``segrec run`` passes MiniLM embeddings of the items' titles and categories). Not the
    default: on ml-100k valid it gave 0.2062 NDCG@10 against 0.2070 from random."""
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


class TransformerRecommender(Recommender):
    """Causal self-attention over each user's history, full-softmax CE at every position.

    Fit: train on train with early stopping on valid NDCG@10 (or on the last 10% of
    each user's history when no valid set is given), then continue from the best
    epoch's weights on train ∪ valid for ``warm_epochs`` epochs (or, without
    ``warm_start``, retrain from scratch for the best number of epochs). Score: the
    hidden state after the user's last fit-data item, dotted with every item embedding.

    Attributes:
        net_: The fitted :class:`SeqNet` (eval mode).
        histories_: Each user's last ``max_len`` fit-data items (flat + indptr).
        best_epoch_: Best epoch of the early-stopping run (``epochs`` without early stopping).
        refit_epochs_: Epochs the refit on train ∪ valid trained (0 = no refit).
        curve_: Per-epoch loss / inner-valid NDCG@10 of the early-stopping run.
        refit_curve_: Per-epoch loss of the refit.
        inner_params_: Best-epoch weights trained on the inner train part only (not saved);
            adapters use them to choose their own epochs honestly.
        fit_seconds_: Wall time of fit.

    Example:
        >>> from segrec.testing import planted_split
        >>> split = planted_split()
        >>> model = TransformerRecommender(embedding_size=16, n_heads=1, max_len=8, epochs=2,
        ...                                n_threads=1).fit(split.train, valid=split.valid)
        >>> model.score_histories([[0, 1, 2]]).shape
        (1, 23)
    """

    Config = TransformerConfig
    name = "transformer"
    config: TransformerConfig

    def __init__(self, config: TransformerConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        #: set by a data-parallel trainer in each worker process (``segrec.distributed.ddp``);
        #: None = train in this process alone
        self.data_parallel_hook = None
        if self.config.embedding_size % self.config.n_heads:
            raise ConfigError(
                f"TransformerRecommender: embedding_size={self.config.embedding_size} must be "
                f"divisible by n_heads={self.config.n_heads}", key="embedding_size")
        self._item_init: np.ndarray | None = None

    def __recommender_tags__(self) -> RecommenderTags:
        """Sequential input; trains data-parallel; reads item embeddings with ``item_init="text"``."""
        return replace(super().__recommender_tags__(), history_input="sequence", data_parallel=True,
                       uses_item_embeddings=self.config.item_init == "text")

    # ------------------------------------------------------------------ fit
    def _net_config(self, n_items: int) -> SeqNetConfig:
        c = self.config
        return SeqNetConfig(n_items=n_items, max_len=c.max_len, embedding_size=c.embedding_size,
                            n_layers=c.n_layers, n_heads=c.n_heads, dropout=c.dropout)

    def _loop_settings(self, epochs: int, emb_scale: float = 1.0) -> LoopSettings:
        c = self.config
        return LoopSettings(epochs=epochs, batch_tokens=c.batch_tokens, batch_size=c.batch_size,
                            learning_rate=c.learning_rate,
                            weight_decay=c.weight_decay,
                            lr_scale=tuple((name, emb_scale) for name in ("wte.", "wpe.", "item_bias")),
                            patience=c.patience, target_window=c.target_window, clip_grad=c.clip_grad,
                            ema_decay=c.ema_decay, validate_every=c.validate_every,
                            bf16=train_in_bf16(c.precision, c.device),
                            device=c.device,
                            show_progress=c.show_progress, label=self.name)

    def n_negatives_for(self, n_items: int) -> int | None:
        """Negatives of the sampled softmax for a catalogue size; None = exact full softmax."""
        c = self.config
        return c.n_negatives if n_items > c.full_softmax_max_items and c.n_negatives < n_items else None

    def _blank_net(self, n_items: int) -> SeqNet:
        """A freshly initialised network of this model's shape (subclasses add their parameters)."""
        return SeqNet(self._net_config(n_items))

    def _objective(self, net: SeqNet, n_items: int) -> torch.nn.Module:
        """The training loss module of ``net`` (``forward(inputs, targets[, side])``)."""
        return NextItemLoss(net, self.config.exclude_seen, self.n_negatives_for(n_items))

    def _batch_side(self, hist: Histories, windows) -> Any:
        """Per-batch extra loss input from window indices (:func:`run_loop`'s ``side``); none here."""
        return None

    def _score_rows(self, net: SeqNet, hist: Histories, rows: np.ndarray) -> np.ndarray:
        """Scores (len(rows), n_items) of ``net`` for rows of ``hist`` (dense users of the fit data)."""
        return _score_net(net, hist, rows, self.config.device)

    def _new_net(self, n_items: int) -> SeqNet:
        net = self._blank_net(n_items)
        if self.config.item_init == "text":
            if self._item_init is None:
                raise ConfigError("TransformerRecommender: item_init='text' needs item embeddings "
                                  "(fit(..., context=FitContext(item_embeddings=...)))", key="item_init")
            if self._item_init.shape[0] != n_items:
                raise ConfigError(f"item_embeddings has {self._item_init.shape[0]} rows; expected "
                                  f"n_items={n_items} (dense item order)", key="item_init")
            with torch.no_grad():
                net.wte.weight[:n_items] = torch.from_numpy(
                    project_embeddings(self._item_init, self.config.embedding_size))
        elif self._item_init is not None:
            warnings.warn("item_embeddings were given but item_init='random'; they are ignored",
                          SegrecWarning, stacklevel=4)
        return net.to(self.config.device)

    def _train(self, data: Interactions, epochs: int, valid: Interactions | None,
               init: dict[str, torch.Tensor] | None = None):
        """Seeded net trained on ``data``, fresh or from ``init``; early-stopped on ``valid`` when given."""
        c = self.config
        n_items = data.n_items
        with seeded(c.random_state, c.n_threads) as rng:
            net = self._new_net(n_items)
            if init is not None:
                net.load_state_dict({k: v.to(c.device) for k, v in init.items()}, strict=False)
            hist = Histories.from_interactions(data)
            windows = make_windows(hist, c.max_len)
            pad = net.config.pad_id

            objective = self._objective(net, n_items)
            parallel = self.data_parallel_hook
            # one process: the objective itself; under DDP: this rank's shard of each batch
            batch_loss = objective if parallel is None else parallel.wrap(objective)

            validate = None
            if valid is not None:
                users, fit_csr, valid_csr = validation_users(data, valid, c.valid_users, c.random_state)
                tail = hist.tail(c.max_len)

                def validate() -> float:
                    def score(rows):  # rows index the sampled users
                        return self._score_rows(net, tail, users[rows])

                    if parallel is not None:  # each rank scores a share of the users
                        return parallel.mean_ndcg(score, fit_csr, valid_csr)
                    return quick_ndcg(score, fit_csr, valid_csr)

            params = dict(net.named_parameters())
            scale = c.embedding_lr_scale
            if scale == "auto":
                scale = embedding_lr_scale(int(windows.length.sum()), n_items)
            settings = self._loop_settings(epochs, scale)
            result = run_loop(params, batch_loss, net.train, hist, windows, settings, rng, pad, validate,
                              side=self._batch_side(hist, windows))
            net.load_state_dict({k: v.to(c.device) for k, v in result.best_params.items()}, strict=False)
            net.eval()
        return net, result

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        c = self.config
        self._item_init = (None if context.item_embeddings is None
                           else np.asarray(context.item_embeddings, np.float32))
        start = time.perf_counter()
        full = train if valid is None else train.concat(valid)
        self.inner_params_ = None
        self.curve_: list[dict[str, float]] = []
        self.refit_curve_: list[dict[str, float]] = []
        if c.early_stopping:
            inner_train, inner_valid = inner_sets(train, valid)
            net, result = self._train(inner_train, c.epochs, inner_valid)
            self.fit_timings_["tuning_s"] = time.perf_counter() - start
            self.curve_ = result.curve
            self.inner_params_ = result.best_params
            self.inner_score_ = result.best_score
            # kept (not saved) so inner_model() can score the inner valid part without refitting
            self._inner_data = (Histories.from_interactions(inner_train, c.max_len), inner_train.to_csr(),
                                inner_train.fingerprint())
            self.best_epoch_ = max(result.best_epoch, 1)
            log.info("%s: best inner-valid NDCG@10 %.4f at epoch %d", self.name, result.best_score,
                     self.best_epoch_)
            self.refit_epochs_ = 0
            refit_start = time.perf_counter()
            if c.refit and c.warm_start:
                warm = min(self.best_epoch_, max(WARM_MIN_EPOCHS, round(c.warm_fraction * self.best_epoch_)))
                net, refit = self._train(full, warm, None, init=result.best_params)
                self.refit_epochs_, self.refit_curve_ = warm, refit.curve
            elif c.refit:
                net, refit = self._train(full, self.best_epoch_, None)
                self.refit_epochs_, self.refit_curve_ = self.best_epoch_, refit.curve
            if c.refit:
                self.fit_timings_["refit_s"] = time.perf_counter() - refit_start
        else:
            net, result = self._train(full, c.epochs, None)
            self.best_epoch_ = self.refit_epochs_ = c.epochs
            self.curve_ = result.curve
        self.net_ = net
        # Scoring always uses the full fit history (train ∪ valid), even without refit.
        self.histories_ = Histories.from_interactions(full, c.max_len)
        self.fit_seconds_ = time.perf_counter() - start

    def inner_model(self) -> TransformerRecommender | None:
        """The best-epoch network trained on the inner train part only, with that part's histories.

        Lets the segment router score the inner valid part honestly without training
        the Transformer again. None after ``load`` or when early stopping was off.
        """
        check_is_fitted(self)
        inner = getattr(self, "_inner_data", None)
        if self.inner_params_ is None or inner is None:
            return None
        net = self._blank_net(self.n_items)
        net.load_state_dict({**self.net_.state_dict(), **self.inner_params_})
        model = type(self)(self.config)
        model.net_ = net.to(self.config.device).eval()
        model.histories_, model.seen_, model.fitted_on_ = inner
        model.user_vocab_, model.item_vocab_ = self.user_vocab_, self.item_vocab_
        model.inner_params_ = None
        model.best_epoch_, model.curve_, model.fit_seconds_ = self.best_epoch_, self.curve_, 0.0
        model.refit_epochs_ = 0
        return model

    # -------------------------------------------------------------- scoring
    def _score(self, users: np.ndarray) -> np.ndarray:
        return self._score_hist(self.histories_, users)

    def _score_hist(self, hist: Histories, rows: np.ndarray) -> np.ndarray:
        c = self.config
        with scoring_threads(c.n_threads):
            return self._score_rows(self.net_, hist, rows)

    def _score_histories(self, histories: list[list[int]], segments) -> np.ndarray:
        # new users as item-index sequences (oldest first); only the last max_len are used
        hist = Histories.from_lists(histories).tail(self.config.max_len)
        return self._score_hist(hist, np.arange(len(hist)))

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        return net_flops(self.net_.config, h, self.n_items)

    def _add_interactions(self, users: np.ndarray, items: np.ndarray, done: set[int]) -> None:
        self.histories_ = append_histories(self.histories_, users, items, self.config.max_len)

    # -------------------------------------------------------- cached vectors
    def item_table(self) -> ItemTable:
        """Tied item embeddings and the item bias: a known user's scores are ``W @ h_u + b``."""
        return net_item_table(self.net_)

    def _user_vectors(self, users: np.ndarray) -> tuple[np.ndarray, None]:
        # the hidden state after each user's last fit item, batched as _score batches them
        c = self.config
        with scoring_threads(c.n_threads):
            return _hidden_net(self.net_, self.histories_, users, c.device), None

    def history_vectors(self, histories, segments=None) -> tuple[np.ndarray, None]:
        """Hidden states for item sequences (dense ids, oldest first; the last ``max_len`` count)."""
        check_is_fitted(self)
        hist = Histories.from_lists(histories).tail(self.config.max_len)
        c = self.config
        with scoring_threads(c.n_threads):
            return _hidden_net(self.net_, hist, np.arange(len(hist)), c.device), None

    @property
    def n_params_(self) -> int:
        """Parameters of the fitted network."""
        check_is_fitted(self)
        return self.net_.n_params()

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().float().cpu().numpy() for k, v in self.net_.state_dict().items()}
        state["hist_items"] = self.histories_.items.astype(np.int32)
        state["hist_indptr"] = self.histories_.indptr.astype(np.int64)
        return state

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        net = self._blank_net(len(self.item_vocab_))
        net.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                             if k.startswith("net.")})
        self.net_ = net.to(self.config.device).eval()
        self.histories_ = Histories(tensors["hist_items"].astype(np.int64),
                                    tensors["hist_indptr"].astype(np.int64))
        self.best_epoch_ = meta.get("best_epoch")
        self.refit_epochs_ = meta.get("refit_epochs")
        self.curve_ = meta.get("curve", [])
        self.fit_seconds_ = meta.get("fit_seconds")
        self.inner_params_ = None

    def _meta(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch_, "refit_epochs": getattr(self, "refit_epochs_", None),
                "curve": self.curve_, "fit_seconds": self.fit_seconds_,
                "n_params": self.net_.n_params()}


class NextItemLoss(torch.nn.Module):
    """The training objective as a module: ``forward(inputs, targets)`` is a batch's loss.

    Keeping the tied output layer and the item bias inside one ``forward`` lets a DDP
    wrapper (``segrec.distributed.ddp``) all-reduce every parameter's gradient.

    Args:
        net: The network.
        exclude_seen: Leave items already in the window out of each position's softmax.
        n_negatives: Shared negatives of a sampled softmax; None = the exact full softmax.
    """

    def __init__(self, net: SeqNet, exclude_seen: bool = False, n_negatives: int | None = None):
        super().__init__()
        self.net = net
        self.exclude_seen = exclude_seen
        self.n_negatives = n_negatives

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean softmax CE over positions with a next item; inputs (b, t), targets (b, t, w)."""
        hidden = self.net(inputs)  # (b, t, d)
        keep = targets[..., 0] >= 0  # positions with a next item
        tg = targets[keep]
        pairs = seen_pairs(inputs, keep, tg) if self.exclude_seen else None
        n_items = self.net.config.n_items
        negatives = None if self.n_negatives is None else sample_negatives(n_items, self.n_negatives,
                                                                           inputs.device)
        logits, cols = output_logits(hidden[keep], self.net.wte.weight[:n_items], self.net.item_bias,
                                     tg, pairs, negatives)
        return multi_target_ce(logits, cols)


#: Fewest epochs of a warm-started refit (see ``TransformerConfig.warm_start``).
WARM_MIN_EPOCHS = 3
#: ``embedding_lr_scale="auto"``: ``clip(EMB_LR_POSITIONS / training positions per item, 1, EMB_LR_MAX)``;
#: ml-100k (47 per item) -> 3.2, amazon-scientific (6.7) and the sparse scale shapes -> 10.
EMB_LR_POSITIONS = 150.0
EMB_LR_MAX = 10.0


def embedding_lr_scale(positions: int, n_items: int) -> float:
    """Learning-rate multiplier of the embeddings for data with ``positions`` training pairs."""
    per_item = positions / max(n_items, 1)
    return float(np.clip(EMB_LR_POSITIONS / max(per_item, 1e-9), 1.0, EMB_LR_MAX))


def train_in_bf16(precision: str, device: str) -> bool:
    """Whether training autocasts to bf16 for a ``precision`` setting on ``device``."""
    if precision == "auto":
        return torch.device(device).type == "cuda" or (torch.device(device).type == "cpu"
                                                      and cpu_has_native_bf16())
    return precision == "bf16"


def validation_users(data: Interactions, valid: Interactions, cap: int | None,
                     seed: int) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """The users a validation scores (all with valid items, or a fixed sample of ``cap``).

    Returns:
        ``(users, fit rows, valid rows)``: dense user ids and their rows of the two matrices.
    """
    fit_csr, valid_csr = data.to_csr(), valid.to_csr()
    users = np.flatnonzero(np.diff(valid_csr.indptr) > 0)
    if cap is not None and len(users) > cap:
        # own generator: sampling must not shift the training shuffles
        users = np.sort(np.random.default_rng(seed).choice(users, cap, replace=False))
    return users, fit_csr[users], valid_csr[users]


@contextlib.contextmanager
def scoring_threads(n_threads: int | None) -> Iterator[None]:
    """Torch's CPU threads set to ``n_threads`` while scoring (None: unchanged), restored after.

    Scoring runs the network in eval mode, which draws no random numbers, so unlike a fit
    it needs no seeding: ``torch.manual_seed`` costs about 3 ms a call here (it formats a
    stack trace), more than a new user's whole forward pass.
    """
    before = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        if n_threads:
            torch.set_num_threads(before)


def _score_net(net: SeqNet, hist: Histories, rows: np.ndarray, device: str) -> np.ndarray:
    def forward(inputs, last):
        return net.logits(net(inputs, last=last))  # (b, n_items)

    return score_rows(forward, hist, rows, net.config.pad_id, net.config.n_items, device=device)


def append_histories(hist: Histories, users: np.ndarray, items: np.ndarray, max_len: int) -> Histories:
    """``hist`` with ``items`` appended to ``users``' sequences (given order kept), cut to ``max_len``."""
    n = len(hist)
    old_users = np.repeat(np.arange(n, dtype=np.int64), hist.lengths)
    all_users = np.concatenate([old_users, np.asarray(users, np.int64)])
    all_items = np.concatenate([hist.items, np.asarray(items, np.int64)])
    order = np.argsort(all_users, kind="stable")  # a user's old items first, then the new ones
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(all_users, minlength=n), out=indptr[1:])
    return Histories(all_items[order], indptr).tail(max_len)


def _hidden_net(net: SeqNet, hist: Histories, rows: np.ndarray, device: str) -> np.ndarray:
    """Hidden states (len(rows), d) at each history's last position; NaN rows for empty ones.

    The same batching as :func:`_score_net` (``score_rows``, users sorted by length),
    stopping before the item table.
    """
    def forward(inputs, last):
        return net(inputs, last=last)  # (b, d): the state _score_net multiplies with the item table

    return score_rows(forward, hist, rows, net.config.pad_id, net.config.embedding_size, device=device)


def net_item_table(net: SeqNet, extra_bias: dict[int, np.ndarray] | None = None) -> ItemTable:
    """The item table of a SeqNet: tied embeddings ``wte[:n_items]`` and ``item_bias``.

    Args:
        net: The network.
        extra_bias: Further bias rows added to ``item_bias`` (the adapters' per-segment
            output biases), as group i + 1 for the i-th entry in key order.
    """
    n = net.config.n_items
    vectors = net.wte.weight[:n].detach().float().cpu().numpy()
    bias = net.item_bias.detach().float().cpu().numpy()
    rows = [bias] + [bias + np.asarray(extra_bias[k], np.float32) for k in sorted(extra_bias or {})]
    return ItemTable(vectors, np.stack(rows))


def net_flops(cfg: SeqNetConfig, h: np.ndarray, n_items: int) -> np.ndarray:
    """FLOPs of one SeqNet forward over the last ``min(h, max_len)`` items + logits.

    Per layer and position: q/k/v and output projections (4 d^2) and the MLP
    (2 * ffn_mult * d^2), each a multiply-add (x2); attention scores and the
    weighted sum cost 2 * L * d each per position. Only the last position's
    hidden state is dotted with the item table (d * n_items).
    """
    d = float(cfg.embedding_size)
    length = np.minimum(h, float(cfg.max_len))
    ffn = float(cfg.ffn_mult)
    per_layer = 2.0 * length * (4.0 + 2.0 * ffn) * d * d + 4.0 * length * length * d
    return cfg.n_layers * per_layer + 2.0 * d * n_items


def project_embeddings(x: np.ndarray, d: int, std: float = 0.02) -> np.ndarray:
    """PCA-project (n, D) embeddings to (n, d), scaled to the random init's std.

    Keeping the init's scale means text init changes *directions* (which items are
    similar) without changing the optimisation's starting temperature.
    """
    x = np.asarray(x, np.float64)
    x = x - x.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    z = u[:, :d] * s[:d]
    if z.shape[1] < d:  # fewer text dimensions than d: pad with small noise
        rng = np.random.default_rng(0)
        z = np.concatenate([z, rng.normal(0, z.std() + 1e-12, (len(z), d - z.shape[1]))], 1)
    return (z / (z.std() + 1e-12) * std).astype(np.float32)
