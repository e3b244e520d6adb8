"""The HTTP API (extra ``serve``): FastAPI over a :class:`~segrec.route.router.Router`.

``create_app(path_or_router)`` builds the app; it keeps no module-level state,
so tests and benchmarks can run several apps in one process. Endpoints:

* ``POST /v1/recommend``: a known ``user_id``, or a new user's ``recent_items``
  and/or ``attributes``; ``k``; ``exclude``. Returns items with scores and
  titles, the segment and the tier that served them, and whether (and why) a
  fallback was used. An unknown user with nothing else gets popular items,
  flagged ``fallback: true``: never a 500.
* ``GET /v1/users/{user_id}/segment``, ``GET /v1/segments`` (profiles),
  ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``/docs`` (OpenAPI).
* ``POST /v1/admin/reload`` (and SIGHUP under ``segrec serve``): load a new
  artifact directory in a worker thread, then swap it in with one reference
  assignment. Each request reads the reference once when it starts, so
  in-flight requests finish on the artifact they began with; none is dropped.
  The route exists only with an API key (or ``allow_reload=True``), and a path
  must lie inside the reload root fixed at start-up.
* ``/docs``: a self-contained page rendering ``/openapi.json`` (no CDN, so it
  works offline).

Slow clients are cut off: :func:`deadline_protocol` closes a connection whose
request headers are not complete within ``header_timeout`` seconds, and the
gate answers 408 to a body that does not arrive within ``body_timeout``.

Errors are JSON ``{"error": kind, "message": text}``: 422 for bad bodies and
values, 404 for unknown ids and routes, 401 for a missing or wrong API key, 500
without a stack trace for bugs (the trace goes to the server log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataValidationError, SegrecError, UnknownIDError, require
from .gate import BODY_TIMEOUT_S, MAX_BODY_BYTES, OPEN_PATHS, _Gate
from .metrics import ServerMetrics
from .protocol import HEADER_TIMEOUT_S, deadline_protocol
from .reload import Serving, _default_loader, _reload_target
from .schemas import (
    MAX_ID_LENGTH,
    MAX_RELOAD_PATH,
    ItemOut,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    UserSegment,
)

# the request/response models, limits and the protocol keep their old import path here
__all__ = ["RecommendRequest", "RecommendResponse", "create_app", "BODY_TIMEOUT_S", "HEADER_TIMEOUT_S",
           "ItemOut", "MAX_BODY_BYTES", "MAX_ID_LENGTH", "MAX_RELOAD_PATH", "OPEN_PATHS", "ReloadRequest",
           "UserSegment", "deadline_protocol"]

log = logging.getLogger(__name__)


def create_app(source: Any, *, loader: Callable[[Path], Any] | None = None, api_key: str | None = None,
               max_k: int = 1000, allow_reload: bool | None = None, reload_root: str | Path | None = None,
               reload_on_sighup: bool = False, body_timeout: float = BODY_TIMEOUT_S,
               **router_options: Any):
    """Build the FastAPI app serving a run directory (or a ready Router).

    Args:
        source: Run directory written by :func:`segrec.artifacts.save_run`, or a Router.
        loader: ``path -> Router`` used at start and on reload (default:
            ``load_run(path).router(**router_options)``, checksums verified).
        api_key: When set, every route except health and docs needs header
            ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``); compared in
            constant time.
        max_k: Largest ``k`` a request may ask for (larger is a 422).
        allow_reload: Expose ``POST /v1/admin/reload``; None (default) exposes it only
            when ``api_key`` is set, since it makes the server load files.
        reload_root: Directory a reload path must lie in (after resolving links);
            default: the folder holding the served artifact directory.
        body_timeout: Seconds a request body may take to arrive (then 408).
        reload_on_sighup: Reload the current directory on SIGHUP (set by ``segrec serve``;
            only works when the app runs in the main thread's event loop).
        **router_options: Passed to the default loader, e.g. ``system=``,
            ``policy="budget"``, ``budget_fraction=0.3``.

    Returns:
        A FastAPI application.

    Raises:
        MissingDependencyError: fastapi is not installed (``pip install 'segrec[serve]'``).
        SegrecError: The artifact cannot be loaded (missing, corrupt).
    """
    fastapi = require("fastapi", "serve")

    load = loader or _default_loader(**router_options)
    if isinstance(source, str | Path):
        path = Path(source)
        router = load(path)
    else:
        path, router = None, source
    if allow_reload is None:
        allow_reload = bool(api_key)
    root = Path(reload_root) if reload_root is not None else (path.absolute().parent if path else None)
    metrics = ServerMetrics()
    serving = Serving(load, router, path, metrics)
    key = api_key.encode() if api_key else None

    # docs_url=None: FastAPI's Swagger page loads its scripts from a CDN; /docs is our own page
    app = fastapi.FastAPI(title="segrec", version=_version(), lifespan=_lifespan(serving, reload_on_sighup),
                          docs_url=None, redoc_url=None,
                          description="Segment-aware recommendations: known and brand-new users, "
                                      "routed to a model tier per segment.")
    _add_error_handlers(app)
    app.add_middleware(_Gate, metrics=metrics, key=key, body_timeout=body_timeout)
    _add_recommend_routes(app, serving, max_k)
    _add_ops_routes(app, serving, key)
    if allow_reload:
        _add_reload_route(app, serving, root)
    _add_dashboard(app, serving)
    app.state.metrics = metrics
    app.state.reload = serving.reload
    return app


def _lifespan(serving: Serving, reload_on_sighup: bool):
    """The app's lifespan: installs the SIGHUP reload handler when asked to."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if reload_on_sighup:
            loop = asyncio.get_running_loop()

            def on_hup() -> None:
                task = loop.create_task(serving.reload(None))
                task.add_done_callback(lambda t: t.exception() and log.error("SIGHUP reload failed: %s",
                                                                               t.exception()))

            try:
                loop.add_signal_handler(signal.SIGHUP, on_hup)
            except (NotImplementedError, RuntimeError, ValueError):  # not main thread / not Unix
                log.warning("SIGHUP reload is not available here; use POST /v1/admin/reload")
        yield

    return lifespan


def _error(status: int, kind: str, message: str, **extra: Any):
    """The API's error body ``{"error": kind, "message": text}`` with ``status``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": kind, "message": message, **extra}, status_code=status)


def _add_error_handlers(app) -> None:
    """Map every failure to a JSON error: 422 bad input, 404 unknown id, 500 without a trace."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return _error(422, "invalid_request", f"{where}: {first['msg']}", detail=detail)

    @app.exception_handler(UnknownIDError)
    async def _unknown(request, exc):
        return _error(404, "unknown_id", str(exc))

    @app.exception_handler(SegrecError)
    async def _segrec(request, exc):
        if isinstance(exc, ConfigError | DataValidationError | ValueError):
            return _error(422, "invalid_value", str(exc))
        return _error(400, "bad_request", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request, exc):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal server error; see the server log")


def _add_recommend_routes(app, serving: Serving, max_k: int) -> None:
    """``POST /v1/recommend``, ``GET /v1/users/{user_id}/segment`` and ``GET /v1/segments``."""
    from starlette.concurrency import run_in_threadpool

    metrics = serving.metrics

    @app.post("/v1/recommend", response_model=RecommendResponse, tags=["recommend"],
              responses={422: {"description": "Malformed body or bad value"}})
    async def recommend(body: RecommendRequest):
        """Recommend for a known user, a new user (items/attributes) or anyone (popular items)."""
        if body.k > max_k:
            raise ConfigError(f"k must be <= {max_k}; got {body.k}", key="k")
        served = serving.served  # read once: a reload mid-request does not affect this request
        start = time.perf_counter()
        user_id = None if body.user_id is None else str(body.user_id)
        request = {"user_id": user_id, "recent_items": [str(i) for i in body.recent_items],
                   "attributes": body.attributes or None, "k": body.k,
                   "exclude": [str(i) for i in body.exclude], "exclude_seen": body.exclude_seen}
        if served.router.heavy(user_id, bool(body.recent_items)):
            # In a worker thread: a heavy-tier request computes for milliseconds, and on the event
            # loop it would stall every other request and /healthz behind it (torch frees the GIL).
            # Cheap ones stay on the loop: in bench_serve the thread hop cost them 28-38% of throughput.
            out = await run_in_threadpool(served.router.recommend, **request)
        else:
            out = served.router.recommend(**request)
        metrics.observe_tier(out.tier, out.fallback, time.perf_counter() - start)
        # Serialised here rather than through response_model, which would re-validate every
        # field (~0.2 ms a request); the schema is still declared for the OpenAPI docs.
        return _json({
            "user_id": out.user_id,
            "items": [{"item_id": i, "score": s, "title": t}
                      for i, s, t in zip(out.item_ids, out.scores, out.titles, strict=True)],
            "segment": out.segment, "tier": out.tier, "routed_tier": out.routed_tier,
            "fallback": out.fallback, "new_user": out.new_user, "reason": out.reason,
            "segment_confidence": out.confidence, "evidence": out.evidence,
            "unknown_items": out.unknown_items, "generation": served.generation,
        })

    @app.get("/v1/users/{user_id}/segment", response_model=UserSegment, tags=["segments"],
             responses={404: {"description": "Unknown user"}})
    async def user_segment(user_id: str) -> dict[str, Any]:
        """The segment of a known user and the tier routed to it."""
        seg, tier = serving.served.router.user_segment(user_id)
        return {"user_id": user_id, "segment": seg, "tier": tier}

    @app.get("/v1/segments", tags=["segments"])
    async def segments() -> dict[str, Any]:
        """Every segment's size, routed tier, activity, top items and categories."""
        served = serving.served
        return {"segments": served.profiles, "generation": served.generation,
                "policy": served.router.info.get("policy")}


def _add_ops_routes(app, serving: Serving, key: bytes | None) -> None:
    """``GET /healthz`` (liveness, what is served), ``/docs`` and ``GET /metrics`` (Prometheus text)."""
    from fastapi.responses import PlainTextResponse

    metrics = serving.metrics

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness and what is being served."""
        served = serving.served
        body = {"status": "ok", "generation": served.generation,
                "system": served.router.info.get("system"), "policy": served.router.info.get("policy"),
                "data_fingerprint": served.router.info.get("data_fingerprint"),
                "items": served.router.n_items, "loaded_at": served.loaded_at,
                "ann": served.router.ann_info()}
        if key is None:  # with a key /healthz is open to anyone: it does not show where files live
            body["path"] = str(served.path or "")
        return body

    @app.get("/docs", include_in_schema=False)
    async def docs():
        """The API docs: a self-contained page rendering /openapi.json (works offline)."""
        from importlib import resources

        from fastapi.responses import HTMLResponse

        page = resources.files(__package__).joinpath("static", "docs.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    async def prometheus() -> str:
        """Prometheus text: request counts, latency histograms, per-tier counts, reloads."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")


