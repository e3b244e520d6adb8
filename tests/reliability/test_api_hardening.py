"""Hostile HTTP requests (issue 8, part 4).

Size limits, bounds on ``k`` and on id lengths, JSON 404 / 422 bodies, API-key
auth (constant-time compare), no stack traces in responses and a loopback
default bind, each checked over the app with FastAPI's TestClient.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from segrec.artifacts import load_run, save_run  # noqa: E402
from segrec.config import load_config  # noqa: E402
from segrec.experiment import RunResult  # noqa: E402
from segrec.models.baselines import EASERecommender  # noqa: E402
from segrec.serve import create_app  # noqa: E402
from segrec.serve import gate as serve_gate  # noqa: E402
from segrec.testing import random_interactions  # noqa: E402

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    data = random_interactions()
    model = EASERecommender(reg=10.0).fit(data)
    result = RunResult(load_config(None), data, None, np.zeros(data.n_users, np.int64),
                       {"method": "none"}, systems={"ease": model})
    out = save_run(result, tmp_path_factory.mktemp("api") / "run")
    return load_run(out).router("ease")


@pytest.fixture(scope="module")
def client(router):
    with TestClient(create_app(router, max_k=50), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(router):
    with TestClient(create_app(router, api_key=KEY), raise_server_exceptions=False) as c:
        yield c


def _known_user(router):
    return str(router.model.user_vocab_.ids[0])


def _assert_json_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "message"}
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_valid_request_is_served(client, router):
    r = client.post("/v1/recommend", json={"user_id": _known_user(router), "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3


@pytest.mark.parametrize("k", [0, -1, 51, 10**12, "ten", 2.5, None])
def test_k_out_of_bounds_is_422_json(client, router, k):
    _assert_json_error(client.post("/v1/recommend", json={"user_id": _known_user(router), "k": k}), 422)


def test_overlong_ids_are_422(client):
    _assert_json_error(client.post("/v1/recommend", json={"user_id": "u" * 10_000}), 422)
    _assert_json_error(client.post("/v1/recommend", json={"recent_items": ["i" * 10_000]}), 422)
    _assert_json_error(client.post("/v1/recommend", json={"exclude": ["x" * 10_000]}), 422)


def test_oversized_body_is_413_before_parsing(client):
    big = b'{"recent_items": [' + b'"i",' * 400_000 + b'"i"]}'
    _assert_json_error(client.post("/v1/recommend", content=big,
                                   headers={"content-type": "application/json"}), 413)


def test_oversized_chunked_body_is_413(client):
    """No Content-Length (chunked upload): the gate counts bytes as they arrive."""

    def chunks():
        for _ in range(300):
            yield b'"i",' * 1000  # 4 KB a chunk, 1.2 MB in all

    r = client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    _assert_json_error(r, 413)


def test_small_chunked_body_is_served(client, router):
    body = f'{{"user_id": "{_known_user(router)}", "k": 4}}'.encode()
    r = client.post("/v1/recommend", content=iter([body[:7], body[7:]]),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["items"]) == 4


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"user_id": {"a": 1}}', b'{"nope": 1}', b"\xff\xfe",
                                  b'{"user_id": "u", "k": 1e999}'])
def test_malformed_bodies_are_422_json(client, body):
    _assert_json_error(client.post("/v1/recommend", content=body,
                                   headers={"content-type": "application/json"}), 422)


def test_unknown_user_and_route_are_404_json(client):
    _assert_json_error(client.get("/v1/users/nobody-at-all/segment"), 404)
    _assert_json_error(client.get("/no/such/route"), 404)


def test_api_key_required_when_configured(keyed, router):
    body = {"user_id": _known_user(router), "k": 2}
    _assert_json_error(keyed.post("/v1/recommend", json=body), 401)
    _assert_json_error(keyed.post("/v1/recommend", json=body, headers={"X-API-Key": "wrong"}), 401)
    _assert_json_error(keyed.post("/v1/recommend", json=body, headers={"X-API-Key": KEY[:-1]}), 401)
    assert keyed.post("/v1/recommend", json=body, headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.post("/v1/recommend", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed.get("/healthz").status_code == 200  # liveness probes stay open


def test_api_key_compare_is_constant_time(keyed, monkeypatch):
    calls = []
    real = serve_gate.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(serve_gate.hmac, "compare_digest", spy)
    assert keyed.get("/v1/segments", headers={"X-API-Key": "guess"}).status_code == 401
    assert calls == [(b"guess", KEY.encode())]


def test_unexpected_error_has_no_stack_trace(router):
    class Broken:
        def __getattr__(self, name):
            return getattr(router, name)

        def recommend(self, *args, **kwargs):
            raise RuntimeError("secret internal detail /etc/passwd")

    with TestClient(create_app(Broken()), raise_server_exceptions=False) as c:
        r = c.post("/v1/recommend", json={"user_id": _known_user(router)})
    _assert_json_error(r, 500)
    assert "secret internal detail" not in r.text


def test_serve_binds_loopback_by_default():
    from segrec.cli import serve as serve_cli

    assert 'default="127.0.0.1"' in inspect.getsource(serve_cli)


def test_slow_recommendation_does_not_stall_other_requests(router):
    """A large-tier request computes off the event loop: /healthz answers meanwhile."""
    import threading

    entered, release, outcome = threading.Event(), threading.Event(), {}

    class Slow:
        def __getattr__(self, name):
            return getattr(router, name)

        def heavy(self, user_id, has_recent_items):
            return True  # as a Transformer tier would be: computed off the event loop

        def recommend(self, **kwargs):
            entered.set()
            # set by the test only after /healthz answered; times out if the loop is blocked
            outcome["released"] = release.wait(10)
            return router.recommend(**kwargs)

    with TestClient(create_app(Slow()), raise_server_exceptions=False) as c:
        worker = threading.Thread(target=lambda: outcome.setdefault(
            "response", c.post("/v1/recommend", json={"user_id": _known_user(router), "k": 2})))
        worker.start()
        assert entered.wait(10)
        health = c.get("/healthz")
        release.set()
        worker.join(20)
    assert health.status_code == 200
    assert outcome["released"] is True
    assert outcome["response"].status_code == 200
