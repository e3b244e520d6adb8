"""The report page: one HTML document with inline CSS and figures, and nothing to fetch.

:func:`render_report` turns a payload (see :mod:`segrec.report.collect`) into a
string. Every value from the data (titles, ids, category names) is HTML-escaped.
The page has no script and no external URL; figures are ``data:`` SVG images and
the favicon is an empty ``data:`` URL, so a browser opening the file offline makes
no request at all. ``<!--segrec:nav-->`` after ``<body>`` is where the HTTP
dashboard inserts its navigation bar.
"""

from __future__ import annotations

import logging
from html import escape
from typing import Any

from ..errors import SegrecError
from . import plots
from ._accuracy import _accuracy
from ._html import CSS, NAV_MARKER, _big, _f, _figure, _swatch, _table
from .collect import METRIC, PAYLOAD_VERSION

__all__ = ["NAV_MARKER", "render_report"]

log = logging.getLogger(__name__)

def _summary(p: dict[str, Any]) -> str:
    d, meta = p["dataset"], p["meta"]
    items = [
        ("source", _f(d.get("source"))),
        ("users", _f(d.get("users"))),
        ("items", _f(d.get("items"))),
        ("interactions", _f(d.get("interactions"))),
    ]
    if d.get("density") is not None:
        items.append(("density", f"{100 * d['density']:.3f}%"))
    if d.get("median_per_user") is not None:
        items.append(
            (
                "median interactions",
                f"{_f(d['median_per_user'], 0)} per user, {_f(d.get('median_per_item'), 0)} per item",
            )
        )
    if d.get("time_range"):
        items.append(("time range", " to ".join(escape(str(t)) for t in d["time_range"])))
    if d.get("split"):
        items.append(("split (interactions)", ", ".join(f"{k} {v:,}" for k, v in d["split"].items())))
    if d.get("item_columns"):
        items.append(("item table", escape(", ".join(d["item_columns"]))))
    if d.get("user_columns"):
        items.append(("user table", escape(", ".join(d["user_columns"]))))
    items.append(("fingerprint", _f(d.get("fingerprint"))))
    items.append(("systems", escape(", ".join(meta.get("systems") or []))))
    if meta.get("best_system"):
        items.append(("served (best on inner validation)", f"<b>{escape(meta['best_system'])}</b>"))
    if meta.get("test_winner"):
        items.append(("best on test " + METRIC, escape(meta["test_winner"])))
    for name, why in (meta.get("skipped") or {}).items():
        items.append((f"skipped {escape(name)}", escape(str(why))))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    note = (
        '<p class="note">Reduced report rebuilt from results.json (the run predates report.json): '
        "no confidence intervals, profiles or user map.</p>"
        if meta.get("reduced")
        else ""
    )
    return f'<section id="summary"><h2>Dataset</h2><dl class="kv">{dl}</dl>{note}</section>'


def _segments(p: dict[str, Any]) -> str:
    seg = p["segmentation"]
    quality = seg.get("metrics") or {}
    q = ", ".join(f"{escape(k)} {_f(v, 3)}" for k, v in quality.items())
    head = f"<p>{_f(seg.get('method'))}, K = {_f(seg.get('n_segments'))}{'; quality: ' + q if q else ''}.</p>"
    max_size = max([s["size"] for s in p["segments"]] or [1])
    rows = []
    for s in p["segments"]:
        cats = ", ".join(f"{escape(str(c[0]))} {c[2]:.1f}×" for c in s.get("top_categories") or [])
        items = "; ".join(escape(str(i[1])) for i in s.get("top_items") or [])
        act = s.get("activity") or {}
        bar = f'<span class="bar" style="width:{60 * s["size"] / max_size:.0f}px"></span>'
        rows.append(
            [
                f"{_swatch(s['segment'])}{escape(str(s.get('name', s['segment'])))}",
                f"{s['size']:,}{bar}",
                f"{100 * s['share']:.1f}%",
                _f(act.get("median"), 0),
                cats or "–",
                items or "–",
                f'<span class="tier">{escape(s["tier"])}</span>' if s.get("tier") else "–",
            ]
        )
    table = _table(
        [
            "segment",
            "users",
            "share",
            "median interactions",
            "over-represented categories (lift)",
            "characteristic items",
            "routed tier",
        ],
        rows,
        table_id="segments",
        numeric={1, 2, 3},
    )
    desc = "".join(f"<li>{escape(s['description'])}</li>" for s in p["segments"] if s.get("description"))
    desc = f'<ul class="muted">{desc}</ul>' if desc else ""
    fig = ""
    if p.get("map"):
        m = p["map"]
        names = {s["segment"]: s.get("name", f"segment {s['segment']}") for s in p["segments"]}
        fig = _figure(
            "map",
            lambda: plots.user_map_svg(m, names),
            f"Each dot is a user, coloured by segment. Layout: {escape(m['method'])}.",
            "2-D map of users coloured by segment",
        )
    return f'<section id="segments-section"><h2>Segments</h2>{head}{table}{desc}{fig}</section>'


