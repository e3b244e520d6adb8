"""The HTTP API over a real loopback socket: uvicorn on an ephemeral port, httpx clients (issue 5)."""

import contextlib
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from segrec.artifacts import save_run  # noqa: E402
from segrec.config import load_config  # noqa: E402
from segrec.data.synthetic import generate_synthetic  # noqa: E402
from segrec.experiment import RunResult  # noqa: E402
from segrec.models import EASERecommender, PerSegmentRecommender, PopularityRecommender  # noqa: E402
from segrec.route import SegmentedRecommender  # noqa: E402
from segrec.segment import SegmentationPipeline  # noqa: E402
from segrec.serve import create_app  # noqa: E402
from segrec.split import temporal_split  # noqa: E402


def _build_run(out, seed=0):
    """A tiny routed system (popularity / EASE / local EASE) segmenting planted synthetic users itself.

    Returns the run directory, the synthetic frames, the fit data (what the served
    models learned from: train + valid) and the composite's segments.
    """
    syn = generate_synthetic(n_users=240, n_items=120, n_segments=3, seed=seed)
    data = syn.to_interactions()
    split = temporal_split(data)
    seg = SegmentedRecommender(
        segmenter=SegmentationPipeline.build("kmeans", n_segments=3, text=False, random_state=0),
        tiers={"global": EASERecommender(reg=50.0),
               "local": PerSegmentRecommender(base="ease", base_params={"reg": 50.0}, min_segment_users=10),
               "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid)
    labels = seg.segments_
    result = RunResult(load_config(None), data, split, labels, {"method": "kmeans"},
                       systems={"segmented": seg, "popularity": seg.tiers_["popularity"]},
                       segmenter=seg.segmenter_)
    return save_run(result, out), syn, split.fit, labels


@contextlib.contextmanager
def _serve(app):
    """uvicorn on 127.0.0.1, on a port the OS picks, in a thread; stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    out, syn, data, labels = _build_run(root / "run")
    other = shutil.copytree(out, root / "run-copy")  # a second artifact to reload into
    return out, other, syn, data, labels


@pytest.fixture(scope="module")
def server(run):
    out = run[0]
    with _serve(create_app(out, max_k=200)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def test_known_user(server, run):
    _, _, _, data, labels = run
    user = str(data.user_vocab.ids[0])
    r = server.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == user and body["segment"] == int(labels[0]) and not body["new_user"]
    assert body["tier"] == body["routed_tier"] and body["fallback"] is False
    assert len(body["items"]) == 5 and all(it["title"] for it in body["items"])
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = set(data.item_vocab.id(data.history(0)))
    assert not seen & {it["item_id"] for it in body["items"]}
    excluded = body["items"][0]["item_id"]
    again = server.post("/v1/recommend", json={"user_id": user, "k": 5, "exclude": [excluded]}).json()
    assert excluded not in {it["item_id"] for it in again["items"]}
    seg = server.get(f"/v1/users/{user}/segment").json()
    assert seg == {"user_id": user, "segment": int(labels[0]), "tier": body["routed_tier"]}


def test_new_user_by_items(server, run):
    _, _, syn, data, labels = run
    # a segment-2 user's items, sent as a new user's: the segmenter places them in segment 2
    u = int(np.flatnonzero(labels == 2)[0])
    items = [str(i) for i in data.item_vocab.id(data.history(u))]
    body = server.post("/v1/recommend", json={"recent_items": items + ["not-an-item"], "k": 4}).json()
    assert body["new_user"] and body["segment"] == 2 and body["evidence"] == "items"
    assert body["unknown_items"] == ["not-an-item"] and body["tier"] not in ("popularity", "")
    assert not set(items) & {it["item_id"] for it in body["items"]}


def test_new_user_by_attributes(server, run):
    _, _, syn, _, _ = run
    row = syn.users.iloc[0].drop("user_id")
    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    body = server.post("/v1/recommend", json={"user_id": "fresh-1", "attributes": attrs, "k": 3}).json()
    assert body["new_user"] and body["segment"] is not None and body["evidence"] == "attributes"
    assert body["tier"] == "segment_popularity" and body["fallback"] is True and body["reason"]
    bad = server.post("/v1/recommend", json={"attributes": {"shoe_size": 42}})
    assert bad.status_code == 422 and "shoe_size" in bad.json()["message"]


def test_unknown_user_gets_flagged_fallback(server):
    body = server.post("/v1/recommend", json={"user_id": "nobody-at-all", "k": 3}).json()
    assert body["tier"] == "popularity" and body["fallback"] is True and body["segment"] is None
    assert len(body["items"]) == 3
    assert server.post("/v1/recommend", json={}).json()["tier"] == "popularity"  # anonymous
    r = server.get("/v1/users/nobody-at-all/segment")
    assert r.status_code == 404 and r.json()["error"] == "unknown_id"
    assert "nobody-at-all" in r.json()["message"]


@pytest.mark.parametrize("payload", [
    b"{not json", b"[1, 2]", b'{"k": "ten"}', b'{"user_id": "u1", "colour": "red"}',
    b'{"recent_items": "i1"}', b'{"attributes": [1]}',
])
def test_malformed_bodies_are_422_json_without_traces(server, payload):
    r = server.post("/v1/recommend", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_request" and body["message"] and "Traceback" not in r.text


@pytest.mark.parametrize("k", [0, -3, 201, 10**9])
def test_k_out_of_bounds(server, k):
    r = server.post("/v1/recommend", json={"user_id": "x", "k": k})
    assert r.status_code == 422 and "k" in r.json()["message"]


def test_k_larger_than_what_is_left_returns_what_is_left(server, run):
    data = run[3]
    body = server.post("/v1/recommend", json={"user_id": str(data.user_vocab.ids[0]), "k": 200}).json()
    assert len(body["items"]) == data.n_items - len(set(data.history(0)))


def test_segments_health_metrics_docs(server):
    segs = server.get("/v1/segments").json()["segments"]
    assert [s["segment"] for s in segs] == [0, 1, 2] and all(s["top_items"] and s["tier"] for s in segs)
    health = server.get("/healthz").json()
    assert health["status"] == "ok" and health["system"] == "segmented"
    assert health["ann"] == {}  # EASE tiers have no item table, and 200 items are served exactly
    text = server.get("/metrics").text
    assert 'segrec_requests_total{method="POST",path="/v1/recommend",status="200"}' in text
    assert 'segrec_recommendations_total{tier="popularity",fallback="true"}' in text
    assert "segrec_request_duration_seconds_bucket" in text
    assert server.get("/openapi.json").json()["paths"]["/v1/recommend"]["post"]
    assert server.get("/nowhere").status_code == 404


def test_api_key(run):
    app = create_app(run[0], api_key="s3cret")
    with _serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200  # probes stay open
        r = client.post("/v1/recommend", json={"k": 2})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert client.post("/v1/recommend", json={"k": 2}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/v1/recommend", json={"k": 2}, headers={"X-API-Key": "s3cret"}).status_code == 200
        ok = client.post("/v1/recommend", json={"k": 2}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_concurrent_requests_during_reloads_are_never_dropped(run, tmp_path):
    out, other, _, data, _ = run
    users = [str(u) for u in data.user_vocab.ids[:50]]
    corrupt = shutil.copytree(out, out.parent / "corrupt")  # inside the reload root: the run's folder
    (corrupt / "segments.parquet").write_bytes(b"garbage")
    app = create_app(out, allow_reload=True)  # no API key here: reload must be asked for
    with _serve(app) as url:
        stop = threading.Event()

        def hammer(worker: int) -> tuple[int, list[int], set[int]]:
            n, bad, generations = 0, [], set()
            with httpx.Client(base_url=url, timeout=10) as client:
                while not stop.is_set() and n < 2000:  # bounded in count and (via stop) time
                    user = users[(worker + n) % len(users)]
                    r = client.post("/v1/recommend", json={"user_id": user, "k": 5})
                    if r.status_code != 200:
                        bad.append(r.status_code)
                    else:
                        generations.add(r.json()["generation"])
                    n += 1
            return n, bad, generations

        with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=url, timeout=30) as admin:
            futures = [pool.submit(hammer, w) for w in range(4)]
            reloads = []
            for target in (other, out, other):
                time.sleep(0.3)
                reloads.append(admin.post("/v1/admin/reload", json={"path": str(target)}))
            failed = admin.post("/v1/admin/reload", json={"path": str(corrupt)})
            time.sleep(0.3)
            stop.set()
            results = [f.result(timeout=30) for f in futures]
            health = admin.get("/healthz").json()
    assert [r.status_code for r in reloads] == [200, 200, 200]
    assert [r.json()["generation"] for r in reloads] == [2, 3, 4]
    # a corrupt artifact is refused with its file named, and the old one keeps serving
    assert failed.status_code == 422 and "segments.parquet" in failed.json()["message"]
    assert health["generation"] == 4 and health["path"] == str(other)
    total = sum(n for n, _, _ in results)
    assert total > 20 and all(not bad for _, bad, _ in results)
    assert set().union(*(g for _, _, g in results)) >= {1, 4}
