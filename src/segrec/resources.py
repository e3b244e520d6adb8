"""Machine facts: memory left (to refuse a fit that cannot fit), bf16 matmuls, heap trimming.

The library never reads environment variables for this: the figure comes from the
OS (Linux ``MemAvailable`` in ``/proc/meminfo``, else ``sysconf``). Tests replace
:func:`available_memory` (``monkeypatch.setattr(segrec.resources, "available_memory", ...)``),
so callers must look it up through the module at call time.

Example:
    >>> require_memory(1024, what="a tiny buffer", remedy="nothing to do")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ResourceError

__all__ = ["available_memory", "cpu_has_native_bf16", "format_bytes", "require_memory", "trim_heap",
           "use_bf16"]

_MEMINFO = Path("/proc/meminfo")
#: Share of the available memory a single allocation plan may use: the rest is left for the
#: process's other live objects and the OS page cache, which ``MemAvailable`` counts as free.
USABLE_SHARE = 0.85


def available_memory() -> int | None:
    """Bytes of memory the OS can give this process now, or None when it cannot tell."""
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``1.4 GB`` style (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop always returns


def require_memory(needed: int, *, what: str, remedy: str) -> None:
    """Raise :class:`ResourceError` when ``needed`` bytes exceed what the machine can spare.

    Args:
        needed: Bytes the planned computation holds at its peak.
        what: What needs them, e.g. ``"EASE on 60,000 items (a 60,000 x 60,000 float32 matrix)"``.
        remedy: What the user can do instead (one sentence).

    Raises:
        ResourceError: Naming ``what``, the memory needed and available, and ``remedy``.
    """
    from . import resources  # through the module, so a test's replacement is seen

    avail = resources.available_memory()
    if avail is None or needed <= USABLE_SHARE * avail:
        return
    raise ResourceError(f"{what} needs {format_bytes(needed)} of memory but only {format_bytes(avail)} "
                        f"is available; {remedy}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX; Linux flags).

    There oneDNN's bf16 matmuls ran 4-9x faster than MKL's fp32 ones on the model's
    shapes (AMD EPYC Zen 5, one thread); without the instructions bf16 is emulated.
    Read from /proc/cpuinfo: a fixed property of the machine, so the choice (and the
    trained model) does not depend on the moment's load.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def use_bf16(precision: str, device: str) -> bool:
    """Whether matmuls autocast to bf16 for a ``precision`` setting (auto / bf16 / fp32) on ``device``.

    ``auto``: on CUDA, and on CPUs with native bf16 (:func:`cpu_has_native_bf16`); the one
    rule the Transformer, its adapters, Mult-VAE and the text encoder share.
    """
    if precision != "auto":
        return precision == "bf16"
    kind = str(device).split(":", 1)[0]
    return kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16())


def trim_heap() -> bool:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``); False where there is none.

    Arrays freed by a finished stage (a fit's optimiser state, a Gram matrix's
    temporaries) often stay in glibc's heap, counted in the process's resident
    memory, until something calls this; the run calls it between stages so the
    next stage's peak is what that stage needs, not what earlier ones left behind.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


_LIBC = None
