"""Joint training of θ_shared and every θ_k: one segment-aware Transformer, one training run.

The post-hoc adapters (``adapters.py``) train θ_k on a frozen global network; here the
shared network and all segments' parameters are updated together (STAR, Sheng et al.
CIKM 2021; POSO, Dai et al. 2021; PEPNet, Chang et al. KDD 2023). Every batch mixes
segments; each position runs its user's *segment path* (θ_shared with θ_k applied), so
θ_shared learns from every user and θ_k only from its segment's (a user's weight on
segment k is 0 or 1 with hard segments, the segmenter's posterior with soft ones). The
loss is ``CE(segment path) + λ·KL(p_segment || p_shared)``, the shared path (θ_k off)
computed on (a random ``kl_sample`` share of) the same batch in the same loss call (no
gradient, eval mode), which keeps
each θ_k a small correction the shared model agrees with and the shared path a usable
global model (users without a segment and new users are served by it).

θ_k variants (``variant``), each within ``max_param_ratio`` of θ_shared:

* ``gate`` (POSO / PEPNet): per-segment gates ``2·sigmoid(z_k)`` (1 at init) on the
  input embedding, each block's attention output and its feed-forward hidden units;
* ``star`` (STAR's ``W ⊙ W_k`` at rank 1): ``diag(1 + u_k) W diag(1 + v_k)`` on the
  attention and feed-forward weights (identity at init);
* ``lora``: ``W + s·B_k A_k`` (the adapters' θ_k, now trained jointly).

Each may add a segment embedding (added to every input position) and a per-segment
output bias over the catalogue. The mixture over segments is computed in one pass for
the whole batch (gates and deltas are weighted by each row's segment weights), so a
batch costs about the same whatever its mix of segments.

A row's segment weights are one-hot (hard segments), the segmenter's posterior (soft),
or the softmax of a learned *history gate* over the mean item vector of the user's
history (``soft="history"``: any segmenter gives soft segments, and a new user needs no
segment). ``user_features="activity"`` adds PEPNet's other input: one more row in every
θ table, weighted by the user's standardised log history length.

Where the run has fitted the global Transformer (``init="auto"``), the joint run starts
from it: θ_shared from its weights (train-only ones for the inner run, so epoch 0 of
the early stopping *is* the global model), θ_k at identity, θ_shared at a tenth of the
rate. Its own fit then costs a fraction of the global's, and it can only leave the
global model where a joint epoch wins on inner validation.

The training loop, loss pieces, early stopping, warm-started refit and artifact format
are :class:`~segrec.models.transformer.TransformerRecommender`'s (this class extends it).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import DataValidationError, SegrecWarning
from ..types import Interactions
from ._joint_config import JointConfig
from ._jointloss import JointLoss
from ._jointnet import JointNet, RowInput, SegmentParams
from ._seqdata import Histories
from ._seqnet import SeqNet, SeqNetConfig
from ._seqtrain import score_rows, seeded
from .adapters import adapter_param_count, choose_rank
from .base import check_is_fitted
from .context import FitContext
from .tags import RecommenderTags
from .transformer import TransformerRecommender, net_flops

# the config, the loss and the network (θ_k as hooks) live in _joint_config, _jointloss and _jointnet;
# re-exported here
__all__ = ["JointConfig", "JointLoss", "JointNet", "JointTransformerRecommender", "RowInput", "SegmentParams",
           "theta_k_size"]

log = logging.getLogger(__name__)


def theta_k_size(net_config: SeqNetConfig, config: JointConfig, rank: int = 1) -> int:
    """Parameters of one segment's θ_k for a network shape (without building anything)."""
    if config.variant == "lora":  # the adapters' θ_k: same count
        return adapter_param_count(net_config, config, rank)  # type: ignore[arg-type]
    d, n_layers = net_config.embedding_size, net_config.n_layers
    f = net_config.ffn_mult * d
    if config.variant == "gate":
        n = d + n_layers * (d + f)  # input, attention output, feed-forward hidden units
    else:  # star: one input and one output scale vector per adapted weight
        per_layer = 0
        if "attn" in config.targets:
            per_layer += (d + 3 * d) + (d + d)
        if "mlp" in config.targets:
            per_layer += (d + f) + (f + d)
        n = n_layers * per_layer
    n += d if config.segment_embedding else 0
    n += net_config.n_items if config.output_bias else 0
    return n


