"""The report's figures: matplotlib (extra ``report``) drawn to standalone SVG strings.

Each function takes a piece of the report payload and returns one SVG document.
The page embeds them as ``data:`` images, so no figure can reach the network and
the ids inside one SVG cannot clash with another's. Text stays text
(``svg.fonttype = "none"``) and dense scatter layers are rasterised, which keeps
a 3000-point map under ~150 KB.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import require

__all__ = ["curves_svg", "frontier_svg", "ndcg_bars_svg", "routing_svg", "segment_color", "user_map_svg"]

#: colour-blind-friendly qualitative palette (Okabe-Ito), then matplotlib's tab10
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
)
METRIC = "ndcg@10"


def segment_color(segment: int) -> str:
    """The colour of a segment, the same in every figure and table of the report."""
    return PALETTE[int(segment) % len(PALETTE)] if int(segment) >= 0 else "#999999"


#: one colour and marker per system, the same in every figure, and none of them a segment colour
#: (the first eight of PALETTE): a system is never mistaken for a segment or for another system
SYSTEM_STYLE = {
    "popularity": ("#7f7f7f", "v"),
    "itemknn": ("#bcbd22", "P"),
    "ease": ("#8c564b", "s"),
    "als": ("#17becf", "D"),
    "multvae": ("#9467bd", "X"),
    "transformer": ("#1a237e", "o"),
    "adapted_transformer": ("#d62728", "^"),
    "local_ease": ("#2ca02c", "p"),
    "segmented": ("#b8860b", "*"),
}
#: for systems not listed above (custom tiers), in order of first use
_SPARE_STYLES = (("#ff7f0e", "h"), ("#1f77b4", "d"), ("#e377c2", "<"), ("#4b0082", ">"), ("#556b2f", "8"))


def _system_style(names: list[str]) -> dict[str, tuple[str, str]]:
    spare = iter(_SPARE_STYLES * (1 + len(names) // len(_SPARE_STYLES)))
    return {n: SYSTEM_STYLE.get(n) or next(spare) for n in sorted(names)}


def _system_colors(names: list[str]) -> dict[str, str]:
    return {n: style[0] for n, style in _system_style(names).items()}


@contextmanager
def _figure(name: str, width: float, height: float, ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    """A fresh figure with the report's style; closed afterwards (no pyplot state leaks)."""
    require("matplotlib", "report")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rc = {
        "svg.fonttype": "none",
        "svg.hashsalt": name,
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 10,
        "font.family": "sans-serif",
    }
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
        yield fig, axes


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    # metadata Date=None: the same payload gives byte-identical SVG (reproducible artifacts)
    fig.savefig(buf, format="svg", dpi=110, metadata={"Date": None})
    svg = buf.getvalue()
    # Drop the DOCTYPE (a DTD URL) and the RDF metadata block (creator URLs): nothing in a
    # report may name a remote resource, even one a browser would never fetch.
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg, count=1)
    return re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)


def user_map_svg(m: dict[str, Any], names: dict[int, str] | None = None) -> str:
    """Scatter of the users' 2-D map, coloured by segment."""
    names = names or {}
    x, y, seg = np.asarray(m["x"]), np.asarray(m["y"]), np.asarray(m["segment"])
    with _figure("map", 6.4, 4.6) as (fig, (ax,)):
        for s in np.unique(seg):
            pts = seg == s
            ax.scatter(
                x[pts],
                y[pts],
                s=7,
                alpha=0.6,
                color=segment_color(int(s)),
                linewidths=0,
                label=f"{names.get(int(s), f'segment {s}')} ({int(pts.sum())})",
                rasterized=True,
            )
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
        ax.set_xticks([])
        ax.set_yticks([])
        shown = (
            f"{m['shown']} of {m['n_users']} users" if m["shown"] < m["n_users"] else f"{m['n_users']} users"
        )
        ax.set_title(f"Users by segment ({shown})")
        ax.legend(loc="best", fontsize=8, markerscale=2, frameon=False)
        return _svg(fig)


