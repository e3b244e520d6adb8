"""The report's accuracy section: the overall table, per-segment NDCG with CIs, comparisons, adaptation."""

from __future__ import annotations

from html import escape
from typing import Any

from . import plots
from ._html import _f, _figure, _swatch, _table
from .collect import METRIC


def _accuracy(p: dict[str, Any]) -> str:
    overall = p.get("overall") or []
    if not overall:
        return (
            '<section id="accuracy"><h2>Accuracy</h2><p class="note">Nothing was evaluated '
            "(run with no held-out split).</p></section>"
        )
    nbs = p["ndcg_by_segment"]
    fig = _figure(
        "ndcg",
        lambda: plots.ndcg_bars_svg(nbs["rows"], nbs["metric"]),
        f"Test {escape(nbs['metric'])} per segment for each system; whiskers are 95% percentile-"
        f"bootstrap CIs of the mean over the segment's users ({nbs['n_boot']} resamples).",
        "per-segment NDCG@10 bars with confidence intervals",
    )
    comps = _comparisons(p.get("comparisons") or {}) + _adaptation(p.get("adaptation") or [])
    return (
        f'<section id="accuracy"><h2>Accuracy (test, full ranking)</h2>{_overall(overall)}'
        f"{_single_tier_note(p)}{fig}"
        f"<h3>{escape(nbs['metric'])} per segment, 95% CI</h3>{_by_segment(nbs)}{comps}</section>"
    )


def _single_tier_note(p: dict[str, Any]) -> str:
    """Say so when the routed system sends every segment to one tier: its rows then repeat that tier's."""
    routing = (p.get("routing") or {}).get("routing") or {}
    tiers = set(routing.values())
    if len(routing) < 1 or len(tiers) != 1:
        return ""
    tier = escape(str(next(iter(tiers))))
    return (f'<p class="note" id="single-tier">The routing sent every segment to the <b>{tier}</b> tier, so '
            f"<b>segmented</b> serves exactly what that tier serves: its rows here and below repeat that "
            "system's numbers; it is not a second result.</p>")


def _overall(overall: list[dict[str, Any]]) -> str:
    """The overall table, best system first and marked."""
    cols = [
        c
        for c in ("ndcg@10", "recall@10", "hit_rate@10", "mrr@10", "ndcg@20", "recall@20", "coverage@10")
        if c in overall[0]
    ]
    ordered = sorted(overall, key=lambda r: -(r.get(METRIC) or 0))
    best = ordered[0]["system"]
    rows = [[escape(r["system"]), *[_f(r.get(c)) for c in cols], _f(r.get("fit_s"), 2)] for r in ordered]
    return _table(
        ["system", *cols, "fit s"],
        rows,
        table_id="overall",
        numeric=set(range(1, len(cols) + 2)),
        classes=["best" if r["system"] == best else "" for r in ordered],
    )


def _by_segment(nbs: dict[str, Any]) -> str:
    """Per-segment NDCG@10 with its CI for every system."""
    systems = list(dict.fromkeys(r["system"] for r in nbs["rows"]))
    groups = sorted({r["group"] for r in nbs["rows"] if r["group"] != "all"})
    cell = {(r["system"], r["group"]): r for r in nbs["rows"]}

    def ci(r: dict[str, Any] | None) -> str:
        if r is None:
            return "–"
        if r.get("lo") is None:
            return _f(r.get("mean"))
        return f"{_f(r['mean'])} <span class=muted>[{_f(r['lo'])}, {_f(r['hi'])}]</span>"

    rows = [[escape(n), *[ci(cell.get((n, g))) for g in ["all", *groups]]] for n in systems]
    users = next((r for r in nbs["rows"] if r["group"] == "all"), {}).get("users")
    seg_users = {r["group"]: r["users"] for r in nbs["rows"]}
    heads = [f"overall ({_f(users)})", *[f"{_swatch(g)}segment {g} ({_f(seg_users.get(g))})" for g in groups]]
    numeric = set(range(1, len(groups) + 2))
    return _table(["system", *heads], rows, table_id="ndcg-by-segment", numeric=numeric)


def _comparisons(comparisons: dict[str, list[dict[str, Any]]]) -> str:
    """The paired-bootstrap difference tables, CIs above zero green and below red."""
    comps = ""
    for name, recs in comparisons.items():
        crow = []
        for r in recs:
            lo, hi = r.get("lo"), r.get("hi")
            sign = "pos" if lo is not None and lo > 0 else "neg" if hi is not None and hi < 0 else ""
            crow.append(
                [
                    escape(str(r.get("group", r.get("index", "")))),
                    _f(r.get("users")),
                    _f(r.get("mean_a")),
                    _f(r.get("mean_b")),
                    f'<span class="{sign}">{_f(r.get("diff"))}</span>',
                    f"[{_f(lo)}, {_f(hi)}]",
                ]
            )
        a, _, b = name.partition(" - ")
        comps += f"<h3>{escape(name)}</h3>" + _table(
            ["group", "users", escape(a), escape(b), "difference", "95% CI"], crow, numeric={1, 2, 3, 4, 5}
        )
    if comps:
        comps = (
            '<h3>Paired differences</h3><p class="note">Paired bootstrap over users; green: the CI is '
            "above zero, red: below.</p>" + comps
        )
    return comps


def _adaptation(adapt: list[dict[str, Any]]) -> str:
    """Each segment adapter's validation NDCG against the shared model's (empty without adapters)."""
    if not adapt:
        return ""
    arow = [
        [
            f"{_swatch(r['segment'])}segment {r['segment']}",
            _f(r.get("users")),
            _f(r.get("valid_ndcg_global")),
            _f(r.get("valid_ndcg_adapted")),
            _f(r.get("best_epoch")),
            "yes" if r.get("adapted") else "no: θ_shared kept",
        ]
        for r in adapt
    ]
    return (
        "<h3>Segment adapters on validation</h3><p class=\"note\">Each segment's θ_k is trained on "
        "the inner train part and kept only if an epoch beats the shared model's validation "
        "NDCG@10 (epoch 0 = no adapter).</p>"
        + _table(
            ["segment", "users", "valid NDCG@10 θ_shared", "valid NDCG@10 adapted", "epochs", "adapted"],
            arow,
            table_id="adaptation",
            numeric={1, 2, 3, 4},
        )
    )
