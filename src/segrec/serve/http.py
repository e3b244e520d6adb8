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

Errors are JSON ``{"error": kind, "message": text}``: 422 for bad bodies and
values, 404 for unknown ids and routes, 401 for a missing or wrong API key, 500
without a stack trace for bugs (the trace goes to the server log).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, DataValidationError, SegrecError, UnknownIDError, require
from .metrics import ServerMetrics

__all__ = ["RecommendRequest", "RecommendResponse", "create_app"]

log = logging.getLogger(__name__)

#: routes that stay open when an API key is configured (liveness probes, docs)
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
#: route templates for metrics labels (raw paths would explode label cardinality)
_ROUTES = frozenset({"/v1/recommend", "/v1/segments", "/healthz", "/metrics", "/v1/admin/reload",
                     "/docs", "/redoc", "/openapi.json"})

#: longest external id a request may carry (ids in real logs are far shorter)
MAX_ID_LENGTH = 256
#: largest request body in bytes; bigger bodies get 413 before they are read
MAX_BODY_BYTES = 1 << 20

Id = Annotated[str, Field(max_length=MAX_ID_LENGTH)] | int


class RecommendRequest(BaseModel):
    """Body of ``POST /v1/recommend``."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(None, description="External user id; known users are served from their "
                                                 "history.")
    recent_items: list[Id] = Field(default_factory=list, max_length=1000,
                                   description="A new user's recent items, oldest first.")
    attributes: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, max_length=64, description="A new user's attributes (users-table columns).")
    k: int = Field(10, ge=1, description="List length (at most the server's max_k).")
    exclude: list[Id] = Field(default_factory=list, max_length=10000, description="Items never to return.")
    exclude_seen: bool = Field(True, description="Leave out a known user's fit items.")


class ItemOut(BaseModel):
    """One recommended item."""

    item_id: str
    score: float
    title: str | None = None


class RecommendResponse(BaseModel):
    """Answer of ``POST /v1/recommend``."""

    user_id: str | None
    items: list[ItemOut]
    segment: int | None = Field(description="The user's segment (None when none could be assigned).")
    tier: str = Field(description="What produced the scores: a tier, segment_popularity or popularity.")
    routed_tier: str | None = Field(description="The tier the routing chose for the segment.")
    fallback: bool = Field(description="True when the routed tier did not serve the request.")
    new_user: bool
    reason: str | None = None
    segment_confidence: float | None = None
    evidence: str | None = None
    unknown_items: list[str] = Field(default_factory=list)
    generation: int = Field(description="Artifact generation (increments on every reload).")


class UserSegment(BaseModel):
    """Answer of ``GET /v1/users/{user_id}/segment``."""

    user_id: str
    segment: int | None
    tier: str


class ReloadRequest(BaseModel):
    """Body of ``POST /v1/admin/reload``."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="New artifact directory (default: reload the current one).")


class _Served:
    """The router being served, with its generation; replaced whole on reload."""

    __slots__ = ("router", "path", "generation", "profiles", "loaded_at")

    def __init__(self, router: Any, path: Path | None, generation: int, profiles: list[dict[str, Any]]):
        self.router = router
        self.path = path
        self.generation = generation
        self.profiles = profiles
        self.loaded_at = time.time()


def _default_loader(**router_options: Any) -> Callable[[Path], Any]:
    def load(path: Path):
        from ..artifacts import load_run

        return load_run(path).router(**router_options)

    return load


def _profiles(router: Any) -> list[dict[str, Any]]:
    items = None
    path = router.info.get("path")
    if path and (Path(path) / "items.parquet").exists():
        from ..io import read_table

        table = read_table(Path(path) / "items.parquet")
        items = table.set_index(table["item_id"].astype(str)).reindex(router.model.item_vocab_.ids)
    return router.segment_profiles(item_table=items)


