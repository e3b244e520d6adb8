"""VAE-latent segmentation: a small torch VAE over user-item rows, then k-means on latent means.

The encoder reads a user's (L2-normalised, dropout-corrupted) item row and,
optionally, their feature row; the decoder reconstructs the items with a
multinomial likelihood (Mult-VAE, Liang et al. WWW 2018) and the features with
a Gaussian one. Users whose histories imply the same tastes land close in the
latent space even when they share few exact items, which raw co-occurrence
features miss. Segments are k-means clusters of the latent means.

Example:
    >>> seg = VAESegmenter(n_segments=4, latent_dim=8, epochs=30, random_state=0)
    >>> seg.fit(features).labels_  # features from FeaturePipeline (carries item rows)  # doctest: +SKIP
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..errors import ModelFitError, SegmentationError
from ..features.base import UserFeatures
from .base import Segmenter, SegmenterConfig, nearest_center, segment_means

__all__ = ["VAEConfig", "VAESegmenter"]

log = logging.getLogger(__name__)


class VAEConfig(SegmenterConfig):
    """Settings of :class:`VAESegmenter`."""

    latent_dim: int = Field(16, ge=2)
    """Size of the latent space that is clustered."""
    hidden_size: int = Field(128, ge=4)
    """Width of the encoder/decoder hidden layer."""
    epochs: int = Field(60, ge=1)
    """Training passes over the users."""
    batch_size: int = Field(128, ge=1)
    """Users per gradient step."""
    learning_rate: float = Field(1e-3, gt=0)
    """Adam step size."""
    beta: float = Field(0.2, ge=0)
    """Final KL weight, reached linearly over the first half of training."""
    dropout: float = Field(0.3, ge=0, lt=1)
    """Input dropout on item rows (denoising)."""
    use_features: bool = True
    """Also encode and reconstruct the feature row (behaviour, text, ...)."""
    feature_weight: float = Field(1.0, ge=0)
    """Weight of the feature reconstruction term."""
    n_init: int = Field(4, ge=1)
    """k-means restarts on the latent means."""
    device: str = "cpu"
    """Torch device."""
    n_threads: int | None = Field(1, ge=1)
    """Torch CPU threads while training (restored after); a net this small runs fastest on one
    thread, and on a shared 2-core machine two threads ran 90x slower from sync overhead."""


def _dense_rows(rows: sp.csr_matrix):
    import torch

    x = torch.from_numpy(np.asarray(rows.toarray(), dtype=np.float32))
    return torch.nn.functional.normalize(x, dim=1)


class VAESegmenter(Segmenter):
    """Cluster users in the latent space of a variational autoencoder.

    Needs :class:`~segrec.features.UserFeatures` carrying ``item_rows`` (what
    :class:`~segrec.features.FeaturePipeline` builds); ``assign`` encodes new
    users (a few items and/or features) and picks the nearest latent centre.

    Attributes:
        labels_: int64 (n_users,).
        centers_: float32 (n_segments, n_features), segment means in feature space.
        latent_centers_: float32 (n_segments, latent_dim), k-means centres of latent means.
        latent_: float32 (n_users, latent_dim), the fitted users' latent means.
        losses_: Mean training loss per epoch.
    """

    Config = VAEConfig
    name = "vae"

    def _inputs(self, x: np.ndarray, features):
        if not isinstance(features, UserFeatures) or features.item_rows is None:
            raise SegmentationError(
                "VAESegmenter needs UserFeatures with item_rows (from FeaturePipeline), not a bare matrix"
            )
        return features.item_rows.tocsr().astype(np.float32), x

    def _build(self, n_items: int, n_feat: int):
        import torch
        from torch import nn

        cfg = self.config
        h, z = cfg.hidden_size, cfg.latent_dim

        class _VAE(nn.Module):
            def __init__(self):
                super().__init__()
                self.enc_items = nn.Linear(n_items, h)
                self.enc_feat = nn.Linear(n_feat, h, bias=False) if n_feat else None
                self.enc_out = nn.Linear(h, 2 * z)
                self.dec = nn.Linear(z, h)
                self.dec_items = nn.Linear(h, n_items)
                self.dec_feat = nn.Linear(h, n_feat) if n_feat else None

            def encode(self, items, feats):
                hid = self.enc_items(items)  # (batch, hidden)
                if self.enc_feat is not None:
                    hid = hid + self.enc_feat(feats)
                mu, logvar = self.enc_out(torch.tanh(hid)).chunk(2, dim=1)  # (batch, latent) each
                return mu, logvar

            def decode(self, z):
                hid = torch.tanh(self.dec(z))
                feat = self.dec_feat(hid) if self.dec_feat is not None else None
                return self.dec_items(hid), feat

        return _VAE().to(cfg.device)

    def _encode(self, rows: sp.csr_matrix, feats: np.ndarray) -> np.ndarray:
        import torch

        out = []
        self.net_.eval()
        with torch.no_grad():
            for start in range(0, rows.shape[0], 4096):
                items = _dense_rows(rows[start : start + 4096]).to(self.config.device)
                f = torch.from_numpy(feats[start : start + 4096]).to(self.config.device)
                mu, _ = self.net_.encode(items, f if self.config.use_features else f[:, :0])
                out.append(mu.cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def _fit_k(self, x, k, features):
        import torch

        cfg = self.config
        rows, feats = self._inputs(x, features)
        threads = torch.get_num_threads()
        if cfg.n_threads is not None:
            torch.set_num_threads(cfg.n_threads)
        try:
            labels = self._train_and_cluster(rows, feats, x, k)
        finally:
            torch.set_num_threads(threads)
        return labels

    def _train_and_cluster(self, rows, feats, x, k):
        import torch

        from .kmeans import KMeansConfig, kmeans_fit

        cfg = self.config
        n_feat = feats.shape[1] if cfg.use_features else 0
        # fork_rng: seed everything the VAE draws without touching the caller's global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.random_state)
            self.net_ = self._build(rows.shape[1], n_feat)
            opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.learning_rate)
            gen = torch.Generator().manual_seed(cfg.random_state)
            n = rows.shape[0]
            steps_total = cfg.epochs * max(1, -(-n // cfg.batch_size))
            step = 0
            self.losses_ = []
            feats_t = torch.from_numpy(feats)
            for _epoch in range(cfg.epochs):
                self.net_.train()
                perm = torch.randperm(n, generator=gen).numpy()
                total = 0.0
                for start in range(0, n, cfg.batch_size):
                    idx = perm[start : start + cfg.batch_size]
                    target = torch.from_numpy(rows[idx].toarray())  # (batch, n_items) binary
                    items = torch.nn.functional.normalize(target, dim=1)
                    items = torch.nn.functional.dropout(items, cfg.dropout, training=True)
                    f = feats_t[idx] if n_feat else feats_t[idx][:, :0]
                    mu, logvar = self.net_.encode(items.to(cfg.device), f.to(cfg.device))
                    z = mu + torch.randn(mu.shape, generator=gen).to(cfg.device) * torch.exp(0.5 * logvar)
                    logits, frec = self.net_.decode(z)
                    nll = -(torch.log_softmax(logits, 1) * target.to(cfg.device)).sum(1).mean()
                    if frec is not None:
                        nll = nll + cfg.feature_weight * ((frec - f.to(cfg.device)) ** 2).sum(1).mean()
                    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1).mean()
                    anneal = cfg.beta * min(1.0, step / max(1, steps_total // 2))
                    loss = nll + anneal * kl
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
                    total += float(loss.detach()) * len(idx)
                self.losses_.append(total / n)
        if not np.isfinite(self.losses_[-1]):
            raise ModelFitError(
                f"VAESegmenter: training diverged (loss {self.losses_[-1]}); lower learning_rate"
            )
        self.latent_ = self._encode(rows, feats)
        labels, centers = kmeans_fit(self.latent_, k, KMeansConfig(n_init=cfg.n_init), cfg.random_state)
        self.latent_centers_raw_ = centers
        self.centers_ = segment_means(x, labels, k)
        return labels

    own_state = ("net_",)

    def _extra_state(self):
        net = self.net_
        arrays = {f"net.{k}": t.detach().cpu().numpy() for k, t in net.state_dict().items()}
        n_feat = 0 if net.enc_feat is None else int(net.enc_feat.in_features)
        return arrays, {"n_items": int(net.enc_items.in_features), "n_feat": n_feat}

    def _restore_extra(self, tensors, meta):
        import torch

        self.net_ = self._build(meta["n_items"], meta["n_feat"])
        self.net_.load_state_dict({k[len("net."):]: torch.from_numpy(np.array(v))
                                   for k, v in tensors.items() if k.startswith("net.")})
        self.net_.eval()

    def _canonicalise(self, raw):
        super()._canonicalise(raw)
        self.latent_centers_ = self.latent_centers_raw_[self.raw_labels_]

    def _assign_raw(self, x, features):
        rows, feats = self._inputs(x, features)
        if rows.shape[1] != self.net_.enc_items.in_features:
            raise SegmentationError(
                f"VAESegmenter.assign: item rows have {rows.shape[1]} items, "
                f"the fit had {self.net_.enc_items.in_features}"
            )
        latent = self._encode(rows, feats)
        return self.raw_labels_[nearest_center(latent, self.latent_centers_)]
