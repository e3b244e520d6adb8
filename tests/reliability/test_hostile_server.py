"""Hostile clients over a real socket (issue 16): slow headers and bodies, odd bodies, long paths.

uvicorn runs `segrec serve`'s protocol (:func:`segrec.serve.http.deadline_protocol`) on
127.0.0.1 with short deadlines (0.5 s), so slow clients are cut off quickly; every case
must end in a 4xx (or 200) or a closed connection, never a 5xx and never a connection
held open. Close times are measured and printed (``pytest -s``), not asserted beyond a
loose bound: the suite never asserts timings.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from segrec.serve import create_app  # noqa: E402
from segrec.serve.http import deadline_protocol  # noqa: E402

DEADLINE = 0.5
KEY = "k3y"
OUTCOMES: Counter[str] = Counter()
MEASURED: dict[str, float] = {}
STATUS: dict[str, int] = {}


@pytest.fixture(scope="module")
def server(saved_run):
    app = create_app(saved_run, system="ease", api_key=KEY, body_timeout=DEADLINE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="critical", access_log=False, http=deadline_protocol(DEADLINE),
                            timeout_keep_alive=5)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def _raw(addr, chunks, *, pause=0.0, wait=10.0) -> tuple[bytes, float]:
    """Send ``chunks`` (with ``pause`` s between them) and read until the server closes; (reply, seconds)."""
    start = time.perf_counter()
    with socket.create_connection(addr, timeout=wait) as s:
        with contextlib.suppress(OSError):  # the server may close while we still write: that is the point
            for chunk in chunks:
                s.sendall(chunk)
                time.sleep(pause)
        reply = b""
        with contextlib.suppress(OSError):
            while True:
                part = s.recv(65536)
                if not part:
                    break
                reply += part
    return reply, time.perf_counter() - start


def _status(reply: bytes) -> int | None:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None


def test_silent_connection_is_closed(server):
    reply, seconds = _raw(server, [])
    MEASURED["idle connection closed after"] = seconds
    assert reply == b"" and seconds < 8  # closed by the deadline, long before the 10 s socket timeout
    OUTCOMES["closed (idle)"] += 1


def test_trickled_headers_get_408(server):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 20
    reply, seconds = _raw(server, [bytes([c]) for c in head], pause=0.05)
    MEASURED["trickled headers answered after"] = seconds
    assert _status(reply) == 408 and seconds < 8
    OUTCOMES["408 (slow headers)"] += 1


def test_body_shorter_than_announced_gets_408(server):
    head = (b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"X-API-Key: " + KEY.encode() + b"\r\ncontent-length: 200\r\n\r\n{\"k\": 3")
    reply, seconds = _raw(server, [head])
    MEASURED["short body answered after"] = seconds
    assert _status(reply) == 408 and b"request body took longer" in reply and seconds < 8
    OUTCOMES["408 (slow body)"] += 1


def test_keep_alive_still_works_between_quick_requests(server):
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", headers={"X-API-Key": KEY}) as c:
        for _ in range(3):
            assert c.get("/healthz").status_code == 200
            time.sleep(DEADLINE / 5)
        assert c.post("/v1/recommend", json={"user_id": "u1", "k": 3}).status_code == 200
    OUTCOMES["200 (keep-alive)"] += 1


BODIES = {
    "not json": (b"{not json", "application/json"),
    "json array": (b"[1, 2, 3]", "application/json"),
    "deeply nested": (b"[" * 50_000 + b"]" * 50_000, "application/json"),
    "invalid utf-8": (b'{"user_id": "\xff\xfe"}', "application/json"),
    "nan k": (b'{"k": NaN}', "application/json"),
    "huge k": (b'{"k": 1e309}', "application/json"),
    "k as text": (b'{"k": "ten"}', "application/json"),
    "unknown field": (b'{"user": "u1"}', "application/json"),
    "id too long": (json.dumps({"user_id": "u" * 5000}).encode(), "application/json"),
    "nul in id": (b'{"user_id": "u\\u00001"}', "application/json"),
    "1001 recent items": (json.dumps({"recent_items": [str(i) for i in range(1001)]}).encode(),
                          "application/json"),
    "form body": (b"user_id=u1", "application/x-www-form-urlencoded"),
    "over 1 MB": (b'{"user_id": "' + b"a" * (1 << 20) + b'"}', "application/json"),
    "attributes not strings": (b'{"attributes": {"age": [1, 2]}}', "application/json"),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_odd_bodies_are_4xx_never_5xx(server, name):
    body, kind = BODIES[name]
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", headers={"X-API-Key": KEY}) as c:
        r = c.post("/v1/recommend", content=body, headers={"content-type": kind})
        assert 400 <= r.status_code < 500 or r.status_code == 200, (name, r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/json")
        assert c.get("/healthz").status_code == 200  # the connection (or a new one) still serves
    OUTCOMES[f"{r.status_code} (odd body)"] += 1
    STATUS[name] = r.status_code


PATHS = ["/" + "a" * 5000, "/v1/users/" + "u" * 5000 + "/segment", "/%00", "/..%2f..%2fetc"]


@pytest.mark.parametrize("path", PATHS)
def test_odd_paths_are_4xx(server, path):
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", headers={"X-API-Key": KEY}) as c:
        r = c.get(path)
        assert 400 <= r.status_code < 500, (path[:40], r.status_code)
    OUTCOMES[f"{r.status_code} (odd path)"] += 1


def test_long_reload_path_keeps_the_connection(server):
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", headers={"X-API-Key": KEY}) as c:
        r = c.post("/v1/admin/reload", json={"path": "x" * 5000})
        assert r.status_code == 422
        assert c.get("/healthz").status_code == 200  # same client, kept-alive connection: not reset
    OUTCOMES["422 (reload path)"] += 1


def test_wrong_and_odd_api_keys_are_401(server):
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}") as c:
        for key in (b"", b"k3", KEY.encode() + b"x", "ключ".encode(), b"a" * 10_000):
            r = c.post("/v1/recommend", json={"k": 3}, headers={"X-API-Key": key})
            assert r.status_code in (401, 431), (key[:10], r.status_code)
            OUTCOMES[f"{r.status_code} (api key)"] += 1


def teardown_module(module):
    shown = ", ".join(f"{k} {v:.2f}s" for k, v in MEASURED.items())
    print(f"\nhostile server cases: {sum(OUTCOMES.values())}; outcomes: {dict(sorted(OUTCOMES.items()))}; "
          f"deadline {DEADLINE}s: {shown}; bodies: {STATUS}")
