"""The web dashboard (issue 7): the run's report at ``/`` and a user look-up page at ``/lookup``.

:func:`dashboard_router` returns a FastAPI router that :func:`segrec.serve.create_app`
includes. It reads the artifact being served through a callable, so a reload
(``POST /v1/admin/reload``) switches the dashboard too. Routes:

* ``GET /``: the run's ``report.html`` (the same page ``segrec run`` wrote) with
  a navigation bar; rebuilt from ``report.json``/``results.json`` when the run
  has no page.
* ``GET /lookup``: look up a known user, or type a few item titles or ids for a
  new user, and see the recommendations with titles, segment and tier. Plain
  HTML plus a little vanilla JavaScript calling ``POST /v1/recommend``; both are
  bundled in ``serve/static/`` (no CDN, nothing external).
* ``GET /ui/static/{name}``: those bundled files (a fixed list, no path lookup).
* ``GET /ui/api/examples``, ``GET /ui/api/items?q=``, ``POST /ui/api/resolve``:
  what the page needs besides the public API: example users, item search by
  title or id, and titles -> item ids for a new user.

With an API key configured these routes need the key like every other route,
so a plain browser cannot open them; the dashboard is meant for loopback use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import require

__all__ = ["ResolveRequest", "dashboard_router"]

log = logging.getLogger(__name__)

#: bundled files served under /ui/static/, name -> media type (nothing else is reachable);
#: ``report.css`` is the report page's own style sheet, so both pages look alike
STATIC = {"lookup.js": "text/javascript; charset=utf-8", "lookup.css": "text/css; charset=utf-8",
          "report.css": "text/css; charset=utf-8"}

NAV = ('<nav class="app"><a href="/"{home}>Dashboard</a><a href="/lookup"{lookup}>Look up a user</a>'
       '<a href="/docs">API docs</a></nav>')


def nav_html(active: str) -> str:
    """The navigation bar, with ``active`` (``home`` or ``lookup``) marked."""
    return NAV.format(home=' class="active"' if active == "home" else "",
                      lookup=' class="active"' if active == "lookup" else "")


class ResolveRequest(BaseModel):
    """Body of ``POST /ui/api/resolve``: item titles or ids typed by a person."""

    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(default_factory=list, max_length=100,
                               description="Item ids or (parts of) titles, one per entry.")


class _Catalogue:
    """Item ids, titles and popularity of one served router, for search and resolution."""

    def __init__(self, router: Any):
        self.ids = np.asarray(router.model.item_vocab_.ids).astype(str)
        titles = getattr(router, "titles", None)
        self.has_titles = titles is not None
        # a title missing from the items table arrives as None or NaN: show it as no title
        self.titles = np.array(["" if t is None or (isinstance(t, float) and t != t) else str(t)
                                for t in (titles if self.has_titles else [None] * len(self.ids))], dtype=str)
        self.lower = np.char.lower(self.titles)
        self.lower_ids = np.char.lower(self.ids)
        self.popularity = np.asarray(router.popularity, dtype=np.float64)
        self.by_id = {i: n for n, i in enumerate(self.ids)}
        self.by_title: dict[str, int] = {}
        # the most popular item wins a duplicated title
        for n in np.argsort(-self.popularity, kind="stable"):
            self.by_title.setdefault(str(self.lower[n]), int(n))

    def item(self, n: int) -> dict[str, Any]:
        return {"item_id": str(self.ids[n]), "title": str(self.titles[n]) if self.has_titles else None}

    def search(self, q: str, limit: int) -> list[dict[str, Any]]:
        """Items whose id starts with, or whose title contains, ``q``; most popular first."""
        q = q.strip().lower()
        if not q:
            hits = np.arange(len(self.ids))
        else:
            in_title = np.char.find(self.lower, q) >= 0
            by_id = np.char.startswith(self.lower_ids, q)
            hits = np.flatnonzero(in_title | by_id)
        hits = hits[np.argsort(-self.popularity[hits], kind="stable")][:limit]
        return [self.item(int(n)) for n in hits]

    def resolve(self, query: str) -> dict[str, Any] | None:
        """One typed entry -> an item: exact id, exact title (any case), else the most popular title match."""
        q = query.strip()
        if not q:
            return None
        if q in self.by_id:
            return {**self.item(self.by_id[q]), "match": "id"}
        n = self.by_title.get(q.lower())
        if n is not None:
            return {**self.item(n), "match": "title"}
        found = self.search(q, 1) if self.has_titles else []
        return {**found[0], "match": "partial"} if found else None


def _report_page(path: Path | None, cache: dict[str, Any]) -> str | None:
    """The served run's report page (cached by file and modification time), or None."""
    if path is None:
        return None
    page = path / "report.html"
    key: tuple[Any, ...]
    if page.is_file():
        key = (str(page), page.stat().st_mtime_ns)
        if cache.get("key") != key:
            cache.update(key=key, html=page.read_text(encoding="utf-8"))
        return cache["html"]
    if (path / "report.json").is_file() or (path / "results.json").is_file():
        key = (str(path), "rebuilt")
        if cache.get("key") != key:
            from ..report import load_report_data, render_report

            cache.update(key=key, html=render_report(load_report_data(path)))
        return cache["html"]
    return None


