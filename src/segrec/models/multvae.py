"""Mult-VAE: a variational autoencoder over a user's item set (Liang et al., WWW 2018).

The encoder maps the L2-normalised, dropped-out binary history ``x_u`` to a
Gaussian ``q(z | x_u)``; the decoder maps ``z`` to logits over the catalogue and
the likelihood is multinomial (``-sum x_u * log_softmax(logits)``). The KL term's
weight beta is annealed linearly from 0 to ``anneal_cap``, the paper's remedy for
over-regularised posteriors. Any history scores without retraining, so brand-new
users are served by :meth:`MultVAERecommender.score_histories`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import ModelFitError
from ..evaluate.ranking import quick_ndcg
from ..resources import trim_heap, use_bf16
from ..types import Interactions
from ._histories import as_history_input
from ._vectors import ItemTable
from .base import ModelConfig, Recommender, check_is_fitted
from .context import FitContext
from .tuning import inner_sets, scored_users

__all__ = ["MultVAEConfig", "MultVAENet", "MultVAERecommender"]

log = logging.getLogger(__name__)


class MultVAEConfig(ModelConfig):
    """Settings of :class:`MultVAERecommender` (defaults follow the paper, sized for ml-100k)."""

    hidden_sizes: tuple[int, ...] = (600,)
    """Encoder hidden layers (the decoder mirrors them); the paper's [I -> 600 -> 200]."""
    embedding_size: int = Field(200, ge=1)
    """Latent dimension of z."""
    dropout: float = Field(0.5, ge=0, lt=1)
    """Dropout on the normalised input during training."""
    anneal_cap: float = Field(0.2, ge=0)
    """Largest KL weight beta (the paper's best on ML-20M)."""
    anneal_steps: int = Field(2000, ge=1)
    """Gradient updates over which beta grows linearly from 0 to ``anneal_cap``."""
    epochs: int = Field(100, ge=1)
    """Most training epochs; early stopping usually ends sooner."""
    patience: int = Field(10, ge=1)
    """Epochs without an inner-validation NDCG@10 gain before stopping."""
    patience_updates: int = Field(300, ge=1)
    """Also stop once this many updates passed without a gain: ten epochs are 80 updates on
    ml-100k (unaffected) but 1,000 on a 50k-user log, where three epochs say as much."""
    max_updates: int = Field(3000, ge=1)
    """Most updates of one training run (ml-100k's 100 epochs are 800); bounds the work on
    large logs whatever the validation curve does."""
    batch_size: int = Field(128, ge=1)
    """Users per gradient update."""
    learning_rate: float = Field(1e-3, gt=0)
    """Adam step size."""
    weight_decay: float = Field(0.0, ge=0)
    """Adam L2 weight decay."""
    full_softmax_max_items: int = Field(4096, ge=1)
    """Catalogues up to this size train on the full multinomial softmax (the paper's). Larger
    ones use a sampled softmax: the batch's items plus ``n_negatives`` uniform draws, the
    draws' logits corrected by log(items outside the batch / draws) so the normaliser stays
    unbiased. On a 12k-item log that cut an epoch from ~50 s to ~7 s (2 busy cores); scoring
    always uses every item."""
    n_negatives: int = Field(2048, ge=1)
    """Uniformly drawn items per batch for the sampled softmax."""
    max_steps_per_epoch: int = Field(100, ge=1)
    """The batch grows beyond ``batch_size`` so that an epoch takes at most this many updates:
    ml-100k's 943 users are 8 updates of 128, a 50k-user log is 100 of 500 rather than 390 of
    128 (each update also pays Adam over every weight)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Training matmuls: ``bf16`` autocast (sparse first layer, softmax and KL in fp32),
    ``fp32``, or ``auto``: bf16 on CPUs with native bf16 instructions. Scoring is fp32.

    Measured (AMD EPYC with AVX512-BF16, one thread, load 6-8, two runs each): ml-100k
    fit 35.9 / 34.4 s -> 22.0 / 21.3 s, best inner-valid NDCG@10 0.1357 -> 0.1365; the
    e-commerce shape (300 updates) 90.9 / 71.3 s -> 71.1 / 49.6 s at the same 0.0342."""
    refit: bool = True
    """Retrain on all fit data (train ∪ valid) for the early-stopped number of epochs,
    as the protocol's black-box rule asks; ``False`` keeps the early-stopped network,
    which never learned from the validation interactions (faster, slightly weaker)."""
    random_state: int | None = 0
    """Seed of initialisation, shuffling, dropout and sampling; ``None`` draws fresh entropy."""
    n_jobs: int | None = Field(1, ge=1)
    """Torch intra-op threads while fitting (``None`` keeps torch's setting). Default 1: at
    ml-100k size, more threads mostly spin; on a busy 2-core machine torch's default 2
    threads took 245 s wall / 173 s CPU for the fit that takes 60 s / 40 s on one thread."""


