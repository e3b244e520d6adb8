"""The composite's routing stage: every tier and blend measured on inner validation, then chosen.

1. Every candidate tier as fitted on the inner train part only
   (:class:`~segrec.route._fitting.InnerStage`), scored per user on the inner
   valid part; a user a tier cannot
   score carries the value of the tier the fallback chain would serve them with.
2. Blend pairs: per segment and over all users, the best large (neural) tier with
   the best small one; each pair scored per user at every interior α of
   :data:`~segrec.route.selection.ALPHAS` (:func:`~segrec.route._measure.measure`).
3. :func:`~segrec.route.selection.select` chooses each segment's option (shrunk
   toward the global choice, gated by the cross-fitted gain over the best single
   system) and estimates the routed system honestly.
4. The per-(segment, tier) table every policy reads — singles and blends, with
   FLOPs (a blend costs both its parts) and ``chosen`` marking the selection — and
   the blend tiers, bound to the composite's fitted tiers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..models.base import Recommender
from ..models.context import FitContext
from ..models.tags import get_tags
from ..types import Interactions
from ._fitting import InnerStage, tier_costs
from ._measure import measure
from .blend import BlendRecommender, blend_flops
from .selection import ALPHAS, Option, Selection, select, shrunk_values

__all__ = ["RoutingOutcome", "blend_name", "blend_pairs", "route_on_validation"]

#: most blend pairs scored (each needs its two tiers scored again over the validation users)
MAX_PAIRS = 4


@dataclass
class RoutingOutcome:
    """What the routing stage decided, and the numbers it decided on.

    Attributes:
        routing: segment -> serving tier (a member or a blend tier).
        default_tier: The best single system on inner validation (users of no segment).
        blends: blend tier name -> :class:`BlendRecommender` bound to the fitted members.
        table: Rows ``segment, tier, users, ndcg@10, flops, alpha, chosen``.
        selection: The :class:`Selection` (per-user honest values included).
        systems: tier -> its inner-valid NDCG@10 over all validation users (fallback-filled).
        timings: Wall seconds of the parts: ``inner_fits_s``, ``scoring_s``, ``selection_s``.
    """

    routing: dict[int, str]
    default_tier: str
    blends: dict[str, BlendRecommender]
    table: pd.DataFrame
    selection: Selection
    systems: dict[str, float]
    timings: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """JSON-able: the selection's summary, each tier's inner-valid NDCG@10, the blends' α."""
        return {**self.selection.to_dict(), "systems": dict(self.systems), "default_tier": self.default_tier,
                "blends": {n: b.spec() for n, b in self.blends.items()}}


def blend_name(pair: tuple[str, str]) -> str:
    """The tier name of a blend: ``global+ease``."""
    return f"{pair[0]}+{pair[1]}"


def large_tiers(members: Mapping[str, Recommender], names: list[str], configured: tuple[str, ...] | None
                ) -> list[str]:
    """The large side of blends: the configured tiers, else those that read item sequences."""
    if configured is not None:
        return [n for n in names if n in configured]
    return [n for n in names if get_tags(members[n]).history_input == "sequence"]


def blend_pairs(values: np.ndarray, names: list[str], segments: np.ndarray, large: list[str],
                small: list[str]) -> list[tuple[str, str]]:
    """``(best large, best small)`` per segment and over all users, by mean inner-valid NDCG@10.

    At most :data:`MAX_PAIRS`, the pair over all users first, then by segment size.
    """
    if not large or not small:
        return []
    col = {n: j for j, n in enumerate(names)}

    def best(rows: np.ndarray, side: list[str]) -> str:
        means = values[rows][:, [col[n] for n in side]].mean(0)
        return side[int(np.argmax(means))]

    everyone = np.ones(len(segments), bool)
    pairs = [(best(everyone, large), best(everyone, small))]
    labels, counts = np.unique(segments, return_counts=True)
    for s in labels[np.argsort(-counts, kind="stable")]:
        pair = (best(segments == s, large), best(segments == s, small))
        if pair not in pairs:
            pairs.append(pair)
    return pairs[:MAX_PAIRS]


def _fill(values: np.ndarray, names: list[str], chain: tuple[str, ...]) -> np.ndarray:
    """NaN (cannot score) -> the value of the first chain tier that can score the user (else 0)."""
    out = values.copy()
    col = {n: j for j, n in enumerate(names)}
    backup = np.full(len(values), np.nan)
    for tier in chain:
        if tier in col:
            backup = np.where(np.isnan(backup), values[:, col[tier]], backup)
    backup = np.nan_to_num(backup, nan=0.0)
    nan = np.isnan(out)
    out[nan] = np.broadcast_to(backup[:, None], out.shape)[nan]
    return out


