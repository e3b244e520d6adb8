"""Where one ``POST /v1/recommend`` spends its time inside the server process (no sockets).

    python benchmarks/profile_request.py --run RUN [--system transformer] [--requests 2000]

Builds the app of ``segrec serve`` in-process and drives it through the ASGI interface
(the middleware, FastAPI's body parsing and validation, the handler, the Router, the JSON
response) with a loop of known-user, then new-user requests, under cProfile. Prints, per
kind, the mean wall time of the whole ASGI call and of ``Router.recommend`` alone, and
cProfile's top functions by cumulative time; writes ``benchmarks/results/profile_request.json``.
What it leaves out: uvicorn's HTTP parsing and the socket round trip (``bench_serve.py``
measures those end to end, with the server's CPU per request).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

from _common import git_commit, write_json


async def _call(app, body: bytes) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/recommend", "raw_path": b"/v1/recommend", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


def main(argv: list[str] | None = None) -> int:
    """Profile; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory (segrec run --out)")
    parser.add_argument("--system", help="saved system to serve (as segrec serve --system)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--new-items", type=int, default=20)
    parser.add_argument("--top", type=int, default=18, help="cProfile rows printed per kind")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "profile_request.json"))
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from segrec.serve import create_app

    torch.set_num_threads(1)
    threadpool_limits(1)
    options = {"system": args.system} if args.system else {}
    app = create_app(args.run, **options)
    from segrec.artifacts import load_run

    r = load_run(args.run).router(args.system)  # a twin of the app's router, to time it alone
    users = list(r._user_index)[: args.requests]
    items = [str(i) for i in r._item_ids]
    kinds = {
        "known": [json.dumps({"user_id": users[i % len(users)], "k": 10}).encode()
                  for i in range(args.requests)],
        "new": [json.dumps({"recent_items": items[(7 * i) % (len(items) - args.new_items):][:args.new_items],
                            "k": 10}).encode() for i in range(max(1, args.requests // 10))],
    }
    loop = asyncio.new_event_loop()
    record = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "commit": git_commit(), "load_avg": os.getloadavg(), "kinds": {}}
    for kind, bodies in kinds.items():
        for b in bodies[:50]:  # warm up
            loop.run_until_complete(_call(app, b))
        t0 = time.perf_counter()
        statuses = [loop.run_until_complete(_call(app, b)) for b in bodies]
        asgi_ms = 1e3 * (time.perf_counter() - t0) / len(bodies)
        decoded = [json.loads(b) for b in bodies]
        t0 = time.perf_counter()
        for d in decoded:
            r.recommend(user_id=d.get("user_id"), recent_items=d.get("recent_items"), k=10)
        router_ms = 1e3 * (time.perf_counter() - t0) / len(bodies)
        print(f"== {kind} users: {len(bodies)} requests, ASGI call {asgi_ms:.3f} ms, Router.recommend "
              f"{router_ms:.3f} ms (load average {os.getloadavg()[0]:.1f}) ==")
        # the whole app by own time (a heavy request's work runs in a worker thread, which
        # cProfile does not see from here: the Router's own profile below shows it)
        def whole(bodies=bodies):
            for b in bodies:
                loop.run_until_complete(_call(app, b))

        def router_only(decoded=decoded):
            for d in decoded:
                r.recommend(user_id=d.get("user_id"), recent_items=d.get("recent_items"), k=10)

        for what, run, order in (("ASGI app, own time", whole, "tottime"),
                                 ("Router.recommend, cumulative", router_only, "cumulative")):
            prof = cProfile.Profile()
            prof.enable()
            run()
            prof.disable()
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats(order).print_stats(args.top)
            lines = [line for line in text.getvalue().splitlines() if line.strip()]
            start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
            print(f"-- {what} --")
            print("\n".join(lines[start:]))
        record["kinds"][kind] = {"requests": len(bodies), "asgi_ms": asgi_ms, "router_ms": router_ms,
                                 "status_200": sum(s == 200 for s in statuses)}
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