class MultVAENet(nn.Module):
    """Encoder/decoder network of Mult-VAE.

    Args:
        n_items: Catalogue size (input and output width).
        hidden_sizes: Encoder hidden widths; the decoder uses them reversed.
        embedding_size: Latent dimension.
        dropout: Input dropout probability.
    """

    def __init__(self, n_items: int, hidden_sizes: tuple[int, ...], embedding_size: int, dropout: float):
        super().__init__()
        enc = [n_items, *hidden_sizes]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc[:-1], enc[1:], strict=True))
        self.to_latent = nn.Linear(enc[-1], 2 * embedding_size)  # mean and log-variance
        dec = [embedding_size, *reversed(hidden_sizes), n_items]
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:], strict=True))
        self.dropout = dropout
        self.embedding_size = embedding_size
        for layer in [*self.encoder, self.to_latent, *self.decoder]:
            # Xavier weights and N(0, 0.001) biases, as in the authors' code.
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def forward(self, x: torch.Tensor, candidates: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, mean and log-variance for a batch of histories.

        Args:
            x: sparse COO tensor of shape (b, n_items), coalesced, non-negative.
            candidates: Item ids (c,) whose logits the last layer computes (sampled
                softmax); None computes all of them.

        Returns:
            ``(logits, mu, logvar)`` of shapes (b, n_items) (or (b, c)), (b, d), (b, d).
        """
        z, mu, logvar = self.last_hidden(x)
        last = self.decoder[-1]
        if candidates is not None:  # only the candidates' rows of the output layer
            return F.linear(z, last.weight[candidates], last.bias[candidates]), mu, logvar
        return last(z), mu, logvar  # (b, n_items) logits

    def last_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's input to its last (item) layer, mean and log-variance: ``forward`` but that layer.

        A known user's vector for serving (the last layer is the item table and bias).
        """
        # The input is sparse (ml-100k rows are ~6% full), so normalisation, dropout and
        # the first layer act on the stored values only: same maths as F.normalize +
        # F.dropout + Linear on the dense row, at half the cost of a training step.
        idx, vals = x.indices(), x.values()  # (2, nnz), (nnz,)
        norms = torch.zeros(x.shape[0], dtype=vals.dtype).index_add_(0, idx[0], vals * vals).sqrt()
        vals = vals / norms[idx[0]]  # unit L2 norm per user
        if self.training and self.dropout > 0:
            keep = torch.rand(vals.shape) >= self.dropout
            vals = vals * keep / (1.0 - self.dropout)
        h = torch.sparse_coo_tensor(idx, vals, x.shape, is_coalesced=True, check_invariants=False)
        first, *rest = self.encoder
        with torch.autocast("cpu", enabled=False):  # sparse products stay fp32 (no bf16 sparse kernels)
            h = torch.tanh(torch.sparse.mm(h, first.weight.T) + first.bias)  # (b, hidden)
        for layer in rest:
            h = torch.tanh(layer(h))
        mu, logvar = self.to_latent(h).split(self.embedding_size, dim=1)  # (b, d) each
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        for layer in self.decoder[:-1]:
            z = torch.tanh(layer(z))
        return z, mu, logvar


class MultVAERecommender(Recommender):
    """Variational autoencoder with multinomial likelihood (Liang et al. 2018).

    Training stops early on inner-validation NDCG@10 (``valid`` when given, else
    the last 10% of each user's fit data); with ``refit`` the network is then
    retrained on all fit data for the best number of epochs.

    Attributes:
        net_: The fitted :class:`MultVAENet` (eval mode).
        train_csr_: sparse (n_users, n_items) binary fit data, the input of scoring.
        best_epoch_: Epochs of the final network (early-stopping choice).
        history_: Inner-validation NDCG@10 after each epoch of the stopping run.
        batch_size_: Users per update in the stopping run (``batch_size``, or more on a
            large log, see ``max_steps_per_epoch``).

    Example:
        >>> from segrec.testing import planted_split
        >>> split = planted_split()
        >>> model = MultVAERecommender(hidden_sizes=(16,), embedding_size=4, epochs=3).fit(split.train)
        >>> model.score_histories(split.train.to_csr()[:2]).shape
        (2, 23)
    """

    Config = MultVAEConfig
    name = "multvae"

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        cfg = self.config
        start = time.perf_counter()
        inner_train, inner_valid = inner_sets(train, valid)
        seed = _seed(cfg.random_state)
        with _torch_threads(cfg.n_jobs):
            net, self.history_ = self._train(inner_train.to_csr(), cfg.epochs, seed, inner_valid.to_csr())
            self.best_epoch_ = int(np.argmax(self.history_)) + 1
            self.fit_timings_["tuning_s"] = time.perf_counter() - start
            if cfg.refit:
                net, _ = self._train(inner_train.concat(inner_valid).to_csr(), self.best_epoch_, seed, None)
        full = train if valid is None else train.concat(valid)
        self.train_csr_ = full.to_csr()  # scoring input: every fit item of each user
        self.net_ = net.eval()
        log.info("Mult-VAE: best epoch %d (inner NDCG@10 %.4f), fitted in %.1fs",
                 self.best_epoch_, max(self.history_), time.perf_counter() - start)

    def _train(
        self, x: sp.csr_matrix, epochs: int, seed: int, valid_csr: sp.csr_matrix | None
    ) -> tuple[MultVAENet, list[float]]:
        """Train a fresh network for up to ``epochs``; with ``valid_csr``, stop early.

        Returns the network (the best epoch's weights when validating) and the
        per-epoch validation NDCG@10 (empty without validation).
        """
        cfg = self.config
        users = np.flatnonzero(np.diff(x.indptr) > 0)
        rng = np.random.default_rng(seed)
        history: list[float] = []
        n_items = x.shape[1]
        sampled = n_items > cfg.full_softmax_max_items
        bf16 = use_bf16(cfg.precision, "cpu")  # the autocast below is the CPU one
        batch = max(cfg.batch_size, -(-len(users) // cfg.max_steps_per_epoch))
        steps_per_epoch = max(1, -(-len(users) // batch))
        self.batch_size_ = batch
        # validation ranks a fixed sample of users at scale (evaluate.ranking.MAX_SCORED_USERS)
        scored = None if valid_csr is None else scored_users(valid_csr, seed=seed)
        # fork_rng keeps the caller's global torch RNG untouched while we seed ours.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = MultVAENet(x.shape[1], cfg.hidden_sizes, cfg.embedding_size, cfg.dropout)
            # fused Adam: ~10x faster per step on CPU than the default (a 2M-parameter
            # step otherwise costs more than the forward and backward passes together)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate,
                                   weight_decay=cfg.weight_decay, fused=True)
            best_state, best, stale, step = None, -1.0, 0, 0
            for _epoch in range(epochs):
                net.train()
                order = users[rng.permutation(len(users))]
                for lo in range(0, len(order), batch):
                    rows = _to_torch(x[order[lo : lo + batch]])  # sparse (b, n_items)
                    beta = min(cfg.anneal_cap, cfg.anneal_cap * step / cfg.anneal_steps)
                    r, c = rows.indices()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        if sampled:
                            cand, c, shift = _candidates(c.numpy(), n_items, cfg.n_negatives, rng)
                            logits, mu, logvar = net(rows, candidates=cand)
                        else:
                            logits, mu, logvar = net(rows)
                    logits, mu, logvar = logits.float(), mu.float(), logvar.float()
                    if sampled:
                        logits = logits + shift  # log(1/Q) of the drawn items, 0 for the batch's own
                    # multinomial log-likelihood: sum over the user's items of log softmax
                    nll = -(F.log_softmax(logits, dim=1)[r, c] * rows.values()).sum() / rows.shape[0]
                    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()
                    loss = nll + beta * kl
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
                trim_heap()  # an epoch's freed batches go back to the OS (see trim_heap)
                if not torch.isfinite(loss):
                    raise ModelFitError(f"Mult-VAE loss became {loss.item()} at epoch {_epoch + 1}; "
                                        f"lower learning_rate (now {cfg.learning_rate})")
                if valid_csr is None:
                    continue
                net.eval()
                score = quick_ndcg(lambda u, net=net: _forward_scores(net, x[u]), x, valid_csr, k=10,
                                   users=scored)
                history.append(score)
                if score > best:
                    best, stale, best_state = score, 0, copy.deepcopy(net.state_dict())
                else:
                    stale += 1
                    if stale >= cfg.patience or stale * steps_per_epoch >= cfg.patience_updates:
                        break
                if step >= cfg.max_updates:
                    log.info("Mult-VAE: stopped after %d updates (max_updates)", step)
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        return net, history

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray) -> np.ndarray:
        return self._score_histories(self.train_csr_[users], None)

    def _score_histories(self, rows: sp.csr_matrix, segments) -> np.ndarray:
        # logits (n, n_items) for item rows, e.g. a new user's items
        rows = sp.csr_matrix(rows, dtype=np.float32, copy=True)  # never write into the caller's matrix
        rows.sum_duplicates()
        rows.data[:] = 1.0  # binary, as in training
        return _forward_scores(self.net_, rows)

    def _add_interactions(self, users: np.ndarray, items: np.ndarray, done: set[int]) -> None:
        self.train_csr_ = self.seen_  # the encoder reads the history row

    # ---------------------------------------------------------- cached vectors
    def item_table(self) -> ItemTable:
        """The decoder's last layer: a known user's scores are ``W @ z_u + b``."""
        last = self.net_.decoder[-1]
        return ItemTable(last.weight.detach().numpy(), last.bias.detach().numpy())

    def _user_vectors(self, users: np.ndarray) -> tuple[np.ndarray, None]:
        return self.history_vectors(self.train_csr_[users])

    def history_vectors(self, histories, segments=None) -> tuple[np.ndarray, None]:
        """The decoder's last hidden activation for binary item rows (or item sequences)."""
        check_is_fitted(self)
        rows, _ = as_history_input(histories, "rows", self.n_items)
        rows = sp.csr_matrix(rows, dtype=np.float32, copy=True)
        rows.sum_duplicates()
        rows.data[:] = 1.0  # binary, as in training and _score_histories
        with torch.no_grad():
            z, _, _ = self.net_.last_hidden(_to_torch(rows))
        return z.numpy(), None

    # ---------------------------------------------------------------- artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {f"net.{k}": v.detach().numpy() for k, v in self.net_.state_dict().items()}

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        cfg = self.config
        net = MultVAENet(len(self.item_vocab_), cfg.hidden_sizes, cfg.embedding_size, cfg.dropout)
        net.load_state_dict({k[len("net."):]: torch.from_numpy(np.array(v))
                             for k, v in tensors.items() if k.startswith("net.")})
        self.net_ = net.eval()
        self.train_csr_ = self.seen_
        self.best_epoch_ = int(meta["best_epoch"])
        self.history_ = list(meta.get("history", []))

    def _meta(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch_, "history": self.history_}


def _candidates(pos: np.ndarray, n_items: int, n_draws: int, rng: np.random.Generator):
    """Sampled-softmax columns of one batch: its own items plus uniform draws.

    Returns:
        ``(candidates, column of each positive, logit shift)``: the sorted item ids
        (torch int64), the positives' positions in them, and a (c,) float tensor that adds
        ``log((n_items - own) / drawn)`` to the drawn items' logits, the importance weight
        that makes the drawn items stand for every item outside the batch.
    """
    own = np.unique(pos)
    drawn = np.setdiff1d(rng.integers(0, n_items, n_draws), own)
    cand = np.concatenate([own, drawn])
    order = np.argsort(cand, kind="stable")
    cand = cand[order]
    shift = np.zeros(len(cand), np.float32)
    if len(drawn):
        shift[np.argsort(order)[len(own):]] = np.log((n_items - len(own)) / len(drawn))
    cols = np.searchsorted(cand, pos)
    return torch.from_numpy(cand), torch.from_numpy(cols), torch.from_numpy(shift)


def _forward_scores(net: MultVAENet, rows: sp.csr_matrix) -> np.ndarray:
    """Eval-mode logits (n, n_items) for sparse rows, without gradients."""
    with torch.no_grad():
        logits, _, _ = net(_to_torch(rows))
    return logits.numpy()


def _to_torch(rows: sp.csr_matrix) -> torch.Tensor:
    """A coalesced float32 sparse COO tensor of the same shape as ``rows``."""
    rows = sp.csr_matrix(rows, dtype=np.float32, copy=True)
    rows.sum_duplicates()  # sorted, unique (row, col) pairs = coalesced order
    row_ids = np.repeat(np.arange(rows.shape[0], dtype=np.int64), np.diff(rows.indptr))
    idx = torch.from_numpy(np.vstack([row_ids, rows.indices.astype(np.int64)]))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(rows.data), rows.shape,
                                   is_coalesced=True, check_invariants=False)


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (restored on exit)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seed(random_state: int | None) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(random_state)