class JointTransformerRecommender(TransformerRecommender):
    """A segment-aware Transformer whose θ_shared and per-segment θ_k are trained together.

    Fit: as :class:`TransformerRecommender` (early stopping on its own inner validation,
    scored with each user's segment path, then a warm-started refit on train ∪ valid),
    with the joint objective (see the module docstring). Score: each user's segment path;
    users without a segment (-1) and new users without one get the shared path.

    Attributes:
        segments_: int (n_users,), segment per dense user (-1 = none).
        weights_: float32 (n_users, K), each user's weights on the K segments (one-hot
            with hard segments, the posterior with soft ones; zeros = the shared path).
        soft_: Whether the weights came from segment posteriors.
        history_gate_: Whether a learned gate on the history mixes θ_k (``soft="history"``;
            ``weights_`` are then its one-hot training labels).
        n_features_: User features mixed in besides the segments (``user_features``).
        init_: ``"global"`` when θ_shared started from the run's global Transformer, else
            ``"scratch"``; joint_epochs_: then the joint epochs the inner run chose.
        activity_: (mean, std) of the train users' log history length, or None.
        rank_: Rank of the ``lora`` deltas (1 for the other variants).
        param_ratio_: Parameters of one θ_k / parameters of θ_shared.

    Example:
        >>> import numpy as np
        >>> from segrec.testing import planted_split
        >>> split = planted_split()
        >>> segs = np.arange(split.train.n_users) % 2
        >>> model = JointTransformerRecommender(embedding_size=16, n_heads=1, max_len=8, epochs=2,
        ...                                     max_param_ratio=1.0)
        >>> model.fit(split.train, valid=split.valid, context=FitContext(segments=segs)).n_segments_
        2
    """

    Config = JointConfig
    name = "joint_transformer"
    config: JointConfig
    _warm = None  # during fit: the global Transformer's weights it starts from (init="auto")
    joint_epochs_: int | None = None

    def __recommender_tags__(self) -> RecommenderTags:
        """Needs segments; starts from the fitted global Transformer when given; one process."""
        return replace(super().__recommender_tags__(), requires_segments=True, data_parallel=False,
                       builds_on="transformer" if self.config.init == "auto" else None)

    # ------------------------------------------------------------------ fit
    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        segs = np.asarray(context.segments, dtype=np.int64)
        probs = context.segment_probs
        n_seg = int(segs.max()) + 1 if (segs >= 0).any() else 1
        self.soft_ = probs is not None and self.config.soft == "auto"
        self.history_gate_ = self.config.soft == "history"
        if self.soft_:
            probs = np.asarray(probs, dtype=np.float32)
            if probs.ndim != 2 or probs.shape[0] != train.n_users or not np.isfinite(probs).all():
                raise DataValidationError(
                    f"context.segment_probs must be a finite (n_users, K) = ({train.n_users}, K) array; "
                    f"got shape {probs.shape}", source="segment_probs", problem="wrong shape")
            n_seg = max(n_seg, probs.shape[1])
        self.segments_ = segs
        self.n_segments_ = n_seg
        weights = np.zeros((train.n_users, n_seg), np.float32)
        if self.soft_:
            weights[:, : probs.shape[1]] = probs
        else:
            has = segs >= 0
            weights[np.flatnonzero(has), segs[has]] = 1.0
        self.weights_ = weights
        self.n_features_ = int(self.config.user_features == "activity")
        self.activity_ = None
        if self.n_features_:
            x = np.log1p(np.minimum(train.user_counts(), self.config.max_len))
            self.activity_ = (float(x.mean()), float(x.std()) or 1.0)
        net_config = self._net_config(train.n_items)
        n_shared = SeqNet(net_config).n_params()
        c = self.config
        self.rank_ = choose_rank(net_config, n_shared, c) if c.variant == "lora" else 1  # type: ignore[arg-type]
        self.param_ratio_ = theta_k_size(net_config, c, self.rank_) / n_shared
        if self.param_ratio_ > c.max_param_ratio:
            warnings.warn(f"joint {c.variant}: θ_k = {self.param_ratio_:.1%} of θ_shared, over "
                          f"max_param_ratio={c.max_param_ratio:.0%}", SegrecWarning, stacklevel=3)
        log.info("joint %s: %d segments (%s%s), θ_k = %.2f%% of θ_shared", c.variant, n_seg,
                 "history gate" if self.history_gate_ else "soft" if self.soft_ else "hard",
                 ", + activity" if self.n_features_ else "", 100 * self.param_ratio_)
        self._warm = self._global_start(context, net_config)
        self.joint_epochs_ = None
        self.init_ = "global" if self._warm is not None else "scratch"
        if self._warm is not None:
            context.say("joint: starting from the fitted global Transformer (θ_k at identity)")
        try:
            super()._fit(train, valid, context)
        finally:
            self._warm = None  # the global model's weights are its own: not kept here

    def _global_start(self, context: FitContext, net_config: SeqNetConfig):
        """(train-only weights, final weights, setting) of the run's global Transformer, or None."""
        g = context.shared.get("transformer") if self.config.init == "auto" else None
        if g is None:
            return None
        why = None
        if not isinstance(g, TransformerRecommender):
            why = f"context.shared['transformer'] is a {type(g).__name__}"
        elif replace(g.net_.config, dropout=net_config.dropout) != net_config:
            why = "its network has another shape"
        elif getattr(g, "inner_params_", None) is None and self.config.early_stopping:
            why = "it has no train-only weights (loaded, or fitted without early stopping)"
        if why is not None:
            log.warning("joint: not starting from the global Transformer (%s); training θ_shared from "
                        "scratch", why)
            return None
        final = {k: v.detach().clone() for k, v in g.net_.state_dict().items()}
        inner = (final if g.inner_params_ is None
                 else {k: v.detach().clone() for k, v in g.inner_params_.items()})
        # its dropout; item_init is moot (its item vectors are loaded), so no text is needed here
        setting = {**g._setting, "item_init": "random"}
        return inner, final, setting

    def _candidates(self) -> list[dict[str, Any]]:
        # started from the global model: its chosen setting (dropout, item init) is the one
        return [dict(self._warm[2])] if self._warm is not None else super()._candidates()

    def _start_weights(self, inner: bool) -> dict[str, torch.Tensor] | None:
        if self._warm is None:
            return None
        return self._warm[0] if inner else self._warm[1]

    def _refit(self, full: Interactions, result):
        if self._warm is None:
            return super()._refit(full, result)
        # the inner run repeated on train ∪ valid: the global's final weights, θ_k at identity,
        # the number of joint epochs the inner run chose (0: the global model as it is)
        epochs = int(result.best_epoch)
        self.joint_epochs_ = epochs
        net, refit = self._train(full, epochs, None, init=self._warm[1])
        return net, epochs, refit.curve

    def item_table(self) -> None:
        """None: no cached vectors; requests run the forward pass.

        θ_k gates the hidden units and biases the output per segment, so the shared
        path's cached vectors would serve the wrong scores.
        """
        return None

    def _blank_net(self, n_items: int) -> JointNet:
        return JointNet(self._net_config(n_items), self.n_segments_, self.config, self.rank_,
                        n_features=self.n_features_, router=self.history_gate_)

    def _loop_settings(self, epochs: int, emb_scale: float = 1.0):
        settings = super()._loop_settings(epochs, emb_scale)
        c = self.config
        shared = c.warm_lr_scale if self._warm is not None else 1.0
        # θ_shared (every other prefix) at the shared rate; θ_k and the history gate keep their own
        scales = (("segment.", c.segment_lr_scale / shared), ("router.", 1.0 / shared), *settings.lr_scale)
        return replace(settings, learning_rate=settings.learning_rate * shared, lr_scale=scales)

    def _objective(self, net: JointNet, n_items: int) -> nn.Module:
        c = self.config
        return JointLoss(net, c.exclude_seen, self.n_negatives_for(n_items), c.kl_weight, c.kl_sample)

    def _features(self, lengths: np.ndarray) -> np.ndarray | None:
        """(n, m) user features from history lengths (standardised, halved, clipped to [-1, 1])."""
        if not self.n_features_:
            return None
        x = np.log1p(np.minimum(lengths, self.config.max_len))
        mean, std = self.activity_
        return np.clip((x - mean) / (2.0 * std), -1.0, 1.0)[:, None].astype(np.float32)

    def _rows(self, tail: Histories, weights: np.ndarray, users: np.ndarray) -> RowInput:
        """:class:`RowInput` of ``users`` (rows of ``tail``, the histories the network reads)."""
        device = self.config.device
        feats = self._features(tail.lengths[users])
        bag = None
        if self.history_gate_:
            sub = tail.select(users)
            bag = (torch.from_numpy(sub.items).to(device), torch.from_numpy(sub.indptr[:-1]).to(device))
        return RowInput(torch.from_numpy(weights).to(device),
                        None if feats is None else torch.from_numpy(feats).to(device), bag)

    def _batch_side(self, hist: Histories, windows) -> Any:
        tail = hist.tail(self.config.max_len)  # the gate and the features read what scoring reads
        def side(idx: np.ndarray) -> RowInput:
            users = windows.user[idx]
            return self._rows(tail, self.weights_[users], users)

        return side

    def _score_rows(self, net: JointNet, hist: Histories, rows: np.ndarray,
                    weights: np.ndarray | None = None) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        w = self.weights_[rows] if weights is None else np.asarray(weights, np.float32)

        def forward(inputs, last, pos):
            mix, _ = net.mixing(self._rows(hist, w[pos], rows[pos]))
            hidden, bias = net.segment_forward(inputs, mix, last=last)
            logits = net.logits(hidden)
            return logits if bias is None else logits + bias

        return score_rows(forward, hist, rows, net.config.pad_id, net.config.n_items,
                          device=self.config.device, side=lambda pos: pos)

    def inner_model(self) -> JointTransformerRecommender | None:
        """The best-epoch joint network trained on the inner train part only (see the base class)."""
        model = super().inner_model()
        if model is not None:
            model.segments_, model.weights_, model.soft_ = self.segments_, self.weights_, self.soft_
            model.n_segments_, model.rank_ = self.n_segments_, self.rank_
            model.history_gate_, model.n_features_ = self.history_gate_, self.n_features_
            model.activity_ = self.activity_
            model.param_ratio_ = self.param_ratio_
        return model

    # -------------------------------------------------------------- scoring
    def _score_histories(self, histories: list[list[int]], segments) -> np.ndarray:
        # new users: one-hot on their given segment; None, -1 or an unknown one = the shared path
        # (with the history gate the segment is not needed: the gate reads the history)
        hist = Histories.from_lists(histories).tail(self.config.max_len)
        w = np.zeros((len(hist), self.n_segments_), np.float32)
        if segments is not None:
            seg = np.asarray(segments, np.int64)
            ok = (seg >= 0) & (seg < self.n_segments_)
            w[np.flatnonzero(ok), seg[ok]] = 1.0
        with seeded(self.config.random_state, self.config.n_threads):
            return self._score_rows(self.net_, hist, np.arange(len(hist)), w)

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        # θ_k adds work in proportion to its size (gates, scales or low-rank products per row)
        return net_flops(self.net_.config, h, self.n_items) * (1.0 + float(self.param_ratio_))

    def n_parameters(self) -> int:
        """θ_shared plus every θ_k (the saved user weights are bookkeeping, not parameters)."""
        check_is_fitted(self)
        return self.net_.n_params()

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True):
        """Top-k items per user (see :meth:`Recommender.recommend`); records each user's segment."""
        recs = super().recommend(user_ids, k, exclude_seen=exclude_seen)
        seg = self.segments_[self._user_index(recs.user_ids)]
        return type(recs)(recs.user_ids, recs.item_ids, recs.scores, seg, recs.tier)

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        state["segments"] = self.segments_.astype(np.int64)
        state["segment_weights"] = self.weights_.astype(np.float32)
        return state

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.n_segments_, self.rank_ = int(meta["n_segments"]), int(meta["rank"])
        self.param_ratio_, self.soft_ = float(meta["param_ratio"]), bool(meta["soft"])
        self.history_gate_ = bool(meta.get("history_gate", False))
        self.init_, self.joint_epochs_ = meta.get("init", "scratch"), meta.get("joint_epochs")
        self.n_features_ = int(meta.get("n_features", 0))
        self.activity_ = None if meta.get("activity") is None else tuple(meta["activity"])
        super()._set_state(tensors, meta)
        self.segments_ = tensors["segments"].astype(np.int64)
        self.weights_ = np.array(tensors["segment_weights"], dtype=np.float32)

    def _meta(self) -> dict[str, Any]:
        return {**super()._meta(), "n_segments": self.n_segments_, "rank": self.rank_,
                "param_ratio": self.param_ratio_, "soft": self.soft_,
                "history_gate": self.history_gate_, "n_features": self.n_features_,
                "init": getattr(self, "init_", "scratch"), "joint_epochs": self.joint_epochs_,
                "activity": None if self.activity_ is None else list(self.activity_),
                "n_shared_params": self.net_.n_shared_params()}
