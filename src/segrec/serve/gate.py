"""The ASGI gate in front of the app: API-key check, body size and deadline, request metrics."""

from __future__ import annotations

import asyncio
import hmac
import time

from .metrics import ServerMetrics

__all__ = ["BODY_TIMEOUT_S", "MAX_BODY_BYTES", "OPEN_PATHS"]

#: routes that stay open when an API key is configured (liveness probes, docs)
OPEN_PATHS = frozenset({"/healthz", "/docs", "/openapi.json"})
#: route templates for metrics labels (raw paths would explode label cardinality)
_ROUTES = frozenset({"/v1/recommend", "/v1/segments", "/healthz", "/metrics", "/v1/admin/reload",
                     "/docs", "/openapi.json"})
#: seconds a client may take to send a request's body (slow clients hold connections)
BODY_TIMEOUT_S = 30.0
#: largest request body in bytes; bigger bodies get 413 before they are read
MAX_BODY_BYTES = 1 << 20


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