def _terciles(p: dict[str, Any]) -> str:
    t = p.get("terciles") or {}
    if not t.get("rows"):
        return ""
    tiers = [x for x in ("light", "medium", "heavy") if any(x in r for r in t["rows"])]
    users = t.get("users") or {}
    cuts = t.get("cuts")
    heads = [f"{x} ({_f(users.get(x))} users)" if users else x for x in tiers]
    rows = [[escape(r["system"]), *[_f(r.get(x)) for x in tiers]] for r in t["rows"]]
    note = (
        f'<p class="note">Users bucketed by train interactions at the 1/3 and 2/3 quantiles '
        f"(cuts {_f(cuts[0], 1)} and {_f(cuts[1], 1)}).</p>"
        if cuts
        else ""
    )
    return (
        f'<section id="terciles"><h2>{METRIC} by activity tercile</h2>'
        f"{_table(['system', *heads], rows, table_id='terciles-table', numeric={1, 2, 3})}{note}</section>"
    )


def _frontier(p: dict[str, Any]) -> str:
    costs = p.get("costs") or []
    if not costs:
        return ""
    has_flops = any(r.get("flops_per_request") for r in costs)
    fig = _figure(
        "frontier",
        lambda: plots.frontier_svg(costs),
        "Each point is a system: test accuracy against analytic FLOPs per request (to score and "
        "rank the catalogue for one user) and against fit time. The dashed line joins the systems "
        "nothing else beats on both axes."
        if has_flops
        else "Cost figures were not recorded for this run: accuracy against fit time.",
        "cost-accuracy frontier",
    )
    rows = [
        [
            escape(r["system"]),
            _f(r.get(METRIC)),
            _big(r.get("flops_per_request")),
            _big(r.get("n_parameters")),
            _big(r.get("memory_bytes")) + ("B" if r.get("memory_bytes") else ""),
            _f(r.get("fit_seconds"), 2),
        ]
        for r in sorted(costs, key=lambda r: r.get("flops_per_request") or 0)
    ]
    table = _table(
        ["system", f"test {METRIC}", "FLOPs / request", "parameters", "memory", "fit s"],
        rows,
        table_id="costs",
        numeric={1, 2, 3, 4, 5},
    )
    return f'<section id="frontier"><h2>Cost vs accuracy</h2>{fig}{table}</section>'


def _routing(p: dict[str, Any]) -> str:
    r = p.get("routing")
    if not r:
        return (
            '<section id="routing"><h2>Routing</h2><p class="note">No routed (segmented) system in this '
            "run.</p></section>"
        )
    val = {(int(v["segment"]), v["tier"]): v for v in r.get("validation") or []}
    tiers = sorted({t for _, t in val})
    rows = []
    for s, tier in sorted(((int(k), v) for k, v in r["routing"].items())):
        cells = []
        for t in tiers:
            v = val.get((s, t), {})
            txt = _f(v.get(METRIC))
            cells.append(f"<b>{txt}</b>" if t == tier else txt)
        rows.append([f"{_swatch(s)}segment {s}", f'<span class="tier">{escape(tier)}</span>', *cells])
    heads = ["segment", "routed tier", *[f"valid {METRIC}: {escape(t)}" for t in tiers]]
    table = _table(heads, rows, table_id="routing-table", numeric=set(range(2, len(tiers) + 2)))
    info = (
        f"<p>Policy <b>{_f(r.get('policy'))}</b>; default tier {_f(r.get('default_tier'))}; "
        f"users a tier cannot score fall back to {escape(' → '.join(r.get('fallback') or [])) or '–'}.</p>"
    )
    fig = ""
    if r.get("validation"):
        fig = _figure(
            "routing",
            lambda: plots.routing_svg(r),
            "Left: validation accuracy of every tier on every segment (fitted on train only); the "
            "routing picks the outlined cell. Right: the mean validation accuracy and FLOPs of "
            "sending every segment to one tier, against the chosen routing.",
            "routing decision per segment",
        )
    return (f'<section id="routing"><h2>Routing decision per segment</h2>{_served(r)}{info}{table}{fig}'
            "</section>")


