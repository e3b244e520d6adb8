"""Artifact I/O: atomic directories, safetensors, JSON and Parquet; never pickle.

An artifact directory is first written under a temporary sibling name and then
renamed into place, so a crash mid-save leaves either the old artifact or the new
one, never a half-written directory that ``load`` would accept.
"""

from __future__ import annotations

import contextlib
import contextvars
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import SegrecError

log = logging.getLogger(__name__)

__all__ = [
    "ARTIFACT_MARKERS",
    "atomic_dir",
    "check_replaceable",
    "confined_reads",
    "atomic_write_text",
    "load_tensors",
    "read_json",
    "read_table",
    "save_tensors",
    "sweep_stale",
    "write_json",
    "write_table",
]


#: files that mark a directory as something segrec wrote (a run, a model, a segmentation)
ARTIFACT_MARKERS = ("manifest.json", "model.json", "segmentation.json")


def check_replaceable(path: str | os.PathLike, *, what: str = "output directory") -> str:
    """Whether segrec may write an artifact directory at ``path``; raises when it may not.

    A directory is writable when it is absent, empty, or an artifact segrec wrote
    (recognised by one of :data:`ARTIFACT_MARKERS`). Anything else (a file, a link,
    the current directory, a directory of the user's own files) is refused, since
    replacing it would delete files segrec did not write.

    Returns:
        ``"new"`` (absent), ``"empty"`` or ``"artifact"`` (a previous artifact).

    Raises:
        SegrecError: ``path`` must not be replaced (the message says why and what to do).
    """
    path = Path(path)
    if path.is_symlink():
        raise SegrecError(f"{what} {path} is a symbolic link; pass the directory it points to, or a new path")
    if not path.exists():
        _check_parent_writable(path, what)
        return "new"
    if not path.is_dir():
        raise SegrecError(f"{what} {path} exists and is a file, not a directory; choose a new directory path")
    here = Path.cwd().resolve()
    resolved = path.resolve()
    if resolved == here or resolved in here.parents:
        raise SegrecError(f"{what} {path} is the current directory (or contains it); pass a new "
                          "sub-directory instead, e.g. segrec-out")
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise SegrecError(f"{what} {path} cannot be read ({exc.strerror}); choose another directory") from exc
    if not entries:
        _check_parent_writable(path, what)
        return "empty"
    if any((path / m).is_file() and not (path / m).is_symlink() for m in ARTIFACT_MARKERS):
        _check_parent_writable(path, what)
        return "artifact"
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise SegrecError(f"{what} {path} already holds files segrec did not write ({shown}); segrec replaces "
                      "its output directory whole, so choose a new or empty directory")


