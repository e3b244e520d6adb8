"""Serving benchmark: the real HTTP server under concurrent loopback load, per tier.

    python benchmarks/bench_serve.py --run /tmp/ml100k-run [--duration 8] [--concurrency 8]
    python benchmarks/bench_serve.py --run RUN --systems transformer --before-src /tmp/base/src --repeat 3
    python benchmarks/bench_serve.py --synthetic          # builds a tiny cheap run first

Starts ``segrec serve RUN`` (uvicorn, one process) in a subprocess bound to
127.0.0.1 only, waits for ``/healthz``, then drives ``POST /v1/recommend`` from this
process (the load generator: a separate process, so it does not share the server's
GIL) with ``--concurrency`` keep-alive HTTP/1.1 clients (raw asyncio sockets, so the
client costs as little CPU as possible on a 2-core box) for ``--duration`` seconds per
phase, at most ``--max-requests`` per phase. Phases:

* one per routed tier: known users whose segment is routed to that tier;
* ``new-by-items``: new users given the ``--new-items`` (20) most recent items of a real user;
* ``new-by-attributes``: new users given a real user's attributes;
* ``unknown``: unknown ids (popularity fallback);
* ``mixed``: every known user, uniformly.

Prints throughput and client-side p50/p99 latency per phase, the tier that the
server reports for each response, server-side handler time per tier (from
``/metrics``) and the server's resident memory; writes
``benchmarks/results/bench_serve.json``. The server is always stopped.

``--before-src DIR`` also serves every target from another source tree (the server's
``PYTHONPATH=DIR``, e.g. the base commit's ``src`` unpacked under /tmp) on the same run,
so before and after are measured in the same session; ``--repeat N`` runs all targets N
times, interleaved (before, after, before, ...), and the table shows the median of the
repeats, with the load average beside each (the box is shared: expect noise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from _common import git_commit as _commit
from _common import write_json

HOST = "127.0.0.1"  # loopback only, always




def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat), NaN if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# ------------------------------------------------------------------ client
async def _request(reader, writer, path: str, body: bytes | None) -> tuple[int, bytes]:
    if body is None:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    else:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _worker(port: int, bodies: list[bytes], seed: int, deadline: float, budget: list[int],
                  out: list[tuple[float, int, str]]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    rng = random.Random(seed)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            body = bodies[rng.randrange(len(bodies))]
            t0 = time.perf_counter()
            status, data = await _request(reader, writer, "/v1/recommend", body)
            elapsed = time.perf_counter() - t0
            tier = json.loads(data).get("tier", "?") if status == 200 else f"HTTP {status}"
            out.append((elapsed, status, tier))
    finally:
        writer.close()


async def _phase(port: int, bodies: list[bytes], concurrency: int, duration: float,
                 max_requests: int) -> tuple[list[tuple[float, int, str]], float]:
    out: list[tuple[float, int, str]] = []
    budget = [max_requests]
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(*(_worker(port, bodies, i, deadline, budget, out) for i in range(concurrency)))
    return out, time.perf_counter() - start


async def _get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return (await _request(reader, writer, path, None))[1]
    finally:
        writer.close()


# ---------------------------------------------------------------- workload
def _bodies(run: Path, port: int, k: int, n_max: int, seed: int, new_items: int) -> dict[str, list[bytes]]:
    """Request bodies per phase, built from the run's users, segments and routing."""
    from segrec.io import read_table

    rng = np.random.default_rng(seed)
    profiles = json.loads(asyncio.run(_get(port, "/v1/segments")))["segments"]
    routed = {p["segment"]: p["tier"] for p in profiles}
    seg = read_table(run / "segments.parquet")
    seg["tier"] = seg["segment"].map(routed)

    def pick(ids) -> list[str]:
        ids = list(ids)
        return [str(u) for u in rng.choice(ids, size=min(n_max, len(ids)), replace=False)] if ids else []

    def enc(obj) -> bytes:
        return json.dumps(obj).encode()

    phases: dict[str, list[bytes]] = {}
    for tier in sorted(seg["tier"].dropna().unique()):
        users = pick(seg.loc[seg.tier == tier, "user_id"])
        phases[f"tier={tier}"] = [enc({"user_id": u, "k": k}) for u in users]
    # new users from real users' first items / attributes (ids are resampled, so they are unknown)
    fit_items = _fit_histories(run)
    users = pick(fit_items)
    phases["new-by-items"] = [enc({"user_id": f"new-{i}", "recent_items": fit_items[u][-new_items:], "k": k})
                              for i, u in enumerate(users) if fit_items[u]]
    attrs = _attributes(run)
    if attrs:
        phases["new-by-attributes"] = [enc({"user_id": f"new-{i}", "attributes": a, "k": k})
                                       for i, a in enumerate(attrs[:n_max])]
    phases["unknown"] = [enc({"user_id": f"nobody-{i}", "k": k}) for i in range(min(n_max, 500))]
    phases["mixed"] = [enc({"user_id": u, "k": k}) for u in pick(seg["user_id"])]
    return {name: b for name, b in phases.items() if b}