def _add_reload_route(app, serving: Serving, root: Path | None) -> None:
    """``POST /v1/admin/reload``: load a directory inside ``root`` and swap it in atomically."""

    @app.post("/v1/admin/reload", tags=["ops"])
    async def reload(body: ReloadRequest | None = None) -> dict[str, Any]:
        """Load an artifact directory (default: the current one) and swap it in atomically."""
        target = None
        if body is not None and body.path:
            target = _reload_target(body.path, root)
        try:
            served = await serving.reload(target)
        except SegrecError as exc:  # a bad artifact: refuse it, keep serving the current one
            current = serving.served
            return _error(422, "reload_failed", f"{exc}; still serving generation {current.generation} "
                                                f"from {current.path}")
        except Exception as exc:  # never a 500 for a directory someone pointed us at
            log.exception("reload of %s failed", target)
            current = serving.served
            return _error(422, "reload_failed", f"cannot load {body.path if body else current.path} "
                                                f"({type(exc).__name__}); still serving generation "
                                                f"{current.generation}")
        return {"status": "reloaded", "generation": served.generation, "path": str(served.path)}


def _add_dashboard(app, serving: Serving) -> None:
    """The web dashboard at ``/`` and ``/lookup``."""
    # the web dashboard at / and /lookup (issue 7); it follows reloads through serving.served
    from .dashboard import dashboard_router

    app.include_router(dashboard_router(lambda: serving.served))


def _json(obj: Any):
    """A JSON response without FastAPI's response-model pass (NaN-free floats by construction)."""
    import json

    from starlette.responses import Response

    return Response(json.dumps(obj, separators=(",", ":")).encode(), media_type="application/json")


def _version() -> str:
    from .. import __version__

    return __version__
