"""What serves each segment and what that is worth, in plain lines (the run's closing lines and the report).

:func:`routing_lines` says per segment which tier or blend serves it, its
inner-validation NDCG@10 against the best single system's, the honest
(cross-fitted) gain with its 95% CI, and the cost; :func:`verdict` is the one
line for the whole run: "served: …, +x NDCG@10 [CI] over the best single system
on validation, at y% of the Transformer's FLOPs". Tier names are shown as the
run's system names (``global`` is ``transformer``; a blend ``global+ease`` is
``transformer+ease``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["routing_lines", "segment_rows", "verdict"]


def _names(result: Any) -> dict[str, str]:
    """Composite tier -> the run's system name (the same fitted object), else the tier name."""
    tiers = getattr(result.composite, "tiers_", None) or {}
    out = {}
    for tier, model in tiers.items():
        out[tier] = next((n for n, m in result.systems.items() if m is model and n != "segmented"), tier)
    return out


def display(result: Any, tier: str | None) -> str:
    """A tier (or a blend of two) by the run's system names."""
    if not tier:
        return "-"
    names = _names(result)
    return "+".join(names.get(part, part) for part in tier.split("+"))


def _flops(table, tier: str, segments: list[int] | None = None) -> float:
    """User-weighted mean FLOPs per request of one tier (over some segments) in the validation table."""
    rows = table[table["tier"] == tier]
    if segments is not None:
        rows = rows[rows["segment"].isin(segments)]
    w = rows["users"].to_numpy(np.float64)
    f = rows["flops"].to_numpy(np.float64)
    ok = np.isfinite(f)
    return float((f[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() and w[ok].sum() > 0 else float("nan")


def _served_flops(table, served: dict[int, str]) -> float:
    picked = table[[served.get(int(s)) == t for s, t in zip(table["segment"], table["tier"], strict=True)]]
    w, f = picked["users"].to_numpy(np.float64), picked["flops"].to_numpy(np.float64)
    ok = np.isfinite(f)
    return float((f[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() and w[ok].sum() > 0 else float("nan")


def _reference_tier(result: Any) -> str | None:
    """The Transformer's tier (``global`` when it is the Transformer), for "y% of its FLOPs"."""
    tiers = getattr(result.composite, "tiers_", None) or {}
    model = result.systems.get("transformer")
    return next((t for t, m in tiers.items() if m is model), None) if model is not None else None


def _mflops(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x / 1e6:.3g} MFLOPs"


def _percent(x: float) -> str:
    """A share in percent, two significant digits below 10% (a small model costs ~1%), else whole."""
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def segment_rows(result: Any) -> list[dict[str, Any]]:
    """Per segment: served tier (system names), α, inner-valid NDCG@10 vs the best single's, gain, FLOPs."""
    composite = result.composite
    sel = getattr(composite, "selection_", None)
    table = getattr(composite, "validation_", None)
    if not sel or table is None or not sel.get("segments"):
        return []
    best = sel["best_single"]
    rows = []
    for row in sel["segments"]:
        s = int(row["segment"])
        rows.append({**row, "served_name": display(result, row["served"]),
                     "best_single": display(result, best), "flops": _flops(table, row["served"], [s]),
                     "best_flops": _flops(table, best, [s])})
    return rows


def verdict(result: Any) -> str | None:
    """One line for the whole run: what is served, its honest gain over the best single system, its cost."""
    composite = result.composite
    sel = getattr(composite, "selection_", None)
    table = getattr(composite, "validation_", None)
    if not sel or table is None:
        return None
    served = result.best_system()
    best = display(result, sel["best_single"])
    lo, hi = sel.get("honest_ci") or (0.0, 0.0)
    gain = f"{sel['honest_gain']:+.4f} NDCG@10 [{lo:+.4f}, {hi:+.4f}]"
    ref = _reference_tier(result)
    if served == "segmented":
        routing = getattr(result.systems.get("segmented"), "routing_", {}) or {}
        parts = sorted({display(result, t) for t in routing.values()})
        cost = _served_flops(table, {int(k): v for k, v in routing.items()})
        what = f"segmented ({', '.join(parts)})"
    else:
        tier = next((t for t, n in _names(result).items() if n == served), sel["best_single"])
        cost = _flops(table, tier)
        what = served
    # the cost always: as a share of the Transformer's where the run fitted one, else absolute
    share = f", at {_mflops(cost)}/request (no Transformer in this run to compare with)"
    if ref is not None:
        ref_flops = _flops(table, ref)
        if np.isfinite(ref_flops) and ref_flops > 0 and np.isfinite(cost):
            share = (f", at {_percent(100 * cost / ref_flops)}% of the Transformer's FLOPs "
                     f"({_mflops(cost)} vs {_mflops(ref_flops)} a request)")
    if served == "segmented":
        return (f"served: {what}, {gain} over the best single system ({best}) on inner validation "
                f"(cross-fitted){share}")
    return (f"served: {what}, the best single system on inner validation; per-segment routing and blends "
            f"would add {gain} (cross-fitted), not enough to leave it{share}")


def routing_lines(result: Any) -> list[str]:
    """The closing lines of ``segrec run``: per segment what serves it and why, then the verdict."""
    rows = segment_rows(result)
    line = verdict(result)
    if not rows or line is None:
        return []
    sel = result.composite.selection_
    m = sel.get("m")
    out = ["", "== routing on inner validation (NDCG@10; honest = cross-fitted over validation users) =="]
    for r in rows:
        alpha = f" (α={r['alpha']:.2f})" if r.get("alpha") is not None else ""
        out.append(f"segment {r['segment']} ({r['users']} valid users): {r['served_name']}{alpha}  "
                   f"valid {r['valid_ndcg']:.4f} vs {r['best_single']} {r['valid_ndcg_best_single']:.4f}, "
                   f"honest gain {r['honest_gain']:+.4f} [{r['honest_lo']:+.4f}, {r['honest_hi']:+.4f}], "
                   f"{_mflops(r['flops'])}/request ({r['best_single']} {_mflops(r['best_flops'])})")
    out.append(f"shrinkage toward the global choice: m = {m} validation users (chosen by cross-fitting)")
    valid = result.validation()
    if valid:
        out.append("inner-valid NDCG@10: " + ", ".join(
            f"{n} {v:.4f}{' (cross-fitted)' if n == 'segmented' else ''}"
            for n, v in sorted(valid.items(), key=lambda kv: -kv[1])))
    if result.reports:
        out.append(_test_line(result))
    out.append(line)
    return out


def _test_line(result: Any) -> str:
    """Served vs the validation-best single system on test (reported only), and the test winner."""
    from ..evaluate import bootstrap_diff

    served = result.best_system()
    sel = result.composite.selection_
    best = next((n for t, n in _names(result).items() if t == sel["best_single"]), None)
    score = result.reports[served].overall["ndcg@10"]
    text = f"test (reported, never used to choose): served {served} {score:.4f}"
    if best and best in result.reports and best != served:
        ci = bootstrap_diff(result.reports[served], result.reports[best],
                            n_boot=result.config.evaluate.n_boot, seed=result.config.seed).iloc[0]
        text += f", {best} {ci['mean_b']:.4f}: {ci['diff']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"
    winner = result.test_winner()
    return text + f"; test winner {winner} {result.reports[winner].overall['ndcg@10']:.4f}"
