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
import hmac
import logging
import os
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
OPEN_PATHS = frozenset({"/healthz", "/docs", "/openapi.json"})
#: route templates for metrics labels (raw paths would explode label cardinality)
_ROUTES = frozenset({"/v1/recommend", "/v1/segments", "/healthz", "/metrics", "/v1/admin/reload",
                     "/docs", "/openapi.json"})
#: longest path ``POST /v1/admin/reload`` accepts (Linux allows 4096 bytes; real run paths are short)
MAX_RELOAD_PATH = 1024
#: seconds a client may take to send a request's headers / its body (slow clients hold connections)
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0

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

    path: str | None = Field(None, max_length=MAX_RELOAD_PATH,
                             description="New artifact directory inside the server's reload root "
                                         "(default: reload the current one).")


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
    if allow_reload is None:
        allow_reload = bool(api_key)
    root = Path(reload_root) if reload_root is not None else (path.absolute().parent if path else None)
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

    # docs_url=None: FastAPI's Swagger page loads its scripts from a CDN; /docs is our own page
    app = fastapi.FastAPI(title="segrec", version=_version(), lifespan=lifespan, docs_url=None,
                          redoc_url=None,
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
    app.add_middleware(_Gate, metrics=metrics, key=key, body_timeout=body_timeout)

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

    if allow_reload:
        @app.post("/v1/admin/reload", tags=["ops"])
        async def reload(body: ReloadRequest | None = None) -> dict[str, Any]:
            """Load an artifact directory (default: the current one) and swap it in atomically."""
            target = None
            if body is not None and body.path:
                target = _reload_target(body.path, root)
            try:
                served = await do_reload(target)
            except SegrecError as exc:  # a bad artifact: refuse it, keep serving the current one
                current = state["served"]
                return error(422, "reload_failed", f"{exc}; still serving generation {current.generation} "
                                                   f"from {current.path}")
            except Exception as exc:  # never a 500 for a directory someone pointed us at
                log.exception("reload of %s failed", target)
                current = state["served"]
                return error(422, "reload_failed", f"cannot load {body.path if body else current.path} "
                                                   f"({type(exc).__name__}); still serving generation "
                                                   f"{current.generation}")
            return {"status": "reloaded", "generation": served.generation, "path": str(served.path)}

    # the web dashboard at / and /lookup (issue 7); it follows reloads through state["served"]
    from .dashboard import dashboard_router

    app.include_router(dashboard_router(lambda: state["served"]))
    app.state.metrics = metrics
    app.state.reload = do_reload
    return app


def _reload_target(text: str, root: Path | None) -> Path:
    """A reload path, checked: a directory inside ``root`` once links are resolved.

    Raises:
        ConfigError: (422) It is not, or it cannot be resolved (NUL byte, too long).
    """
    if root is None:
        raise ConfigError("this server has no reload root; start it from a run directory", key="path")
    if "\x00" in text:
        raise ConfigError("reload path must not contain NUL bytes", key="path")
    try:
        base = Path(os.path.realpath(root))
        target = Path(os.path.realpath(base / text))  # an absolute text replaces base
        inside = target == base or base in target.parents
        is_dir = inside and target.is_dir()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"reload path {text[:80]!r} cannot be used ({type(exc).__name__})",
                          key="path") from None
    if not inside:
        raise ConfigError(f"reload path {text[:80]!r} is outside the reload root {base}; the server only "
                          "loads runs from there (segrec serve --reload-root)", key="path")
    if not is_dir:
        raise ConfigError(f"reload path {text[:80]!r} is not a directory", key="path")
    return target


_TIMEOUT_BODY = b'{"error":"timeout","message":"request headers took too long"}'
_HEADER_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                            b"content-length: " + str(len(_TIMEOUT_BODY)).encode() +
                            b"\r\nconnection: close\r\n\r\n" + _TIMEOUT_BODY)


def deadline_protocol(header_timeout: float = HEADER_TIMEOUT_S) -> type:
    """Uvicorn's HTTP protocol with a deadline for request headers (against slow clients).

    uvicorn times out idle keep-alive connections but not a request whose headers
    trickle in (every byte received re-arms nothing, so one byte every few seconds holds
    a connection open forever). This subclass arms a timer when a connection opens and
    after every response, disarms it once a request's headers are complete, and closes
    the connection with ``408`` when it fires.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class DeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _deadline = None

        _started = False

        def _arm(self) -> None:
            self._disarm()
            self._started = False
            self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if busy or self.transport.is_closing():
                return
            if self._started:  # part of a request arrived: say why the connection ends
                self.transport.write(_HEADER_TIMEOUT_RESPONSE)
            self.transport.close()  # an idle connection just closes, as keep-alive timeouts do

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            if self._deadline is not None:
                self._started = True
            super().data_received(data)
            if self.cycle is not before and self.cycle is not None:
                self._disarm()  # a request's headers are complete: the app (and body timeout) take over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol


class _Gate:
    """Pure-ASGI middleware: API-key check and request metrics.

    Pure ASGI (not ``BaseHTTPMiddleware``) because it adds no per-request task or
    body buffering, which matters at hundreds of requests per second.
    """

    def __init__(self, app, metrics: ServerMetrics, key: bytes | None, max_body: int = MAX_BODY_BYTES,
                 body_timeout: float = BODY_TIMEOUT_S):
        self.app = app
        self.metrics = metrics
        self.key = key
        self.max_body = max_body
        self.body_timeout = body_timeout

    def _too_large(self, scope) -> bool | None:
        """True/False from the Content-Length header; None when there is none (chunked)."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                return not value.isdigit() or int(value) > self.max_body
        return None

    async def _read_capped(self, receive) -> bytes | None:
        """The whole body of a request, or None past ``max_body``.

        Chunked bodies announce no size, so every body is read here (at most ``max_body``
        + one chunk in memory) instead of letting the app buffer an unbounded stream.
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
            if not too_large and scope.get("method") in ("POST", "PUT", "PATCH"):
                # The whole body, read here under one deadline: a client that trickles it in
                # (or announces more than it sends) gets 408 instead of holding a worker.
                try:
                    async with asyncio.timeout(self.body_timeout):
                        body = await self._read_capped(receive)
                except TimeoutError:
                    status[0] = 408
                    await _send_json(send, 408, b'{"error":"timeout","message":"request body took longer '
                                                b'than ' + str(self.body_timeout).encode() + b' s"}')
                    return
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
