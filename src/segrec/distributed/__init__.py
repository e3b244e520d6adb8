"""Where per-segment work runs: this process (default) or a Ray cluster (extra ``ray``).

``LocalExecutor`` needs nothing; ``RayExecutor`` (``segrec.distributed.ray``) is the
only place segrec imports Ray, and is loaded only when asked for.
"""

from .executor import Executor, LocalExecutor, TaskFailure, make_executor

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "TaskFailure", "make_executor"]


def __getattr__(name: str):
    # deferred: importing segrec.distributed must not import Ray (DESIGN.md: extras on use)
    if name == "RayExecutor":
        from .ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