def _no_report_page(served: Any) -> str:
    """A bare page for a server without a saved report (e.g. started from an in-memory router)."""
    from html import escape

    from ..report import NAV_MARKER

    rows = "".join(f"<tr><td>segment {p['segment']}</td><td class=num>{p['users']:,}</td>"
                   f"<td>{escape(str(p['tier']))}</td></tr>" for p in served.profiles)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f'<title>segrec dashboard</title><link rel="stylesheet" href="/ui/static/report.css"></head>'
            f"<body>{NAV_MARKER}<main><section><h2>No report for this artifact</h2><p class=note>The served "
            f"system has no saved run report; run <code>segrec run --out DIR</code> and serve DIR.</p>"
            f'<table class="data" id="segments"><thead><tr><th>segment</th><th class=num>users</th>'
            f"<th>routed tier</th></tr></thead><tbody>{rows}</tbody></table></section></main></body></html>")


def _static_body(name: str) -> bytes:
    """A bundled asset's bytes; ``report.css`` is the report page's own style sheet."""
    if name == "report.css":
        from ..report.page import CSS

        return CSS.encode("utf-8")
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _examples(served: Any, cat: _Catalogue, per_segment: int) -> dict[str, Any]:
    """A few known users per segment (with their routed tier) and the most popular items."""
    router = served.router
    ids = np.asarray(router.model.user_vocab_.ids).astype(str)
    users = []
    segs = np.asarray(router.segments)
    for s in sorted(int(x) for x in np.unique(segs)):
        for u in np.flatnonzero(segs == s)[:per_segment]:
            users.append({"user_id": str(ids[u]), "segment": s if s >= 0 else None,
                          "tier": router.tier_of_segment(s)})
    return {"users": users, "items": cat.search("", 10), "n_users": int(len(ids)),
            "n_items": int(len(cat.ids)), "has_titles": cat.has_titles,
            "system": router.info.get("system"), "policy": router.info.get("policy"),
            "generation": served.generation}


def dashboard_router(current: Callable[[], Any]):
    """The dashboard's routes, to be included by :func:`segrec.serve.create_app`.

    Args:
        current: Returns what is being served now: an object with ``router`` (a
            :class:`~segrec.route.router.Router`), ``path`` (the run directory or
            None) and ``profiles`` (``Router.segment_profiles()``). Called on every
            request, so a reload is picked up at once.

    Returns:
        A ``fastapi.APIRouter``.

    Raises:
        MissingDependencyError: fastapi is not installed (``pip install 'segrec[serve]'``).
    """
    fastapi = require("fastapi", "serve")
    from fastapi.responses import HTMLResponse, Response

    from ..report import NAV_MARKER

    api = fastapi.APIRouter()
    page_cache: dict[str, Any] = {}
    catalogue: dict[str, Any] = {"router": None, "value": None}

    def served_path(served: Any) -> Path | None:
        path = served.path or served.router.info.get("path")
        return Path(path) if path else None

    def items_of(served: Any) -> _Catalogue:
        if catalogue["router"] is not served.router:  # rebuilt once per (re)loaded artifact
            catalogue.update(router=served.router, value=_Catalogue(served.router))
        return catalogue["value"]

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        """The run's report with the dashboard's navigation bar."""
        served = current()
        html = _report_page(served_path(served), page_cache) or _no_report_page(served)
        return HTMLResponse(html.replace(NAV_MARKER, nav_html("home"), 1))

    @api.get("/lookup", response_class=HTMLResponse, include_in_schema=False)
    async def lookup() -> HTMLResponse:
        """The user look-up page (static HTML; the script calls the JSON API)."""
        html = resources.files(__package__).joinpath("static", "lookup.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace(NAV_MARKER, nav_html("lookup"), 1))

    @api.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        """A bundled asset from the fixed list in :data:`STATIC`."""
        if name not in STATIC:
            raise fastapi.HTTPException(404, f"no static file {name!r}")
        return Response(_static_body(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @api.get("/ui/api/examples", tags=["dashboard"])
    async def examples(per_segment: int = fastapi.Query(3, ge=1, le=20)) -> dict[str, Any]:
        """A few known users per segment and the most popular items, to start from."""
        served = current()
        return _examples(served, items_of(served), per_segment)

    @api.get("/ui/api/items", tags=["dashboard"])
    async def items(q: str = fastapi.Query("", max_length=200),
                    limit: int = fastapi.Query(10, ge=1, le=100)) -> dict[str, Any]:
        """Items whose title contains ``q`` or whose id starts with it, most popular first."""
        return {"items": items_of(current()).search(q, limit)}

    @api.post("/ui/api/resolve", tags=["dashboard"])
    async def resolve(body: ResolveRequest) -> dict[str, Any]:
        """Typed titles or ids -> item ids (exact id, exact title, else best partial title match)."""
        cat = items_of(current())
        out, unresolved = [], []
        for q in body.queries:
            hit = cat.resolve(q)
            if hit is None:
                if q.strip():
                    unresolved.append(q)
            else:
                out.append({"query": q, **hit})
        return {"items": out, "unresolved": unresolved}

    return api
