"""Atomic artifact writes: directories and files written under a temporary name, then renamed.

Also sweeps away what killed saves left behind (:func:`sweep_stale`).
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
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import SegrecError

log = logging.getLogger("segrec.io")  # the package's logger, as before the split


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
