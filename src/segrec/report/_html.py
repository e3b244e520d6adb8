"""The report page's building blocks: its stylesheet, number formats, tables, figures, swatches."""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Callable
from html import escape
from typing import Any

from ..errors import MissingDependencyError
from . import plots

__all__ = ["CSS", "NAV_MARKER"]

log = logging.getLogger(__name__)

#: replaced by the HTTP dashboard with its navigation bar
NAV_MARKER = "<!--segrec:nav-->"

CSS = """
:root { --fg:#1d2430; --muted:#5b6577; --line:#dde2ea; --bg:#f6f7f9; --card:#fff; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header.top { background:#17324d; color:#fff; padding:18px 28px; }
header.top h1 { margin:0 0 4px; font-size:22px; }
header.top .sub { color:#c8d6e5; font-size:13px; }
nav.toc { padding:8px 28px; background:#fff; border-bottom:1px solid var(--line); position:sticky; top:0;
          z-index:2; }
nav.toc a { margin-right:14px; color:var(--accent); text-decoration:none; font-size:13px; }
nav.app { background:#0d2236; padding:8px 28px; }
nav.app a { color:#fff; margin-right:18px; text-decoration:none; font-weight:600; }
nav.app a.active { text-decoration:underline; }
main { padding:8px 28px 40px; max-width:1280px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 18px;
          margin:16px 0; }
section h2 { margin:0 0 8px; font-size:17px; }
p.note, .muted { color:var(--muted); font-size:12.5px; }
table.data { border-collapse:collapse; margin:8px 0; font-size:13px; }
table.data th, table.data td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:left;
                               vertical-align:top; }
table.data th { background:#eef1f5; font-weight:600; }
table.data td.num, table.data th.num { text-align:right; font-variant-numeric:tabular-nums;
                                       white-space:nowrap; }
table.data tr.best td { background:#eaf4ea; }
table.data td:first-child { white-space:nowrap; }
.swatch { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:6px;
          vertical-align:-1px; }
.bar { display:inline-block; height:8px; background:var(--accent); border-radius:2px; margin-left:6px;
       vertical-align:0; opacity:.55; }
figure { margin:10px 0; }
figure img.plot { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px;
                  background:#fff; }
figcaption { color:var(--muted); font-size:12.5px; margin-top:4px; }
dl.kv { display:grid; grid-template-columns:max-content 1fr; gap:3px 18px; margin:4px 0; }
dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; }
.tier { display:inline-block; padding:1px 7px; border-radius:10px; background:#e7eef7; font-size:12px; }
.pos { color:#0a7a32; } .neg { color:#b3261e; }
"""


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return escape(str(v))


def _big(v: Any) -> str:
    """Large counts readably: 1.2e9 -> 1.2 G."""
    if v is None:
        return "–"
    v = float(v)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g}"


def _table(
    headers: list[str],
    rows: list[list[str]],
    *,
    table_id: str | None = None,
    numeric: set[int] | None = None,
    classes: list[str] | None = None,
) -> str:
    numeric = numeric or set()
    tid = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{h}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        cells = "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<table class="data"{tid}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _figure(name: str, draw: Callable[[], str], caption: str, alt: str) -> str:
    """One embedded figure, or a note saying why it is missing (the page never fails on a plot)."""
    try:
        svg = draw()
    except MissingDependencyError as exc:
        return f'<p class="note" data-missing-plot="{name}">Plot not drawn: {escape(str(exc))}</p>'
    except Exception as exc:
        log.warning("report: figure %s failed: %s", name, exc)
        return f'<p class="note" data-missing-plot="{name}">Plot not drawn: {escape(str(exc))}</p>'
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (
        f'<figure><img class="plot" data-plot="{name}" alt="{escape(alt)}" '
        f'src="data:image/svg+xml;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def _swatch(segment: int) -> str:
    return f'<span class="swatch" style="background:{plots.segment_color(segment)}"></span>'


# ------------------------------------------------------------------ sections
