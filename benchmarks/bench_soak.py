"""Bounded soak test of `segrec serve` on loopback (issue 8, part 4).

Builds a small run (EASE on synthetic data), or takes ``--run`` (a saved run, served
as ``--system``), starts ``segrec serve`` on 127.0.0.1 in a child process, and keeps
``--concurrency`` clients posting ``/v1/recommend`` for ``--duration`` seconds or
``--max-requests`` requests, whichever comes first: 55% known users, 20% new users
from ``--new-items`` recent items, 10% unknown users, 15% malformed requests (broken
JSON, wrong types, unknown keys, bad k, a body that is not an object), which must be
answered 4xx. Reports requests, 5xx count (must be 0), latency p50/p99, status counts
per kind and the server's RSS at start and end; prints a table and writes
``benchmarks/results/bench_soak.json``. The server is always stopped.

    python benchmarks/bench_soak.py --duration 20
    python benchmarks/bench_soak.py --run /tmp/ml100k-run --system transformer --duration 60 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import git_commit as _commit

RESULTS = Path(__file__).parent / "results" / "bench_soak.json"




def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_run(out: Path, n_users: int, n_items: int) -> tuple[Path, list[str], list[str]]:
    """Save a small EASE run; returns (run dir, user ids, item ids)."""
    from segrec.artifacts import save_run
    from segrec.config import load_config
    from segrec.data.synthetic import generate_synthetic
    from segrec.experiment import RunResult
    from segrec.models.baselines import EASERecommender

    data = generate_synthetic(n_users=n_users, n_items=n_items, n_segments=3, seed=0).to_interactions()
    model = EASERecommender(reg=50.0).fit(data)
    result = RunResult(load_config(None), data, None, np.zeros(data.n_users, np.int64),
                       {"method": "none"}, systems={"ease": model})
    return save_run(result, out), data.user_vocab.ids.tolist(), data.item_vocab.ids.tolist()


#: malformed bodies: each must be a 4xx, never a 5xx
MALFORMED = [b"{bad json", b"[1, 2, 3]", b'"a string"', b'{"user_id": "x", "k": "ten"}', b'{"k": 0}',
             b'{"k": 100000}', b'{"user_id": "x", "surprise": 1}', b'{"recent_items": "not a list"}',
             b'{"recent_items": [[1]]}', b'{"attributes": {"age": {"nested": 1}}}', b"", b"null",
             b'{"user_id": "' + b"x" * 300 + b'"}', b'{"exclude": 5}', b'{"user_id": 1e999}']


def _run_ids(run: Path) -> tuple[list[str], list[str]]:
    """User and item ids of a saved run (its segments table and one system's item list)."""
    from segrec.io import read_json, read_table

    manifest = read_json(run / "manifest.json")
    users = read_table(run / "segments.parquet")["user_id"].astype(str).tolist()
    items = read_table(run / "systems" / manifest["systems"][0] / "items.parquet")["id"].astype(str).tolist()
    return users, items


async def soak(port: int, users: list[str], items: list[str], args) -> dict:
    import httpx

    rng = np.random.default_rng(0)
    latencies: list[float] = []
    status_counts: dict[int, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    errors = [0]
    deadline = time.monotonic() + args.duration
    budget = [args.max_requests]

    def body() -> tuple[str, bytes]:
        r = rng.random()
        if r < 0.55:
            return "known", json.dumps({"user_id": users[rng.integers(len(users))], "k": 10}).encode()
        if r < 0.75:
            recent = [items[i] for i in rng.integers(len(items), size=args.new_items)]
            return "new", json.dumps({"recent_items": recent, "k": 10}).encode()
        if r < 0.85:
            return "unknown", json.dumps({"user_id": f"unknown-{rng.integers(1 << 30)}", "k": 10}).encode()
        return "malformed", MALFORMED[rng.integers(len(MALFORMED))]

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            kind, content = body()
            start = time.perf_counter()
            try:
                r = await client.post("/v1/recommend", content=content,
                                      headers={"content-type": "application/json"})
                status_counts[r.status_code] = status_counts.get(r.status_code, 0) + 1
                counts = by_kind.setdefault(kind, {})
                counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
            except httpx.HTTPError:
                errors[0] += 1
                continue
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    lat = np.asarray(latencies) * 1000
    return {
        "requests": int(sum(status_counts.values())),
        "status_counts": {str(k): v for k, v in sorted(status_counts.items())},
        "status_by_kind": by_kind,
        "malformed_not_4xx": sum(v for s, v in by_kind.get("malformed", {}).items() if not s.startswith("4")),
        "n_5xx": int(sum(v for k, v in status_counts.items() if k >= 500)),
        "transport_errors": errors[0],
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default: 60)")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent clients (default: 64)")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="hard cap on requests sent")
    p.add_argument("--users", type=int, default=1000, help="synthetic users")
    p.add_argument("--items", type=int, default=500, help="synthetic items")
    p.add_argument("--new-items", type=int, default=5, help="recent items per new-user request")
    p.add_argument("--run", help="soak this saved run instead of a synthetic EASE run")
    p.add_argument("--system", help="system of --run to serve (default: the server's choice)")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON written here (default: %(default)s)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            run, users, items = Path(args.run), *_run_ids(Path(args.run))
        else:
            run, users, items = make_run(Path(tmp) / "run", args.users, args.items)
        system = args.system or ("ease" if not args.run else None)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", "import sys; from segrec.cli import main; sys.exit(main(sys.argv[1:]))",
             "serve", str(run), "--host", "127.0.0.1", "--port", str(port),
             *(["--system", system] if system else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            import httpx

            for _ in range(1500):  # up to 5 min to come up (a large run computes its user vectors)
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise SystemExit(f"server exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.2)
            rss_start = _rss_mib(server.pid)
            t0 = time.monotonic()
            figures = asyncio.run(soak(port, users, items, args))
            elapsed = time.monotonic() - t0
            rss_end = _rss_mib(server.pid)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    figures.update(seconds=round(elapsed, 1), rps=figures["requests"] / elapsed,
                   rss_start_mib=round(rss_start, 1), rss_end_mib=round(rss_end, 1))
    rows = [("requests", figures["requests"]), ("requests/s", f"{figures['rps']:.0f}"),
            ("5xx", figures["n_5xx"]), ("transport errors", figures["transport_errors"]),
            ("status counts", figures["status_counts"]),
            ("status by kind", figures["status_by_kind"]),
            ("malformed not 4xx", figures["malformed_not_4xx"]),
            ("latency p50 (ms)", f"{figures['p50_ms']:.1f}"),
            ("latency p99 (ms)", f"{figures['p99_ms']:.1f}"),
            ("server RSS start (MiB)", figures["rss_start_mib"]),
            ("server RSS end (MiB)", figures["rss_end_mib"])]
    print(f"soak: {args.duration:.0f} s, {args.concurrency} clients, 127.0.0.1")
    for name, value in rows:
        print(f"  {name:<24} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "load_avg_at_end": os.getloadavg()},
        "parameters": {**vars(args), "out": str(args.out)}, "figures": figures,
    }, indent=2))
    return 1 if figures["n_5xx"] or figures["malformed_not_4xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