def _fit_histories(run: Path) -> dict[str, list[str]]:
    """External item ids of each user's fit history in time order (the run's ``transformer`` keeps
    them; otherwise the segmented or best system's seen items, in item order)."""
    from segrec.io import load_tensors, read_json, read_table

    manifest = read_json(run / "manifest.json")
    ordered = "transformer" in manifest["systems"]
    name = "transformer" if ordered else "segmented" if "segmented" in manifest["systems"] else \
        manifest["best_system"]
    d = run / "systems" / name
    t = load_tensors(d / "tensors.safetensors")
    users = read_table(d / "users.parquet")["id"].astype(str).to_numpy()
    items = read_table(d / "items.parquet")["id"].astype(str).to_numpy()
    indptr, indices = ((t["state.hist_indptr"], t["state.hist_items"]) if ordered
                       else (t["seen_indptr"], t["seen_indices"]))
    return {u: items[indices[indptr[i]:indptr[i + 1]]].tolist() for i, u in enumerate(users)}


def _attributes(run: Path) -> list[dict]:
    """Random new-user attributes from the levels and numeric columns the run's segmenter uses."""
    from segrec.segment import SegmentationPipeline

    if not (run / "segmenter").is_dir():
        return []
    blocks = SegmentationPipeline.load(run / "segmenter").features.blocks_
    demo = next((b for b in blocks if b.name == "demographics"), None)
    if demo is None:
        return []
    rng = random.Random(0)
    out = []
    for _ in range(500):
        a = {col: rng.choice(levels) for col, levels in demo.levels_.items() if levels}
        a.update({col: round(mean * rng.uniform(0.5, 1.5), 1) for col, mean in demo.numeric_.items()})
        out.append(a)
    return out


