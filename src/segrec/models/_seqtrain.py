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

import numpy as np
import torch
import torch.nn.functional as F

from .. import progress
from ._seqdata import Histories, Windows, iter_batches, padded_tail, to_batch

__all__ = ["LoopSettings", "LoopResult", "mask_seen", "multi_target_ce", "run_loop", "score_rows", "seeded"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs from a model config."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    target_window: int
    clip_grad: float = 1.0
    ema_decay: float = 0.0
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


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the H100/H200 fast path); a no-op context on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def multi_target_ce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ref_logits: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> torch.Tensor:
    """Full-softmax cross-entropy against each position's next ``w`` items (uniform weights).

    With w = 1 this is SASRec+'s loss. With w > 1 every position also learns the few
    items that follow the next one: the protocol scores a set of future items, not
    only the next. Optionally adds ``kl_weight * KL(p || p_ref)`` (adapter consistency).

    Args:
        logits: (n, n_items) scores at the n positions that have at least one target.
        targets: (n, w) item ids, -1 where absent.
        ref_logits: Optional (n, n_items) reference (global model) scores.
        kl_weight: Weight of the KL term.

    Returns:
        Scalar mean loss over positions.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (n, n_items)
    mask = targets >= 0
    # where(), not a product: an absent target's dummy index may hold -inf (masked item)
    picked = torch.where(mask, logp.gather(1, targets.clamp(min=0)), 0.0)  # (n, w)
    loss = -(picked.sum(1) / mask.sum(1).clamp(min=1)).mean()
    if ref_logits is not None and kl_weight > 0:
        ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
        # KL(p || p_ref). Items masked out of both (-inf) must add 0 *and* a 0 gradient:
        # zero them before the arithmetic (a where() after it still back-propagates NaN).
        live = torch.isfinite(logp) & torch.isfinite(ref_logp)
        lp, rp = logp.masked_fill(~live, 0.0), ref_logp.masked_fill(~live, 0.0)
        kl = (lp.exp() * (lp - rp) * live).sum(1).mean()
        loss = loss + kl_weight * kl
    return loss


def mask_seen(logits: torch.Tensor, inputs: torch.Tensor, keep: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
    """Set the scores of items already in the window (up to each position) to -inf.

    At test time a user's fit-data items are excluded from the ranking, so they need
    not compete in the training softmax either; a target that repeats an earlier
    item stays scorable.

    Args:
        logits: (n, n_items) scores at the kept positions.
        inputs: (b, t) padded window inputs (pad id = n_items).
        keep: (b, t) bool, the positions ``logits`` rows belong to.
        targets: (n, w) target ids at the kept positions, -1 = none.

    Returns:
        Masked copy of ``logits``.
    """
    b, t = inputs.shape
    n_items = logits.shape[1]
    onehot = torch.zeros(b, t, n_items + 1, dtype=torch.int32, device=inputs.device)
    onehot.scatter_(2, inputs[..., None], 1)
    seen = onehot.cumsum(1)[keep][:, :n_items] > 0  # (n, n_items): seen at or before each position
    is_target = torch.zeros_like(seen)
    rows, cols = torch.nonzero(targets >= 0, as_tuple=True)
    is_target[rows, targets[rows, cols]] = True
    return logits.masked_fill(seen & ~is_target, float("-inf"))


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
) -> LoopResult:
    """Train ``params`` with AdamW on ``windows``; early-stop on ``validate()`` if given.

    Args:
        params: Trainable tensors by name (leaf tensors with ``requires_grad``).
        batch_loss: ``(inputs (b, t), targets (b, t, w)) -> scalar loss``.
        set_train: Switches the modules involved to train (True) / eval (False) mode.
        hist: Flat histories the windows point into.
        windows: Training windows.
        settings: Epochs, batch size, optimiser settings, patience, device.
        rng: Shuffles batches; seeded by the caller.
        pad_id: Padding item id.
        validate: Returns validation NDCG@10 for the current parameters.

    Returns:
        LoopResult; ``best_params`` holds the parameters of the best epoch.
    """
    device = torch.device(settings.device)
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.learning_rate)
    result = LoopResult(best_epoch=settings.epochs if validate is None else 0, best_score=float("nan"))
    # Exponential moving average of the weights (Polyak averaging): validation, the
    # best-epoch snapshot and the final model use the average, which is smoother than
    # the last SGD iterate on small, noisy data. Swapped in place so `validate` sees it.
    ema = {k: v.detach().clone() for k, v in params.items()} if settings.ema_decay else None
    n_steps = 0

    def swap_ema() -> None:
        if ema is None:
            return
        with torch.no_grad():
            for k, p in params.items():
                live = p.detach().clone()
                p.copy_(ema[k])
                ema[k].copy_(live)

    if validate is not None:
        set_train(False)
        result.best_score = validate()  # epoch 0: the starting point counts (adapters start at the global)
        result.best_params = {k: v.detach().to("cpu", copy=True) for k, v in params.items()}
        result.curve.append({"epoch": 0, "loss": float("nan"), "ndcg@10": result.best_score, "seconds": 0.0})
    bar = None
    if settings.show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.epochs, desc=settings.label, leave=True)  # kept: a record of the fit
    bad = 0
    progress.report({"label": settings.label, "epoch": 0, "epochs": settings.epochs})
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        set_train(True)
        total, n = 0.0, 0
        for idx in iter_batches(windows, settings.batch_size, rng):
            inputs, targets = to_batch(hist, windows, idx, settings.target_window, pad_id, device)
            with autocast(device):
                loss = batch_loss(inputs, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.clip_grad:
                torch.nn.utils.clip_grad_norm_(list(params.values()), settings.clip_grad)
            opt.step()
            if ema is not None:
                n_steps += 1
                # warm-up (as tf.train.ExponentialMovingAverage): early averages forget the init
                beta = min(settings.ema_decay, (1 + n_steps) / (10 + n_steps))
                with torch.no_grad():
                    for k, p in params.items():
                        ema[k].lerp_(p.detach(), 1.0 - beta)
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        row = {"epoch": epoch, "loss": total / max(n, 1), "seconds": time.perf_counter() - start}
        if not np.isfinite(row["loss"]):
            from ..errors import ModelFitError

            raise ModelFitError(f"{settings.label}: loss became {row['loss']} at epoch {epoch}; "
                                "lower learning_rate or check the data")
        if validate is not None:
            set_train(False)
            swap_ema()
            row["ndcg@10"] = score = validate()
            if score > result.best_score:
                result.best_score, result.best_epoch, bad = score, epoch, 0
                result.best_params = {k: v.detach().to("cpu", copy=True) for k, v in params.items()}
            else:
                bad += 1
            swap_ema()
        result.curve.append(row)
        progress.report({"label": settings.label, "epochs": settings.epochs, **row})
        log.info("%s epoch %d: loss %.4f%s (%.1fs)", settings.label, epoch, row["loss"],
                 f", valid NDCG@10 {row['ndcg@10']:.4f}" if "ndcg@10" in row else "", row["seconds"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: round(v, 4) for k, v in row.items() if k in ("loss", "ndcg@10")})
        if validate is not None and bad >= settings.patience:
            break
    if bar is not None:
        bar.close()
    if validate is None:
        swap_ema()  # without validation the final weights are the average
        result.best_params = {k: v.detach().to("cpu", copy=True) for k, v in params.items()}
    set_train(False)
    return result


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
            scores = forward(torch.from_numpy(inputs).to(dev), torch.from_numpy(last).to(dev))
        out[pick] = scores.float().cpu().numpy()
    out[lengths == 0] = np.nan
    return out