def route_on_validation(members: Mapping[str, Recommender], names: list[str],
                        inner: tuple[Interactions, Interactions], segments: np.ndarray, context: FitContext,
                        *, chain: tuple[str, ...], large: tuple[str, ...] | None, min_gain: float,
                        gate_z: float = 1.0, blends: bool = True, seed: int = 0) -> RoutingOutcome:
    """Measure every candidate (and blends) on inner validation and choose each segment's tier.

    Args:
        members: name -> member fitted on the full fit data.
        names: The candidates, in fit order.
        inner: ``(inner train, inner valid)``.
        segments: Segment per dense user.
        context: The run context (executor, progress).
        chain: The fallback chain's tiers (who serves a user a tier cannot score).
        large: Tiers on the large side of blends (None: the sequence models).
        min_gain: Cross-fitted gain a segment needs to leave the best single system ...
        gate_z: ... by this many standard errors.
        blends: Also consider blends.
        seed: Seed of the cross-fitting halvings.
    """
    inner_train, inner_valid = inner
    clock = time.perf_counter()
    context.say(f"routing: {len(names)} tiers measured on the inner validation part")
    stage = InnerStage(members, inner_train, segments, context)
    alphas = ALPHAS[1:-1]  # the endpoints are the two tiers alone
    big = large_tiers(members, names, large) if blends else []
    small = [n for n in names if n not in big]

    def choose_pairs(users: np.ndarray, singles: np.ndarray) -> list[tuple[str, str]]:
        return blend_pairs(_fill(singles, names, chain), names, segments[users], big, small)

    measured = measure(stage, names, inner_train, inner_valid, choose_pairs, alphas)
    elapsed = time.perf_counter() - clock
    timings = {"inner_fits_s": stage.fit_seconds, "scoring_s": elapsed - stage.fit_seconds}
    clock = time.perf_counter()
    users, raw, pairs = measured.users, measured.singles, measured.pairs
    seg = segments[users]
    values = _fill(raw, names, chain)
    options = [Option(n) for n in names]
    columns = [values]
    if pairs:
        context.say(f"blends on inner validation: {', '.join(blend_name(p) for p in pairs)}")
    for p, pair in enumerate(pairs):
        fill = values[:, names.index(pair[0])]
        for a, alpha in enumerate(alphas):
            col = measured.blends[:, p, a]
            columns.append(np.where(np.isnan(col), fill, col)[:, None])
            options.append(Option(blend_name(pair), single=False, pair=pair, alpha=float(alpha)))
    matrix = np.hstack(columns)
    selection = select(matrix, options, seg, min_gain=min_gain, z=gate_z, seed=seed)
    timings["selection_s"] = time.perf_counter() - clock
    default = options[selection.best_single].tier

    labels, shrunk, overall = shrunk_values(matrix, seg, selection.m)
    bound: dict[str, BlendRecommender] = {}
    alpha_of: dict[str, dict[int, float]] = {}
    for pair in pairs:
        cols = [j for j, o in enumerate(options) if o.pair == pair]
        name = blend_name(pair)
        per_seg = {int(s): options[cols[int(np.argmax(shrunk[i, cols]))]].alpha for i, s in enumerate(labels)}
        for s, j in selection.served.items():  # the served α where the segment is routed to this blend
            if options[j].pair == pair:
                per_seg[s] = options[j].alpha
        alpha_of[name] = per_seg
        default_alpha = options[cols[int(np.argmax(overall[cols]))]].alpha
        bound[name] = BlendRecommender.bound(pair, members[pair[0]], members[pair[1]], alpha=default_alpha,
                                             alphas=per_seg, segments=segments)
    routing = {s: options[j].tier for s, j in selection.served.items()}

    table = _table(members, names, raw, matrix, options, seg, users, segments, inner_train, pairs, alpha_of,
                   routing)
    systems = {n: float(values[:, j].mean()) if len(users) else float("nan") for j, n in enumerate(names)}
    return RoutingOutcome(routing, default, bound, table, selection, systems, timings)


def _table(members, names, raw, matrix, options, seg, users, segments, inner_train, pairs, alpha_of,
           routing) -> pd.DataFrame:
    """Per (segment, tier): users, inner-valid NDCG@10, FLOPs, α (blends) and whether it was chosen."""
    lengths = inner_train.user_counts().astype(np.float64)
    # the cost of serving a tier is the full-data member's (the one that serves)
    costs = tier_costs({n: members[n] for n in names}, segments, lengths, users)
    costs = costs.set_index(["segment", "tier"])["flops"]
    n_items = inner_train.n_items
    rows = []
    for s in np.unique(seg):
        m = seg == s
        for j, name in enumerate(names):
            col = raw[m, j]
            ok = np.isfinite(col)
            rows.append({"segment": int(s), "tier": name, "users": int(m.sum()),
                         "ndcg@10": float(col[ok].mean()) if ok.any() else np.nan,
                         "flops": float(costs.get((int(s), name), np.nan)), "alpha": np.nan})
        for pair in pairs:
            name = blend_name(pair)
            alpha = alpha_of[name][int(s)]
            j = next(i for i, o in enumerate(options) if o.pair == pair and o.alpha == alpha)
            flops = blend_flops(costs.get((int(s), pair[0]), np.nan), costs.get((int(s), pair[1]), np.nan),
                                n_items)
            rows.append({"segment": int(s), "tier": name, "users": int(m.sum()),
                         "ndcg@10": float(matrix[m, j].mean()), "flops": float(flops), "alpha": alpha})
    table = pd.DataFrame(rows, columns=["segment", "tier", "users", "ndcg@10", "flops", "alpha"])
    table["chosen"] = [routing.get(int(s)) == t for s, t in zip(table["segment"], table["tier"], strict=True)]
    return table
