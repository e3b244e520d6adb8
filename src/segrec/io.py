"""Artifact I/O: atomic directories, safetensors, JSON and Parquet; never pickle.

An artifact directory is first written under a temporary sibling name and then
renamed into place, so a crash mid-save leaves either the old artifact or the new
one, never a half-written directory that ``load`` would accept.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import SegrecError

__all__ = [
    "atomic_dir",
    "atomic_write_text",
    "load_tensors",
    "read_json",
    "read_table",
    "save_tensors",
    "write_json",
    "write_table",
]


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` on success.

    On an exception the temporary directory is removed and ``path`` is untouched.
    An existing ``path`` is swapped out (renamed aside, then deleted) only after
    the new content is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        _fsync_dir(tmp)
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old artifact
        elif path.exists():
            # Two renames leave a moment with no ``path`` at all: a crash there loses
            # the old artifact (it survives only as .name.old-*), hence _exchange first.
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step; False where the OS cannot.

    Linux's ``renameat2(RENAME_EXCHANGE)`` (kernel 3.15, glibc 2.28) swaps both
    names at once, so ``b`` always names a complete artifact, even under SIGKILL
    (found by tests/reliability/test_crash_safety.py).
    """
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel or file system
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(directory: Path) -> None:
    for f in directory.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (numpy scalars and arrays allowed)."""
    Path(path).write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, raising :class:`SegrecError` naming the file if it is missing or bad."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SegrecError(f"{path}: missing; is this a segrec artifact directory?") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # bytes that are not UTF-8 text too
        raise SegrecError(f"{path}: corrupt JSON ({exc})") from exc


def save_tensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Save named numpy arrays with safetensors (contiguous copies)."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


def load_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load named arrays saved by :func:`save_tensors`; a corrupt file is a SegrecError."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError as exc:
        raise SegrecError(f"{path}: missing tensor file") from exc
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise SegrecError(f"{path}: corrupt or truncated tensor file ({exc})") from exc


def write_table(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet."""
    frame.to_parquet(path, index=False)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet table written by :func:`write_table`."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise SegrecError(f"{path}: missing table") from exc
    except Exception as exc:
        raise SegrecError(f"{path}: corrupt Parquet table ({exc})") from exc
