"""The global "large" model: a SASRec-style Transformer trained with full-softmax cross-entropy.

A user is their time-ordered history, so the model is inductive: new users are
scored from their items (``score_histories``) without
refitting. The network lives in ``_seqnet.py`` (nanoGPT style), the data windows in
``_seqdata.py``, the loop in ``_seqtrain.py``, the settings in ``_transformer_config.py``,
the objective and training choices in ``_transformer_train.py`` and the serving helpers
in ``_seqserve.py``; this file is the Recommender.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, SegrecWarning
from ..evaluate.ranking import quick_ndcg
from ..resources import use_bf16
from ..types import Interactions
from ._seqdata import Histories, make_windows
from ._seqnet import SeqNet, SeqNetConfig
from ._seqserve import _hidden_net, _score_net, append_histories, net_flops, net_item_table, scoring_threads
from ._seqtrain import LoopSettings, run_loop, seeded
from ._transformer_config import TransformerConfig
from ._transformer_train import (
    EMB_LR_MAX,
    EMB_LR_POSITIONS,
    NextItemLoss,
    embedding_lr_scale,
    project_embeddings,
    validation_users,
)
from ._transformer_tune import choose_setting, default_setting, inner_user_ndcg, tune_candidates
from ._vectors import ItemTable
from .base import Recommender, check_is_fitted
from .context import FitContext
from .tags import RecommenderTags
from .tuning import inner_sets

# the config, the training ingredients and the serving helpers live in their own modules
# (_transformer_config, _transformer_train, _seqserve); re-exported here, where the adapters,
# the joint model, tests and saved configs have always imported them from
__all__ = [
    "EMB_LR_MAX",
    "EMB_LR_POSITIONS",
    "NextItemLoss",
    "TransformerConfig",
    "TransformerRecommender",
    "append_histories",
    "embedding_lr_scale",
    "net_flops",
    "net_item_table",
    "project_embeddings",
    "scoring_threads",
    "validation_users",
]

log = logging.getLogger(__name__)


#: Fewest epochs of a warm-started refit (see ``TransformerConfig.warm_start``).
WARM_MIN_EPOCHS = 3


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
            adapters use them to choose their own epochs honestly. With a choice of
            settings (``dropout`` / ``item_init="auto"``), those of the chosen one.
        tuned_: What the choice of settings did: ``path`` (``fixed``, ``grid``, ``over budget``,
            ``data-parallel``, ``no early stopping``), the ``chosen`` dropout and item init, each
            candidate tried with its inner-valid NDCG@10, the estimate and the budget.
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
        #: the (dropout, item_init) the nets are built with: a candidate while choosing, then the winner
        self._setting: dict[str, Any] | None = None

    def __recommender_tags__(self) -> RecommenderTags:
        """Sequential input; trains data-parallel; reads item embeddings with ``item_init`` text or auto."""
        return replace(super().__recommender_tags__(), history_input="sequence", data_parallel=True,
                       uses_item_embeddings=self.config.item_init in ("text", "auto"),
                       needs_item_embeddings=self.config.item_init == "text")

    def _active(self) -> dict[str, Any]:
        """The dropout and item init in use (the default candidate until a choice was made)."""
        return self._setting if self._setting is not None else default_setting(self.config)

    # ------------------------------------------------------------------ fit
    def _net_config(self, n_items: int) -> SeqNetConfig:
        c = self.config
        return SeqNetConfig(n_items=n_items, max_len=c.max_len, embedding_size=c.embedding_size,
                            n_layers=c.n_layers, n_heads=c.n_heads, dropout=self._active()["dropout"])

    def _loop_settings(self, epochs: int, emb_scale: float = 1.0) -> LoopSettings:
        c = self.config
        return LoopSettings(epochs=epochs, batch_tokens=c.batch_tokens, batch_size=c.batch_size,
                            learning_rate=c.learning_rate,
                            weight_decay=c.weight_decay,
                            lr_scale=tuple((name, emb_scale) for name in ("wte.", "wpe.", "item_bias")),
                            patience=c.patience, target_window=c.target_window, clip_grad=c.clip_grad,
                            ema_decay=c.ema_decay, validate_every=c.validate_every,
                            bf16=use_bf16(c.precision, c.device),
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
        if self._active()["item_init"] == "text":
            if self._item_init is None:
                raise ConfigError("TransformerRecommender: item_init='text' needs item embeddings "
                                  "(fit(..., context=FitContext(item_embeddings=...)))", key="item_init")
            if self._item_init.shape[0] != n_items:
                raise ConfigError(f"item_embeddings has {self._item_init.shape[0]} rows; expected "
                                  f"n_items={n_items} (dense item order)", key="item_init")
            with torch.no_grad():
                net.wte.weight[:n_items] = torch.from_numpy(
                    project_embeddings(self._item_init, self.config.embedding_size))
        elif self._item_init is not None and self.config.item_init == "random":
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
        candidates = self._candidates()
        self._setting = candidates[0]
        self.tuned_ = {"path": "no early stopping", "chosen": dict(self._setting), "tried": []}
        if c.early_stopping:
            inner_train, inner_valid = inner_sets(train, valid)

            def train_one(setting: dict[str, Any]):
                self._setting = setting
                return self._train(inner_train, c.epochs, inner_valid, init=self._start_weights(inner=True))

            net, result, self.tuned_ = choose_setting(
                train_one, candidates, c.tune_budget_s, self.name, min_se=c.tune_min_se,
                per_user=inner_user_ndcg(self._score_rows, inner_train, inner_valid, c),
                allowed=self.data_parallel_hook is None)
            self._setting = self.tuned_["chosen"]  # the refit and the saved net use the winner
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
            if c.refit:
                net, self.refit_epochs_, self.refit_curve_ = self._refit(full, result)
                self.fit_timings_["refit_s"] = time.perf_counter() - refit_start
        else:
            net, result = self._train(full, c.epochs, None, init=self._start_weights(inner=False))
            self.best_epoch_ = self.refit_epochs_ = c.epochs
            self.curve_ = result.curve
        self.net_ = net
        # Scoring always uses the full fit history (train ∪ valid), even without refit.
        self.histories_ = Histories.from_interactions(full, c.max_len)
        self.fit_seconds_ = time.perf_counter() - start

    def _candidates(self) -> list[dict[str, Any]]:
        """The settings the inner split chooses among (see :func:`tune_candidates`)."""
        return tune_candidates(self.config, self._item_init is not None)

    def _start_weights(self, inner: bool) -> dict[str, torch.Tensor] | None:
        """Weights a run starts from (``inner``: the early-stopped run; else the final one); None = fresh."""
        return None

    def _refit(self, full: Interactions, result) -> tuple[SeqNet, int, list[dict[str, float]]]:
        """The net refitted on train ∪ valid after the inner run ``result``; its epochs and curve.

        Warm (``warm_start``): continues from the early-stopped weights for a share of the
        best epochs; else retrains from scratch for the best number of epochs.
        """
        c = self.config
        if c.warm_start:
            warm = min(self.best_epoch_, max(WARM_MIN_EPOCHS, round(c.warm_fraction * self.best_epoch_)))
            net, refit = self._train(full, warm, None, init=result.best_params)
            return net, warm, refit.curve
        net, refit = self._train(full, self.best_epoch_, None)
        return net, self.best_epoch_, refit.curve

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
        model._setting, model.tuned_ = self._setting, self.tuned_
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
        self.tuned_ = meta.get("tuned")
        self._setting = None if self.tuned_ is None else self.tuned_["chosen"]
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
                "n_params": self.net_.n_params(), "tuned": getattr(self, "tuned_", None)}
