"""Choosing each segment's tier or blend on inner validation, and what that choice is honestly worth.

The input is one number per (validation user, option): the user's inner-validation
NDCG@10 under that option, where an option is a fitted tier on its own or a blend
of a large and a small tier at one α of a grid (:mod:`segrec.route.blend`).

**The rule** for a set of validation users V, with prior strength ``m``::

    value_s(o) = w_s · mean over V_s of o  +  (1 − w_s) · mean over V of o,   w_s = n_s / (n_s + m)
    choice_s   = argmax_o value_s(o)          (ties: the earlier option; singles come first)

Each option's value in segment ``s`` is shrunk toward its value over all users by
the segment's number of validation users ``n_s`` (an empirical-Bayes posterior mean
with ``m`` pseudo-users of prior): a small segment borrows the global winner, a big
one keeps its own. As every α of a blend is one option, a segment's α is the
argmax of its shrunk NDCG-vs-α curve: the global α with few users, its own with
many. ``m = 0`` routes every segment on its own data, ``m = ∞`` serves one option
everywhere (one system, or one blend, for all).

**Choosing m, and the gates.** ``m`` is chosen by repeated 2-fold cross-fitting
over users (choose on one half, score on the other). With that ``m``, the same
cross-fitting gives each user an out-of-half value of the routed choice and of
"the best single system" (also chosen on the other half); a segment leaves the
best single system only where its cross-fitted gain is above ``min_gain`` by ``z``
standard errors (a lucky half-sample must not move a small segment).

**The honest estimate.** Choosing among ~10 tiers and ~10 α per segment on the same
users overfits (the winner's curse), so the in-sample NDCG of the chosen routing
is optimistic. The whole procedure above (m, gates, choices) is therefore run
again inside an outer repeated 2-fold cross-fit: chosen on one half of the users,
scored on the other. That per-user value is the routed system's honest
inner-validation NDCG@10, compared — paired, with a bootstrap CI — with the best
single system's under the same cross-fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["ALPHAS", "M_GRID", "Option", "Selection", "paired_ci", "select", "shrunk_values"]

#: the α grid of a blend's large part; 0 and 1 are the two tiers alone (single options)
ALPHAS = np.round(np.linspace(0.0, 1.0, 11), 2)
#: candidate prior strengths m (pseudo-users) of the shrinkage, from none to one option everywhere
M_GRID = (0.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, np.inf)


@dataclass(frozen=True)
class Option:
    """One thing a segment can be served by.

    Attributes:
        tier: The tier that serves it: a member, or a blend tier's name.
        single: A fitted system on its own (a candidate for "the best single system").
        pair: ``(large, small)`` member names of a blend; None for a single tier.
        alpha: The large part's weight of a blend; None for a single tier.
    """

    tier: str
    single: bool = True
    pair: tuple[str, str] | None = None
    alpha: float | None = None

    @property
    def label(self) -> str:
        """``ease``, or ``global+ease (α=0.3)``."""
        return self.tier if self.alpha is None else f"{self.tier} (α={self.alpha:.2f})"


@dataclass
class Selection:
    """The outcome of :func:`select`.

    Attributes:
        options: The options, in column order of the values.
        segments: The segment labels, in the order of the per-segment arrays.
        served: segment label -> option index that serves it (gates applied).
        chosen: segment label -> option index the rule picked before the gates.
        gates: segment label -> whether it left the best single system.
        best_single: Option index of the best single system on all validation users.
        m: The chosen prior strength; ``m_scores``: cross-fitted NDCG@10 per candidate m.
        users: Validation users per segment.
        valid: Per segment: in-sample inner-valid NDCG@10 of the served option and of the best single.
        honest: Per-user outer cross-fitted NDCG@10 of the routed procedure; ``honest_single``:
            of the best single system under the same cross-fit (users in ``user_segments`` order).
        user_segments: Segment label of each validation user.
        gain, ci: Mean of ``honest − honest_single`` and its paired bootstrap 95% CI; ``se``: its
            standard error; ``z``: the standard errors a gain must clear (the gates' rule).
    """

    options: list[Option]
    segments: list[int]
    served: dict[int, int]
    chosen: dict[int, int]
    gates: dict[int, bool]
    best_single: int
    m: float
    m_scores: dict[float, float]
    users: dict[int, int]
    valid: dict[int, tuple[float, float]]
    honest: np.ndarray
    honest_single: np.ndarray
    user_segments: np.ndarray
    gain: float
    ci: tuple[float, float]
    se: float = 0.0
    z: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pays(self) -> bool:
        """Whether routing beats the best single system honestly: the gain clears ``z`` standard errors."""
        return self.gain > 0 and self.gain > self.z * self.se

    def segment_gain(self, segment: int) -> tuple[float, float, float]:
        """Honest (cross-fitted) gain over the best single system in one segment, with its 95% CI."""
        d = (self.honest - self.honest_single)[self.user_segments == segment]
        lo, hi = paired_ci(d, seed=int(segment) + 1)
        return float(d.mean()) if len(d) else 0.0, lo, hi

    def table(self) -> pd.DataFrame:
        """Per segment: what serves it, its inner-valid NDCG@10 against the best single's, the honest gain."""
        rows = []
        best = self.options[self.best_single]
        for s in self.segments:
            o = self.options[self.served[s]]
            gain, lo, hi = self.segment_gain(s)
            rows.append({"segment": s, "users": self.users[s], "served": o.tier, "alpha": o.alpha,
                         "valid ndcg@10": self.valid[s][0], f"valid {best.tier}": self.valid[s][1],
                         "honest gain": gain, "lo": lo, "hi": hi, "left best single": self.gates[s]})
        return pd.DataFrame(rows).set_index("segment")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (saved with the composite, shown by the report)."""
        best = self.options[self.best_single]
        rows = []
        for s in self.segments:
            o = self.options[self.served[s]]
            gain, lo, hi = self.segment_gain(s)
            rows.append({"segment": int(s), "users": int(self.users[s]), "served": o.tier, "alpha": o.alpha,
                         "pair": list(o.pair) if o.pair else None,
                         "chosen": self.options[self.chosen[s]].label,
                         "left_best_single": bool(self.gates[s]), "valid_ndcg": self.valid[s][0],
                         "valid_ndcg_best_single": self.valid[s][1], "honest_gain": gain,
                         "honest_lo": lo, "honest_hi": hi})
        return {"best_single": best.tier, "m": _json_float(self.m),
                "m_scores": {str(_json_float(k)): v for k, v in self.m_scores.items()},
                "honest_ndcg": float(self.honest.mean()) if len(self.honest) else None,
                "honest_ndcg_best_single": float(self.honest_single.mean()) if len(self.honest) else None,
                "honest_gain": self.gain, "honest_ci": list(self.ci), "honest_se": self.se, "z": self.z,
                "routing_pays": self.pays, "segments": rows, **self.extra}


def _json_float(x: float) -> float | str:
    return "inf" if np.isinf(x) else float(x)


# ---------------------------------------------------------------------- the rule
class _Frame:
    """The values with segment indices 0..K-1 and a segment-sum operator (built once)."""

    def __init__(self, values: np.ndarray, segments: np.ndarray, single: np.ndarray):
        self.values = np.asarray(values, np.float64)
        self.labels, self.seg = np.unique(np.asarray(segments, np.int64), return_inverse=True)
        self.k = len(self.labels)
        self.single = np.flatnonzero(single)
        self.n = len(self.seg)

    def means(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-segment means (K, O), counts (K,) and overall means (O,) over the masked users."""
        rows = np.flatnonzero(mask)
        # a (K x n) 0/1 operator: per-segment sums without copying the masked rows
        onehot = sp.csr_matrix((np.ones(len(rows)), (self.seg[rows], rows)), shape=(self.k, self.n))
        sums = np.asarray(onehot @ self.values)
        n = np.bincount(self.seg[rows], minlength=self.k).astype(np.float64)
        overall = sums.sum(0) / max(len(rows), 1)
        return sums / np.maximum(n, 1.0)[:, None], n, overall

    def choose(self, mask: np.ndarray, m: float) -> tuple[np.ndarray, int]:
        """Option per segment (K,) by the shrunk rule, and the best single option, on the masked users."""
        means, n, overall = self.means(mask)
        w = np.zeros_like(n) if np.isinf(m) else n / np.maximum(n + m, 1e-12)
        value = w[:, None] * means + (1.0 - w)[:, None] * overall[None, :]
        return value.argmax(1), int(self.single[overall[self.single].argmax()])

    def halves(self, mask: np.ndarray, repeats: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``2 x repeats`` choosing halves of the masked users, stratified by segment."""
        rows = np.flatnonzero(mask)
        out = []
        for _ in range(repeats):
            first = np.zeros(self.n, bool)
            for s in range(self.k):
                members = rows[self.seg[rows] == s]
                members = members[rng.permutation(len(members))]
                cut = (len(members) + int(rng.integers(2))) // 2
                first[members[:cut]] = True
            out += [first, mask & ~first]
        return out

    def crossfit(self, halves: list[np.ndarray], mask: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-half values of the rule and of the best single system for the masked users.

        Returns float (n,) arrays (0 outside ``mask``): each masked user's mean, over the
        halves that do not hold them, of the option chosen without them.
        """
        route, single, count = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
        for half in halves:
            choice, best = self.choose(half, m)
            rest = np.flatnonzero(mask & ~half)
            route[rest] += self.values[rest, choice[self.seg[rest]]]
            single[rest] += self.values[rest, best]
            count[rest] += 1
        return route / np.maximum(count, 1), single / np.maximum(count, 1)

    def procedure(self, mask: np.ndarray, m_grid: tuple[float, ...], min_gain: float, z: float,
                  repeats: int, rng: np.random.Generator) -> dict[str, Any]:
        """The whole choice on the masked users: m by cross-fitting, gates, then the rule on all of them."""
        halves = self.halves(mask, repeats, rng)
        scores, fits = {}, {}
        for m in m_grid:  # ascending: a tie keeps the larger m (more shrinkage, fewer distinct choices)
            fits[m] = self.crossfit(halves, mask, m)
            scores[m] = float(fits[m][0][mask].mean()) if mask.any() else 0.0
        best_m = max(scores, key=lambda m: (scores[m], m))
        route, single = fits[best_m]
        d = np.where(mask, route - single, 0.0)
        n = np.bincount(self.seg[mask], minlength=self.k).astype(np.float64)
        gain = np.bincount(self.seg, weights=d, minlength=self.k) / np.maximum(n, 1)
        # a segment leaves the best single system only where its cross-fitted gain clears
        # min_gain by z standard errors: a lucky half-sample must not move a small segment
        square = np.bincount(self.seg, weights=d * d, minlength=self.k) / np.maximum(n, 1)
        se = np.sqrt(np.maximum(square - gain * gain, 0.0) / np.maximum(n - 1, 1))
        choice, best = self.choose(mask, best_m)
        gates = (gain > min_gain + z * se) & (choice != best)
        served = np.where(gates, choice, best)
        return {"served": served, "chosen": choice, "gates": gates, "best": best, "m": best_m,
                "m_scores": scores}


def select(values: np.ndarray, options: list[Option], segments: np.ndarray, *, min_gain: float = 0.0,
           z: float = 1.0, m_grid: tuple[float, ...] = M_GRID, repeats: int = 5, outer_repeats: int = 3,
           seed: int = 0) -> Selection:
    """Route every segment by the rule, with gates, and estimate the routed system honestly.

    Args:
        values: float (n_users, n_options) per-user inner-validation NDCG@10 (no NaN: a
            user an option cannot score carries the value of whoever serves them instead).
        options: One :class:`Option` per column; at least one ``single``.
        segments: Segment label of each validation user.
        min_gain: A segment leaves the best single system only where its cross-fitted gain
            exceeds this (the routing policy's ``min_gain``) ...
        z: ... by this many standard errors of that gain (1: a one-sided 84% bound).
        m_grid: Candidate prior strengths.
        repeats: Random halvings per cross-fit inside the procedure.
        outer_repeats: Random halvings of the outer (honest) cross-fit.
        seed: Seed of the halvings.
    """
    values = np.asarray(values, np.float64)
    if values.shape != (len(segments), len(options)) or not np.isfinite(values).all():
        raise ValueError(f"values must be finite, shaped (users, options) = ({len(segments)}, "
                         f"{len(options)}); got {values.shape}")
    frame = _Frame(values, segments, np.array([o.single for o in options]))
    rng = np.random.default_rng(seed)
    everyone = np.ones(frame.n, bool)
    final = frame.procedure(everyone, m_grid, min_gain, z, repeats, rng)

    # the honest estimate: the whole procedure chosen on one half, scored on the other
    honest, honest_single, count = np.zeros(frame.n), np.zeros(frame.n), np.zeros(frame.n)
    for half in frame.halves(everyone, outer_repeats, rng):
        inner = frame.procedure(half, m_grid, min_gain, z, repeats, rng)
        rest = np.flatnonzero(~half)
        honest[rest] += values[rest, inner["served"][frame.seg[rest]]]
        honest_single[rest] += values[rest, inner["best"]]
        count[rest] += 1
    honest /= np.maximum(count, 1)
    honest_single /= np.maximum(count, 1)

    labels = [int(s) for s in frame.labels]
    means, n, _ = frame.means(everyone)
    best = final["best"]
    d = honest - honest_single
    return Selection(
        options=list(options), segments=labels,
        served={s: int(final["served"][i]) for i, s in enumerate(labels)},
        chosen={s: int(final["chosen"][i]) for i, s in enumerate(labels)},
        gates={s: bool(final["gates"][i]) for i, s in enumerate(labels)},
        best_single=int(best), m=float(final["m"]), m_scores=final["m_scores"],
        users={s: int(n[i]) for i, s in enumerate(labels)},
        valid={s: (float(means[i, final["served"][i]]), float(means[i, best])) for i, s in enumerate(labels)},
        honest=honest, honest_single=honest_single, user_segments=frame.labels[frame.seg],
        gain=float(d.mean()) if len(d) else 0.0, ci=paired_ci(d, seed=seed),
        se=float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0, z=float(z))


def shrunk_values(values: np.ndarray, segments: np.ndarray,
                  m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rule's shrunk value of every option in every segment (all users), and the overall means.

    Returns:
        ``(labels (K,), shrunk values (K, n_options), overall means (n_options,))``.
    """
    frame = _Frame(values, segments, np.ones(np.shape(values)[1], bool))
    means, n, overall = frame.means(np.ones(frame.n, bool))
    w = np.zeros_like(n) if np.isinf(m) else n / np.maximum(n + m, 1e-12)
    return frame.labels, w[:, None] * means + (1.0 - w)[:, None] * overall[None, :], overall


def paired_ci(d: np.ndarray, *, n_boot: int = 2000, seed: int = 0, batch: int = 200) -> tuple[float, float]:
    """Bootstrap 95% CI of the mean of per-user differences, resampling users (in batches: bounded memory)."""
    d = np.asarray(d, np.float64)
    if len(d) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = []
    for lo in range(0, n_boot, batch):
        idx = rng.integers(0, len(d), size=(min(batch, n_boot - lo), len(d)))
        means.append(d[idx].mean(1))
    lo, hi = np.quantile(np.concatenate(means), [0.025, 0.975])
    return float(lo), float(hi)
