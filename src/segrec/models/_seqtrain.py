"""Training loop, loss and batched scoring shared by the global Transformer and its adapters.

Kept apart from the models so that per-segment adapter training (a pure function,
later a Ray task) and the global fit run the very same loop: same batching, same
early stopping, same seeding.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import progress
from ._seqdata import Histories, Windows, iter_batches, padded_tail, to_batch

__all__ = ["LoopSettings", "LoopResult", "run_loop", "score_rows", "seeded"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs from a model config.

    ``batch_tokens`` (padded positions per step) batches by a token budget; a set
    ``batch_size`` (windows per step) overrides it with the old fixed batching.
    ``validate_every``: validate after every k-th epoch (and the last); patience is
    counted in epochs either way.
    ``lr_scale``: (parameter-name prefix, learning-rate multiplier) pairs.
    """

    epochs: int
    learning_rate: float
    weight_decay: float
    patience: int
    target_window: int
    batch_tokens: int | None = 4096
    batch_size: int | None = None
    clip_grad: float = 1.0
    ema_decay: float = 0.0
    validate_every: int = 1
    bf16: bool | None = None
    lr_scale: tuple[tuple[str, float], ...] = ()
    device: str = "cpu"
    show_progress: bool = False
    label: str = "transformer"


@dataclass
class LoopResult:
    """Outcome of one run of :func:`run_loop`.

    Attributes:
        best_epoch: Epoch (1-based) with the best validation score; ``epochs`` when not validating.
        best_score: That score (NaN without validation).
        curve: One dict per epoch: ``epoch``, ``loss``, ``seconds`` and ``ndcg@10`` when validating.
        best_params: CPU copies of the trainable parameters at the best epoch.
    """

    best_epoch: int
    best_score: float
    curve: list[dict[str, float]] = field(default_factory=list)
    best_params: dict[str, torch.Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def seeded(seed: int, n_threads: int | None = None) -> Iterator[np.random.Generator]:
    """Seed torch for a fit without leaking into the caller's global RNG or thread setting.

    ``fork_rng`` restores the global torch RNG afterwards, so fitting a model does not
    change the random stream of the code around it (and vice versa).
    """
    old_threads = torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if n_threads:
            torch.set_num_threads(int(n_threads))
        try:
            yield np.random.default_rng(seed)
        finally:
            torch.set_num_threads(old_threads)


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast where asked (default: on CUDA only, the H100/H200 fast path), else a no-op."""
    if bf16 is None:
        bf16 = device.type == "cuda"
    if bf16 and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_loop(
    params: dict[str, torch.Tensor],
    batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    set_train: Callable[[bool], None],
    hist: Histories,
    windows: Windows,
    settings: LoopSettings,
    rng: np.random.Generator,
    pad_id: int,
    validate: Callable[[], float] | None = None,
    side: Callable[[np.ndarray], Any] | None = None,
) -> LoopResult:
    """Train ``params`` with AdamW on ``windows``; early-stop on ``validate()`` if given.

    Training starts from the current values of ``params`` (a fresh init, or the
    weights a warm-started refit continues from).

    Args:
        params: Trainable tensors by name (leaf tensors with ``requires_grad``).
        batch_loss: ``(inputs (b, t), targets (b, t, w)) -> scalar loss``.
        set_train: Switches the modules involved to train (True) / eval (False) mode.
        hist: Flat histories the windows point into.
        windows: Training windows.
        settings: Epochs, batching, optimiser settings, patience, device.
        rng: Shuffles batches; seeded by the caller.
        pad_id: Padding item id.
        validate: Returns validation NDCG@10 for the current parameters.
        side: Optional per-batch input besides the items, from the batch's window indices
            (the joint model's segment weight per window); then the loss is called as
            ``batch_loss(inputs, targets, side(idx))``.

    Returns:
        LoopResult; ``best_params`` holds the parameters of the best epoch.
    """
    device = torch.device(settings.device)
    opt, plist = _optimizer(params, settings, device)
    result = LoopResult(best_epoch=settings.epochs if validate is None else 0, best_score=float("nan"))
    average = _WeightAverage(plist, settings.ema_decay)
    if validate is not None:
        set_train(False)
        result.best_score = validate()  # epoch 0: the starting point counts (adapters start at the global)
        result.best_params = _snapshot(params)
        result.curve.append({"epoch": 0, "loss": float("nan"), "ndcg@10": result.best_score, "seconds": 0.0})
    bar = _progress_bar(settings)
    every = max(1, settings.validate_every)
    progress.report({"label": settings.label, "epoch": 0, "epochs": settings.epochs})
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        set_train(True)
        loss = _train_epoch(opt, plist, average, batch_loss, hist, windows, settings, rng, pad_id, side,
                            device)
        row = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - start}
        if not np.isfinite(row["loss"]):
            from ..errors import ModelFitError

            raise ModelFitError(f"{settings.label}: loss became {row['loss']} at epoch {epoch}; "
                                "lower learning_rate or check the data")
        stop = False
        if validate is not None and (epoch % every == 0 or epoch == settings.epochs):
            _validate_epoch(validate, set_train, average, params, result, epoch, row)
            stop = epoch - result.best_epoch >= settings.patience
        result.curve.append(row)
        _report_epoch(settings, row, bar)
        if stop:
            break
    if bar is not None:
        bar.close()
    if validate is None:
        average.swap()  # without validation the final weights are the average
        result.best_params = _snapshot(params)
    set_train(False)
    return result


def _optimizer(params: dict[str, torch.Tensor], settings: LoopSettings,
               device: torch.device) -> tuple[torch.optim.AdamW, list[torch.Tensor]]:
    """AdamW with one group per (learning-rate multiplier, decayed or not); and the parameter list."""
    names = list(params)
    plist = [params[k] for k in names]
    def scale(name: str) -> float:
        return next((f for prefix, f in settings.lr_scale if name.startswith(prefix)), 1.0)

    groups = []
    for f in sorted({scale(k) for k in names}):
        for wd, pick in ((settings.weight_decay, lambda p: p.dim() >= 2), (0.0, lambda p: p.dim() < 2)):
            ps = [params[k] for k in names if scale(k) == f and pick(params[k])]
            groups.append({"params": ps, "weight_decay": wd, "lr": settings.learning_rate * f})
    # fused: one kernel per step for all parameters instead of a Python loop over them
    fused = device.type in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in plist)
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.learning_rate,
                            **({"fused": True} if fused else {"foreach": True}))
    return opt, plist


class _WeightAverage:
    """Exponential moving average of the weights (Polyak averaging); a no-op at decay 0.

    Validation, the best-epoch snapshot and the final model use the average, which is
    smoother than the last SGD iterate on small, noisy data. Swapped in place so
    ``validate`` sees it.
    """

    def __init__(self, plist: list[torch.Tensor], decay: float):
        self.decay = decay
        self.ema = [p.detach().clone() for p in plist] if decay else None
        self.live = [p.detach() for p in plist]
        self.n_steps = 0

    def update(self) -> None:
        """Fold the weights after one optimiser step into the average."""
        self.n_steps += 1
        if self.ema is not None:
            # warm-up (as tf.train.ExponentialMovingAverage): early averages forget the init
            beta = min(self.decay, (1 + self.n_steps) / (10 + self.n_steps))
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, self.live, 1.0 - beta)

    def swap(self) -> None:
        """Exchange the live weights and the average (twice restores them)."""
        if self.ema is None:
            return
        with torch.no_grad():
            for p, e in zip(self.live, self.ema, strict=True):
                tmp = p.clone()
                p.copy_(e)
                e.copy_(tmp)


def _snapshot(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in params.items()}


def _train_epoch(opt, plist, average: _WeightAverage, batch_loss, hist: Histories, windows: Windows,
                 settings: LoopSettings, rng: np.random.Generator, pad_id: int, side,
                 device: torch.device) -> float:
    """One pass over the shuffled windows; the mean loss per input position."""
    # a tensor, not float(loss) per step: no host sync inside the epoch
    total, n = torch.zeros((), device=device), 0
    for idx in iter_batches(windows, rng, tokens=settings.batch_tokens, size=settings.batch_size):
        inputs, targets = to_batch(hist, windows, idx, settings.target_window, pad_id, device)
        with autocast(device, settings.bf16):
            loss = batch_loss(inputs, targets) if side is None else batch_loss(inputs, targets, side(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad:
            torch.nn.utils.clip_grad_norm_(plist, settings.clip_grad, foreach=True)
        opt.step()
        average.update()
        positions = int(windows.length[idx].sum())  # every input position has a target
        total += loss.detach().float() * positions
        n += positions
    return float(total) / max(n, 1)


def _validate_epoch(validate: Callable[[], float], set_train: Callable[[bool], None],
                    average: _WeightAverage, params: dict[str, torch.Tensor], result: LoopResult,
                    epoch: int, row: dict[str, float]) -> None:
    """Score the averaged weights into ``row``; keep them in ``result`` when they are the best."""
    t = time.perf_counter()
    set_train(False)
    average.swap()
    row["ndcg@10"] = score = validate()
    if score > result.best_score:
        result.best_score, result.best_epoch = score, epoch
        result.best_params = _snapshot(params)
    average.swap()
    row["valid_seconds"] = time.perf_counter() - t


def _progress_bar(settings: LoopSettings):
    if not settings.show_progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=settings.epochs, desc=settings.label, leave=True)  # kept: a record of the fit


def _report_epoch(settings: LoopSettings, row: dict[str, float], bar) -> None:
    progress.report({"label": settings.label, "epochs": settings.epochs, **row})
    log.info("%s epoch %d: loss %.4f%s (%.1fs)", settings.label, row["epoch"], row["loss"],
             f", valid NDCG@10 {row['ndcg@10']:.4f}" if "ndcg@10" in row else "", row["seconds"])
    if bar is not None:
        bar.update(1)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k in ("loss", "ndcg@10")})


@torch.no_grad()
def score_rows(
    forward: Callable[[torch.Tensor], torch.Tensor],
    hist: Histories,
    rows: np.ndarray,
    pad_id: int,
    n_items: int,
    *,
    device: str = "cpu",
    batch_size: int = 256,
    side: Callable[[np.ndarray], Any] | None = None,
) -> np.ndarray:
    """Scores (len(rows), n_items) from the last position of each history; NaN for empty ones.

    Args:
        forward: ``(inputs (b, t), last (b,)) -> scores (b, n_items)``, where ``last``
            is each row's last real position.
        hist: Histories (already cut to the model's max_len).
        rows: Which histories to score.
        pad_id: Padding id.
        n_items: Catalogue size.
        device: Torch device.
        batch_size: Users per forward pass; users are sorted by length so padding stays small.
        side: Optional per-user input besides the items, from positions into ``rows``; then
            ``forward(inputs, last, side(positions))`` (the joint model's segment weights).
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), n_items), dtype=np.float32)
    lengths = hist.lengths[rows]
    order = np.argsort(lengths, kind="stable")
    dev = torch.device(device)
    for s in range(0, len(rows), batch_size):
        pick = order[s : s + batch_size]
        inputs, last = padded_tail(hist, rows[pick], pad_id)
        with autocast(dev):
            args = (torch.from_numpy(inputs).to(dev), torch.from_numpy(last).to(dev))
            scores = forward(*args) if side is None else forward(*args, side(pick))
        out[pick] = scores.float().cpu().numpy()
    out[lengths == 0] = np.nan
    return out
