"""Prometheus text-format counters and histograms for the HTTP server, without a client library.

One :class:`ServerMetrics` per app (never module-level), guarded by a lock
because FastAPI runs sync handlers in a thread pool.
"""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["LATENCY_BUCKETS", "ServerMetrics"]

#: Histogram bucket upper bounds in seconds: the small tier's target is p99 <= 20 ms,
#: so the buckets are finest between 0.5 and 50 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    __slots__ = ("counts", "sum", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += seconds
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, cum = [], 0
        sep = "," if labels else ""
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            cum += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cum}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.n}")
        return out


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServerMetrics:
    """Request counts, latency histograms, per-tier counts, reloads.

    Example:
        >>> m = ServerMetrics()
        >>> m.observe_request("GET", "/healthz", 200, 0.001)
        >>> 'segrec_requests_total{method="GET",path="/healthz",status="200"} 1' in m.render()
        True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self.tier_latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self.tiers: dict[tuple[str, bool], int] = defaultdict(int)
        self.reloads: dict[str, int] = defaultdict(int)
        self.in_flight = 0
        self.info: dict[str, str] = {}

    def start(self) -> None:
        """A request began."""
        with self._lock:
            self.in_flight += 1

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """A request finished (``path`` is the route template, not the raw URL)."""
        with self._lock:
            self.requests[(method, path, int(status))] += 1
            self.latency[path].observe(seconds)

    def finish(self) -> None:
        """A request ended (after :meth:`observe_request`)."""
        with self._lock:
            self.in_flight -= 1

    def observe_tier(self, tier: str, fallback: bool, seconds: float) -> None:
        """A recommendation was served by ``tier`` in ``seconds`` of handler time."""
        with self._lock:
            self.tiers[(tier, bool(fallback))] += 1
            self.tier_latency[tier].observe(seconds)

    def observe_reload(self, ok: bool) -> None:
        """An artifact reload succeeded or failed."""
        with self._lock:
            self.reloads["ok" if ok else "error"] += 1

    def render(self) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        with self._lock:
            lines = ["# HELP segrec_requests_total HTTP requests by method, route and status.",
                     "# TYPE segrec_requests_total counter"]
            for (method, path, status), n in sorted(self.requests.items()):
                lines.append(f'segrec_requests_total{{method="{method}",path="{_escape(path)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP segrec_request_duration_seconds Request latency by route.",
                      "# TYPE segrec_request_duration_seconds histogram"]
            for path, hist in sorted(self.latency.items()):
                lines += hist.lines("segrec_request_duration_seconds", f'path="{_escape(path)}"')
            lines += ["# HELP segrec_recommendations_total Recommendation requests by serving tier.",
                      "# TYPE segrec_recommendations_total counter"]
            for (tier, fallback), n in sorted(self.tiers.items()):
                lines.append(f'segrec_recommendations_total{{tier="{_escape(tier)}",'
                             f'fallback="{str(fallback).lower()}"}} {n}')
            lines += ["# HELP segrec_recommend_duration_seconds Recommendation handler time by tier.",
                      "# TYPE segrec_recommend_duration_seconds histogram"]
            for tier, hist in sorted(self.tier_latency.items()):
                lines += hist.lines("segrec_recommend_duration_seconds", f'tier="{_escape(tier)}"')
            lines += ["# HELP segrec_reloads_total Artifact reloads by result.",
                      "# TYPE segrec_reloads_total counter"]
            for result, n in sorted(self.reloads.items()):
                lines.append(f'segrec_reloads_total{{result="{result}"}} {n}')
            lines += ["# HELP segrec_in_flight_requests Requests being handled now.",
                      "# TYPE segrec_in_flight_requests gauge", f"segrec_in_flight_requests {self.in_flight}"]
            if self.info:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(self.info.items()))
                lines += ["# HELP segrec_artifact_info The artifact being served.",
                          "# TYPE segrec_artifact_info gauge", f"segrec_artifact_info{{{labels}}} 1"]
        return "\n".join(lines) + "\n"
