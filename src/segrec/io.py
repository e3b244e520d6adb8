"""Artifact I/O: atomic directories, safetensors, JSON and Parquet; never pickle.

An artifact directory is first written under a temporary sibling name and then
renamed into place, so a crash mid-save leaves either the old artifact or the new
one, never a half-written directory that ``load`` would accept.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import SegrecError

log = logging.getLogger(__name__)

__all__ = [
    "atomic_dir",
    "atomic_write_text",
    "load_tensors",
    "read_json",
    "read_table",
    "save_tensors",
    "sweep_stale",
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
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    owner = tmp.with_name(tmp.name + _OWNER_SUFFIX)
    # Outside tmp on purpose: a file inside would end up in the artifact and its manifest.
    owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
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
    finally:
        owner.unlink(missing_ok=True)


#: Sibling file naming the process that owns a ``.name.tmp-*`` directory.
_OWNER_SUFFIX = ".owner"
#: Leftovers without an owner file are deleted only when untouched this long (seconds),
#: so a save that is just starting in another process is never swept away.
STALE_AFTER_S = 3600.0


def _owner_alive(owner: Path) -> bool | None:
    """True/False when ``owner`` names a process on this host; None when unknown."""
    try:
        info = json.loads(owner.read_text(encoding="utf-8"))
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None  # another machine on a shared file system: cannot tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(path: str | os.PathLike, *, now: float | None = None) -> list[Path]:
    """Delete what killed saves of ``path`` left behind; returns the removed paths.

    A save killed mid-way (SIGKILL, power loss) leaves a ``.name.tmp-*`` directory that
    nothing else would ever delete. One is stale when the process named in its owner
    file is gone, or, without a readable owner file, when it is older than
    :data:`STALE_AFTER_S`. ``.name.old-*`` directories (the previous artifact, mid-swap)
    are removed only while ``path`` itself exists, since otherwise they are the only copy.
    """
    path = Path(path)
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.glob(f".{glob.escape(path.name)}.*-*"):
        kind = entry.name[len(path.name) + 2:].split("-", 1)[0]
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        if kind == "tmp" and entry.name.endswith(_OWNER_SUFFIX):
            if not entry.with_name(entry.name[: -len(_OWNER_SUFFIX)]).exists() and age > 60:
                entry.unlink(missing_ok=True)  # its directory is gone; the save ended
            continue
        if kind == "tmp" and entry.is_dir():
            owner = entry.with_name(entry.name + _OWNER_SUFFIX)
            alive = _owner_alive(owner) if owner.exists() else None
            if alive is False or (alive is None and age > STALE_AFTER_S):
                shutil.rmtree(entry, ignore_errors=True)
                owner.unlink(missing_ok=True)
                removed.append(entry)
        elif kind == "old" and entry.is_dir() and path.exists() and age > STALE_AFTER_S:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed:
        log.info("removed %d leftover(s) of interrupted saves next to %s", len(removed), path)
    return removed


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
    except (FileNotFoundError, NotADirectoryError) as exc:  # the artifact "directory" is a file
        raise SegrecError(f"{path}: missing; is this a segrec artifact directory?") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # bytes that are not UTF-8 text too
        raise SegrecError(f"{path}: corrupt JSON ({exc})") from exc


#: safetensors dtype codes, in the order the format's reference writer sorts tensors by
#: (descending), so the files are byte-identical to ``safetensors.numpy.save_file``'s.
_ST_DTYPES = {np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
              np.dtype(np.int16): "I16", np.dtype(np.uint16): "U16", np.dtype(np.float16): "F16",
              np.dtype(np.int32): "I32", np.dtype(np.uint32): "U32", np.dtype(np.float32): "F32",
              np.dtype(np.float64): "F64", np.dtype(np.int64): "I64", np.dtype(np.uint64): "U64"}
_ST_ORDER = ("BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "F64", "I64", "U64")


def save_tensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Save named numpy arrays in the safetensors format, streaming them to the file.

    ``safetensors.numpy.save_file`` first copies every array into one bytes object, a
    second 1.4 GB at peak for a 19k-item EASE; this writes the same bytes (header, then
    each array's buffer) without that copy. :func:`load_tensors` / safetensors read it.
    """
    arrays = {}
    for name, value in tensors.items():
        a = np.ascontiguousarray(value)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype not in _ST_DTYPES:
            raise SegrecError(f"{path}: cannot save tensor {name!r} of dtype {a.dtype}")
        arrays[name] = a
    names = sorted(arrays, key=lambda k: (-_ST_ORDER.index(_ST_DTYPES[arrays[k].dtype]), k))
    header, offset = {}, 0
    for name in names:
        a = arrays[name]
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for name in names:
            if arrays[name].nbytes:
                fh.write(memoryview(arrays[name].reshape(-1)).cast("B"))


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
