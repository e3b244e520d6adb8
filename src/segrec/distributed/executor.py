"""Where independent pieces of work run: in this process (default) or as Ray tasks.

Per-segment work (one local model per segment, one adapter θ_k per segment, one
segmentation per candidate K) is a list of independent tasks over the same
training data. An :class:`Executor` runs ``fn(shared, item)`` for every item and
returns the results in item order. :class:`LocalExecutor` runs them one after the
other here and needs nothing; ``segrec.distributed.ray.RayExecutor`` (extra
``ray``) runs them as Ray tasks, with ``shared`` put into the object store once.

Faults (issue 6): a task that raises is retried up to ``max_retries`` times; with
``on_error="return"`` a task that still fails comes back as a :class:`TaskFailure`
in its slot, so the caller can put that segment on a fallback and keep every other
segment's result.

Example:
    >>> ex = LocalExecutor()
    >>> ex.map(lambda base, x: base + x, [1, 2, 3], shared=10)
    [11, 12, 13]
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import ConfigError, ModelFitError

__all__ = ["Executor", "LocalExecutor", "TaskFailure", "failures", "raise_if_all_failed"]

log = logging.getLogger(__name__)

OnError = Literal["raise", "return"]

#: Marks "no shared argument": ``fn(item)`` is called instead of ``fn(shared, item)``.
_NO_SHARED: Any = object()


@dataclass(frozen=True)
class TaskFailure:
    """A task that failed on every attempt (returned in its slot with ``on_error="return"``).

    Attributes:
        label: The task's label (e.g. ``"segment 3"``).
        error: ``"ExceptionType: message"`` of the last attempt.
        attempts: How many times the task was run.
        killed: True when the process running it died (e.g. out of memory, ``os._exit``,
            a lost node) rather than the task raising.
    """

    label: str
    error: str
    attempts: int
    killed: bool = False

    def __str__(self) -> str:
        how = "worker process died" if self.killed else "raised"
        return f"{self.label}: {how} on all {self.attempts} attempt(s): {self.error}"


@runtime_checkable
class Executor(Protocol):
    """Runs independent tasks and returns their results in order.

    That is the whole protocol. :class:`LocalExecutor` and ``RayExecutor`` add
    ``fit_data_parallel(model, train, valid=, context=)`` (the global Transformer on Ray
    Train) and ``close()``; callers use them when present.
    """

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        shared: Any = _NO_SHARED,
        labels: Sequence[str] | None = None,
        on_error: OnError = "raise",
    ) -> list[Any]:
        """``[fn(shared, item) for item in items]`` (``fn(item)`` without ``shared``).

        Args:
            fn: A picklable function (module-level, for the Ray executor).
            items: One task per item.
            shared: Data every task reads (e.g. the training data), shipped once.
            labels: Names of the tasks for logs and failures (default ``"task i"``).
            on_error: ``raise``: a task that fails on every attempt raises its own
                exception here (a dead worker: :class:`~segrec.errors.ModelFitError`);
                ``return``: its slot holds a :class:`TaskFailure` and the others are kept.

        Returns:
            Results in item order.
        """
        ...


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def task_labels(labels: Sequence[str] | None, n: int) -> list[str]:
    """The given labels, or ``task 0..n-1``; checks the count."""
    if labels is None:
        return [f"task {i}" for i in range(n)]
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ConfigError(f"executor.map: {len(labels)} labels for {n} items")
    return labels


class LocalExecutor:
    """Runs tasks one after another in this process (the default; Ray not needed).

    A task that raises is retried up to ``max_retries`` times, like a Ray task, so
    a run behaves the same under both executors. A task that kills the process
    cannot be survived here; use the Ray executor for that.

    Args:
        max_retries: Extra attempts per failing task.

    Example:
        >>> LocalExecutor().map(str.upper, ["a", "b"])
        ['A', 'B']
    """

    def __init__(self, max_retries: int = 1):
        if max_retries < 0:
            raise ConfigError(f"LocalExecutor: max_retries must be >= 0; got {max_retries}",
                              key="max_retries")
        self.max_retries = int(max_retries)

    def __repr__(self) -> str:
        return f"LocalExecutor(max_retries={self.max_retries})"

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        shared: Any = _NO_SHARED,
        labels: Sequence[str] | None = None,
        on_error: OnError = "raise",
    ) -> list[Any]:
        """Run ``fn`` on every item here, in order; see :meth:`Executor.map`."""
        items = list(items)
        names = task_labels(labels, len(items))
        if not items:
            return []
        out: list[Any] = []
        for item, label in zip(items, names, strict=True):
            start = time.perf_counter()
            for attempt in range(1, self.max_retries + 2):
                try:
                    out.append(fn(item) if shared is _NO_SHARED else fn(shared, item))
                    break
                except Exception as exc:  # a task's own error: retry, then report it
                    log.warning("%s failed (attempt %d of %d): %s", label, attempt, self.max_retries + 1,
                                _describe(exc))
                    log.debug("%s", traceback.format_exc())
                    if attempt <= self.max_retries:
                        continue
                    if on_error == "raise":
                        raise
                    out.append(TaskFailure(label, _describe(exc), attempt))
            log.debug("%s done in %.2fs", label, time.perf_counter() - start)
        return out

    def fit_data_parallel(self, model: Any, train: Any, *, valid: Any = None, context: Any = None) -> Any:
        """One process: a plain ``model.fit(train, valid=valid, context=context)``."""
        return model.fit(train, valid=valid, context=context)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def failures(results: Sequence[Any]) -> dict[int, TaskFailure]:
    """Positions and failures among ``map`` results (``on_error="return"``)."""
    return {i: r for i, r in enumerate(results) if isinstance(r, TaskFailure)}


def raise_if_all_failed(results: Sequence[Any], what: str) -> None:
    """Raise when every task failed: a fallback for *all* segments would hide a bug.

    Raises:
        ModelFitError: All of ``results`` (at least one) are failures; names the first.
    """
    if results and all(isinstance(r, TaskFailure) for r in results):
        raise ModelFitError(f"{what}: every one of {len(results)} tasks failed; first: {results[0]}")
