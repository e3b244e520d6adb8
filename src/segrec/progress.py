"""Progress of long work, for whoever is watching: training loops report, the CLI listens.

The epoch loop (:func:`segrec.models._seqtrain.run_loop`) calls :func:`report` once
when it starts and after every epoch; ``segrec run`` registers a listener with
:func:`listening` and, off a terminal, turns what it hears into a log line at least
every 30 seconds (:class:`Heartbeat`). A module-level registry rather than an
argument, because the loop runs deep inside models whose configs are frozen,
JSON-saved values that cannot carry a callback. Listeners see events from every
thread of this process; Ray workers in other processes report to nobody.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["Heartbeat", "listening", "report"]

log = logging.getLogger(__name__)

Event = dict[str, Any]
_listeners: list[Callable[[Event], None]] = []
_lock = threading.Lock()


def report(event: Event) -> None:
    """Tell every listener about ``event`` (e.g. ``{"label", "epoch", "epochs", "loss", "ndcg@10"}``).

    A listener that fails is logged and skipped: watching must never break the work.
    """
    if not _listeners:
        return
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:  # pragma: no cover - a broken listener is a bug in the watcher
            log.debug("progress listener failed", exc_info=True)


@contextlib.contextmanager
def listening(listener: Callable[[Event], None]) -> Iterator[None]:
    """Register ``listener`` for :func:`report` events inside the ``with`` block."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


class Heartbeat:
    """A background thread that prints what the run is doing every ``interval`` seconds.

    ``stage(msg)`` names the current step (what ``segrec run`` prints anyway);
    :meth:`__call__` receives loop events. Each line says the step, its elapsed time
    and, inside an epoch loop, the epoch, the last loss and validation NDCG@10 and an
    estimate of the time left (an upper bound: early stopping may end sooner).
    """

    def __init__(self, out: TextIO, start: float, interval: float = 30.0):
        self.out, self.start, self.interval = out, start, interval
        self._stage, self._stage_start = "starting", time.perf_counter()
        self._loop: Event | None = None
        self._loop_start = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def stage(self, message: str) -> None:
        """A new step has begun."""
        self._stage, self._stage_start, self._loop = message, time.perf_counter(), None

    def __call__(self, event: Event) -> None:
        """A loop event: ``epoch`` 0 starts a loop, later epochs carry its figures."""
        if event.get("epoch", 0) == 0:
            self._loop_start = time.perf_counter()
        self._loop = dict(event)

    def line(self) -> str:
        """The status line for now."""
        now = time.perf_counter()
        text = f"[{now - self.start:6.1f}s] still {self._stage} ({now - self._stage_start:.0f}s so far)"
        loop = self._loop
        if loop:
            epoch, epochs = int(loop.get("epoch", 0)), int(loop.get("epochs", 0) or 0)
            text += f"; {loop.get('label', 'model')}: epoch {epoch}/{epochs} done"
            if loop.get("loss") is not None and math.isfinite(loop["loss"]):
                text += f", loss {loop['loss']:.4f}"
            if loop.get("ndcg@10") is not None and math.isfinite(loop["ndcg@10"]):
                text += f", valid NDCG@10 {loop['ndcg@10']:.4f}"
            spent = now - self._loop_start
            if epoch > 0 and epochs > epoch:
                left = spent / epoch * (epochs - epoch)
                text += (f"; at most ~{_duration(left)} left ({epochs - epoch} epochs; "
                         "early stopping may end sooner)")
        return text

    def _beat(self) -> None:
        while not self._wake.wait(self.interval):
            print(self.line(), file=self.out, flush=True)

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._beat, name="segrec-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