def _served(r: dict[str, Any]) -> str:
    """The verdict and, per segment, what serves it against the best single system (issue 14)."""
    rows = r.get("served") or []
    if not rows:
        return ""
    body = []
    for row in rows:
        alpha = "" if row.get("alpha") is None else f" (α={row['alpha']:.2f})"
        gain = f"{row['honest_gain']:+.4f} [{row['honest_lo']:+.4f}, {row['honest_hi']:+.4f}]"
        body.append([f"{_swatch(int(row['segment']))}segment {int(row['segment'])}", _f(row.get("users")),
                     f'<span class="tier">{escape(str(row["served_name"]))}{alpha}</span>',
                     _f(row.get("valid_ndcg")),
                     f"{escape(str(row['best_single']))} {_f(row.get('valid_ndcg_best_single'))}",
                     gain, _f(row.get("flops"), 0)])
    heads = ["segment", "valid users", "served by", f"valid {METRIC}", "best single system",
             "honest gain [95% CI]", "FLOPs / request"]
    verdict = f"<p><b>{escape(str(r.get('verdict') or ''))}</b></p>"
    note = ('<p class="note">Chosen on inner validation (tiers fitted on the inner train part only); '
            "the honest gain is cross-fitted: each segment's choice made on one half of the validation users "
            "and scored on the other, so choosing among many tiers and α does not flatter it.</p>")
    return verdict + _table(heads, body, table_id="served-table", numeric={1, 3, 6}) + note


def _curves(p: dict[str, Any]) -> str:
    curves = p.get("curves") or {}
    if not curves:
        return (
            '<section id="curves"><h2>Training curves</h2><p class="note">No model with a training curve '
            "(Transformer, adapted Transformer) in this run.</p></section>"
        )
    fig = _figure(
        "curves",
        lambda: plots.curves_svg(curves),
        "Per-epoch training loss and inner-validation NDCG@10 of the early-stopping run.",
        "training curves",
    )
    return f'<section id="curves"><h2>Training curves</h2>{fig}</section>'


TOC = (
    ("summary", "Dataset"),
    ("segments-section", "Segments"),
    ("accuracy", "Accuracy"),
    ("terciles", "Activity"),
    ("frontier", "Cost"),
    ("routing", "Routing"),
    ("curves", "Training"),
)


def render_report(payload: dict[str, Any], *, title: str = "segrec report") -> str:
    """The report page for a payload from :func:`~segrec.report.build_report_data`.

    Args:
        payload: The report payload (``report.json``).
        title: Page title.

    Returns:
        A complete HTML document (UTF-8 text), with no external references.

    Raises:
        SegrecError: The payload was written by an incompatible segrec version.
    """
    if payload.get("version") != PAYLOAD_VERSION:
        raise SegrecError(
            f"report payload version {payload.get('version')!r} is not supported "
            f"(expected {PAYLOAD_VERSION}); re-run `segrec run` to rebuild it"
        )
    meta, d = payload["meta"], payload["dataset"]
    sub = (
        f"{escape(str(d.get('source', '')))} · {_f(d.get('users'))} users · {_f(d.get('items'))} items · "
        f"{_f(d.get('interactions'))} interactions · segrec {escape(str(meta.get('segrec_version', '')))} · "
        f"{escape(str(meta.get('created_at') or ''))}"
    )
    toc = "".join(f'<a href="#{i}">{n}</a>' for i, n in TOC)
    body = "".join(
        part(payload) for part in (_summary, _segments, _accuracy, _terciles, _frontier, _routing, _curves)
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="segrec {escape(str(meta.get("segrec_version", "")))}">'
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{CSS}</style></head>'
        f'<body>{NAV_MARKER}<header class="top"><h1>{escape(title)}</h1><div class="sub">{sub}</div>'
        f'</header><nav class="toc">{toc}</nav><main>{body}</main></body></html>\n'
    )