def ndcg_bars_svg(rows: list[dict[str, Any]], metric: str = METRIC) -> str:
    """Grouped bars: metric per segment (and overall) for each system, with 95% CI whiskers."""
    systems = list(dict.fromkeys(r["system"] for r in rows))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    groups = ["all"] + sorted(g for g in groups if g != "all") if "all" in groups else sorted(groups)
    colors = _system_colors(systems)
    width = 0.8 / max(len(systems), 1)
    with _figure("ndcg", max(6.4, 1.1 * len(groups) + 2.5), 3.8) as (fig, (ax,)):
        for i, name in enumerate(systems):
            by = {r["group"]: r for r in rows if r["system"] == name}
            xs = np.arange(len(groups)) + (i - (len(systems) - 1) / 2) * width
            means = np.array([_num(by.get(g, {}).get("mean")) for g in groups])
            lo = np.array([_num(by.get(g, {}).get("lo")) for g in groups])
            hi = np.array([_num(by.get(g, {}).get("hi")) for g in groups])
            ax.bar(xs, np.nan_to_num(means), width * 0.92, color=colors[name], label=name)
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(means)
            if ok.any():
                err = np.vstack([means[ok] - lo[ok], hi[ok] - means[ok]])
                ax.errorbar(
                    xs[ok],
                    means[ok],
                    yerr=np.clip(err, 0, None),
                    fmt="none",
                    ecolor="#333333",
                    elinewidth=0.8,
                    capsize=2,
                )
        ax.set_xticks(np.arange(len(groups)), ["overall" if g == "all" else f"segment {g}" for g in groups])
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{metric} per segment (95% bootstrap CI over users)")
        ax.legend(
            fontsize=8, frameon=False, ncols=min(len(systems), 4), loc="upper left", bbox_to_anchor=(0, -0.12)
        )
        return _svg(fig)


def _num(v: Any) -> float:
    return float(v) if v is not None else np.nan


def _logx(ax: Any) -> None:
    """Log x axis with labels on decades only (minor labels overlap as text-mode SVG)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and accuracy (higher), cheapest first."""
    front: list[tuple[float, float]] = []
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or a > front[-1][1]:
            front.append((c, a))
    return front


def frontier_svg(costs: list[dict[str, Any]], metric: str = METRIC) -> str:
    """Cost-accuracy frontier: test metric against FLOPs per request (when known) and fit time."""
    rows = [r for r in costs if r.get(metric) is not None]
    has_flops = any(r.get("flops_per_request") for r in rows)
    panels = [("flops_per_request", "analytic FLOPs per request (log)")] if has_flops else []
    panels.append(("fit_seconds", "fit time, seconds (log)"))
    styles = _system_style([r["system"] for r in rows])
    # One legend (colour + marker per system) instead of text beside each point: systems of
    # similar cost and accuracy put their labels on top of each other and next to the wrong
    # point (issue 15); a legend cannot be misread that way.
    with _figure("frontier", 3.9 * len(panels) + 1.9, 3.6, ncols=len(panels)) as (fig, axes):
        for ax, (key, label) in zip(axes, panels, strict=True):
            pts = [
                (float(r[key]), float(r[metric]), r["system"])
                for r in rows
                if r.get(key) is not None and float(r[key]) > 0
            ]
            for c, a, name in pts:
                color, marker = styles[name]
                ax.scatter([c], [a], s=95 if marker == "*" else 52, color=color, marker=marker, zorder=3,
                           edgecolors="white", linewidths=0.6, label=name)
            front = _pareto([(c, a) for c, a, _ in pts])
            if len(front) > 1:
                ax.step(
                    [c for c, _ in front],
                    [a for _, a in front],
                    where="post",
                    color="#888888",
                    linestyle="--",
                    linewidth=1,
                    zorder=2,
                    label="Pareto frontier",
                )
            if pts:
                _logx(ax)
                ax.margins(x=0.08, y=0.08)
            ax.set_xlabel(label)
            ax.set_ylabel(f"test {metric}")
        axes[0].set_title("Cost vs accuracy per system")
        handles, labels = axes[-1].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False,
                       markerscale=1.0)
        return _svg(fig)