# ------------------------------------------------------------------- server
def _start_server(run: Path, port: int, extra: list[str], src: str | None = None) -> subprocess.Popen:
    code = ("import sys; from segrec.cli import main; "
            f"sys.exit(main(['serve', {str(run)!r}, '--host', '{HOST}', '--port', '{port}', "
            f"'--log-level', 'warning', *{extra!r}]))")
    env = dict(os.environ)
    if src is not None:  # serve another source tree (the "before" code) on the same run: first wins
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=env)


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            json.loads(asyncio.run(_get(port, "/healthz")))
            return
        except (OSError, ValueError, asyncio.IncompleteReadError):
            time.sleep(0.25)
    raise RuntimeError(f"server not ready after {timeout:.0f}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _server_tier_times(text: str) -> dict[str, float]:
    sums, counts = {}, {}
    for line in text.splitlines():
        for kind, store in (("_sum", sums), ("_count", counts)):
            prefix = f"segrec_recommend_duration_seconds{kind}{{tier=\""
            if line.startswith(prefix):
                tier = line[len(prefix):].split('"', 1)[0]
                store[tier] = float(line.rsplit(" ", 1)[1])
    return {t: 1e3 * sums[t] / counts[t] for t in sums if counts.get(t)}


def _synthetic_run(out: Path) -> Path:
    """A small routed run (popularity / EASE / local EASE, planted segments) for machines without ml-100k."""
    from segrec.artifacts import save_run
    from segrec.config import load_config
    from segrec.data.synthetic import generate_synthetic
    from segrec.experiment import RunResult
    from segrec.models import EASERecommender, PerSegmentRecommender, PopularityRecommender
    from segrec.route import SegmentedRecommender
    from segrec.segment import SegmentationPipeline
    from segrec.split import temporal_split

    syn = generate_synthetic(n_users=2000, n_items=1000, n_segments=4, seed=0)
    data = syn.to_interactions()
    split = temporal_split(data)
    seg = SegmentedRecommender(
        segmenter=SegmentationPipeline.build("kmeans", n_segments=4, text=False, random_state=0),
        tiers={"global": EASERecommender(reg=200.0),
               "local": PerSegmentRecommender(base="ease", base_params={"reg": 200.0}),
               "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid)
    return save_run(RunResult(load_config(None), data, split, seg.segments_, {"method": "kmeans"},
                              systems={"segmented": seg}, segmenter=seg.segmenter_), out)


def _serve_target(run: Path, label: str, server_args: list[str], args, src: str | None = None,
                  repeat: int = 0) -> tuple[list[dict], dict]:
    """Start one server, run every phase against it, stop it; returns rows and server facts."""
    port = _free_port()
    started = time.perf_counter()
    proc = _start_server(run, port, server_args, src)
    rows = []
    try:
        _wait_ready(proc, port, timeout=600)
        startup_s = time.perf_counter() - started
        rss_start = _rss_mb(proc.pid)
        phases = _bodies(run, port, args.k, args.max_requests, args.seed, args.new_items)
        if args.phases:
            phases = {n: b for n, b in phases.items() if n in args.phases.split(",")}
        for name, bodies in phases.items():
            asyncio.run(_phase(port, bodies, args.concurrency, 30.0, args.warmup))  # warm up
            cpu0 = _cpu_s(proc.pid)
            results, wall = asyncio.run(_phase(port, bodies, args.concurrency, args.duration,
                                               args.max_requests))
            cpu = _cpu_s(proc.pid) - cpu0
            lat = np.array([r[0] for r in results]) * 1e3
            tiers = Counter(r[2] for r in results)
            by = ", ".join(f"{t} {n / len(results):.0%}" for t, n in tiers.most_common(2))
            rows.append({"served": label, "phase": name, "repeat": repeat, "served_by": by,
                         "load_avg_1m": os.getloadavg()[0],
                         "requests": len(results), "errors": sum(1 for r in results if r[1] != 200),
                         "req_per_s": len(results) / wall, "p50_ms": float(np.percentile(lat, 50)),
                         "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
                         "server_cpu_ms_per_req": 1e3 * cpu / max(len(results), 1),
                         "tiers": dict(tiers)})
            print(f"  [{label}] {name}: {len(results)} requests, {len(results) / wall:.0f} req/s, "
                  f"p99 {rows[-1]['p99_ms']:.1f} ms", file=sys.stderr, flush=True)
        metrics = asyncio.run(_get(port, "/metrics")).decode()
        health = json.loads(asyncio.run(_get(port, "/healthz")))
        facts = {"health": health, "handler_ms_per_tier": _server_tier_times(metrics),
                 "rss_mb": {"start": rss_start, "end": _rss_mb(proc.pid)}, "startup_s": startup_s,
                 "src": src or "this checkout"}
    finally:
        _stop(proc)
    return rows, facts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="/tmp/ml100k-run", help="run directory (segrec run --out)")
    parser.add_argument("--synthetic", action="store_true", help="build and serve a small synthetic run")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds per phase (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=20000, help="most requests per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive client connections")
    parser.add_argument("--new-items", type=int, default=20, help="recent items per new-user request")
    parser.add_argument("--before-src", help="also serve every target from this source tree (PYTHONPATH), "
                                             "labelled 'before'")
    parser.add_argument("--repeat", type=int, default=1, help="run all targets this many times, interleaved")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--phases", help="comma-separated subset of phases (default: all)")
    parser.add_argument("--server-args", action="append",
                        help="`segrec serve` flags for one routed server, e.g. '--policy budget "
                             "--budget-fraction 0.3'; repeat for several servers (default: one, as saved)")
    parser.add_argument("--systems", default="",
                        help="also serve these saved systems alone, one server each "
                             "(e.g. local_ease,transformer)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per phase first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_serve.json"))
    args = parser.parse_args(argv)

    tmp = None
    if args.synthetic:
        tmp = tempfile.TemporaryDirectory(prefix="bench-serve-")
        run = _synthetic_run(Path(tmp.name) / "run")
    else:
        run = Path(args.run)
        if not (run / "manifest.json").exists():
            print(f"{run}: not a run directory; build one with `segrec run --out {run}` or pass --synthetic",
                  file=sys.stderr)
            return 2
    targets = [("routed " + (extra or "(saved policy)"), extra.split())
               for extra in (args.server_args or [""])]
    targets += [(name, ["--system", name]) for name in args.systems.split(",") if name]
    trees = [(None, "")] if not args.before_src else [(args.before_src, "before: "), (None, "after: ")]
    rows, facts = [], {}
    try:
        for rep in range(args.repeat):
            for src, prefix in trees:
                for label, server_args in targets:
                    got, facts[f"{prefix}{label} #{rep}"] = _serve_target(run, prefix + label, server_args,
                                                                          args, src, rep)
                    rows += got
    finally:
        if tmp is not None:
            tmp.cleanup()
    frame = pd.DataFrame(rows).drop(columns=["tiers", "repeat"])
    numeric = ["load_avg_1m", "requests", "errors", "req_per_s", "p50_ms", "p99_ms", "max_ms",
               "server_cpu_ms_per_req"]
    table = frame.groupby(["served", "phase"], sort=False).agg(
        {"served_by": "first", **{c: "median" for c in numeric}})
    with pd.option_context("display.width", 220, "display.max_colwidth", 50, "display.float_format",
                           "{:.2f}".format):
        print(f"== serve: {run}, {args.concurrency} clients, {args.duration:.0f}s per phase, k={args.k}, "
              f"median of {args.repeat} run(s); client-side latency over loopback ==")
        print(table.to_string())
    for label, f in facts.items():
        print(f"[{label}] system {f['health'].get('system')}, policy {f['health'].get('policy')}; "
              "handler ms per tier (from /metrics): "
              + ", ".join(f"{t} {ms:.2f}" for t, ms in sorted(f["handler_ms_per_tier"].items()))
              + f"; RSS {f['rss_mb']['start']:.0f} -> {f['rss_mb']['end']:.0f} MB; ready in "
              f"{f['startup_s']:.1f} s")
    record = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "commit": _commit(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                         "python": platform.python_version(),
                                         "load_avg_at_end": os.getloadavg()},
        "parameters": {"run": str(run), "duration": args.duration, "concurrency": args.concurrency,
                       "k": args.k, "max_requests": args.max_requests, "server_args": args.server_args,
                       "systems": args.systems, "new_items": args.new_items, "before_src": args.before_src,
                       "repeat": args.repeat},
        "rows": rows, "servers": facts,
    }
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
