"""Where per-segment work runs: this process (default) or a Ray cluster (extra ``ray``).

``LocalExecutor`` needs nothing; ``RayExecutor`` (``segrec.distributed.ray``) is the
only place segrec imports Ray, and is loaded only when asked for.
"""

from typing import Any

from .executor import Executor, LocalExecutor, TaskFailure

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "TaskFailure", "make_executor"]


def __getattr__(name: str):
    # deferred: importing segrec.distributed must not import Ray (DESIGN.md: extras on use)
    if name == "RayExecutor":
        from .ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_executor(settings: Any | None = None) -> Executor:
    """The executor a run's ``[ray]`` settings ask for.

    Args:
        settings: A :class:`segrec.config.RayConfig` (or anything with its fields);
            None gives the local executor.

    Returns:
        :class:`LocalExecutor`, or a ``RayExecutor`` (imports Ray; extra ``ray``).

    Raises:
        MissingDependencyError: ``executor = "ray"`` and Ray is not installed.
    """
    if settings is None or getattr(settings, "executor", "local") == "local":
        return LocalExecutor(max_retries=getattr(settings, "max_retries", 1))
    from .ray import RayExecutor

    return RayExecutor.from_config(settings)