def create_app(source: Any, *, loader: Callable[[Path], Any] | None = None, api_key: str | None = None,
               max_k: int = 1000, allow_reload: bool = True, reload_on_sighup: bool = False,
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
        allow_reload: Expose ``POST /v1/admin/reload``.
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
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    load = loader or _default_loader(**router_options)
    if isinstance(source, str | Path):
        path = Path(source)
        router = load(path)
    else:
        path, router = None, source
    metrics = ServerMetrics()
    state = {"served": _Served(router, path, 1, _profiles(router))}
    reload_lock = asyncio.Lock()
    key = api_key.encode() if api_key else None

    def _set_info(served: _Served) -> None:
        info = served.router.info
        metrics.info = {"path": str(served.path or info.get("path", "")),
                        "generation": str(served.generation), "system": str(info.get("system", "")),
                        "policy": str(info.get("policy", "")),
                        "fingerprint": str(info.get("data_fingerprint", ""))}

    _set_info(state["served"])

    async def do_reload(new_path: Path | None) -> _Served:
        async with reload_lock:  # one reload at a time; requests keep flowing meanwhile
            old = state["served"]
            target = new_path or old.path
            if target is None:
                raise ConfigError("this server was started from an in-memory router; reload needs a path")
            try:
                router = await run_in_threadpool(load, target)
                profiles = await run_in_threadpool(_profiles, router)
            except Exception:
                metrics.observe_reload(False)
                raise
            served = _Served(router, target, old.generation + 1, profiles)
            state["served"] = served  # the atomic swap
            _set_info(served)
            metrics.observe_reload(True)
            log.info("reloaded %s (generation %d)", target, served.generation)
            return served

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if reload_on_sighup:
            loop = asyncio.get_running_loop()

            def on_hup() -> None:
                task = loop.create_task(do_reload(None))
                task.add_done_callback(lambda t: t.exception() and log.error("SIGHUP reload failed: %s",
                                                                               t.exception()))

            try:
                loop.add_signal_handler(signal.SIGHUP, on_hup)
            except (NotImplementedError, RuntimeError, ValueError):  # not main thread / not Unix
                log.warning("SIGHUP reload is not available here; use POST /v1/admin/reload")
        yield

    app = fastapi.FastAPI(title="segrec", version=_version(), lifespan=lifespan,
                          description="Segment-aware recommendations: known and brand-new users, "
                                      "routed to a model tier per segment.")

    # -------------------------------------------------------------- errors
    def error(status: int, kind: str, message: str, **extra: Any):
        return JSONResponse({"error": kind, "message": message, **extra}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return error(422, "invalid_request", f"{where}: {first['msg']}", detail=detail)

    @app.exception_handler(UnknownIDError)
    async def _unknown(request, exc):
        return error(404, "unknown_id", str(exc))

    @app.exception_handler(SegrecError)
    async def _segrec(request, exc):
        if isinstance(exc, ConfigError | DataValidationError | ValueError):
            return error(422, "invalid_value", str(exc))
        return error(400, "bad_request", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request, exc):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal", "internal server error; see the server log")

    # ---------------------------------------------------------- middleware
    app.add_middleware(_Gate, metrics=metrics, key=key)

    # ------------------------------------------------------------- routes
    @app.post("/v1/recommend", response_model=RecommendResponse, tags=["recommend"],
              responses={422: {"description": "Malformed body or bad value"}})
    async def recommend(body: RecommendRequest):
        """Recommend for a known user, a new user (items/attributes) or anyone (popular items)."""
        if body.k > max_k:
            raise ConfigError(f"k must be <= {max_k}; got {body.k}", key="k")
        served = state["served"]  # read once: a reload mid-request does not affect this request
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
        seg, tier = state["served"].router.user_segment(user_id)
        return {"user_id": user_id, "segment": seg, "tier": tier}

    @app.get("/v1/segments", tags=["segments"])
    async def segments() -> dict[str, Any]:
        """Every segment's size, routed tier, activity, top items and categories."""
        served = state["served"]
        return {"segments": served.profiles, "generation": served.generation,
                "policy": served.router.info.get("policy")}

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness and what is being served."""
        served = state["served"]
        return {"status": "ok", "generation": served.generation, "path": str(served.path or ""),
                "system": served.router.info.get("system"), "policy": served.router.info.get("policy"),
                "data_fingerprint": served.router.info.get("data_fingerprint"),
                "items": served.router.n_items, "loaded_at": served.loaded_at}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    async def prometheus() -> str:
        """Prometheus text: request counts, latency histograms, per-tier counts, reloads."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    if allow_reload:
        @app.post("/v1/admin/reload", tags=["ops"])
        async def reload(body: ReloadRequest | None = None) -> dict[str, Any]:
            """Load an artifact directory (default: the current one) and swap it in atomically."""
            target = None
            if body is not None and body.path:
                target = Path(body.path)
                if not target.is_dir():
                    raise ConfigError(f"reload path {body.path!r} is not a directory", key="path")
            try:
                served = await do_reload(target)
            except SegrecError as exc:  # a bad artifact: refuse it, keep serving the current one
                current = state["served"]
                return error(422, "reload_failed", f"{exc}; still serving generation {current.generation} "
                                                   f"from {current.path}")
            return {"status": "reloaded", "generation": served.generation, "path": str(served.path)}

    # the web dashboard at / and /lookup (issue 7); it follows reloads through state["served"]
    from .dashboard import dashboard_router

    app.include_router(dashboard_router(lambda: state["served"]))
    app.state.metrics = metrics
    app.state.reload = do_reload
    return app


class _Gate:
    """Pure-ASGI middleware: API-key check and request metrics.

    Pure ASGI (not ``BaseHTTPMiddleware``) because it adds no per-request task or
    body buffering, which matters at hundreds of requests per second.
    """

    def __init__(self, app, metrics: ServerMetrics, key: bytes | None, max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.metrics = metrics
        self.key = key
        self.max_body = max_body

    def _too_large(self, scope) -> bool | None:
        """True/False from the Content-Length header; None when there is none (chunked)."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                return not value.isdigit() or int(value) > self.max_body
        return None

    async def _read_capped(self, receive) -> bytes | None:
        """The whole body of a request without Content-Length, or None past ``max_body``.

        Chunked bodies announce no size, so they are read here (at most ``max_body`` + one
        chunk in memory) instead of letting the app buffer an unbounded stream.
        """
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _authorised(self, scope) -> bool:
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"x-api-key":
                given = value
                break
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        return hmac.compare_digest(given, self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in _ROUTES else (
            "/v1/users/{user_id}/segment" if path.startswith("/v1/users/") else "other")
        start = time.perf_counter()
        status = [500]

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.start()
        try:
            if self.key is not None and path not in OPEN_PATHS and not self._authorised(scope):
                status[0] = 401
                await _send_json(send, 401, b'{"error":"unauthorized","message":"missing or wrong API key '
                                            b'(header X-API-Key)"}')
                return
            too_large = self._too_large(scope)
            if too_large is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await self._read_capped(receive)
                too_large = body is None
                if body is not None:
                    receive = _replay(body, receive)
            if too_large:
                status[0] = 413
                await _send_json(send, 413, b'{"error":"too_large","message":"request body over '
                                            + str(self.max_body).encode() + b' bytes"}')
                return
            await self.app(scope, receive, send_wrapped)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe_request(scope.get("method", ""), route, status[0], elapsed)
            self.metrics.finish()


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that yields ``body`` once, then defers to the real one (disconnects)."""
    sent = [False]

    async def replayed():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_json(send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(obj: Any):
    """A JSON response without FastAPI's response-model pass (NaN-free floats by construction)."""
    import json

    from starlette.responses import Response

    return Response(json.dumps(obj, separators=(",", ":")).encode(), media_type="application/json")


def _version() -> str:
    from .. import __version__

    return __version__
