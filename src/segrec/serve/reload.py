"""What an app serves and how it is swapped: the served router, its generation, reloads.

Each request reads :attr:`Serving.served` once when it starts; a reload builds a new
:class:`_Served` in a worker thread and swaps it in with one reference assignment, so
in-flight requests finish on the artifact they began with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .metrics import ServerMetrics

log = logging.getLogger("segrec.serve.http")  # the logger name the server always used


class _Served:
    """The router being served, with its generation; replaced whole on reload."""

    __slots__ = ("router", "path", "generation", "profiles", "loaded_at")

    def __init__(self, router: Any, path: Path | None, generation: int, profiles: list[dict[str, Any]]):
        self.router = router
        self.path = path
        self.generation = generation
        self.profiles = profiles
        self.loaded_at = time.time()


def _default_loader(**router_options: Any) -> Callable[[Path], Any]:
    def load(path: Path):
        from ..artifacts import load_run

        return load_run(path).router(**router_options)

    return load


def _profiles(router: Any) -> list[dict[str, Any]]:
    items = None
    path = router.info.get("path")
    if path and (Path(path) / "items.parquet").exists():
        from ..io import read_table

        table = read_table(Path(path) / "items.parquet")
        items = table.set_index(table["item_id"].astype(str)).reindex(router.model.item_vocab_.ids)
    return router.segment_profiles(item_table=items)


class Serving:
    """The app's one piece of state: the served artifact, and reloading it one at a time."""

    def __init__(self, load: Callable[[Path], Any], router: Any, path: Path | None,
                 metrics: ServerMetrics):
        self.load = load
        self.metrics = metrics
        self.served = _Served(router, path, 1, _profiles(router))
        self._lock = asyncio.Lock()
        self._set_info(self.served)

    def _set_info(self, served: _Served) -> None:
        info = served.router.info
        self.metrics.info = {"path": str(served.path or info.get("path", "")),
                             "generation": str(served.generation), "system": str(info.get("system", "")),
                             "policy": str(info.get("policy", "")),
                             "fingerprint": str(info.get("data_fingerprint", ""))}

    async def reload(self, new_path: Path | None) -> _Served:
        """Load ``new_path`` (default: the current directory) and swap it in; returns the new one."""
        from starlette.concurrency import run_in_threadpool

        async with self._lock:  # one reload at a time; requests keep flowing meanwhile
            old = self.served
            target = new_path or old.path
            if target is None:
                raise ConfigError("this server was started from an in-memory router; reload needs a path")
            try:
                router = await run_in_threadpool(self.load, target)
                profiles = await run_in_threadpool(_profiles, router)
            except Exception:
                self.metrics.observe_reload(False)
                raise
            served = _Served(router, target, old.generation + 1, profiles)
            self.served = served  # the atomic swap
            self._set_info(served)
            self.metrics.observe_reload(True)
            log.info("reloaded %s (generation %d)", target, served.generation)
            return served


def _reload_target(text: str, root: Path | None) -> Path:
    """A reload path, checked: a directory inside ``root`` once links are resolved.

    Raises:
        ConfigError: (422) It is not, or it cannot be resolved (NUL byte, too long).
    """
    if root is None:
        raise ConfigError("this server has no reload root; start it from a run directory", key="path")
    if "\x00" in text:
        raise ConfigError("reload path must not contain NUL bytes", key="path")
    try:
        base = Path(os.path.realpath(root))
        target = Path(os.path.realpath(base / text))  # an absolute text replaces base
        inside = target == base or base in target.parents
        is_dir = inside and target.is_dir()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"reload path {text[:80]!r} cannot be used ({type(exc).__name__})",
                          key="path") from None
    if not inside:
        raise ConfigError(f"reload path {text[:80]!r} is outside the reload root {base}; the server only "
                          "loads runs from there (segrec serve --reload-root)", key="path")
    if not is_dir:
        raise ConfigError(f"reload path {text[:80]!r} is not a directory", key="path")
    return target
