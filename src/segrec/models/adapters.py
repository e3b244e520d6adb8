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
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..distributed.executor import LocalExecutor, TaskFailure, raise_if_all_failed
from ..types import Interactions
from ._adapter_config import AdapterConfig
from ._adapter_fit import SegmentFit, final_adapter_task, fit_segment_adapter, tune_adapter_task
from ._adapter_theta import (
    _score_adapted,
    adapted_forward,
    adapter_param_count,
    choose_rank,
    effective_params,
    init_theta,
)
from ._seqdata import Histories
from ._seqtrain import score_rows
from ._vectors import ItemTable
from .base import Recommender, check_is_fitted
from .context import FitContext
from .tags import RecommenderTags
from .transformer import (
    TransformerConfig,
    TransformerRecommender,
    net_flops,
    net_item_table,
    scoring_threads,
)
from .tuning import inner_sets

# the config, θ_k's maths and the per-segment training live in _adapter_config, _adapter_theta
# and _adapter_fit; re-exported here, where tests, the joint model and Ray tasks import them
__all__ = [
    "AdaptedTransformerRecommender",
    "AdapterConfig",
    "SegmentFit",
    "adapted_forward",
    "adapter_param_count",
    "choose_rank",
    "effective_params",
    "final_adapter_task",
    "fit_segment_adapter",
    "init_theta",
    "tune_adapter_task",
]

log = logging.getLogger(__name__)


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
        segment_info_: segment -> dict(users, best_epoch, valid NDCG@10 global/adapted, seconds,
            the tuning run's per-epoch curve).
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
        g = self._global_model(train, valid, context)
        net_config = g.net_.config
        n_shared = g.net_.n_params()
        self.rank_ = choose_rank(net_config, n_shared, c)  # called here: its warning names fit's caller
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
        self.adapters_: dict[int, dict[str, np.ndarray]] = {}
        self.segment_info_: dict[int, dict[str, Any]] = {}
        self.failed_segments_: dict[int, str] = {}
        executor = context.executor or LocalExecutor()
        todo = self._segments_to_adapt()
        epochs = {k: c.epochs for k in todo}
        tuned: dict[int, dict[str, np.ndarray]] = {}  # θ_k at the tuned epoch: a warm final fit's start
        # θ_k at the best epoch on the inner split: with the global model's inner weights
        # this is the train-only adapted model that ``inner_model`` hands to the router
        self._inner_adapters: dict[int, dict[str, np.ndarray]] | None = {} if tune else None
        if tune:
            inner_shared = {**final_shared, **{k: v.numpy() for k, v in inner.items()}}
            self._tune_epochs(executor, todo, epochs, tuned, (inner_shared, net_config, tw), train, valid)
        for k in todo:
            if k not in self.failed_segments_:
                self.segment_info_[k]["best_epoch"] = epochs[k]
        self._final_fits(executor, todo, epochs, tuned, (final_shared, net_config, tw), full)
        self.fit_seconds_ = time.perf_counter() - start

    def _global_model(self, train: Interactions, valid: Interactions | None,
                      context: FitContext) -> TransformerRecommender:
        """Set the global model (given, or trained here) and the segments; return the model."""
        g = context.shared.get("transformer")
        if g is None:
            g = TransformerRecommender(self.config.global_model).fit(train, valid=valid, context=context)
        self.global_ = g
        self.segments_ = np.array(context.segments, dtype=np.int64)
        return g

    def _segments_to_adapt(self) -> dict[int, np.ndarray]:
        """Segment -> its dense users, for segments large enough for an adapter (``segment_info_`` set)."""
        labels, counts = np.unique(self.segments_[self.segments_ >= 0], return_counts=True)
        todo: dict[int, np.ndarray] = {}
        for k, n_users in zip(labels.tolist(), counts.tolist(), strict=True):
            self.segment_info_[k] = {"users": n_users}
            if n_users < self.config.min_segment_users:
                self.segment_info_[k]["best_epoch"] = 0
            else:
                todo[k] = np.flatnonzero(self.segments_ == k)
        return todo

    def _tune_epochs(self, executor, todo: dict[int, np.ndarray], epochs: dict[int, int],
                     tuned: dict[int, dict[str, np.ndarray]], shared: tuple, train: Interactions,
                     valid: Interactions | None) -> None:
        """Choose each segment's epochs on the inner split (filling ``epochs`` and ``tuned``)."""
        inner_shared, net_config, tw = shared
        inner_train, inner_valid = inner_sets(train, valid)
        tr_hist = Histories.from_interactions(inner_train)
        va_hist = Histories.from_interactions(inner_valid)
        # shared weights + histories go to the executor once; each task selects its users
        results = executor.map(tune_adapter_task, [(k, u) for k, u in todo.items()],
                               shared=(inner_shared, net_config, tr_hist, va_hist, self.config, self.rank_,
                                       tw),
                               labels=[f"adapter segment {k} (tune)" for k in todo], on_error="return")
        raise_if_all_failed(results, "AdaptedTransformerRecommender (epoch choice)")
        for k, res in zip(list(todo), results, strict=True):
            if self._failed(k, res):
                continue
            epochs[k] = res.best_epoch
            if res.best_epoch > 0:
                self._inner_adapters[k] = tuned[k] = res.params
            self.segment_info_[k].update(valid_ndcg_global=res.global_score,
                                         valid_ndcg_adapted=res.best_score, tune_seconds=res.seconds,
                                         curve=res.curve)
            log.info("segment %d (%d users): inner-valid NDCG@10 %.4f global -> %.4f adapted "
                     "at epoch %d", k, len(todo[k]), res.global_score, res.best_score, res.best_epoch)

    def _final_fits(self, executor, todo: dict[int, np.ndarray], epochs: dict[int, int],
                    tuned: dict[int, dict[str, np.ndarray]], shared: tuple, full: Interactions) -> None:
        """Train each adapted segment's θ_k on train ∪ valid over the final global weights."""
        final_shared, net_config, tw = shared
        full_hist = Histories.from_interactions(full)
        # epochs == 0: adaptation did not help on validation, serve the segment with the global model
        final = [(k, todo[k], epochs[k], None) for k in todo
                 if k not in self.failed_segments_ and epochs[k] > 0]
        if self.config.warm_start:  # continue from the tuned θ_k instead of retraining it from scratch
            final = [(k, u, min(n, self.config.warm_epochs), tuned[k]) if k in tuned else (k, u, n, None)
                     for k, u, n, _ in final]
        results = executor.map(final_adapter_task, final,
                               shared=(final_shared, net_config, full_hist, self.config, self.rank_, tw),
                               labels=[f"adapter segment {k}" for k, *_ in final], on_error="return")
        raise_if_all_failed(results, "AdaptedTransformerRecommender")
        for (k, _, n, _), res in zip(final, results, strict=True):
            if not self._failed(k, res):
                self.segment_info_[k].update(seconds=res.seconds, final_epochs=n)
                self.adapters_[k] = res.params

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