def _check_parent_writable(path: Path, what: str) -> None:
    """The directory that will receive ``path``'s temporary sibling must be writable (checked up front)."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SegrecError(f"{what} {path}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SegrecError(f"{what} {path}: cannot write in {parent} (permission denied); choose another path")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike,
               discard: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` on success.

    On an exception the temporary directory is removed and ``path`` is untouched.
    An existing ``path`` is swapped out (renamed aside, then deleted) only after
    the new content is complete, and only when :func:`check_replaceable` allows it:
    a directory of files segrec did not write is never replaced.

    Args:
        path: The artifact directory.
        discard: Deletes the previous artifact once it has been swapped aside
            (default: remove it whole); a run passes one that deletes only the
            files its manifest lists.

    Raises:
        SegrecError: ``path`` exists and is not something segrec may replace.
    """
    path = Path(path)
    check_replaceable(path)
    discard = discard or (lambda old: shutil.rmtree(old, ignore_errors=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    owner = tmp.with_name(tmp.name + _OWNER_SUFFIX)
    # Outside tmp on purpose: a file inside would end up in the artifact and its manifest.
    owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    swapped = False
    try:
        yield tmp
        _fsync_dir(tmp)
        check_replaceable(path)  # again: a long run may have given the user time to put files there
        if path.exists() and _exchange(tmp, path):
            swapped = True
            discard(tmp)  # tmp now holds the old artifact
        elif path.exists():
            # Two renames leave a moment with no ``path`` at all: a crash there loses
            # the old artifact (it survives only as .name.old-*), hence _exchange first.
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
            os.rename(tmp, path)
            swapped = True
            discard(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        if not swapped:  # tmp holds the unfinished new artifact, never the previous one
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


@dataclass(frozen=True)
class _Confinement:
    root: Path
    files: frozenset[str] | None


_CONFINED: contextvars.ContextVar[_Confinement | None] = contextvars.ContextVar("segrec_confined",
                                                                               default=None)


@contextlib.contextmanager
def confined_reads(root: str | os.PathLike, files: Iterable[str] | None = None) -> Iterator[None]:
    """Make :func:`read_json`, :func:`read_table` and :func:`load_tensors` refuse reads outside ``root``.

    An artifact directory is untrusted input: a crafted ``model.json`` may name a
    sub-model ``../../elsewhere`` and a directory may hold symbolic links out of it.
    Inside this context every read must resolve to a regular file under ``root``,
    reached without following a link, and (when ``files`` is given) be one of those
    relative paths, i.e. a file the manifest lists and :func:`segrec.artifacts.verify_run`
    checked. Nested uses keep the outermost root.

    Args:
        root: The artifact directory.
        files: Relative POSIX paths that may be read; None allows any file under ``root``.
    """
    if _CONFINED.get() is not None:  # a sub-model loaded by its parent: the outer rule holds
        yield
        return
    token = _CONFINED.set(_Confinement(Path(os.path.abspath(root)),
                                       None if files is None else frozenset(files)))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def _confined(path: str | os.PathLike) -> Path:
    """``path``, checked against the active :func:`confined_reads` rule (if any)."""
    rule = _CONFINED.get()
    path = Path(path)
    if rule is None:
        return path
    absolute = Path(os.path.abspath(path))  # ".." resolved lexically, links not followed
    try:
        rel = absolute.relative_to(rule.root)
    except ValueError:
        raise SegrecError(f"{path}: outside the artifact directory {rule.root}; a saved name points "
                          "out of it, so the artifact was tampered with") from None
    here = rule.root
    for part in rel.parts:
        here = here / part
        if here.is_symlink():
            raise SegrecError(f"{here}: is a symbolic link; artifact directories never contain links, "
                              "so this one was modified after saving")
    if here.exists() and not here.is_file():  # a FIFO or device would block or stream forever
        raise SegrecError(f"{here}: is not a regular file; the artifact was modified after saving")
    if rule.files is not None and rel.as_posix() not in rule.files:
        raise SegrecError(f"{rule.root}: {rel.as_posix()} is not listed in manifest.json, so it is not "
                          "read; the artifact is incomplete or was modified after saving")
    return absolute


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
        return json.loads(_confined(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError) as exc:  # the artifact "directory" is a file
        raise SegrecError(f"{path}: missing; is this a segrec artifact directory?") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # not UTF-8; nested too deep
        raise SegrecError(f"{path}: corrupt JSON ({str(exc)[:200]})") from exc
    except OSError as exc:
        raise SegrecError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


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
        return load_file(str(_confined(path)))
    except FileNotFoundError as exc:
        raise SegrecError(f"{path}: missing tensor file") from exc
    except SegrecError:
        raise
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise SegrecError(f"{path}: corrupt or truncated tensor file ({exc})") from exc


def write_table(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet."""
    frame.to_parquet(path, index=False)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet table written by :func:`write_table`."""
    try:
        return pd.read_parquet(_confined(path))
    except FileNotFoundError as exc:
        raise SegrecError(f"{path}: missing table") from exc
    except SegrecError:
        raise
    except Exception as exc:
        raise SegrecError(f"{path}: corrupt Parquet table ({exc})") from exc
