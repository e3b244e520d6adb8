"""Where a run's time and memory go: wall seconds, CPU seconds and peak memory of each stage.

``segrec run`` wraps each stage (load, split, features, segmentation, each system's
fit, routing, evaluation, save) in :meth:`StageLog.stage`; the table is printed at
the end of the run and kept in ``results.json`` under ``stages``.

Peak memory per stage is the process's high-water mark (Linux ``VmHWM``), which is
reset at the start of every stage through ``/proc/self/clear_refs``, so each row
shows the most that stage itself held, not the run's peak so far. Where the reset is
not possible (another OS, a locked-down /proc) the column is the peak *so far* and
:attr:`StageLog.peak_is_per_stage` says so. Memory of Ray worker processes is not
counted (it is not this process's).
"""

from __future__ import annotations

import contextlib
import re
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .resources import trim_heap

__all__ = ["Stage", "StageLog", "peak_rss_mb"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (MB) since start or the last reset."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", _STATUS.read_text())
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 1024)


def _reset_peak() -> bool:
    """Start a new high-water mark at the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Stage:
    """One timed stage.

    Attributes:
        name: What ran, e.g. ``fit ease`` or ``segmentation``.
        seconds: Wall seconds.
        cpu_seconds: CPU seconds of this process (user + system, all its threads).
        peak_rss_mb: Most resident memory during the stage (see the module docstring).
        detail: Stage-specific figures, e.g. a model's ``tuning_s`` / ``refit_s``.
    """

    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able row (figures rounded for reading)."""
        return {"stage": self.name, "seconds": round(self.seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
                **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.detail.items()}}


class StageLog:
    """An ordered record of the stages of one run; stages may nest (a parent's peak covers its children)."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self._open: list[Stage] = []
        self.peak_is_per_stage = True

    @contextlib.contextmanager
    def stage(self, name: str, **detail: Any) -> Iterator[Stage]:
        """Time the body as stage ``name``; the yielded :class:`Stage` takes extra ``detail``."""
        for parent in self._open:  # what the parents held before this stage started
            parent.peak_rss_mb = max(parent.peak_rss_mb, peak_rss_mb())
        self.peak_is_per_stage = _reset_peak() and self.peak_is_per_stage
        row = Stage(name, detail=dict(detail))
        self.stages.append(row)
        self._open.append(row)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield row
        finally:
            row.seconds = time.perf_counter() - wall
            row.cpu_seconds = time.process_time() - cpu
            row.peak_rss_mb = max(row.peak_rss_mb, peak_rss_mb())
            trim_heap()  # what this stage freed is not carried into the next stage's peak
            self._open.pop()
            for parent in self._open:
                parent.peak_rss_mb = max(parent.peak_rss_mb, row.peak_rss_mb)

    def seconds(self, name: str) -> float:
        """Wall seconds of the first stage called ``name`` (0 if none)."""
        return next((s.seconds for s in self.stages if s.name == name), 0.0)

    def peak_mb(self) -> float:
        """The run's peak resident memory (MB): the largest stage peak, or the current high-water mark.

        Resetting the high-water mark per stage also resets what the kernel reports at
        exit (``ru_maxrss``, ``/usr/bin/time -v``): those cover only the time since the
        last stage began, so this is the number to quote for the whole run.
        """
        return max([peak_rss_mb(), *(s.peak_rss_mb for s in self.stages)])

    def to_records(self) -> list[dict[str, Any]]:
        """The stages as JSON-able rows, in the order they started."""
        return [s.to_dict() for s in self.stages]

    def format(self) -> str:
        """A plain-text table for the terminal: stage, wall s, CPU s, peak MB, details."""
        if not self.stages:
            return ""
        width = max(len(s.name) for s in self.stages)
        head = f"{'stage':<{width}}  {'wall s':>8}  {'cpu s':>8}  {'peak MB':>8}"
        lines = [head]
        for s in self.stages:
            extra = "  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in s.detail.items())
            lines.append(f"{s.name:<{width}}  {s.seconds:8.1f}  {s.cpu_seconds:8.1f}  {s.peak_rss_mb:8.0f}"
                         + (f"  {extra}" if extra else ""))
        if not self.peak_is_per_stage:
            lines.append("(peak MB is the peak so far: the per-stage high-water mark cannot be reset here)")
        lines.append(f"peak resident memory of the run: {self.peak_mb():.0f} MB")
        return "\n".join(lines)