def routing_svg(routing: dict[str, Any], metric: str = METRIC) -> str:
    """Validation metric per (segment, tier), the routed tier outlined; routing options beside it."""
    import pandas as pd

    table = pd.DataFrame(routing["validation"])
    piv = table.pivot_table(index="segment", columns="tier", values=metric, aggfunc="first")
    options = [o for o in routing.get("options", []) if o.get("flops")]
    ncols = 2 if options else 1
    width = 4.4 * ncols + (2.0 if options else 0.6)  # room for the options legend
    with _figure("routing", width, max(2.6, 0.45 * len(piv) + 1.6), ncols=ncols) as (fig, axes):
        ax = axes[0]
        vals = piv.to_numpy(dtype=np.float64)
        im = ax.imshow(np.ma.masked_invalid(vals), cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(piv.columns)), [str(c) for c in piv.columns])
        ax.set_yticks(range(len(piv.index)), [f"segment {s}" for s in piv.index])
        chosen = {int(k): v for k, v in routing["routing"].items()}
        finite = vals[np.isfinite(vals)]
        mid = float(finite.mean()) if finite.size else 0.0
        for i, s in enumerate(piv.index):
            for j, t in enumerate(piv.columns):
                v = vals[i, j]
                ax.text(
                    j,
                    i,
                    "n/a" if not np.isfinite(v) else f"{v:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if np.isfinite(v) and v > mid else "#222222",
                )
                if chosen.get(int(s)) == t:
                    ax.add_patch(_rect(j, i))
        ax.set_title(f"validation {metric} per tier (routed tier outlined)")
        fig.colorbar(im, ax=ax, shrink=0.8)
        if options:
            ax2 = axes[1]
            markers = iter("osD^vP<>ph8" * 4)
            for o in options:
                chosen_opt = "(chosen)" in o["name"]
                ax2.scatter(
                    [o["flops"]],
                    [o[metric]],
                    s=90 if chosen_opt else 38,
                    color="#b8860b" if chosen_opt else "#555555",
                    marker="*" if chosen_opt else next(markers),
                    zorder=3,
                    label=o["name"],
                )
            # a legend, not labels beside the points (they overprinted where options cost the same)
            ax2.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            ax2.margins(x=0.1, y=0.1)
            _logx(ax2)
            ax2.set_xlabel("mean FLOPs per request (log)")
            ax2.set_ylabel(f"validation {metric}")
            ax2.set_title("routing options on validation")
        return _svg(fig)


def _rect(j: int, i: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#D55E00", linewidth=2.2)


def curves_svg(curves: dict[str, list[dict[str, Any]]]) -> str:
    """Training curves: loss and validation NDCG@10 per epoch, one line per model."""
    colors = _system_colors(list(curves))
    with _figure("curves", 8.4, 3.2, ncols=2) as (fig, (ax_loss, ax_ndcg)):
        for name, curve in curves.items():
            ep = [c.get("epoch") for c in curve]
            for ax, key in ((ax_loss, "loss"), (ax_ndcg, METRIC)):
                pts = [
                    (e, c.get(key))
                    for e, c in zip(ep, curve, strict=True)
                    if e is not None and c.get(key) is not None and np.isfinite(c.get(key))
                ]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, color=colors[name], label=name)
        ax_loss.set_title("training loss")
        ax_ndcg.set_title(f"inner-validation {METRIC}")
        from matplotlib.ticker import MaxNLocator

        for ax in (ax_loss, ax_ndcg):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if curves:
            ax_ndcg.legend(fontsize=8, frameon=False)
        return _svg(fig)
